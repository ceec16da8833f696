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
converged. The loop is a jitted ``lax.scan`` in chunks of ``chunk_steps``
steps; the host sees only the logged losses.
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

from shared.training.divergence import all_finite, select
from shared.training.progress import progress_bar
from shared.training.step import OptimizerLike, resolve_optimizer


class _Member(NamedTuple):
    params: Any
    opt_state: Any
    step: jax.Array
    failed: jax.Array
    converged: jax.Array


@dataclass
class EnsembleRun:
    """Result of ``train_ensemble`` (arrays have a leading member axis)."""

    params: Any
    loss_history: np.ndarray  # (members, T): loss at log_steps; NaN after failure
    log_steps: np.ndarray  # (T,): 0, log_every, 2·log_every, …, steps
    final_loss: np.ndarray  # (members,): NaN for failed members
    grad_norm: np.ndarray  # (members,): ‖∇L‖ at the final params
    failed: np.ndarray  # (members,) bool
    failed_step: np.ndarray  # (members,) int: step of divergence, −1 if none
    converged: np.ndarray  # (members,) bool: reached grad_tol
    steps_taken: np.ndarray  # (members,) int: updates applied
    seeds: list[int]
    trajectory: np.ndarray | None = None  # (members, T, P) flattened params at log_steps

    @property
    def n_failed(self) -> int:
        return int(np.sum(self.failed))

    @property
    def failed_seeds(self) -> list[int]:
        return [s for s, f in zip(self.seeds, self.failed, strict=True) if f]


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
) -> EnsembleRun:
    """Full-batch optimisation of every member for ``steps`` steps (see module doc)."""
    leaves = jax.tree_util.tree_leaves(init_params_batched)
    if not leaves:
        raise ValueError("init_params_batched has no arrays")
    members = int(leaves[0].shape[0])
    seeds = list(range(members)) if seeds is None else [int(s) for s in seeds]
    if len(seeds) != members:
        raise ValueError(f"{len(seeds)} seeds for {members} members")
    if log_every < 1 or steps < 0:
        raise ValueError("need log_every >= 1 and steps >= 0")
    hyper_axis = None if hypers is None else 0
    tol = -1.0 if grad_tol is None else float(grad_tol)

    def init(p: Any, h: Any) -> _Member:
        tx = resolve_optimizer(optimizer, h)
        zero = jnp.zeros((), jnp.int32)
        return _Member(p, tx.init(p), zero, jnp.zeros((), bool), jnp.zeros((), bool))

    def one_step(m: _Member, h: Any, data: Any) -> tuple[_Member, jax.Array]:
        tx = resolve_optimizer(optimizer, h)
        value, grads = jax.value_and_grad(loss_fn)(m.params, data)
        gnorm = optax.global_norm(grads)
        updates, new_opt = tx.update(grads, m.opt_state, m.params)
        new_params = optax.apply_updates(m.params, updates)
        active = ~m.failed & ~m.converged
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
        )
        return new, logged

    def block(m: _Member, h: Any, data: Any, length: int) -> tuple[_Member, tuple[jax.Array, jax.Array]]:
        """``length`` steps; returns the loss before the first and the flat params then."""
        flat = ravel_pytree(m.params)[0] if record_params else jnp.zeros((0,))

        def body(carry: tuple[_Member, jax.Array], i: jax.Array) -> tuple[tuple[_Member, jax.Array], None]:
            m, first = carry
            m, logged = one_step(m, h, data)
            return (m, jnp.where(i == 0, logged, first)), None  # keep only the block's first loss

        zero = jnp.zeros((), jax.eval_shape(loss_fn, m.params, data).dtype)
        (m, first), _ = jax.lax.scan(body, (m, zero), jnp.arange(length))
        return m, (first, flat)

    def blocks(m: _Member, h: Any, data: Any, n_blocks: int, length: int) -> tuple[_Member, Any]:
        return jax.lax.scan(lambda c, _: block(c, h, data, length), m, None, length=n_blocks)

    def finish(m: _Member, data: Any) -> tuple[jax.Array, jax.Array, jax.Array]:
        value, grads = jax.value_and_grad(loss_fn)(m.params, data)
        flat = ravel_pytree(m.params)[0] if record_params else jnp.zeros((0,))
        return jnp.where(m.failed, jnp.nan, value), optax.global_norm(grads), flat

    v_init = jax.jit(jax.vmap(init, in_axes=(0, hyper_axis)))

    def run_blocks_fn(m: _Member, h: Any, data: Any, n_blocks: int, length: int) -> Any:
        one = functools.partial(blocks, n_blocks=n_blocks, length=length)
        return jax.vmap(one, in_axes=(0, hyper_axis, None))(m, h, data)

    run_blocks = jax.jit(run_blocks_fn, static_argnums=(3, 4))
    v_finish = jax.jit(jax.vmap(finish, in_axes=(0, None)))

    state = v_init(init_params_batched, hypers)
    n_full, rem = divmod(steps, log_every)
    per_chunk = max(1, chunk_steps // log_every)
    history: list[np.ndarray] = []
    snaps: list[np.ndarray] = []
    bar = progress_bar(steps, desc, enabled=progress)
    try:
        done = 0
        while done < n_full:
            n = min(per_chunk, n_full - done)
            state, (losses, flats) = run_blocks(state, hypers, data, n, log_every)
            history.append(np.asarray(losses))
            if record_params:
                snaps.append(np.asarray(flats))
            done += n
            bar.update(n * log_every)
        if rem:
            state, (losses, flats) = run_blocks(state, hypers, data, 1, rem)
            history.append(np.asarray(losses))
            if record_params:
                snaps.append(np.asarray(flats))
            bar.update(rem)
    finally:
        bar.close()
    final, gnorm, flat = jax.device_get(v_finish(state, data))
    history.append(np.asarray(final)[:, None])
    log_steps = np.concatenate([np.arange(n_full) * log_every, [n_full * log_every] if rem else [], [steps]]).astype(
        np.int64
    )
    failed = np.asarray(state.failed)
    step = np.asarray(state.step)
    trajectory = None
    if record_params:
        trajectory = np.concatenate([*snaps, np.asarray(flat)[:, None, :]], axis=1)
    return EnsembleRun(
        params=state.params,
        loss_history=np.concatenate(history, axis=1),
        log_steps=log_steps,
        final_loss=np.asarray(final),
        grad_norm=np.asarray(gnorm),
        failed=failed,
        failed_step=np.where(failed, step, -1),
        converged=np.asarray(state.converged),
        steps_taken=step,
        seeds=seeds,
        trajectory=trajectory,
    )
