"""An operator applied to many vectors within a memory budget (trace estimators' probes).

Vmapping every probe through one program multiplies a matvec's working memory by the number
of probes: Hutch++ with 81 matvecs on a ResNet-20 over 512 images grew past 23 GB. Here the
probes go through in chunks, each chunk one call of a jitted, vmapped matvec, from a Python
loop on the host. That bounds memory by construction (one chunk's buffers live at a time) and
keeps the fast path: a ``lax.map``/``lax.scan`` over chunks would put the matvec inside a loop
body, where XLA:CPU runs convolutions 5–30× slower (jax-ml/jax#12868).

On XLA:CPU a matvec vmapped over vectors runs convolutions far slower per vector than one
vector at a time (ResNet-20, 128 images, this 2-core CPU: 2.75 s against 1.58 s per probe,
benchmarks/bench_anchors.py), so there the default for an operator whose matvec contains a
convolution is one vector per call (:func:`default_chunk`); dense and MLP operators, where
vmap turns matrix-vector into matrix-matrix products, keep the budget's chunk.

Otherwise the default chunk follows from a memory budget (``LANDSCAPE_MEMORY_BUDGET_GB``, default
``DEFAULT_BUDGET_GB``) and one matvec's footprint as XLA reports it for the compiled program
(``memory_analysis``: temporaries + output + the vector), times ``SAFETY`` for what a vmapped
chunk adds; a caller's explicit chunk size overrides it.

With several devices (``shared.parallel``) each chunk's rows are split across them: the chunk
is rounded up to a multiple of the device count D (the last chunk padded), sharded along its
rows, and jit partitions the vmapped matvec, so each device runs 1/D of the matvecs. The budget
is per device, so the default chunk is D times the one-device chunk (D times fewer calls).
"""

from __future__ import annotations

import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend.core import jaxprs_in_params

from shared.curvature.operators import Operator, static_key
from shared.parallel import device_mesh, pad_leading, padded_length, replicate, shard_leading, unpad_leading

BUDGET_ENV = "LANDSCAPE_MEMORY_BUDGET_GB"
DEFAULT_BUDGET_GB = 2.0
SAFETY = 2.0  # a vmapped chunk's footprint per vector, relative to one matvec's (measured ≈ 1–1.5)

_footprints: dict[Any, int] = {}


def memory_budget_bytes() -> int:
    """The budget for one chunk of matvecs: ``$LANDSCAPE_MEMORY_BUDGET_GB`` or the default."""
    raw = os.environ.get(BUDGET_ENV)
    if raw is None:
        return int(DEFAULT_BUDGET_GB * 2**30)
    try:
        gb = float(raw)
    except ValueError:
        gb = -1.0
    if not gb > 0:
        raise ValueError(f"environment variable {BUDGET_ENV} has value {raw!r}; allowed: a positive number of GiB")
    return int(gb * 2**30)


@jax.jit
def _matvec(op: Operator, v: jax.Array) -> jax.Array:
    return op.matvec(v)


@jax.jit
def _matmat(op: Operator, vs: jax.Array) -> jax.Array:
    return jax.vmap(op.matvec)(vs)


def _signature(op: Operator) -> Any:
    leaves, treedef = jax.tree_util.tree_flatten(op.args)
    return (static_key(op.fn), op.size, str(op.dtype), treedef,
            tuple((tuple(np.shape(x)), str(getattr(x, "dtype", type(x)))) for x in leaves))


def matvec_footprint_bytes(op: Operator) -> int:
    """One matvec's working memory: XLA's temporaries + output + the input vector (cached per
    operator kind and shapes; the compile is the only cost)."""
    key = _signature(op)
    if key not in _footprints:
        v = jax.ShapeDtypeStruct((op.size,), op.dtype)
        stats = _matvec.lower(op, v).compile().memory_analysis()
        vector = op.size * np.dtype(op.dtype).itemsize
        measured = (stats.temp_size_in_bytes + stats.output_size_in_bytes) if stats is not None else 0
        _footprints[key] = int(max(measured, 0) + vector)
    return _footprints[key]


def auto_chunk(op: Operator, count: int, budget_bytes: int | None = None) -> int:
    """How many vectors one vmapped call may take: budget / (SAFETY · one matvec's footprint),
    at least 1 and at most ``count``."""
    budget = memory_budget_bytes() if budget_bytes is None else budget_bytes
    per_vector = SAFETY * matvec_footprint_bytes(op)
    return int(max(1, min(count, budget // max(per_vector, 1.0))))


def has_convolution(op: Operator) -> bool:
    """Whether ``op``'s matvec contains a convolution (its jaxpr, sub-jaxprs included; cached per
    operator kind and shapes)."""
    key = ("conv", *_signature(op))
    if key not in _footprints:
        jaxpr = jax.make_jaxpr(op.matvec)(jax.ShapeDtypeStruct((op.size,), op.dtype))
        _footprints[key] = int(_jaxpr_has_conv(jaxpr.jaxpr))
    return bool(_footprints[key])


def _jaxpr_has_conv(jaxpr: Any) -> bool:
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "conv_general_dilated":
            return True
        for sub in jaxprs_in_params(eqn.params):
            if _jaxpr_has_conv(getattr(sub, "jaxpr", sub)):
                return True
    return False


def one_vector_per_call(op: Operator) -> bool:
    """The platform rule (module docstring): a convolutional operator on a CPU is not vmapped."""
    return jax.default_backend() == "cpu" and has_convolution(op)


def default_chunk(op: Operator, count: int) -> int:
    """Vectors per call when the caller names none: 1 where :func:`one_vector_per_call`, else
    :func:`auto_chunk`'s memory-budget chunk."""
    if one_vector_per_call(op):
        return 1
    return auto_chunk(op, count)


def apply_in_chunks(op: Operator, vs: jax.Array, chunk: int | None = None) -> jax.Array:
    """A vᵢ for every row of ``vs`` ([k, n]), ``chunk`` rows per call (``None``: ``default_chunk``).

    Not traceable (a host loop): call it outside ``jax.jit``. Equal to ``jax.vmap(op.matvec)``
    up to the rounding of vmapped vs. batched kernels."""
    count = int(vs.shape[0])
    mesh = device_mesh()
    if chunk is None:
        chunk = min(count, mesh.size * default_chunk(op, count))  # the budget is per device
    if chunk < 1:
        raise ValueError(f"chunk must be a positive number of vectors, got {chunk}")
    if mesh.size > 1:
        return _apply_sharded(op, vs, chunk, mesh)
    if chunk == 1:  # unvmapped: the default for convolutional operators on a CPU (module docstring)
        return jnp.stack([_matvec(op, v) for v in vs])
    if chunk >= count:
        return _matmat(op, vs)
    parts = [_matmat(op, vs[start:start + chunk]) for start in range(0, count - count % chunk, chunk)]
    if count % chunk:  # one more compile for the last, smaller chunk
        parts.append(_matmat(op, vs[count - count % chunk:]))
    return jnp.concatenate(parts, axis=0)


def _apply_sharded(op: Operator, vs: jax.Array, chunk: int, mesh: Any) -> jax.Array:
    """:func:`apply_in_chunks` with each chunk's rows split across the devices of ``mesh``; the chunk
    is rounded up to a multiple of the device count (no device holds more rows than ``chunk``
    allows one device), so only the last chunk can need padding."""
    op = replicate(op, mesh)
    chunk = padded_length(chunk, mesh.size)
    parts = []
    for start in range(0, int(vs.shape[0]), chunk):
        part, rows = pad_leading(vs[start:start + chunk], mesh.size)
        parts.append(unpad_leading(_matmat(op, shard_leading(part, mesh)), rows))
    return parts[0] if len(parts) == 1 else jnp.concatenate(parts, axis=0)
