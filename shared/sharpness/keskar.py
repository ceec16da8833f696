r"""Keskar et al.'s sharpness, Metric 2.1 (ICLR 2017, §2.2.1), maximised by L-BFGS-B.

Keskar, Mudigere, Nocedal, Smelyanskiy, Tang, "On large-batch training for deep learning:
generalization gap and sharp minima" (ICLR 2017), Metric 2.1. For parameters x ∈ Rⁿ, a
matrix A ∈ R^{n×p} and ε > 0, with the box

    C_ε = { z ∈ Rᵖ : −ε(|(A⁺x)_i| + 1) ≤ z_i ≤ ε(|(A⁺x)_i| + 1) }      (A⁺: pseudo-inverse),

the sharpness is

    φ_{x,f}(ε, A) = [ max_{y ∈ C_ε} f(x + A y) − f(x) ] / (1 + f(x)) × 100.

A = Iₙ gives the full-space metric (box |y_i| ≤ ε(|x_i| + 1) around x itself; Table 3), and
a random A with p = 100 columns the random-subspace one (Table 4). The paper does not give
the distribution of A's entries (``CLAIMS.md``: NOT FOUND); we draw them i.i.d. N(0, 1) from
a seeded key, and A⁺x = (AᵀA)⁻¹Aᵀx. The maximisation is approximate, "10 iterations of
L-BFGS-B" (Byrd et al. 1995): ``scipy.optimize.minimize(method="L-BFGS-B")`` on −f(x + Ay)
with value and gradient (Aᵀ∇f) from one jitted JAX function.

**Stopping rules.** scipy's defaults (``gtol`` 1e-5 on the projected gradient, ``ftol``
2.2e-9 on the relative decrease) are scaled for O(1) problems, not for this one: at a trained
minimum every gradient entry is far below 1e-5, so L-BFGS-B stops at iteration 0 and reports
φ = 0 whatever the curvature, and an iteration changes f by far less than 2.2e-9·max(|f|, 1)
once the steps are small. We pass
``gtol=0`` and ``ftol=0`` (:data:`LBFGSB_OPTIONS`): the search stops only after ``maxiter``
iterations, at an exact KKT point (projected gradient exactly 0, e.g. a vertex whose gradient
points outwards everywhere), when a step gives no decrease at all, or when the line search
fails (float32 noise); the paper's budget, ``maxiter`` = 10, is the effective limit.

**Start point.** The paper does not say where the search starts. y = 0 (x itself) is the
worst choice: at a minimum ∇f(x) ≈ 0, so y = 0 is (nearly) a stationary point of the
objective and no tolerance can make the search leave it when ∇f(x) = 0 exactly. The default,
``init="random"``, starts at y₀ = δ u ⊙ b with u ~ U(−1, 1)ᵖ drawn from ``key`` (a fixed
``jax.random.key(0)`` when no key is given), b the box half-widths and δ = ``start_scale`` =
1e-2. Why this point: it is not stationary (for f locally ≈ f(x) + gᵀAy + ½yᵀAᵀHAy the
gradient there is Aᵀg + AᵀHA y₀ ≠ 0 even when g = 0); it is small, so when the gradient is
not negligible the search follows it as from y = 0, and otherwise the first ascent steps
can amplify the directions of largest curvature (like power iteration) before the iterate
reaches a face; and δ b_i = 1e-5 (|x_i| + 1) is at least ~80 float32 ulps of x_i, so
x + Ay₀ ≠ x in float32. A start spread over the whole box (``start_scale=1``) jumps in one
step to the vertex of u's orthant. On 12-parameter dense quadratics with ∇f(x) = 0
(float64, 15 seeds, 64- or 4096-vertex ground truth) the small start reached on average
98.2 % (subspace p = 6) and 88.5 % (full space) of the box maximum, the whole-box start
93.8 % and 82.9 %, and y = 0 0 %; with gradients of 1e-6 to 1 it was on average within
0.5 % of the y = 0 start or above it. L-BFGS-B's first step is a unit projected-gradient
step, so where the gradient at y₀ is large against the box the iterate reaches a vertex at
once and stops at that KKT vertex. The box maximum of a non-separable quadratic is NP-hard,
so a run may end at a vertex that is only a local maximum (a random 8-dim subspace of a
diagonal 60-dim quadratic: 64 % of the maximum with one start, 91 % with 4):
``restarts`` = k runs k seeded starts (each with ``maxiter`` iterations, k times the cost)
and keeps the best. ``init="zero"`` (the paper-literal reading) starts at y = 0 and is kept
for comparison; it is flagged, not silently zero, when it cannot move.

**No-progress flag.** A run made no progress when it did no iteration (``nit`` = 0) or
never found a value above f at its own start. ``KeskarResult.no_progress`` is True when no
run made progress (the result is then f at the start point(s), a lower bound with no search
behind it); ``on_no_progress`` = ``"warn"`` (default, :class:`NoProgressWarning`),
``"raise"`` (:class:`NoProgressError`) or ``"ignore"``. ``maxiter=0`` evaluates the start(s)
only and is always flagged.

The reported maximum is the largest f among all points evaluated (each is inside the box),
and at least f(x).

The official repository has no sharpness code (``CLAIMS.md``); this follows the paper text.
The metric is not reparametrisation-invariant (Dinh et al. 2017, §4; ``reparametrize.py``).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree
from scipy.optimize import Bounds, minimize

from shared.curvature.operators import Static, join_callable, split_callable

HIGHEST = jax.lax.Precision.HIGHEST
Init = Literal["random", "zero"]
OnNoProgress = Literal["warn", "raise", "ignore"]
# gtol/ftol = 0: stop on the iteration budget, not on scipy's O(1)-scaled tolerances (module doc)
LBFGSB_OPTIONS: dict[str, float] = {"gtol": 0.0, "ftol": 0.0}
START_SCALE = 1e-2  # random start y₀ = δ u ⊙ b, u ~ U(−1, 1)ᵖ, δ = START_SCALE (module doc)


class NoProgressWarning(RuntimeWarning):
    """L-BFGS-B did not move above its start: the reported sharpness has no search behind it."""


class NoProgressError(RuntimeError):
    """Raised instead of :class:`NoProgressWarning` with ``on_no_progress="raise"``."""


@dataclass(frozen=True)
class KeskarResult:
    """Metric 2.1 and the diagnostics of its L-BFGS-B maximisation.

    ``sharpness`` = 100 (``max_loss`` − ``loss``)/(1 + ``loss``); ``dim`` is p (None: full
    space, A = I); ``nit``/``nfev`` are L-BFGS-B's iterations and function evaluations (summed
    over restarts; ``message`` is the best run's); ``y`` is the maximiser found (in the box,
    length p or n); ``bound`` the box half-widths. ``no_progress``: no run rose above f at its
    start (module docstring); ``start_loss``: f at the best run's start; ``evals``: jitted
    value-and-gradient passes actually made, f(x) included (the cost unit).
    """

    sharpness: float
    loss: float
    max_loss: float
    epsilon: float
    dim: int | None
    maxiter: int
    nit: int
    nfev: int
    init: str
    message: str
    y: np.ndarray
    bound: np.ndarray
    no_progress: bool = False
    start_loss: float = float("nan")
    evals: int = 0
    restarts: int = 1


@dataclass(frozen=True)
class Unravel:
    """flat → pytree for a fixed structure; hashable, so jitted code is reused across calls
    (``jax.flatten_util.ravel_pytree`` returns a new closure each time). Same order as it."""

    treedef: Any
    shapes: tuple[tuple[int, ...], ...]
    dtypes: tuple[str, ...]

    def __call__(self, flat: jax.Array) -> Any:
        sizes = [int(np.prod(s)) for s in self.shapes]
        parts = jnp.split(flat, np.cumsum(sizes)[:-1]) if sizes else []
        leaves = [p.reshape(s).astype(d) for p, s, d in zip(parts, self.shapes, self.dtypes, strict=True)]
        return jax.tree_util.tree_unflatten(self.treedef, leaves)


def ravel(params: Any) -> tuple[jax.Array, Unravel]:
    """(θ flattened in ``ravel_pytree`` order, its hashable inverse)."""
    leaves, treedef = jax.tree_util.tree_flatten(params)
    flat = ravel_pytree(params)[0]
    return flat, Unravel(treedef, tuple(tuple(np.shape(x)) for x in leaves), tuple(str(jnp.asarray(x).dtype)
                                                                                   for x in leaves))


@partial(jax.jit, static_argnames=("static", "unravel"))
def _value_and_grad(
    static: Static, unravel: Unravel, leaves: Any, x: jax.Array, a: jax.Array | None, y: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """f(x + A y) and its gradient in y (Aᵀ∇f), A = I when ``a`` is None."""
    fn = join_callable(static, leaves)

    def f(y: jax.Array) -> jax.Array:
        step = y if a is None else jnp.matmul(a, y, precision=HIGHEST)
        return fn(unravel(x + step))

    return jax.value_and_grad(f)(y)


def random_subspace(key: jax.Array, n: int, p: int, dtype: Any) -> jax.Array:
    """A ∈ R^{n×p} with i.i.d. N(0, 1) entries (our choice; the paper leaves it open)."""
    if not 1 <= p <= n:
        raise ValueError(f"subspace dimension must be in [1, {n}], got {p}")
    return jax.random.normal(key, (n, p), dtype)


@jax.jit
def box_bound(x: jax.Array, epsilon: float, a: jax.Array | None = None) -> jax.Array:
    """ε(|(A⁺x)_i| + 1) for each coordinate of y (A = I when ``a`` is None). Jitted: eagerly,
    ``a.T`` would first be copied (n × p floats; F1 size with p = 100: 0.9 s against 0.16 s)."""
    if a is None:
        z = x
    else:
        gram = jnp.matmul(a.T, a, precision=HIGHEST)
        z = jnp.linalg.solve(gram, jnp.matmul(a.T, x, precision=HIGHEST))
    return epsilon * (jnp.abs(z) + 1)


def keskar_sharpness(
    loss: Callable[[Any], jax.Array],
    params: Any,
    *,
    epsilon: float,
    dim: int | None = None,
    key: jax.Array | None = None,
    subspace: jax.Array | None = None,
    maxiter: int = 10,
    init: Init = "random",
    restarts: int = 1,
    start_scale: float = START_SCALE,
    on_no_progress: OnNoProgress = "warn",
) -> KeskarResult:
    """φ_{x,f}(ε, A) of Metric 2.1 (module docstring) at x = ``params``.

    ``loss(params) -> scalar`` is any jittable loss: an :class:`shared.landscape.Objective`
    (the full training set or a fixed subset, in its BatchNorm mode) or a plain function.
    ``dim=None`` is the full space (A = I); ``dim=p`` draws A (n×p, N(0, 1)) from ``key``,
    which is then required; or pass A itself as ``subspace``. ``key`` also draws the start
    points of ``init="random"`` (default; ``jax.random.key(0)`` when ``key`` is None), so the
    result is deterministic given it: y₀ = ``start_scale`` · u ⊙ b, u ~ U(−1, 1)ᵖ
    (``start_scale=1``: uniform over the whole box). ``restarts`` L-BFGS-B runs of ``maxiter``
    iterations each (``init="zero"``: the first run starts at y = 0, the others at random
    points), the best kept.
    ``on_no_progress``: what to do when no run rose above its start (``no_progress``).
    Cost: ≈ 1 + Σ nfev value-and-gradient passes (``evals``). Memory: A costs n·p floats
    (p = 100: 400 bytes per parameter in float32).
    """
    if epsilon <= 0:
        raise ValueError(f"epsilon must be positive, got {epsilon}")
    if init not in ("random", "zero"):
        raise ValueError(f"init must be 'random' or 'zero', got {init!r}")
    if not 0 < start_scale <= 1:
        raise ValueError(f"start_scale must be in (0, 1], got {start_scale}")
    if on_no_progress not in ("warn", "raise", "ignore"):
        raise ValueError(f"on_no_progress must be 'warn', 'raise' or 'ignore', got {on_no_progress!r}")
    if maxiter < 0 or restarts < 1:
        raise ValueError(f"need maxiter >= 0 and restarts >= 1, got {maxiter}, {restarts}")
    if dim is not None and subspace is None and key is None:
        raise ValueError("a key is needed for a random subspace")
    x, unravel = ravel(params)
    static, leaves = split_callable(loss)
    a = None
    if subspace is not None:
        a = jnp.asarray(subspace, x.dtype)
        if a.ndim != 2 or a.shape[0] != x.size:
            raise ValueError(f"subspace must be [{x.size}, p], got {a.shape}")
        dim = int(a.shape[1])
    elif dim is not None:
        a = random_subspace(jax.random.fold_in(key, 0), x.size, int(dim), x.dtype)  # type: ignore[arg-type]
    start_key = jax.random.key(0) if key is None else key
    bound = np.asarray(box_bound(x, epsilon, a), np.float64)

    def evaluate(y: np.ndarray) -> tuple[float, np.ndarray]:
        out, grad = _value_and_grad(static, unravel, leaves, x, a, jnp.asarray(y, x.dtype))
        return float(out), np.asarray(grad, np.float64)

    f0, g0 = evaluate(np.zeros_like(bound))
    evals = 1
    best: dict[str, Any] = {"value": f0, "y": np.zeros_like(bound)}

    def run(y0: np.ndarray) -> tuple[float, float, int, int, str]:
        """One L-BFGS-B run from y0: (f at y0, best f of this run, nit, nfev, message)."""
        nonlocal evals
        seen: dict[str, float] = {"start": np.nan, "top": -np.inf}

        def negative(y: np.ndarray) -> tuple[float, np.ndarray]:
            nonlocal evals
            y = np.clip(y, -bound, bound)  # L-BFGS-B stays feasible; clip guards rounding
            if not y.any():
                value, grad = f0, g0  # y = 0: f(x) and its gradient are already known
            else:
                value, grad = evaluate(y)
                evals += 1
            if np.isnan(seen["start"]):
                seen["start"] = value
            seen["top"] = max(seen["top"], value)
            if value > best["value"]:
                best["value"], best["y"] = value, y.copy()
            return -value, -grad

        if maxiter == 0:  # evaluate the start only (scipy would still do one iteration)
            negative(y0)
            return seen["start"], seen["top"], 0, 1, "maxiter = 0: start point evaluated only"
        # scipy converts the bounds with Python loops over n: a fixed ~3 µs per coordinate per call
        res = minimize(negative, y0, jac=True, method="L-BFGS-B", bounds=Bounds(-bound, bound),
                       options={"maxiter": int(maxiter), **LBFGSB_OPTIONS})
        return seen["start"], seen["top"], int(res.nit), int(res.nfev), str(res.message)

    runs = []
    for r in range(int(restarts)):
        k = jax.random.fold_in(start_key, 1 + r)  # fold_in(key, 0) draws A; starts use 1, 2, …
        if init == "zero" and r == 0:
            y0 = np.zeros_like(bound)
        else:
            u = jax.random.uniform(k, bound.shape, jnp.float32, -1, 1)
            y0 = float(start_scale) * np.asarray(u, np.float64) * bound
        runs.append(run(y0))
    progressed = [nit > 0 and top > start for start, top, nit, _, _ in runs]
    no_progress = not any(progressed)
    chosen = max(range(len(runs)), key=lambda i: runs[i][1])
    max_loss = float(best["value"])
    if no_progress and on_no_progress != "ignore":
        text = (f"Keskar Metric 2.1: L-BFGS-B made no progress (init={init!r}, nit="
                f"{[r[2] for r in runs]}, messages {[r[4] for r in runs]}); the sharpness "
                f"{100.0 * (max_loss - f0) / (1.0 + f0):.3g} is only f at the start point(s)")
        if on_no_progress == "raise":
            raise NoProgressError(text)
        warnings.warn(text, NoProgressWarning, stacklevel=2)
    return KeskarResult(
        sharpness=100.0 * (max_loss - f0) / (1.0 + f0),
        loss=f0,
        max_loss=max_loss,
        epsilon=float(epsilon),
        dim=None if dim is None else int(dim),
        maxiter=int(maxiter),
        nit=sum(r[2] for r in runs),
        nfev=sum(r[3] for r in runs),
        init=init,
        message=runs[chosen][4],
        y=best["y"],
        bound=bound,
        no_progress=no_progress,
        start_loss=float(runs[chosen][0]),
        evals=evals,
        restarts=int(restarts),
    )
