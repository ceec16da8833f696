"""Full-batch GD ensembles (``train_ensemble``): vmapped = looped, failures, logging, dtype."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from shared.models import DeepLinear
from shared.training import member_keys, train_ensemble

WIDTHS = (3, 4, 2)


def problem(dtype: object = np.float32) -> tuple[object, object, tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 3)).astype(dtype)
    y = (x @ rng.normal(size=(3, 2))).astype(dtype)
    graph, _ = nnx.split(DeepLinear(WIDTHS, rngs=nnx.Rngs(0), param_dtype=dtype), nnx.Param)

    def loss_fn(params: object, data: tuple[jax.Array, jax.Array]) -> jax.Array:
        out = nnx.merge(graph, params)(data[0])
        return 0.5 * jnp.mean(jnp.sum((out - data[1]) ** 2, axis=-1))

    def init(key: jax.Array) -> object:
        return nnx.split(DeepLinear(WIDTHS, rngs=nnx.Rngs(key), param_dtype=dtype), nnx.Param)[1]

    return loss_fn, init, (x, y)


def test_vmapped_gd_matches_a_plain_loop_and_logs() -> None:
    loss_fn, init, data = problem()
    keys = member_keys(0, "gd", seeds=range(4))
    params0 = jax.vmap(init)(keys)
    run = train_ensemble(loss_fn, params0, data, optax.sgd(0.05), 23, log_every=5)
    assert list(run.log_steps) == [0, 5, 10, 15, 20, 23]
    assert run.loss_history.shape == (4, 6) and run.n_failed == 0
    assert np.all(np.diff(run.loss_history, axis=1) < 0)  # GD with a small step descends
    grad = jax.jit(jax.grad(loss_fn))
    for i in range(4):
        p = jax.tree_util.tree_map(lambda a, i=i: a[i], params0)
        losses = []
        for t in range(23):
            if t % 5 == 0:
                losses.append(float(loss_fn(p, data)))
            p = jax.tree_util.tree_map(lambda w, g: w - 0.05 * g, p, grad(p, data))
        losses.append(float(loss_fn(p, data)))
        mine = jax.tree_util.tree_map(lambda a, i=i: a[i], run.params)
        for a, b in zip(jax.tree_util.tree_leaves(mine), jax.tree_util.tree_leaves(p), strict=True):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(run.loss_history[i], losses, rtol=1e-5)


def test_divergent_member_is_frozen_and_counted_and_tolerance_stops() -> None:
    loss_fn, init, data = problem()
    seeds = [10, 11, 12]
    params0 = jax.vmap(init)(member_keys(0, "gd", seeds=seeds))
    lrs = jnp.array([0.05, 1e3, 0.05])
    run = train_ensemble(
        loss_fn, params0, data, lambda lr: optax.sgd(lr), 3000, hypers=lrs, seeds=seeds,
        log_every=500, grad_tol=1e-5, record_params=True,
    )  # fmt: skip
    assert list(run.failed) == [False, True, False] and run.failed_seeds == [11]
    assert run.n_failed == 1 and run.failed_step[1] >= 0
    assert np.isnan(run.final_loss[1]) and np.isnan(run.loss_history[1, -1])
    assert np.all(np.isfinite(jax.tree_util.tree_leaves(run.params)[0][1]))  # frozen before NaN
    assert run.converged[0] and run.converged[2] and np.all(run.grad_norm[[0, 2]] <= 1e-5)
    assert np.all(run.steps_taken[[0, 2]] < 3000)
    assert run.trajectory is not None and run.trajectory.shape == (3, 7, 3 * 4 + 4 * 2)


@pytest.mark.x64
def test_float64_params_train_in_float64() -> None:
    loss_fn, init, data = problem(np.float64)
    params0 = jax.vmap(init)(member_keys(0, "gd64", seeds=range(2)))
    run = train_ensemble(loss_fn, params0, data, optax.sgd(0.05), 10)
    assert all(leaf.dtype == jnp.float64 for leaf in jax.tree_util.tree_leaves(run.params))
    assert run.loss_history.dtype == np.float64
