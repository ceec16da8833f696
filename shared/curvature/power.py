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
from typing import Literal

import jax
import jax.numpy as jnp

from shared.curvature.failures import require_finite
from shared.curvature.lanczos import resolve_loop
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


def _iterate(b: Operator, v: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(B v / ‖B v‖, μ = vᵀBv, ‖Bv − μv‖) for a unit v."""
    w = b.matvec(v)
    mu = jnp.vdot(v, w)
    norm = jnp.linalg.norm(w)
    return w / jnp.where(norm > 0, norm, 1), mu, jnp.linalg.norm(w - mu * v)


def _start(op: Operator, key: jax.Array, v0: jax.Array | None) -> jax.Array:
    v = jax.random.normal(key, (op.size,), op.dtype) if v0 is None else v0.astype(op.dtype)
    return v / jnp.linalg.norm(v)


@partial(jax.jit, static_argnames=("max_iters",))
def _power_while(
    op: Operator, key: jax.Array, max_iters: int, rtol: float, shift: jax.Array,
    v0: jax.Array | None,
) -> tuple[jax.Array, ...]:
    b = shifted(op, shift)
    v = _start(op, key, v0)

    def keep_going(state: tuple) -> jax.Array:
        i, _, _, mu, res = state
        return (i < max_iters) & ~(res <= rtol * jnp.abs(mu))

    def step(state: tuple) -> tuple:
        i, v, _, _, _ = state
        v_next, mu, res = _iterate(b, v)
        return i + 1, v_next, v, mu, res

    zero, inf = jnp.zeros((), op.dtype), jnp.asarray(jnp.inf, op.dtype)
    init = (jnp.zeros((), jnp.int32), v, v, zero, inf)
    i, _, v, mu, res = jax.lax.while_loop(keep_going, step, init)
    return i, v, mu, res


_start_jit = jax.jit(_start)
_iterate_jit = jax.jit(lambda op, shift, v: _iterate(shifted(op, shift), v))


def power_iteration(
    op: Operator,
    key: jax.Array,
    *,
    max_iters: int = 100,
    rtol: float = 1e-4,
    shift: float | jax.Array = 0.0,
    v0: jax.Array | None = None,
    loop: Literal["auto", "fori", "python"] = "auto",
) -> PowerResult:
    """Dominant eigenpair of A − σI by power iteration, reported for A (module docstring).

    Starts from ``v0`` or a Gaussian vector drawn with ``key``. ``loop="fori"`` runs a
    jitted ``lax.while_loop``; ``"python"`` a host loop over a jitted step (conv nets on
    CPU, see ``lanczos.py``); ``"auto"`` chooses (``lanczos.resolve_loop``).
    """
    if max_iters < 1:
        raise ValueError(f"max_iters must be >= 1, got {max_iters}")
    sigma = jnp.asarray(shift, op.dtype)
    loop = resolve_loop(loop, op)
    if loop == "fori":
        i, v, mu, res = _power_while(op, key, max_iters, rtol, sigma, v0)
    elif loop == "python":
        i, v_next = jnp.zeros((), jnp.int32), _start_jit(op, key, v0)
        for count in range(1, max_iters + 1):
            v = v_next
            v_next, mu, res = _iterate_jit(op, sigma, v)
            i = jnp.asarray(count, jnp.int32)
            if float(res) <= rtol * abs(float(mu)):
                break
    else:
        raise ValueError(f"loop must be 'auto', 'fori' or 'python', got {loop!r}")
    require_finite("power iteration", mu)
    return PowerResult(mu + sigma, v, res, res <= rtol * jnp.abs(mu), i, sigma)
