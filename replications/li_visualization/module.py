"""Li et al. (NeurIPS 2018): the module's one declaration (its steps are in ``steps.py``)."""

from __future__ import annotations

from typing import Any

from shared.config import ConfigError
from shared.module import Figure, Module, Step

NAME = "li_visualization"
TFDS_DATASETS = ("mnist", "fashion_mnist", "cifar10", "cifar100")


def _tfds(cfg: dict[str, Any]) -> list[str]:
    return [cfg["data"]["dataset"]] if cfg["data"]["dataset"] in TFDS_DATASETS else []


def check(cfg: dict[str, Any]) -> None:
    """Cross-key checks: L1 needs weight decays [0, w > 0]; the width sweep's depth is a valid
    ResNet depth; the Hessian grid is no finer than the surface grid."""
    wds = cfg["vgg"]["weight_decays"]
    if len(wds) != 2 or wds[0] != 0 or wds[1] <= 0:
        raise ConfigError(f"config key '{NAME}.vgg.weight_decays' has value {wds}; allowed: [0, w] with w > 0")
    for key, depths in (("resnets.depths", cfg["resnets"]["depths"]), ("resnets.width_depth",
                                                                        [cfg["resnets"]["width_depth"]])):
        bad = [d for d in depths if (d - 2) % 6]
        if bad:
            raise ConfigError(f"config key '{NAME}.{key}' has value(s) {bad}; allowed: ResNet depths 6n+2 (8, 14, 20, "
                              "56, 110, ...)")
    if sorted(set(cfg["resnets"]["depths"])) != cfg["resnets"]["depths"]:
        raise ConfigError(f"config key '{NAME}.resnets.depths' has value {cfg['resnets']['depths']}; allowed: "
                          "increasing, each once")
    if sorted(set(cfg["resnets"]["widths"])) != cfg["resnets"]["widths"] or cfg["resnets"]["widths"][0] != 1:
        raise ConfigError(f"config key '{NAME}.resnets.widths' has value {cfg['resnets']['widths']}; allowed: "
                          "increasing, starting at 1")
    v = cfg["vgg"]
    if (v["interpolation_points"] - 1) % 4:
        raise ConfigError(f"config key '{NAME}.vgg.interpolation_points' has value {v['interpolation_points']}; "
                          "allowed: 4k + 1 (so that α = 0 and α = 1 are grid points of [−0.5, 1.5])")
    for key, n in (("vgg.fn_points", v["fn_points"]), ("grid.points", cfg["grid"]["points"])):
        if n % 2 == 0:
            raise ConfigError(f"config key '{NAME}.{key}' has value {n}; allowed: odd (the centre is a grid point)")
    if cfg["hessian"]["points"] > cfg["grid"]["points"]:
        raise ConfigError(f"config key '{NAME}.hessian.points' has value {cfg['hessian']['points']}; allowed: at "
                          f"most grid.points ({cfg['grid']['points']})")


MODULE = Module(
    name=NAME,
    x64=False,  # float32, as the paper's PyTorch code
    check=check,
    steps=(
        Step(
            "vgg",  # L1, L2: SB and LB VGG minima, without and with weight decay (Figs. 2-3, 5)
            tables=("vgg_runs", "interpolation", "fn_lines"),
            figures=(Figure("interpolation", "Un-normalised 1D interpolation between SB and LB minima (Figs. 2-3)"),
                     Figure("fn_lines", "Filter-normalised 1D plots at SB and LB minima (Fig. 5)")),
            quantities=("l1_lb_sharper", "l1_lb_sharper_wd0", "l1_flip", "l2_agree", "l2_agree_fraction",
                        "vgg_test_error_sb", "vgg_test_error_lb", "l2_fn_sharpness_sb", "l2_fn_sharpness_lb"),
            datasets=_tfds,
        ),
        Step(
            "resnets",  # L3-L7: ResNets with and without shortcuts over depth and width
            tables=("resnet_runs", "surfaces", "hessian_maps", "seed_scores", "trajectory"),
            figures=(Figure("contours", "2D loss contours, ResNets with and without shortcuts (Figs. 5-6)"),
                     Figure("surfaces_3d", "3D loss surfaces (Figs. 1, 5)"),
                     Figure("convexity_maps", "Hessian convexity maps |λ_min/λ_max| (Fig. 7)"),
                     Figure("trajectory", "Optimisation path on the PCA plane (Fig. 9)"),
                     Figure("seed_spread", "Scores over direction seeds (L7, ours)")),
            quantities=("depths", "nc_short", "nc_noshort", "minima_short", "minima_noshort", "test_error_short",
                        "test_error_noshort", "l3_rise_noshort", "l3_rise_short", "l3_gap_deepest",
                        "l3_minima_gap_deepest", "l4_nc_noshort", "l4_minima_noshort", "widths", "l5_hess_nc_short",
                        "l5_hess_nc_noshort", "l5_gap", "l5_ratio_gap", "l6_pca_explained_2", "l6_random_explained_2",
                        "l7_nc_noshort", "l7_nc_short", "l7_seed_diffs", "l7_width_cv"),
            datasets=_tfds,
        ),
    ),
)
