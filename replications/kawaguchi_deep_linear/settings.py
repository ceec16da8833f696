"""Settings of the Kawaguchi module that the config schema cannot express."""

from __future__ import annotations

from typing import Any

from shared.config import ConfigError

X64 = True  # gradients at analytic critical points are checked to 1e-9 relative
KEY = "kawaguchi_deep_linear"


def check(cfg: dict[str, Any]) -> None:
    """The paper's assumptions on the data (d_y <= d_x, full rank, distinct Σ eigenvalues)."""
    data = cfg["data"]
    d_y = len(data["singular_values"])
    if d_y > data["d_x"]:
        raise ConfigError(
            f"config key '{KEY}.data.singular_values' has {d_y} values; allowed: at most "
            f"d_x = {data['d_x']} (the paper assumes d_y <= d_x)"
        )
    if data["samples"] < data["d_x"] + d_y:
        raise ConfigError(
            f"config key '{KEY}.data.samples' has value {data['samples']}; allowed: >= d_x + d_y "
            f"= {data['d_x'] + d_y} (XXᵀ full rank and room for the noise)"
        )
    if len(set(data["singular_values"])) != d_y:
        raise ConfigError(
            f"config key '{KEY}.data.singular_values' has repeated values "
            f"{data['singular_values']}; allowed: distinct values (the theorem's assumption; "
            "the degenerate case is 'degenerate_singular_values')"
        )
    degenerate = cfg["degenerate_singular_values"]
    if len(degenerate) != d_y or len(set(degenerate)) == len(degenerate):
        raise ConfigError(
            f"config key '{KEY}.degenerate_singular_values' has value {degenerate}; allowed: "
            f"{d_y} values with at least one repeated"
        )
    real = cfg["real_data"]
    if real["pca"] < 10:
        raise ConfigError(
            f"config key '{KEY}.real_data.pca' has value {real['pca']}; allowed: >= 10 (d_y = 10 one-hot "
            "targets, and the paper assumes d_y <= d_x)"
        )


TFDS_DATASETS = ("mnist", "fashion_mnist")


def tfds_datasets(cfg: dict[str, Any]) -> list[str]:
    """The prepared (tensorflow-datasets) data sets this configuration reads."""
    return [cfg["real_data"]["dataset"]] if cfg["real_data"]["dataset"] in TFDS_DATASETS else []
