"""Keskar et al.'s Metric 2.1 on quadratics, whose maximum over a box is at a vertex.

f(z) = f₀ + gᵀ(z − x) + ½(z − x)ᵀH(z − x): H is the Hessian and g the gradient at x, so
Δ(y) = f(x + Ay) − f(x) = (Aᵀg)ᵀy + ½ yᵀ(AᵀHA)y on the box |y_i| ≤ b_i = ε(|(A⁺x)_i| + 1).
Ground truths: for diagonal AᵀHA (A = I or A = scaled coordinate columns) the separable
closed form Δ* = Σ_i max_{±} (½ m_i b_i² ± (Aᵀg)_i b_i) = Σ_i ½ m_i b_i² + |(Aᵀg)_i| b_i;
otherwise the maximum over all 2ᵖ vertices (p ≤ 12). The realistic case, a trained minimum,
is a tiny (1e-6) or zero gradient, run in float32 as the networks are: the float32 tests
compare Δ with rtol 1e-4 (f(x + Ay) − f(x) is formed from float32 x + y, whose rounding is
≲ 6e-8|x|/b_i ≈ 6e-5 of each coordinate's step, averaging out over coordinates; the choice
of the ± vertex changes Δ by |g|b ≈ 1e-9 per coordinate, far below that). The float64
tests (large gradients, ``x64`` fixture) compare to 1e-9.
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from shared.sharpness.keskar import (
    LBFGSB_OPTIONS,
    NoProgressError,
    NoProgressWarning,
    box_bound,
    keskar_sharpness,
    random_subspace,
)

# any unexpected no-progress warning fails the test; the tests that expect one catch it
pytestmark = pytest.mark.filterwarnings("error::shared.sharpness.keskar.NoProgressWarning")

F0 = 0.1  # f(x) of the float32 quadratics (the metric divides by 1 + f(x))


@pytest.fixture
def x64():
    with jax.enable_x64(True):
        yield


def quadratic(h: np.ndarray, g: np.ndarray):
    hj, gj = jnp.asarray(h), jnp.asarray(g)
    return lambda x: 0.5 * x @ hj @ x + gj @ x


def around(x: np.ndarray, h: np.ndarray, g: np.ndarray, f0: float = F0):
    """f(z) = f0 + gᵀ(z − x) + ½(z − x)ᵀH(z − x) in x's dtype (H a vector: diagonal)."""
    xj, hj, gj = (jnp.asarray(v, x.dtype) for v in (x, h, g))
    if h.ndim == 1:
        return lambda z: f0 + gj @ (z - xj) + 0.5 * (z - xj) @ (hj * (z - xj))
    return lambda z: f0 + gj @ (z - xj) + 0.5 * (z - xj) @ (hj @ (z - xj))


def separable_max(m: np.ndarray, c: np.ndarray, b: np.ndarray) -> float:
    """max over |y_i| ≤ b_i of Σ ½ m_i y_i² + c_i y_i, m ≥ 0: each term at its better vertex."""
    m, c, b = (np.asarray(v, np.float64) for v in (m, c, b))
    return float(np.sum(np.maximum(0.5 * m * b**2 + c * b, 0.5 * m * b**2 - c * b)))


def vertex_max(m: np.ndarray, c: np.ndarray, b: np.ndarray) -> float:
    """max over the 2ᵖ vertices y = ±b of ½ yᵀMy + cᵀy (brute force, p ≤ 12; float64)."""
    m, c, b = (np.asarray(v, np.float64) for v in (m, c, b))
    y = np.array(list(itertools.product([-1.0, 1.0], repeat=b.size))) * b
    return float(np.max(0.5 * np.einsum("ij,jk,ik->i", y, m, y) + y @ c))


def gradient(kind: str, rng: np.random.Generator, n: int) -> np.ndarray:
    """A trained minimum's gradient: ±1e-6 entries ("tiny") or exactly 0 ("zero")."""
    return np.zeros(n, np.float32) if kind == "zero" else (1e-6 * rng.choice([-1.0, 1.0], n)).astype(np.float32)


# ---------------------------------------------------------------- float64, large gradient


@pytest.mark.parametrize("init", ["zero", "random"])
def test_full_space_matches_the_separable_closed_form(x64, init):
    rng = np.random.default_rng(0)
    n, eps = 30, 1e-2
    h = rng.uniform(0.0, 50.0, size=n)
    g = rng.normal(size=n)
    x = rng.normal(size=n)
    f = quadratic(np.diag(h), g)
    res = keskar_sharpness(f, jnp.asarray(x), epsilon=eps, init=init)
    b = eps * (np.abs(x) + 1)  # box on y, A = I
    grad = h * x + g
    f0 = 0.5 * x @ (h * x) + g @ x
    fmax = f0 + np.sum(0.5 * h * b**2 + np.abs(grad) * b)  # each coordinate at its farther bound
    assert res.loss == pytest.approx(f0, rel=1e-12)
    assert res.max_loss == pytest.approx(fmax, rel=1e-9)
    assert res.sharpness == pytest.approx(100 * (fmax - f0) / (1 + f0), rel=1e-8)
    np.testing.assert_allclose(np.abs(res.y), b, rtol=1e-9)
    assert res.nit <= 10 and res.dim is None and res.init == init and not res.no_progress


def test_subspace_matches_vertex_enumeration(x64):
    rng = np.random.default_rng(1)
    n, p, eps = 12, 4, 5e-2
    m = rng.normal(size=(n, n))
    h = m @ m.T / n  # PSD, not diagonal: the maximum over the box is at one of 2^p vertices
    g = 3.0 * rng.normal(size=n)
    x = rng.normal(size=n)
    f = quadratic(h, g)
    a = np.asarray(random_subspace(jax.random.key(3), n, p, jnp.float64))
    res = keskar_sharpness(f, jnp.asarray(x), epsilon=eps, subspace=jnp.asarray(a))
    b = eps * (np.abs(np.linalg.pinv(a) @ x) + 1)  # box on y from the pseudo-inverse A⁺x
    np.testing.assert_allclose(res.bound, b, rtol=1e-10)
    fx = lambda z: 0.5 * z @ h @ z + g @ z
    vertices = [np.array(s) * b for s in itertools.product([-1.0, 1.0], repeat=p)]
    best = max(fx(x + a @ y) for y in vertices)
    assert res.dim == p
    assert res.max_loss == pytest.approx(best, rel=1e-9)
    assert res.sharpness == pytest.approx(100 * (best - fx(x)) / (1 + fx(x)), rel=1e-8)


def test_seeded_subspace_and_random_start_are_reproducible(x64):
    rng = np.random.default_rng(2)
    n = 20
    f = quadratic(np.diag(rng.uniform(1, 5, size=n)), rng.normal(size=n))
    x = jnp.asarray(rng.normal(size=n))
    a = keskar_sharpness(f, x, epsilon=1e-3, dim=5, key=jax.random.key(0), init="random")
    b = keskar_sharpness(f, x, epsilon=1e-3, dim=5, key=jax.random.key(0), init="random")
    assert a.sharpness == b.sharpness > 0
    assert np.all(np.abs(a.y) <= a.bound * (1 + 1e-12))
    # jitted value-and-gradient passes: f(x) plus one per L-BFGS-B evaluation (none at y = 0)
    assert a.evals == a.nfev + 1
    # without a key the start is drawn from the fixed key(0): still deterministic
    c = keskar_sharpness(f, x, epsilon=1e-3)
    d = keskar_sharpness(f, x, epsilon=1e-3, key=jax.random.key(0))
    assert c.sharpness == d.sharpness > 0 and np.array_equal(c.y, d.y)
    z = keskar_sharpness(f, x, epsilon=1e-3, init="zero")
    assert z.evals == z.nfev  # y = 0 is f(x): its cached value and gradient are reused
    with pytest.raises(ValueError):
        keskar_sharpness(f, x, epsilon=1e-3, dim=5)  # a random subspace needs a key


def test_box_bound_full_space():
    x = jnp.asarray([0.0, -2.0, 3.0])
    np.testing.assert_allclose(box_bound(x, 0.1), [0.1, 0.3, 0.4])


# ------------------------------------------- float32, tiny or zero gradient (a trained minimum)


def test_scipy_tolerances_cannot_stop_the_search():
    assert LBFGSB_OPTIONS == {"gtol": 0.0, "ftol": 0.0}


@pytest.mark.parametrize("grad", ["tiny", "zero"])
def test_full_space_diagonal_at_a_minimum_matches_the_closed_form(grad):
    """The audit's case: n = 200, ε = 1e-3, H = diag(U(0, 100)); Δ* = Σ ½h_i b_i² + |g_i| b_i."""
    rng = np.random.default_rng(10)
    n, eps = 200, 1e-3
    h = rng.uniform(0.0, 100.0, n).astype(np.float32)
    x = rng.normal(size=n).astype(np.float32)
    g = gradient(grad, rng, n)
    res = keskar_sharpness(around(x, h, g), jnp.asarray(x), epsilon=eps, key=jax.random.key(0))
    b = eps * (np.abs(x.astype(np.float64)) + 1)
    np.testing.assert_allclose(res.bound, b, rtol=1e-6)  # ε(|x_i| + 1), computed in float32
    delta = separable_max(h, g, b)
    assert res.loss == pytest.approx(F0, rel=1e-6)
    assert res.max_loss - res.loss == pytest.approx(delta, rel=1e-4)
    assert res.sharpness == pytest.approx(100 * delta / (1 + F0), rel=1e-4)  # ≈ 1.9 (was 0)
    assert res.nit >= 1 and not res.no_progress and res.max_loss > res.start_loss
    assert np.all(np.abs(res.y) <= res.bound)
    np.testing.assert_allclose(np.abs(res.y), res.bound, rtol=1e-6)  # the maximiser is a vertex


def test_zero_start_with_a_tiny_gradient_is_not_stopped_by_the_tolerances():
    """The audit's reproduction: y = 0 with |∇f| = 1e-6 < scipy's default gtol used to stop at
    nit = 0 with φ = 0; with gtol = ftol = 0 the search leaves y = 0 and reaches Δ*."""
    rng = np.random.default_rng(10)
    n, eps = 200, 1e-3
    h = rng.uniform(0.0, 100.0, n).astype(np.float32)
    x = rng.normal(size=n).astype(np.float32)
    g = gradient("tiny", rng, n)
    res = keskar_sharpness(around(x, h, g), jnp.asarray(x), epsilon=eps, init="zero")
    delta = separable_max(h, g, eps * (np.abs(x.astype(np.float64)) + 1))
    assert res.nit >= 1 and not res.no_progress
    assert res.max_loss - res.loss == pytest.approx(delta, rel=1e-4)


@pytest.mark.parametrize("grad", ["tiny", "zero"])
def test_scaled_coordinate_subspace_matches_the_closed_form(grad):
    """A = S·D (p = 100 of n = 300 coordinates, column j scaled by d_j): A⁺x = x_S / d, so the
    box is b_j = ε(|x_{S_j}| / d_j + 1) and AᵀHA = diag(d² h_S), Aᵀg = d g_S: separable."""
    rng = np.random.default_rng(11)
    n, p, eps = 300, 100, 1e-3
    h = rng.uniform(0.0, 100.0, n).astype(np.float32)
    x = rng.normal(size=n).astype(np.float32)
    g = gradient(grad, rng, n)
    cols = np.sort(rng.choice(n, p, replace=False))
    d = rng.uniform(0.5, 2.0, p).astype(np.float32)
    a = np.zeros((n, p), np.float32)
    a[cols, np.arange(p)] = d
    res = keskar_sharpness(around(x, h, g), jnp.asarray(x), epsilon=eps, subspace=jnp.asarray(a),
                           key=jax.random.key(1))
    b = eps * (np.abs(x[cols].astype(np.float64) / d) + 1)
    np.testing.assert_allclose(res.bound, b, rtol=1e-5)  # ε(|(A⁺x)_j| + 1)
    delta = separable_max(d.astype(np.float64) ** 2 * h[cols], d * g[cols], b)
    assert res.dim == p and not res.no_progress
    assert res.max_loss - res.loss == pytest.approx(delta, rel=1e-4)
    assert res.sharpness == pytest.approx(100 * delta / (1 + F0), rel=1e-4)


@pytest.mark.parametrize("grad", ["tiny", "zero"])
def test_gaussian_subspace_diagonal_hessian_matches_vertex_enumeration(grad):
    """Random A (N(0, 1), n = 60, p = 4): AᵀHA is dense, ground truth = best of the 2⁴ vertices
    of the box ε(|(A⁺x)_i| + 1) (A⁺ = pinv in float64). AᵀHA ≈ 60·mean(h)·I is diagonally
    dominant, so almost every vertex is a local maximum and one run stops at the first vertex
    it reaches (checked: a KKT vertex, ≤ Δ*); 32 seeded restarts cover the 8 ± pairs."""
    rng = np.random.default_rng(12)
    n, p, eps = 60, 4, 1e-3
    h = rng.uniform(0.0, 100.0, n).astype(np.float32)
    x = rng.normal(size=n).astype(np.float32)
    g = gradient(grad, rng, n)
    f = around(x, h, g)
    key = jax.random.key(2)
    a = np.asarray(random_subspace(jax.random.fold_in(key, 0), n, p, jnp.float32), np.float64)
    b = eps * (np.abs(np.linalg.pinv(a) @ x) + 1)
    m, c = a.T @ (h[:, None] * a), a.T @ g
    delta = vertex_max(m, c, b)

    one = keskar_sharpness(f, jnp.asarray(x), epsilon=eps, dim=p, key=key)
    np.testing.assert_allclose(one.bound, b, rtol=1e-4)
    assert not one.no_progress and 0 < one.max_loss - one.loss <= delta * (1 + 1e-4)
    np.testing.assert_allclose(np.abs(one.y), one.bound, rtol=1e-6)
    assert np.all(np.sign(one.y) * (m @ one.y + c) >= 0)

    best = keskar_sharpness(f, jnp.asarray(x), epsilon=eps, dim=p, key=key, restarts=32)
    assert best.max_loss - best.loss == pytest.approx(delta, rel=1e-4)
    assert best.restarts == 32 and best.nit >= 32 and not best.no_progress


@pytest.mark.parametrize("grad", ["tiny", "zero"])
@pytest.mark.parametrize("space", ["full", "subspace"])
def test_dense_hessian_matches_vertex_enumeration(grad, space):
    """Dense PSD H (n = 12): ground truth = best of the 2¹² (full) or 2⁶ (p = 6) vertices.
    The box maximum of a non-separable quadratic has local maxima at other vertices: one start
    ends at a local one (a KKT vertex, ≤ Δ*; here 83 % / 93 % of Δ*); seeded restarts (32 / 8;
    8 / 4 would do) find Δ* here."""
    rng = np.random.default_rng(13)
    n, eps = 12, 5e-2
    m = rng.normal(size=(n, n))
    h = (m @ m.T / n).astype(np.float32)
    x = rng.normal(size=n).astype(np.float32)
    g = gradient(grad, rng, n)
    f = around(x, h, g)
    key = jax.random.key(3)
    if space == "full":
        a, kw, restarts = np.eye(n), {}, 32
    else:
        a = np.asarray(random_subspace(jax.random.key(4), n, 6, jnp.float32), np.float64)
        kw, restarts = {"subspace": jnp.asarray(a, jnp.float32)}, 8
    b = eps * (np.abs(np.linalg.pinv(a) @ x) + 1)
    m64 = a.T @ h.astype(np.float64) @ a
    delta = vertex_max(m64, a.T @ g, b)

    one = keskar_sharpness(f, jnp.asarray(x), epsilon=eps, key=key, **kw)
    np.testing.assert_allclose(one.bound, b, rtol=1e-4)
    assert not one.no_progress and 0 < one.max_loss - one.loss <= delta * (1 + 1e-4)
    np.testing.assert_allclose(np.abs(one.y), one.bound, rtol=1e-6)  # ended at a vertex …
    assert np.all(np.sign(one.y) * (m64 @ one.y + a.T @ g) >= 0)  # … whose gradient points out

    best = keskar_sharpness(f, jnp.asarray(x), epsilon=eps, key=key, restarts=restarts, **kw)
    assert best.max_loss - best.loss == pytest.approx(delta, rel=1e-4)
    assert best.max_loss >= one.max_loss  # restart 0 is the single run's start


def test_start_point_is_small_seeded_and_inside_the_box():
    """y₀ = start_scale · u ⊙ b, u = U(−1, 1) from fold_in(key, 1): maxiter = 0 returns it
    (f(y₀) > f(x) for a convex quadratic with ∇f(x) = 0); start_scale = 1 spreads it over
    the whole box."""
    rng = np.random.default_rng(18)
    n = 40
    x = rng.normal(size=n).astype(np.float32)
    f = around(x, rng.uniform(1.0, 5.0, n).astype(np.float32), np.zeros(n, np.float32))
    key = jax.random.key(7)
    u = np.asarray(jax.random.uniform(jax.random.fold_in(key, 1), (n,), jnp.float32, -1, 1), np.float64)
    for scale in (1e-2, 1.0):
        res = keskar_sharpness(f, jnp.asarray(x), epsilon=1e-2, key=key, maxiter=0, start_scale=scale,
                               on_no_progress="ignore")
        np.testing.assert_array_equal(res.y, scale * u * res.bound)
        assert res.start_loss == res.max_loss > res.loss
    with pytest.raises(ValueError):
        keskar_sharpness(f, jnp.asarray(x), epsilon=1e-2, start_scale=0.0)


# ------------------------------------------------------------------------- no-progress flag


def test_zero_start_at_an_exact_critical_point_is_flagged():
    """The old default (y = 0) at ∇f(x) = 0: L-BFGS-B cannot move (nit = 0) and φ = 0 is now
    flagged — warning, error or silent — instead of being reported as a sharpness."""
    rng = np.random.default_rng(14)
    n = 50
    h = rng.uniform(0.0, 100.0, n).astype(np.float32)
    x = rng.normal(size=n).astype(np.float32)
    f = around(x, h, np.zeros(n, np.float32))
    with pytest.warns(NoProgressWarning, match="no progress"):
        res = keskar_sharpness(f, jnp.asarray(x), epsilon=1e-3, init="zero")
    assert res.no_progress and res.nit == 0 and res.sharpness == 0.0
    with pytest.raises(NoProgressError):
        keskar_sharpness(f, jnp.asarray(x), epsilon=1e-3, init="zero", on_no_progress="raise")
    quiet = keskar_sharpness(f, jnp.asarray(x), epsilon=1e-3, init="zero", on_no_progress="ignore")
    assert quiet.no_progress
    fixed = keskar_sharpness(f, jnp.asarray(x), epsilon=1e-3)  # the random start moves
    assert not fixed.no_progress and fixed.sharpness > 0


def test_maxiter_zero_is_flagged():
    rng = np.random.default_rng(15)
    x = rng.normal(size=20).astype(np.float32)
    f = around(x, rng.uniform(1.0, 5.0, 20).astype(np.float32), np.zeros(20, np.float32))
    with pytest.warns(NoProgressWarning):
        res = keskar_sharpness(f, jnp.asarray(x), epsilon=1e-2, maxiter=0, key=jax.random.key(0))
    assert res.no_progress and res.nit == 0 and res.evals == 2  # f(x) and f at the start
    assert res.max_loss == pytest.approx(res.start_loss) and res.start_loss > res.loss
    with pytest.raises(ValueError):
        keskar_sharpness(f, jnp.asarray(x), epsilon=1e-2, maxiter=-1)


def test_constant_objective_is_flagged():
    x = jnp.asarray(np.random.default_rng(16).normal(size=10).astype(np.float32))
    with pytest.warns(NoProgressWarning):
        res = keskar_sharpness(lambda z: 0.0 * jnp.sum(z) + 2.0, x, epsilon=1e-2, restarts=2)
    assert res.no_progress and res.sharpness == 0.0 and res.loss == 2.0 and res.restarts == 2

