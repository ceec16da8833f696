"""Pennington & Bahri (2017): the module's one declaration (its steps are in ``steps.py``)."""

from __future__ import annotations

from typing import Any

from shared.config import ConfigError
from shared.critical.quantities import SEARCH_QUANTITIES
from shared.module import Figure, Module, Step

NAME = "pennington_bahri_rmt"
K2_QUANTITIES = tuple(f"k2_{q}" for q in ("starts", "critical", "critical_fraction", "gradient_flat_fraction",
                                          "at_global", "saddles_negative_curvature", "saddles_escaped",
                                          "nonglobal_minimum_candidates", "unresolved"))


def check(cfg: dict[str, Any]) -> None:
    """Cross-key checks: p < n; the baseline's starts are a subset; φ values distinct and the fitted φ
    among them; checkpoints increasing; the deep net has a hidden layer."""
    ae = cfg["autoencoder"]
    if ae["p"] >= len(ae["spectrum"]):
        raise ConfigError(f"config key '{NAME}.autoencoder.p' has value {ae['p']}; allowed: 1 <= p < "
                          f"len(spectrum) = {len(ae['spectrum'])}")
    if ae["baseline_starts"] > ae["starts"]:
        raise ConfigError(f"config key '{NAME}.autoencoder.baseline_starts' has value {ae['baseline_starts']}; "
                          f"allowed: <= starts = {ae['starts']}")
    if len(set(ae["spectrum"])) != len(ae["spectrum"]):
        raise ConfigError(f"config key '{NAME}.autoencoder.spectrum' has repeated values; allowed: distinct values")
    t = cfg["tanh"]
    if len(set(t["phis"])) != len(t["phis"]) or t["fit_phi"] not in t["phis"]:
        raise ConfigError(f"config key '{NAME}.tanh.fit_phi' has value {t['fit_phi']}; allowed: one of the "
                          f"distinct phis {t['phis']}")
    if sorted(set(t["checkpoints"])) != t["checkpoints"]:
        raise ConfigError(f"config key '{NAME}.tanh.checkpoints' has value {t['checkpoints']}; allowed: "
                          "increasing, each once")
    deep = cfg["deep_linear"]
    widths = deep["widths"]
    if len(deep["singular_values"]) != widths[-1]:
        raise ConfigError(f"config key '{NAME}.deep_linear.singular_values' has {len(deep['singular_values'])} "
                          f"values; allowed: d_y = widths[-1] = {widths[-1]} values")
    if deep["samples"] < widths[0] + widths[-1]:
        raise ConfigError(f"config key '{NAME}.deep_linear.samples' has value {deep['samples']}; allowed: "
                          f">= d_x + d_y = {widths[0] + widths[-1]}")
    if len(widths) < 3:
        raise ConfigError(f"config key '{NAME}.deep_linear.widths' has value {widths}; allowed: at least 3 "
                          "widths (one hidden layer)")


MODULE = Module(
    name=NAME,
    x64=True,  # critical points to ‖∇L‖/(|L|+1) <= 1e-8 and exact Hessian inertia
    check=check,
    steps=(
        Step(
            "finder_validation",  # FV1-FV4: the finder on Baldi & Hornik and Kawaguchi, every critical point known
            tables=("search_runs", "search_sets", "k2_runs"),
            figures=(Figure("critical_search", "The critical-point finder on the linear autoencoder"),),
            quantities=SEARCH_QUANTITIES + K2_QUANTITIES,
        ),
        Step(
            "index_energy",  # PB1, PB2, PB3: tanh nets per φ, Newton-MR end points, exact Hessians
            tables=("end_points", "minimizers", "spectra"),
            figures=(Figure("index_energy", "Index vs energy of the end points (tanh nets)"),
                     Figure("minimizer_energy", "Energy of minimizers vs ½(1 − φ)²"),
                     Figure("spectrum", "Hessian spectra at critical points vs the Wishart ⊞ Wigner free sum")),
            quantities=("end_points", "critical_points", "critical_fraction", "gradient_flat_fraction",
                        "approx_points", "energy_strict", "index_strict", "energy_approx", "index_approx",
                        "exponent", "exponent_low", "exponent_high", "exponent_width", "fit_points",
                        "fitted_critical_energy", "minimizer_energy", "minimizer_prediction", "minimizer_rel_error",
                        "spectrum_points", "ks_free", "ks_mp", "ks_semicircle", "ks_free_minus_best_single",
                        "ks_free_median", "ks_best_single_median"),
        ),
    ),
)
