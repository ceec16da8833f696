"""The critical-point finder (shared.critical.finder) against ground truth: MINRES against SciPy and a
dense solve, Newton-MR on quadratics, planted saddles and planted gradient-flat regions (each point
classified as what it is), saddle-free Newton against its dense formula."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.sparse.linalg as spla

from shared.critical import finder

pytestmark = pytest.mark.x64


def _sym(rng: np.random.Generator, n: int, eig: np.ndarray) -> np.ndarray:
    q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    return (q * eig) @ q.T


def test_minres_matches_scipy_and_a_dense_solve() -> None:
    rng = np.random.default_rng(0)
    a = _sym(rng, 12, np.array([-3.0, -1.0, -0.2, 0.3, 0.5, 1, 2, 3, 4, 5, 6, 7]))  # indefinite, invertible
    b = rng.standard_normal(12)
    x, iters, _ = finder.minres(lambda v: jnp.asarray(a) @ v, jnp.asarray(b), rtol=1e-14, maxiter=50)
    dense = np.linalg.solve(a, b)
    op = spla.LinearOperator((12, 12), matvec=lambda v: a @ v, dtype=np.float64)
    scipy_iters = [0]

    def count(_: np.ndarray) -> None:
        scipy_iters[0] += 1

    ref, info = spla.minres(op, b, rtol=1e-14, maxiter=50, callback=count)
    assert info == 0
    np.testing.assert_allclose(np.asarray(x), dense, rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(np.asarray(x), ref, rtol=1e-9, atol=1e-11)
    # about n = 12 iterations; at rtol 1e-14 the last ones fight float64 rounding, so the exact count
    # depends on the machine's BLAS (13 or 14 seen): compare with SciPy's MINRES on the same machine
    assert abs(int(iters) - scipy_iters[0]) <= 1 and int(iters) <= 12 + 3
    # a few iterations: the same Krylov iterate as SciPy's
    x3, _, _ = finder.minres(lambda v: jnp.asarray(a) @ v, jnp.asarray(b), rtol=1e-30, maxiter=3)
    ref3, _ = spla.minres(op, b, rtol=1e-30, maxiter=3)
    np.testing.assert_allclose(np.asarray(x3), ref3, rtol=1e-10, atol=1e-12)


def test_minres_on_a_singular_incompatible_system_gives_a_least_squares_step() -> None:
    rng = np.random.default_rng(1)
    eig = np.array([-2.0, 0.0, 0.0, 0.5, 1.0, 3.0])
    a = _sym(rng, 6, eig)
    b = rng.standard_normal(6)  # has a component in the kernel: no exact solution
    x, _, rel = finder.minres(lambda v: jnp.asarray(a) @ v, jnp.asarray(b), rtol=1e-12, maxiter=50)
    lstsq = np.linalg.pinv(a) @ b
    lam, vec = np.linalg.eigh(a)
    kernel = vec[:, np.abs(lam) < 1e-12]
    x = np.asarray(x)
    assert np.all(np.isfinite(x)) and np.linalg.norm(x) < 10 * np.linalg.norm(lstsq)  # SciPy's is ~1e13 here
    # a least-squares solution: A⁺b plus a kernel vector
    np.testing.assert_allclose(x - kernel @ (kernel.T @ x), lstsq, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(np.linalg.norm(a @ x - b), np.linalg.norm(a @ lstsq - b), rtol=1e-8)
    assert float(rel) == pytest.approx(np.linalg.norm(kernel.T @ b) / np.linalg.norm(b), rel=1e-6)


def test_minres_is_vmappable() -> None:
    rng = np.random.default_rng(2)
    a = jnp.asarray(_sym(rng, 8, np.linspace(-2, 3, 8)))
    bs = jnp.asarray(rng.standard_normal((5, 8)))
    xs, _, _ = jax.vmap(lambda b: finder.minres(lambda v: a @ v, b, rtol=1e-13, maxiter=40))(bs)
    np.testing.assert_allclose(np.asarray(xs), np.linalg.solve(np.asarray(a), np.asarray(bs).T).T, rtol=1e-8)


def test_newton_mr_on_a_quadratic_is_one_newton_step() -> None:
    rng = np.random.default_rng(3)
    a = _sym(rng, 10, np.array([-4.0, -1, 0.5, 1, 2, 3, 4, 5, 6, 9]))
    c = rng.standard_normal(10)
    loss = lambda x: 0.5 * x @ jnp.asarray(a) @ x - jnp.asarray(c) @ x
    starts = rng.standard_normal((4, 10))
    found, pts = finder.find_critical_points(loss, starts, steps=10)
    exact = np.linalg.solve(a, c)
    np.testing.assert_allclose(found.points, np.tile(exact, (4, 1)), rtol=1e-9, atol=1e-10)
    assert (found.steps <= 2).all()
    assert set(pts.category) == {finder.CRITICAL}
    assert (pts.index == 2).all() and (pts.near_zero == 0).all()


def _planted(lam: np.ndarray):  # type: ignore[no-untyped-def]
    """L = Σ ½λ_i x_i² + ¼ x_i⁴: critical where each x_i ∈ {0} ∪ {±√(−λ_i) if λ_i < 0};
    the Hessian is diagonal, λ_i at x_i = 0 and −2λ_i at x_i = ±√(−λ_i)."""
    lj = jnp.asarray(lam)
    return lambda x: jnp.sum(0.5 * lj * x**2 + 0.25 * x**4)


def test_planted_saddles_are_found_with_their_index() -> None:
    lam = np.array([-1.0, -0.5, 2.0])
    loss = _planted(lam)
    rng = np.random.default_rng(4)
    starts = rng.uniform(-1.5, 1.5, size=(200, 3))
    found, pts = finder.find_critical_points(loss, starts, steps=60)
    crit = pts.category == finder.CRITICAL
    assert crit.mean() > 0.9
    # every critical point found is one of the 9 planted ones, with the planted index
    planted = {}
    for a, b in itertools.product((0.0, 1.0, -1.0), (0.0, np.sqrt(0.5), -np.sqrt(0.5))):
        planted[(a, b, 0.0)] = int(a == 0) + int(b == 0)
    seen = set()
    for x, index in zip(found.points[crit], pts.index[crit], strict=True):
        key = min(planted, key=lambda p: np.linalg.norm(np.asarray(p) - x))
        assert np.linalg.norm(np.asarray(key) - x) < 1e-8
        assert index == planted[key]
        seen.add(key)
    assert len(seen) >= 7  # Newton-MR is attracted by saddles as much as by minima
    assert {0, 1, 2} <= set(pts.index[crit].tolist())


def test_a_planted_gradient_flat_region_is_flagged_not_critical() -> None:
    """L = x² + ε y: the line x = 0 is gradient-flat (g = (0, ε) lies in ker H = span e_y);
    no critical point exists, and Newton-MR stops on the line."""
    eps = 1e-3
    loss = lambda v: v[0] ** 2 + eps * v[1]
    starts = np.random.default_rng(5).standard_normal((20, 2))
    for method in ("newton_mr", "gradient_norm"):
        found, pts = finder.find_critical_points(loss, starts, method=method, steps=200)
        assert set(pts.category) == {finder.GRADIENT_FLAT}, (method, pts.frame())
        np.testing.assert_allclose(pts.grad_norm, eps, rtol=1e-6)
        np.testing.assert_allclose(pts.kernel_fraction, 1.0, rtol=1e-6)
        assert (np.abs(found.points[:, 0]) < 1e-6).all()


def test_gradient_flat_beside_a_true_critical_point() -> None:
    """L = ½(x² − y²) + ¼y⁴ + δ z²(1 + w)... kept simple: a saddle at the origin of a 2D
    quadratic is critical; the same saddle with a linear tilt along a flat third direction is
    gradient-flat, and a slope far from both is not converged."""
    saddle = lambda v: 0.5 * (v[0] ** 2 - v[1] ** 2) + 0.0 * v[2]
    tilted = lambda v: 0.5 * (v[0] ** 2 - v[1] ** 2) + 1e-2 * v[2]
    at = np.zeros((1, 3))
    assert finder.describe(saddle, at).category[0] == finder.CRITICAL
    assert finder.describe(saddle, at).index[0] == 1 and finder.describe(saddle, at).near_zero[0] == 1
    assert finder.describe(tilted, at).category[0] == finder.GRADIENT_FLAT
    assert finder.describe(saddle, np.array([[1.0, 0.5, 0.0]])).category[0] == finder.NOT_CONVERGED
    nan = finder.describe(lambda v: jnp.log(v[0]), np.array([[-1.0, 0.0, 0.0], [1.0, 0.0, 0.0]]))
    assert list(nan.category) == [finder.DIVERGED, finder.NOT_CONVERGED]


def test_gradient_norm_minimization_is_slower_than_newton_mr() -> None:
    lam = np.array([-1.0, 3.0, 0.2, 1.0])
    loss = _planted(lam)
    starts = np.random.default_rng(6).uniform(-1, 1, size=(20, 4))
    _, newton = finder.find_critical_points(loss, starts, steps=30)
    _, gnm = finder.find_critical_points(loss, starts, method="gradient_norm", steps=30)
    assert (newton.category == finder.CRITICAL).mean() > (gnm.category == finder.CRITICAL).mean()


def test_hessians_match_a_finite_difference() -> None:
    loss = _planted(np.array([-1.0, 0.5]))
    x = np.array([[0.3, -0.7]])
    h = finder.hessians(loss, x)[0]
    np.testing.assert_allclose(h, np.diag([-1.0 + 3 * 0.09, 0.5 + 3 * 0.49]), rtol=1e-12)


def test_saddle_free_newton_step_is_the_dense_formula() -> None:
    rng = np.random.default_rng(7)
    eig = np.array([-3.0, -0.5, 0.1, 1.0, 4.0, 8.0])
    h = _sym(rng, 6, eig)
    g = rng.standard_normal(6)
    lam, vec = np.linalg.eigh(h)
    absh = (vec * np.abs(lam)) @ vec.T
    np.testing.assert_allclose(np.asarray(finder.sfn_step(h, g)), -np.linalg.solve(absh, g), rtol=1e-10)
    # damping adds to |Λ|
    np.testing.assert_allclose(np.asarray(finder.sfn_step(h, g, damping=0.5)),
                               -np.linalg.solve(absh + 0.5 * np.eye(6), g), rtol=1e-10)
    # it descends (−gᵀ|H|⁻¹g < 0) where Newton's step −H⁻¹g need not
    assert g @ np.asarray(finder.sfn_step(h, g)) < 0
    # the Krylov variant with the full space is the exact step
    hj = jnp.asarray(h)
    full = finder.sfn_krylov_step(lambda v: hj @ v, jnp.asarray(g), 6)
    np.testing.assert_allclose(np.asarray(full), -np.linalg.solve(absh, g), rtol=1e-8)


def test_saddle_free_newton_escapes_a_saddle_newton_converges_to() -> None:
    """L = ½(x² − y²) + ¼y⁴ from (0.5, 0.01): Newton goes to the saddle (0, 0), SFN to the minimum (0, ±1)."""
    loss = lambda v: 0.5 * (v[0] ** 2 - v[1] ** 2) + 0.25 * v[1] ** 4
    newton = jax.jit(lambda x: x - jnp.linalg.solve(jax.hessian(loss)(x), jax.grad(loss)(x)))
    sfn = jax.jit(lambda x: x + finder.sfn_step(jax.hessian(loss)(x), jax.grad(loss)(x)))
    x_newton = x_sfn = jnp.array([0.5, 0.01])
    for _ in range(20):
        x_newton, x_sfn = newton(x_newton), sfn(x_sfn)
    np.testing.assert_allclose(np.asarray(x_newton), [0, 0], atol=1e-10)
    np.testing.assert_allclose(np.abs(np.asarray(x_sfn)), [0, 1], atol=1e-8)


# --- the validation on Baldi & Hornik (shared.critical.validation) -------------------------------

# The claims the search decides (what the lead wires into baldi_linear_autoencoder/claims.yaml):
B1_SEARCH = {"id": "B1-search", "statement": "s", "where": "w", "measured": "m", "paper_value": 0,
             "rule": {"type": "equals", "quantity": "search_unmatched_critical", "target": 0}}
B3_SEARCH = {"id": "B3-search", "statement": "s", "where": "w", "measured": "m", "paper_value": 0,
             "rule": {"type": "all_of", "rules": [
                 {"type": "equals", "quantity": "search_nonglobal_minima_found", "target": 0},
                 {"type": "equals", "quantity": "search_minimum_found", "target": True}]}}


def _baldi_problem(n: int = 4, p: int = 2):  # type: ignore[no-untyped-def]
    from replications.baldi_linear_autoencoder import theory

    rng = np.random.default_rng(8)
    x = theory.synthetic_patterns(rng, np.arange(n, 0, -1.0), 50)
    return x.T @ x, rng


def _judge(claim: dict, measurements: dict) -> str:  # type: ignore[type-arg]
    from shared.claims import judge

    return judge(claim, {f"search_{k}": v for k, v in measurements.items()}).verdict


def test_baldi_search_finds_only_enumerated_points_with_their_index() -> None:
    from shared.critical import validation

    sigma, rng = _baldi_problem()
    starts = validation.random_starts(rng, 150, 4, 2)
    m, runs, per_set = validation.linear_autoencoder_search(sigma, 2, starts, steps=80)
    assert m["critical_fraction"] > 0.7 and m["unmatched_critical"] == 0
    assert m["nonglobal_minima_found"] == 0 and m["minimum_found"]
    assert m["index_mismatches_full_rank"] == 0
    assert m["sets_recovered"] >= 8  # of 11 index sets with |I| <= 2
    crit = runs[runs.category == finder.CRITICAL]
    # the loss at every matched point is the closed form E(I)
    closed = dict(zip(per_set.index_set, per_set.loss_theory, strict=True))
    np.testing.assert_allclose(crit.loss, [closed[s] for s in crit.matched_set], rtol=1e-9)
    assert _judge(B1_SEARCH, m) == "reproduced" and _judge(B3_SEARCH, m) == "reproduced"


def test_a_wrong_theory_is_not_reproduced_by_the_search() -> None:
    """Planted: match against the critical points of another Σ (rotated eigenvectors: B1 fails, every
    point is unmatched), and of Σ with its eigenvalues reordered (the true minimum is matched to an
    index set the wrong theory calls a saddle: B3 fails)."""
    from shared.critical import validation

    sigma, rng = _baldi_problem()
    starts = validation.random_starts(rng, 60, 4, 2)
    q, _ = np.linalg.qr(rng.standard_normal((4, 4)))
    rotated = q @ sigma @ q.T
    m, runs, _ = validation.linear_autoencoder_search(sigma, 2, starts, steps=80, reference_sigma=rotated)
    assert m["unmatched_critical"] > 0  # all but W = 0, the one point every Σ shares
    assert set(runs[runs.category == finder.CRITICAL].matched_set) == {"", "{}"}
    assert _judge(B1_SEARCH, m) == "not reproduced"
    lam, vec = np.linalg.eigh(sigma)
    reordered = (vec * lam[::-1]) @ vec.T  # same eigenvectors, the order of the eigenvalues reversed
    m, _, _ = validation.linear_autoencoder_search(sigma, 2, starts, steps=80, reference_sigma=reordered)
    assert m["unmatched_critical"] == 0 and m["nonglobal_minima_found"] > 0
    assert _judge(B3_SEARCH, m) == "not reproduced"


def test_the_ready_baldi_step_returns_its_declared_quantities() -> None:
    from shared.critical import validation

    sigma, rng = _baldi_problem(3, 1)
    result = validation.autoencoder_search_result(sigma, 1, rng, starts=8, steps=20, baseline_starts=4,
                                                  baseline_steps=10)
    assert set(result.measurements) == set(validation.SEARCH_QUANTITIES)
    assert set(result.tables) == {"search_runs", "search_sets"} and set(result.figures) == {"critical_search"}
    import matplotlib.pyplot as plt

    plt.close("all")


K2_SEARCH = {"id": "K2-search", "statement": "s", "where": "w", "measured": "m", "paper_value": 0,
             "rule": {"type": "all_of", "rules": [
                 {"type": "equals", "quantity": "search_nonglobal_minimum_candidates", "target": 0},
                 {"type": "at_least", "quantity": "search_critical", "threshold": 1}]}}


def test_deep_linear_search_and_a_false_optimum() -> None:
    """Kawaguchi's K2 from a search on a depth-3 net: no non-global minimum candidate. Planted: an
    optimum below the true one makes every global minimum found a non-global candidate."""
    from replications.kawaguchi_deep_linear import theory
    from shared.critical import validation

    rng = np.random.default_rng(9)
    prob = theory.make_problem(rng, 3, 10, [2.0, 1.0], 0.3)
    lam, _ = prob.eigensystem()
    widths = [3, 2, 2, 2]
    optimum = theory.global_min(lam, prob.y, 2)
    starts = np.exp(rng.uniform(np.log(0.3), np.log(2.0), (12, 1))) * rng.standard_normal((12, 14))
    # and 4 starts near a global minimizer (the closed form, theory.critical_point with I = {1, 2})
    layers = theory.critical_point(prob, widths, (0, 1), [np.eye(2), np.eye(2)])
    best = np.concatenate([w.ravel() for w in layers])
    starts = np.vstack([starts, best + 0.05 * rng.standard_normal((4, 14))])
    kw = dict(key=jax.random.key(0), lr=0.02, escape_steps=100, steps=50)
    m, runs = validation.deep_linear_search(prob.x, prob.y, widths, optimum, starts, **kw)
    assert m["critical"] >= 6 and m["at_global"] >= 1 and m["nonglobal_minimum_candidates"] == 0
    assert _judge(K2_SEARCH, m) == "reproduced"
    m, _ = validation.deep_linear_search(prob.x, prob.y, widths, optimum - 0.5, starts, **kw)
    assert m["nonglobal_minimum_candidates"] >= 1
    assert _judge(K2_SEARCH, m) == "not reproduced"
