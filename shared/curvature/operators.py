"""Symmetric linear operators on raveled vectors: the one interface every estimator sees.

An :class:`Operator` is the map v ↦ A v on Rⁿ, written as ``fn(args, v)`` with ``fn`` a
static (hashable) function and ``args`` a pytree of arrays. It is itself a pytree, so it
can be passed *as an argument* to ``jax.jit``-compiled estimators: the data and parameters
in ``args`` are traced inputs rather than constants baked into the compiled program, and a
second call with new parameters or data of the same shapes reuses the compiled code as
long as ``fn`` compares equal: the same plain loss function object, or, for a loss that is a
registered pytree (``shared.landscape.BatchLoss``), the same structure — its arrays (e.g.
BatchNorm statistics) travel in ``args`` (:func:`split_callable`), so two networks of one
architecture share compiled code.

Stacks of vectors are rows: ``V`` has shape ``[k, n]`` and ``matmat(V)[i] = A V[i]``.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

Matvec = Callable[[Any, jax.Array], jax.Array]


def static_key(obj: Any) -> Hashable:
    """A hashable stand-in for a user callable in jit-static metadata.

    The object itself if it is hashable (plain functions: by identity), otherwise its
    identity (e.g. ``PureModel``, which holds an unhashable ``nnx.State``). Jitted code is
    reused for the same callable object; the cache keeps it alive, so ids are not recycled.
    """
    try:
        hash(obj)
    except TypeError:
        return ("id", id(obj))
    return obj


@dataclass(frozen=True, eq=False)
class Static:
    """Wraps a callable for ``jax.jit`` static arguments, compared by :func:`static_key`."""

    value: Any

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Static) and static_key(self.value) == static_key(other.value)

    def __hash__(self) -> int:
        return hash(static_key(self.value))


def split_callable(fn: Any) -> tuple[Static, Any]:
    """(static part, traced leaves) of a callable: a registered pytree (e.g. an ``Objective``)
    is flattened so its arrays are jit arguments and its structure (compared by value) the
    static key; a plain function is static as a whole (None: no leaves)."""
    leaves, treedef = jax.tree_util.tree_flatten(fn)
    if len(leaves) == 1 and leaves[0] is fn:
        return Static(fn), None
    return Static(treedef), leaves


def join_callable(static: Static, leaves: Any) -> Any:
    """Inverse of :func:`split_callable` (inside traced code)."""
    if leaves is None:
        return static.value
    return jax.tree_util.tree_unflatten(static.value, leaves)


@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class Operator:
    """A symmetric linear operator v ↦ ``fn(args, v)`` on vectors of length ``size``."""

    fn: Matvec = field(metadata={"static": True})
    args: Any
    size: int = field(metadata={"static": True})
    dtype: np.dtype = field(metadata={"static": True})

    def matvec(self, v: jax.Array) -> jax.Array:
        """A v for a vector of shape ``[size]``."""
        return self.fn(self.args, v)

    def matmat(self, vs: jax.Array, batch_size: int | None = None) -> jax.Array:
        """A vᵢ for each row of ``vs`` ([k, size]); ``vmap`` unless ``batch_size`` chunks it."""
        if batch_size is None:
            return jax.vmap(self.matvec)(vs)
        return jax.lax.map(self.matvec, vs, batch_size=batch_size)


def _dense_matvec(a: jax.Array, v: jax.Array) -> jax.Array:
    return jnp.matmul(a, v, precision=jax.lax.Precision.HIGHEST)


def _diagonal_matvec(d: jax.Array, v: jax.Array) -> jax.Array:
    return d * v


def _shifted_matvec(args: tuple[Operator, jax.Array], v: jax.Array) -> jax.Array:
    op, shift = args
    return op.matvec(v) - shift * v


@dataclass(frozen=True, eq=False)
class _CallableMatvec:
    """Adapter for a closure ``matvec(v)``; equality is the closure's identity."""

    matvec: Callable[[jax.Array], jax.Array]

    def __call__(self, args: Any, v: jax.Array) -> jax.Array:
        del args
        return self.matvec(v)


def dense_operator(a: jax.Array | np.ndarray) -> Operator:
    """The operator of an explicit symmetric matrix (tests and small models)."""
    a = jnp.asarray(a)
    if a.ndim != 2 or a.shape[0] != a.shape[1]:
        raise ValueError(f"need a square matrix, got shape {a.shape}")
    return Operator(_dense_matvec, a, int(a.shape[0]), np.dtype(a.dtype))


def diagonal_operator(d: jax.Array | np.ndarray) -> Operator:
    """diag(d): a known spectrum without a dense matrix."""
    d = jnp.asarray(d)
    return Operator(_diagonal_matvec, d, int(d.shape[0]), np.dtype(d.dtype))


def shifted(op: Operator, shift: float | jax.Array) -> Operator:
    """A − σI (spectral shift, e.g. for λ_min by power iteration)."""
    return Operator(_shifted_matvec, (op, jnp.asarray(shift, op.dtype)), op.size, op.dtype)


def callable_operator(matvec: Callable[[jax.Array], jax.Array], size: int, dtype: Any) -> Operator:
    """Wrap a plain ``matvec(v)`` closure.

    Arrays the closure captures become compile-time constants and every new closure
    recompiles; prefer an ``Operator`` with explicit ``args`` for large data.
    """
    return Operator(_CallableMatvec(matvec), (), int(size), np.dtype(dtype))


@jax.jit
def apply(op: Operator, v: jax.Array) -> jax.Array:
    """Jitted A v (one compile per operator kind and shape)."""
    return op.matvec(v)


@jax.jit
def to_dense(op: Operator) -> jax.Array:
    """The n×n matrix of ``op`` from n matvecs (deliberately dense: small operators only)."""
    return op.matmat(jnp.eye(op.size, dtype=op.dtype)).T
