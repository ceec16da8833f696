"""Baldi & Hornik (1989): the module's one declaration (its steps are in ``steps.py``)."""

from __future__ import annotations

from typing import Any

from shared.config import ConfigError
from shared.module import Figure, Module, Step

NAME = "baldi_linear_autoencoder"
GD_DATASETS = ("synthetic", "digits", "mnist", "fashion_mnist")
# init distributions of gradient descent (config key ``init``; ``init_scale`` is the Gaussian's std for
# small and unit, the gain on Glorot's std √(2/(fan_in + fan_out)) for glorot), and the init_scale each allows
INITS = ("small", "unit", "glorot")
INIT_SCALES = {"small": (0.0, 0.01), "unit": (0.1, 10.0), "glorot": (0.1, 10.0)}
GD_QUANTITIES = ("rel_gap", "max_angle", "failed_runs")
TFDS_DATASETS = ("mnist", "fashion_mnist")
INPUT_DIMENSION = {"digits": 64, "mnist": 784, "fashion_mnist": 784}


def gd_quantity(quantity: str, dataset: str, init: str) -> str:
    """The name of a gradient-descent quantity of one (data set, init), e.g. ``gd_rel_gap_digits_glorot``."""
    return f"gd_{quantity}_{dataset}_{init}"


def check(cfg: dict[str, Any]) -> None:
    """Cross-key checks: p < n, samples >= n, a spectrum with distinct values, each init's scale in its
    regime, each (data set, init) once."""
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
        init, scale = spec.get("init", "small"), spec["init_scale"]
        low, high = INIT_SCALES[init]
        if not low <= scale <= high:  # init_scale > 0 is the schema's
            allowed = f"0 < init_scale <= {high}" if low == 0 else f"{low} <= init_scale <= {high}"
            raise ConfigError(
                f"config key '{NAME}.gradient_descent.{i}.init_scale' has value {scale}; allowed: "
                f"{allowed} for init {init} (small: near the saddle at W = 0; unit, glorot: O(1) draws)"
            )
    names = [(spec["dataset"], spec.get("init", "small")) for spec in cfg["gradient_descent"]]
    if len(set(names)) != len(names):
        shown = ", ".join(f"{d}/{i}" for d, i in names)
        raise ConfigError(
            f"config key '{NAME}.gradient_descent' names a (dataset, init) pair twice ({shown}); allowed: each once"
        )


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
            "gradient_descent",  # B4: many random inits per (data set, init distribution), vmapped full-batch GD
            tables=("gradient_descent",),
            figures=(Figure("gradient_descent", "Gradient descent from random inits"),),
            quantities=tuple(gd_quantity(q, d, i) for d in GD_DATASETS for i in INITS for q in GD_QUANTITIES),
            datasets=lambda cfg: sorted({s["dataset"] for s in cfg["gradient_descent"]} & set(TFDS_DATASETS)),
        ),
    ),
)
