"""Synthetic generators: the structure comes out as specified (numpy as the oracle)."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from shared import data, seeds
from shared.data import synthetic


def keys(seed: int = 0) -> tuple[jax.Array, jax.Array]:
    return seeds.derive(seed, "structure"), seeds.derive(seed, "sample")


def test_gaussian_mixture_has_k_balanced_clusters_with_the_given_spread():
    num_examples, dim, k, spread = 3001, 5, 4, 0.3
    x, y, centers = map(
        np.asarray,
        synthetic.gaussian_mixture(
            *keys(), num_examples=num_examples, dim=dim, num_classes=k, spread=spread
        ),
    )
    assert x.shape == (num_examples, dim) and y.shape == (num_examples,)
    counts = np.bincount(y, minlength=k)
    assert counts.shape == (k,) and counts.max() - counts.min() <= 1  # labels 0..k-1, balanced
    for c in range(k):
        members = x[y == c]
        # sample mean within 4 standard errors of the centre
        np.testing.assert_allclose(
            members.mean(0), centers[c], atol=4 * spread / np.sqrt(len(members))
        )
        np.testing.assert_allclose(np.cov(members.T), spread**2 * np.eye(dim), atol=0.2 * spread**2)


def test_gaussian_mixture_splits_share_centres_through_load():
    options = {"num_examples": 400, "dim": 3, "num_classes": 2, "spread": 0.1}
    train = data.load("gaussian_mixture", "train", seed=7, options=options)
    test = data.load("gaussian_mixture", "test", seed=7, options=options)
    assert train.num_classes == 2 and train.y.dtype == np.int32
    assert not np.allclose(np.asarray(train.x), np.asarray(test.x))
    for c in range(2):
        np.testing.assert_allclose(
            np.asarray(train.x)[np.asarray(train.y) == c].mean(0),
            np.asarray(test.x)[np.asarray(test.y) == c].mean(0),
            atol=0.05,
        )
    again = data.load("gaussian_mixture", "train", seed=7, options=options)
    np.testing.assert_array_equal(np.asarray(again.x), np.asarray(train.x))
    other = data.load("gaussian_mixture", "train", seed=8, options=options)
    assert not np.allclose(np.asarray(other.x), np.asarray(train.x))
    assert train.provenance["reader"]["keys"]["structure"] == (
        "seeds.derive(7, 'gaussian_mixture', 'structure')"
    )


def test_linear_regression_has_the_prescribed_spectrum_of_x_xt():
    spectrum = [8.0, 7.0, 6.0, 5.0, 4.0, 3.0, 2.0, 1.0]  # Baldi & Hornik check, CLAIMS.md
    x, y, teacher = map(
        np.asarray,
        synthetic.linear_regression(
            *keys(), num_examples=500, spectrum=spectrum, dim_y=3, noise_std=0.0
        ),
    )
    assert x.shape == (500, 8) and y.shape == (500, 3) and teacher.shape == (3, 8)
    big_x = x.T.astype(np.float64)  # d_x by N, examples as columns
    np.testing.assert_allclose(
        np.sort(np.linalg.eigvalsh(big_x @ big_x.T))[::-1], spectrum, rtol=1e-4
    )
    np.testing.assert_allclose(y, x @ teacher.T, rtol=1e-4, atol=1e-5)


def test_linear_regression_noise_and_identity_teacher():
    spectrum = [4.0, 2.0, 1.0, 0.5]
    x, y, teacher = map(
        np.asarray,
        synthetic.linear_regression(
            *keys(1), num_examples=20000, spectrum=spectrum, noise_std=0.1, teacher="identity"
        ),
    )
    np.testing.assert_array_equal(teacher, np.eye(4))
    residual = y - x
    assert abs(residual.std() - 0.1) < 0.005 and abs(residual.mean()) < 0.005
    with pytest.raises(ValueError, match="num_examples"):
        synthetic.linear_regression(*keys(), num_examples=3, spectrum=spectrum)


def test_linear_regression_through_load_is_a_regression_dataset():
    options = {"num_examples": 100, "spectrum": [3.0, 2.0, 1.0], "dim_y": 2, "noise_std": 0.01}
    train = data.load("linear_regression", "train", seed=0, options=options)
    test = data.load("linear_regression", "test", seed=0, options=options)
    assert train.num_classes is None and train.y.shape == (100, 2)
    assert train.y.dtype == train.x.dtype
    for split in (train, test):  # same spectrum in both splits, different examples
        gram = np.asarray(split.x, np.float64).T @ np.asarray(split.x, np.float64)
        np.testing.assert_allclose(np.sort(np.linalg.eigvalsh(gram))[::-1], [3, 2, 1], rtol=1e-4)
    assert not np.allclose(np.asarray(train.x), np.asarray(test.x))
    with pytest.raises(ValueError, match="needs a seed"):
        data.load("linear_regression", "train", options=options)


def test_random_labels_are_uniform_and_independent_of_inputs():
    x, y = map(
        np.asarray,
        synthetic.random_labels(*keys(), num_examples=20000, dim=3, num_classes=5),
    )
    np.testing.assert_allclose(np.bincount(y) / len(y), 0.2, atol=0.015)
    np.testing.assert_allclose(np.cov(x.T), np.eye(3), atol=0.05)
    class_means = np.stack([x[y == c].mean(0) for c in range(5)])
    assert np.abs(class_means).max() < 0.1  # labels carry no information about x


@pytest.mark.parametrize("fraction", [0.0, 0.5, 1.0])
def test_randomize_labels_changes_the_expected_fraction(fraction):
    labels = jax.numpy.zeros(20000, dtype=jax.numpy.int32)
    new = np.asarray(data.randomize_labels(seeds.derive(0, "labels"), labels, 10, fraction))
    # a replaced label stays 0 with probability 1/10
    np.testing.assert_allclose((new != 0).mean(), fraction * 0.9, atol=0.015)


@pytest.mark.parametrize("k", [2, 5, 16, 17])
def test_gaussian_mixture_centres_drawn_in_blocks_equal_a_direct_draw(k: int) -> None:
    """The centres come from a (16·⌈k/16⌉, dim) draw cut to k rows (one compiled sampler for
    every k ≤ 16); with partitionable Threefry they are exactly a (k, dim) draw."""
    structure, sample = keys(3)
    _, _, centers = synthetic.gaussian_mixture(structure, sample, num_examples=40, dim=6, num_classes=k, spread=1.0)
    assert jax.config.jax_threefry_partitionable
    np.testing.assert_array_equal(np.asarray(centers), np.asarray(jax.random.normal(structure, (k, 6))))
