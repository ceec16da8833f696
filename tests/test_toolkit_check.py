"""The toolkit check's verdicts can fail: for every claim of ``shared/toolkit/claims.yaml``, the
check run honestly on a small problem is "reproduced", and with the failure the claim rules out
planted into the tool it checks (a perturbed estimate, too few steps, a wrong normalisation, the
pre-fix Metric 2.1, understated standard errors) it is "not reproduced". Plus the worst-case
false-alarm rates that claims.yaml quotes for its statistical rules."""

from __future__ import annotations

import dataclasses
import functools
import importlib
from collections.abc import Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from shared.claims import judge, load_claims
from shared.config import module_defaults, resolve
from shared.curvature import Operator, dense_operator
from shared.module import load
from shared.toolkit import steps

pytestmark = pytest.mark.x64

CLAIMS = {c["id"]: c for c in load_claims(load("toolkit").path / "claims.yaml")["claims"]}


def verdict(claim: str, measurements: dict[str, Any]) -> str:
    return judge(CLAIMS[claim], measurements).verdict


def reason(claim: str, measurements: dict[str, Any]) -> str:
    return judge(CLAIMS[claim], measurements).reason


def hessian_like(n: int, seed: int, rotate: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """A symmetric n×n matrix with a trained net's Hessian spectrum: 8 outliers, an indefinite
    bulk near 0, in a random eigenbasis; with ``rotate=False`` the outliers stay on the first
    coordinates (diagonal plus a small symmetric perturbation)."""
    rng = np.random.default_rng(seed)
    lam = np.concatenate([[1.3, 0.9, 0.65, 0.5, 0.3, 0.2, 0.12, 0.08], rng.normal(0.0, 1e-3, n - 8)])
    if rotate:
        q, _ = np.linalg.qr(rng.standard_normal((n, n)))
        h = (q * lam) @ q.T
    else:
        g = rng.standard_normal((n, n))
        h = np.diag(lam) + 1e-2 * (g + g.T) / np.sqrt(2 * n)
    h = 0.5 * (h + h.T)
    return h, np.linalg.eigvalsh(h)


@pytest.fixture(scope="module")
def matrix() -> tuple[Operator, np.ndarray, np.ndarray]:
    h, exact = hessian_like(300, seed=0)
    return dense_operator(h), h, exact


KEY = jax.random.key(7)


# --------------------------------------------------------------------------- Lanczos


def test_lanczos_claims_hold_and_fail_when_planted(matrix, monkeypatch: pytest.MonkeyPatch) -> None:
    op, _, exact = matrix
    honest, _ = steps.lanczos_check(op, exact, KEY, k=5, num_steps=80)
    assert verdict("T-lanczos-top", honest) == verdict("T-lanczos-bounds", honest) == "reproduced"

    too_few, _ = steps.lanczos_check(op, exact, KEY, k=5, num_steps=10)  # 10 steps for 5 + 5 values
    assert verdict("T-lanczos-top", too_few) == "not reproduced"

    real = steps.lanczos_eigs

    def perturbed_top(*args: Any, **kwargs: Any) -> Any:  # a top Ritz value off by 1e-8 relative
        ritz = real(*args, **kwargs)
        return dataclasses.replace(ritz, top=dataclasses.replace(ritz.top, eigenvalues=ritz.top.eigenvalues
                                                                 * (1 + 1e-8)))

    monkeypatch.setattr(steps, "lanczos_eigs", perturbed_top)
    planted, _ = steps.lanczos_check(op, exact, KEY, k=5, num_steps=80)
    assert verdict("T-lanczos-top", planted) == "not reproduced"

    def shifted_bottom(*args: Any, **kwargs: Any) -> Any:  # a shift not undone: bottom values below λ_min
        ritz = real(*args, **kwargs)
        shift = 1e-9 * float(np.max(np.abs(exact)))
        return dataclasses.replace(ritz, bottom=dataclasses.replace(ritz.bottom, eigenvalues=ritz.bottom.eigenvalues
                                                                    - shift))

    monkeypatch.setattr(steps, "lanczos_eigs", shifted_bottom)
    planted, _ = steps.lanczos_check(op, exact, KEY, k=5, num_steps=80)
    assert verdict("T-lanczos-top", planted) == "reproduced"
    assert verdict("T-lanczos-bounds", planted) == "not reproduced"


# --------------------------------------------------------------------------- power iteration


def test_power_claim_holds_and_fails_when_planted(matrix, monkeypatch: pytest.MonkeyPatch) -> None:
    op, _, exact = matrix
    honest, _ = steps.power_check(op, exact, KEY, max_iters=300, rtol=1e-8)
    assert verdict("T-power", honest) == "reproduced"

    unconverged, _ = steps.power_check(op, exact, KEY, max_iters=5, rtol=1e-8)
    assert not unconverged["power_converged"]
    assert verdict("T-power", unconverged) == "not reproduced"

    real = steps.power_iteration

    def biased(*args: Any, **kwargs: Any) -> Any:  # converged, but λ off by 1e-5 relative
        result = real(*args, **kwargs)
        return dataclasses.replace(result, eigenvalue=result.eigenvalue * (1 + 1e-5))

    monkeypatch.setattr(steps, "power_iteration", biased)
    planted, _ = steps.power_check(op, exact, KEY, max_iters=300, rtol=1e-8)
    assert planted["power_converged"]
    assert verdict("T-power", planted) == "not reproduced"


# --------------------------------------------------------------------------- SLQ


def test_slq_claim_holds_and_fails_with_unsquared_weights(matrix, monkeypatch: pytest.MonkeyPatch) -> None:
    op, h, exact = matrix
    honest, _, _ = steps.slq_check(op, h, exact, KEY, num_steps=30, num_draws=10, runs=4)
    assert honest["slq_quadrature_error"] < 1e-12
    assert verdict("T-slq-moments", honest) == "reproduced"

    real = steps.slq

    def unsquared(*args: Any, **kwargs: Any) -> Any:  # weights |s₀ⱼ| instead of s₀ⱼ² (renormalised)
        density = real(*args, **kwargs)
        w = jnp.sqrt(density.weights)
        return dataclasses.replace(density, weights=w / jnp.sum(w, axis=-1, keepdims=True))

    monkeypatch.setattr(steps, "slq", unsquared)
    planted, _, _ = steps.slq_check(op, h, exact, KEY, num_steps=30, num_draws=10, runs=4)
    assert verdict("T-slq-moments", planted) == "not reproduced"


@pytest.fixture
def fresh_jit_caches() -> Iterator[None]:
    """Jitted SLQ traces its probe function once per shape: clear the caches around a test that
    replaces it, so that neither the test nor the ones after it see a stale trace."""
    jax.clear_caches()
    yield
    jax.clear_caches()


def test_slq_claim_fails_with_biased_probes(monkeypatch: pytest.MonkeyPatch, fresh_jit_caches: None) -> None:
    """Probes that are unit vectors but not isotropic (E[vvᵀ] ≠ I/n): each quadrature is still exact
    for its own probe, so only the z-test of the moments can see the bias."""
    slq_module = importlib.import_module("shared.curvature.slq")  # the package exports the function slq

    h, exact = hessian_like(240, seed=1, rotate=False)  # outliers on the first coordinates
    op = dense_operator(h)
    honest, _, _ = steps.slq_check(op, h, exact, KEY, num_steps=20, num_draws=10, runs=4)
    assert verdict("T-slq-moments", honest) == "reproduced"

    def second_half(key: jax.Array, size: int, dtype: Any, kind: str) -> jax.Array:
        half = size // 2
        z = jax.random.rademacher(key, (size - half,), dtype) / jnp.sqrt(jnp.asarray(size - half, dtype))
        return jnp.concatenate([jnp.zeros((half,), dtype), z])

    monkeypatch.setattr(slq_module, "probe_vector", second_half)
    jax.clear_caches()
    planted, _, _ = steps.slq_check(op, h, exact, KEY, num_steps=20, num_draws=10, runs=4)
    assert planted["slq_quadrature_error"] < 1e-12  # exact for the probes it drew
    assert max(abs(z) for z in planted["slq_moment_z"]) > 6
    assert verdict("T-slq-moments", planted) == "not reproduced"


# --------------------------------------------------------------------------- Hutchinson and Hutch++


@pytest.mark.parametrize(("kind", "claim", "name"), [("Hutchinson", "T-hutchinson", "hutchinson"),
                                                    ("Hutch++", "T-hutchpp", "hutch_plus_plus")])
def test_trace_claims_hold_and_fail_when_planted(matrix, monkeypatch: pytest.MonkeyPatch, kind: str, claim: str,
                                                 name: str) -> None:
    op, h, _ = matrix
    trace = float(np.trace(h))
    honest, _, _ = steps.trace_check(kind, op, trace, KEY, matvecs=90, draws=20)
    assert verdict(claim, honest) == "reproduced"
    real = getattr(steps, name)

    prefix = "hutchinson" if kind == "Hutchinson" else "hutchpp"

    def biased(*args: Any, **kwargs: Any) -> Any:  # every estimate 2 of its stderr too high: E[pooled z] ≈ 9
        result = real(*args, **kwargs)
        return dataclasses.replace(result, estimate=result.estimate + 2 * result.stderr)

    monkeypatch.setattr(steps, name, biased)
    planted, _, _ = steps.trace_check(kind, op, trace, KEY, matvecs=90, draws=20)
    assert planted[f"{prefix}_pooled_z"] > 4
    assert verdict(claim, planted) == "not reproduced"

    def overconfident(*args: Any, **kwargs: Any) -> Any:  # standard errors understated 4×
        result = real(*args, **kwargs)
        return dataclasses.replace(result, stderr=result.stderr / 4)

    monkeypatch.setattr(steps, name, overconfident)
    planted, _, _ = steps.trace_check(kind, op, trace, KEY, matvecs=90, draws=20)
    assert verdict(claim, planted) == "not reproduced"
    assert sum(z <= 3 for z in planted[f"{prefix}_abs_z"]) < 16


# --------------------------------------------------------------------------- the landscape step


@pytest.fixture(scope="module")
def smoke_settings() -> dict[str, Any]:
    return resolve({**module_defaults("toolkit"), "scale": "smoke"}, "toolkit")


def test_keskar_claim_holds_and_fails_for_the_pre_fix_metric(smoke_settings, monkeypatch: pytest.MonkeyPatch
                                                             ) -> None:
    from shared.sharpness import keskar

    honest, row = steps.keskar_check(smoke_settings["keskar"], seed=0)
    assert abs(row["rel_error"]) <= row["vertex_gap_rel"] + 1e-4
    assert verdict("T-keskar", honest) == "reproduced"

    # before its fix: the search started at y = 0 and scipy's default gtol (1e-5 > |∇f|) stopped it there
    monkeypatch.setattr(keskar, "LBFGSB_OPTIONS", {})
    monkeypatch.setattr(keskar, "keskar_sharpness", functools.partial(keskar.keskar_sharpness, init="zero"))
    planted, row = steps.keskar_check(smoke_settings["keskar"], seed=0)
    assert planted["keskar_no_progress"] and row["sharpness"] == 0.0
    assert verdict("T-keskar", planted) == "not reproduced"


def _first_axis(direction: Any, params: Any, **kwargs: Any) -> Any:
    """Filter normalisation over PyTorch's first axis, applied to Flax's (…, in, out) layout."""

    def leaf(d: jax.Array, w: jax.Array) -> jax.Array:
        if w.ndim <= 1:
            return jnp.zeros_like(w)
        axes = tuple(range(1, w.ndim))
        return d * jnp.sqrt(jnp.sum(w**2, axes, keepdims=True) / jnp.sum(d**2, axes, keepdims=True))

    return jax.tree_util.tree_map(leaf, direction, params)


@pytest.mark.parametrize("plant", ["none", "first axis", "biases kept", "layer-wise"])
def test_plane_claim_holds_and_fails_with_a_wrong_normalisation(smoke_settings, monkeypatch: pytest.MonkeyPatch,
                                                                plant: str) -> None:
    from shared.landscape import directions

    cfg = {**smoke_settings["plane"], "examples": 64, "grid": 3}
    real = directions.normalize_direction
    wrong = {
        "first axis": _first_axis,
        "biases kept": lambda d, p, **kw: real(d, p, norm="filter", ignore=None),  # Li's copy of the weights
        "layer-wise": lambda d, p, **kw: real(d, p, norm="layer", ignore="biasbn"),
    }
    if plant != "none":
        monkeypatch.setattr(directions, "normalize_direction", wrong[plant])
    found, table = steps.plane_check(cfg, seed=0)
    assert len(table) == 9
    if plant == "none":
        assert verdict("T-plane", found) == "reproduced"
    else:
        assert found["plane_direction_rel_diff"] > 1e-3 and found["plane_loss_rel_diff"] > 1e-6
        assert verdict("T-plane", found) == "not reproduced"


def test_landscape_tools_return_declared_outputs_and_every_claim_holds(smoke_settings) -> None:
    """The second half of the step ``check`` (the whole step runs in the smoke DAG, test_dag)."""
    result = steps.landscape_tools(smoke_settings)
    step = load("toolkit").step("check")
    assert set(result.measurements) <= set(step.quantities)
    assert set(result.tables) <= set(step.tables) and set(result.figures) <= {f.name for f in step.figures}
    for claim in ("T-keskar", "T-plane"):
        assert verdict(claim, result.measurements) == "reproduced", reason(claim, result.measurements)


# --------------------------------------------------------------------------- the settings the claims rely on


@pytest.mark.parametrize(("override", "key"), [
    ({"trace_draws": 10}, "toolkit.trace_draws"),  # the binomial rule needs >= 20 draws
    ({"slq_runs": 2}, "toolkit.slq_runs"),  # the SLQ z-test pools >= 40 draws
    ({"trace_matvecs": 60}, "toolkit.trace_matvecs"),  # Hutch++'s stderr from >= 30 probes
    ({"trace_matvecs": 100}, "toolkit.trace_matvecs"),  # a multiple of 3
    ({"power_rtol": 1e-6}, "toolkit.power_rtol"),  # T-power's 1e-6 is 10× the loosest allowed
    ({"ritz_values": 6, "lanczos_steps": 10}, "toolkit.lanczos_steps"),  # 2k steps for k top + k bottom
    ({"slq_steps": 700}, "toolkit.slq_steps"),  # more than the smoke twin's 610 parameters
])
def test_settings_the_claims_rely_on_are_enforced(override: dict[str, Any], key: str) -> None:
    from shared.config import ConfigError

    section = {**module_defaults("toolkit")["toolkit"], **override}
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        resolve({"toolkit": section, "scale": "smoke"}, "toolkit")


# --------------------------------------------------------------------------- the statistical thresholds


def _t_statistics(rng: np.random.Generator, draws: int, reps: int) -> np.ndarray:
    """Self-normalised mean errors of ``draws`` χ²₁ values (the most skewed per-probe law: one
    dominant eigenvalue), ``reps`` times, in chunks."""
    out = []
    for start in range(0, reps, 100_000):
        x = rng.chisquare(1, (min(100_000, reps - start), draws))
        out.append((x.mean(axis=1) - 1.0) / (x.std(axis=1, ddof=1) / np.sqrt(draws)))
    return np.concatenate(out)


def test_statistical_rules_keep_the_declared_false_alarm_rates() -> None:
    """claims.yaml's worst cases: per draw, P(|z| > 3) <= 0.015 at 90 probes and 0.035 at 30, so at
    least 16 of 20 within 3 fails with probability <= 5.3e-4; SLQ's 40-draw |z| > 6 and the pooled
    |z| > 4 at 200 probes have probability ≈ 1e-3."""
    rng = np.random.default_rng(2024)
    out_90 = np.mean(np.abs(_t_statistics(rng, 90, 100_000)) > 3)
    out_30 = np.mean(np.abs(_t_statistics(rng, 30, 200_000)) > 3)
    assert out_90 <= 0.015 + 0.002 and out_30 <= 0.035 + 0.002
    rule = CLAIMS["T-hutchpp"]["rule"]["rules"][0]
    draws = 20
    allowed_outside = draws - int(np.ceil(rule["min_fraction"] * draws))
    assert allowed_outside == 4 and rule["threshold"] == 3
    assert stats.binom.sf(allowed_outside, draws, 0.035) <= 5.3e-4
    slq_threshold = CLAIMS["T-slq-moments"]["rule"]["rules"][1]["threshold"]
    assert np.mean(np.abs(_t_statistics(rng, 40, 400_000)) > slq_threshold) <= 2e-3
    pooled = CLAIMS["T-hutchinson"]["rule"]["rules"][1]["threshold"]
    assert np.mean(np.abs(_t_statistics(rng, 200, 100_000)) > pooled) <= 2.5e-3
