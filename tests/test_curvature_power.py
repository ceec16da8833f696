"""Power iteration: λ_max and (shifted) λ_min against eigvalsh, with honest residuals."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from shared.curvature.operators import dense_operator, diagonal_operator
from shared.curvature.power import power_iteration

pytestmark = pytest.mark.x64


def test_lambda_max_and_shifted_lambda_min():
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.normal(size=(80, 80)))
    eig = np.concatenate([[-4.0], np.linspace(-2.0, 1.5, 78), [3.0]])
    a = (q * eig) @ q.T
    op = dense_operator(a)
    top = power_iteration(op, jax.random.key(0), max_iters=400, rtol=1e-8)
    assert bool(top.converged) and int(top.num_matvecs) < 400
    # Largest magnitude is −4 here: without a shift power iteration finds it, not λ_max.
    np.testing.assert_allclose(top.eigenvalue, -4.0, rtol=1e-10)
    v = np.asarray(top.eigenvector)
    np.testing.assert_allclose(top.residual, np.linalg.norm(a @ v - float(top.eigenvalue) * v),
                               rtol=1e-6, atol=1e-14)
    # Shift below the spectrum's middle → λ_max; above → λ_min.
    hi = power_iteration(op, jax.random.key(1), max_iters=400, rtol=1e-8, shift=-4.0)
    lo = power_iteration(op, jax.random.key(1), max_iters=400, rtol=1e-8, shift=3.0)
    np.testing.assert_allclose(hi.eigenvalue, 3.0, rtol=1e-10)
    np.testing.assert_allclose(lo.eigenvalue, -4.0, rtol=1e-10)
    assert bool(hi.converged) and bool(lo.converged)
    host = power_iteration(op, jax.random.key(1), max_iters=400, rtol=1e-8, shift=3.0,
                           loop="python")
    np.testing.assert_allclose(host.eigenvalue, lo.eigenvalue, rtol=1e-12)
    assert int(host.num_matvecs) == int(lo.num_matvecs)


def test_unconverged_run_says_so():
    d = jnp.asarray(np.linspace(0.0, 1.0, 50))  # gap 1/49: far too slow for 5 steps
    res = power_iteration(diagonal_operator(d), jax.random.key(2), max_iters=5, rtol=1e-8)
    assert not bool(res.converged) and int(res.num_matvecs) == 5
    # the reported residual is the true one, and it is above the tolerance the run was given
    v, lam = np.asarray(res.eigenvector), float(res.eigenvalue)
    true = np.linalg.norm(np.asarray(d) * v - lam * v)
    np.testing.assert_allclose(res.residual, true, rtol=1e-6)
    assert true > 1e-8 * abs(lam)
