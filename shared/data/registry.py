"""The data sets the project knows, by name: what they are and how to prepare them.

Three kinds of source:

* ``tfds``: prepared once with ``python -m shared.data.prepare NAME`` into the
  data directory (array_record files), then read with ``download=False``;
* ``embedded``: shipped inside a Python package, generated on the fly, no network;
* ``synthetic``: seeded generators whose parameters come in ``options``.

This module is pure data (no jax, no tensorflow-datasets) so that error
messages, the CLI and the Snakefile can use it cheaply.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from shared.data.paths import MANIFEST_NAME

Kind = Literal["tfds", "embedded", "synthetic"]

PREPARE = "python -m shared.data.prepare"
DEBIAN_FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
CIFAR10_JPEG_ARCHIVE = "cifar10-jpeg.tar.gz"
CIFAR10_CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)


@dataclass(frozen=True)
class DatasetSpec:
    """One named data set.

    ``title`` is the label every table and figure must use (the JPEG copy of
    CIFAR-10 is never plain "CIFAR-10"); ``num_classes`` is ``None`` where it
    depends on ``options`` (synthetic) or the task is regression.
    """

    name: str
    title: str
    kind: Kind
    splits: tuple[str, ...]
    num_classes: int | None
    citation: str
    offline_hint: str = ""  # how to prepare without internet, formatted with {data_dir}


DATASETS: Mapping[str, DatasetSpec] = {
    spec.name: spec
    for spec in (
        DatasetSpec(
            "mnist",
            "MNIST",
            "tfds",
            ("train", "test"),
            10,
            "LeCun, Bottou, Bengio, Haffner (1998), Gradient-based learning applied to "
            "document recognition",
            offline_hint="from the four original gzip files in a folder DIR: "
            f"{PREPARE} mnist --data-dir {{data_dir}} --manual-dir DIR",
        ),
        DatasetSpec(
            "fashion_mnist",
            "Fashion-MNIST",
            "tfds",
            ("train", "test"),
            10,
            "Xiao, Rasul, Vollgraf (2017), Fashion-MNIST, arXiv:1708.07747",
            offline_hint="from Debian's copy: apt-get install -y dataset-fashion-mnist && "
            f"{PREPARE} fashion_mnist --data-dir {{data_dir}} "
            f"--manual-dir {DEBIAN_FASHION_MNIST_DIR}",
        ),
        DatasetSpec(
            "cifar10",
            "CIFAR-10",
            "tfds",
            ("train", "test"),
            10,
            "Krizhevsky (2009), Learning multiple layers of features from tiny images",
            offline_hint="from cifar-10-binary.tar.gz in a folder DIR: "
            f"{PREPARE} cifar10 --data-dir {{data_dir}} --manual-dir DIR  "
            "(the JPEG q75 copy is a different data set: cifar10_jpeg)",
        ),
        DatasetSpec(
            "cifar100",
            "CIFAR-100",
            "tfds",
            ("train", "test"),
            100,
            "Krizhevsky (2009), Learning multiple layers of features from tiny images",
            offline_hint="from cifar-100-binary.tar.gz in a folder DIR: "
            f"{PREPARE} cifar100 --data-dir {{data_dir}} --manual-dir DIR",
        ),
        DatasetSpec(
            "cifar10_jpeg",
            "CIFAR-10 (JPEG q75 copy)",
            "tfds",
            ("train", "test"),
            10,
            "Krizhevsky (2009); re-encoded by a third party as JPEG quality 75, 4:2:0 chroma",
            offline_hint=f"from the folder holding {CIFAR10_JPEG_ARCHIVE} (e.g. ../shared/data): "
            f"{PREPARE} cifar10_jpeg --data-dir {{data_dir}} --manual-dir ../shared/data ; "
            "or from an unpacked folder ROOT/{{train,test}}/<class>/*.jpg: "
            f"{PREPARE} cifar10_jpeg --data-dir {{data_dir}} --image-folder ROOT",
        ),
        DatasetSpec(
            "digits",
            "scikit-learn digits (8x8)",
            "embedded",
            ("train", "test"),
            10,
            "Alpaydin, Kaynak (1998), UCI Optical Recognition of Handwritten Digits "
            "(sklearn.datasets.load_digits)",
        ),
        DatasetSpec(
            "mnist1d",
            "MNIST-1D",
            "embedded",
            ("train", "test"),
            10,
            "Greydanus, Kobak (2024), Scaling down deep learning with MNIST-1D, arXiv:2011.14439",
        ),
        DatasetSpec(
            "gaussian_mixture",
            "Gaussian mixture",
            "synthetic",
            ("train", "test"),
            None,
            "Sagun, Bottou, LeCun (2016), Eigenvalues of the Hessian in deep learning, "
            "arXiv:1611.07476",
        ),
        DatasetSpec(
            "linear_regression",
            "Linear regression (prescribed spectrum)",
            "synthetic",
            ("train", "test"),
            None,
            "Baldi, Hornik (1989), Neural networks and PCA; Kawaguchi (2016), "
            "Deep learning without poor local minima",
        ),
        DatasetSpec(
            "random_labels",
            "Random inputs, random labels",
            "synthetic",
            ("train", "test"),
            None,
            "Zhang, Bengio, Hardt, Recht, Vinyals (2017), Understanding deep learning "
            "requires rethinking generalization",
        ),
    )
}


def get_spec(name: str) -> DatasetSpec:
    """The spec of ``name``; ``KeyError`` listing the known names otherwise."""
    try:
        return DATASETS[name]
    except KeyError:
        raise KeyError(f"unknown data set {name!r}; known: {', '.join(DATASETS)}") from None


def prepare_instructions(name: str, data_dir: str | Path, *, force: bool = False) -> str:
    """The exact commands that prepare ``name`` into ``data_dir`` (online and offline).

    With ``force`` the commands replace an existing (damaged) copy.
    """
    spec = get_spec(name)
    quoted = shlex.quote(str(data_dir))
    flag = " --force" if force else ""
    lines = ["Prepare it once (needs TensorFlow: pip install -r requirements-tf.lock):"]
    if name != "cifar10_jpeg":
        lines.append(f"  online:  {PREPARE} {name}{flag} --data-dir {quoted}")
    if spec.offline_hint:
        hint = spec.offline_hint.replace(f"{PREPARE} {name} ", f"{PREPARE} {name}{flag} ")
        lines.append("  offline: " + hint.format(data_dir=quoted))
    target = shlex.quote(str(Path(data_dir) / name / MANIFEST_NAME))
    rerun = " --forcerun prepare_data" if force else ""
    offline = f" data_manual_dir='{{{name}: DIR}}'" if spec.offline_hint else ""
    lines.append(
        f"  or with Snakemake: snakemake --cores 1{rerun} {target} --config data_dir={quoted}"
        + (f"  [offline: add{offline}]" if offline else "")
    )
    return "\n".join(lines)
