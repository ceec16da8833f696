"""The paper scale's CIFAR-10 convnet (with or without BatchNorm), and model lookup.

The MLPs are ``shared.models`` ``mlp`` (``widths``, ``batch_norm``). No shared convnet comes
without BatchNorm, which Dinh et al.'s α-scale transformation needs (a BatchNorm between two
layers makes the pair scale-invariant instead): ``convnet`` is a small plain convnet,
conv → [BN] → ReLU → max-pool 2, twice, then dense → [BN] → ReLU → dense. Its layers are
``layers[0..3]`` and its BatchNorms ``norms[0..2]``, the paths of ``shared.models.mlp.MLP``,
so the module's reparametrisations address both kinds of net the same way: T_α acts on
``("layers", 0)`` and ``("layers", 1)`` (conv → ReLU → max-pool → conv: positively
homogeneous), the pre-BatchNorm scaling on ``("layers", 0)`` and ``("norms", 0)``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from shared.models import registry
from shared.models.mlp import make_batch_norm


class ConvNet(nnx.Module):
    """conv3×3 c₁ → [BN] → ReLU → maxpool 2 → conv3×3 c₂ → [BN] → ReLU → maxpool 2 → flatten →
    dense ``hidden`` → [BN] → ReLU → dense ``num_classes``. Inputs NHWC (or ``(batch, side²)``
    for one channel)."""

    def __init__(self, *, rngs: nnx.Rngs, side: int = 32, in_channels: int = 3, channels: Sequence[int] = (32, 64),
                 hidden: int = 128, num_classes: int = 10, batch_norm: bool = False,
                 param_dtype: Any = jnp.float32) -> None:
        c1, c2 = (int(c) for c in channels)
        self.side, self.in_channels = int(side), int(in_channels)
        flat = ((side // 2) // 2) ** 2 * c2
        self.layers = nnx.List([
            nnx.Conv(in_channels, c1, (3, 3), padding="SAME", param_dtype=param_dtype, rngs=rngs),
            nnx.Conv(c1, c2, (3, 3), padding="SAME", param_dtype=param_dtype, rngs=rngs),
            nnx.Linear(flat, hidden, param_dtype=param_dtype, rngs=rngs),
            nnx.Linear(hidden, num_classes, param_dtype=param_dtype, rngs=rngs),
        ])
        self.norms = nnx.List([make_batch_norm(n, rngs, param_dtype) for n in (c1, c2, hidden)] if batch_norm
                              else [])

    def _norm(self, i: int, x: jax.Array) -> jax.Array:
        return self.norms[i](x) if len(self.norms) else x

    def __call__(self, x: jax.Array) -> jax.Array:
        if x.ndim == 2:
            x = x.reshape((x.shape[0], self.side, self.side, self.in_channels))
        for i in (0, 1):
            x = nnx.max_pool(jax.nn.relu(self._norm(i, self.layers[i](x))), (2, 2), strides=(2, 2))
        x = jax.nn.relu(self._norm(2, self.layers[2](x.reshape((x.shape[0], -1)))))
        return self.layers[3](x)


LOCAL: dict[str, Callable[..., nnx.Module]] = {"convnet": ConvNet}


def builder(name: str, batch_norm: bool, **kwargs: Any) -> Callable[[nnx.Rngs], nnx.Module]:
    """``rngs -> model``: ``convnet`` (local) or ``mlp`` (``shared.models``), with or without BatchNorm."""
    if name in LOCAL:
        make = LOCAL[name]
        return lambda rngs: make(rngs=rngs, batch_norm=batch_norm, **kwargs)
    return registry.builder(name, batch_norm=batch_norm, **kwargs)


def num_layers(name: str, kwargs: dict[str, Any]) -> int:
    """How many weight layers the net has (``layers[0..n-1]``)."""
    return 4 if name == "convnet" else len(kwargs["widths"]) - 1
