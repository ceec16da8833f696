"""Full-batch gradient descent on many initialisations at once (``vmap``).

Baldi & Hornik (1989) and Kawaguchi (2016) study the landscape of small linear
nets; the natural experiment is plain gradient descent on the full loss from
hundreds of random initialisations. ``train_ensemble`` runs exactly that:

    run = train_ensemble(loss_fn, params0, data, optax.sgd(1e-2), steps=20_000,
                         seeds=seeds, log_every=100, grad_tol=1e-8)
    run.params            # final params, leading member axis
    run.loss_history      # (members, len(run.log_steps)), NaN once a member failed
    run.failed, run.n_failed, run.failed_seeds

``loss_fn(params, data) -> scalar`` is any pure function (e.g. built from
``shared.models.pure``); ``init_params_batched`` has a leading member axis;
``data`` is shared by all members. ``optimizer`` may be a factory
``hyper -> GradientTransformation`` with ``hypers`` a pytree with a leading
member axis (a learning rate per member, say).

Per member and step: a non-finite loss or update freezes the member at its last
finite parameters and marks it failed (never averaged in); with ``grad_tol``,
a member whose gradient norm falls to ``grad_tol`` stops there and is marked
converged. The loop is jitted: a ``lax.scan`` over log blocks, each a loop of
``log_every`` steps, ``chunk_steps`` steps (whole log blocks) to a call; the host
sees only the logged losses.

Two options serve landscape experiments whose runs are classified afterwards
(``shared.training.critical``), e.g. Kawaguchi (2016), whose slow runs escape
degenerate saddles (Corollary 2.4) long after the others are done:

- ``until(loss, grad_norm) -> bool per member`` (numpy arrays, checked after every
  chunk): a member for which it holds stops there (no more updates: say "at L* or
  stationary", where more steps teach nothing; ``critical.settled``), and the
  ensemble ends when every member has stopped or failed. A member's trajectory
  does not depend on the others; where it stops depends on ``chunk_steps``.
- ``extensions``: members still descending after ``steps`` steps (not failed,
  relative gradient norm ‖∇L‖/(|L| + 1) > ``extend_rtol``, not stopped by
  ``until``) get another round of ``steps`` steps, only they, up to ``extensions``
  rounds, continuing their optimizer state. ``extended`` counts each member's rounds.

``loss_history`` and ``log_steps`` run over all rounds (a member that stopped
repeats its last logged loss). Stopped members leave the vmapped batch: it is
rebuilt from the members still training, padded with frozen copies to a power of
two (at least 8 rows), once half of its rows have been dead at a few checks in a row
(fewer for batches whose chunks are costly: a compilation costs about as much as
``COMPILE_WORK`` parameter-steps), so the cost follows the runs still training and
few batch sizes are compiled. These decisions depend on counts only: deterministic. The compiled loop is cached per
(``loss_fn``, ``optimizer``) object: later calls with the same objects and shapes
reuse it (``critical.gradient_descent`` gives one optimizer object per rate).
With several devices the batch of runs is split across them (``shared.parallel.mesh_for``,
again after each rebuild) and ``data`` is replicated; one device runs as before.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree

from shared.parallel import mesh_for, replicate, shard_leading
from shared.training.divergence import all_finite, select
from shared.training.progress import progress_bar
from shared.training.step import OptimizerLike, resolve_optimizer

Until = Callable[[np.ndarray, np.ndarray], np.ndarray]
SMALLEST_BATCH = 8  # a batch of runs still training is never padded to fewer rows
COMPILE_WORK = 30_000_000  # parameter-steps (rows × steps × parameters) about as costly as a compilation


class _Member(NamedTuple):
    params: Any
    opt_state: Any
    step: jax.Array
    failed: jax.Array
    converged: jax.Array
    frozen: jax.Array  # stopped by ``until`` or not extended (or a padding row): no more updates


@dataclass
class EnsembleRun:
    """Result of ``train_ensemble`` (arrays have a leading member axis)."""

    params: Any
    loss_history: np.ndarray  # (members, T): loss at log_steps; NaN after failure
    log_steps: np.ndarray  # (T,): 0, log_every, 2·log_every, …, last step (over all rounds)
    final_loss: np.ndarray  # (members,): NaN for failed members
    grad_norm: np.ndarray  # (members,): ‖∇L‖ at the final params
    failed: np.ndarray  # (members,) bool
    failed_step: np.ndarray  # (members,) int: step of divergence, −1 if none
    converged: np.ndarray  # (members,) bool: reached grad_tol
    steps_taken: np.ndarray  # (members,) int: updates applied
    seeds: list[int]
    trajectory: np.ndarray | None = None  # (members, T, P) flattened params at log_steps
    extended: np.ndarray | None = None  # (members,) int: extension rounds each member ran

    @property
    def n_failed(self) -> int:
        return int(np.sum(self.failed))

    @property
    def failed_seeds(self) -> list[int]:
        return [s for s, f in zip(self.seeds, self.failed, strict=True) if f]


@dataclass(frozen=True)
class _Compiled:
    init: Any
    run_blocks: Any  # (state, hypers, data, n_blocks, length) -> (state, per-block logs, end values)


_COMPILED: dict[tuple[Any, ...], _Compiled] = {}
_COMPILED_SIZE = 32


def _compiled(loss_fn: Callable[[Any, Any], jax.Array], optimizer: OptimizerLike, with_hypers: bool,
              tol: float, record_params: bool) -> _Compiled:
    """The jitted init, block loop and final evaluation, cached per loss and optimizer object."""
    cache_key: tuple[Any, ...] | None = (loss_fn, optimizer, with_hypers, tol, record_params)
    try:
        hash(cache_key)
    except TypeError:  # an unhashable loss or optimizer object: compiled afresh
        cache_key = None
    if cache_key is not None and cache_key in _COMPILED:
        return _COMPILED[cache_key]
    hyper_axis = 0 if with_hypers else None

    def init(p: Any, h: Any) -> _Member:
        tx = resolve_optimizer(optimizer, h)
        zero = jnp.zeros((), jnp.int32)
        return _Member(p, tx.init(p), zero, jnp.zeros((), bool), jnp.zeros((), bool), jnp.zeros((), bool))

    def one_step(m: _Member, h: Any, data: Any) -> tuple[_Member, jax.Array]:
        tx = resolve_optimizer(optimizer, h)
        value, grads = jax.value_and_grad(loss_fn)(m.params, data)
        gnorm = optax.tree.norm(grads)
        updates, new_opt = tx.update(grads, m.opt_state, m.params)
        new_params = optax.apply_updates(m.params, updates)
        active = ~m.failed & ~m.converged & ~m.frozen
        ok = jnp.isfinite(value) & all_finite(new_params)
        at_tol = ok & (gnorm <= tol)
        apply = active & ok & ~at_tol
        logged = jnp.where(m.failed, jnp.nan, value)
        new = _Member(
            select(apply, new_params, m.params),
            select(apply, new_opt, m.opt_state),
            m.step + apply.astype(jnp.int32),
            m.failed | (active & ~ok),
            m.converged | (active & at_tol),
            m.frozen,
        )
        return new, logged

    def block(m: _Member, h: Any, data: Any, length: jax.Array) -> tuple[_Member, tuple[jax.Array, jax.Array]]:
        """``length`` steps (a traced count: one compiled loop serves every block length);
        returns the loss before the first and the flat params then."""
        flat = ravel_pytree(m.params)[0] if record_params else jnp.zeros((0,))

        def body(i: jax.Array, carry: tuple[_Member, jax.Array]) -> tuple[_Member, jax.Array]:
            m, first = carry
            m, logged = one_step(m, h, data)
            return m, jnp.where(i == 0, logged, first)  # keep only the block's first loss

        zero = jnp.zeros((), jax.eval_shape(loss_fn, m.params, data).dtype)
        m, first = jax.lax.fori_loop(0, length, body, (m, zero))
        return m, (first, flat)

    def blocks(m: _Member, h: Any, data: Any, n_blocks: int, length: jax.Array) -> tuple[_Member, Any]:
        return jax.lax.scan(lambda c, _: block(c, h, data, length), m, None, length=n_blocks)

    def finish(m: _Member, data: Any) -> tuple[jax.Array, jax.Array, jax.Array]:
        value, grads = jax.value_and_grad(loss_fn)(m.params, data)
        flat = ravel_pytree(m.params)[0] if record_params else jnp.zeros((0,))
        return jnp.where(m.failed, jnp.nan, value), optax.tree.norm(grads), flat

    def blocks_and_finish(m: _Member, h: Any, data: Any, n_blocks: int, length: jax.Array) -> Any:
        m, logs = blocks(m, h, data, n_blocks, length)
        return m, logs, finish(m, data)

    def run_blocks_fn(m: _Member, h: Any, data: Any, n_blocks: int, length: jax.Array) -> Any:
        one = functools.partial(blocks_and_finish, n_blocks=n_blocks, length=length)
        return jax.vmap(one, in_axes=(0, hyper_axis, None))(m, h, data)

    compiled = _Compiled(
        init=jax.jit(jax.vmap(init, in_axes=(0, hyper_axis))),
        run_blocks=jax.jit(run_blocks_fn, static_argnums=(3,)),
    )
    if cache_key is not None:
        if len(_COMPILED) >= _COMPILED_SIZE:
            _COMPILED.pop(next(iter(_COMPILED)))
        _COMPILED[cache_key] = compiled
    return compiled


def padded_size(n: int, members: int) -> int:
    """Rows of a batch that holds ``n`` of ``members`` runs: the next power of two, at least
    ``SMALLEST_BATCH`` and at most ``members``. Few sizes means few compilations (a compilation
    costs about as much as a few hundred steps of a small batch)."""
    return min(members, max(n, SMALLEST_BATCH, 1 << max(0, int(n - 1).bit_length())))


def train_ensemble(
    loss_fn: Callable[[Any, Any], jax.Array],
    init_params_batched: Any,
    data: Any,
    optimizer: OptimizerLike,
    steps: int,
    *,
    hypers: Any = None,
    seeds: Sequence[int] | None = None,
    log_every: int = 1,
    grad_tol: float | None = None,
    record_params: bool = False,
    chunk_steps: int = 10_000,
    progress: bool | None = None,
    desc: str = "gd ensemble",
    until: Until | None = None,
    extensions: int = 0,
    extend_rtol: float = 1e-6,
) -> EnsembleRun:
    """Full-batch optimisation of every member for ``steps`` steps (see module doc), with a
    per-member stop (``until``) and up to ``extensions`` more rounds for members still descending."""
    leaves = jax.tree_util.tree_leaves(init_params_batched)
    if not leaves:
        raise ValueError("init_params_batched has no arrays")
    members = int(leaves[0].shape[0])
    seeds = list(range(members)) if seeds is None else [int(s) for s in seeds]
    if len(seeds) != members:
        raise ValueError(f"{len(seeds)} seeds for {members} members")
    if log_every < 1 or steps < 0 or extensions < 0:
        raise ValueError("need log_every >= 1, steps >= 0 and extensions >= 0")
    tol = -1.0 if grad_tol is None else float(grad_tol)
    fns = _compiled(loss_fn, optimizer, hypers is not None, tol, record_params)

    # one round: chunks of (blocks, block length); every round has the same structure
    n_full, rem = divmod(steps, log_every)
    per_chunk = max(1, chunk_steps // log_every)
    chunks = [(min(per_chunk, n_full - i), log_every) for i in range(0, n_full, per_chunk)]
    if rem:
        chunks.append((1, rem))

    # members split across devices (``shared.parallel``; the identity on one device), data replicated
    mesh = mesh_for(members)
    init_params_batched, hypers = shard_leading((init_params_batched, hypers), mesh)
    shared_data = replicate(data, mesh)
    state = fns.init(init_params_batched, hypers)  # every member
    n_params = sum(int(np.prod(leaf.shape[1:])) for leaf in leaves)  # per member
    batch, batch_hypers = state, hypers  # the rows that train (padding rows are frozen copies)
    live = np.arange(members)  # members still training: the first ``live.size`` rows of the batch
    host: Any = None  # every member's state in host memory, once the batch has been rebuilt
    final = np.full(members, np.nan)  # each member's loss, ‖∇L‖ and flat params after its last chunk
    gnorm = np.full(members, np.nan)
    flat: np.ndarray | None = None
    history: list[np.ndarray] = []
    snaps: list[np.ndarray] = []
    log_steps: list[int] = []
    extended = np.zeros(members, dtype=np.int64)
    done = 0
    oversized = 0  # checks in a row at which at least half of the batch rows were dead

    def write_back() -> None:
        """The live rows of the batch into ``host`` (gathers and scatters stay on the host, so
        that no device op is compiled for each new count of live members)."""
        nonlocal host
        rows = jax.device_get(batch)
        if host is None:  # the first batch holds every member, in order
            host = jax.tree_util.tree_map(np.array, rows)
            return
        for a, b in zip(jax.tree_util.tree_leaves(host), jax.tree_util.tree_leaves(rows), strict=True):
            a[live] = b[: live.size]

    bar = progress_bar(steps, desc, enabled=progress)
    try:
        for round_ in range(extensions + 1):
            if round_:
                extended[live] += 1
                bar.close()
                bar = progress_bar(steps, desc + " (extension)", enabled=progress)
            # no steps: one empty block (the same compiled loop), for the final evaluation only
            for c, (n, length) in enumerate(chunks or [(1, 0)]):
                batch, logs, ends = fns.run_blocks(batch, batch_hypers, shared_data, n, np.int32(length))
                (losses, flats), (value, grad, end_flat), failed = jax.device_get((logs, ends, batch.failed))
                k = live.size
                value, grad, failed = value[:k], grad[:k], failed[:k]
                final[live], gnorm[live] = value, grad
                if record_params:
                    if flat is None:
                        flat = np.zeros((members, end_flat.shape[-1]), end_flat.dtype)
                    flat[live] = end_flat[:k]
                if not length:
                    break
                full = np.repeat(final[:, None], n, axis=1)  # members not training repeat their loss
                full[live] = losses[:k]
                history.append(full)
                if record_params:
                    assert flat is not None
                    full_flat = np.repeat(flat[:, None, :], n, axis=1)
                    full_flat[live] = flats[:k]
                    snaps.append(full_flat)
                log_steps += [done + i * length for i in range(n)]
                done += n * length
                bar.update(n * length)
                round_end = c == len(chunks) - 1
                if until is None and not (round_end and round_ < extensions):
                    continue
                # who trains on: not failed, not settled (``until``) and, at a round's end, still
                # descending (relative gradient norm above ``extend_rtol``) with rounds left
                keep = ~failed
                if until is not None:
                    keep &= ~np.asarray(until(value, grad), dtype=bool)
                if round_end:
                    keep &= (grad / (np.abs(value) + 1.0) > extend_rtol) & (round_ < extensions)
                changed = not keep.all()
                if changed:
                    write_back()
                    live = live[keep]
                    if not live.size:
                        break
                # the batch shrinks to the live members (padded to ``padded_size``) once at least
                # half of its rows have been dead at enough checks in a row: a new size costs a
                # compilation, worth about COMPILE_WORK parameter-steps, so a batch whose chunks
                # do more work waits less
                current = len(jax.tree_util.tree_leaves(batch)[0])
                size = padded_size(live.size, members)
                oversized = oversized + 1 if live.size * 2 <= current and size < current else 0
                wait = max(2, -(-COMPILE_WORK // max(1, current * n * length * n_params)))
                if oversized >= wait or (oversized and round_end):
                    if not changed:
                        write_back()
                    oversized = 0
                elif changed:
                    size = current  # same size: the left members' rows become frozen padding
                else:
                    continue
                rows = np.concatenate([live, np.full(size - live.size, live[0])])
                batch = jax.device_put(jax.tree_util.tree_map(lambda v, rows=rows: v[rows], host))
                batch = batch._replace(frozen=jax.device_put(np.arange(size) >= live.size))
                if hypers is not None:
                    batch_hypers = jax.device_put(
                        jax.tree_util.tree_map(lambda v, rows=rows: np.asarray(v)[rows], hypers))
                if mesh_for(size) != mesh:  # the new batch size splits over other devices
                    mesh = mesh_for(size)
                    shared_data = replicate(data, mesh)
                batch, batch_hypers = shard_leading((batch, batch_hypers), mesh)
            if not live.size or not chunks:
                break
    finally:
        bar.close()
    if host is None:
        state = batch
    else:
        if live.size:
            write_back()
        state = jax.device_put(host)  # (device_put, unlike jnp.asarray, compiles nothing)
    state = state._replace(frozen=jax.device_put(np.zeros(members, bool)))
    history.append(final[:, None])
    log_steps.append(done)
    failed = np.asarray(state.failed)
    step = np.asarray(state.step)
    trajectory = None
    if record_params:
        assert flat is not None
        trajectory = np.concatenate([*snaps, flat[:, None, :]], axis=1)
    return EnsembleRun(
        params=state.params,
        loss_history=np.concatenate(history, axis=1),
        log_steps=np.asarray(log_steps, dtype=np.int64),
        final_loss=final,
        grad_norm=gnorm,
        failed=failed,
        failed_step=np.where(failed, step, -1),
        converged=np.asarray(state.converged),
        steps_taken=step,
        seeds=seeds,
        trajectory=trajectory,
        extended=extended if extensions else None,
    )
