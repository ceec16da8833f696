"""Minibatch training of one network (``fit``) or many at once (``fit_ensemble``).

    key = member_key(cfg["seed"], "keskar", "f1", seed=0)
    net, params, state = init_network(registry.builder("keskar_f1"), init_key(key))
    result = fit(net, params, state, Arrays(x, y, x_test, y_test),
                 optimizer=make_optimizer("adam", 1e-3), epochs=20, batch_size=256,
                 key=train_key(key), checkpoint_dir=..., checkpoint_every=5)
    result.history        # tidy DataFrame, one row per epoch
    result.params, result.failed

Each epoch is one jitted ``lax.scan`` over minibatches (``shared.training.step``)
with the data already on the device; the host only sees per-epoch numbers.
(``loop="auto"`` drives convnets on the CPU one jitted step at a time instead,
still without host round trips: see ``shared.training.loops``.)
Evaluation runs after the epochs chosen by ``eval_every`` in ``eval_bn_mode``
(``"eval"``: BatchNorm running averages, the default; ``"batch_stats"``: each
evaluation batch's own statistics). ``fit_ensemble`` ``vmap``s the same epoch
over members, each with its own key, initial parameters and (optionally)
optimizer hyperparameters, and freezes members that diverge. Checkpoints
(orbax, every ``checkpoint_every`` epochs) make a killed run resume to the
same weights it would have reached uninterrupted. Compiled programs are kept
by value (``compile_cache``): a run equal to an earlier one in network,
optimizer, loss, augmentation and shapes does not compile again; pass the
optimizer as a factory of ``hyper`` (``StepDecayOptimizer``) to make runs that
differ only in learning rate or weight decay equal. With several devices the
ensemble's member axis is split across them (``shared.parallel.mesh_for``: the
largest device count that divides the members); one device runs as before.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from shared.parallel import mesh_for, replicate, shard_leading
from shared.training.checkpoint import Checkpointer
from shared.training.compile_cache import INITIALISERS
from shared.training.evaluate import make_ensemble_evaluator, make_evaluator
from shared.training.loops import LoopMode, build_epoch_runner
from shared.training.losses import Loss, cross_entropy
from shared.training.network import Mode, Network
from shared.training.progress import progress_bar
from shared.training.step import (
    Augment,
    OptimizerLike,
    TrainState,
    init_train_state,
)
from shared.training.trajectory import Trajectory, flatten_params


class Arrays(NamedTuple):
    """A training set and an optional test set, as arrays (moved to the device by the engine)."""

    x_train: Any
    y_train: Any
    x_test: Any = None
    y_test: Any = None

    def on_device(self) -> Arrays:
        return Arrays(*(None if a is None else jnp.asarray(a) for a in self))


@dataclass
class FitResult:
    """The end of a run (or ensemble: leading member axis on every array)."""

    network: Network
    state: TrainState
    history: pd.DataFrame
    failed: np.ndarray  # bool, shape () or (members,)
    failed_step: np.ndarray  # int, -1 where the run did not fail
    seeds: list[int]
    trajectory_epochs: np.ndarray | None = None
    trajectory: np.ndarray | None = None  # (snapshots, P) or (snapshots, members, P)
    compile_time: float = 0.0  # seconds spent compiling the epoch (not in epoch_time)
    loop: str = "scan"  # how epochs were driven (``shared.training.loops``)

    @property
    def params(self) -> Any:
        return self.state.params

    @property
    def model_state(self) -> Any:
        return self.state.model_state

    @property
    def n_failed(self) -> int:
        return int(np.sum(self.failed))

    @property
    def failed_seeds(self) -> list[int]:
        flags = np.atleast_1d(self.failed)
        return [s for s, f in zip(self.seeds, flags, strict=True) if f]


def fit(
    net: Network,
    params: Any,
    model_state: Any,
    data: Arrays,
    *,
    optimizer: OptimizerLike,
    epochs: int,
    batch_size: int,
    key: jax.Array,
    seed: int = 0,
    hyper: Any = None,
    loss: Loss = cross_entropy,
    augment: Augment | None = None,
    eval_bn_mode: Mode = "eval",
    eval_batch_size: int = 1000,
    eval_every: int = 1,
    eval_train: bool = False,
    checkpoint_dir: str | None = None,
    checkpoint_every: int = 1,
    trajectory_every: int | None = None,
    trajectory_dir: str | None = None,
    progress: bool | None = None,
    desc: str = "fit",
    loop: LoopMode = "auto",
) -> FitResult:
    """Train one network for ``epochs`` epochs (resuming from ``checkpoint_dir`` if it
    holds a checkpoint); stops early if it diverges. ``seed`` only labels the run.

    ``optimizer`` is an optax transformation, or a factory called with ``hyper``;
    ``augment(key, x_batch)`` (e.g. ``random_crop_flip``) runs on the device;
    ``loss`` is per-example (``cross_entropy`` by default). Evaluation of the test
    set (and of the clean training set with ``eval_train``) runs every
    ``eval_every`` epochs in ``eval_bn_mode``. Checkpoints are written every
    ``checkpoint_every`` epochs, trajectory snapshots every ``trajectory_every``
    (to ``trajectory_dir``, by default ``<checkpoint_dir>/trajectory`` when checkpointing,
    so that a resumed run has the snapshots taken before it was killed).
    """
    return _train(
        net, params, model_state, data, optimizer=optimizer, epochs=epochs,
        batch_size=batch_size, keys=key, seeds=[seed], hypers=hyper, loss=loss,
        augment=augment, eval_bn_mode=eval_bn_mode, eval_batch_size=eval_batch_size,
        eval_every=eval_every, eval_train=eval_train, checkpoint_dir=checkpoint_dir,
        checkpoint_every=checkpoint_every, trajectory_every=trajectory_every,
        trajectory_dir=trajectory_dir, progress=progress, desc=desc, ensemble=False, loop=loop,
    )  # fmt: skip


def fit_ensemble(
    net: Network,
    params: Any,
    model_state: Any,
    data: Arrays,
    *,
    optimizer: OptimizerLike,
    epochs: int,
    batch_size: int,
    keys: jax.Array,
    seeds: Sequence[int],
    hypers: Any = None,
    loss: Loss = cross_entropy,
    augment: Augment | None = None,
    eval_bn_mode: Mode = "eval",
    eval_batch_size: int = 1000,
    eval_every: int = 1,
    eval_train: bool = False,
    checkpoint_dir: str | None = None,
    checkpoint_every: int = 1,
    trajectory_every: int | None = None,
    trajectory_dir: str | None = None,
    progress: bool | None = None,
    desc: str = "fit_ensemble",
    loop: LoopMode = "auto",
) -> FitResult:
    """Train ``len(seeds)`` networks at once with ``vmap``.

    ``params``/``model_state`` are stacked (``init_ensemble``), ``keys`` holds one
    train key per member (``member_keys`` + ``train_key``), and ``hypers`` is
    ``None`` or a pytree with a leading member axis passed to ``optimizer(hyper)``
    (e.g. ``{"lr": jnp.array([...])}``). A diverging member is frozen and marked
    failed; the others go on. Member i ends with the weights that ``fit`` gives
    for ``params[i], keys[i], hypers[i]``.
    """
    return _train(
        net, params, model_state, data, optimizer=optimizer, epochs=epochs,
        batch_size=batch_size, keys=keys, seeds=list(seeds), hypers=hypers, loss=loss,
        augment=augment, eval_bn_mode=eval_bn_mode, eval_batch_size=eval_batch_size,
        eval_every=eval_every, eval_train=eval_train, checkpoint_dir=checkpoint_dir,
        checkpoint_every=checkpoint_every, trajectory_every=trajectory_every,
        trajectory_dir=trajectory_dir, progress=progress, desc=desc, ensemble=True, loop=loop,
    )  # fmt: skip


def _jit_initialiser(optimizer: OptimizerLike, ensemble: bool, hyper_axis: int | None) -> Any:
    """A jitted ``(params, model_state, hyper) -> TrainState`` (vmapped over members for ensembles)."""
    if ensemble:
        return jax.jit(jax.vmap(lambda p, s, h: init_train_state(p, s, optimizer, h), in_axes=(0, 0, hyper_axis)))
    return jax.jit(lambda p, s, h: init_train_state(p, s, optimizer, h))


def _train(
    net: Network,
    params: Any,
    model_state: Any,
    data: Arrays,
    *,
    optimizer: OptimizerLike,
    epochs: int,
    batch_size: int,
    keys: jax.Array,
    seeds: list[int],
    hypers: Any,
    loss: Loss,
    augment: Augment | None,
    eval_bn_mode: Mode,
    eval_batch_size: int,
    eval_every: int,
    eval_train: bool,
    checkpoint_dir: str | None,
    checkpoint_every: int,
    trajectory_every: int | None,
    trajectory_dir: str | None,
    progress: bool | None,
    desc: str,
    ensemble: bool,
    loop: LoopMode,
) -> FitResult:
    data = data.on_device()
    members = len(seeds)
    hyper_axis = None if hypers is None else 0
    # members split across devices (``shared.parallel``; the identity on one device): the
    # vmapped epoch is partitioned by jit, the data replicated
    mesh = mesh_for(members if ensemble else 1)
    params, model_state, hypers, keys = shard_leading((params, model_state, hypers, keys), mesh)
    data = replicate(data, mesh)
    make_eval = make_ensemble_evaluator if ensemble else make_evaluator
    evaluate = make_eval(net, mode=eval_bn_mode, batch_size=eval_batch_size, loss=loss)
    init = INITIALISERS.get((optimizer, ensemble, hyper_axis),
                            lambda: _jit_initialiser(optimizer, ensemble, hyper_axis))
    ts = shard_leading(init(params, model_state, hypers), mesh)
    t_compile = time.perf_counter()
    run_epoch, loop_mode = build_epoch_runner(
        net, optimizer, batch_size=batch_size, loss=loss, augment=augment, ensemble=ensemble,
        hyper_axis=hyper_axis, loop=loop, example=(ts, hypers, keys, data.x_train, data.y_train),
    )  # fmt: skip
    compile_time = time.perf_counter() - t_compile

    ckpt = Checkpointer(checkpoint_dir, checkpoint_every) if checkpoint_dir else None
    if checkpoint_dir and trajectory_every and trajectory_dir is None:
        # a resumed run must find the snapshots taken before the kill: keep them beside the checkpoints
        trajectory_dir = str(Path(checkpoint_dir) / "trajectory")
    traj = Trajectory(trajectory_every, trajectory_dir) if trajectory_every else None
    rows: list[dict[str, Any]] = []
    start, wall_offset = 0, 0.0
    if ckpt is not None:
        restored = ckpt.restore(ts)
        if restored is not None:
            start, ts, record = restored
            ts = shard_leading(ts, mesh)
            rows = list(record["history"])
            wall_offset = float(rows[-1]["wall_time"]) if rows else 0.0
    if traj is not None:
        traj.load_existing(start)
        missing = [e for e in range(start + 1) if traj.due(e, epochs) and e not in traj.snapshots] if start else []
        if missing:
            raise RuntimeError(f"resuming {desc} at epoch {start}: trajectory snapshots {missing} are missing "
                               f"from {trajectory_dir}")
        if start == 0:
            traj.record(0, flatten_params(ts.params, ensemble))

    t_start = time.perf_counter()
    bar = progress_bar(epochs, desc, enabled=progress, initial=start)
    already_failed = bool(np.all(jax.device_get(ts.failed)))
    try:
        for epoch in range(start, start if already_failed else epochs):
            done = epoch + 1
            t0 = time.perf_counter()
            ts, stats = run_epoch(ts, hypers, keys, data.x_train, data.y_train, jnp.int32(epoch))
            stats = jax.device_get(stats)
            t1 = time.perf_counter()
            evals: dict[str, np.ndarray] = {}
            if done % eval_every == 0 or done == epochs:
                if data.x_test is not None:
                    evals["test_loss"], evals["test_acc"] = jax.device_get(
                        evaluate(ts.params, ts.model_state, data.x_test, data.y_test)
                    )
                if eval_train:
                    evals["train_eval_loss"], evals["train_eval_acc"] = jax.device_get(
                        evaluate(ts.params, ts.model_state, data.x_train, data.y_train)
                    )
            t2 = time.perf_counter()
            failed = np.atleast_1d(jax.device_get(ts.failed))
            step = np.atleast_1d(jax.device_get(ts.step))
            wall = wall_offset + t2 - t_start
            for m in range(members):
                row: dict[str, Any] = {
                    "member": m,
                    "seed": int(seeds[m]),
                    "epoch": done,
                    "step": int(step[m]),
                }
                metrics = {"train_loss": stats.loss, "train_acc": stats.accuracy, **evals}
                for name, value in metrics.items():
                    row[name] = float("nan") if failed[m] else float(np.atleast_1d(value)[m])
                row.update(
                    epoch_time=t1 - t0, eval_time=t2 - t1, wall_time=wall,
                    failed=bool(failed[m]), eval_bn_mode=eval_bn_mode,
                )  # fmt: skip
                rows.append(row)
            if traj is not None and traj.due(done, epochs):
                traj.record(done, flatten_params(ts.params, ensemble))
            if ckpt is not None and (ckpt.due(done, epochs) or failed.all()):
                ckpt.save(done, ts, {"epoch": done, "history": rows})
            bar.update(1)
            if "test_acc" in evals:
                bar.set_postfix(test_acc=float(np.nanmean(np.atleast_1d(evals["test_acc"]))))
            if failed.all():
                break
    finally:
        bar.close()
        if ckpt is not None:
            ckpt.close()

    failed = np.asarray(jax.device_get(ts.failed))
    step = np.asarray(jax.device_get(ts.step))
    t_epochs, t_vectors = traj.as_arrays() if traj is not None else (None, None)
    return FitResult(
        network=net,
        state=ts,
        history=pd.DataFrame(rows),
        failed=failed,
        failed_step=np.where(failed, step, -1),
        seeds=seeds,
        trajectory_epochs=t_epochs,
        trajectory=t_vectors,
        compile_time=compile_time,
        loop=loop_mode,
    )
