"""Choromanska et al. (2015): the module's one declaration (its steps are in ``steps.py``)."""

from __future__ import annotations

from typing import Any

from shared.config import ConfigError
from shared.module import Figure, Module, Step

NAME = "choromanska_spin_glass"
TFDS_DATASETS = ("mnist", "fashion_mnist")
INPUT_SIDE = {"digits": 8, "mnist": 28, "fashion_mnist": 28}


def check(cfg: dict[str, Any]) -> None:
    """Cross-key checks: check points divide the step budget, enough runs and networks for the
    statistics, the resize only for 28×28 images, blocks that hold at least 3 networks."""
    sg = cfg["spin_glass"]
    if sg["max_steps"] % sg["check_every"]:
        raise ConfigError(
            f"config key '{NAME}.spin_glass.max_steps' has value {sg['max_steps']}; allowed: a multiple of "
            f"check_every = {sg['check_every']} (every run is checked at the same steps)"
        )
    if len(set(sg["lambdas"])) != len(sg["lambdas"]) or sorted(sg["lambdas"]) != sg["lambdas"]:
        raise ConfigError(f"config key '{NAME}.spin_glass.lambdas' has value {sg['lambdas']}; allowed: increasing, "
                          "each once")
    net = cfg["networks"]
    if sorted(net["sizes"]) != net["sizes"] or len(set(net["sizes"])) != len(net["sizes"]):
        raise ConfigError(f"config key '{NAME}.networks.sizes' has value {net['sizes']}; allowed: increasing, "
                          "each once")
    if net["nets"] < 3 * net["rho_blocks"]:
        raise ConfigError(
            f"config key '{NAME}.networks.rho_blocks' has value {net['rho_blocks']}; allowed: at most "
            f"nets / 3 = {net['nets'] // 3} (a correlation per block needs >= 3 networks)"
        )
    side = net.get("resize")
    if side is not None and side >= INPUT_SIDE[net["dataset"]]:
        raise ConfigError(
            f"config key '{NAME}.networks.resize' has value {side}; allowed: below the image side "
            f"{INPUT_SIDE[net['dataset']]} of {net['dataset']} (or null: no resize)"
        )


MODULE = Module(
    name=NAME,
    x64=False,  # float32 throughout; the tests check the closed forms in float64
    check=check,
    steps=(
        Step(
            "spin_glass",  # C1-C3: projected gradient descent on the spherical 3-spin glass, per Λ
            tables=("spin_glass_runs", "spin_glass_summary"),
            figures=(Figure("energy_histograms", "Spin glass: energies H/Λ at the minima found, per Λ"),
                     Figure("spin_glass_hessian", "Spin glass: Riemannian Hessian at the points found")),
            quantities=("sg_lambdas", "sg_e_inf", "sg_e_zero", "sg_abs_deviation", "sg_distance_to_threshold",
                        "sg_std", "sg_fraction_below_ground", "sg_above_band", "sg_fraction_above_band",
                        "sg_converged_fraction", "sg_saddles", "sg_saddle_fraction"),
        ),
        Step(
            "networks",  # C4-C6: many one-hidden-layer ReLU nets per width, SGD, vmapped
            tables=("network_runs", "network_summary", "network_index"),
            figures=(Figure("test_loss_histograms", "Networks: test loss at the solutions, per width"),
                     Figure("variance_vs_size", "Networks: variance of the test loss vs width"),
                     Figure("train_test_correlation", "Networks: ρ(train, test) vs width, ours and Table 1"),
                     Figure("index_histograms", "Networks: normalized Hessian index at small widths")),
            quantities=("net_sizes", "net_test_abs_deviation", "net_test_variance", "net_rho", "net_rho_blocks",
                        "net_normalized_index"),
            datasets=lambda cfg: [cfg["networks"]["dataset"]] if cfg["networks"]["dataset"] in TFDS_DATASETS
            else [],
        ),
        Step(
            "redundancy",  # C7: weights restricted to 3 values per layer by simulated annealing
            tables=("redundancy",),
            figures=(Figure("redundancy", "Networks: test accuracy with weights restricted to 3 values"),),
            quantities=("net_redundancy_accuracy_loss", "net_redundancy_distinct_values"),
            datasets=lambda cfg: [cfg["networks"]["dataset"]] if cfg["networks"]["dataset"] in TFDS_DATASETS
            else [],
        ),
    ),
)
