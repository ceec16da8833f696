"""Timing helpers for the benchmark scripts in ``benchmarks/``: wall times of a
jitted computation, blocked until its results are ready (JAX dispatches
asynchronously, so an unblocked timer measures only the dispatch)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import jax
from jax.flatten_util import ravel_pytree


def wall_times(fn: Callable[[], Any], reps: int) -> list[float]:
    """Seconds of ``reps`` runs of ``fn()``, each blocked until ready."""
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return times


def median_seconds(fn: Callable[[], Any], reps: int) -> float:
    return statistics.median(wall_times(fn, reps))


def best_seconds(fn: Callable[[], Any], reps: int) -> float:
    return min(wall_times(fn, reps))


CPU_FLOPS = 4e10  # float32 FLOP/s assumed for a projected cost on 2 CPU cores (measured ~6e10 on GEMMs)
GPU_FLOPS = 2e13  # float32 FLOP/s assumed on one H100-class GPU


def print_projected_cost(module: str, what: str, flops: float) -> None:
    """Print, before a rule's compute, what it will cost: its FLOP count and the seconds that
    makes on 2 CPU cores and on one GPU at the assumed rates (projections, not measurements)."""
    print(f"[{module}] projected cost of {what}: {flops:.3g} FLOP ≈ {flops / CPU_FLOPS:,.0f} s on 2 CPU cores "
          f"({CPU_FLOPS:.0e} FLOP/s), ≈ {flops / GPU_FLOPS:,.1f} s on one GPU ({GPU_FLOPS:.0e} FLOP/s)", flush=True)


def forward_flops(net: Any, params: Any, state: Any, x: jax.Array) -> float:
    """FLOPs per example of one eval-mode forward pass of ``net`` (a ``shared.training.Network``)
    on ``x``'s shape: XLA's HLO cost analysis of the lowered program on 8 examples (no
    compilation), or 2·parameters where the analysis is absent. For projected costs."""
    fn = jax.jit(lambda p, s, xb: net.apply(p, s, xb, mode="eval")[0])
    try:
        cost: Any = fn.lower(params, state, x[:8]).cost_analysis()
        cost = cost[0] if isinstance(cost, list) else cost
        return float(cost["flops"]) / 8
    except Exception:  # noqa: BLE001 - a cost estimate must never stop a run
        return 2.0 * float(ravel_pytree(params)[0].size)
