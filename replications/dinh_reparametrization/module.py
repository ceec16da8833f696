"""Dinh et al. (2017): the module's one declaration (its steps are in ``steps.py``)."""

from __future__ import annotations

from typing import Any

from replications.dinh_reparametrization.steps import BN_QUANTITIES, D5_QUANTITIES, REPARAM_QUANTITIES
from shared.config import ConfigError
from shared.module import Figure, Module, Step

NAME = "dinh_reparametrization"
TFDS_DATASETS = ("mnist", "fashion_mnist", "cifar10", "cifar100")


def _tfds(specs: list[dict[str, Any]]) -> list[str]:
    return sorted({s["dataset"] for s in specs if s["dataset"] in TFDS_DATASETS})


def _grid_has_one(cfg: dict[str, Any], part: str) -> None:
    import numpy as np

    g = cfg[part]
    exps = np.linspace(g["min_exp"], g["max_exp"], g["points"])
    if g["min_exp"] >= g["max_exp"] or not np.any(np.isclose(exps, 0.0, atol=1e-9)):
        raise ConfigError(f"config key '{NAME}.{part}' has value {g}; allowed: min_exp < 0 < max_exp with 10**0 = 1 "
                          "on the grid linspace(min_exp, max_exp, points)")


def check(cfg: dict[str, Any]) -> None:
    """Cross-key checks: the α and BatchNorm grids contain 1; the slope branches hold >= 3 grid
    points each; the SB/LB network is configured; Hutch++'s budget is a multiple of 3."""
    _grid_has_one(cfg, "alphas")
    if cfg["bn_networks"]:
        _grid_has_one(cfg, "bn_scales")
    a, b = cfg["alphas"], cfg["slopes"]["branch_exp"]
    import numpy as np

    exps = np.linspace(a["min_exp"], a["max_exp"], a["points"])
    if min(int(np.sum(exps >= b - 1e-9)), int(np.sum(exps <= -b + 1e-9))) < 3:
        raise ConfigError(f"config key '{NAME}.slopes.branch_exp' has value {b}; allowed: a value leaving >= 3 grid "
                          f"exponents >= it and <= its negative (grid {exps.round(3).tolist()})")
    slot = cfg["sb_lb"]["network"]
    if slot not in cfg["networks"]:
        raise ConfigError(f"config key '{NAME}.sb_lb.network' has value {slot!r}; allowed: a configured network, one "
                          f"of {sorted(cfg['networks'])}")
    if cfg["hessian"]["hutchpp_matvecs"] % 3:
        raise ConfigError(f"config key '{NAME}.hessian.hutchpp_matvecs' has value "
                          f"{cfg['hessian']['hutchpp_matvecs']}; allowed: a multiple of 3 (>= 6)")
    for part in ("networks", "bn_networks"):
        for slot, spec in cfg[part].items():
            if spec["model"] == "mlp" and "widths" not in spec.get("model_kwargs", {}):
                raise ConfigError(f"config key '{NAME}.{part}.{slot}.model_kwargs' has value "
                                  f"{spec.get('model_kwargs')}; allowed: a mapping with 'widths' for model mlp")


MODULE = Module(
    name=NAME,
    x64=False,  # float32, as the networks are trained
    check=check,
    steps=(
        Step(
            "reparametrize",  # D1-D4, D6, D7: T_α on every network without BatchNorm; D5: SB/LB (same process,
            tables=("alpha_scan", "construction", "slices", "d5_comparison"),  # so compiled code is reused)
            figures=(Figure("measures_vs_alpha", "Every sharpness measure vs α (log-log), accuracy on a twin axis"),
                     Figure("invariant_vs_not", "Invariant measures flat beside the non-invariant ones"),
                     Figure("slices", "1D loss slices along the top eigenvector before and after T_α"),
                     Figure("sharp_generalizes", "SB after T_α is sharper than LB by every measure, test accuracy "
                                                 "unchanged")),
            quantities=REPARAM_QUANTITIES + D5_QUANTITIES,
            datasets=lambda cfg: _tfds(list(cfg["networks"].values())),
        ),
        Step(
            "batchnorm",  # D8 (and D6 under BatchNorm)
            tables=("batchnorm_scan",),
            figures=(Figure("batchnorm", "Scaling the weights before BatchNorm: the Hessian moves, the function not"),),
            quantities=BN_QUANTITIES,
            datasets=lambda cfg: _tfds(list(cfg["bn_networks"].values())),
        ),
    ),
)
