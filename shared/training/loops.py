"""How an epoch is driven: one jitted ``lax.scan`` (default) or jitted steps.

``"scan"``: the whole epoch is one compiled program (``step.make_epoch_fn``); the
host dispatches once per epoch. This is the fast path on GPUs and for MLPs.

``"steps"``: the epoch's batch indices are computed on the device, then the
host dispatches one compiled step per batch (each gathers its batch on the
device by index; nothing is copied to or from the host until the epoch's
numbers are read). This exists because of an XLA:CPU problem: convolutions
*inside a loop body* — in particular the weight-gradient convolution — run one
to two orders of magnitude slower than the same convolution outside a loop
(jax-ml/jax issue #12868; measured here: a 5×5×64×64 weight gradient, 0.03 s
outside vs 2 s inside a ``scan``). ``"auto"`` picks ``"steps"`` on the CPU when
the training step contains a convolution, else ``"scan"``.

Both give the same sequence of batches, keys and updates; results agree to
floating-point rounding (fusion may differ), and each mode is deterministic, so
a resumed run is bit-identical to an uninterrupted one in the same mode.

Built runners are kept by value (``compile_cache.RUNNERS``): a later run with an
equal network, optimizer, loss, augmentation and argument shapes reuses the
compiled program.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import jax
import jax.numpy as jnp

from shared.training.compile_cache import RUNNERS, abstract_signature
from shared.training.losses import Loss
from shared.training.network import Network
from shared.training.step import (
    Augment,
    EpochStats,
    OptimizerLike,
    TrainState,
    epoch_batches,
    epoch_stats,
    make_epoch_fn,
    make_train_step,
    run_keys,
)

LoopMode = Literal["auto", "scan", "steps"]
Runner = Callable[[TrainState, Any, jax.Array, jax.Array, jax.Array, jax.Array], Any]


def has_convolution(fn: Callable[..., Any], *args: Any) -> bool:
    """Whether the jaxpr of ``fn(*args)`` contains a convolution."""
    return "conv_general_dilated" in str(jax.make_jaxpr(fn)(*args))


def resolve_loop(
    loop: LoopMode, step: Callable[..., Any], ts: TrainState, hyper: Any, xb: Any, yb: Any
) -> Literal["scan", "steps"]:
    if loop in ("scan", "steps"):
        return loop
    if loop != "auto":
        raise ValueError(f"loop must be 'auto', 'scan' or 'steps', got {loop!r}")
    if jax.default_backend() != "cpu":
        return "scan"
    key = jax.random.key(0)
    return "steps" if has_convolution(lambda t: step(t, hyper, xb, yb, key), ts) else "scan"


def build_epoch_runner(
    net: Network,
    optimizer: OptimizerLike,
    *,
    batch_size: int,
    loss: Loss,
    augment: Augment | None,
    ensemble: bool,
    hyper_axis: int | None,
    loop: LoopMode,
    example: tuple[TrainState, Any, jax.Array, jax.Array, jax.Array],
) -> tuple[Runner, Literal["scan", "steps"]]:
    """A compiled ``run(ts, hyper, keys, x, y, epoch) -> (ts, EpochStats)``, and its mode.

    ``example`` = ``(ts, hyper, keys, x, y)`` fixes shapes for ahead-of-time
    compilation (stacked along a member axis when ``ensemble``). A runner built
    before from equal parts and shapes is reused (``compile_cache``).
    """
    key = (net, optimizer, batch_size, loss, augment, ensemble, hyper_axis, loop, abstract_signature(example))
    return RUNNERS.get(key, lambda: _build_epoch_runner(
        net, optimizer, batch_size=batch_size, loss=loss, augment=augment, ensemble=ensemble,
        hyper_axis=hyper_axis, loop=loop, example=example,
    ))  # fmt: skip


def _build_epoch_runner(
    net: Network,
    optimizer: OptimizerLike,
    *,
    batch_size: int,
    loss: Loss,
    augment: Augment | None,
    ensemble: bool,
    hyper_axis: int | None,
    loop: LoopMode,
    example: tuple[TrainState, Any, jax.Array, jax.Array, jax.Array],
) -> tuple[Runner, Literal["scan", "steps"]]:
    """``build_epoch_runner`` without the cache."""
    ts0, hyper0, keys0, x, y = example
    step = make_train_step(net, optimizer, loss=loss, augment=augment)
    if ensemble:
        one = lambda a: jax.tree_util.tree_map(lambda leaf: leaf[0], a)
        member = (one(ts0), None if hyper0 is None else one(hyper0))
    else:
        member = (ts0, hyper0)
    mode = resolve_loop(loop, step, member[0], member[1], x[:batch_size], y[:batch_size])
    e0 = jnp.int32(0)

    def vm(fn: Callable[..., Any], in_axes: tuple[Any, ...]) -> Callable[..., Any]:
        return jax.vmap(fn, in_axes=in_axes) if ensemble else fn

    if mode == "scan":
        epoch_fn = make_epoch_fn(net, optimizer, batch_size=batch_size, loss=loss, augment=augment)
        fn = vm(epoch_fn, (0, hyper_axis, 0, None, None, None))
        return jax.jit(fn).lower(ts0, hyper0, keys0, x, y, e0).compile(), mode

    n = x.shape[0]
    if batch_size > n:
        raise ValueError(f"batch_size {batch_size} exceeds the {n} training examples")

    def batches(key: jax.Array, epoch: jax.Array) -> jax.Array:
        return epoch_batches(run_keys(key)[0], epoch, n, batch_size)

    def step_at(
        ts: TrainState, hyper: Any, key: jax.Array, x: Any, y: Any, idx: jax.Array, i: jax.Array
    ) -> tuple[TrainState, tuple[Any, Any, Any]]:
        rows = idx[i]
        return step(ts, hyper, x[rows], y[rows], run_keys(key)[1])

    batches_key = ("batches", n, batch_size, ensemble, abstract_signature((keys0, e0)))  # shared by networks
    batches_c = RUNNERS.get(batches_key, lambda: jax.jit(vm(batches, (0, None))).lower(keys0, e0).compile())
    idx0 = batches_c(keys0, e0)
    step_c = (
        jax.jit(vm(step_at, (0, hyper_axis, 0, None, None, 0, None)))
        .lower(ts0, hyper0, keys0, x, y, idx0, e0)
        .compile()
    )
    stats_c = jax.jit(epoch_stats)
    n_batches = n // batch_size

    def run(
        ts: TrainState, hyper: Any, keys: jax.Array, x: Any, y: Any, epoch: jax.Array
    ) -> tuple[TrainState, EpochStats]:
        idx = batches_c(keys, epoch)
        outs = []
        for i in range(n_batches):
            ts, out = step_c(ts, hyper, keys, x, y, idx, jnp.int32(i))
            outs.append(out)
        losses, accs, applied = (jnp.stack([o[j] for o in outs]) for j in range(3))
        return ts, stats_c(losses, accs, applied)

    return run, mode
