"""Lanczos: Ritz values against eigh on known spectra and an MLP Hessian; matfree cross-check."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import matfree.decomp
import numpy as np
import pytest
from flax import nnx

from shared.curvature.exact import flat_hessian
from shared.curvature.gauss_newton import supervised_loss
from shared.curvature.hvp import batch_data, hessian_operator
from shared.curvature.lanczos import lanczos, lanczos_eigs
from shared.curvature.operators import dense_operator, diagonal_operator
from shared.models.functional import pure
from tests.helpers import TinyMLP, wishart


@pytest.mark.x64
def test_ritz_values_of_a_diagonal_operator():
    # Well separated extremes inside a dense bulk: both ends converge in 40 steps.
    d = np.concatenate([[-8.0, -6.5, -5.0], np.linspace(-1, 1, 194), [4.0, 6.0, 9.0]])
    res = lanczos_eigs(diagonal_operator(jnp.asarray(d)), jax.random.key(0), k=3, num_steps=40)
    np.testing.assert_allclose(res.top.eigenvalues, [9.0, 6.0, 4.0], rtol=1e-10)
    np.testing.assert_allclose(res.bottom.eigenvalues, [-8.0, -6.5, -5.0], rtol=1e-10)
    assert bool(jnp.all(res.top.converged)) and bool(jnp.all(res.bottom.converged))


@pytest.mark.x64
def test_bottom_k_are_algebraically_smallest_not_smallest_magnitude():
    # Indefinite: many eigenvalues near zero, a few large negative ones.
    d = np.concatenate([[-3.0, -2.0], np.geomspace(1e-4, 1e-2, 40), -np.geomspace(1e-4, 1e-2, 40),
                        [1.0, 5.0]])
    res = lanczos_eigs(diagonal_operator(jnp.asarray(d)), jax.random.key(1), k=2, num_steps=60)
    np.testing.assert_allclose(res.bottom.eigenvalues, [-3.0, -2.0], rtol=1e-10)
    np.testing.assert_allclose(res.top.eigenvalues, [5.0, 1.0], rtol=1e-10)
    assert np.all(np.diff(np.asarray(res.ritz_values)) >= 0)


@pytest.mark.x64
def test_wishart_extremes_residuals_and_decomposition():
    a = wishart()
    eig = np.linalg.eigvalsh(a)
    res = lanczos_eigs(dense_operator(a), jax.random.key(2), k=4, num_steps=80,
                       return_vectors=True)
    np.testing.assert_allclose(res.top.eigenvalues, eig[::-1][:4], rtol=1e-8)
    np.testing.assert_allclose(res.bottom.eigenvalues, eig[:4], rtol=1e-6)
    # Ritz residual estimate |β_m s_{m,i}| equals the true residual ‖A y − θ y‖.
    for part in (res.top, res.bottom):
        y = np.asarray(part.eigenvectors)
        true = np.linalg.norm(y @ a - np.asarray(part.eigenvalues)[:, None] * y, axis=1)
        np.testing.assert_allclose(part.residuals, true, rtol=1e-3, atol=1e-12)
    # Q orthonormal and QAQᵀ = T (full reorthogonalisation keeps both at rounding level).
    dec = res.decomposition
    q = np.asarray(dec.basis)
    np.testing.assert_allclose(q @ q.T, np.eye(80), atol=1e-12)
    np.testing.assert_allclose(q @ a @ q.T, dec.tridiagonal(), atol=1e-12)


@pytest.mark.x64
def test_invariant_subspace_restarts_give_the_exact_spectrum():
    # Four distinct eigenvalues, each 10-fold: the Krylov space of any vector is 4-dimensional.
    d = jnp.asarray(np.repeat([-5.0, 1.0, 2.0, 3.0], 10))
    dec = lanczos(diagonal_operator(d), jax.random.key(3), 40)
    assert int(dec.num_restarts) >= 9
    ritz = np.linalg.eigvalsh(np.asarray(dec.tridiagonal()))
    np.testing.assert_allclose(ritz, np.sort(np.asarray(d)), atol=1e-12)


@pytest.mark.x64
def test_same_tridiagonal_matrix_as_matfree_and_from_the_host_loop():
    a = wishart(n=120, m=200, seed=4)
    v0 = jnp.asarray(np.random.default_rng(5).normal(size=120))
    ours = lanczos(dense_operator(a), jax.random.key(0), 30, v0=v0)
    theirs = matfree.decomp.tridiag_sym(30, reortho="full")(lambda v: a @ v, v0)
    np.testing.assert_allclose(ours.tridiagonal(), theirs.J_small, atol=1e-10)
    host = lanczos(dense_operator(a), jax.random.key(0), 30, v0=v0, loop="python")
    np.testing.assert_allclose(host.tridiagonal(), ours.tridiagonal(), atol=1e-13)
    np.testing.assert_allclose(host.basis, ours.basis, atol=1e-13)


def test_top5_of_a_3k_parameter_mlp_hessian():
    """float32 Lanczos on HVPs vs numpy.linalg.eigh of the dense Hessian (2,917 parameters)."""
    f, params = pure(TinyMLP([20, 56, 28, 5], rngs=nnx.Rngs(0), dtype=jnp.float32))
    rng = np.random.default_rng(6)
    x = jnp.asarray(rng.normal(size=(64, 20)), jnp.float32)
    y = jnp.asarray(rng.integers(0, 5, size=64))
    loss = supervised_loss(f, "cross_entropy", "mean")
    op = hessian_operator(loss, params, batch_data((x, y), 32), reduction="mean")
    res = lanczos_eigs(op, jax.random.key(7), k=5, num_steps=60)

    dense = jax.jit(lambda p: flat_hessian(lambda q: loss(q, (x, y)), p))(params)
    assert dense.shape == (2917, 2917)
    eig = np.linalg.eigvalsh(np.asarray(dense, np.float64))
    np.testing.assert_allclose(res.top.eigenvalues, eig[::-1][:5], rtol=1e-4)
    assert bool(jnp.all(res.top.converged))
