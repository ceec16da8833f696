"""Dauphin et al. (2014): the module's one declaration (its steps are in ``steps.py``).

No JAX here, not even indirectly: the kit sets float64 before JAX is first imported."""

from __future__ import annotations

from typing import Any

from shared.config import ConfigError
from shared.module import Figure, Module, Step

NAME = "dauphin_saddle_points"
TFDS_DATASETS = ("mnist", "fashion_mnist")


def check(cfg: dict[str, Any]) -> None:
    """Cross-key checks: checkpoints increasing; δ below the escape drop's scale is the user's choice."""
    s = cfg["search"]
    if sorted(set(s["checkpoints"])) != s["checkpoints"]:
        raise ConfigError(f"config key '{NAME}.search.checkpoints' has value {s['checkpoints']}; allowed: "
                          "increasing, each once")
    if cfg["sfn"]["batch"] > cfg["data"]["samples"]:
        raise ConfigError(f"config key '{NAME}.sfn.batch' has value {cfg['sfn']['batch']}; allowed: <= "
                          f"data.samples = {cfg['data']['samples']}")


MODULE = Module(
    name=NAME,
    x64=True,  # critical points to ‖∇L‖/(|L|+1) <= 1e-8 and exact Hessian inertia
    check=check,
    steps=(
        Step(
            "critical_points",  # DA1, DA1-approx, DA2, DA3-escape
            tables=("end_points", "plateaus", "escapes"),
            figures=(Figure("index_error", "Index vs training error of critical points (cf. the paper's Fig. 1)"),
                     Figure("plateaus", "Gradient descent near saddles, and escape by Newton, GD and SFN")),
            quantities=("parameters", "samples", "end_points", "critical_points", "critical_fraction",
                        "gradient_flat_fraction", "approx_points", "error_strict", "index_strict", "error_approx",
                        "index_approx", "spearman_strict", "spearman_strict_interval", "spearman_approx",
                        "spearman_approx_interval", "saddles", "plateau_steps", "plateau_index",
                        "plateau_steps_control",
                        "escape_saddles", "newton_returned_fraction", "sfn_escaped_fraction", "gd_escaped_fraction",
                        "sfn_minus_gd_escaped"),
            datasets=lambda cfg: [cfg["data"]["name"]] if cfg["data"]["name"] in TFDS_DATASETS else [],
        ),
        Step(
            "sfn_from_sgd",  # DA3-sgd
            tables=("method_runs",),
            figures=(Figure("sfn_comparison", "Saddle-free Newton, damped Newton and GD from SGD end points"),),
            quantities=("sgd_loss", "final_gd", "final_newton", "final_sfn", "newton_minus_sfn", "gd_minus_sfn",
                        "zeros_seeds", "chosen_gd_lr", "chosen_newton_damping", "chosen_sfn_damping"),
            datasets=lambda cfg: [cfg["data"]["name"]] if cfg["data"]["name"] in TFDS_DATASETS else [],
        ),
    ),
)
