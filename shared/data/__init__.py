"""The data layer: ask for a data set by name, split and preprocessing; get arrays
on the JAX device with their provenance, whatever the source.

    from shared import data
    train = data.load("fashion_mnist", "train", preprocessing=["flatten", "standardize"])
    order = data.epoch_batches(key, len(train), 128)

Sources (``data.DATASETS``): tensorflow-datasets builders prepared once with
``python -m shared.data.prepare NAME`` (mnist, fashion_mnist, cifar10,
cifar100, and the JPEG q75 copy cifar10_jpeg), embedded data (digits,
mnist1d) and seeded synthetic generators (gaussian_mixture,
linear_regression, random_labels).  See ``shared/data/README.md``.
"""

from shared.data.batching import epoch_batches, eval_batches, take
from shared.data.dataset import Dataset
from shared.data.errors import DataCorruptedError, DataError, DataNotPreparedError
from shared.data.loader import load
from shared.data.paths import ENV_VAR, resolve_data_dir
from shared.data.preprocess import PCA, Flatten, Resize, Standardize
from shared.data.registry import DATASETS, DatasetSpec
from shared.data.synthetic import (
    gaussian_mixture,
    linear_regression,
    random_labels,
    randomize_labels,
)

__all__ = [
    "DATASETS",
    "ENV_VAR",
    "PCA",
    "DataCorruptedError",
    "DataError",
    "DataNotPreparedError",
    "Dataset",
    "DatasetSpec",
    "Flatten",
    "Resize",
    "Standardize",
    "epoch_batches",
    "eval_batches",
    "gaussian_mixture",
    "linear_regression",
    "load",
    "random_labels",
    "randomize_labels",
    "resolve_data_dir",
    "take",
]
