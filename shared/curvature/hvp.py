"""Exact Hessian-vector products of a loss summed over a data set in batches.

The loss is any pure function ``loss_fn(params, batch) -> scalar`` of a parameter pytree
and one batch (a pytree of arrays with a leading example axis). The data set is a
:class:`Batches`: equal-size batches stacked on a leading axis, plus at most one smaller
remainder batch. ``reduction`` states what ``loss_fn`` does over the examples of a batch
and so how batches combine into the full loss over N examples:

- ``"mean"``: ``loss_fn`` averages over its batch; L(θ) = Σ_b (n_b / N) loss_fn(θ, batch_b),
  the mean over all N examples.
- ``"sum"``: ``loss_fn`` sums over its batch; L(θ) = Σ_b loss_fn(θ, batch_b).

With that weighting the batched product equals the full-batch one exactly (up to rounding).
The Hessian-vector product is forward-over-reverse (Pearlmutter 1994; the JAX autodiff
cookbook): H v = ∂/∂ε ∇L(θ + ε v)|₀ = ``jax.jvp(jax.grad(L), (θ,), (v,))[1]``, one
forward-mode pass through the gradient, about 2–3 forward-backward passes in cost. Batches
are summed as straight-line code (a Python loop at trace time) when there are at most
``AUTO_UNROLL_MAX`` of them, else with ``lax.scan`` (``unroll_batches`` forces either):
XLA:CPU runs gradient convolutions 5–30× slower inside any loop body, even a scan of length
one (jax-ml/jax#12868; measured 20× on a small convnet, see ``unrolls``), while compile time
grows with the batches unrolled. On a CPU with more batches than the cap the scan is the slow
path: pass fewer, larger batches. Vectors are raveled (``jax.flatten_util.ravel_pytree``
order) and carry the params' float dtype.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from shared.curvature.operators import Operator, Static, apply, join_callable, split_callable

Reduction = Literal["mean", "sum"]
LossFn = Callable[[Any, Any], jax.Array]


def _leading_size(tree: Any, axis: int = 0) -> int:
    sizes = {int(np.shape(leaf)[axis]) for leaf in jax.tree_util.tree_leaves(tree)}
    if len(sizes) != 1:
        raise ValueError(f"leaves disagree on the size of axis {axis}: {sorted(sizes)}")
    return sizes.pop()


@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class Batches:
    """A data set as ``stacked`` batches ([B, b, ...] leaves) plus an optional ``remainder``.

    Build it with :func:`batch_data` (one array pytree split into batches) or
    :func:`from_batches` (a sequence of batch pytrees).
    """

    stacked: Any
    remainder: Any

    @property
    def num_stacked(self) -> int:
        return 0 if self.stacked is None else _leading_size(self.stacked, 0)

    @property
    def batch_size(self) -> int:
        return 0 if self.stacked is None else _leading_size(self.stacked, 1)

    @property
    def remainder_size(self) -> int:
        return 0 if self.remainder is None else _leading_size(self.remainder, 0)

    @property
    def num_examples(self) -> int:
        return self.num_stacked * self.batch_size + self.remainder_size


def batch_data(data: Any, batch_size: int | None = None) -> Batches:
    """Split a pytree with leading example axis N into batches of ``batch_size``.

    ``None`` (or ``batch_size >= N``) gives a single full batch; N mod batch_size examples
    go to the remainder batch, so no example is dropped.
    """
    n = _leading_size(data)
    b = n if batch_size is None else min(int(batch_size), n)
    if b <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    k = n // b
    stacked = jax.tree_util.tree_map(lambda x: jnp.reshape(x[: k * b], (k, b, *x.shape[1:])), data)
    remainder = None if n % b == 0 else jax.tree_util.tree_map(lambda x: x[k * b :], data)
    return Batches(stacked, remainder)


def from_batches(batches: Sequence[Any]) -> Batches:
    """Stack a sequence of batch pytrees; only the last one may be smaller than the others."""
    if not batches:
        raise ValueError("need at least one batch")
    sizes = [_leading_size(b) for b in batches]
    if any(s != sizes[0] for s in sizes[:-1]) or sizes[-1] > sizes[0]:
        raise ValueError(f"all batches but a smaller last one must share a size, got {sizes}")
    full = list(batches) if sizes[-1] == sizes[0] else list(batches[:-1])
    remainder = None if sizes[-1] == sizes[0] else batches[-1]
    stacked = jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *full)
    return Batches(stacked, remainder)


def seeded_subset(data: Any, key: jax.Array, num_examples: int) -> Any:
    """A fixed subset of ``num_examples`` examples drawn without replacement by ``key``."""
    n = _leading_size(data)
    if not 0 < num_examples <= n:
        raise ValueError(f"num_examples must be in [1, {n}], got {num_examples}")
    idx = jnp.sort(jax.random.permutation(key, n)[:num_examples])
    return jax.tree_util.tree_map(lambda x: jnp.asarray(x)[idx], data)


AUTO_UNROLL_MAX = 16  # unroll=None: batches up to this many run as straight-line code


def unrolls(data: Batches, unroll: bool | None) -> bool:
    """Whether ``reduce_batches`` runs the batches as straight-line code (a Python loop at trace
    time) rather than a ``lax.scan``. ``None`` (the default everywhere) chooses: straight-line
    for at most ``AUTO_UNROLL_MAX`` stacked batches. Inside a loop body XLA:CPU picks slow layouts
    for gradient convolutions (measured: one HVP of a small convnet on 64 images 2.2 s inside a
    scan of length 1, against 0.1–0.2 s straight-line; jax-ml/jax#12868), so a short loop is
    never worth a scan; past the cap compile time (linear in the batches) wins, and the scan
    stays — on a CPU that is the slow path, and the docstrings of the operators say so."""
    if unroll is not None:
        return bool(unroll)
    return data.num_stacked <= AUTO_UNROLL_MAX


def reduce_batches(
    fn: Callable[[Any], Any], data: Batches, reduction: Reduction, unroll: bool | None = None
) -> Any:
    """Σ_b w_b fn(batch_b) with w_b = n_b / N (``"mean"``) or 1 (``"sum"``).

    Straight-line code over the stacked batches when ``unrolls(data, unroll)``, else a
    ``lax.scan`` (see ``unrolls`` for the default).
    """
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
    n = data.num_examples

    def weight(size: int) -> float:
        return size / n if reduction == "mean" else 1.0

    total = None
    if data.stacked is not None:
        first = jax.tree_util.tree_map(lambda x: x[0], data.stacked)
        zeros = jax.tree_util.tree_map(
            lambda s: jnp.zeros(s.shape, s.dtype), jax.eval_shape(fn, first)
        )

        def body(acc: Any, batch: Any) -> tuple[Any, None]:
            return jax.tree_util.tree_map(jnp.add, acc, fn(batch)), None

        if unrolls(data, unroll):  # no loop construct at all: a scan's unroll=True still loops once
            acc = zeros
            for b in range(data.num_stacked):
                acc, _ = body(acc, jax.tree_util.tree_map(lambda x, b=b: x[b], data.stacked))
        else:
            acc, _ = jax.lax.scan(body, zeros, data.stacked)
        total = jax.tree_util.tree_map(lambda a: a * weight(data.batch_size), acc)
    if data.remainder is not None:
        rem = jax.tree_util.tree_map(lambda a: a * weight(data.remainder_size), fn(data.remainder))
        total = rem if total is None else jax.tree_util.tree_map(jnp.add, total, rem)
    return total


@dataclass(frozen=True)
class _HessianMatvec:
    """H v = Σ_b w_b ∂²loss_fn(θ, batch_b) v, forward-over-reverse per batch.

    ``loss`` is the loss's static part (:func:`split_callable`); ``args`` are
    ``(params, data, loss leaves)``, so a pytree loss's arrays are traced, never constants.
    """

    loss: Static
    reduction: Reduction
    unroll: bool | None = None

    def __call__(self, args: tuple[Any, Batches, Any], v: jax.Array) -> jax.Array:
        params, data, leaves = args
        loss_fn = join_callable(self.loss, leaves)
        flat, unravel = ravel_pytree(params)
        tangent = unravel(v.astype(flat.dtype))

        def batch_hvp(batch: Any) -> jax.Array:
            grad = lambda p: jax.grad(loss_fn)(p, batch)
            return ravel_pytree(jax.jvp(grad, (params,), (tangent,))[1])[0]

        return reduce_batches(batch_hvp, data, self.reduction, self.unroll)


def hessian_operator(
    loss_fn: LossFn,
    params: Any,
    data: Batches,
    *,
    reduction: Reduction,
    unroll_batches: bool | None = None,
) -> Operator:
    """The Hessian of the full loss (module docstring) as an :class:`Operator` on raveled θ.

    A ``loss_fn`` that is a registered pytree has its arrays traced (:func:`split_callable`):
    equal structures reuse the compiled code.
    """
    flat, _ = ravel_pytree(params)
    if not jnp.issubdtype(flat.dtype, jnp.floating):
        raise TypeError(f"params must be floating point, got {flat.dtype}")
    static, leaves = split_callable(loss_fn)
    fn = _HessianMatvec(static, reduction, unroll_batches)
    return Operator(fn, (params, data, leaves), flat.size, flat.dtype)


def hvp(
    loss_fn: LossFn,
    params: Any,
    data: Batches,
    v: jax.Array,
    *,
    reduction: Reduction,
    unroll_batches: bool | None = None,
) -> jax.Array:
    """H v for a raveled ``v`` (jitted; see :func:`hessian_operator`)."""
    op = hessian_operator(loss_fn, params, data, reduction=reduction, unroll_batches=unroll_batches)
    return apply(op, v)


@partial(jax.jit, static_argnames=("loss", "reduction", "unroll"))
def _full_loss(
    loss: Static, leaves: Any, params: Any, data: Batches, reduction: Reduction, unroll: bool | None
) -> jax.Array:
    fn = join_callable(loss, leaves)
    return reduce_batches(lambda b: fn(params, b), data, reduction, unroll)


@partial(jax.jit, static_argnames=("loss", "reduction", "unroll"))
def _full_gradient(
    loss: Static, leaves: Any, params: Any, data: Batches, reduction: Reduction, unroll: bool | None
) -> jax.Array:
    fn = join_callable(loss, leaves)
    grad = lambda b: ravel_pytree(jax.grad(fn)(params, b))[0]
    return reduce_batches(grad, data, reduction, unroll)


def full_loss(
    loss_fn: LossFn, params: Any, data: Batches, *, reduction: Reduction,
    unroll_batches: bool | None = None,
) -> jax.Array:
    """L(θ) over all batches, weighted as in the module docstring (jitted)."""
    return _full_loss(*split_callable(loss_fn), params, data, reduction, unroll_batches)


def full_gradient(
    loss_fn: LossFn, params: Any, data: Batches, *, reduction: Reduction,
    unroll_batches: bool | None = None,
) -> jax.Array:
    """∇L(θ), raveled, over all batches (jitted)."""
    return _full_gradient(*split_callable(loss_fn), params, data, reduction, unroll_batches)
