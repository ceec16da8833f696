"""Loss and accuracy over a whole data set, in batches, with the BN mode explicit.

The data are padded to a whole number of batches and a mask keeps the padding
out of the sums, so every example counts exactly once; the loop is a
``lax.scan`` inside one jit. ``mode`` is required (``"eval"``: running averages;
``"batch_stats"``: each batch's own statistics, as in Keskar's Keras code, where
the result depends on ``batch_size`` and padding would pollute the statistics,
so it requires ``n % batch_size == 0``). Evaluators are kept by value
(``compile_cache.EVALUATORS``): equal networks and settings share one jit.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from shared.training.compile_cache import EVALUATORS
from shared.training.losses import Loss, correct, cross_entropy
from shared.training.network import Mode, Network

Evaluator = Callable[[Any, Any, jax.Array, jax.Array], tuple[jax.Array, jax.Array]]


def make_evaluator(net: Network, *, mode: Mode, batch_size: int, loss: Loss = cross_entropy) -> Evaluator:
    """A jitted ``(params, state, x, y) -> (mean loss, accuracy)``."""
    if mode == "train":
        raise ValueError("evaluate in 'eval' or 'batch_stats' mode; 'train' updates state")
    return EVALUATORS.get(("one", net, mode, batch_size, loss), lambda: _jit_evaluator(net, mode, batch_size, loss))


def _jit_evaluator(net: Network, mode: Mode, batch_size: int, loss: Loss) -> Evaluator:
    """``make_evaluator`` without the cache."""

    def evaluate(params: Any, state: Any, x: jax.Array, y: jax.Array) -> tuple[Any, Any]:
        n = x.shape[0]
        bs = min(batch_size, n)
        nb = -(-n // bs)
        pad = nb * bs - n
        if pad and mode == "batch_stats":
            raise ValueError(f"batch_stats evaluation needs n={n} divisible by batch {bs}")
        xp = jnp.pad(x, [(0, pad)] + [(0, 0)] * (x.ndim - 1)).reshape((nb, bs, *x.shape[1:]))
        yp = jnp.pad(y, [(0, pad)] + [(0, 0)] * (y.ndim - 1)).reshape((nb, bs, *y.shape[1:]))
        mask = (jnp.arange(nb * bs) < n).reshape((nb, bs))

        def body(carry: tuple[Any, Any], batch: tuple[Any, Any, Any]) -> tuple[Any, None]:
            xb, yb, mb = batch
            out, _ = net.apply(params, state, xb, mode=mode)
            m = mb.astype(out.dtype)
            loss_sum = carry[0] + jnp.sum(loss(out, yb) * m)
            return (loss_sum, carry[1] + jnp.sum(correct(out, yb) * m)), None

        leaves = jax.tree_util.tree_leaves(params)
        dtype = jnp.result_type(*[leaf.dtype for leaf in leaves], x.dtype)
        zero = jnp.zeros((), dtype)
        (loss_sum, n_correct), _ = jax.lax.scan(body, (zero, zero), (xp, yp, mask))
        return loss_sum / n, n_correct / n

    return jax.jit(evaluate)


def make_ensemble_evaluator(net: Network, *, mode: Mode, batch_size: int, loss: Loss = cross_entropy) -> Evaluator:
    """``make_evaluator`` vmapped over stacked params/state (data shared)."""
    single = make_evaluator(net, mode=mode, batch_size=batch_size, loss=loss)
    return EVALUATORS.get(("ensemble", net, mode, batch_size, loss),
                          lambda: jax.jit(jax.vmap(single, in_axes=(0, 0, None, None))))
