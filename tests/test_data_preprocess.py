"""Preprocessing steps against independent numpy oracles."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from shared.data import preprocess
from shared.data.preprocess import PCA, Flatten, Resize, Standardize


def images(n: int = 6, size: int = 28, channels: int = 1, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, size, size, channels), dtype=np.float32)


def block_mean(x: np.ndarray, factor: int) -> np.ndarray:
    n, h, w, c = x.shape
    return x.reshape(n, h // factor, factor, w // factor, factor, c).mean(axis=(2, 4))


def test_area_resize_28_to_10_is_exact_area_averaging():
    # oracle: upsample 5x by repetition (140x140), then average 14x14 blocks: the
    # area of each 2.8x2.8 patch, without fractional weights
    x = images()
    fine = np.repeat(np.repeat(x, 5, axis=1), 5, axis=2)
    expected = block_mean(fine, 14)
    out = np.asarray(Resize(10, 10).apply(jnp.asarray(x), {}))
    assert out.shape == (6, 10, 10, 1)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(preprocess.area_matrix(28, 10).sum(1), 1.0, rtol=1e-12)


def test_area_resize_with_an_integer_factor_is_a_block_mean():
    x = images(channels=3)
    out = np.asarray(Resize(14, 14).apply(jnp.asarray(x), {}))
    np.testing.assert_allclose(out, block_mean(x, 2), rtol=1e-5, atol=1e-6)


def test_other_interpolations_go_through_jax_image_resize():
    out = Resize(10, 10, method="linear").apply(jnp.asarray(images()), {})
    assert out.shape == (6, 10, 10, 1)
    assert "antialias=True" in Resize(10, 10, method="linear").describe({})["interpolation"]


def test_standardize_uses_training_statistics_per_channel():
    train, test = images(50, 4, 3, seed=1), images(20, 4, 3, seed=2) * 2 + 1
    step = Standardize()
    params = step.fit(jnp.asarray(train))
    mean, std = train.mean(axis=(0, 1, 2)), train.std(axis=(0, 1, 2))
    np.testing.assert_allclose(np.asarray(params["mean"]), mean, rtol=1e-5)
    np.testing.assert_allclose(
        np.asarray(step.apply(jnp.asarray(test), params)), (test - mean) / std, rtol=1e-4, atol=1e-5
    )
    constant = Standardize().fit(jnp.ones((5, 3)))
    np.testing.assert_array_equal(np.asarray(constant["std"]), 1.0)


@pytest.mark.parametrize("whiten", [False, True])
def test_pca_matches_numpy_eigendecomposition(whiten):
    rng = np.random.default_rng(3)
    x = (rng.standard_normal((400, 6)) @ rng.standard_normal((6, 6))).astype(np.float32)
    step = PCA(3, whiten=whiten)
    params = step.fit(jnp.asarray(x))
    out = np.asarray(step.apply(jnp.asarray(x), params))
    centred = x.astype(np.float64) - x.mean(0)
    eigenvalues, eigenvectors = np.linalg.eigh(centred.T @ centred / len(x))
    top = eigenvectors[:, ::-1][:, :3]
    np.testing.assert_allclose(np.asarray(params["variances"]), eigenvalues[::-1][:3], rtol=1e-4)
    expected = centred @ top
    expected = expected / np.sqrt(eigenvalues[::-1][:3]) if whiten else expected
    np.testing.assert_allclose(np.abs(out), np.abs(expected), rtol=1e-3, atol=1e-3)  # up to sign
    covariance = np.cov(out.T, bias=True)
    target = np.eye(3) if whiten else np.diag(eigenvalues[::-1][:3])
    np.testing.assert_allclose(covariance, target, atol=2e-3 * max(1.0, eigenvalues.max()))


def test_parse_reads_config_lists():
    steps = preprocess.parse(
        [
            "flatten",
            {"resize": {"height": 10, "width": 10, "method": "area"}},
            {"pca": {"num_components": 30, "whiten": True}},
            Standardize(),
        ]
    )
    assert steps == (Flatten(), Resize(10, 10, "area"), PCA(30, whiten=True), Standardize())
    with pytest.raises(ValueError, match="unknown preprocessing"):
        preprocess.parse(["zca"])


def test_fit_apply_fits_on_train_and_records_each_step():
    train, other = jnp.asarray(images(10, 8)), jnp.asarray(images(4, 8, seed=5))
    steps = preprocess.parse([{"resize": {"height": 4, "width": 4}}, "flatten", "standardize"])
    train_out, other_out, described = preprocess.fit_apply(steps, train, other)
    assert train_out.shape == (10, 16) and other_out is not None and other_out.shape == (4, 16)
    np.testing.assert_allclose(np.asarray(train_out).mean(0), 0.0, atol=1e-5)
    assert [d["step"] for d in described] == ["resize", "flatten", "standardize"]
    assert described[0]["reference"].startswith("Choromanska")
