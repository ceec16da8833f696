"""Timing helpers for the benchmark scripts in ``benchmarks/``: wall times of a
jitted computation, blocked until its results are ready (JAX dispatches
asynchronously, so an unblocked timer measures only the dispatch)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import jax


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
