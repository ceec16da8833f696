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


# --- the gap measure: E restricted to range(Σ) ----------------------------------------------

def singular_data(seed: int = 5) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Patterns in a 4-dim subspace of R⁶: Σ = U diag(5, 3, 2, 1, 0, 0) Uᵀ, U a random rotation."""
    rng = np.random.default_rng(seed)
    u, _ = np.linalg.qr(rng.standard_normal((6, 6)))
    q, _ = np.linalg.qr(rng.standard_normal((40, 4)))
    x = q @ np.diag(np.sqrt([5.0, 3.0, 2.0, 1.0])) @ u[:, :4].T
    lam, vec = np.linalg.eigh(x.T @ x)
    return x, lam[::-1], vec[:, ::-1]


def test_the_range_of_a_singular_sigma() -> None:
    _, lam, _ = singular_data()
    assert theory.range_mask(lam).tolist() == [True] * 4 + [False] * 2
    assert theory.range_mask([3.0, 2.0, 1e-12]).tolist() == [True, True, False]  # <= 1e-9 λ_1 is zero
    assert theory.range_mask([3.0, 2.0, 1e-8]).all()


def test_the_gap_ignores_the_null_space_part_of_w_and_nothing_else() -> None:
    """W's range part at the optimum, its null-space part nonzero: E_V = E* either way; E sees
    the decoder's outputs into null(Σ) but not the encoder's inputs from it; a range part off
    the optimum is seen by both. E_V(W) = E(P W P), with E summed over the patterns."""
    x, lam, vec = singular_data()
    p, rng = 2, np.random.default_rng(6)
    optimum = lam[p:].sum()
    null = vec[:, 4:]
    projector = vec[:, :4] @ vec[:, :4].T
    a, b = theory.critical_point(vec, (0, 1), p, theory.random_mixing(rng, p))

    def both(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
        whole = float(theory.range_loss(lam, vec, a, b, range_only=False))
        assert whole == pytest.approx(numpy_loss(x, a, b), rel=1e-12)
        ranged = float(theory.range_loss(lam, vec, a, b))
        assert ranged == pytest.approx(numpy_loss(x, projector @ a, b @ projector), rel=1e-12)
        return whole, ranged

    assert both(a, b) == pytest.approx((optimum, optimum), rel=1e-12)
    wide = b + rng.standard_normal((p, 2)) @ null.T  # the encoder reads null(Σ): GD never moves this
    assert both(a, wide) == pytest.approx((optimum, optimum), rel=1e-12)
    k = rng.standard_normal((2, p))
    leak = a + null @ k  # the decoder writes into null(Σ)
    whole, ranged = both(leak, b)
    assert ranged == pytest.approx(optimum, rel=1e-12)
    assert whole - optimum == pytest.approx(np.sum((k @ b @ vec[:, :p]) ** 2 * lam[:p]), rel=1e-9) and whole > optimum
    whole, ranged = both(leak, wide)
    assert ranged == pytest.approx(optimum, rel=1e-12) and whole > optimum
    a_s, b_s = theory.critical_point(vec, (0, 2), p, np.eye(p))  # the range part at a saddle
    saddle = theory.critical_loss(lam, (0, 2))
    assert both(a_s + null @ k, b_s + rng.standard_normal((p, 2)) @ null.T)[1] == pytest.approx(saddle, rel=1e-12)
    assert saddle - optimum == pytest.approx(lam[1] - lam[2])


def test_range_loss_takes_runs_along_leading_axes(data) -> None:  # type: ignore[no-untyped-def]
    x, lam, vec = data
    rng = np.random.default_rng(8)
    a, b = rng.standard_normal((5, 6, 2)), rng.standard_normal((5, 2, 6))
    batched = theory.range_loss(lam, vec, a, b)
    np.testing.assert_allclose(batched, [numpy_loss(x, a[i], b[i]) for i in range(5)], rtol=1e-12)


# --- gradient descent in Σ's eigenbasis is gradient descent on the network ------------------

def test_descent_in_the_eigenbasis_is_descent_on_the_network(data) -> None:  # type: ignore[no-untyped-def]
    """50 steps of optax SGD on the autoencoder (E summed over the patterns, original
    coordinates) and 50 steps of ``gd_eigenbasis``, rotated back: the same weights."""
    import optax

    from replications.baldi_linear_autoencoder import steps
    from shared.models.linear import ae_matrices, ae_params_from_matrices

    x, lam, vec = data
    n, p, lr = 6, 2, 0.1 / lam[0]
    rng = np.random.default_rng(9)
    a0, b0 = 0.4 * rng.standard_normal((n, p)), 0.4 * rng.standard_normal((p, n))
    model, template = steps._template(n, p)
    params = ae_params_from_matrices(template, a0, b0)
    optimizer = optax.sgd(lr)
    state = optimizer.init(params)
    loss = jax.jit(jax.value_and_grad(lambda prm: steps.sum_squared_error(model, prm, jax.numpy.asarray(x))))
    for _ in range(50):
        _, grads = loss(params)
        updates, state = optimizer.update(grads, state)
        params = optax.apply_updates(params, updates)
    a_net, b_net = (np.asarray(m) for m in ae_matrices(params))
    assert np.linalg.norm(a_net - a0) > 0.1  # it moved
    a, b, failed = steps.gd_eigenbasis((vec.T @ a0)[None], (b0 @ vec)[None], lam, lr, 50)
    assert not failed.any()
    np.testing.assert_allclose(vec @ a[0], a_net, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(b[0] @ vec.T, b_net, rtol=1e-9, atol=1e-12)


def test_init_distributions_have_their_stated_std() -> None:
    from replications.baldi_linear_autoencoder import steps

    n, p = 64, 8
    for kind, scale, std in [("small", 1e-3, 1e-3), ("unit", 1.0, 1.0), ("glorot", 1.0, np.sqrt(2 / 72))]:
        spec = {"dataset": "digits", "runs": 200, "init": kind, "init_scale": scale}
        assert steps.init_std(spec, n, p) == pytest.approx(std)
        for weights in steps.draw_inits(spec, n, p, 0):
            values = np.asarray(weights).ravel()
            assert np.std(values) == pytest.approx(std, rel=0.02) and abs(np.mean(values)) < 0.02 * std
            if kind == "glorot":  # truncated at two (untruncated) standard deviations
                assert np.abs(values).max() <= 2 * std / steps.TRUNCATED_STD + 1e-12
