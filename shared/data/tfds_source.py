"""Read a prepared tensorflow-datasets split into host arrays, without TensorFlow.

The files are checked against the manifest first (``manifest.verify_manifest``),
then read through ``tfds.data_source`` (array_record, random access), which
needs no TensorFlow: the path a GPU machine takes.  ``prepare`` only ever
records array_record copies, so there is no tfrecord fallback (and no
``tfds.load``) here.  Nothing is ever downloaded (``download=False``).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import numpy as np

from shared.data.manifest import verify_manifest

IMAGE_KEY = "image"
LABEL_KEY = "label"  # CIFAR-100: the 100 fine labels


def read_split(
    name: str, split: str, data_dir: Path, *, verify: bool = True
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """``(images uint8 (N, H, W, C), labels int32 (N,), provenance)`` of one split.

    ``verify=False`` skips the manifest (and with it the checksums); it exists
    for ``tfds.testing.mock_data``, which fakes the reader but writes no files.
    """
    if name == "cifar10_jpeg":
        import shared.data.cifar10_jpeg  # noqa: F401  (registers the builder with tfds)

    if not verify:
        images, labels = _read_array_record(name, split, str(data_dir))
        return images, labels, {"data_dir": str(data_dir), "checksums_verified": False}

    manifest = verify_manifest(data_dir, name)
    checksums = tuple(sorted((n, f["sha256"]) for n, f in manifest["files"].items()))
    version = manifest["version_dir"].rsplit("/", 1)[-1]
    images, labels = _read_verified(f"{name}:{version}", split, str(data_dir), checksums)
    provenance = {
        "data_dir": str(data_dir),
        "checksums_verified": True,
        "manifest": {k: v for k, v in manifest.items() if k != "name"},
    }
    return images, labels, provenance


@functools.lru_cache(maxsize=4)
def _read_verified(
    tfds_name: str, split: str, data_dir: str, checksums: tuple[tuple[str, str], ...]
) -> tuple[np.ndarray, np.ndarray]:
    """Cached by the verified checksums: loading the test split after the train
    split (for training-set statistics) decodes each split once per process."""
    del checksums  # only part of the cache key
    images, labels = _read_array_record(tfds_name, split, data_dir)
    images.flags.writeable = False
    labels.flags.writeable = False
    return images, labels


def _read_array_record(tfds_name: str, split: str, data_dir: str) -> tuple[np.ndarray, np.ndarray]:
    import tensorflow_datasets as tfds

    source = tfds.data_source(tfds_name, split=split, data_dir=data_dir, download=False)
    examples = source.__getitems__(range(len(source)))
    images = np.stack([np.asarray(example[IMAGE_KEY]) for example in examples])
    labels = np.asarray([example[LABEL_KEY] for example in examples], dtype=np.int32)
    return images, labels
