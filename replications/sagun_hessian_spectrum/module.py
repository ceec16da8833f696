"""Sagun et al. (2016, 2017), Papyan (2019), Ghorbani et al. (2019): the module's one declaration
(its steps are in ``steps.py``)."""

from __future__ import annotations

from typing import Any

from shared.config import ConfigError
from shared.module import Figure, Module, Step

NAME = "sagun_hessian_spectrum"
TFDS_DATASETS = ("mnist", "cifar10")


def check(cfg: dict[str, Any]) -> None:
    """Cross-key checks: the base configuration belongs to every series it anchors, at least
    two values per series, an outlier window above the largest k, increasing checkpoints."""
    sp = cfg["spectra"]
    base = sp["base"]
    for key, value in (("classes", base["classes"]), ("widths", base["width"]), ("spreads", base["spread"])):
        if value not in sp[key]:
            raise ConfigError(f"config key '{NAME}.spectra.{key}' has value {sp[key]}; allowed: a list holding the "
                              f"base value {value} (spectra.base), so that the series share one configuration")
        if len(set(sp[key])) < 2 or sorted(sp[key]) != list(sp[key]):
            raise ConfigError(f"config key '{NAME}.spectra.{key}' has value {sp[key]}; allowed: at least two "
                              "values, increasing")
    if sp["outliers"]["window"] <= max(sp["classes"]):
        raise ConfigError(f"config key '{NAME}.spectra.outliers.window' has value {sp['outliers']['window']}; "
                          f"allowed: above the largest k = {max(sp['classes'])} (k outliers must fit in it)")
    ck = cfg["slq_density"]["checkpoints"]
    if sorted(set(ck)) != list(ck) or ck[0] != 0:
        raise ConfigError(f"config key '{NAME}.slq_density.checkpoints' has value {ck}; allowed: increasing SGD "
                          "steps starting at 0 (the initialization)")


MODULE = Module(
    name=NAME,
    x64=False,  # float32 networks and Hessians; eigenvalues in float64 (numpy) on the CPU
    check=check,
    steps=(
        Step(
            "spectra",  # S1-S5, S7 and M1: exact spectra of small nets on Gaussian mixtures and digits
            tables=("spectra_summary", "method_agreement"),
            figures=(Figure("spectra_by_classes", "Hessian spectra by number of classes k"),
                     Figure("spectra_by_width", "Hessian spectra by width at fixed data"),
                     Figure("spectra_by_spread", "Hessian spectra by cluster spread at fixed model"),
                     Figure("hessian_vs_gauss_newton", "Top eigenvalues of H and of the Gauss–Newton term G"),
                     Figure("class_mean_angles", "G's top eigenspace vs class-mean gradients (Papyan 2019)")),
            quantities=("s1_near_zero_fraction_init", "s1_near_zero_fraction_end", "s1_negative_mass_init",
                        "s1_negative_mass_end", "s1_outlier_fraction_end", "s2_classes", "s2_outliers",
                        "s2_outliers_minus_k", "s2_offset", "s2_outliers_minus_k_init", "s2_digits_outliers_minus_k",
                        "s3_widths", "s3_parameters", "s3_near_zero_fraction", "s3_outlier_count_range",
                        "s4_spreads", "s4_top_eigenvalue_by_spread", "s4_top_eigenvalue_ratio_spread",
                        "s4_top_eigenvalue_ratio_classes", "s4_near_zero_fraction_range_spread",
                        "s4_outlier_count_range_spread", "s5_residual_share_end", "s5_residual_share_init",
                        "s5_reassembly_error", "s7_captured_cross", "s7_captured_class", "s7_random_baseline",
                        "m1_lanczos_top_rel_error", "m1_slq_moment_z", "nonconverged_runs"),
            datasets=lambda cfg: [],  # Gaussian mixtures and digits: generated / embedded
        ),
        Step(
            "batch_basins",  # S6: small-batch vs large-batch solutions from one initialization
            tables=("sb_lb",),
            figures=(Figure("sb_lb_line", "Small batch vs large batch: the line between them and λ_max"),),
            quantities=("s6_relative_barrier", "s6_sb_lambda_max", "s6_lb_lambda_max", "s6_nonconverged_seeds"),
        ),
        Step(
            "slq_density",  # S8: SLQ densities along training, with and without BatchNorm
            tables=("slq_checkpoints",),
            figures=(Figure("slq_densities", "SLQ spectral densities along training, with and without BN"),
                     Figure("gradient_overlap", "Gradient share in the top Hessian eigenspace")),
            quantities=("s8_gradient_overlap_plain", "s8_gradient_overlap_bn", "s8_outlier_strength_plain",
                        "s8_outlier_strength_bn"),
            datasets=lambda cfg: [cfg["slq_density"]["dataset"]]
            if cfg["slq_density"]["dataset"] in TFDS_DATASETS else [],
        ),
    ),
)
