"""Keskar et al. (2017): the module's one declaration (its steps are in ``steps.py``)."""

from __future__ import annotations

from typing import Any

from replications.keskar_large_batch.steps import minima_quantities
from shared.config import ConfigError
from shared.module import Figure, Module, Step

NAME = "keskar_large_batch"
TFDS_DATASETS = ("mnist", "fashion_mnist", "cifar10", "cifar100")


def _tfds(cfg: dict[str, Any], slots: list[str]) -> list[str]:
    return sorted({cfg["networks"][s]["dataset"] for s in slots if cfg["networks"][s]["dataset"] in TFDS_DATASETS})


def check(cfg: dict[str, Any]) -> None:
    """Cross-key checks: the sweep and warm start name a configured network; the sweep's
    batches increase; warm-start epochs are distinct; Lanczos and Hutch++ budgets fit."""
    for part in ("batch_size", "warm_start"):
        slot = cfg[part]["network"]
        if slot not in cfg["networks"]:
            raise ConfigError(f"config key '{NAME}.{part}.network' has value {slot!r}; allowed: a configured "
                              f"network, one of {sorted(cfg['networks'])}")
    b = cfg["batch_size"]["batches"]
    if sorted(set(b)) != b:
        raise ConfigError(f"config key '{NAME}.batch_size.batches' has value {b}; allowed: increasing, each once")
    e = cfg["warm_start"]["sb_epochs"]
    if sorted(set(e)) != e:
        raise ConfigError(f"config key '{NAME}.warm_start.sb_epochs' has value {e}; allowed: increasing, each once")
    if cfg["hessian"]["hutchpp_matvecs"] % 3:
        raise ConfigError(f"config key '{NAME}.hessian.hutchpp_matvecs' has value "
                          f"{cfg['hessian']['hutchpp_matvecs']}; allowed: a multiple of 3 (>= 6)")


MODULE = Module(
    name=NAME,
    x64=False,  # float32 throughout, as the paper's Keras/Theano code
    check=check,
    steps=(
        Step(
            "minima",  # KS1-KS4, KS7, Hessian measures: SB and LB minima of every configured network
            tables=("minima_runs", "table2_accuracy", "table3_sharpness_full", "table4_sharpness_subspace",
                    "hessian_measures", "parametric", "histories"),
            figures=(Figure("parametric_plots", "Parametric plots f(αx_ℓ + (1 − α)x_s), α ∈ [−1, 2]"),
                     Figure("accuracy_vs_epoch", "Accuracy per epoch, SB and LB (Figure 2)"),
                     Figure("sharpness_measures", "Metric 2.1, λ_max and tr H at every minimum")),
            quantities=minima_quantities(),
            datasets=lambda cfg: _tfds(cfg, list(cfg["networks"])),
        ),
        Step(
            "batch_size",  # KS5: test accuracy and sharpness vs batch size (Figure 4)
            tables=("batch_size_sweep",),
            figures=(Figure("accuracy_vs_batch", "Test accuracy and sharpness vs batch size (Figure 4)"),),
            quantities=("sweep_batches", "sweep_test_acc", "sweep_sharpness", "sweep_test_acc_smallest",
                        "sweep_test_acc_largest", "sweep_threshold"),
            datasets=lambda cfg: _tfds(cfg, [cfg["batch_size"]["network"]]),
        ),
        Step(
            "warm_start",  # KS6: LB from SB iterates (Figure 5)
            tables=("warm_start",),
            figures=(Figure("warm_start", "Warm-started LB: test accuracy and sharpness (Figure 5)"),),
            quantities=("ws_epochs", "ws_test_acc", "ws_sharpness"),
            datasets=lambda cfg: _tfds(cfg, [cfg["warm_start"]["network"]]),
        ),
    ),
)
