"""Learning-rate schedules as optax schedules (functions of the step count).

- ``step_decay``: Li et al.'s ``cifar10/main.py``: lr × 0.1 at epochs 150, 225
  and 275 of 300 (boundaries are given in epochs and converted to steps).
- ``traced_step_decay``: the same with its numbers as arrays (``StepDecayOptimizer``):
  runs that differ only in them share one compiled training step.
- ``cosine``: cosine decay from ``base_lr`` to ``alpha · base_lr`` over the run
  (Loshchilov & Hutter 2017, without restarts).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax.numpy as jnp
import optax

LI_BOUNDARIES = (150, 225, 275)


def constant(base_lr: float) -> optax.Schedule:
    return optax.constant_schedule(base_lr)


def step_decay(
    base_lr: float,
    steps_per_epoch: int,
    boundaries_epochs: Sequence[int] = LI_BOUNDARIES,
    factor: float = 0.1,
) -> optax.Schedule:
    """``base_lr`` multiplied by ``factor`` at each epoch boundary (from that epoch on)."""
    return optax.piecewise_constant_schedule(
        base_lr, {int(e) * int(steps_per_epoch): factor for e in boundaries_epochs}
    )


def traced_step_decay(base_lr: Any, boundaries: Any, factor: Any) -> optax.Schedule:
    """``step_decay`` with the learning rate, the boundaries (in steps, sorted, a 1D array) and the
    factor as arrays. The arithmetic is ``optax.piecewise_constant_schedule``'s, op for op, so the
    values are the same bit for bit."""

    def schedule(count: Any) -> Any:
        v = base_lr
        for i in range(boundaries.shape[0]):
            indicator = jnp.maximum(0.0, jnp.sign(boundaries[i] - count))
            v = v * indicator + (1 - indicator) * factor * v
        return v

    return schedule


def cosine(base_lr: float, total_steps: int, alpha: float = 0.0) -> optax.Schedule:
    return optax.cosine_decay_schedule(base_lr, int(total_steps), alpha=alpha)
