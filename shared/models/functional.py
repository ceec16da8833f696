"""The pure-function view of an NNX model: ``f(params, x)``.

Curvature, landscape and ensemble code needs the loss as a pure function of the
parameters (``jax.hessian``, ``jax.jvp(jax.grad(loss), ...)``, ``vmap`` over
parameter sets). ``pure(model)`` splits an NNX module into its graph, its
trainable ``nnx.Param`` state and everything else (batch statistics, RNG
counters), and returns a callable that merges them back on every call (the
pattern of flax's ``examples/nnx_toy_examples/01_functional_api.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jax
from flax import nnx


@dataclass(frozen=True)
class PureModel:
    """``model(params, x)`` for a fixed graph and fixed non-parameter state."""

    graphdef: Any
    rest: Any

    def __call__(self, params: Any, x: jax.Array) -> jax.Array:
        return nnx.merge(self.graphdef, params, self.rest, copy=True)(x)


def pure(model: nnx.Module) -> tuple[PureModel, Any]:
    """Split ``model`` into ``(PureModel, params)`` with params an ``nnx.State``."""
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)  # type: ignore[misc]
    return PureModel(graphdef, rest), params


def gaussian_ensemble(template: Any, key: jax.Array, count: int, scale: float,
                      fan_in: bool = False) -> Any:
    """``count`` independent draws of ``template``'s params, each leaf N(0, std²).

    std = ``scale``, or ``scale / sqrt(fan_in)`` with ``fan_in=True`` (the leaf's
    first axis: a Flax kernel's input size). The result has a leading member axis,
    ready for ``vmap`` (e.g. ``shared.training.train_ensemble``).
    """
    import numpy as np

    leaves, treedef = jax.tree_util.tree_flatten(template)
    keys = jax.random.split(key, len(leaves))
    draws = []
    for k, leaf in zip(keys, leaves, strict=True):
        std = scale / np.sqrt(leaf.shape[0]) if fan_in else scale
        draws.append(std * jax.random.normal(k, (count, *leaf.shape), leaf.dtype))
    return jax.tree_util.tree_unflatten(treedef, draws)
