"""Stochastic Lanczos quadrature: exact quadrature moments, unbiased density moments, mass one."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from shared.curvature.lanczos import lanczos, ritz_pairs
from shared.curvature.operators import dense_operator, diagonal_operator
from shared.curvature.slq import gaussian_density, quadrature_rules, slq
from tests.helpers import wishart

pytestmark = pytest.mark.x64


def test_gauss_quadrature_is_exact_up_to_degree_2m_minus_1():
    """Golub & Meurant: Σ_j w_j θ_jᵏ = vᵀAᵏv for k ≤ 2m − 1, and Σ_j w_j = 1."""
    a = wishart()
    v = np.random.default_rng(1).choice([-1.0, 1.0], size=150) / np.sqrt(150)
    m = 6
    theta, s, _ = ritz_pairs(lanczos(dense_operator(a), jax.random.key(0), m, v0=jnp.asarray(v)))
    w = np.asarray(s[0] ** 2)
    ak_v = v.copy()
    for k in range(2 * m):
        np.testing.assert_allclose(np.sum(w * np.asarray(theta) ** k), v @ ak_v, rtol=1e-10)
        ak_v = a @ ak_v
    # Degree 2m is not integrated exactly: the test can tell the two apart.
    assert abs(np.sum(w * np.asarray(theta) ** (2 * m)) - v @ ak_v) > 1e-8 * abs(v @ ak_v)


@pytest.mark.parametrize("probe", ["rademacher", "gaussian"])
def test_density_moments_match_the_true_spectrum(probe):
    a = wishart()
    eig = np.linalg.eigvalsh(a)
    dens = slq(dense_operator(a), jax.random.key(2), num_steps=20, num_draws=10, probe=probe)
    assert dens.nodes.shape == dens.weights.shape == (10, 20)
    np.testing.assert_allclose(np.sum(dens.weights, axis=1), 1.0, rtol=1e-12)
    n = a.shape[0]
    for k in (1, 2, 3):
        est, stderr = dens.moment(k)
        true = np.mean(eig**k)  # tr(Aᵏ)/n
        assert abs(float(est) - true) <= 4 * float(stderr), (k, est, true, stderr)
        # The reported stderr matches the probe's theoretical variance of vᵀBv, B = Aᵏ.
        b = np.linalg.matrix_power(a, k)
        if probe == "rademacher":
            var = 2 * (np.sum(b**2) - np.sum(np.diag(b) ** 2)) / n**2
        else:  # uniform on the sphere
            var = 2 / (n + 2) * (np.sum(b**2) / n - (np.trace(b) / n) ** 2)
        assert 0.4 < float(stderr) / np.sqrt(var / 10) < 2.0
    assert abs(float(dens.mass) - 1.0) < 1e-6
    # The support of the density is the spectrum: no node outside [λ_min, λ_max].
    assert eig[0] - 1e-8 <= float(jnp.min(dens.nodes))
    assert float(jnp.max(dens.nodes)) <= eig[-1] + 1e-8


def test_two_clusters_get_equal_mass():
    rng = np.random.default_rng(3)
    d = np.concatenate([-1.0 + 0.01 * rng.normal(size=100), 2.0 + 0.01 * rng.normal(size=100)])
    dens = slq(diagonal_operator(jnp.asarray(d)), jax.random.key(4), num_steps=20, num_draws=10,
               sigma=0.05)
    grid, phi = np.asarray(dens.grid), np.asarray(dens.density)
    left = np.trapezoid(np.where(grid < 0.5, phi, 0.0), grid)
    np.testing.assert_allclose(left, 0.5, atol=0.06)
    np.testing.assert_allclose(float(dens.mass), 1.0, atol=1e-6)
    assert float(dens.sigma) == pytest.approx(0.05)


def test_host_loop_and_chunked_draws_give_the_same_rules():
    op = dense_operator(wishart())  # the fori rules are those of the moments test above
    fori = quadrature_rules(op, jax.random.key(2), num_steps=20, num_draws=10)
    host = quadrature_rules(op, jax.random.key(2), num_steps=20, num_draws=10, loop="python",
                            draws_batch_size=5)
    for a, b in zip(fori, host, strict=True):
        assert a.shape[0] == 10 and a.shape == b.shape
        np.testing.assert_allclose(a, b, atol=1e-12)


def test_gaussian_density_formula():
    nodes = jnp.asarray([[0.0, 1.0], [2.0, 3.0]])
    weights = jnp.asarray([[0.25, 0.75], [0.5, 0.5]])
    grid = jnp.asarray([0.0, 1.5])
    sigma = 0.5
    got = gaussian_density(nodes, weights, grid, sigma)
    norm = lambda t, mu: np.exp(-0.5 * ((t - mu) / sigma) ** 2) / (sigma * np.sqrt(2 * np.pi))
    want = [
        0.5 * sum(float(w) * norm(t, float(mu))
                  for row_n, row_w in zip(nodes, weights, strict=True)
                  for mu, w in zip(row_n, row_w, strict=True))
        for t in (0.0, 1.5)
    ]
    np.testing.assert_allclose(got, want, rtol=1e-12)
