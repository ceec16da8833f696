r"""Generalised Gauss–Newton split of the Hessian, H = G + R, for supervised losses.

For L(θ) = Σᵢ cᵢ ℓ(f(θ, xᵢ), yᵢ) with model outputs oᵢ = f(θ, xᵢ) ∈ R^C and cᵢ = 1/N
(``"mean"``) or 1 (``"sum"``), the chain rule splits the Hessian (Schraudolph 2002, "Fast
curvature matrix-vector products for second-order gradient descent"; Martens 2020,
"New insights and perspectives on the natural gradient method"; the split Sagun et al.
2017 study):

    H = Σᵢ cᵢ Jᵢᵀ (∇²_o ℓ) Jᵢ  +  Σᵢ cᵢ Σ_c (∂ℓ/∂o_c) ∇²_θ f_c(θ, xᵢ)  =  G + R,

with Jᵢ = ∂f(θ, xᵢ)/∂θ ∈ R^{C×P}. The output Hessians used here are

- ``"squared"``: ℓ(o, t) = ½‖o − t‖² (note the ½), ∇²_o ℓ = I;
- ``"cross_entropy"``: ℓ(z, y) = −log softmax(z)_y (integer labels, or −Σ_c y_c log softmax(z)_c
  for probability targets), ∇²_o ℓ = diag(p) − ppᵀ with p = softmax(z).

Both are PSD, hence so is G. G v = Jᵀ(∇²_o ℓ (J v)) costs one linearised forward pass
(``jax.linearize``: J v), one output-space Hessian-vector product, and its transpose
(``jax.linear_transpose``: Jᵀ u). Batches are ``(x, y)`` pairs in a :class:`Batches` and
combine exactly as in ``hvp.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from shared.curvature.hvp import Batches, Reduction, hessian_operator, reduce_batches
from shared.curvature.operators import Operator, Static, static_key

OutputLoss = Literal["cross_entropy", "squared"]
ModelFn = Callable[[Any, jax.Array], jax.Array]


def per_example_loss(kind: OutputLoss, outputs: jax.Array, targets: jax.Array) -> jax.Array:
    """ℓ(oᵢ, yᵢ) for each row of ``outputs`` [b, C] (module docstring for the formulas)."""
    if kind == "squared":
        return 0.5 * jnp.sum((outputs - targets) ** 2, axis=-1)
    if kind == "cross_entropy":
        logp = jax.nn.log_softmax(outputs, axis=-1)
        if jnp.issubdtype(targets.dtype, jnp.integer):
            return -jnp.take_along_axis(logp, targets[:, None], axis=-1)[:, 0]
        return -jnp.sum(targets * logp, axis=-1)
    raise ValueError(f"kind must be 'cross_entropy' or 'squared', got {kind!r}")


def _batch_loss(
    kind: OutputLoss, reduction: Reduction, outputs: jax.Array, y: jax.Array
) -> jax.Array:
    losses = per_example_loss(kind, outputs, y)
    return jnp.mean(losses) if reduction == "mean" else jnp.sum(losses)


@dataclass(frozen=True, eq=False)
class _ModelKeyed:
    """Equality and hash by (model identity, kind, reduction), so jitted code is reused."""

    model_fn: ModelFn
    kind: OutputLoss
    reduction: Reduction

    def _key(self) -> tuple:
        return (type(self), static_key(self.model_fn), self.kind, self.reduction)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _ModelKeyed) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())


@dataclass(frozen=True, eq=False)
class SupervisedLoss(_ModelKeyed):
    """``loss_fn(params, (x, y))``: mean or sum over the batch of ℓ(f(θ, x), y)."""

    def __call__(self, params: Any, batch: tuple[jax.Array, jax.Array]) -> jax.Array:
        x, y = batch
        return _batch_loss(self.kind, self.reduction, self.model_fn(params, x), y)


def supervised_loss(
    model_fn: ModelFn, kind: OutputLoss, reduction: Reduction = "mean"
) -> SupervisedLoss:
    """The loss whose Hessian :func:`ggn_operator` splits, for ``hessian_operator``."""
    return SupervisedLoss(model_fn, kind, reduction)


@dataclass(frozen=True, eq=False)
class _GGNMatvec(_ModelKeyed):
    """G v = Σ_b w_b J_bᵀ ∇²_o ℓ_b J_b v per batch (module docstring)."""

    unroll: bool | None = None

    def _key(self) -> tuple:
        return (*super()._key(), self.unroll)

    def __call__(self, args: tuple[Any, Batches], v: jax.Array) -> jax.Array:
        params, data = args
        flat, unravel = ravel_pytree(params)
        tangent = unravel(v.astype(flat.dtype))

        def batch_ggn(batch: tuple[jax.Array, jax.Array]) -> jax.Array:
            x, y = batch
            outputs, jvp = jax.linearize(lambda p: self.model_fn(p, x), params)
            loss = partial(_batch_loss, self.kind, self.reduction, y=y)
            h_jv = jax.jvp(jax.grad(loss), (outputs,), (jvp(tangent),))[1]
            (g,) = jax.linear_transpose(jvp, params)(h_jv)
            return ravel_pytree(g)[0]

        return reduce_batches(batch_ggn, data, self.reduction, self.unroll)


def ggn_operator(
    model_fn: ModelFn,
    params: Any,
    data: Batches,
    *,
    kind: OutputLoss,
    reduction: Reduction = "mean",
    unroll_batches: bool | None = None,
) -> Operator:
    """The Gauss–Newton matrix G as an :class:`Operator` on raveled parameters."""
    flat, _ = ravel_pytree(params)
    fn = _GGNMatvec(model_fn, kind, reduction, unroll_batches)
    return Operator(fn, (params, data), flat.size, flat.dtype)


def _residual_matvec(args: tuple[Operator, Operator], v: jax.Array) -> jax.Array:
    h, g = args
    return h.matvec(v) - g.matvec(v)


def residual_operator(
    model_fn: ModelFn,
    params: Any,
    data: Batches,
    *,
    kind: OutputLoss,
    reduction: Reduction = "mean",
    unroll_batches: bool | None = None,
) -> Operator:
    """R = H − G (the term weighted by the output gradients) as an :class:`Operator`."""
    loss = supervised_loss(model_fn, kind, reduction)
    h = hessian_operator(loss, params, data, reduction=reduction, unroll_batches=unroll_batches)
    g = ggn_operator(
        model_fn, params, data, kind=kind, reduction=reduction, unroll_batches=unroll_batches
    )
    return Operator(_residual_matvec, (h, g), h.size, h.dtype)


@partial(jax.jit, static_argnames=("model", "kind", "reduction"))
def _ggn_matrix(
    model: Static, params: Any, data: Batches, kind: OutputLoss, reduction: Reduction
) -> jax.Array:
    flat, unravel = ravel_pytree(params)

    def batch_g(batch: tuple[jax.Array, jax.Array]) -> jax.Array:
        x, y = batch
        f = lambda w: model.value(unravel(w), x)
        outputs = f(flat)
        jac = jax.jacrev(f)(flat)  # [b, C, P]
        one = lambda o, t: per_example_loss(kind, o[None], t[None])[0]
        h_out = jax.vmap(jax.hessian(one))(outputs, y)  # [b, C, C]
        scale = 1.0 / outputs.shape[0] if reduction == "mean" else 1.0
        return scale * jnp.einsum("bcp,bcd,bdq->pq", jac, h_out, jac)

    return reduce_batches(batch_g, data, reduction)


def ggn_matrix(
    model_fn: ModelFn,
    params: Any,
    data: Batches,
    *,
    kind: OutputLoss,
    reduction: Reduction = "mean",
) -> jax.Array:
    """Dense G = Σᵢ cᵢ Jᵢᵀ ∇²_o ℓᵢ Jᵢ from explicit Jacobians (small models: O(b C P) memory)."""
    return _ggn_matrix(Static(model_fn), params, data, kind, reduction)
