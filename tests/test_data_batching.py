"""Batching by index: deterministic, key-driven, no host round trip."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from shared import data, seeds


def test_epoch_batches_is_a_deterministic_permutation_dropping_the_remainder():
    key = seeds.derive(0, "data_order")
    order = np.asarray(data.epoch_batches(key, 103, 10))
    assert order.shape == (10, 10) and order.dtype == np.int32
    assert len(np.unique(order)) == 100 and order.min() >= 0 and order.max() < 103
    np.testing.assert_array_equal(order, np.asarray(data.epoch_batches(key, 103, 10)))
    np.testing.assert_array_equal(order.ravel(), np.asarray(jax.random.permutation(key, 103))[:100])
    next_epoch = np.asarray(data.epoch_batches(jax.random.fold_in(key, 1), 103, 10))
    assert not np.array_equal(order, next_epoch)


def test_eval_batches_cover_every_example_once():
    indices, mask = map(np.asarray, data.eval_batches(10, 4))
    assert indices.shape == mask.shape == (3, 4)
    np.testing.assert_array_equal(np.sort(indices[mask]), np.arange(10))
    assert mask.sum() == 10


def test_an_epoch_runs_on_the_device_without_host_transfers():
    x = jax.device_put(jnp.arange(40.0).reshape(20, 2))
    y = jax.device_put(jnp.arange(20))
    order = data.epoch_batches(seeds.derive(1, "order"), 20, 5)

    @jax.jit
    def epoch(x, y, order):
        def step(total, indices):
            bx, by = data.take(x, y, indices)
            return total + bx.sum() + by.sum(), by

        return jax.lax.scan(step, jnp.zeros(()), order)

    epoch(x, y, order)  # compile outside the guard
    with jax.transfer_guard("disallow"):
        total, seen = epoch(x, y, order)
    assert float(total) == float(x.sum() + y.sum())
    np.testing.assert_array_equal(np.asarray(seen), np.asarray(order))
