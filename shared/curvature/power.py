r"""Power iteration for the extreme eigenvalue of a symmetric operator (von Mises 1929).

v_{t+1} = B v_t / ‖B v_t‖ with B = A − σI converges to the eigenvector of the eigenvalue
of B largest in magnitude, at rate |λ₂(B)/λ₁(B)| per step; the Rayleigh quotient
μ = vᵀBv then gives λ = μ + σ. Without shift that is λ_max when λ_max ≥ |λ_min| (the
usual case for a Hessian near a minimum). For λ_min, shift by σ ≥ (λ_max + λ_min)/2, e.g.
σ = an estimate of λ_max: then A − σI ⪯ 0 and its dominant eigenvalue is λ_min − σ.

The loop stops when the residual ‖Bv − μv‖ ≤ rtol·|μ| (some eigenvalue of A then lies within
rtol·|μ| of λ, and the eigenvalue error is O(residual²/gap)) or after ``max_iters`` matvecs.
Lanczos (``lanczos.py``) reaches the same accuracy in far fewer matvecs; power iteration
is here as the simple, independent baseline.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import jax
import jax.numpy as jnp

from shared.curvature.operators import Operator, shifted


@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class PowerResult:
    """λ = μ + shift, its unit eigenvector, residual ‖Av − λv‖, and convergence diagnostics."""

    eigenvalue: jax.Array
    eigenvector: jax.Array
    residual: jax.Array
    converged: jax.Array
    num_matvecs: jax.Array
    shift: jax.Array


@partial(jax.jit, static_argnames=("max_iters",))
def power_iteration(
    op: Operator,
    key: jax.Array,
    *,
    max_iters: int = 100,
    rtol: float = 1e-4,
    shift: float | jax.Array = 0.0,
    v0: jax.Array | None = None,
) -> PowerResult:
    """Dominant eigenpair of A − σI by power iteration, reported for A (module docstring).

    Starts from ``v0`` or a Gaussian vector drawn with ``key``.
    """
    b = shifted(op, shift)
    v = jax.random.normal(key, (op.size,), op.dtype) if v0 is None else v0.astype(op.dtype)
    v = v / jnp.linalg.norm(v)
    zero, inf = jnp.zeros((), op.dtype), jnp.asarray(jnp.inf, op.dtype)

    def keep_going(state: tuple) -> jax.Array:
        i, _, _, mu, res = state
        return (i < max_iters) & ~(res <= rtol * jnp.abs(mu))

    def step(state: tuple) -> tuple:
        i, v, _, _, _ = state
        w = b.matvec(v)
        mu = jnp.vdot(v, w)
        res = jnp.linalg.norm(w - mu * v)
        norm = jnp.linalg.norm(w)
        return i + 1, w / jnp.where(norm > 0, norm, 1), v, mu, res

    init = (jnp.zeros((), jnp.int32), v, v, zero, inf)
    i, _, v, mu, res = jax.lax.while_loop(keep_going, step, init)
    sigma = jnp.asarray(shift, op.dtype)
    return PowerResult(mu + sigma, v, res, res <= rtol * jnp.abs(mu), i, sigma)
