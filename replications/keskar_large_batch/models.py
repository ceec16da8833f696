"""The quick scale's small convnet (``conv1d``), and model lookup for the module's configs.

The paper's networks (F1, C1–C4) are in ``shared.models`` (``keskar_f1``, ``keskar_c1`` …
``keskar_c4``). The quick scale runs on MNIST-1D (40-sample 1D signals), for which no shared
model exists: ``conv1d`` is a small shallow convnet in the spirit of C1 (two conv + max-pool
blocks, then a linear classifier), without BatchNorm or dropout so that a loss, a Hessian and
the parametric plot have no train/eval ambiguity at that scale.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
from flax import nnx

from shared.models import registry


class Conv1DNet(nnx.Module):
    """conv k5 ``channels`` → ReLU → maxpool 2 → conv k5 ``channels`` → ReLU → maxpool 2 →
    flatten → linear ``num_classes``. Inputs ``(batch, length)`` or ``(batch, length, 1)``."""

    def __init__(self, *, rngs: nnx.Rngs, length: int = 40, channels: int = 16, num_classes: int = 10) -> None:
        self.conv1 = nnx.Conv(1, channels, (5,), padding="SAME", rngs=rngs)
        self.conv2 = nnx.Conv(channels, channels, (5,), padding="SAME", rngs=rngs)
        side = length // 4
        self.out = nnx.Linear(side * channels, num_classes, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        if x.ndim == 2:
            x = x[..., None]
        x = nnx.max_pool(jax.nn.relu(self.conv1(x)), (2,), strides=(2,))
        x = nnx.max_pool(jax.nn.relu(self.conv2(x)), (2,), strides=(2,))
        return self.out(x.reshape((x.shape[0], -1)))


LOCAL: dict[str, Callable[..., nnx.Module]] = {"conv1d": Conv1DNet}


def builder(name: str, **kwargs: Any) -> Callable[[nnx.Rngs], nnx.Module]:
    """``rngs -> model`` for a local name (``conv1d``) or any ``shared.models.registry`` name."""
    if name in LOCAL:
        make = LOCAL[name]
        return lambda rngs: make(rngs=rngs, **kwargs)
    return registry.builder(name, **kwargs)
