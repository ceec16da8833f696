"""One training epoch as a single jit-compiled ``lax.scan`` over minibatches.

The whole training set sits on the device. Each epoch draws a permutation from
``fold_in(shuffle_key, epoch)`` and takes ``n // batch_size`` batches of indices
from it (the remainder, a different set each epoch, is left out of that epoch,
as with ``drop_last=True``); the step's augmentation and dropout keys are
``fold_in(step_key, step)``. Everything random is thus a function of the run's
key and the epoch/step counters, which is what makes a resumed run identical to
an uninterrupted one. Nothing returns to the host inside an epoch.

A step whose loss or new parameters are not finite is not applied: the state
keeps its last finite values, ``failed`` is set, and later steps do nothing
(``shared.training.divergence``). ``step`` counts only applied steps, so for a
failed run it is the step at which it failed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple, TypeAlias

import jax
import jax.numpy as jnp
import optax

from shared.seeds import name_to_int
from shared.training.divergence import all_finite, select
from shared.training.losses import Loss, correct, cross_entropy
from shared.training.network import Network

OptimizerLike: TypeAlias = optax.GradientTransformation | Callable[[Any], optax.GradientTransformation]
Augment: TypeAlias = Callable[[jax.Array, jax.Array], jax.Array]


class TrainState(NamedTuple):
    """Everything a training run carries from step to step (a pytree of arrays)."""

    params: Any
    model_state: Any  # BatchNorm running statistics (empty for BN-free models)
    opt_state: Any
    step: jax.Array  # int32: optimizer steps applied so far
    failed: jax.Array  # bool: a non-finite loss or parameter was met


class EpochStats(NamedTuple):
    """Means over the epoch's applied steps, in train mode (augmented, dropout on)."""

    loss: jax.Array
    accuracy: jax.Array
    steps: jax.Array


def resolve_optimizer(optimizer: OptimizerLike, hyper: Any) -> optax.GradientTransformation:
    """``optimizer`` itself, or ``optimizer(hyper)`` for a hyperparameter factory."""
    if isinstance(optimizer, optax.GradientTransformation):
        return optimizer
    return optimizer(hyper)


def init_train_state(params: Any, model_state: Any, optimizer: OptimizerLike, hyper: Any = None) -> TrainState:
    tx = resolve_optimizer(optimizer, hyper)
    return TrainState(params, model_state, tx.init(params), jnp.zeros((), jnp.int32), jnp.zeros((), bool))


def run_keys(key: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(shuffle_key, step_key)`` of a run, folded from its key by name."""
    return (
        jax.random.fold_in(key, name_to_int("shuffle")),
        jax.random.fold_in(key, name_to_int("step")),
    )


def epoch_batches(shuffle_key: jax.Array, epoch: jax.Array, n: int, batch_size: int) -> jax.Array:
    """``(n // batch_size, batch_size)`` example indices of one epoch."""
    perm = jax.random.permutation(jax.random.fold_in(shuffle_key, epoch), n)
    nb = n // batch_size
    return perm[: nb * batch_size].reshape((nb, batch_size))


StepFn: TypeAlias = Callable[
    [TrainState, Any, jax.Array, jax.Array, jax.Array], tuple[TrainState, tuple[Any, Any, Any]]
]
EpochFn: TypeAlias = Callable[
    [TrainState, Any, jax.Array, jax.Array, jax.Array, jax.Array], tuple[TrainState, EpochStats]
]


def make_train_step(
    net: Network,
    optimizer: OptimizerLike,
    *,
    loss: Loss = cross_entropy,
    augment: Augment | None = None,
) -> StepFn:
    """``step(ts, hyper, xb, yb, step_key) -> (ts, (loss, accuracy, applied))`` on one batch.

    The step's keys are ``fold_in(step_key, ts.step)`` (then 0: augmentation,
    1: dropout). A non-finite loss or update leaves ``ts`` unchanged but for
    ``failed``; ``applied`` is 1.0 for a step taken, else 0.0 (loss/accuracy 0).
    """

    def step(
        ts: TrainState, hyper: Any, xb: jax.Array, yb: jax.Array, step_key: jax.Array
    ) -> tuple[TrainState, tuple[Any, Any, Any]]:
        tx = resolve_optimizer(optimizer, hyper)
        k = jax.random.fold_in(step_key, ts.step)
        if augment is not None:
            xb = augment(jax.random.fold_in(k, 0), xb)

        def objective(p: Any) -> tuple[jax.Array, tuple[Any, jax.Array]]:
            out, new_state = net.apply(p, ts.model_state, xb, mode="train", key=jax.random.fold_in(k, 1))
            return jnp.mean(loss(out, yb)), (new_state, jnp.mean(correct(out, yb)))

        (value, (new_state, acc)), grads = jax.value_and_grad(objective, has_aux=True)(ts.params)
        updates, new_opt = tx.update(grads, ts.opt_state, ts.params)
        new_params = optax.apply_updates(ts.params, updates)
        ok = jnp.isfinite(value) & all_finite(new_params)
        apply = ok & ~ts.failed
        new_ts = TrainState(
            select(apply, new_params, ts.params),
            select(apply, new_state, ts.model_state),
            select(apply, new_opt, ts.opt_state),
            ts.step + apply.astype(jnp.int32),
            ts.failed | ~ok,
        )
        w = apply.astype(value.dtype)
        return new_ts, (jnp.where(apply, value, 0.0), jnp.where(apply, acc, 0.0), w)

    return step


def make_epoch_fn(
    net: Network,
    optimizer: OptimizerLike,
    *,
    batch_size: int,
    loss: Loss = cross_entropy,
    augment: Augment | None = None,
) -> EpochFn:
    """``epoch(ts, hyper, key, x, y, epoch) -> (ts, EpochStats)`` for one run (not jitted).

    ``hyper`` is passed to ``optimizer`` when it is a factory (else ignored);
    ``key`` is the run's key; ``x, y`` the whole training set on the device.
    """
    step = make_train_step(net, optimizer, loss=loss, augment=augment)

    def epoch_fn(
        ts: TrainState, hyper: Any, key: jax.Array, x: jax.Array, y: jax.Array, epoch: jax.Array
    ) -> tuple[TrainState, EpochStats]:
        n = x.shape[0]
        if batch_size > n:
            raise ValueError(f"batch_size {batch_size} exceeds the {n} training examples")
        shuffle_key, step_key = run_keys(key)
        batches = epoch_batches(shuffle_key, epoch, n, batch_size)

        def body(ts: TrainState, idx: jax.Array) -> tuple[TrainState, tuple[Any, Any, Any]]:
            return step(ts, hyper, x[idx], y[idx], step_key)

        ts, (losses, accs, applied) = jax.lax.scan(body, ts, batches)
        return ts, epoch_stats(losses, accs, applied)

    return epoch_fn


def epoch_stats(losses: jax.Array, accs: jax.Array, applied: jax.Array) -> EpochStats:
    """Means over the applied steps of per-step outputs stacked along axis 0."""
    steps = jnp.sum(applied, axis=0)
    denom = jnp.maximum(steps, 1)
    mean_loss = jnp.where(steps > 0, jnp.sum(losses, axis=0) / denom, jnp.nan)
    mean_acc = jnp.where(steps > 0, jnp.sum(accs, axis=0) / denom, jnp.nan)
    return EpochStats(mean_loss, mean_acc, steps.astype(jnp.int32))
