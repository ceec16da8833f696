"""CIFAR ResNets with and without shortcuts, and Wide-ResNet-56-k (Flax NNX).

He, Zhang, Ren, Sun (CVPR 2016) §4.2: a 3×3 conv with 16 filters, then three
stages of n basic blocks on 32×32, 16×16 and 8×8 maps with 16, 32 and 64
filters (6n + 2 weighted layers: ResNet-20/56/110 for n = 3/9/18), global
average pooling and a linear classifier. A basic block is
conv3×3 → BN → ReLU → conv3×3 → BN, (+ shortcut), → ReLU.

As in Li et al. (NeurIPS 2018), whose official code this follows
(``tomgoldstein/loss-landscape`` ``cifar10/models/resnet.py``: ``ResNet_cifar``,
``WResNet_cifar``, ``BasicBlock``, ``BasicBlock_noshortcut``):

- **Shortcut option B by default**: identity where shapes agree, a 1×1 strided
  conv + BN projection where the stage changes (the official code's
  ``BasicBlock``). He et al. used **option A** on CIFAR (identity with stride-2
  subsampling and zero-padded channels, no extra parameters); ``shortcut="A"``
  builds that instead.
- **``noshort``** (``shortcut="none"``) drops the shortcut entirely, projection
  included (``BasicBlock_noshortcut``): the block is just its residual branch
  followed by ReLU.
- **Wide-ResNet-56-k**: ``width=k`` multiplies the stem and stage widths
  (16k, 32k, 64k), as in ``WResNet_cifar``; this is Li et al.'s construction,
  not Zagoruyko & Komodakis' pre-activation WRN.
- Convs have no bias (BN follows); 3×3 convs pad 1 on each side like PyTorch.

Inputs are NHWC; outputs are logits. Mode conventions are those of
``shared.models.mlp``.
"""

from __future__ import annotations

from typing import Any, Literal

import jax
import jax.numpy as jnp
from flax import nnx

from shared.models.mlp import Rngish, make_batch_norm

Shortcut = Literal["A", "B", "none"]
PAD1 = ((1, 1), (1, 1))


def _conv(c_in: int, c_out: int, k: int, stride: int, rngs: nnx.Rngs, dtype: Any, bias: bool = False) -> nnx.Conv:
    return nnx.Conv(
        c_in,
        c_out,
        (k, k),
        strides=(stride, stride),
        padding=PAD1 if k == 3 else "VALID",
        use_bias=bias,
        param_dtype=dtype,
        rngs=rngs,
    )


def _norm(features: int, rngs: nnx.Rngs, dtype: Any, batch_norm: bool) -> nnx.BatchNorm | None:
    """A BatchNorm layer, or None where the net has none (``batch_norm=False``)."""
    return make_batch_norm(features, rngs, dtype) if batch_norm else None


def _apply_norm(layer: nnx.BatchNorm | None, x: jax.Array) -> jax.Array:
    return x if layer is None else layer(x)


class BasicBlock(nnx.Module):
    """relu(residual(x) + shortcut(x)); with ``shortcut="none"``, relu(residual(x))."""

    def __init__(
        self,
        c_in: int,
        c_out: int,
        stride: int,
        *,
        shortcut: Shortcut,
        rngs: nnx.Rngs,
        param_dtype: Any = jnp.float32,
        batch_norm: bool = True,
    ) -> None:
        bias = not batch_norm  # without BatchNorm the convolutions carry the biases
        self.conv1 = _conv(c_in, c_out, 3, stride, rngs, param_dtype, bias)
        self.bn1 = _norm(c_out, rngs, param_dtype, batch_norm)
        self.conv2 = _conv(c_out, c_out, 3, 1, rngs, param_dtype, bias)
        self.bn2 = _norm(c_out, rngs, param_dtype, batch_norm)
        self.shortcut = shortcut
        self.stride = stride
        self.pad_channels = c_out - c_in
        needs_projection = shortcut == "B" and (stride != 1 or c_in != c_out)
        self.proj_conv = _conv(c_in, c_out, 1, stride, rngs, param_dtype, bias) if needs_projection else None
        self.proj_bn = _norm(c_out, rngs, param_dtype, batch_norm) if needs_projection else None

    def residual(self, x: jax.Array) -> jax.Array:
        """The residual branch F(x) = BN(conv(ReLU(BN(conv(x))))) (no BN: conv(ReLU(conv(x))))."""
        return _apply_norm(self.bn2, self.conv2(jax.nn.relu(_apply_norm(self.bn1, self.conv1(x)))))

    def skip(self, x: jax.Array) -> jax.Array | None:
        """The shortcut path, or ``None`` for a ``noshort`` block."""
        if self.shortcut == "none":
            return None
        if self.proj_conv is not None:
            return _apply_norm(self.proj_bn, self.proj_conv(x))
        if self.stride != 1 or self.pad_channels:  # option A
            x = x[:, :: self.stride, :: self.stride, :]
            lo = self.pad_channels // 2
            x = jnp.pad(x, ((0, 0), (0, 0), (0, 0), (lo, self.pad_channels - lo)))
        return x

    def __call__(self, x: jax.Array) -> jax.Array:
        out = self.residual(x)
        s = self.skip(x)
        return jax.nn.relu(out if s is None else out + s)


class CifarResNet(nnx.Module):
    """ResNet-(6n+2) for CIFAR: stem conv3×3-16k, BN, ReLU → 3 stages of n blocks
    (16k, 32k, 64k channels; strides 1, 2, 2) → global average pool → linear.

    ``base_width`` (default 16, the paper's) replaces the 16 of the stem and first stage
    (stages: b·k, 2b·k, 4b·k): reduced-width CPU stand-ins use e.g. ``base_width=4``.
    ``batch_norm=False`` drops every BatchNorm layer and gives the convolutions biases
    (Ghorbani et al. 2019's ResNet-32 "without BN")."""

    def __init__(
        self,
        depth: int = 20,
        *,
        rngs: nnx.Rngs,
        num_classes: int = 10,
        width: int = 1,
        shortcut: Shortcut = "B",
        in_channels: int = 3,
        param_dtype: Any = jnp.float32,
        base_width: int = 16,
        batch_norm: bool = True,
    ) -> None:
        if (depth - 2) % 6:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2, got {depth}")
        if shortcut not in ("A", "B", "none"):
            raise ValueError(f"shortcut must be 'A', 'B' or 'none', got {shortcut!r}")
        n = (depth - 2) // 6
        self.depth, self.width, self.shortcut = depth, width, shortcut
        if base_width < 1:
            raise ValueError(f"base_width must be >= 1, got {base_width}")
        widths = (base_width * width, 2 * base_width * width, 4 * base_width * width)
        self.stem = _conv(in_channels, widths[0], 3, 1, rngs, param_dtype, not batch_norm)
        self.stem_bn = _norm(widths[0], rngs, param_dtype, batch_norm)
        blocks: list[BasicBlock] = []
        c_in = widths[0]
        for stage, c_out in enumerate(widths):
            for i in range(n):
                stride = 2 if stage > 0 and i == 0 else 1
                blocks.append(BasicBlock(c_in, c_out, stride, shortcut=shortcut, rngs=rngs, param_dtype=param_dtype,
                                         batch_norm=batch_norm))
                c_in = c_out
        self.blocks = nnx.List(blocks)
        self.linear = nnx.Linear(widths[-1], num_classes, param_dtype=param_dtype, rngs=rngs)

    def __call__(self, x: jax.Array, *, rngs: Rngish = None) -> jax.Array:
        del rngs  # no dropout
        x = jax.nn.relu(_apply_norm(self.stem_bn, self.stem(x)))
        for block in self.blocks:
            x = block(x)
        return self.linear(jnp.mean(x, axis=(1, 2)))


def resnet(
    depth: int,
    *,
    rngs: nnx.Rngs,
    noshort: bool = False,
    shortcut: Shortcut = "B",
    width: int = 1,
    base_width: int = 16,
    **kw: Any,
) -> CifarResNet:
    """ResNet-``depth`` (``width``× wide); ``noshort=True`` removes every shortcut."""
    return CifarResNet(depth, rngs=rngs, shortcut="none" if noshort else shortcut, width=width,
                       base_width=base_width, **kw)
