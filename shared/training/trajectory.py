"""Trajectory checkpoints: the flattened parameter vector every k epochs.

Li et al. (2018) §7 project the optimisation path onto the top PCA directions of
[θ_i − θ_final] over saved epochs. Each snapshot is a ``ravel_pytree`` vector
(``(P,)``, or ``(members, P)`` for an ensemble) written atomically to
``<directory>/epoch_<e>.npy``; a resumed run keeps the snapshots already written.
Snapshot 0 is the initial point.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import jax
import numpy as np
from jax.flatten_util import ravel_pytree

from shared.io import write_with

_NAME = re.compile(r"^epoch_(\d+)\.npy$")


def flatten_params(params: Any, ensemble: bool = False) -> np.ndarray:
    """``ravel_pytree`` of ``params`` (per member when ``ensemble``)."""
    if ensemble:
        return np.asarray(jax.vmap(lambda p: ravel_pytree(p)[0])(params))
    return np.asarray(ravel_pytree(params)[0])


class Trajectory:
    """Collects snapshots in memory and, with a ``directory``, on disk."""

    def __init__(self, every: int, directory: str | os.PathLike[str] | None = None) -> None:
        if every < 1:
            raise ValueError(f"trajectory interval must be >= 1 epoch, got {every}")
        self.every = int(every)
        self.directory = Path(directory) if directory is not None else None
        self.snapshots: dict[int, np.ndarray] = {}

    def due(self, epoch: int, last_epoch: int) -> bool:
        return epoch % self.every == 0 or epoch == last_epoch

    def record(self, epoch: int, vector: np.ndarray) -> None:
        self.snapshots[int(epoch)] = vector
        if self.directory is not None:
            write_with(self.directory / f"epoch_{int(epoch):06d}.npy", lambda p: np.save(p, vector))

    def load_existing(self, up_to_epoch: int) -> None:
        """Reload snapshots written by an earlier (interrupted) run, up to ``up_to_epoch``."""
        if self.directory is None or not self.directory.is_dir():
            return
        for path in self.directory.iterdir():
            m = _NAME.match(path.name)
            if m and int(m.group(1)) <= up_to_epoch:
                self.snapshots[int(m.group(1))] = np.load(path)

    def as_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """``(epochs, vectors)`` sorted by epoch; vectors stack along axis 0."""
        epochs = np.array(sorted(self.snapshots), dtype=np.int64)
        if not len(epochs):
            return epochs, np.zeros((0,))
        return epochs, np.stack([self.snapshots[int(e)] for e in epochs])
