"""Kawaguchi (2016): the module's one declaration (its steps are in ``steps.py``)."""

from __future__ import annotations

from typing import Any

from shared.config import ConfigError
from shared.module import Figure, Module, Step

NAME = "kawaguchi_deep_linear"
TFDS_DATASETS = ("mnist", "fashion_mnist")


def check(cfg: dict[str, Any]) -> None:
    """The paper's assumptions on the data (d_y <= d_x, full rank, distinct Σ eigenvalues)."""
    data = cfg["data"]
    d_y = len(data["singular_values"])
    if d_y > data["d_x"]:
        raise ConfigError(
            f"config key '{NAME}.data.singular_values' has {d_y} values; allowed: at most "
            f"d_x = {data['d_x']} (the paper assumes d_y <= d_x)"
        )
    if data["samples"] < data["d_x"] + d_y:
        raise ConfigError(
            f"config key '{NAME}.data.samples' has value {data['samples']}; allowed: >= d_x + d_y "
            f"= {data['d_x'] + d_y} (XXᵀ full rank and room for the noise)"
        )
    if len(set(data["singular_values"])) != d_y:
        raise ConfigError(
            f"config key '{NAME}.data.singular_values' has repeated values "
            f"{data['singular_values']}; allowed: distinct values (the theorem's assumption; "
            "the degenerate case is 'degenerate_singular_values')"
        )
    degenerate = cfg["degenerate_singular_values"]
    if len(degenerate) != d_y or len(set(degenerate)) == len(degenerate):
        raise ConfigError(
            f"config key '{NAME}.degenerate_singular_values' has value {degenerate}; allowed: "
            f"{d_y} values with at least one repeated"
        )
    real = cfg["real_data"]
    if real["pca"] < 10:
        raise ConfigError(
            f"config key '{NAME}.real_data.pca' has value {real['pca']}; allowed: >= 10 (d_y = 10 one-hot "
            "targets, and the paper assumes d_y <= d_x)"
        )


MODULE = Module(
    name=NAME,
    x64=True,  # gradients at analytic critical points are checked to 1e-9 relative
    check=check,
    steps=(
        Step(
            "critical_points",  # K2, K3: analytic critical points, exact Hessians, descent curves
            tables=("critical_points",),
            figures=(Figure("hessian_spectra", "Hessian spectra at critical points"),
                     Figure("descent_curves", "Descent curves from W = 0")),
            quantities=("spectrum", "n_critical_points", "max_rel_grad_norm", "max_rel_loss_error",
                        "nonglobal_without_descent", "global_points_with_negative_curvature",
                        "h2_saddles_without_negative_curvature", "deep_saddles_without_negative_curvature",
                        "deep_psd_saddles_off_construction", "deep_psd_saddle_descent_orders",
                        "deep_zero_point_max_abs_hessian", "deep_zero_point_descent_order_error",
                        "h2_zero_point_min_eigenvalue"),
        ),
        Step(
            "ensembles",  # K1: random inits per depth x width (whitened and generic inputs), every run classified
            tables=("ensemble_runs", "ensemble_summary"),
            figures=(Figure("ensemble_gaps", "Final loss gaps from random inits"),),
            quantities=("ensemble_runs", "ensemble_min_runs_per_config", "nonglobal_minima", "resolved_fraction",
                        "min_config_resolved_fraction", "generic_runs", "generic_nonglobal_minima",
                        "generic_min_config_resolved_fraction", "reached_fraction", "diverged_runs",
                        "degenerate_nonglobal_minima", "degenerate_reached_fraction"),
        ),
        Step(
            "escape",  # K4 (ours): steps to leave the degenerate saddle at 0
            tables=("escape",),
            figures=(Figure("escape", "Escape time vs depth and init scale"),),
            quantities=("escape_depths", "escape_median_steps_smallest_init", "escape_median_is_lower_bound",
                        "escape_censored_runs"),
        ),
        Step(
            "real_data",  # K1 on real data (digits quick, MNIST paper)
            tables=("real_data_runs", "real_data_summary"),
            figures=(Figure("real_data_gaps", "Final loss gaps on real data"),),
            quantities=("real_runs", "real_nonglobal_minima", "real_resolved_fraction",
                        "real_min_config_resolved_fraction", "real_sigma_min_relative_gap"),
            datasets=lambda cfg: [cfg["real_data"]["dataset"]] if cfg["real_data"]["dataset"] in TFDS_DATASETS
            else [],
        ),
    ),
)
