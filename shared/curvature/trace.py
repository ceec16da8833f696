r"""Stochastic trace estimators: Hutchinson (1990) and Hutch++ (Meyer et al. 2021).

Hutchinson, "A stochastic estimator of the trace of the influence matrix for Laplacian
smoothing splines" (1990): for Rademacher z (E[zzᵀ] = I),

    tr(A) ≈ (1/m) Σᵢ zᵢᵀ A zᵢ,   Var[zᵀAz] = 2 (‖A‖_F² − Σᵢ Aᵢᵢ²),

so the standard error is the sample standard deviation over √m.

Hutch++ (Meyer, Musco, Musco & Woodruff, "Hutch++: Optimal stochastic trace estimation",
SOSA 2021, Algorithm 1) spends m/3 matvecs on a sketch Q = orth(A S), computes tr(QᵀAQ)
exactly with m/3 more, and runs Hutchinson on the deflated (I − QQᵀ) A (I − QQᵀ) with the
last m/3:

    tr(A) ≈ tr(QᵀAQ) + (3/m) tr(Gᵀ (I − QQᵀ) A (I − QQᵀ) G).

For matrices whose trace is dominated by a few large eigenvalues (Hessians) the deflated
remainder has far smaller variance: O(1/m²) error instead of O(1/m) for PSD A.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp

from shared.curvature.chunking import apply_in_chunks
from shared.curvature.failures import require_finite
from shared.curvature.operators import Operator

HIGHEST = jax.lax.Precision.HIGHEST


@partial(
    jax.tree_util.register_dataclass,
    data_fields=["estimate", "stderr", "samples"],
    meta_fields=["num_matvecs"],
)
@dataclass(frozen=True)
class TraceResult:
    """A trace estimate, its standard error, and the per-probe Hutchinson samples it averages."""

    estimate: jax.Array
    stderr: jax.Array
    samples: jax.Array
    num_matvecs: int = field(default=0)


def _mean_and_stderr(samples: jax.Array) -> tuple[jax.Array, jax.Array]:
    m = samples.shape[0]
    stderr = jnp.std(samples, ddof=1) / math.sqrt(m) if m > 1 else jnp.full((), jnp.nan)
    return jnp.mean(samples), stderr.astype(samples.dtype)


def hutchinson(
    op: Operator, key: jax.Array, *, num_probes: int, batch_size: int | None = None
) -> TraceResult:
    """Hutchinson's estimate of tr(A) from ``num_probes`` Rademacher probes (matvecs).

    The probes go through ``batch_size`` at a time (``None``: as many as the memory budget of
    ``shared.curvature.chunking`` allows; never all at once by default). Raises
    ``NonFiniteError`` if the estimate is NaN/inf.
    """
    z = _rademacher(key, num_probes, op.size, op.dtype)
    samples = _quadratic_forms(z, apply_in_chunks(op, z, batch_size))
    estimate, stderr = _mean_and_stderr(samples)
    result = TraceResult(estimate, stderr, samples, num_probes)
    require_finite("Hutchinson trace", result.estimate)
    return result


@partial(jax.jit, static_argnames=("count", "size", "dtype"))
def _rademacher(key: jax.Array, count: int, size: int, dtype: Any) -> jax.Array:
    return jax.random.rademacher(key, (count, size), dtype)


@jax.jit
def _quadratic_forms(z: jax.Array, az: jax.Array) -> jax.Array:
    """zᵢᵀ (A zᵢ) for every row."""
    return jnp.sum(z * az, axis=1)


def hutch_plus_plus(
    op: Operator, key: jax.Array, *, num_matvecs: int, batch_size: int | None = None
) -> TraceResult:
    """Hutch++ estimate of tr(A) with ``num_matvecs`` (a multiple of 3) matvecs.

    ``stderr`` is the standard error of the Hutchinson part on the deflated operator (the
    low-rank part is computed exactly given the sketch). Each third of the matvecs goes through
    ``batch_size`` vectors at a time (``None``: the memory budget's chunk, as ``hutchinson``).
    Raises ``NonFiniteError`` if the estimate is NaN/inf.
    """
    if num_matvecs < 6 or num_matvecs % 3:
        raise ValueError(f"num_matvecs must be a multiple of 3 and >= 6, got {num_matvecs}")
    k = num_matvecs // 3
    key_s, key_g = jax.random.split(key)
    s = _rademacher(key_s, k, op.size, op.dtype)
    g = _rademacher(key_g, k, op.size, op.dtype)
    q = _orthonormal_rows(apply_in_chunks(op, s, batch_size))  # [k, n]
    low_rank = jnp.sum(_quadratic_forms(q, apply_in_chunks(op, q, batch_size)))
    g = _deflate(g, q)
    samples = _quadratic_forms(g, apply_in_chunks(op, g, batch_size))
    rest, stderr = _mean_and_stderr(samples)
    result = TraceResult(low_rank + rest, stderr, samples, num_matvecs)
    require_finite("Hutch++ trace", result.estimate)
    return result


@jax.jit
def _orthonormal_rows(rows: jax.Array) -> jax.Array:
    """Q (as rows) of the thin QR of the sketch A S: an orthonormal basis of its range."""
    q, _ = jnp.linalg.qr(rows.T)
    return q.T


@jax.jit
def _deflate(g: jax.Array, q: jax.Array) -> jax.Array:
    """(I − QQᵀ) gᵢ for every row gᵢ (Q's columns are the rows of ``q``)."""
    return g - jnp.matmul(jnp.matmul(g, q.T, precision=HIGHEST), q, precision=HIGHEST)
