"""Hutchinson and Hutch++ against exact traces; Hutch++ beats Hutchinson at equal matvecs."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from shared.curvature.operators import dense_operator
from shared.curvature.trace import hutch_plus_plus, hutchinson

pytestmark = pytest.mark.x64


def _low_rank_plus_noise(n: int = 120, rank: int = 8, noise: float = 0.05, seed: int = 0):
    """U diag(large) Uᵀ + noise·(symmetric Gaussian): a few eigenvalues dominate the trace."""
    rng = np.random.default_rng(seed)
    u, _ = np.linalg.qr(rng.normal(size=(n, rank)))
    e = rng.normal(size=(n, n))
    return u @ np.diag(np.linspace(10.0, 50.0, rank)) @ u.T + noise * (e + e.T) / np.sqrt(2 * n)


def test_hutchinson_within_its_stderr_and_stderr_is_calibrated():
    a = _low_rank_plus_noise()
    res = hutchinson(dense_operator(a), jax.random.key(0), num_probes=60)
    assert res.num_matvecs == 60 and res.samples.shape == (60,)
    assert abs(float(res.estimate) - np.trace(a)) <= 4 * float(res.stderr)
    # Var[zᵀAz] = 2(‖A‖_F² − Σ Aᵢᵢ²) for Rademacher z (Hutchinson 1990).
    theory = np.sqrt(2 * (np.sum(a**2) - np.sum(np.diag(a) ** 2)) / 60)
    assert 0.6 < float(res.stderr) / theory < 1.5


def test_hutch_plus_plus_has_lower_variance_at_equal_matvecs():
    op = dense_operator(_low_rank_plus_noise())
    keys = jax.random.split(jax.random.key(1), 40)
    plain = jax.vmap(lambda k: hutchinson(op, k, num_probes=30).estimate)(keys)
    plus = jax.vmap(lambda k: hutch_plus_plus(op, k, num_matvecs=30).estimate)(keys)
    true = float(np.trace(np.asarray(op.args)))
    mse_plain = float(jnp.mean((plain - true) ** 2))
    mse_plus = float(jnp.mean((plus - true) ** 2))
    assert mse_plus < 0.05 * mse_plain, (mse_plus, mse_plain)


def test_hutch_plus_plus_is_exact_when_the_sketch_spans_the_range():
    a = _low_rank_plus_noise(noise=0.0)  # rank 8 < 10 = num_matvecs / 3
    res = hutch_plus_plus(dense_operator(a), jax.random.key(2), num_matvecs=30)
    np.testing.assert_allclose(res.estimate, np.trace(a), rtol=1e-10)
    assert float(res.stderr) < 1e-10
    with pytest.raises(ValueError):
        hutch_plus_plus(dense_operator(a), jax.random.key(2), num_matvecs=31)
