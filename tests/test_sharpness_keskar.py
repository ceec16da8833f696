"""Keskar et al.'s Metric 2.1 on quadratics f(x) = ½xᵀHx + gᵀx, whose maximum over a box is at
a vertex: closed form for diagonal H (full space), vertex enumeration in a small subspace."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from shared.sharpness.keskar import box_bound, keskar_sharpness, random_subspace


@pytest.fixture(autouse=True)
def x64():
    with jax.enable_x64(True):
        yield


def quadratic(h: np.ndarray, g: np.ndarray):
    hj, gj = jnp.asarray(h), jnp.asarray(g)
    return lambda x: 0.5 * x @ hj @ x + gj @ x


def test_full_space_matches_the_separable_closed_form():
    rng = np.random.default_rng(0)
    n, eps = 30, 1e-2
    h = rng.uniform(0.0, 50.0, size=n)
    g = rng.normal(size=n)
    x = rng.normal(size=n)
    f = quadratic(np.diag(h), g)
    res = keskar_sharpness(f, jnp.asarray(x), epsilon=eps)
    b = eps * (np.abs(x) + 1)  # box on y, A = I
    grad = h * x + g
    f0 = 0.5 * x @ (h * x) + g @ x
    fmax = f0 + np.sum(0.5 * h * b**2 + np.abs(grad) * b)  # each coordinate at its farther bound
    assert res.loss == pytest.approx(f0, rel=1e-12)
    assert res.max_loss == pytest.approx(fmax, rel=1e-9)
    assert res.sharpness == pytest.approx(100 * (fmax - f0) / (1 + f0), rel=1e-8)
    np.testing.assert_allclose(np.abs(res.y), b, rtol=1e-9)
    assert res.nit <= 10 and res.dim is None and res.init == "zero"


def test_subspace_matches_vertex_enumeration():
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


def test_seeded_subspace_and_random_start_are_reproducible():
    rng = np.random.default_rng(2)
    n = 20
    f = quadratic(np.diag(rng.uniform(1, 5, size=n)), rng.normal(size=n))
    x = jnp.asarray(rng.normal(size=n))
    a = keskar_sharpness(f, x, epsilon=1e-3, dim=5, key=jax.random.key(0), init="random")
    b = keskar_sharpness(f, x, epsilon=1e-3, dim=5, key=jax.random.key(0), init="random")
    assert a.sharpness == b.sharpness > 0
    assert np.all(np.abs(a.y) <= a.bound * (1 + 1e-12))
    with pytest.raises(ValueError):
        keskar_sharpness(f, x, epsilon=1e-3, dim=5)  # a random subspace needs a key


def test_box_bound_full_space():
    x = jnp.asarray([0.0, -2.0, 3.0])
    np.testing.assert_allclose(box_bound(x, 0.1), [0.1, 0.3, 0.4])
