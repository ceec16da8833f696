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
L-BFGS-B" (Byrd et al. 1995): ``scipy.optimize.minimize(method="L-BFGS-B",
options={"maxiter": 10})`` on −f(x + Ay), with value and gradient (Aᵀ∇f) from one jitted
JAX function. The paper does not say where the search starts: ``init="zero"`` (default)
starts at y = 0, i.e. at x (at an exact critical point the gradient vanishes and the search
stops there; at a trained network's minimum it is small but not zero); ``init="random"``
starts at a seeded uniform point of the box. The reported maximum is the largest f among
all points L-BFGS-B evaluated (each is inside the box), and at least f(x).

The official repository has no sharpness code (``CLAIMS.md``); this follows the paper text.
The metric is not reparametrisation-invariant (Dinh et al. 2017, §4; ``reparametrize.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree
from scipy.optimize import Bounds, minimize

from shared.curvature.operators import Static

HIGHEST = jax.lax.Precision.HIGHEST
Init = Literal["zero", "random"]


@dataclass(frozen=True)
class KeskarResult:
    """Metric 2.1 and the diagnostics of its L-BFGS-B maximisation.

    ``sharpness`` = 100 (``max_loss`` − ``loss``)/(1 + ``loss``); ``dim`` is p (None: full
    space, A = I); ``nit``/``nfev`` are L-BFGS-B's iterations and function evaluations;
    ``y`` is the maximiser found (in the box, length p or n); ``bound`` the box half-widths.
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


def split_callable(fn: Any) -> tuple[Static, Any]:
    """(static part, traced leaves) of a loss: a registered pytree (e.g. an ``Objective``) is
    flattened so its arrays are jit arguments; a plain function is static as a whole."""
    leaves, treedef = jax.tree_util.tree_flatten(fn)
    if len(leaves) == 1 and leaves[0] is fn:
        return Static(fn), None
    return Static(treedef), leaves


def join_callable(static: Static, leaves: Any) -> Callable[[Any], jax.Array]:
    """Inverse of :func:`split_callable` (inside traced code)."""
    if leaves is None:
        return static.value
    return jax.tree_util.tree_unflatten(static.value, leaves)


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


def box_bound(x: jax.Array, epsilon: float, a: jax.Array | None = None) -> jax.Array:
    """ε(|(A⁺x)_i| + 1) for each coordinate of y (A = I when ``a`` is None)."""
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
    init: Init = "zero",
) -> KeskarResult:
    """φ_{x,f}(ε, A) of Metric 2.1 (module docstring) at x = ``params``.

    ``loss(params) -> scalar`` is any jittable loss: an :class:`shared.landscape.Objective`
    (the full training set or a fixed subset, in its BatchNorm mode) or a plain function.
    ``dim=None`` is the full space (A = I); ``dim=p`` draws A (n×p, N(0, 1)) from ``key``,
    which is then required; or pass A itself as ``subspace``. ``key`` also draws the start
    point for ``init="random"``.
    Memory: A costs n·p floats (p = 100: 400 bytes per parameter in float32).
    """
    if epsilon <= 0:
        raise ValueError(f"epsilon must be positive, got {epsilon}")
    if init not in ("zero", "random"):
        raise ValueError(f"init must be 'zero' or 'random', got {init!r}")
    if ((dim is not None and subspace is None) or init == "random") and key is None:
        raise ValueError("a key is needed for a random subspace or a random start")
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
    bound = np.asarray(box_bound(x, epsilon, a), np.float64)

    best: dict[str, Any] = {"value": -np.inf, "y": np.zeros_like(bound)}

    def negative(y: np.ndarray) -> tuple[float, np.ndarray]:
        y = np.clip(y, -bound, bound)  # L-BFGS-B stays feasible; clip guards rounding
        out, grad = _value_and_grad(static, unravel, leaves, x, a, jnp.asarray(y, x.dtype))
        value = float(out)
        if value > best["value"]:
            best["value"], best["y"] = value, y.copy()
        return -value, -np.asarray(grad, np.float64)

    f0 = float(_value_and_grad(static, unravel, leaves, x, a, jnp.zeros(bound.shape, x.dtype))[0])
    if init == "random":
        u = np.asarray(jax.random.uniform(jax.random.fold_in(key, 1), bound.shape, jnp.float32, -1, 1))  # type: ignore[arg-type]
        y0 = u.astype(np.float64) * bound
    else:
        y0 = np.zeros_like(bound)
    # scipy converts the bounds with Python loops over n: a fixed ~3 µs per coordinate per call
    res = minimize(negative, y0, jac=True, method="L-BFGS-B", bounds=Bounds(-bound, bound),
                   options={"maxiter": int(maxiter)})
    max_loss = max(float(best["value"]), f0)
    y = best["y"] if best["value"] >= f0 else np.zeros_like(bound)
    return KeskarResult(
        sharpness=100.0 * (max_loss - f0) / (1.0 + f0),
        loss=f0,
        max_loss=max_loss,
        epsilon=float(epsilon),
        dim=None if dim is None else int(dim),
        maxiter=int(maxiter),
        nit=int(res.nit),
        nfev=int(res.nfev),
        init=init,
        message=str(res.message),
        y=y,
        bound=bound,
    )
