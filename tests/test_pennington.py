"""Pennington & Bahri (2017): the module's mathematics against ground truth, and planted results whose
claims must come out 'not reproduced'."""

from __future__ import annotations

from typing import Any

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
    planted: dict[str, dict[str, Any]] = {
        "FV1": {"search_unmatched_critical": 1}, "FV2": {"search_nonglobal_minima_found": 2},
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


# --- PB3: the Wishart ⊞ Wigner free sum -----------------------------------------------------------

def _wishart_plus_goe(rng: np.random.Generator, p: int, ratio: float, scale: float, variance: float
                      ) -> tuple[np.ndarray, np.ndarray]:
    """(W + S, W): W = s·XᵀX/N (X of N = p/c rows), S a GOE matrix of spectral variance σ², independent."""
    x = rng.standard_normal((int(round(p / ratio)), p))
    w = scale * x.T @ x / x.shape[0]
    b = rng.standard_normal((p, p))
    return w + np.sqrt(variance) * (b + b.T) / np.sqrt(2 * p), w


def test_free_sum_reduces_to_its_closed_forms() -> None:
    from scipy import integrate

    from replications.pennington_bahri_rmt import free_sum as fs

    x = np.linspace(-1.0, 6.0, 141)
    for ratio in (0.3, 2.0):  # σ = 0: Marchenko–Pastur's closed form (continuous part)
        np.testing.assert_allclose(fs.free_sum_density(x, ratio, 1.3, 0.0), fs.mp_density(x, ratio, 1.3), atol=1e-10)
    # ... and its CDF, atom included (c = 2: mass ½ at 0), against quadrature of the closed form
    grid, cdf = fs.free_sum_cdf(2.0, 1.0, 0.0, points=4001)
    for t in (-0.5, 0.5, 2.0, 4.0, 7.0):
        exact = (0.5 if t >= 0 else 0.0) + (integrate.quad(fs.mp_density, 1e-12, t, args=(2.0, 1.0), limit=200)[0]
                                            if t > 0 else 0.0)
        assert np.interp(t, grid, cdf) == pytest.approx(exact, abs=2e-3), t
    # MP scale 0: the semicircle
    np.testing.assert_allclose(fs.free_sum_density(x, 0.5, 0.0, 0.7), fs.semicircle_density(x, 0.7), atol=1e-10)
    assert float(integrate.trapezoid(fs.free_sum_density(x, 0.5, 1.0, 0.2), x)) == pytest.approx(1.0, abs=2e-3)


def test_subordination_agrees_with_the_cubic_and_adds_semicircles() -> None:
    from replications.pennington_bahri_rmt import free_sum as fs

    z = np.linspace(-2.0, 5.0, 36) + 0.3j  # two semicircles: variances add
    g = fs.subordinate(lambda w: fs.semicircle_stieltjes(w, 0.7), 0.4, z)
    np.testing.assert_allclose(g, fs.semicircle_stieltjes(z, 1.1), atol=1e-10)
    # MP ⊞ semicircle by the fixed point just above the axis vs the cubic's root on it
    x = np.linspace(-1.0, 4.5, 23)
    g = fs.subordinate(lambda w: fs.mp_stieltjes(w, 0.5, 1.0), 0.3, x + 1e-4j)
    np.testing.assert_allclose(-g.imag / np.pi, fs.free_sum_density(x, 0.5, 1.0, 0.3), atol=2e-3)


@pytest.mark.parametrize("ratio", [0.5, 2.0])
def test_free_sum_matches_sampled_wishart_plus_goe(ratio: float) -> None:
    from replications.pennington_bahri_rmt import free_sum as fs

    h, w = _wishart_plus_goe(np.random.default_rng(3), 400, ratio, 1.0, 0.3)
    grid, cdf = fs.free_sum_cdf(ratio, 1.0, 0.3)
    assert fs.ks_distance(np.linalg.eigvalsh(h), grid, cdf) <= 0.03
    c = fs.spectrum_comparison(h, w, ratio)  # parameters fitted from the parts
    assert c["scale"] == pytest.approx(1.0, rel=0.02) and c["variance"] == pytest.approx(0.3, rel=0.05)
    assert c["ratio_fitted"] == pytest.approx(ratio, rel=0.05)
    assert c["ks_free"] <= 0.03 < min(c["ks_mp"], c["ks_semicircle"])


def test_gauss_newton_part_of_the_tanh_hessian() -> None:
    import jax

    from shared.critical import finder

    rng = np.random.default_rng(4)
    n, m = 2, 5
    x = rng.standard_normal((m, n))
    v = rng.standard_normal((2, 2 * n * n))
    f = theory.tanh_outputs(x)
    # zero residual (targets = outputs): H = G
    y = np.asarray(f(jnp.asarray(v[0]))).reshape(m, n)
    np.testing.assert_allclose(theory.gauss_newton(x, v[:1])[0], finder.hessians(theory.tanh_loss(x, y), v[:1])[0],
                               atol=1e-12)
    # any targets: H − G = (1/mn) Σ r_a ∇²f_a
    y = rng.standard_normal((m, n))
    h = finder.hessians(theory.tanh_loss(x, y), v[1:])[0]
    r = np.asarray(f(jnp.asarray(v[1]))) - y.ravel()
    hf = np.asarray(jax.hessian(f)(jnp.asarray(v[1])))
    np.testing.assert_allclose(h - theory.gauss_newton(x, v[1:])[0], np.einsum("a,apq->pq", r, hf) / (m * n),
                               atol=1e-12)


def test_pb3_planted_spectra_that_are_not_a_free_sum() -> None:
    from replications.pennington_bahri_rmt import free_sum as fs

    rng = np.random.default_rng(5)
    pairs = [_wishart_plus_goe(rng, 128, 0.5, 1.0, 0.2) for _ in range(4)]  # the quick scale's P = 128
    good_points = [fs.spectrum_comparison(h, w, 0.5) for h, w in pairs]
    good = fs.pb3_measurements(good_points)
    assert judge(CLAIMS["PB3"], good).verdict == "reproduced", good
    # planted: the residual commutes with G (R = a(G − s)): a stretched MP, not a free sum (KS ≈ 0.13)
    aligned = []
    for _, w in pairs:
        s = np.trace(w) / 128
        aligned.append(fs.spectrum_comparison(w + 0.6 * (w - s * np.eye(128)), w, 0.5))
    assert judge(CLAIMS["PB3"], fs.pb3_measurements(aligned)).verdict == "not reproduced"
    # planted: the wrong ratio (φ = 0.05 where the Gauss–Newton part has 0.5)
    wrong = fs.pb3_measurements([fs.spectrum_comparison(h, w, 0.05) for h, w in pairs])
    assert judge(CLAIMS["PB3"], wrong).verdict == "not reproduced"
    # too few points to judge: not testable (not evidence either way)
    assert judge(CLAIMS["PB3"], fs.pb3_measurements([])).verdict == "not testable at this scale"
    assert judge(CLAIMS["PB3"], fs.pb3_measurements(good_points[:2])).verdict == "not testable at this scale"
