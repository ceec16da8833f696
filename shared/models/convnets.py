"""Plain (non-residual) convolutional nets: Keskar et al.'s C1–C4 and Li et al.'s VGG-9.

Inputs are NHWC images (CIFAR: 32×32×3); outputs are logits. Mode conventions
(BatchNorm, Dropout, call-time dropout keys) are those of ``shared.models.mlp``.

- Keskar, Mudigere, Nocedal, Smelyanskiy, Tang (ICLR 2017), Table 1: C1/C3 are
  "shallow" (AlexNet-like) convnets on CIFAR-10/100 and C2/C4 "deep" (VGG-like).
  The layer lists follow the official code, ``keskarnitish/large-batch-training``
  ``network_zoo.py`` (``shallownet``, ``deepnet``; Keras 1.x). Deviations: Keras'
  ``BatchNormalization(mode=2)`` normalises with batch statistics even at test
  time, while ours uses running averages in eval mode (``CLAIMS.md``, Module 5
  pitfalls); the final softmax is folded into the loss (we return logits).
- Li, Xu, Taylor, Studer, Goldstein (NeurIPS 2018): VGG-9 from the official
  ``tomgoldstein/loss-landscape`` ``cifar10/models/vgg.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from shared.models.mlp import Rngish, dropout_rngs, make_batch_norm

PAD1 = ((1, 1), (1, 1))  # PyTorch's padding=1 for a 3×3 kernel (symmetric)


def _ceil_half(n: int) -> int:
    """Output side of a 'same' (or ceil-mode) pool with stride 2."""
    return (n + 1) // 2


class ConvBNReLU(nnx.Module):
    """Conv → BatchNorm → ReLU → [Dropout]."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel: int,
        *,
        rngs: nnx.Rngs,
        padding: Any = "SAME",
        dropout: float = 0.0,
        use_bias: bool = True,
        param_dtype: Any = jnp.float32,
    ) -> None:
        self.conv = nnx.Conv(
            in_ch,
            out_ch,
            (kernel, kernel),
            padding=padding,
            use_bias=use_bias,
            param_dtype=param_dtype,
            rngs=rngs,
        )
        self.bn = make_batch_norm(out_ch, rngs, param_dtype)
        self.dropout = nnx.Dropout(dropout) if dropout > 0 else None

    def __call__(self, x: jax.Array, *, rngs: nnx.Rngs | None = None) -> jax.Array:
        x = jax.nn.relu(self.bn(self.conv(x)))
        if self.dropout is not None:
            x = self.dropout(x, rngs=rngs)
        return x


class DenseBNReLU(nnx.Module):
    """Linear → BatchNorm → ReLU → [Dropout]."""

    def __init__(
        self,
        d_in: int,
        d_out: int,
        *,
        rngs: nnx.Rngs,
        dropout: float = 0.0,
        param_dtype: Any = jnp.float32,
    ) -> None:
        self.linear = nnx.Linear(d_in, d_out, param_dtype=param_dtype, rngs=rngs)
        self.bn = make_batch_norm(d_out, rngs, param_dtype)
        self.dropout = nnx.Dropout(dropout) if dropout > 0 else None

    def __call__(self, x: jax.Array, *, rngs: nnx.Rngs | None = None) -> jax.Array:
        x = jax.nn.relu(self.bn(self.linear(x)))
        if self.dropout is not None:
            x = self.dropout(x, rngs=rngs)
        return x


class KeskarShallow(nnx.Module):
    """Keskar et al. C1 (CIFAR-10) / C3 (CIFAR-100): ``network_zoo.shallownet``.

    conv5×5-64 'same', BN, ReLU, maxpool 3×3/2 'same' → the same again →
    flatten (8·8·64) → FC384, BN, ReLU, dropout 0.5 → FC192, BN, ReLU, dropout
    0.5 → linear to ``num_classes``.
    """

    def __init__(
        self,
        num_classes: int = 10,
        *,
        rngs: nnx.Rngs,
        in_channels: int = 3,
        image_size: int = 32,
        dropout: float = 0.5,
        param_dtype: Any = jnp.float32,
    ) -> None:
        self.conv1 = ConvBNReLU(in_channels, 64, 5, rngs=rngs, param_dtype=param_dtype)
        self.conv2 = ConvBNReLU(64, 64, 5, rngs=rngs, param_dtype=param_dtype)
        side = _ceil_half(_ceil_half(image_size))  # two 'same' pools of stride 2
        self.fc1 = DenseBNReLU(side * side * 64, 384, dropout=dropout, rngs=rngs, param_dtype=param_dtype)
        self.fc2 = DenseBNReLU(384, 192, dropout=dropout, rngs=rngs, param_dtype=param_dtype)
        self.out = nnx.Linear(192, num_classes, param_dtype=param_dtype, rngs=rngs)

    def __call__(self, x: jax.Array, *, rngs: Rngish = None) -> jax.Array:
        r = dropout_rngs(rngs)
        x = nnx.max_pool(self.conv1(x), (3, 3), strides=(2, 2), padding="SAME")
        x = nnx.max_pool(self.conv2(x), (3, 3), strides=(2, 2), padding="SAME")
        x = x.reshape((x.shape[0], -1))
        return self.out(self.fc2(self.fc1(x, rngs=r), rngs=r))


# Keskar's deepnet: (channels, dropout after the ReLU) per conv, "M" = maxpool 2×2/2.
KESKAR_DEEP_CFG: tuple[tuple[int, float] | str, ...] = (
    (64, 0.3), (64, 0.0), "M",
    (128, 0.4), (128, 0.0), "M",
    (256, 0.4), (256, 0.4), (256, 0.0), "M",
    (512, 0.4), (512, 0.4), (512, 0.0), "M",
    (512, 0.4), (512, 0.4), (512, 0.0), "M",
)  # fmt: skip


class KeskarDeep(nnx.Module):
    """Keskar et al. C2 (CIFAR-10) / C4 (CIFAR-100): ``network_zoo.deepnet``.

    VGG-16-style 3×3 'same' conv stacks 64-64 / 128-128 / 256×3 / 512×3 / 512×3,
    each conv with BN and ReLU, dropout 0.3 (first conv) or 0.4 after every conv
    that is not followed by a pool, maxpool 2×2/2 after each stack → flatten
    (1·1·512) → dropout 0.5 → FC512, BN, ReLU, dropout 0.5 → linear.
    """

    def __init__(
        self,
        num_classes: int = 10,
        *,
        rngs: nnx.Rngs,
        in_channels: int = 3,
        image_size: int = 32,
        cfg: Sequence[tuple[int, float] | str] = KESKAR_DEEP_CFG,
        param_dtype: Any = jnp.float32,
    ) -> None:
        convs: list[ConvBNReLU] = []
        pool_after: list[bool] = []
        ch, side = in_channels, image_size
        for item in cfg:
            if isinstance(item, str):
                pool_after[-1] = True
                side = _ceil_half(side)
            else:
                out_ch, p = item
                convs.append(ConvBNReLU(ch, out_ch, 3, dropout=p, rngs=rngs, param_dtype=param_dtype))
                pool_after.append(False)
                ch = out_ch
        self.convs = nnx.List(convs)
        self.pool_after = tuple(pool_after)
        self.drop_in = nnx.Dropout(0.5)
        self.fc = DenseBNReLU(side * side * ch, 512, dropout=0.5, rngs=rngs, param_dtype=param_dtype)
        self.out = nnx.Linear(512, num_classes, param_dtype=param_dtype, rngs=rngs)

    def __call__(self, x: jax.Array, *, rngs: Rngish = None) -> jax.Array:
        r = dropout_rngs(rngs)
        for conv, pool in zip(self.convs, self.pool_after, strict=True):
            x = conv(x, rngs=r)
            if pool:
                x = nnx.max_pool(x, (2, 2), strides=(2, 2), padding="SAME")
        x = self.drop_in(x.reshape((x.shape[0], -1)), rngs=r)
        return self.out(self.fc(x, rngs=r))


VGG9_CFG: tuple[int | str, ...] = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M")


class VGG(nnx.Module):
    """Li et al. (2018) VGG-9: ``tomgoldstein/loss-landscape`` ``cifar10/models/vgg.py``.

    conv3×3 (padding 1, with bias), BN, ReLU for 64-64-M-128-128-M-256-256-256-M
    (maxpool 2×2/2) → flatten (4·4·256) → FC 256, BN, ReLU → linear classifier.
    (The official code flattens NCHW, we flatten NHWC: the same function up to a
    permutation of the FC weights' rows.)
    """

    def __init__(
        self,
        num_classes: int = 10,
        *,
        rngs: nnx.Rngs,
        cfg: Sequence[int | str] = VGG9_CFG,
        in_channels: int = 3,
        image_size: int = 32,
        param_dtype: Any = jnp.float32,
    ) -> None:
        convs: list[ConvBNReLU] = []
        pool_after: list[bool] = []
        ch, side = in_channels, image_size
        for item in cfg:
            if isinstance(item, str):
                pool_after[-1] = True
                side = _ceil_half(side)  # ceil_mode=True
            else:
                convs.append(ConvBNReLU(ch, int(item), 3, padding=PAD1, rngs=rngs, param_dtype=param_dtype))
                pool_after.append(False)
                ch = int(item)
        self.convs = nnx.List(convs)
        self.pool_after = tuple(pool_after)
        self.fc = DenseBNReLU(side * side * ch, ch, rngs=rngs, param_dtype=param_dtype)
        self.classifier = nnx.Linear(ch, num_classes, param_dtype=param_dtype, rngs=rngs)

    def __call__(self, x: jax.Array, *, rngs: Rngish = None) -> jax.Array:
        for conv, pool in zip(self.convs, self.pool_after, strict=True):
            x = conv(x)
            if pool:
                x = nnx.max_pool(x, (2, 2), strides=(2, 2), padding="SAME")
        return self.classifier(self.fc(x.reshape((x.shape[0], -1))))


def keskar_c1(*, rngs: nnx.Rngs, **kw: Any) -> KeskarShallow:
    """C1: shallow convnet on CIFAR-10 (10 classes)."""
    return KeskarShallow(10, rngs=rngs, **kw)


def keskar_c2(*, rngs: nnx.Rngs, **kw: Any) -> KeskarDeep:
    """C2: deep convnet on CIFAR-10 (10 classes)."""
    return KeskarDeep(10, rngs=rngs, **kw)


def keskar_c3(*, rngs: nnx.Rngs, **kw: Any) -> KeskarShallow:
    """C3: shallow convnet on CIFAR-100 (100 classes)."""
    return KeskarShallow(100, rngs=rngs, **kw)


def keskar_c4(*, rngs: nnx.Rngs, **kw: Any) -> KeskarDeep:
    """C4: deep convnet on CIFAR-100 (100 classes)."""
    return KeskarDeep(100, rngs=rngs, **kw)


def vgg9(*, rngs: nnx.Rngs, num_classes: int = 10, **kw: Any) -> VGG:
    """Li et al.'s VGG-9 on CIFAR-10."""
    return VGG(num_classes, rngs=rngs, **kw)
