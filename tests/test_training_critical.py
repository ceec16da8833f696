"""The run classifier (``shared.training.critical``) on planted end states, and the early stop
and extension rounds of ``train_ensemble``; float64 toy losses of two or three parameters.

Every toy loss has the global value L* = 1 (so relative gaps are gaps). The planted cases:

- reached:           L = 1 + (x − 1)² + (y − 1)² at (1, 1)
- strict saddle:     L = 1 + (x² − 1)² + y² at (0, 0): Hessian diag(−4, 2)
- degenerate saddle: L = 1 + ½(1 − abc)² at 0: Hessian exactly 0 (PSD), descent at third order
- quadratic minimum: L = 3.25 + f(x) + y², f = x⁴/4 − 4x³/3 + 3x²/2, at (0, 0): Hessian
  diag(3, 2); the global minimum is at x = 3 (f = −9/4)
- quartic minimum:   L = 3.25 + f(y) + x⁴ after gradient descent from (½, 0): the run ends
  with x ~ (8·lr·t)^(−1/2), a gradient far above the stationarity threshold
- diverged:          gradient descent with a step too large for L = 1 + x² + y²

and two unresolved ones: a run far from any critical point, and one stalled on the slope of a
saddle with tiny negative curvature (L = 1 + (1 − 10⁻⁴x²)² + y² near 0), both *still descending*.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from shared.training import critical, train_ensemble
from shared.training.critical import (
    DESCENDING,
    DIVERGED,
    MINIMUM,
    NONGLOBAL,
    REACHED,
    SADDLE_ESCAPED,
    SADDLE_NEGATIVE,
    classify_runs,
)

OPTIMUM = 1.0
KEY = jax.random.PRNGKey(0)


def _f(x: jax.Array) -> jax.Array:
    """f' = x(x − 1)(x − 3): a quadratic local minimum at 0 (f = 0), the global one at 3 (f = −9/4)."""
    return x**4 / 4 - 4 * x**3 / 3 + 1.5 * x**2


def reached_loss(p: Any, data: Any) -> jax.Array:
    return 1.0 + jnp.sum((p["w"] - 1.0) ** 2)


def saddle_loss(p: Any, data: Any) -> jax.Array:
    x, y = p["w"][0], p["w"][1]
    return 1.0 + (x**2 - 1.0) ** 2 + y**2


def degenerate_loss(p: Any, data: Any) -> jax.Array:
    a, b, c = p["w"][0], p["w"][1], p["w"][2]
    return 1.0 + 0.5 * (1.0 - a * b * c) ** 2


def quadratic_min_loss(p: Any, data: Any) -> jax.Array:
    x, y = p["w"][0], p["w"][1]
    return 3.25 + _f(x) + y**2


def quartic_min_loss(p: Any, data: Any) -> jax.Array:
    x, y = p["w"][0], p["w"][1]
    return 3.25 + _f(y) + x**4


def bowl_loss(p: Any, data: Any) -> jax.Array:
    return 1.0 + jnp.sum(p["w"] ** 2)


def ensemble(*points: list[float]) -> dict[str, jax.Array]:
    return {"w": jnp.asarray(points, dtype=jnp.float64)}


def classify(loss: Any, params: Any, optimum: float | None = OPTIMUM, **kwargs: Any) -> critical.Classification:
    kwargs = {"key": KEY, "lr": 0.1, "escape_steps": 2000, **kwargs}
    return classify_runs(loss, params, None, optimum, **kwargs)


def test_run_at_the_global_value_is_reached() -> None:
    with jax.enable_x64(True):
        out = classify(reached_loss, ensemble([1.0, 1.0], [1.0 + 1e-4, 1.0]))
    assert list(out.category) == [REACHED, REACHED]  # (L − L*)/L* = 1e-8
    assert out.rel_gap[0] == 0.0 and np.isnan(out.hessian_min).all()


def test_strict_saddle_has_negative_curvature() -> None:
    with jax.enable_x64(True):
        out = classify(saddle_loss, ensemble([0.0, 0.0]))
    assert list(out.category) == [SADDLE_NEGATIVE]
    assert out.stationary[0] and out.hessian_min[0] == pytest.approx(-4.0)


def test_degenerate_saddle_with_zero_hessian_escapes_after_a_perturbation() -> None:
    with jax.enable_x64(True):
        out = classify(degenerate_loss, ensemble([0.0, 0.0, 0.0]), perturbation=0.05)
    assert list(out.category) == [SADDLE_ESCAPED]
    assert out.stationary[0] and out.hessian_min[0] == 0.0  # PSD: curvature cannot tell
    assert out.escape_drop[0] > 0.4  # down from 1.5 towards L* = 1


def test_quadratic_non_global_minimum_is_a_candidate() -> None:
    with jax.enable_x64(True):
        out = classify(quadratic_min_loss, ensemble([0.0, 0.0]), perturbation=0.05)
    assert list(out.category) == [NONGLOBAL]
    assert out.stationary[0] and not out.stalled[0]
    assert out.hessian_min[0] == pytest.approx(2.0)
    assert out.escape_drop[0] <= 1e-3 * (3.25 - OPTIMUM)


def test_flat_quartic_minimum_is_a_candidate_not_silently_descending() -> None:
    """Gradient descent into L ≈ L₀ + x⁴ ends with a gradient far above the stationarity
    threshold; the stall test still reports the run as a non-global minimum candidate."""
    with jax.enable_x64(True):
        start = ensemble([0.5, 0.0])
        run = train_ensemble(quartic_min_loss, start, None, critical.gradient_descent(0.05), 3000,
                             log_every=3000, progress=False)
        out = classify(quartic_min_loss, run.params, failed=run.failed, lr=0.05, escape_steps=3000)
    assert out.rel_grad[0] > 10 * critical.STATIONARY_RTOL  # not stationary at any affordable length
    assert not out.stationary[0] and out.stalled[0]
    assert out.hessian_min[0] >= 0.0  # a flat, convex bottom
    assert list(out.category) == [NONGLOBAL]


def slow_saddle_loss(p: Any, data: Any) -> jax.Array:
    """A saddle at 0 with the small negative curvature −4e-4 in x; the global minimum L* = 1 at x = ±100."""
    x, y = p["w"][0], p["w"][1]
    return 1.0 + (1.0 - 1e-4 * x**2) ** 2 + y**2


def test_a_stalled_run_on_the_slope_of_a_slow_saddle_is_unresolved() -> None:
    """Not stationary, not moved by the stall test, but a negative Hessian eigenvalue: no minimum."""
    with jax.enable_x64(True):
        out = classify(slow_saddle_loss, ensemble([1e-3, 1e-3]))
    assert out.stalled[0] and not out.stationary[0]
    assert out.hessian_min[0] == pytest.approx(-4e-4, rel=1e-3)
    assert list(out.category) == [DESCENDING]


def test_a_run_far_from_any_critical_point_is_still_descending() -> None:
    with jax.enable_x64(True):
        out = classify(reached_loss, ensemble([-5.0, 3.0]), escape_steps=20)
    assert list(out.category) == [DESCENDING]
    assert not out.stalled[0] and out.escape_drop[0] > 1.0


def test_diverged_run_is_diverged() -> None:
    with jax.enable_x64(True):
        run = train_ensemble(bowl_loss, ensemble([0.5, 0.5], [0.0, 0.0]), None, critical.gradient_descent(2.0),
                             1000, log_every=1000, progress=False)
        assert list(run.failed) == [True, False]
        out = classify(bowl_loss, run.params, failed=run.failed)
        nan_params = classify(bowl_loss, ensemble([np.nan, 0.0]))
    # the failed run's params are its last finite ones: only ``failed`` shows it
    assert list(out.category) == [DIVERGED, REACHED]
    assert list(nan_params.category) == [DIVERGED] and np.isnan(nan_params.final_loss[0])


def test_one_ensemble_mixes_classes_and_a_run_does_not_depend_on_the_others() -> None:
    with jax.enable_x64(True):
        points = ensemble([1.0, 0.0], [0.0, 0.0], [np.inf, 0.0], [-1.0, 1e-12])
        out = classify(saddle_loss, points)
        alone = classify(saddle_loss, ensemble([0.0, 0.0]))
    assert list(out.category) == [REACHED, SADDLE_NEGATIVE, DIVERGED, REACHED]
    assert out.hessian_min[1] == alone.hessian_min[0]
    assert out.counts()[REACHED] == 2


def test_without_an_optimum_minima_are_not_called_non_global() -> None:
    with jax.enable_x64(True):
        out = classify(quadratic_min_loss, ensemble([0.0, 0.0], [3.0, 0.0]), optimum=None, perturbation=0.05)
        saddle = classify(saddle_loss, ensemble([0.0, 0.0]), optimum=None)
    assert list(out.category) == [MINIMUM, MINIMUM] and np.isnan(out.rel_gap).all()
    assert list(saddle.category) == [SADDLE_NEGATIVE]


def test_classification_is_deterministic() -> None:
    with jax.enable_x64(True):
        points = ensemble([0.0, 0.0, 0.0], [0.0, 0.0, 0.0])
        a = classify(degenerate_loss, points, perturbation=0.05, escape_steps=20)
        b = classify(degenerate_loss, points, perturbation=0.05, escape_steps=20)
    np.testing.assert_array_equal(a.escape_drop, b.escape_drop)
    assert a.escape_drop[0] != a.escape_drop[1]  # each run its own perturbation


# --- train_ensemble: early stop and extension rounds ------------------------------------------

def slow_loss(p: Any, data: Any) -> jax.Array:
    """Fast in x (quadratic), slow in y (quartic)."""
    return 1.0 + p["w"][0] ** 2 + p["w"][1] ** 4


def test_extensions_continue_only_the_runs_still_descending() -> None:
    with jax.enable_x64(True):
        gd = critical.gradient_descent(0.1)
        start = ensemble([0.0, 0.0], [0.5, 0.0], [0.5, 0.5])
        run = train_ensemble(slow_loss, start, None, gd, 100, log_every=50, extensions=2, progress=False)
        longer = train_ensemble(slow_loss, start, None, gd, 300, log_every=50, progress=False)
    assert run.extended is not None and list(run.extended) == [0, 0, 2]
    assert list(run.steps_taken) == [100, 100, 300]
    assert list(run.log_steps) == [0, 50, 100, 150, 200, 250, 300]
    np.testing.assert_allclose(np.asarray(run.params["w"][2]), np.asarray(longer.params["w"][2]), rtol=1e-12)
    np.testing.assert_allclose(run.loss_history[2], longer.loss_history[2], rtol=1e-12)
    assert np.all(run.loss_history[1, 2:] == run.final_loss[1])  # not extended: its loss repeats


def test_until_stops_each_run_once_it_is_settled() -> None:
    with jax.enable_x64(True):
        gd = critical.gradient_descent(0.1)
        start = ensemble([0.5, 0.0], [1.0, 1.0001], [-100.0, -100.0])
        run = train_ensemble(reached_loss, start, None, gd, 1000, log_every=20, chunk_steps=20,
                             until=critical.settled(OPTIMUM), progress=False)
        full = train_ensemble(reached_loss, start, None, gd, 1000, log_every=20, progress=False)
    stops = run.steps_taken
    assert list(stops) == [40, 20, 60]  # each run stops on its own, at a check
    assert run.log_steps[-1] == stops.max() < 1000
    assert np.all(critical.settled(OPTIMUM)(run.final_loss, run.grad_norm))
    for i, stop in enumerate(stops):
        k = int(stop) // 20  # logged blocks before the run stopped
        np.testing.assert_array_equal(run.loss_history[i, : k + 1], full.loss_history[i, : k + 1])
        assert np.all(run.loss_history[i, k:] == run.final_loss[i])  # then its loss repeats


def test_runs_leaving_the_batch_keep_their_state() -> None:
    """Forty runs with their own learning rates stop at different checks; the vmapped batch is
    rebuilt from the runs still training several times. Every run ends as if trained alone."""
    with jax.enable_x64(True):
        lrs = jnp.asarray(np.geomspace(0.002, 0.3, 40))
        start = {"w": jnp.tile(jnp.asarray([[-2.0, 3.0]]), (40, 1))}
        factory = lambda lr: optax.sgd(lr)  # noqa: E731
        run = train_ensemble(reached_loss, start, None, factory, 4000, hypers=lrs, log_every=20, chunk_steps=20,
                             until=critical.settled(OPTIMUM), progress=False)
        for i in (0, 7, 20, 39):
            alone = train_ensemble(reached_loss, {"w": start["w"][i:i + 1]}, None, factory, 4000, hypers=lrs[i:i + 1],
                                   log_every=20, chunk_steps=20, until=critical.settled(OPTIMUM), progress=False)
            assert run.steps_taken[i] == alone.steps_taken[0]
            np.testing.assert_allclose(np.asarray(run.params["w"][i]), np.asarray(alone.params["w"][0]), rtol=1e-13)
            assert run.final_loss[i] == pytest.approx(alone.final_loss[0], rel=1e-13)
    assert len(set(run.steps_taken.tolist())) > 10  # many different stopping checks
    assert np.all(critical.settled(OPTIMUM)(run.final_loss, run.grad_norm)[run.steps_taken < 4000])
