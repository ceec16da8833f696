"""Classify where an ensemble of gradient-descent runs ended: global value, saddle, minimum.

Landscape papers claim things about the critical points gradient descent can end at:
Kawaguchi (2016, Thm 2.3) that every local minimum of a deep linear network is global and
every other critical point a saddle; Choromanska et al. (2015) and Sagun et al. (2016) where
the minima of larger networks lie. The experiment behind such a claim trains many runs
(``shared.training.train_ensemble``) and must say, for *every* run, what its end state is
evidence of. ``classify_runs`` does that with thresholds fixed before any run:

1. *diverged*: the run failed (``failed``) or its final loss or parameters are not finite.
2. *reached L**: (L − L*)/|L*| ≤ ``reached_rtol`` (needs the known optimum L*; |L*| is
   replaced by 1 when L* = 0).
3. *stationary*: ‖∇L‖/(|L| + 1) ≤ ``stationary_rtol``. Its exact Hessian (float64, dense,
   vmapped over the stationary runs) is computed:

   - a negative eigenvalue, λ_min < −``negative_rtol``·max|λ| (the tolerance of
     ``shared.curvature.exact.inertia``): *saddle (negative curvature)*, a strict saddle;
   - otherwise (positive semi-definite: a minimum, or a degenerate saddle such as W = 0 of a
     deep linear net with H ≥ 3, Kawaguchi's Corollary 2.4): the *escape test* below.
4. *not stationary* (the gradient is not small, L* not reached): the same escape test,
   as a *stall test*.

The escape test perturbs the run by N(0, ``perturbation``²) noise on every parameter and runs
``escape_steps`` more steps of plain gradient descent (learning rate ``lr``). The run *moved*
when the loss then falls below L − ``escape_fraction``·(L − L*) (without a known optimum:
L − ``escape_fraction``·(|L| + 1)). Then:

- a stationary run that moved: *saddle (escaped)*, a degenerate saddle whose descent
  direction is of higher order (Kawaguchi's Thm 2.3 (iv): for H ≥ 3 such saddles exist);
- a stationary run that did not move: *non-global minimum candidate*;
- a non-stationary run that moved: *still descending* (unresolved: more steps are needed);
- a non-stationary run that did not move (``stalled``): its exact Hessian decides.
  Positive semi-definite: *non-global minimum candidate* as well. This is the
  flat-bottomed minimum: on a quartic bottom L ≈ L_0 + c·x⁴, gradient descent converges
  only as x_t ~ (8c·lr·t)^(−1/2), so after any affordable number of steps the gradient
  (~ t^(−3/2)) is still far above a stationarity threshold, yet the loss is stuck and the
  curvature is ≥ 0. Counting such a run as merely "still descending" would let a claim
  that tolerates a small unresolved fraction pass over a real non-global minimum; it is a
  candidate instead. A negative eigenvalue: *still descending* (unresolved): the run sits
  on the slope of a saddle it is slowly leaving along a direction of negative curvature
  (deep linear nets near a rank-deficient critical point), which is no minimum but not
  yet a critical point either.

A candidate is a *candidate*: a minimum at the resolution of the test (a saddle whose escape
takes longer than ``escape_steps`` from a perturbation of that size also lands here). A claim
that "no non-global minimum exists" therefore needs zero candidates, and a claim that runs
end at the global value needs the unresolved (still descending, diverged) fraction small.

Without a known optimum (``optimum=None``) no run is *reached L** and a run that would be a
non-global minimum candidate is a *minimum (optimum unknown)* (``MINIMUM``) instead: the
test cannot tell a global from a non-global minimum.

The perturbation of run i is drawn from a generator seeded with ``key`` and i, so a run's
test does not depend on which other runs are tested; everything is deterministic given the key.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree

from shared.training.fullbatch import padded_size, train_ensemble

REACHED_RTOL = 1e-6  # (L − L*)/|L*| at or below: at the global value
STATIONARY_RTOL = 1e-6  # ‖∇L‖/(|L| + 1) at or below: a critical point
NEGATIVE_RTOL = 1e-8  # λ_min < −NEGATIVE_RTOL·max|λ|: negative curvature
ESCAPE_FRACTION = 1e-3  # the escape test must lower the loss by this fraction of L − L*
PERTURBATION = 1e-3  # std of the escape test's perturbation (every parameter)

REACHED = "reached L*"
SADDLE_NEGATIVE = "saddle (negative curvature)"
SADDLE_ESCAPED = "saddle (escaped)"
NONGLOBAL = "non-global minimum candidate"
DESCENDING = "still descending"
DIVERGED = "diverged"
MINIMUM = "minimum (optimum unknown)"  # only when no optimum is given
CATEGORIES = (REACHED, SADDLE_NEGATIVE, SADDLE_ESCAPED, NONGLOBAL, DESCENDING, DIVERGED)
RESOLVED = (REACHED, SADDLE_NEGATIVE, SADDLE_ESCAPED)  # evidence for "no bad minimum" claims


@dataclass
class Classification:
    """Per run (one entry per ensemble member)."""

    category: np.ndarray  # object array of the labels above
    final_loss: np.ndarray  # L at the given params (NaN for diverged runs)
    rel_gap: np.ndarray  # (L − L*)/|L*|; NaN without an optimum
    rel_grad: np.ndarray  # ‖∇L‖/(|L| + 1)
    stationary: np.ndarray  # bool: rel_grad ≤ stationary_rtol (and not reached, not diverged)
    hessian_min: np.ndarray  # λ_min of the exact Hessian (stationary and stalled runs, else NaN)
    escape_drop: np.ndarray  # loss decrease in the escape/stall test (tested runs only, else NaN)
    stalled: np.ndarray  # bool: not stationary, yet the stall test did not lower the loss enough

    def counts(self, categories: Sequence[str] = CATEGORIES) -> dict[str, int]:
        return {c: int(np.sum(self.category == c)) for c in categories}


def _take(params: Any, idx: np.ndarray) -> Any:
    """Rows ``idx`` of every leaf, gathered on the host (no device op compiled per count)."""
    return jax.device_put(jax.tree_util.tree_map(lambda v: np.asarray(v)[idx], params))


def _padded(idx: np.ndarray, members: int) -> np.ndarray:
    """``idx`` padded (repeating its first entry) to ``padded_size``: the sizes ``train_ensemble``
    compacts to, so the escape test reuses its compiled loop."""
    return np.concatenate([idx, np.full(padded_size(idx.size, members) - idx.size, idx[0])])


def classify_runs(
    loss_fn: Callable[[Any, Any], jax.Array],
    params: Any,
    data: Any,
    optimum: float | None,
    *,
    key: jax.Array,
    lr: float,
    escape_steps: int,
    failed: np.ndarray | None = None,
    reached_rtol: float = REACHED_RTOL,
    stationary_rtol: float = STATIONARY_RTOL,
    negative_rtol: float = NEGATIVE_RTOL,
    escape_fraction: float = ESCAPE_FRACTION,
    perturbation: float = PERTURBATION,
) -> Classification:
    """The category of every run's end state (module doc).

    ``loss_fn(params, data) -> scalar`` as for ``train_ensemble``; ``params`` the final
    parameters with a leading member axis; ``failed`` the runs training marked as failed
    (their params are the last finite ones, so the loss alone would not show it);
    ``optimum`` the known global value L* or None. The escape test is ``escape_steps``
    steps of gradient descent with learning rate ``lr``.
    """
    leaves = jax.tree_util.tree_leaves(params)
    members = int(leaves[0].shape[0])
    gd = gradient_descent(lr)
    # L and ‖∇L‖ by train_ensemble's own compiled loop (zero steps): after training with the same
    # loss and optimizer objects, nothing new is compiled
    now = train_ensemble(loss_fn, params, data, gd, 0, progress=False)
    final = np.asarray(now.final_loss, dtype=np.float64)
    gnorm = np.asarray(now.grad_norm, dtype=np.float64)
    finite = np.isfinite(final) & np.all(
        np.stack([np.isfinite(np.asarray(v)).reshape(members, -1).all(axis=1) for v in leaves]), axis=0)
    diverged = ~finite if failed is None else (~finite | np.asarray(failed, dtype=bool))
    final = np.where(diverged, np.nan, final)
    rel_grad = gnorm / (np.abs(final) + 1.0)
    if optimum is None:
        rel_gap = np.full(members, np.nan)
        reached = np.zeros(members, dtype=bool)
        minimum = MINIMUM
    else:
        rel_gap = (final - optimum) / (abs(optimum) if optimum != 0 else 1.0)
        reached = ~diverged & (rel_gap <= reached_rtol)
        minimum = NONGLOBAL
    category = np.full(members, DESCENDING, dtype=object)
    category[reached] = REACHED
    category[diverged] = DIVERGED
    open_ = ~diverged & ~reached
    stationary = open_ & (rel_grad <= stationary_rtol)
    hessian_min = np.full(members, np.nan)
    escape_drop = np.full(members, np.nan)
    stalled = np.zeros(members, dtype=bool)

    psd = np.zeros(members, dtype=bool)
    idx = np.flatnonzero(stationary)
    if idx.size:
        lam = _hessian_min(loss_fn, _take(params, _padded(idx, members)), data, negative_rtol)[: idx.size]
        hessian_min[idx] = lam[:, 0]
        negative = lam[:, 0] < -lam[:, 1]  # λ_min < −tol
        category[idx[negative]] = SADDLE_NEGATIVE
        psd[idx[~negative]] = True

    tested = np.flatnonzero(psd | (open_ & ~stationary))
    if tested.size:
        padded = _padded(tested, members)
        noise = _perturbations(params, key, padded, perturbation)
        start = jax.device_put(jax.tree_util.tree_map(lambda v, n: np.asarray(v)[padded] + n, params, noise))
        again = train_ensemble(loss_fn, start, data, gd, escape_steps, log_every=max(1, escape_steps),
                               progress=False)
        after = np.asarray(again.final_loss)[: tested.size]
        before = final[tested]
        scale = before - optimum if optimum is not None else np.abs(before) + 1.0
        drop = before - after  # NaN (not moved) if the test diverged
        escape_drop[tested] = drop
        moved = drop > escape_fraction * scale
        was_stationary = stationary[tested]
        stalled[tested] = ~was_stationary & ~moved
        category[tested] = np.where(
            was_stationary,
            np.where(moved, SADDLE_ESCAPED, minimum),
            np.where(moved, DESCENDING, minimum),
        )
        stuck = tested[~was_stationary & ~moved]
        if stuck.size:  # stalled: a flat bottom (PSD) or the slope of a slow saddle (negative curvature)
            lam = _hessian_min(loss_fn, _take(params, _padded(stuck, members)), data, negative_rtol)[: stuck.size]
            hessian_min[stuck] = lam[:, 0]
            category[stuck[lam[:, 0] < -lam[:, 1]]] = DESCENDING
    return Classification(category=category, final_loss=final, rel_gap=rel_gap, rel_grad=rel_grad,
                          stationary=stationary, hessian_min=hessian_min, escape_drop=escape_drop,
                          stalled=stalled)


# --- compiled pieces, cached per loss function (reused across calls and configurations) ---------

_CACHE: dict[tuple[Any, ...], Any] = {}
_CACHE_SIZE = 32


def _cached(kind: str, fn: Any, build: Callable[[], Any], *extra: Any) -> Any:
    key = (kind, fn, *extra)
    try:
        hash(key)
    except TypeError:  # an unhashable loss object: built afresh
        return build()
    if key not in _CACHE:
        if len(_CACHE) >= _CACHE_SIZE:
            _CACHE.pop(next(iter(_CACHE)))
        _CACHE[key] = build()
    return _CACHE[key]


def _hessian_min(loss_fn: Callable[[Any, Any], jax.Array], params: Any, data: Any, rtol: float) -> np.ndarray:
    """(λ_min, tol) per member of the exact, symmetrized Hessian, tol = rtol·max|λ| as in
    ``shared.curvature.exact.inertia`` (eigenvalues by numpy's ``eigvalsh`` in float64)."""
    def one(p: Any, data: Any) -> jax.Array:
        flat, unravel = ravel_pytree(p)
        return jax.hessian(lambda v: loss_fn(unravel(v), data))(flat)

    hessians = np.asarray(_cached("hessian", loss_fn, lambda: jax.jit(jax.vmap(one, in_axes=(0, None))))(
        params, data), dtype=np.float64)
    hessians = 0.5 * (hessians + np.swapaxes(hessians, -1, -2))
    eig = np.linalg.eigvalsh(hessians)
    scale = np.max(np.abs(eig), axis=-1) if eig.shape[-1] else np.zeros(eig.shape[0])
    tol = rtol * np.maximum(scale, np.finfo(np.float64).tiny)
    return np.stack([eig[:, 0], tol], axis=1)


def _perturbations(params: Any, key: jax.Array, idx: np.ndarray, std: float) -> Any:
    """N(0, std²) noise for the runs ``idx`` (numpy, host): run i's from a generator seeded with
    the key's data and i, so a run's noise does not depend on which other runs are tested."""
    data = jax.random.key_data(key) if jnp.issubdtype(key.dtype, jax.dtypes.prng_key) else key
    seed = [int(v) for v in np.asarray(data).ravel()]
    leaves, treedef = jax.tree_util.tree_flatten(params)
    draws: list[list[np.ndarray]] = [[] for _ in leaves]
    for i in idx:
        rng = np.random.default_rng([*seed, int(i)])
        for out, leaf in zip(draws, leaves, strict=True):
            out.append(std * rng.standard_normal(leaf.shape[1:]))
    return jax.tree_util.tree_unflatten(
        treedef, [np.stack(d).astype(leaf.dtype) for d, leaf in zip(draws, leaves, strict=True)])


_SGD: dict[float, optax.GradientTransformation] = {}


def gradient_descent(lr: float) -> optax.GradientTransformation:
    """``optax.sgd(lr)``, one object per learning rate: ``train_ensemble`` caches its compiled
    loop per optimizer object, so training and the escape test share it."""
    if lr not in _SGD:
        _SGD[lr] = optax.sgd(lr)
    return _SGD[lr]


def settled(optimum: float | None, *, reached_rtol: float = REACHED_RTOL,
            stationary_rtol: float = STATIONARY_RTOL) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """``until`` for ``train_ensemble``: a run is settled once it is at the global value
    ((L − L*)/|L*| ≤ ``reached_rtol``) or stationary (‖∇L‖/(|L| + 1) ≤ ``stationary_rtol``),
    i.e. once ``classify_runs`` would not call it still descending for want of steps."""
    def until(loss: np.ndarray, grad_norm: np.ndarray) -> np.ndarray:
        loss = np.asarray(loss, dtype=np.float64)
        stationary = np.asarray(grad_norm) / (np.abs(loss) + 1.0) <= stationary_rtol
        if optimum is None:
            return stationary
        reached = (loss - optimum) / (abs(optimum) if optimum != 0 else 1.0) <= reached_rtol
        return reached | stationary

    return until
