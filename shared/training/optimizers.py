"""Optimizers by name, with weight decay, as optax gradient transformations.

- ``sgd``: θ ← θ − η g.
- ``momentum``: PyTorch's heavy ball, v ← μv + g, θ ← θ − η v (``optax.sgd``
  with ``momentum``; η multiplies the velocity, as in ``torch.optim.SGD``).
- ``nesterov``: the same with Nesterov's look-ahead (Li et al.: SGD Nesterov,
  μ = 0.9).
- ``adam``: Kingma & Ba (Keskar et al. use Adam with Keras defaults:
  η = 1e-3, β = (0.9, 0.999), ε = 1e-8).
- ``adamw``: Adam with decoupled weight decay (Loshchilov & Hutter 2019).

Weight decay (all but ``adamw``) is the coupled L2 form of PyTorch's
``weight_decay``: ``wd · θ`` is added to the gradient before the optimizer, and
it applies to every parameter (BatchNorm and biases included), as in Li et al.'s
code. ``learning_rate`` may be a float, a traced array (an ensemble
hyperparameter) or an optax schedule.

``StepDecayOptimizer`` is ``make_optimizer`` with a ``step_decay`` schedule as a
factory of its numbers (``fit(..., optimizer=opt, hyper=opt.hyper(...))``): the
learning rate, decay steps, factor and weight decay are arrays passed to the
compiled step, so runs that differ only in them compile it once (``fit`` keeps
compiled epochs by value: ``shared.training.compile_cache``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import jax.numpy as jnp
import optax

from shared.training.schedules import traced_step_decay

NAMES = ("sgd", "momentum", "nesterov", "adam", "adamw")


def make_optimizer(
    name: str,
    learning_rate: Any,
    *,
    momentum: float = 0.9,
    weight_decay: Any = 0.0,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
) -> optax.GradientTransformation:
    """The optimizer ``name`` (one of ``NAMES``)."""
    if name == "sgd":
        base = optax.sgd(learning_rate)
    elif name in ("momentum", "nesterov"):
        base = optax.sgd(learning_rate, momentum=momentum, nesterov=name == "nesterov")
    elif name == "adam":
        base = optax.adam(learning_rate, b1=b1, b2=b2, eps=eps)
    elif name == "adamw":
        return optax.adamw(learning_rate, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay)
    else:
        raise ValueError(f"unknown optimizer {name!r}; known: {NAMES}")
    if isinstance(weight_decay, int | float) and weight_decay == 0:
        return base
    return optax.chain(optax.add_decayed_weights(weight_decay), base)


@dataclass(frozen=True)
class StepDecayOptimizer:
    """``make_optimizer(name, step_decay(lr, ...), momentum=..., weight_decay=wd)`` as a factory
    ``hyper -> GradientTransformation``; equal values (``name``, ``momentum``) share compiled steps."""

    name: str
    momentum: float = 0.9

    def hyper(self, lr: float, steps_per_epoch: int, decay_epochs: Sequence[int], *, factor: float = 0.1,
              weight_decay: float = 0.0) -> dict[str, Any]:
        """The numbers, as arrays (Python scalars' weak types kept, so dtypes promote as before)."""
        steps = sorted({int(e) * int(steps_per_epoch) for e in decay_epochs})
        return {"lr": jnp.asarray(float(lr)), "boundaries": jnp.asarray(steps, jnp.int32).reshape(-1),
                "factor": jnp.asarray(float(factor)), "weight_decay": jnp.asarray(float(weight_decay))}

    def __call__(self, hyper: Any) -> optax.GradientTransformation:
        schedule = traced_step_decay(hyper["lr"], hyper["boundaries"], hyper["factor"])
        return make_optimizer(self.name, schedule, momentum=self.momentum, weight_decay=hyper["weight_decay"])
