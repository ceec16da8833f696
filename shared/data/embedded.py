"""Data sets that ship inside Python packages: no network, no preparation.

* ``digits``: scikit-learn's 1,797 real 8x8 handwritten digits (UCI optdigits,
  Alpaydin & Kaynak 1998), pixel values 0..16 scaled to [0, 1].  The package
  has no train/test split; ours is fixed: a permutation drawn from
  ``seeds.derive(0, "digits", "split")`` with the last 20% as test.  It never
  depends on a run's seed, and its indices' sha256 goes into provenance.
* ``mnist1d``: MNIST-1D (Greydanus & Kobak, arXiv:2011.14439), generated
  offline and deterministically by the ``mnist1d`` package from its default
  arguments (5,000 signals of length 40, seed 42, 4,000 train / 1,000 test,
  already centred and scaled to unit variance by the generator); ``options``
  override those arguments.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import random
from collections.abc import Mapping
from typing import Any

import numpy as np

from shared import seeds

DIGITS_TEST_FRACTION = 0.2


def sha256_array(array: np.ndarray) -> str:
    """sha256 of an array's bytes (C order), for provenance."""
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def digits(split: str) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """``(x float32 (N, 8, 8, 1) in [0, 1], y int32, provenance)`` of the fixed split."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = (np.asarray(bunch.images, dtype=np.float32) / 16.0)[..., None]
    labels = np.asarray(bunch.target, dtype=np.int32)
    order = np.asarray(seeds_permutation(len(labels)))
    num_test = round(DIGITS_TEST_FRACTION * len(labels))
    chosen = order[len(labels) - num_test :] if split == "test" else order[: len(labels) - num_test]
    return (
        images[chosen],
        labels[chosen],
        {
            "package": f"scikit-learn {importlib.metadata.version('scikit-learn')}",
            "scaling": "pixel values 0..16 divided by 16",
            "split": {
                "rule": f"permutation of {len(labels)} by seeds.derive(0, 'digits', 'split'); "
                f"last {num_test} are test",
                "indices_sha256": sha256_array(chosen),
            },
            "content_sha256": {
                "x": sha256_array(images[chosen]),
                "y": sha256_array(labels[chosen]),
            },
        },
    )


def seeds_permutation(n: int) -> np.ndarray:
    """The fixed permutation behind the digits split (threefry, platform-independent)."""
    import jax

    return np.asarray(jax.random.permutation(seeds.derive(0, "digits", "split"), n))


def mnist1d(
    split: str, options: Mapping[str, Any] | None = None
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """``(x float64 (N, 40), y int32, provenance)`` from ``mnist1d.make_dataset``."""
    frozen = tuple(sorted((options or {}).items()))
    data, args = _mnist1d_cached(frozen)
    x, y = (data["x"], data["y"]) if split == "train" else (data["x_test"], data["y_test"])
    x = np.asarray(x)  # float64, as generated
    y = np.asarray(y, dtype=np.int32)
    return (
        x,
        y,
        {
            "package": f"mnist1d {importlib.metadata.version('mnist1d')}",
            "arguments": args,
            "content_sha256": {"x": sha256_array(x), "y": sha256_array(y)},
        },
    )


@functools.lru_cache(maxsize=2)
def _mnist1d_cached(options: tuple[tuple[str, Any], ...]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Both splits at once (one generation, ~2 s).  The generator reseeds NumPy's and
    Python's global generators; their states are restored afterwards."""
    from mnist1d.data import get_dataset_args, make_dataset
    from mnist1d.utils import ObjectView

    args = get_dataset_args(as_dict=True)
    unknown = set(dict(options)) - set(args)
    if unknown:
        raise ValueError(f"unknown MNIST-1D options {sorted(unknown)}; known: {sorted(args)}")
    args.update(dict(options))
    numpy_state, python_state = np.random.get_state(), random.getstate()  # noqa: NPY002
    try:
        data = make_dataset(ObjectView(args))
    finally:
        np.random.set_state(numpy_state)  # noqa: NPY002
        random.setstate(python_state)
    args.pop("url", None)  # where the pickled copy lives; nothing is downloaded here
    return data, args
