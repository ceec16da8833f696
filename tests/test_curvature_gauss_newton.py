"""H = G + R: the Gauss–Newton part against analytic output Hessians, the residual explicitly."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.flatten_util import ravel_pytree

from shared.curvature.exact import flat_hessian
from shared.curvature.gauss_newton import (
    ggn_matrix,
    ggn_operator,
    residual_operator,
    supervised_loss,
)
from shared.curvature.hvp import batch_data
from shared.curvature.operators import to_dense
from shared.models.functional import pure
from tests.helpers import TinyMLP

pytestmark = pytest.mark.x64

N, D, C = 23, 4, 3


@pytest.fixture(scope="module")
def problem():
    f, params = pure(TinyMLP([D, 5, C], rngs=nnx.Rngs(0)))
    rng = np.random.default_rng(2)
    x = jnp.asarray(rng.normal(size=(N, D)))
    labels = jnp.asarray(rng.integers(0, C, size=N))
    targets = jnp.asarray(rng.normal(size=(N, C)))
    return f, params, x, labels, targets


def _oracle(f, params, x, y, kind):
    """G from analytic output Hessians and R = Σᵢ Σ_c (∂ℓ/∂o_c) ∇²f_c / N, written out."""
    flat, unravel = ravel_pytree(params)
    out = lambda w: f(unravel(w), x)  # [N, C]
    jac = jax.jacfwd(out)(flat)  # [N, C, P]
    o = out(flat)
    if kind == "cross_entropy":
        p = jax.nn.softmax(o)
        h_out = jax.vmap(jnp.diag)(p) - p[:, :, None] * p[:, None, :]  # diag(p) − ppᵀ
        r = p - jax.nn.one_hot(y, C)  # ∂ℓ/∂z
    else:
        h_out = jnp.broadcast_to(jnp.eye(C), (N, C, C))
        r = o - y
    g = jnp.einsum("ncp,ncd,ndq->pq", jac, h_out, jac) / N
    resid = jax.hessian(lambda w: jnp.sum(jax.lax.stop_gradient(r) * out(w)) / N)(flat)
    return g, resid


@pytest.mark.parametrize("kind", ["cross_entropy", "squared"])
def test_hessian_splits_into_gauss_newton_plus_residual(problem, kind):
    f, params, x, labels, targets = problem
    y = labels if kind == "cross_entropy" else targets
    data = batch_data((x, y), 10)  # two batches of 10 and a remainder of 3
    loss = supervised_loss(f, kind, "mean")
    h = jax.jit(lambda p: flat_hessian(lambda q: loss(q, (x, y)), p))(params)
    g_oracle, r_oracle = jax.jit(lambda p: _oracle(f, p, x, y, kind))(params)

    g_dense = ggn_matrix(f, params, data, kind=kind)
    g_matvec = to_dense(ggn_operator(f, params, data, kind=kind))
    r_matvec = to_dense(residual_operator(f, params, data, kind=kind))
    np.testing.assert_allclose(g_dense, g_oracle, atol=1e-12)
    np.testing.assert_allclose(g_matvec, g_oracle, atol=1e-12)
    np.testing.assert_allclose(g_oracle + r_oracle, h, atol=1e-12)
    np.testing.assert_allclose(r_matvec, r_oracle, atol=1e-12)
    # G is PSD; H and R are not (the tanh net is not at a minimum).
    scale = float(np.max(np.abs(h)))
    assert np.linalg.eigvalsh(g_dense).min() >= -1e-12 * scale
    assert np.linalg.eigvalsh(np.asarray(r_oracle)).min() < -1e-6 * scale
    assert np.max(np.abs(r_oracle)) > 1e-4 * scale


def test_linear_model_with_squared_loss_has_no_residual(problem):
    _, _, x, _, targets = problem
    f, params = pure(TinyMLP([D, C], rngs=nnx.Rngs(1)))  # linear
    data = batch_data((x, targets), 10)
    loss = supervised_loss(f, "squared", "sum")
    h = jax.jit(lambda p: flat_hessian(lambda q: loss(q, (x, targets)), p))(params)
    g = ggn_matrix(f, params, data, kind="squared", reduction="sum")
    np.testing.assert_allclose(g, h, atol=1e-11)
    # Closed form for the kernel block: H_WW = (Σᵢ xᵢxᵢᵀ) ⊗ I_C in (D, C) row-major order.
    p_bias = C
    kernel_block = np.asarray(h)[p_bias:, p_bias:]
    np.testing.assert_allclose(kernel_block, np.kron(np.asarray(x.T @ x), np.eye(C)), atol=1e-11)
