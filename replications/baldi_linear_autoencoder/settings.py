"""Settings of the Baldi & Hornik module that the config schema cannot express."""

from __future__ import annotations

from typing import Any

from shared.config import ConfigError

X64 = True  # float64 throughout: B1 checks gradients to 1e-9 relative


def check(cfg: dict[str, Any]) -> None:
    """Cross-key checks: p < n, samples >= n, a spectrum with distinct values."""
    cp = cfg["critical_points"]
    n = len(cp["spectrum"])
    if cp["p"] >= n:
        raise ConfigError(
            f"config key 'baldi_linear_autoencoder.critical_points.p' has value {cp['p']}; "
            f"allowed: 1 <= p < n = len(spectrum) = {n}"
        )
    if cp["samples"] < n:
        raise ConfigError(
            f"config key 'baldi_linear_autoencoder.critical_points.samples' has value "
            f"{cp['samples']}; allowed: >= n = {n}"
        )
    if len(set(cp["spectrum"])) != n:
        raise ConfigError(
            "config key 'baldi_linear_autoencoder.critical_points.spectrum' has repeated "
            f"values {cp['spectrum']}; allowed: distinct positive values (Baldi & Hornik's assumption)"
        )
    for i, spec in enumerate(cfg["gradient_descent"]):
        dim = {"digits": 64, "mnist": 784, "fashion_mnist": 784}.get(spec["dataset"], len(spec.get("spectrum", [])))
        if spec["dataset"] == "synthetic" and "spectrum" not in spec:
            raise ConfigError(
                f"config key 'baldi_linear_autoencoder.gradient_descent.{i}.spectrum' is missing; "
                "allowed: a list of distinct positive eigenvalues (needed for dataset synthetic)"
            )
        if spec["p"] >= dim:
            raise ConfigError(
                f"config key 'baldi_linear_autoencoder.gradient_descent.{i}.p' has value "
                f"{spec['p']}; allowed: 1 <= p < input dimension {dim} of {spec['dataset']}"
            )


TFDS_DATASETS = ("mnist", "fashion_mnist")


def tfds_datasets(cfg: dict[str, Any]) -> list[str]:
    """The prepared (tensorflow-datasets) data sets this configuration reads."""
    return sorted({s["dataset"] for s in cfg["gradient_descent"] if s["dataset"] in TFDS_DATASETS})
