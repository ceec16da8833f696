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

import jax
import jax.numpy as jnp

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

    Raises ``NonFiniteError`` if the estimate is NaN/inf.
    """
    result = _hutchinson(op, key, num_probes=num_probes, batch_size=batch_size)
    require_finite("Hutchinson trace", result.estimate)
    return result


@partial(jax.jit, static_argnames=("num_probes", "batch_size"))
def _hutchinson(op: Operator, key: jax.Array, *, num_probes: int, batch_size: int | None) -> TraceResult:
    z = jax.random.rademacher(key, (num_probes, op.size), op.dtype)
    samples = jnp.sum(z * op.matmat(z, batch_size), axis=1)
    estimate, stderr = _mean_and_stderr(samples)
    return TraceResult(estimate, stderr, samples, num_probes)


def hutch_plus_plus(
    op: Operator, key: jax.Array, *, num_matvecs: int, batch_size: int | None = None
) -> TraceResult:
    """Hutch++ estimate of tr(A) with ``num_matvecs`` (a multiple of 3) matvecs.

    ``stderr`` is the standard error of the Hutchinson part on the deflated operator (the
    low-rank part is computed exactly given the sketch). Raises ``NonFiniteError`` if the
    estimate is NaN/inf.
    """
    if num_matvecs < 6 or num_matvecs % 3:
        raise ValueError(f"num_matvecs must be a multiple of 3 and >= 6, got {num_matvecs}")
    result = _hutch_plus_plus(op, key, num_matvecs=num_matvecs, batch_size=batch_size)
    require_finite("Hutch++ trace", result.estimate)
    return result


@partial(jax.jit, static_argnames=("num_matvecs", "batch_size"))
def _hutch_plus_plus(op: Operator, key: jax.Array, *, num_matvecs: int, batch_size: int | None) -> TraceResult:
    k = num_matvecs // 3
    key_s, key_g = jax.random.split(key)
    s = jax.random.rademacher(key_s, (k, op.size), op.dtype)
    g = jax.random.rademacher(key_g, (k, op.size), op.dtype)
    q, _ = jnp.linalg.qr(op.matmat(s, batch_size).T)  # [n, k], orthonormal columns
    low_rank = jnp.sum(q.T * op.matmat(q.T, batch_size))
    g = g - jnp.matmul(jnp.matmul(g, q, precision=HIGHEST), q.T, precision=HIGHEST)
    samples = jnp.sum(g * op.matmat(g, batch_size), axis=1)
    rest, stderr = _mean_and_stderr(samples)
    return TraceResult(low_rank + rest, stderr, samples, num_matvecs)
