"""Orbax checkpoints of a training run: its state plus a JSON record, every N epochs.

A checkpoint holds the run's ``TrainState`` (params, BatchNorm statistics,
optimizer state, step counter, failed flags; stacked for an ensemble) and a
JSON record (the epoch reached and the metrics rows so far). Random keys are
not stored: the engine derives every key from the run's key and the
epoch/step counters, so state + epoch is all a resumed run needs to continue
exactly where it stopped. Orbax writes each checkpoint into a temporary
directory and renames it when complete, so a run killed while saving leaves
the previous checkpoint intact.

The state is stored as its list of leaves and restored into the structure of
a template (the freshly initialised state of the resuming run), which keeps
the format independent of how NNX/optax register their pytree nodes.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp


class Checkpointer:
    """Save/restore a run's state under ``directory`` every ``every`` epochs."""

    def __init__(self, directory: str | os.PathLike[str], every: int, max_to_keep: int = 2) -> None:
        if every < 1:
            raise ValueError(f"checkpoint interval must be >= 1 epoch, got {every}")
        self.directory = Path(directory).resolve()
        self.every = int(every)
        self._manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(
                max_to_keep=max_to_keep, enable_async_checkpointing=False, create=True
            ),
            item_names=("state", "record"),
        )

    def due(self, epoch: int, last_epoch: int) -> bool:
        """Whether epoch ``epoch`` (1-based, completed) should be saved."""
        return epoch % self.every == 0 or epoch == last_epoch

    def latest_epoch(self) -> int | None:
        return self._manager.latest_step()

    def save(self, epoch: int, state: Any, record: dict[str, Any]) -> None:
        leaves = [np.asarray(leaf) for leaf in jax.tree_util.tree_leaves(state)]
        self._manager.save(
            epoch,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(leaves),
                record=ocp.args.JsonSave(record),
            ),
        )
        self._manager.wait_until_finished()

    def restore(self, template: Any) -> tuple[int, Any, dict[str, Any]] | None:
        """``(epoch, state, record)`` from the latest checkpoint, or ``None`` if there is none."""
        epoch = self.latest_epoch()
        if epoch is None:
            return None
        leaves, treedef = jax.tree_util.tree_flatten(template)
        abstract = [jax.ShapeDtypeStruct(np.shape(x), np.asarray(x).dtype) for x in leaves]
        restored = self._manager.restore(
            epoch,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract),
                record=ocp.args.JsonRestore(),
            ),
        )
        state = jax.tree_util.tree_unflatten(treedef, list(restored["state"]))
        return epoch, state, dict(restored["record"])

    def close(self) -> None:
        self._manager.close()
