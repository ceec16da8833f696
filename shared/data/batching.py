"""Mini-batches by index: the data stays on the device, only indices move.

An epoch is one ``jax.random.permutation(key, n)`` reshaped to
``(num_batches, batch_size)`` (the last ``n % batch_size`` examples of the
permutation are dropped, a different set each epoch).  A training loop gathers
``x[indices[i]]`` inside ``jit``/``lax.scan``, so no batch round-trips through
the host.  Epoch keys come from ``jax.random.fold_in(key, epoch)``, so a
resumed run sees the same order (big_vision style).

    key = seeds.derive(seed, "data_order")
    for epoch in range(num_epochs):
        order = epoch_batches(jax.random.fold_in(key, epoch), len(train), 128)
        state = run_epoch(state, train.x, train.y, order)   # lax.scan over order
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp


@functools.partial(jax.jit, static_argnames=("num_examples", "batch_size"))
def epoch_batches(key: jax.Array, num_examples: int, batch_size: int) -> jax.Array:
    """``(num_examples // batch_size, batch_size)`` int32 indices: a shuffled epoch."""
    if not 0 < batch_size <= num_examples:
        raise ValueError(f"batch_size must be in 1..{num_examples}, got {batch_size}")
    num_batches = num_examples // batch_size
    order = jax.random.permutation(key, num_examples)[: num_batches * batch_size]
    return order.reshape(num_batches, batch_size).astype(jnp.int32)


def eval_batches(num_examples: int, batch_size: int) -> tuple[jax.Array, jax.Array]:
    """Every example once, in order: ``(indices, mask)``, both ``(num_batches, batch_size)``.

    The last batch is padded with index 0 and ``mask == False``; weight
    per-example losses by the mask (and divide by ``num_examples``) for exact
    full-data averages, e.g. a loss surface over the whole training set.
    """
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    num_batches = -(-num_examples // batch_size)
    flat = jnp.arange(num_batches * batch_size, dtype=jnp.int32)
    mask = flat < num_examples
    indices = jnp.where(mask, flat, 0)
    return indices.reshape(num_batches, batch_size), mask.reshape(num_batches, batch_size)


def take(x: jax.Array, y: jax.Array, indices: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The batch ``(x[indices], y[indices])``; usable inside ``jit``."""
    return jnp.take(x, indices, axis=0), jnp.take(y, indices, axis=0)
