r"""Curvature-based sharpness measures, and the scale-invariant adaptive sharpness.

- **Top Hessian eigenvalue** λ_max(∇²L(θ)) (Keskar et al. 2017 §2.1: sharp minimisers have
  "a significant number of large positive eigenvalues"; Dinh et al. 2017 §3–4 show it can be
  made arbitrarily large by reparametrisation) — Lanczos from ``shared.curvature``.
- **Hessian trace** tr ∇²L(θ) (like ‖∇²L‖₂, unbounded under Dinh et al.'s α-scalings) —
  Hutch++ (Meyer et al. 2021) or Hutchinson (1990) from ``shared.curvature``.
- **Adaptive sharpness** (Kwon, Kim, Park, Choi, "ASAM: Adaptive sharpness-aware
  minimization for scale-invariant learning of deep neural networks", ICML 2021, §3):

      S^{max}_ρ(w) = max_{‖T_w⁻¹ ε‖₂ ≤ ρ} L(w + ε) − L(w),     T_w = diag(|w|) + η I,

  with the element-wise normalisation operator T_w (Kwon et al. §3: η = 0 makes the measure
  invariant to any rescaling that leaves the function unchanged and multiplies weights
  element-wise, such as Dinh's α-scalings and per-filter scalings; ASAM's training uses a
  small η > 0 for stability, which breaks exact invariance). The inner maximum is **approximated by projected
  normalised gradient ascent** in u = T_w⁻¹ ε: u₀ = 0, u_{t+1} = Π_{‖u‖≤ρ}(u_t + ρ g_t/‖g_t‖)
  with g_t = T_w ∇L(w + T_w u_t). One step (``steps=1``) is exactly ASAM's first-order
  solution ε* = ρ T_w² ∇L / ‖T_w ∇L‖ (Kwon et al. §3–4, Algorithm 1); more steps can
  only raise the value, and the largest loss seen is reported. Each step is equivariant
  under the invariances above, so the approximation is scale-invariant too.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from shared.curvature.hvp import hessian_operator
from shared.curvature.lanczos import EigenResult, Loop, lanczos_eigs
from shared.curvature.operators import Operator, Static, callable_operator, join_callable, split_callable
from shared.curvature.trace import TraceResult, hutch_plus_plus, hutchinson
from shared.landscape.surface import Objective
from shared.sharpness.keskar import Unravel, ravel


def hessian_of(loss: Objective | Callable[[Any], jax.Array], params: Any) -> Operator:
    """∇²L(θ) as an operator on raveled θ: batched HVPs for an Objective, else a closure."""
    if isinstance(loss, Objective):
        return hessian_operator(loss.batch_loss, params, loss.data, reduction="mean",
                                unroll_batches=loss.unroll_batches)
    flat, unravel = ravel_pytree(params)
    grad = jax.grad(lambda v: loss(unravel(v)))
    return callable_operator(lambda v: jax.jvp(grad, (flat,), (v.astype(flat.dtype),))[1], flat.size, flat.dtype)


def top_eigenvalues(
    loss: Objective | Callable[[Any], jax.Array], params: Any, key: jax.Array, *, k: int = 1,
    num_steps: int = 20, rtol: float = 1e-4, loop: Loop = "auto",
) -> EigenResult:
    """The k largest Hessian eigenvalues (descending) from one Lanczos run, with residuals."""
    op = hessian_of(loss, params)
    return lanczos_eigs(op, key, k=k, num_steps=min(num_steps, op.size), rtol=rtol, loop=loop).top


def hessian_trace(
    loss: Objective | Callable[[Any], jax.Array], params: Any, key: jax.Array, *, num_matvecs: int = 30,
    method: Literal["hutch++", "hutchinson"] = "hutch++",
) -> TraceResult:
    """tr ∇²L(θ) by Hutch++ (``num_matvecs`` a multiple of 3) or Hutchinson, with its stderr."""
    op = hessian_of(loss, params)
    if method == "hutch++":
        return hutch_plus_plus(op, key, num_matvecs=num_matvecs)
    if method == "hutchinson":
        return hutchinson(op, key, num_probes=num_matvecs)
    raise ValueError(f"method must be 'hutch++' or 'hutchinson', got {method!r}")


@partial(jax.jit, static_argnames=("static", "unravel"))
def _value_and_grad_u(
    static: Static, unravel: Unravel, leaves: Any, w: jax.Array, t: jax.Array, u: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """L(w + T u) and its gradient in u, T ∇L(w + T u)."""
    fn = join_callable(static, leaves)
    return jax.value_and_grad(lambda u: fn(unravel(w + t * u)))(u)


@jax.jit
def _ascent_step(u: jax.Array, g: jax.Array, rho: jax.Array) -> jax.Array:
    """Π_{‖u‖≤ρ}(u + ρ g/‖g‖)."""
    norm = jnp.linalg.norm(g)
    u = u + rho * g / jnp.where(norm > 0, norm, 1)
    unorm = jnp.linalg.norm(u)
    return u * jnp.minimum(1.0, rho / jnp.where(unorm > 0, unorm, 1))


@dataclass(frozen=True)
class AdaptiveSharpness:
    """S^{max}_ρ(w) ≈ ``max_loss`` − ``loss`` after ``steps`` ascent steps (module docstring)."""

    value: float
    loss: float
    max_loss: float
    rho: float
    eta: float
    steps: int
    losses: tuple[float, ...]


def _ascent_losses(loss: Objective | Callable[[Any], jax.Array], params: Any, *, radius: float, steps: int,
                   scale: Callable[[jax.Array], jax.Array]) -> list[float]:
    """L(w + T u) along ``steps`` projected normalised-gradient ascent steps in ‖u‖₂ ≤ ``radius``
    from u = 0, with T = diag(``scale(w)``); the first entry is L(w)."""
    w, unravel = ravel(params)
    static, leaves = split_callable(loss)
    t = scale(w)
    u = jnp.zeros_like(w)
    value0, g = _value_and_grad_u(static, unravel, leaves, w, t, u)
    losses = [float(value0)]
    for _ in range(steps):
        u = _ascent_step(u, g, jnp.asarray(radius, w.dtype))
        value, g = _value_and_grad_u(static, unravel, leaves, w, t, u)
        losses.append(float(value))
    return losses


def adaptive_sharpness(
    loss: Objective | Callable[[Any], jax.Array], params: Any, *, rho: float, steps: int = 1, eta: float = 0.0,
) -> AdaptiveSharpness:
    """Kwon et al.'s adaptive sharpness with T_w = |w| + η, by ``steps`` projected ascent steps."""
    if rho <= 0 or steps < 1:
        raise ValueError(f"need rho > 0 and steps >= 1, got {rho=}, {steps=}")
    losses = _ascent_losses(loss, params, radius=rho, steps=steps,
                            scale=lambda w: jnp.abs(w) + jnp.asarray(eta, w.dtype))
    max_loss = max(losses)
    return AdaptiveSharpness(max_loss - losses[0], losses[0], max_loss, float(rho), float(eta), int(steps),
                             tuple(losses))


def ball_sharpness(loss: Objective | Callable[[Any], jax.Array], params: Any, *, radius: float, steps: int) -> float:
    """Dinh et al. (2017) §4.2's Euclidean-ball ε-sharpness in Keskar et al.'s units,
    max_{‖δ‖₂ ≤ ε} [L(θ + δ) − L(θ)] / (1 + L(θ)) × 100, the maximum approximated from below by
    ``steps`` projected normalised-gradient ascent steps from δ = 0 (the adaptive-sharpness ascent
    with T = I)."""
    if radius <= 0 or steps < 1:
        raise ValueError(f"need radius > 0 and steps >= 1, got {radius=}, {steps=}")
    losses = _ascent_losses(loss, params, radius=radius, steps=steps, scale=jnp.ones_like)
    return 100.0 * (max(losses) - losses[0]) / (1.0 + losses[0])
