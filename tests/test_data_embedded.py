"""Embedded data sets through ``load``: digits and MNIST-1D, splits and subsets."""

from __future__ import annotations

import numpy as np
import pytest

from shared import data
from shared.data import embedded


def test_digits_fixed_split_shapes_and_range():
    train, test = data.load("digits", "train"), data.load("digits", "test")
    assert train.x.shape == (1438, 8, 8, 1) and test.x.shape == (359, 8, 8, 1)
    assert train.num_classes == 10 and set(np.unique(np.asarray(train.y))) == set(range(10))
    assert 0.0 <= float(train.x.min()) and float(train.x.max()) == 1.0
    assert train.y.dtype == np.int32 and train.source == "embedded"
    again = data.load("digits", "test")
    np.testing.assert_array_equal(np.asarray(again.x), np.asarray(test.x))
    assert (
        again.provenance["reader"]["split"]["indices_sha256"]
        == test.provenance["reader"]["split"]["indices_sha256"]
    )


def test_digits_test_split_is_standardized_with_training_statistics():
    raw_train = np.asarray(data.load("digits", "train").x).reshape(1438, 64)
    raw_test = np.asarray(data.load("digits", "test").x).reshape(359, 64)
    test = data.load("digits", "test", preprocessing=["flatten", "standardize"])
    std = raw_train.std(0)
    std[std < 1e-6] = 1.0
    np.testing.assert_allclose(
        np.asarray(test.x), (raw_test - raw_train.mean(0)) / std, rtol=1e-4, atol=1e-4
    )
    assert test.provenance["preprocessing"]["fitted_on"] == "digits train, all 1438 examples"


def test_subsets_are_fixed_by_the_seed():
    a = data.load("digits", "train", subset=100, seed=1)
    b = data.load("digits", "train", subset=100, seed=1)
    c = data.load("digits", "train", subset=100, seed=2)
    assert a.x.shape[0] == 100
    np.testing.assert_array_equal(np.asarray(a.x), np.asarray(b.x))
    assert not np.array_equal(np.asarray(a.x), np.asarray(c.x))
    assert a.provenance["subset"]["of"] == 1438
    assert a.provenance["subset"]["indices_sha256"] == b.provenance["subset"]["indices_sha256"]
    # the statistics come from the whole training split, not from the subset
    full = data.load("digits", "train", preprocessing=["flatten", "standardize"])
    part = data.load(
        "digits", "train", preprocessing=["flatten", "standardize"], subset=100, seed=1
    )
    rows = np.asarray(data.load("digits", "train", subset=100, seed=1).x).reshape(100, 64)
    full_rows = np.asarray(data.load("digits", "train").x).reshape(1438, 64)
    index = [int(np.flatnonzero((full_rows == r).all(1))[0]) for r in rows[:5]]
    np.testing.assert_allclose(np.asarray(part.x)[:5], np.asarray(full.x)[index], rtol=1e-6)
    with pytest.raises(ValueError, match="needs a seed"):
        data.load("digits", "train", subset=10)


def test_mnist1d_is_generated_offline_and_deterministically():
    embedded._mnist1d_cached.cache_clear()
    state = np.random.get_state()[1].copy()  # noqa: NPY002
    train, test = data.load("mnist1d", "train"), data.load("mnist1d", "test")
    assert train.x.shape == (4000, 40) and test.x.shape == (1000, 40)
    assert train.num_classes == 10 and len(np.unique(np.asarray(test.y))) == 10
    assert train.provenance["reader"]["arguments"]["seed"] == 42
    np.testing.assert_array_equal(np.random.get_state()[1], state)  # noqa: NPY002 (untouched)
    small = data.load("mnist1d", "test", options={"num_samples": 1000})
    assert small.x.shape == (200, 40)


def test_bad_requests_fail_clearly():
    with pytest.raises(KeyError, match="unknown data set 'mnist2'"):
        data.load("mnist2", "train")
    with pytest.raises(ValueError, match="splits"):
        data.load("digits", "validation")
    with pytest.raises(ValueError, match="subset must be"):
        data.load("digits", "test", subset=10_000, seed=0)
