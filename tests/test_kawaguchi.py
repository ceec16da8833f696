"""Kawaguchi's deep linear networks: closed forms against numpy, exact Hessians at 0,
and a deliberately false claim that must come out 'not reproduced'."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from replications.kawaguchi_deep_linear import steps, theory
from shared.claims import judge
from shared.config import module_defaults, resolve
from shared.curvature.exact import flat_hessian

pytestmark = pytest.mark.x64  # the module's networks have float64 parameters


@pytest.fixture(params=[0, 1])
def problem(request: pytest.FixtureRequest) -> theory.Problem:
    rng = np.random.default_rng(10 + request.param)
    return theory.make_problem(rng, 5, 40, [3.0, 2.0, 1.2], 0.4)


def numpy_gradients(problem: theory.Problem, layers: list[np.ndarray]) -> list[np.ndarray]:
    """∂L/∂W_k = A_kᵀ (W X − Y) (B_k X)ᵀ with A_k = W_H⋯W_{k+1}, B_k = W_{k−1}⋯W_1."""
    r = theory.product(layers) @ problem.x - problem.y
    grads = []
    for k in range(len(layers)):
        a = theory.product(layers[k + 1:]) if k + 1 < len(layers) else np.eye(r.shape[0])
        b = theory.product(layers[:k]) if k else np.eye(problem.x.shape[0])
        grads.append(a.T @ r @ (b @ problem.x).T)
    return grads


@pytest.mark.parametrize("p", [1, 2, 3])
def test_global_minimum_matches_reduced_rank_regression_by_svd(problem: theory.Problem, p: int) -> None:
    """L* from Σ's eigenvalues = ½‖Y − (rank-p truncation of the least-squares fit)‖² (numpy)."""
    coef, *_ = np.linalg.lstsq(problem.x.T, problem.y.T, rcond=None)
    fitted = (problem.x.T @ coef).T
    u, s, vt = np.linalg.svd(fitted, full_matrices=False)
    truncated = (u[:, :p] * s[:p]) @ vt[:p]
    expected = 0.5 * np.sum((problem.y - truncated) ** 2)
    lam, _ = problem.eigensystem()
    assert theory.global_min(lam, problem.y, p) == pytest.approx(expected, rel=1e-12)


def test_data_has_the_prescribed_spectrum(problem: theory.Problem) -> None:
    np.testing.assert_allclose(problem.x @ problem.x.T, np.eye(5), atol=1e-12)
    np.testing.assert_allclose(problem.eigensystem()[0], [9.0, 4.0, 1.44], rtol=1e-12)


@pytest.mark.parametrize("depth, width", [(2, 3), (3, 2), (4, 3)])
def test_constructed_points_are_critical_with_the_predicted_loss(problem, depth, width) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(depth)
    lam, _ = problem.eigensystem()
    widths = [5] + [width] * (depth - 1) + [3]
    for index_set in theory.index_sets(3, min(width, 3)):
        mixings = [np.linalg.qr(rng.standard_normal((width, width)))[0] * rng.uniform(0.5, 2) for _ in range(depth - 1)]
        layers = theory.critical_point(problem, widths, index_set, mixings)
        grad = sum(np.linalg.norm(g) for g in numpy_gradients(problem, layers))
        assert grad <= 1e-10 * np.sum(problem.y**2)
        loss = problem.loss(theory.product(layers))
        assert loss == pytest.approx(theory.critical_loss(lam, problem.y, index_set), rel=1e-12)


def test_a_perturbed_point_is_not_critical(problem: theory.Problem) -> None:
    layers = theory.critical_point(problem, [5, 3, 3], (0, 1), [np.eye(3)])
    layers[0] = layers[0] + 0.05
    assert sum(np.linalg.norm(g) for g in numpy_gradients(problem, layers)) > 1e-3


@pytest.mark.parametrize("depth", [2, 3, 4])
def test_descent_curve_closed_form(problem: theory.Problem, depth: int) -> None:
    lam, _ = problem.eigensystem()
    widths = [5] + [2] * (depth - 1) + [3]
    mixings = [np.eye(2)] * (depth - 1)
    index_set = (1,)
    layers = theory.critical_point(problem, widths, index_set, mixings)
    dirs = theory.descent_directions(problem, widths, index_set, mixings, j=0)
    for t in (0.1, 0.5, 1.0):
        value = problem.loss(theory.product([a + t * d for a, d in zip(layers, dirs, strict=True)]))
        expected = theory.critical_loss(lam, problem.y, index_set) - lam[0] * t**depth + 0.5 * lam[0] * t ** (2 * depth)
        assert value == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("depth", [2, 3, 4])
def test_hessian_at_zero(problem: theory.Problem, depth: int) -> None:
    """Exactly zero for H >= 3; for H = 2 eigenvalues ±σ_i(Y Xᵀ) (a negative one)."""
    widths = [5] + [3] * (depth - 1) + [3]
    model, template = steps.network(widths)
    zero = jax.tree_util.tree_map(jnp.zeros_like, template)
    data = (jnp.asarray(problem.x.T), jnp.asarray(problem.y.T))
    h = np.asarray(flat_hessian(lambda prm: steps.half_squared_error(model, prm, data), zero))
    if depth >= 3:
        assert np.max(np.abs(h)) == 0.0
    else:
        eig = np.linalg.eigvalsh(h)
        sv = np.linalg.svd(problem.y @ problem.x.T, compute_uv=False)
        assert eig[0] == pytest.approx(-sv[0], rel=1e-10)
        np.testing.assert_allclose(np.sort(eig[eig > 1e-9]), np.sort(np.repeat(sv, 3)), rtol=1e-10)


def test_a_false_claim_is_not_reproduced() -> None:
    """Claiming 'every H >= 3 saddle has a negative eigenvalue' fails on our own run."""
    config = module_defaults("kawaguchi_deep_linear")
    cfg = resolve({**config, "scale": "smoke"}, "kawaguchi_deep_linear")
    measurements = steps.critical_points(cfg).measurements
    false_claim = {
        "id": "false", "statement": "no bad saddles for H >= 3", "where": "-", "measured": "-",
        "rule": {"type": "equals", "quantity": "deep_saddles_without_negative_curvature", "target": 0},
    }
    assert judge(false_claim, measurements).verdict == "not reproduced"
    true_claim = {**false_claim, "rule": {**false_claim["rule"], "type": "at_least", "threshold": 1}}
    assert judge(true_claim, measurements).verdict == "reproduced"


def test_compressed_problem_has_the_same_loss_and_spectrum() -> None:
    """(Rᵀ, YQ) + offset reproduces the loss of any product and Σ's eigenvalues exactly."""
    rng = np.random.default_rng(5)
    x, y = rng.standard_normal((6, 200)), rng.standard_normal((3, 200))
    full = theory.Problem(x=x, y=y)
    small = full.compressed()
    assert small.x.shape == (6, 6) and small.y.shape == (3, 6)
    for _ in range(3):
        w = rng.standard_normal((3, 6))
        assert small.loss(w) == pytest.approx(full.loss(w), rel=1e-12)
    np.testing.assert_allclose(small.eigensystem()[0], full.eigensystem()[0], rtol=1e-10)
    lam = full.eigensystem()[0]
    assert theory.global_min(small.eigensystem()[0], small.y, 2, small.offset) == pytest.approx(
        theory.global_min(lam, full.y, 2), rel=1e-12)


def test_real_problem_reads_digits_whitened_with_one_hot_targets() -> None:
    cfg = {"seed": 0, "data_dir": None, "real_data": {"dataset": "digits", "pca": 12}}
    problem, description = steps.real_problem(cfg)
    assert problem.x.shape == (12, 12) and problem.y.shape == (10, 12)
    assert "digits" in description.lower()
    lam = problem.eigensystem()[0]
    assert np.all(np.diff(lam) < 0)  # distinct eigenvalues of Σ (the theorem's assumption)
    # one-hot targets / √m: ½‖Y‖² = ½ before compression
    assert problem.half_y_norm2 == pytest.approx(0.5, rel=1e-12)
