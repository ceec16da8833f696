"""CIFAR data augmentation on the device, driven by a key per batch.

The standard scheme of He et al. (2016) §4.2 and Li et al.'s ``cifar10/dataloader.py``
(torchvision ``RandomCrop(32, padding=4)`` + ``RandomHorizontalFlip()``): pad each
image with 4 zero pixels on every side, take a random 32×32 crop, and flip it
left–right with probability ½. Each image gets its own offsets and flip, drawn
from the batch's key, so the same key always gives the same batch.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def random_crop_flip(key: jax.Array, images: jax.Array, pad: int = 4) -> jax.Array:
    """Random crop with ``pad``-pixel zero padding and random horizontal flip (NHWC)."""
    n, h, w, _ = images.shape
    k_off, k_flip = jax.random.split(key)
    offsets = jax.random.randint(k_off, (n, 2), 0, 2 * pad + 1)
    flips = jax.random.bernoulli(k_flip, 0.5, (n,))
    padded = jnp.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)))

    def one(img: jax.Array, off: jax.Array, flip: jax.Array) -> jax.Array:
        crop = jax.lax.dynamic_slice(img, (off[0], off[1], 0), (h, w, img.shape[-1]))
        return jnp.where(flip, crop[:, ::-1, :], crop)

    return jax.vmap(one)(padded, offsets, flips)
