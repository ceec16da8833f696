"""Baldi & Hornik's closed forms against independent numpy / jax.hessian computations
on fresh random data (float64)."""

from __future__ import annotations

from math import comb

import jax
import numpy as np
import pytest

from replications.baldi_linear_autoencoder import theory

pytestmark = pytest.mark.x64


def numpy_loss(x: np.ndarray, A: np.ndarray, B: np.ndarray) -> float:
    """E = Σ_t ‖x_t − A B x_t‖², summed over the rows of x in numpy."""
    return float(np.sum((x - x @ (A @ B).T) ** 2))


def numpy_gradients(x: np.ndarray, A: np.ndarray, B: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """∂E/∂A = −2 R Σ Bᵀ, ∂E/∂B = −2 Aᵀ R Σ with R = I − AB, Σ = xᵀx."""
    sigma = x.T @ x
    r = np.eye(A.shape[0]) - A @ B
    return -2 * r @ sigma @ B.T, -2 * A.T @ r @ sigma


def jax_hessian(x: np.ndarray, A: np.ndarray, B: np.ndarray) -> np.ndarray:
    n, p = A.shape

    def loss(v):  # type: ignore[no-untyped-def]
        a, b = v[: n * p].reshape(n, p), v[n * p :].reshape(p, n)
        return jax.numpy.sum((x - x @ (a @ b).T) ** 2)

    return np.asarray(jax.hessian(loss)(np.concatenate([A.ravel(), B.ravel()])))


@pytest.fixture(params=[0, 1])
def data(request: pytest.FixtureRequest) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(100 + request.param)
    n = 6
    spectrum = np.sort(rng.uniform(0.5, 10.0, n))[::-1]
    x = theory.synthetic_patterns(rng, spectrum, 300)
    lam, vec = np.linalg.eigh(x.T @ x)
    return x, lam[::-1], vec[:, ::-1]


def test_synthetic_patterns_have_the_prescribed_spectrum() -> None:
    rng = np.random.default_rng(0)
    spectrum = [5.0, 3.0, 2.0, 0.5]
    x = theory.synthetic_patterns(rng, spectrum, 50)
    np.testing.assert_allclose(np.linalg.eigvalsh(x.T @ x)[::-1], spectrum, rtol=1e-12)


def test_every_constructed_point_is_critical_with_the_predicted_loss(data) -> None:  # type: ignore[no-untyped-def]
    x, lam, vec = data
    p = 3
    rng = np.random.default_rng(7)
    count = 0
    for index_set in theory.index_sets(x.shape[1], p):
        A, B = theory.critical_point(vec, index_set, p, theory.random_mixing(rng, p))
        gA, gB = numpy_gradients(x, A, B)
        assert np.linalg.norm(gA) + np.linalg.norm(gB) <= 1e-9 * lam.sum()
        assert numpy_loss(x, A, B) == pytest.approx(theory.critical_loss(lam, index_set), rel=1e-11)
        count += 1
    assert count == sum(comb(6, r) for r in range(p + 1))  # every index set of size <= p


def test_a_non_projection_is_not_critical(data) -> None:  # type: ignore[no-untyped-def]
    """The gradient test can fail: mixing in a non-eigenvector breaks criticality."""
    x, lam, vec = data
    A, B = theory.critical_point(vec, (0, 1), 2, np.eye(2))
    A = A + 0.1 * vec[:, [2, 3]]
    gA, gB = numpy_gradients(x, A, B)
    assert np.linalg.norm(gA) + np.linalg.norm(gB) > 1e-3 * lam.sum()


@pytest.mark.parametrize("index_set", [(0, 1, 2), (0, 1, 3), (2, 4, 5), (1,), (), (0, 3)])
def test_hessian_spectrum_matches_the_closed_form(data, index_set) -> None:  # type: ignore[no-untyped-def]
    """With C orthogonal, the whole Hessian spectrum is known exactly."""
    x, lam, vec = data
    p = 3
    q, _ = np.linalg.qr(np.random.default_rng(3).standard_normal((p, p)))
    A, B = theory.critical_point(vec, index_set, p, q)
    measured = np.linalg.eigvalsh(jax_hessian(x, A, B))
    expected = theory.hessian_spectrum_theory(lam, index_set, p)
    np.testing.assert_allclose(measured, expected, atol=1e-9 * lam.max())


def test_index_and_nullity_are_invariant_under_mixing(data) -> None:  # type: ignore[no-untyped-def]
    x, lam, vec = data
    p = 3
    rng = np.random.default_rng(11)
    for index_set in [(0, 1, 2), (0, 2, 4), (3,), (1, 5)]:
        A, B = theory.critical_point(vec, index_set, p, theory.random_mixing(rng, p))
        eig = np.linalg.eigvalsh(jax_hessian(x, A, B))
        tol = 1e-9 * np.abs(eig).max()
        assert int(np.sum(eig < -tol)) == theory.hessian_index(lam, index_set, p)
        assert int(np.sum(np.abs(eig) <= tol)) == theory.hessian_nullity(x.shape[1], p, len(index_set))


def test_only_the_top_p_set_has_index_zero() -> None:
    lam = np.array([9.0, 7.0, 4.0, 2.5, 1.0])
    zero = [I for I in theory.index_sets(5, 2) if theory.hessian_index(lam, I, 2) == 0]
    assert zero == [(0, 1)]
    assert theory.hessian_index(lam, (), 2) == 2 * 5  # W = 0: p·n negative directions


def test_principal_angles() -> None:
    e = np.eye(4)
    np.testing.assert_allclose(theory.principal_angles(e[:, :2], e[:, [1, 0]]), [0, 0], atol=1e-7)
    angles = theory.principal_angles(e[:, :2], np.stack([e[:, 0], e[:, 1] + e[:, 2]], axis=1))
    np.testing.assert_allclose(angles, [0, np.pi / 4], atol=1e-12)
