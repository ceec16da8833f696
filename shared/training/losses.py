"""Per-example losses and correctness, the engine's building blocks.

Losses return one value per example (shape ``(batch,)``); the engine averages
them over a batch (mean cross-entropy, as in Keskar et al. §2 and Li et al.'s
``nn.CrossEntropyLoss``) and weights them by a mask when evaluating padded
batches.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax

Loss = Callable[[jax.Array, jax.Array], jax.Array]


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Softmax cross-entropy against integer class labels, per example."""
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels.astype(jnp.int32))


def squared_error(outputs: jax.Array, targets: jax.Array) -> jax.Array:
    """½‖f(x) − y‖² per example (the ½ keeps gradients free of a factor 2)."""
    diff = (outputs - targets).reshape((outputs.shape[0], -1))
    return 0.5 * jnp.sum(diff * diff, axis=-1)


def total_squared_error(outputs: jax.Array, targets: jax.Array) -> jax.Array:
    """Σ_examples ‖f(x) − y‖², summed over the whole batch: the papers' sum convention for
    linear networks (Baldi & Hornik 1989 eq. 1; Kawaguchi 2016 uses ½ of it)."""
    return jnp.sum((outputs - targets) ** 2)


def correct(outputs: jax.Array, labels: jax.Array) -> jax.Array:
    """1.0 where argmax(outputs) equals an integer label; zeros for non-class targets."""
    if not jnp.issubdtype(labels.dtype, jnp.integer) or labels.ndim != 1:
        return jnp.zeros(outputs.shape[0], outputs.dtype)
    return (jnp.argmax(outputs, axis=-1) == labels).astype(outputs.dtype)
