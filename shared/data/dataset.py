"""The value every loader returns: arrays on the device plus where they came from."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import jax


@dataclass(frozen=True, eq=False)
class Dataset:
    """One split of one data set, on the JAX device.

    Attributes:
      x: inputs, float (``(N, H, W, C)`` images, ``(N, D)`` vectors or whatever
        the preprocessing made of them).
      y: int32 class labels ``(N,)``, or float targets ``(N, d_y)`` for regression.
      num_classes: number of classes; ``None`` for regression.
      name: registry name (``"cifar10_jpeg"``).
      title: the label for tables and figures (``"CIFAR-10 (JPEG q75 copy)"``).
      split: ``"train"`` or ``"test"``.
      source: ``"tfds"``, ``"embedded"`` or ``"synthetic"``.
      provenance: JSON-ready record of everything that shaped the arrays
        (source files and checksums or generator and keys, versions,
        preprocessing with fitted statistics, subset indices).
    """

    x: jax.Array
    y: jax.Array
    num_classes: int | None
    name: str
    title: str
    split: str
    source: str
    provenance: Mapping[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.x.shape[0])
