"""Baldi & Hornik (1989): the module's one declaration (its steps are in ``steps.py``)."""

from __future__ import annotations

from typing import Any

from shared.config import ConfigError
from shared.module import Figure, Module, Step

NAME = "baldi_linear_autoencoder"
GD_DATASETS = ("synthetic", "digits", "mnist", "fashion_mnist")
TFDS_DATASETS = ("mnist", "fashion_mnist")
INPUT_DIMENSION = {"digits": 64, "mnist": 784, "fashion_mnist": 784}


def check(cfg: dict[str, Any]) -> None:
    """Cross-key checks: p < n, samples >= n, a spectrum with distinct values."""
    cp = cfg["critical_points"]
    n = len(cp["spectrum"])
    if cp["p"] >= n:
        raise ConfigError(
            f"config key '{NAME}.critical_points.p' has value {cp['p']}; allowed: 1 <= p < n = len(spectrum) = {n}"
        )
    if cp["samples"] < n:
        raise ConfigError(f"config key '{NAME}.critical_points.samples' has value {cp['samples']}; allowed: >= n = {n}")
    if len(set(cp["spectrum"])) != n:
        raise ConfigError(
            f"config key '{NAME}.critical_points.spectrum' has repeated values {cp['spectrum']}; allowed: "
            "distinct positive values (Baldi & Hornik's assumption)"
        )
    for i, spec in enumerate(cfg["gradient_descent"]):
        if spec["dataset"] == "synthetic" and "spectrum" not in spec:
            raise ConfigError(
                f"config key '{NAME}.gradient_descent.{i}.spectrum' is missing; allowed: a list of distinct "
                "positive eigenvalues (needed for dataset synthetic)"
            )
        dim = INPUT_DIMENSION.get(spec["dataset"], len(spec.get("spectrum", [])))
        if spec["p"] >= dim:
            raise ConfigError(
                f"config key '{NAME}.gradient_descent.{i}.p' has value {spec['p']}; allowed: 1 <= p < input "
                f"dimension {dim} of {spec['dataset']}"
            )
    names = [spec["dataset"] for spec in cfg["gradient_descent"]]
    if len(set(names)) != len(names):
        raise ConfigError(f"config key '{NAME}.gradient_descent' names a data set twice ({names}); allowed: each once")


MODULE = Module(
    name=NAME,
    x64=True,  # B1 checks gradients to 1e-9 relative
    check=check,
    steps=(
        Step(
            "critical_points",  # B1-B3: every analytic critical point, exact Hessian inertia
            tables=("critical_points",),
            figures=(Figure("critical_points", "Critical points: loss and Hessian index"),
                     Figure("saddle_slice", "A slice through a saddle and the minimum")),
            quantities=("n_critical_points", "max_rel_grad_norm", "max_rel_loss_error", "index_mismatches",
                        "nullity_mismatches", "saddles_without_negative_eigenvalue", "minimum_rel_min_eigenvalue",
                        "minima_found", "spectrum"),
        ),
        Step(
            "gradient_descent",  # B4: many random inits, vmapped full-batch GD
            tables=("gradient_descent",),
            figures=(Figure("gradient_descent", "Gradient descent from random inits"),),
            quantities=tuple(f"gd_{q}_{d}" for d in GD_DATASETS for q in ("rel_gap", "max_angle", "failed_runs")),
            datasets=lambda cfg: sorted({s["dataset"] for s in cfg["gradient_descent"]} & set(TFDS_DATASETS)),
        ),
    ),
)
