"""``load``: one entry point for every data set, whatever its source.

    train = load("mnist", "train", preprocessing=[{"resize": {"height": 10, "width": 10}},
                                                  "flatten", "standardize"])
    test = load("mnist", "test", preprocessing=...)      # same statistics as train
    probe = load("cifar10", "train", subset=2000, seed=0)  # fixed evaluation subset

The steps are fitted on the full training split and applied to the requested
split; a subset is chosen after that fit, so it never changes the statistics.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from shared import seeds
from shared.data import embedded, preprocess, synthetic, tfds_source
from shared.data.dataset import Dataset
from shared.data.paths import resolve_data_dir
from shared.data.registry import DatasetSpec, get_spec

Raw = tuple[Any, Any, int | None, dict[str, Any]]  # x, y, num_classes, provenance

_GENERATORS: dict[str, Callable[..., tuple[jax.Array, ...]]] = {
    "gaussian_mixture": synthetic.gaussian_mixture,
    "linear_regression": synthetic.linear_regression,
    "random_labels": synthetic.random_labels,
}


def load(
    name: str,
    split: str,
    *,
    data_dir: str | Path | None = None,
    preprocessing: Sequence[str | Mapping[str, Any] | preprocess.Step] = (),
    subset: int | None = None,
    seed: int | None = None,
    options: Mapping[str, Any] | None = None,
    dtype: Any = None,
    verify: bool = True,
) -> Dataset:
    """One split of a named data set, preprocessed, on the default JAX device.

    Args:
      name: a registry name (``shared.data.DATASETS``).
      split: ``"train"`` or ``"test"``.
      data_dir: where prepared tfds data sets live (default ``$LANDSCAPE_DATA_DIR``,
        else ``~/tensorflow_datasets``); unused by embedded and synthetic data.
      preprocessing: steps or their config form (``preprocess.parse``), fitted
        on the training split.  Images arrive as floats in [0, 1] (uint8 / 255).
      subset: keep this many examples, chosen by ``seed`` (sorted indices).
      seed: root seed for subsets and synthetic data (required by both; never
        drawn at random).
      options: generator parameters of synthetic and MNIST-1D data.
      dtype: float dtype of ``x`` (default: JAX's, float64 under x64).
      verify: check the manifest's checksums (tfds data; ``False`` only under
        ``tfds.testing.mock_data``, which writes no files).

    Raises:
      DataNotPreparedError, DataCorruptedError: tfds data missing or damaged;
        the message says how to prepare it.
    """
    spec = get_spec(name)
    if split not in spec.splits:
        raise ValueError(f"{name!r} has splits {spec.splits}, not {split!r}")
    steps = preprocess.parse(preprocessing)
    dtype = jnp.dtype(dtype or jnp.result_type(float))
    root = resolve_data_dir(data_dir)

    def read(which: str) -> tuple[jax.Array, str, Any, int | None, dict[str, Any]]:
        raw_x, y, num_classes, provenance = _read(spec, which, root, seed, options or {}, verify)
        x, scaling = _to_float(raw_x, dtype)
        return x, scaling, y, num_classes, provenance

    x, scaling, y, num_classes, reader = read(split)
    full_size = int(x.shape[0])
    chosen = _subset_indices(name, split, full_size, subset, seed)
    if chosen is not None:
        x, y = x[chosen], jnp.asarray(y)[chosen]
    steps_done: list[dict[str, Any]] = []
    fitted_on = None
    if steps:
        # fit on the full training split, whatever split or subset was asked for
        is_train = split == "train" and chosen is None
        x_train = x if is_train else read("train")[0]
        x_train, x_other, steps_done = preprocess.fit_apply(steps, x_train, None if is_train else x)
        fitted_on = f"{name} train, all {x_train.shape[0]} examples"
        x = x_train if x_other is None else x_other
    provenance = {
        "name": name,
        "title": spec.title,
        "split": split,
        "source": spec.kind,
        "citation": spec.citation,
        "reader": reader,
        "scaling": scaling,
        "num_examples": int(x.shape[0]),
        "dtype": str(x.dtype),
        "preprocessing": {"fitted_on": fitted_on, "steps": steps_done},
        "subset": None
        if chosen is None
        else {
            "size": int(chosen.shape[0]),
            "of": full_size,
            "seed": seed,
            "key": f"seeds.derive({seed}, 'subset', {name!r}, {split!r})",
            "indices_sha256": hashlib.sha256(np.asarray(chosen).tobytes()).hexdigest(),
        },
    }
    y = jnp.asarray(y, dtype=jnp.int32 if num_classes is not None else dtype)
    return Dataset(
        x=jax.device_put(x),
        y=jax.device_put(y),
        num_classes=num_classes,
        name=name,
        title=spec.title,
        split=split,
        source=spec.kind,
        provenance=provenance,
    )


def _read(
    spec: DatasetSpec,
    split: str,
    root: Path,
    seed: int | None,
    options: Mapping[str, Any],
    verify: bool,
) -> Raw:
    """The split as read from its source, before any preprocessing."""
    if spec.kind == "tfds":
        if options:
            raise ValueError(f"{spec.name!r} takes no options")
        images, labels, provenance = tfds_source.read_split(spec.name, split, root, verify=verify)
        return images, labels, spec.num_classes, provenance
    if spec.name == "digits":
        if options:
            raise ValueError("'digits' takes no options")
        x, y, provenance = embedded.digits(split)
        return x, y, spec.num_classes, provenance
    if spec.name == "mnist1d":
        x, y, provenance = embedded.mnist1d(split, options)
        return x, y, spec.num_classes, provenance
    if seed is None:
        raise ValueError(f"synthetic data {spec.name!r} needs a seed")
    generated = _GENERATORS[spec.name](
        seeds.derive(seed, spec.name, "structure"), seeds.derive(seed, spec.name, split), **options
    )
    provenance = {
        "generator": f"shared.data.synthetic.{spec.name}",
        "options": dict(options),
        "keys": {
            "structure": f"seeds.derive({seed}, {spec.name!r}, 'structure')",
            "sample": f"seeds.derive({seed}, {spec.name!r}, {split!r})",
        },
    }
    return generated[0], generated[1], options.get("num_classes"), provenance


def _to_float(x: Any, dtype: Any) -> tuple[jax.Array, str]:
    """Floats on the device and how they were scaled; uint8 images travel as bytes
    and are divided by 255 on the device."""
    if getattr(x, "dtype", None) == np.uint8:
        return jax.device_put(x).astype(dtype) / 255, "uint8 pixels divided by 255"
    return jnp.asarray(x, dtype=dtype), "as read"


def _subset_indices(
    name: str, split: str, size: int, subset: int | None, seed: int | None
) -> jax.Array | None:
    if subset is None:
        return None
    if seed is None:
        raise ValueError("a subset needs a seed")
    if not 0 < subset <= size:
        raise ValueError(f"subset must be in 1..{size}, got {subset}")
    order = jax.random.permutation(seeds.derive(seed, "subset", name, split), size)
    return jnp.sort(order[:subset])
