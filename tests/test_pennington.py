"""Pennington & Bahri (2017): the module's mathematics against ground truth, and planted results whose
claims must come out 'not reproduced'."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from replications.pennington_bahri_rmt import theory
from shared.claims import judge, load_claims
from shared.config import ConfigError, deep_merge, module_defaults, module_dir, resolve

pytestmark = pytest.mark.x64
CLAIMS = {c["id"]: c for c in load_claims(module_dir("pennington_bahri_rmt") / "claims.yaml")["claims"]}


def test_tanh_loss_is_half_at_zero_output_and_matches_numpy() -> None:
    rng = np.random.default_rng(0)
    n, m = 3, 7
    x, y = rng.standard_normal((m, n)), rng.standard_normal((m, n))
    loss = theory.tanh_loss(x, y)
    v = rng.standard_normal(2 * n * n)
    w1, w2 = v[:9].reshape(3, 3), v[9:].reshape(3, 3)
    out = np.tanh(x @ w1.T / np.sqrt(3)) @ w2.T / np.sqrt(3)
    assert float(loss(jnp.asarray(v))) == pytest.approx(0.5 * np.mean(np.sum((out - y) ** 2, 1)) / n, rel=1e-12)
    assert float(loss(jnp.zeros(18))) == pytest.approx(0.5 * np.mean(y**2), rel=1e-12)
    assert theory.samples_for(8, 0.5) == 32  # P = 128 parameters over m·n = 256 targets


def test_closed_forms() -> None:
    assert theory.minimizer_energy(0.5) == pytest.approx(0.125)
    assert theory.minimizer_energy(1.2) == 0.0
    assert theory.critical_energy_recalled(0.0) == pytest.approx(2 / 16)


def test_exponent_fit_recovers_a_planted_power_law() -> None:
    rng = np.random.default_rng(1)
    eps = np.sort(rng.uniform(0.2, 0.5, 60))
    alpha = theory.power_law(eps, 2.0, 0.15, 1.5) * (1 + 0.01 * rng.standard_normal(60))
    gamma, lo, hi, eps_c = theory.fit_exponent(eps, alpha, rng, resamples=60)
    assert gamma == pytest.approx(1.5, abs=0.1) and lo <= 1.5 <= hi and eps_c == pytest.approx(0.15, abs=0.02)
    # planted: a linear law is not the 3/2 power
    alpha = theory.power_law(eps, 2.0, 0.15, 1.0) * (1 + 0.01 * rng.standard_normal(60))
    gamma, lo, hi, _ = theory.fit_exponent(eps, alpha, rng, resamples=60)
    m = {"exponent_low": lo, "exponent_high": hi, "exponent_width": hi - lo}
    assert hi < 1.5 and judge(CLAIMS["PB1-exponent"], m).verdict == "not reproduced"


def _pb1(energy: list[float], index: list[float], count: int) -> dict:  # type: ignore[type-arg]
    return {"critical_points": count, "energy_strict": energy, "index_strict": index,
            "energy_approx": energy, "index_approx": index}


def test_pb1_planted_rise_and_flat_index() -> None:
    rng = np.random.default_rng(2)
    energy = rng.uniform(0.1, 0.5, 30).tolist()
    rising = [e + 0.02 * rng.standard_normal() for e in energy]
    assert judge(CLAIMS["PB1"], _pb1(energy, rising, 30)).verdict == "reproduced"
    assert judge(CLAIMS["PB1-approx"], _pb1(energy, rising, 30)).verdict == "reproduced"
    falling = [-r for r in rising]  # planted: index falls with energy
    assert judge(CLAIMS["PB1"], _pb1(energy, falling, 30)).verdict == "not reproduced"
    assert judge(CLAIMS["PB1-approx"], _pb1(energy, falling, 30)).verdict == "not reproduced"
    # planted: too few critical points (the finder stalled): not reproduced, whatever the trend
    assert judge(CLAIMS["PB1"], _pb1([np.nan] * 3, [np.nan] * 3, 2)).verdict == "not reproduced"


def test_pb2_planted_minimizer_energies() -> None:
    phis = [0.25, 0.5, 0.75]
    pred = [float(theory.minimizer_energy(p)) for p in phis]
    good = {"minimizer_rel_error": [abs(1.05 * p - p) / p for p in pred]}
    assert judge(CLAIMS["PB2"], good).verdict == "reproduced"
    linear = [0.5 * (1 - p) for p in phis]  # planted: ½(1 − φ) instead of ½(1 − φ)²
    bad = {"minimizer_rel_error": [abs(a - b) / b for a, b in zip(linear, pred, strict=True)]}
    assert judge(CLAIMS["PB2"], bad).verdict == "not reproduced"
    assert judge(CLAIMS["PB2"], {"minimizer_rel_error": [np.nan, 0.0, 0.0]}).verdict == "not reproduced"


def test_fv_claims_fail_on_planted_findings() -> None:
    ok = {"search_unmatched_critical": 0, "search_critical": 50, "search_nonglobal_minima_found": 0,
          "search_minimum_found": True, "search_saddles_without_negative_eigenvalue": 0,
          "k2_nonglobal_minimum_candidates": 0, "k2_critical": 40, "search_sets_recovered_fraction": 0.9,
          "search_gradient_flat_fraction": 0.0, "search_recovered_minus_baseline": 0.8}
    for claim in ("FV1", "FV2", "FV3", "FV4"):
        assert judge(CLAIMS[claim], ok).verdict == "reproduced", claim
    planted = {"FV1": {"search_unmatched_critical": 1}, "FV2": {"search_nonglobal_minima_found": 2},
               "FV3": {"k2_nonglobal_minimum_candidates": 1},
               "FV4": {"search_sets_recovered_fraction": 0.2, "search_recovered_minus_baseline": -0.1}}
    for claim, change in planted.items():
        assert judge(CLAIMS[claim], {**ok, **change}).verdict == "not reproduced", claim


def test_bad_config_names_the_key() -> None:
    name = "pennington_bahri_rmt"
    with pytest.raises(ConfigError, match="tanh.fit_phi"):
        resolve(deep_merge(module_defaults(name), {"scale": "smoke", name: {"tanh": {"fit_phi": 0.9}}}), name)
    with pytest.raises(ConfigError, match="autoencoder.p"):
        resolve(deep_merge(module_defaults(name), {"scale": "smoke", name: {"autoencoder": {"p": 4}}}), name)


@pytest.mark.slow
def test_steps_at_the_smoke_scale_return_their_declaration() -> None:
    from replications.pennington_bahri_rmt import steps
    from shared.module import check_result, load

    name = "pennington_bahri_rmt"
    settings = resolve({**module_defaults(name), "scale": "smoke"}, name)
    for step in load(name).steps:
        result = getattr(steps, step.name)(settings)
        check_result(name, step, result)
    import matplotlib.pyplot as plt

    plt.close("all")
