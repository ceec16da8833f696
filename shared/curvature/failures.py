"""Numerical failure in curvature estimates: detected, raised, and counted per seed.

A Hessian-vector product or a Lanczos run that meets NaN/inf (a diverged network, a
loss with log(0)) must not return plausible-looking numbers. The estimators call
``require_finite`` on what they return and raise ``NonFiniteError``; a module that
repeats an estimate over seeds uses ``per_seed`` so that a failed seed is recorded by
name and counted, never averaged in.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp


class NonFiniteError(FloatingPointError):
    """An estimator produced NaN or inf."""


def require_finite(what: str, *arrays: Any) -> None:
    """Raise ``NonFiniteError`` if any array holds NaN/inf (no-op under tracing)."""
    for array in arrays:
        if isinstance(array, jax.core.Tracer):
            return
        if not bool(jnp.all(jnp.isfinite(jnp.asarray(array)))):
            raise NonFiniteError(f"{what} produced non-finite values (NaN or inf)")


@dataclass
class SeedRuns:
    """Results of an estimate repeated over seeds; failed seeds kept with their reason."""

    results: dict[int, Any] = field(default_factory=dict)
    failed: dict[int, str] = field(default_factory=dict)

    @property
    def n_failed(self) -> int:
        return len(self.failed)


def per_seed(estimate: Callable[[int], Any], seeds: Sequence[int]) -> SeedRuns:
    """Run ``estimate(seed)`` for every seed; a ``NonFiniteError`` marks that seed failed."""
    runs = SeedRuns()
    for seed in seeds:
        try:
            runs.results[seed] = estimate(seed)
        except NonFiniteError as err:
            runs.failed[seed] = str(err)
    return runs
