"""Hessian-vector products against finite differences and the dense Hessian; batching exactness."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.flatten_util import ravel_pytree

from shared.curvature.exact import flat_hessian
from shared.curvature.gauss_newton import supervised_loss
from shared.curvature.hvp import (
    batch_data,
    from_batches,
    full_gradient,
    full_loss,
    hessian_operator,
    hvp,
    seeded_subset,
)
from shared.curvature.operators import apply
from shared.models.functional import pure
from tests.helpers import TinyMLP

pytestmark = pytest.mark.x64

N = 37  # = 3·12 + 1: stacked batches plus a one-example remainder


@pytest.fixture(scope="module")
def problem():
    f, params = pure(TinyMLP([5, 7, 3], rngs=nnx.Rngs(0)))
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.normal(size=(N, 5)))
    y = jnp.asarray(rng.integers(0, 3, size=N))
    v = jnp.asarray(rng.normal(size=ravel_pytree(params)[0].size))
    return f, params, x, y, v


def test_hvp_matches_central_differences_of_the_gradient(problem):
    f, params, x, y, v = problem
    loss = supervised_loss(f, "cross_entropy", "mean")
    data = batch_data((x, y), 12)
    flat, unravel = ravel_pytree(params)
    # Independent channel: reverse-mode gradients only; step ~ eps_machine^(1/3).
    eps = 1e-5 / float(jnp.linalg.norm(v))
    grad = lambda w: full_gradient(loss, unravel(w), data, reduction="mean")
    fd = (grad(flat + eps * v) - grad(flat - eps * v)) / (2 * eps)
    hv = hvp(loss, params, data, v, reduction="mean")
    np.testing.assert_allclose(hv, fd, rtol=1e-6, atol=1e-9)


def test_hvp_matches_dense_hessian_times_vector(problem):
    f, params, x, y, v = problem
    loss = supervised_loss(f, "cross_entropy", "mean")
    dense = jax.jit(lambda p: flat_hessian(lambda q: loss(q, (x, y)), p))(params)
    hv = hvp(loss, params, batch_data((x, y), 12), v, reduction="mean")
    np.testing.assert_allclose(hv, dense @ v, rtol=1e-10, atol=1e-12)


def test_batched_hvp_equals_full_batch(problem):
    f, params, x, y, v = problem
    t = jax.nn.one_hot(y, 3)
    # "mean": stacked batches of 12 plus a remainder, weighted n_b / N.
    loss = supervised_loss(f, "squared", "mean")
    full = hvp(loss, params, batch_data((x, t)), v, reduction="mean")
    batched = hvp(loss, params, batch_data((x, t), 12), v, reduction="mean")
    np.testing.assert_allclose(batched, full, rtol=1e-11, atol=1e-13)
    unrolled = hvp(loss, params, batch_data((x, t), 12), v, reduction="mean", unroll_batches=True)
    np.testing.assert_allclose(unrolled, batched, rtol=1e-12, atol=1e-14)
    scanned = hvp(loss, params, batch_data((x, t), 12), v, reduction="mean", unroll_batches=False)
    np.testing.assert_allclose(scanned, batched, rtol=1e-12, atol=1e-14)
    # "sum": a sequence of batches of 10 with a smaller last one.
    loss = supervised_loss(f, "squared", "sum")
    full = hvp(loss, params, batch_data((x, t)), v, reduction="sum")
    seq = [(x[i : i + 10], t[i : i + 10]) for i in range(0, N, 10)]
    listed = hvp(loss, params, from_batches(seq), v, reduction="sum")
    np.testing.assert_allclose(listed, full, rtol=1e-11, atol=1e-13)
    assert not np.allclose(full, 0.0)


def test_sum_reduction_is_n_times_mean(problem):
    f, params, x, y, v = problem
    data = batch_data((x, y), 12)
    mean_loss = supervised_loss(f, "cross_entropy", "mean")
    h_mean = hvp(mean_loss, params, data, v, reduction="mean")
    h_sum = hvp(supervised_loss(f, "cross_entropy", "sum"), params, data, v, reduction="sum")
    np.testing.assert_allclose(h_sum, N * h_mean, rtol=1e-11)
    direct = mean_loss(params, (x, y))
    np.testing.assert_allclose(full_loss(mean_loss, params, data, reduction="mean"), direct,
                               rtol=1e-12)


def test_dtype_follows_params(problem):
    f, params, x, y, v = problem
    params32 = jax.tree_util.tree_map(lambda a: a.astype(jnp.float32), params)
    data = batch_data((x.astype(jnp.float32), y), 12)
    op = hessian_operator(supervised_loss(f, "cross_entropy"), params32, data, reduction="mean")
    assert op.dtype == np.float32 and op.size == v.size
    assert apply(op, v.astype(jnp.float32)).dtype == jnp.float32


def test_seeded_subset_is_reproducible_and_without_replacement():
    x = np.arange(100.0)[:, None]
    a = seeded_subset((x, x), jax.random.key(3), 20)
    b = seeded_subset((x, x), jax.random.key(3), 20)
    c = seeded_subset((x, x), jax.random.key(4), 20)
    np.testing.assert_array_equal(a[0], b[0])
    assert len(np.unique(np.asarray(a[0]))) == 20
    assert not np.array_equal(a[0], c[0])
    with pytest.raises(ValueError):
        from_batches([(x[:5],), (x[:7],)])
