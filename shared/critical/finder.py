"""A critical-point finder for small networks: Newton-MR and gradient-norm minimization from many
starts (vmapped), and every returned point described by its exact Hessian.

Landscape claims about critical points (Pennington & Bahri 2017: index vs energy; Dauphin et al.
2014: saddles, not minima) need the points found numerically. Frye et al. (2019, "Numerically
recovering the critical points of a deep linear autoencoder"; 2021, "Critical point-finding methods
reveal gradient-flat regions of deep network losses") showed that the usual finders often stop at
*gradient-flat* points: ‖∇L‖ small but not zero, with the gradient in the Hessian's (near-)kernel,
where Newton's step cannot cancel it. So every point this module returns says what it is.

Methods (``loss`` maps a flat float64 parameter vector to a scalar; starts are rows of a matrix;
everything is one ``jax.jit(jax.vmap(...))`` over the starts):

- **Newton-MR** (Roosta, Liu, Xu & Mahoney 2018, "Newton-MR: Newton's method without smoothness
  or convexity"; the finder of Frye et al.): the step p = −MINRES(H, g), with H applied by
  Hessian-vector products (forward-over-reverse, ``jax.jvp`` of ``jax.grad``), and a backtracking
  (Armijo) line search on ½‖∇L‖²: the largest α in {1, ½, ¼, …} with
  ‖∇L(x + αp)‖² ≤ ‖g‖² + 2ρα⟨Hg, p⟩. MINRES is ``minres`` below: JAX has no MINRES
  (``jax.scipy.sparse.linalg`` offers cg, gmres and bicgstab only) and SciPy's
  (``scipy.sparse.linalg.minres``) cannot be vmapped, so this is a transcription of SciPy's
  unpreconditioned MINRES (Paige & Saunders 1975) into a ``lax.while_loop``; the tests check it
  against ``scipy.sparse.linalg.minres`` (used through a ``LinearOperator``) and a dense solve.
  On a singular, incompatible system (g ∉ range H: a gradient-flat point) MINRES stops on its
  second test ‖H r‖/(‖H‖‖r‖) ≤ rtol, which is what lets Newton-MR make progress there at all.
- **Gradient-norm minimization** (the baseline; "GNM" in Frye et al.): gradient descent on
  ½‖∇L‖², whose gradient is H g (one Hessian-vector product), with the same line search.

Each returned point carries (``describe``, from the dense Hessian ``jax.hessian``, float64,
``numpy.linalg.eigh``): the loss, ‖∇L‖, the relative gradient ‖∇L‖/(|L| + 1) (the project's
stationarity measure, as in ``shared.training.critical``), the index (the count of eigenvalues
< −tol, tol = ``zero_rtol``·max|λ|, as ``shared.curvature.exact.inertia``) and its fraction of
the parameters, the near-zero count (|λ| ≤ tol), and two measures of how the gradient sits in the
Hessian's eigenbasis:

- ``hg_ratio`` = ‖H g‖/(‖H‖₂ ‖g‖) ∈ [0, 1], Frye et al.'s criterion as a number: small when g lies
  in the near-kernel;
- ``kernel_fraction`` = ‖P₀ g‖/‖g‖, P₀ the projector on the eigenvectors with |λ| ≤ tol: also the
  relative residual ‖Hp* + g‖/‖g‖ of the least-squares Newton step p* = −H⁺g (what Newton-MR's
  subproblem cannot remove).

A point is (``category``):

- ``critical``: ‖∇L‖/(|L| + 1) ≤ ``critical_rtol``;
- ``gradient-flat``: not critical, yet ``hg_ratio`` ≤ ``flat_rtol`` (the gradient lies in the
  near-kernel: a point where the finder stalls, not a critical point);
- ``not converged``: neither (the search ran out of steps on a slope);
- ``diverged``: not finite.

Only ``critical`` points are evidence about critical points; a claim built on a search reports the
other categories' shares beside it.

Saddle-free Newton (Dauphin et al. 2014, §5): the step −|H|⁻¹ g with |H| = V|Λ|Vᵀ (``sfn_step``,
exact from the eigendecomposition, with an optional damping added to |Λ|; eigenvalues below
``floor`` are raised to it), and ``sfn_krylov_step``, the same rescaling inside the k-dimensional
Lanczos subspace of (H, g) for nets too large for a dense Hessian.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from shared import parallel
from shared.curvature.exact import inertia

FlatLoss = Callable[[jax.Array], jax.Array]

CRITICAL_RTOL = 1e-8  # ‖∇L‖/(|L| + 1) at or below: a critical point (float64)
ZERO_RTOL = 1e-9  # |λ| ≤ ZERO_RTOL·max|λ|: a zero eigenvalue (shared.curvature.exact.inertia's default)
FLAT_RTOL = 1e-3  # ‖Hg‖/(‖H‖‖g‖) at or below (and not critical): gradient-flat

CRITICAL = "critical"
GRADIENT_FLAT = "gradient-flat"
NOT_CONVERGED = "not converged"
DIVERGED = "diverged"
CATEGORIES = (CRITICAL, GRADIENT_FLAT, NOT_CONVERGED, DIVERGED)


# --- MINRES -------------------------------------------------------------------------------------

def minres(matvec: Callable[[jax.Array], jax.Array], b: jax.Array, *, rtol: float = 1e-10,
           maxiter: int = 100, kernel_rtol: float = 1e-10) -> tuple[jax.Array, jax.Array, jax.Array]:
    """x ≈ argmin ‖A x − b‖ over the Krylov space of (A, b), A symmetric (possibly indefinite and
    singular), by MINRES (Paige & Saunders 1975; a line-by-line transcription of the
    unpreconditioned loop of ``scipy.sparse.linalg.minres``). Traceable, so vmappable and jittable.

    Stops when ‖r‖/(‖A‖‖x‖ + ‖b‖) ≤ rtol, or ‖A r‖/(‖A‖‖r‖) ≤ rtol (the least-squares test, which
    ends it on an incompatible system), or the Lanczos vectors break down (the Krylov space is
    invariant: the answer is exact there), or after ``maxiter`` iterations.

    One departure from SciPy, for singular systems: when the new diagonal entry γ of the QR factor
    of the Lanczos matrix is ≤ ``kernel_rtol``·‖A‖, the remaining residual lies in the (near-)kernel
    of A; SciPy (and textbook MINRES) then divides by γ ≈ 0 and returns a vector of size 1e12 (on
    an incompatible system it does, at any rtol: the tests show it). Here the iterate before that
    step is kept and the loop stops: on an exactly singular system it is a least-squares solution,
    A⁺b plus a kernel component the Krylov space carried from b (MINRES-QLP would also remove
    that, Choi, Paige & Saunders 2011; in Newton-MR it is a step along −g's flat part, which does
    not change the linearized gradient g + Hp); on a nearly singular one the same with the
    eigenvalues below the threshold treated as zero.
    Returns (x, iterations, ‖r‖/‖b‖ as MINRES estimates it).
    """
    dtype = b.dtype
    eps = jnp.finfo(dtype).eps
    bnorm = jnp.linalg.norm(b)
    zero = jnp.zeros_like(b)
    f = lambda v: jnp.asarray(v, dtype)
    # state: itn, done, x, r1, r2, y, w, w2, beta, oldb, dbar, epsln, phibar, rhs1, rhs2, tnorm2, cs, sn
    init = (jnp.asarray(0), bnorm == 0, zero, b, b, b, zero, zero, bnorm, f(0.0), f(0.0), f(0.0), bnorm,
            bnorm, f(0.0), f(0.0), f(-1.0), f(0.0))

    def cond(s: tuple) -> jax.Array:
        return (~s[1]) & (s[0] < maxiter)

    def body(s: tuple) -> tuple:
        itn, _, x, r1, r2, y, w, w2, beta, oldb, dbar, epsln, phibar, rhs1, rhs2, tnorm2, cs, sn = s
        itn = itn + 1
        v = y / beta
        y = matvec(v)
        y = jnp.where(itn >= 2, y - (beta / jnp.where(oldb == 0, 1.0, oldb)) * r1, y)
        alfa = jnp.vdot(v, y)
        y = y - (alfa / beta) * r2
        r1, r2 = r2, y
        oldb, beta = beta, jnp.linalg.norm(y)
        tnorm2 = tnorm2 + alfa**2 + oldb**2 + beta**2
        oldeps = epsln
        delta = cs * dbar + sn * alfa
        gbar = sn * dbar - cs * alfa
        epsln = sn * beta
        dbar = -cs * beta
        root = jnp.hypot(gbar, dbar)
        arnorm = phibar * root
        gamma_raw = jnp.hypot(gbar, beta)
        singular = gamma_raw <= kernel_rtol * jnp.sqrt(tnorm2)
        gamma = jnp.maximum(gamma_raw, eps)
        cs, sn = gbar / gamma, beta / gamma
        phi = cs * phibar
        phibar = jnp.where(singular, phibar, sn * phibar)
        w1, w2 = w2, w
        w = (v - oldeps * w1 - delta * w2) / gamma
        x = jnp.where(singular, x, x + phi * w)
        z = rhs1 / gamma
        rhs1, rhs2 = rhs2 - delta * z, -epsln * z
        anorm = jnp.sqrt(tnorm2)
        ynorm = jnp.linalg.norm(x)
        test1 = phibar / (anorm * ynorm + bnorm)
        test2 = root / jnp.maximum(anorm, eps)
        del arnorm
        breakdown = beta <= eps * anorm  # an invariant Krylov space: x is exact there
        done = (test1 <= rtol) | (test2 <= rtol) | breakdown | singular | ~jnp.isfinite(phibar)
        beta_safe = jnp.where(breakdown, 1.0, beta)  # never divides by 0 on a later (masked) pass
        return (itn, done, x, r1, r2, y, w, w2, beta_safe, oldb, dbar, epsln, phibar, rhs1, rhs2, tnorm2, cs, sn)

    out = jax.lax.while_loop(cond, body, init)
    return out[2], out[0], out[12] / jnp.where(bnorm == 0, 1.0, bnorm)


# --- the searches ------------------------------------------------------------------------------

def _hvp(loss: FlatLoss, x: jax.Array, v: jax.Array) -> jax.Array:
    return jax.jvp(jax.grad(loss), (x,), (v,))[1]


@dataclass
class Search:
    """Where each start ended (rows), and how the squared gradient norm fell on the way."""

    points: np.ndarray  # [starts, P]
    steps: np.ndarray  # outer iterations taken per start
    grad_norm_history: np.ndarray  # [starts, max_steps + 1]: ‖∇L‖ after each outer step (held once stopped)
    method: str


def _line_search(loss: FlatLoss, x: jax.Array, g2: jax.Array, p: jax.Array, slope: jax.Array,
                 backtracks: int, rho: float) -> tuple[jax.Array, jax.Array]:
    """Largest α = 2^−k (k < backtracks) with ‖∇L(x + αp)‖² ≤ ‖g‖² + 2ρα·slope (slope = ⟨Hg, p⟩ < 0),
    all trials evaluated at once; none accepted: the smallest α (the last resort of Newton-MR)."""
    alphas = 0.5 ** jnp.arange(backtracks, dtype=x.dtype)
    trial_g2 = jax.vmap(lambda a: jnp.sum(jax.grad(loss)(x + a * p) ** 2))(alphas)
    ok = jnp.isfinite(trial_g2) & (trial_g2 <= g2 + 2 * rho * alphas * slope)
    k = jnp.where(jnp.any(ok), jnp.argmax(ok), backtracks - 1)
    return alphas[k], trial_g2[k]


def _search_one(loss: FlatLoss, x0: jax.Array, method: str, steps: int, gtol: float, minres_rtol: float,
                minres_maxiter: int, backtracks: int, rho: float, dense: bool, max_step: float,
                ) -> tuple[jax.Array, jax.Array, jax.Array]:
    history0 = jnp.zeros(steps + 1, x0.dtype)

    def stop(x: jax.Array, g2: jax.Array) -> jax.Array:
        return (jnp.sqrt(g2) <= gtol * (jnp.abs(loss(x)) + 1.0)) | ~jnp.isfinite(g2)

    def cond(s: tuple) -> jax.Array:
        k, x, g2, _, done = s
        return (k < steps) & ~done

    def body(s: tuple) -> tuple:
        k, x, g2, hist, _ = s
        g = jax.grad(loss)(x)
        hg = _hvp(loss, x, g)
        if method == "newton_mr":
            if dense:  # the Hessian formed once per step (P HVPs at once), MINRES on its products
                hm = jax.hessian(loss)(x)
                matvec: Callable[[jax.Array], jax.Array] = lambda v: hm @ v
            else:
                matvec = lambda v: _hvp(loss, x, v)
            p, _, _ = minres(matvec, -g, rtol=minres_rtol, maxiter=minres_maxiter)
            slope = jnp.vdot(hg, p)
            # MINRES's iterates satisfy ⟨Hg, p⟩ ≤ 0 in exact arithmetic; if rounding breaks it, fall back
            p = jnp.where(slope < 0, p, -hg)
            slope = jnp.where(slope < 0, slope, -jnp.vdot(hg, hg))
        else:  # gradient-norm minimization: steepest descent on ½‖g‖², scaled to a unit first trial
            p = -hg / jnp.maximum(jnp.linalg.norm(hg), jnp.finfo(x.dtype).tiny) * jnp.linalg.norm(g)
            slope = jnp.vdot(hg, p)
        shrink = jnp.minimum(1.0, max_step / jnp.maximum(jnp.linalg.norm(p), jnp.finfo(x.dtype).tiny))
        p, slope = shrink * p, shrink * slope  # a step longer than max_step is scaled down to it
        alpha, new_g2 = _line_search(loss, x, g2, p, slope, backtracks, rho)
        accept = new_g2 < g2
        x = jnp.where(accept, x + alpha * p, x)
        g2 = jnp.where(accept, new_g2, g2)
        hist = hist.at[k + 1].set(jnp.sqrt(g2))
        return k + 1, x, g2, hist, stop(x, g2) | ~accept

    g20 = jnp.sum(jax.grad(loss)(x0) ** 2)
    init = (jnp.asarray(0), x0, g20, history0.at[0].set(jnp.sqrt(g20)), stop(x0, g20))
    k, x, g2, hist, _ = jax.lax.while_loop(cond, body, init)
    # hold the last value over the steps not taken
    idx = jnp.arange(steps + 1)
    hist = jnp.where(idx <= k, hist, jnp.sqrt(g2))
    return x, k, hist


def search(loss: FlatLoss, starts: np.ndarray | jax.Array, *, method: str = "newton_mr", steps: int = 50,
           gtol: float = 1e-12, minres_rtol: float = 1e-10, minres_maxiter: int | None = None,
           backtracks: int = 12, rho: float = 1e-4, dense: bool = False, max_step: float = np.inf) -> Search:
    """Run ``method`` ("newton_mr" or "gradient_norm") from every row of ``starts`` (vmapped, jitted).

    A start stops when ‖∇L‖/(|L| + 1) ≤ ``gtol``, when no trial step lowers ‖∇L‖ (the line search
    failed: a gradient-flat point or the end of float64 precision), or after ``steps`` steps.
    ``minres_maxiter`` defaults to the dimension P (MINRES is exact in at most P steps).
    ``dense=True`` forms the Hessian once per Newton step (``jax.hessian``: P products at once) and
    runs MINRES on products with it: the same iterates, cheaper when P is a few hundred and MINRES
    needs many products; the default applies H by one Hessian-vector product per MINRES step.
    ``max_step`` caps the length of a step before the line search (near-singular Hessians make
    MINRES's step huge along their smallest eigenvalues; the line search then needs α below
    2^−backtracks); the default, no cap, is Newton-MR as published.
    """
    if method not in ("newton_mr", "gradient_norm"):
        raise ValueError(f"method must be 'newton_mr' or 'gradient_norm', got {method!r}")
    starts = jnp.asarray(starts)
    maxiter = int(starts.shape[1]) if minres_maxiter is None else int(minres_maxiter)
    run = jax.jit(jax.vmap(lambda x0: _search_one(loss, x0, method, steps, gtol, minres_rtol, maxiter,
                                                  backtracks, rho, dense, max_step)))
    # the starts split across devices (shared.parallel; the identity on one device): each start's
    # search runs on one device, the padding rows (copies of the last start) are dropped
    mesh = parallel.device_mesh()
    padded, count = parallel.pad_leading(starts, mesh.size)
    x, k, hist = parallel.unpad_leading(run(parallel.shard_leading(padded, mesh)), count)
    return Search(points=np.asarray(x), steps=np.asarray(k), grad_norm_history=np.asarray(hist), method=method)


# --- what each point is -------------------------------------------------------------------------

@dataclass
class CriticalPoints:
    """Per point (rows of ``points``); ``frame()`` gives them as a table."""

    points: np.ndarray
    loss: np.ndarray
    grad_norm: np.ndarray
    rel_grad: np.ndarray  # ‖∇L‖/(|L| + 1)
    index: np.ndarray  # number of eigenvalues < −tol
    index_fraction: np.ndarray  # index / P
    near_zero: np.ndarray  # number of |λ| ≤ tol
    hg_ratio: np.ndarray  # ‖Hg‖/(‖H‖₂‖g‖)
    kernel_fraction: np.ndarray  # ‖P₀g‖/‖g‖ = relative residual of the least-squares Newton step
    min_eigenvalue: np.ndarray
    max_abs_eigenvalue: np.ndarray
    category: np.ndarray  # object array of CATEGORIES
    eigenvalues: np.ndarray  # [points, P], ascending (NaN rows for diverged points)

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame({
            "loss": self.loss, "grad_norm": self.grad_norm, "rel_grad": self.rel_grad, "index": self.index,
            "index_fraction": self.index_fraction, "near_zero": self.near_zero, "hg_ratio": self.hg_ratio,
            "kernel_fraction": self.kernel_fraction, "min_eigenvalue": self.min_eigenvalue,
            "max_abs_eigenvalue": self.max_abs_eigenvalue, "category": self.category,
        })

    def counts(self) -> dict[str, int]:
        return {c: int(np.sum(self.category == c)) for c in CATEGORIES}


def hessians(loss: FlatLoss, points: np.ndarray | jax.Array, chunk: int = 256) -> np.ndarray:
    """Exact Hessians (``jax.hessian``) at every row of ``points``, vmapped in chunks, symmetrized."""
    points = jnp.asarray(points)
    fn = jax.jit(jax.vmap(jax.hessian(loss)))
    out = [np.asarray(fn(points[i:i + chunk]), dtype=np.float64) for i in range(0, points.shape[0], chunk)]
    h = np.concatenate(out) if out else np.zeros((0, points.shape[1], points.shape[1]))
    return 0.5 * (h + np.swapaxes(h, -1, -2))


def describe(loss: FlatLoss, points: np.ndarray | jax.Array, *, critical_rtol: float = CRITICAL_RTOL,
             zero_rtol: float = ZERO_RTOL, flat_rtol: float = FLAT_RTOL) -> CriticalPoints:
    """Everything the module docstring lists, for every row of ``points`` (float64, dense)."""
    points = jnp.asarray(points)
    values, grads = jax.jit(jax.vmap(jax.value_and_grad(loss)))(points)
    values = np.asarray(values, dtype=np.float64)
    grads = np.asarray(grads, dtype=np.float64)
    n, dim = grads.shape
    finite = np.isfinite(values) & np.isfinite(grads).all(axis=1) & np.isfinite(np.asarray(points)).all(axis=1)
    hs = hessians(loss, points)
    eig = np.full((n, dim), np.nan)
    index = np.zeros(n, dtype=int)
    near_zero = np.zeros(n, dtype=int)
    hg_ratio = np.full(n, np.nan)
    kernel_fraction = np.full(n, np.nan)
    gnorm = np.linalg.norm(grads, axis=1)
    for i in np.flatnonzero(finite & np.isfinite(hs).all(axis=(1, 2))):
        inert = inertia(hs[i], rtol=zero_rtol)
        lam, vec = np.linalg.eigh(hs[i])
        eig[i] = lam
        index[i], near_zero[i] = inert.negative, inert.zero
        if gnorm[i] > 0:
            coeff = vec.T @ grads[i]
            scale = max(float(np.max(np.abs(lam))), np.finfo(np.float64).tiny)
            hg_ratio[i] = float(np.linalg.norm(lam * coeff) / (scale * gnorm[i]))
            kernel_fraction[i] = float(np.linalg.norm(coeff[np.abs(lam) <= inert.tol]) / gnorm[i])
        else:
            hg_ratio[i] = kernel_fraction[i] = 0.0
    rel_grad = gnorm / (np.abs(values) + 1.0)
    finite &= np.isfinite(eig).all(axis=1)
    category = np.full(n, NOT_CONVERGED, dtype=object)
    critical = finite & (rel_grad <= critical_rtol)
    category[critical] = CRITICAL
    category[finite & ~critical & (hg_ratio <= flat_rtol)] = GRADIENT_FLAT
    category[~finite] = DIVERGED
    max_abs = np.full(n, np.nan)
    if dim:
        max_abs[finite] = np.max(np.abs(eig[finite]), axis=1)
    return CriticalPoints(
        points=np.asarray(points), loss=np.where(finite, values, np.nan), grad_norm=gnorm, rel_grad=rel_grad,
        index=index, index_fraction=index / max(dim, 1), near_zero=near_zero, hg_ratio=hg_ratio,
        kernel_fraction=kernel_fraction, min_eigenvalue=eig[:, 0] if dim else np.full(n, np.nan),
        max_abs_eigenvalue=max_abs,
        category=category, eigenvalues=eig)


def find_critical_points(loss: FlatLoss, starts: np.ndarray | jax.Array, *, method: str = "newton_mr",
                         critical_rtol: float = CRITICAL_RTOL, zero_rtol: float = ZERO_RTOL,
                         flat_rtol: float = FLAT_RTOL, **search_kw: Any) -> tuple[Search, CriticalPoints]:
    """``search`` from every start, then ``describe`` every end point."""
    found = search(loss, starts, method=method, **search_kw)
    return found, describe(loss, found.points, critical_rtol=critical_rtol, zero_rtol=zero_rtol,
                           flat_rtol=flat_rtol)


# --- saddle-free Newton ----------------------------------------------------------------------------

def sfn_step(hessian: np.ndarray | jax.Array, grad: np.ndarray | jax.Array, *, damping: float = 0.0,
             floor: float = 0.0) -> jax.Array:
    """−|H|⁻¹ g with |H| = V max(|Λ| + damping, floor) Vᵀ (Dauphin et al. 2014, Eq. 10; exact)."""
    h = jnp.asarray(hessian)
    lam, vec = jnp.linalg.eigh(0.5 * (h + h.T))
    scale = jnp.maximum(jnp.abs(lam) + damping, floor)
    return -vec @ ((vec.T @ jnp.asarray(grad)) / scale)


def lanczos_basis(matvec: Callable[[jax.Array], jax.Array], start: jax.Array, k: int) -> jax.Array:
    """An orthonormal basis (k columns) of the Krylov space of (H, start), with full
    reorthogonalization (small k: the subspace of saddle-free Newton's Krylov variant)."""
    q = start / jnp.linalg.norm(start)
    basis = jnp.zeros((start.shape[0], k), start.dtype).at[:, 0].set(q)
    for j in range(1, k):
        v = matvec(basis[:, j - 1])
        v = v - basis @ (basis.T @ v)
        v = v - basis @ (basis.T @ v)
        basis = basis.at[:, j].set(v / jnp.maximum(jnp.linalg.norm(v), jnp.finfo(v.dtype).tiny))
    return basis


def sfn_krylov_step(matvec: Callable[[jax.Array], jax.Array], grad: jax.Array, k: int, *, damping: float = 0.0,
                    floor: float = 0.0) -> jax.Array:
    """Saddle-free Newton inside the k-dimensional Krylov space of (H, g) (Dauphin et al. 2014, §6):
    V (|VᵀHV| + damping)⁻¹ Vᵀ g with −sign. With k = P it is the exact step (the tests check it)."""
    basis = lanczos_basis(matvec, grad, k)
    small = basis.T @ jax.vmap(matvec, in_axes=1, out_axes=1)(basis)
    return basis @ sfn_step(small, basis.T @ grad, damping=damping, floor=floor)
