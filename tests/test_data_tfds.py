"""tensorflow-datasets sources: mocked MNIST/CIFAR-10, Fashion-MNIST from Debian through
the official builder, the CIFAR-10 JPEG path, checksums, errors, the CLI and Snakemake.

Tests that prepare data need TensorFlow (``requires_tf``); reading does not, which
``test_reading_needs_no_tensorflow`` checks in a subprocess where TensorFlow looks
uninstalled.  Deselect this file with ``-k "not tfds"``.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

from shared import data
from shared.data import prepare as prep
from shared.data.paths import manifest_path
from shared.data.registry import CIFAR10_CLASSES

requires_tf = pytest.mark.skipif(
    importlib.util.find_spec("tensorflow") is None,
    reason="preparing tfds data needs TensorFlow (pip install -r requirements-tf.lock)",
)
DEBIAN = Path("/usr/share/datasets/fashion-mnist")
requires_debian = pytest.mark.skipif(
    not DEBIAN.is_dir(),
    reason=f"{DEBIAN} absent: apt-get install -y dataset-fashion-mnist",
)
REPO = Path(__file__).resolve().parents[1]

# Makes TensorFlow look uninstalled: find_spec answers None, importing it fails.
BLOCK_TENSORFLOW = """
import importlib.abc, importlib.util, sys
_find_spec = importlib.util.find_spec
def find_spec(name, package=None):
    return None if name.split(".")[0] == "tensorflow" else _find_spec(name, package)
importlib.util.find_spec = find_spec
class NoTensorFlow(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "tensorflow":
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, NoTensorFlow())
"""


def run_python(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code, *args], cwd=REPO, capture_output=True, text=True, timeout=300
    )


# --- mocked MNIST and CIFAR-10 (tfds.testing.mock_data) ---------------------------


@pytest.fixture
def mock_tfds(monkeypatch):
    tfds = pytest.importorskip("tensorflow_datasets")
    from tensorflow_datasets.testing import mocking

    # tfds 4.9.10's mock binds `_getitems` without `self`, so batched reads
    # (`__getitems__`, what the loader uses) fail under mock_data: accept that call.
    monkeypatch.setattr(
        mocking, "_getitems", lambda keys, generator, serialized=False: [generator[k] for k in keys]
    )
    with tfds.testing.mock_data(num_examples=6, policy=tfds.testing.MockPolicy.USE_CODE):
        yield


@pytest.mark.parametrize(("name", "shape"), [("mnist", (28, 28, 1)), ("cifar10", (32, 32, 3))])
def test_mocked_tfds_data_through_the_loader(mock_tfds, name, shape):
    for split in ("train", "test"):
        ds = data.load(name, split, verify=False)
        assert ds.x.shape == (6, *shape) and ds.x.dtype == jnp.result_type(float)
        assert ds.y.shape == (6,) and ds.y.dtype == np.int32
        assert 0.0 <= float(ds.x.min()) and float(ds.x.max()) <= 1.0
        assert 0 <= int(ds.y.min()) and int(ds.y.max()) < 10
        assert ds.num_classes == 10 and ds.split == split and ds.source == "tfds"
        assert ds.provenance["reader"]["checksums_verified"] is False
    mlp = data.load(name, "test", verify=False, preprocessing=["flatten", "standardize"])
    assert mlp.x.shape == (6, int(np.prod(shape)))


# --- errors: missing data, the CLI ------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("mnist", "online:  python -m shared.data.prepare mnist --data-dir "),
        (
            "fashion_mnist",
            "apt-get install -y dataset-fashion-mnist && python -m shared.data"
            ".prepare fashion_mnist --data-dir ",
        ),
        ("cifar10_jpeg", "--image-folder ROOT"),
    ],
)
def test_missing_data_names_the_data_set_the_place_and_the_command(tmp_path, name, expected):
    with pytest.raises(data.DataNotPreparedError) as raised:
        data.load(name, "train", data_dir=tmp_path)
    message = str(raised.value)
    assert f"Data set {name!r} is not prepared in {tmp_path}" in message
    assert str(manifest_path(tmp_path, name)) in message
    assert expected in message
    assert "snakemake --cores 1" in message


def test_the_cli_prints_one_error_without_traceback_and_writes_nothing(tmp_path):
    target = tmp_path / "data"
    result = subprocess.run(
        [sys.executable, "-m", "shared.data.prepare", "cifar10_jpeg", "--data-dir", str(target)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("error: ") and "Traceback" not in result.stderr
    assert "--image-folder ROOT" in result.stderr and "--manual-dir ../shared/data" in result.stderr
    assert not target.exists() and list(tmp_path.iterdir()) == []
    unknown = subprocess.run(
        [sys.executable, "-m", "shared.data.prepare", "imagenet"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert unknown.returncode == 2 and "unknown data set 'imagenet'" in unknown.stderr


@requires_tf  # without TensorFlow the CLI stops earlier (tested by the message above)
def test_the_cli_reports_an_incomplete_offline_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "shared.data.prepare",
            "fashion_mnist",
            "--data-dir",
            str(tmp_path / "data"),
            "--manual-dir",
            str(tmp_path / "empty"),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "lacks train-images-idx3-ubyte.gz" in result.stderr


# --- Fashion-MNIST from Debian, through the official builder ------------------------


@pytest.fixture(scope="session")
def fashion_dir(tmp_path_factory):
    if importlib.util.find_spec("tensorflow") is None:
        pytest.skip("preparing tfds data needs TensorFlow (pip install -r requirements-tf.lock)")
    if not DEBIAN.is_dir():
        if os.environ.get("REQUIRE_FASHION_MNIST"):
            pytest.fail(f"REQUIRE_FASHION_MNIST is set but {DEBIAN} is absent")
        pytest.skip(f"{DEBIAN} absent: apt-get install -y dataset-fashion-mnist")
    root = tmp_path_factory.mktemp("fashion")
    prep.prepare("fashion_mnist", root, manual_dir=DEBIAN)
    return root


@requires_tf
@requires_debian
def test_baldi_reads_fashion_mnist_through_the_data_layer(fashion_dir, x64):
    """A module's paper-scale path: patterns from a prepared tfds data set, centred."""
    from replications.baldi_linear_autoencoder.steps import load_patterns

    x, description = load_patterns({"dataset": "fashion_mnist"}, 0, str(fashion_dir))
    assert x.shape == (60000, 784) and "Fashion-MNIST" in description
    np.testing.assert_allclose(x.mean(axis=0), 0.0, atol=1e-9)


@requires_tf
@requires_debian
def test_fashion_mnist_from_debian_is_checksum_verified(fashion_dir):
    manifest = data.load("fashion_mnist", "test", data_dir=fashion_dir).provenance["reader"][
        "manifest"
    ]
    source = manifest["source"]
    assert source["method"] == "debian_restored_gzip"
    for file_name, record in source["files"].items():
        assert record["header_restored"]
        assert record["source_sha256"] != record["restored_sha256"]
        # the builder verified exactly these bytes against its registered checksums
        assert record["restored_sha256"] == source["verified_downloads"][file_name]["sha256"]
    assert manifest["splits"] == {"test": 10000, "train": 60000}
    assert manifest["file_format"] == "array_record"
    train = data.load("fashion_mnist", "train", data_dir=fashion_dir)
    assert train.x.shape == (60000, 28, 28, 1) and train.title == "Fashion-MNIST"
    np.testing.assert_array_equal(np.bincount(np.asarray(train.y)), 6000)
    # preparing again keeps the verified copy
    before = manifest_path(fashion_dir, "fashion_mnist").read_bytes()
    prep.prepare("fashion_mnist", fashion_dir, manual_dir=DEBIAN)
    assert manifest_path(fashion_dir, "fashion_mnist").read_bytes() == before


@requires_tf
@requires_debian
def test_reading_needs_no_tensorflow(fashion_dir):
    code = BLOCK_TENSORFLOW + (
        "from shared import data\n"
        "ds = data.load('fashion_mnist', 'test', data_dir=sys.argv[1],"
        " preprocessing=[{'resize': {'height': 10, 'width': 10}}, 'flatten'])\n"
        "assert importlib.util.find_spec('tensorflow') is None\n"
        "print(ds.x.shape, 'tensorflow' in sys.modules)\n"
    )
    result = run_python(code, str(fashion_dir))
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith("(10000, 100) False")


@requires_tf
@requires_debian
@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_a_damaged_prepared_file_is_detected(fashion_dir, tmp_path, damage):
    copy = tmp_path / "data"
    shutil.copytree(fashion_dir, copy)
    victim = copy / "fashion_mnist" / "3.0.1" / "fashion_mnist-test.array_record-00000-of-00001"
    content = bytearray(victim.read_bytes())
    if damage == "flip":
        content[len(content) // 2] ^= 0xFF
    else:
        del content[-1000:]
    victim.write_bytes(bytes(content))
    with pytest.raises(data.DataCorruptedError) as raised:
        data.load("fashion_mnist", "test", data_dir=copy)
    message = str(raised.value)
    assert f"Data set 'fashion_mnist' in {copy} is corrupted: {victim}" in message
    assert ("truncated" in message) == (damage == "truncate")
    assert "python -m shared.data.prepare fashion_mnist --force --data-dir" in message
    with pytest.raises(data.DataCorruptedError):  # prepare refuses to bless it
        prep.prepare("fashion_mnist", copy, manual_dir=DEBIAN)


@requires_tf
@requires_debian
def test_a_corrupted_source_file_fails_the_builders_checksum(tmp_path):
    source = tmp_path / "debian"
    shutil.copytree(DEBIAN, source)
    victim = source / "t10k-labels-idx1-ubyte.gz"
    content = bytearray(victim.read_bytes())
    content[len(content) // 2] ^= 0x01
    victim.write_bytes(bytes(content))
    with pytest.raises(data.DataCorruptedError) as raised:
        prep.prepare("fashion_mnist", tmp_path / "data", manual_dir=source)
    assert "t10k-labels-idx1-ubyte.gz" in str(raised.value)
    assert "does not match the checksum" in str(raised.value)
    assert not manifest_path(tmp_path / "data", "fashion_mnist").exists()


# --- CIFAR-10 JPEG copy, from an image folder -----------------------------------


def write_image_folder(root: Path) -> dict[tuple[str, str], list[np.ndarray]]:
    """A few 32x32 JPEGs (quality 75) in ROOT/{train,test}/<class>/; returns what
    Pillow decodes from each file, by (split, class)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    decoded: dict[tuple[str, str], list[np.ndarray]] = {}
    for split, count in (("train", 3), ("test", 2)):
        for label in ("cat", "ship"):
            folder = root / split / label
            folder.mkdir(parents=True)
            for i in range(count):
                path = folder / f"{i:04d}.jpg"
                pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(path, quality=75)
                decoded.setdefault((split, label), []).append(np.asarray(Image.open(path)))
    return decoded


@requires_tf
def test_cifar10_jpeg_from_an_image_folder(tmp_path):
    decoded = write_image_folder(tmp_path / "folder")
    root = tmp_path / "data"
    prep.prepare("cifar10_jpeg", root, image_folder=tmp_path / "folder")
    for split, count in (("train", 6), ("test", 4)):
        ds = data.load("cifar10_jpeg", split, data_dir=root)
        assert ds.x.shape == (count, 32, 32, 3) and ds.num_classes == 10
        assert ds.title == "CIFAR-10 (JPEG q75 copy)" != data.DATASETS["cifar10"].title
        manifest = ds.provenance["reader"]["manifest"]
        assert manifest["title"] == manifest["source"]["title"] == "CIFAR-10 (JPEG q75 copy)"
        assert manifest["source"]["kind"] == "folder" and manifest["source"]["content_sha256"]
        pixels = np.round(np.asarray(ds.x) * 255).astype(np.uint8)
        for image, label in zip(pixels, np.asarray(ds.y), strict=True):
            class_name = CIFAR10_CLASSES[int(label)]
            assert any(np.array_equal(image, d) for d in decoded[(split, class_name)])

    # a damaged copy is detected, and --force replaces it
    victim = next((root / "cifar10_jpeg" / "1.0.0").glob("*train.array_record*"))
    victim.write_bytes(victim.read_bytes()[:-10])
    with pytest.raises(data.DataCorruptedError, match="--force"):
        data.load("cifar10_jpeg", "train", data_dir=root)
    prep.prepare("cifar10_jpeg", root, image_folder=tmp_path / "folder", force=True)
    assert len(data.load("cifar10_jpeg", "train", data_dir=root)) == 6


@requires_tf
def test_the_snakemake_rule_prepares_an_image_folder(tmp_path):
    snakemake = Path(sys.executable).with_name("snakemake")
    if not snakemake.exists():
        pytest.skip("snakemake not installed next to this Python")
    write_image_folder(tmp_path / "folder")
    (tmp_path / "Snakefile").write_text(f'include: "{REPO / "shared/data/data.smk"}"\n')
    target = manifest_path(tmp_path / "data", "cifar10_jpeg")
    result = subprocess.run(
        [
            str(snakemake),
            "--cores",
            "1",
            str(target),
            "--config",
            f"data_dir={tmp_path / 'data'}",
            f"data_manual_dir={{cifar10_jpeg: {tmp_path / 'folder'}}}",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(data.load("cifar10_jpeg", "test", data_dir=tmp_path / "data")) == 4


@requires_tf
def test_copies_prepared_outside_are_adopted_only_as_array_record(tmp_path):
    import tensorflow_datasets as tfds

    import shared.data.cifar10_jpeg  # noqa: F401  (registers the builder)

    write_image_folder(tmp_path / "folder")
    config = tfds.download.DownloadConfig(manual_dir=str(tmp_path / "folder"))
    for file_format in ("array_record", "tfrecord"):
        root = tmp_path / file_format
        builder = tfds.builder("cifar10_jpeg", data_dir=str(root), file_format=file_format)
        builder.download_and_prepare(download_config=config)
        if file_format == "array_record":
            prep.prepare("cifar10_jpeg", root, image_folder=tmp_path / "folder")
            ds = data.load("cifar10_jpeg", "train", data_dir=root)
            assert ds.provenance["reader"]["manifest"]["source"]["method"].startswith("adopted")
        else:
            with pytest.raises(data.DataNotPreparedError, match="tfrecord format"):
                prep.prepare("cifar10_jpeg", root, image_folder=tmp_path / "folder")
            prep.prepare("cifar10_jpeg", root, image_folder=tmp_path / "folder", force=True)
            assert len(data.load("cifar10_jpeg", "test", data_dir=root)) == 4


@requires_tf
def test_cifar10_jpeg_rejects_a_wrong_archive_and_an_undecodable_image(tmp_path):
    (tmp_path / "archive").mkdir()
    (tmp_path / "archive" / "cifar10-jpeg.tar.gz").write_bytes(b"not the archive")
    with pytest.raises(data.DataCorruptedError, match="expected efac85c8"):
        prep.prepare("cifar10_jpeg", tmp_path / "data", manual_dir=tmp_path / "archive")
    write_image_folder(tmp_path / "folder")
    broken = tmp_path / "folder" / "test" / "ship" / "0001.jpg"
    broken.write_bytes(broken.read_bytes()[:100])
    with pytest.raises(data.DataCorruptedError, match="test/ship/0001.jpg"):
        prep.prepare("cifar10_jpeg", tmp_path / "data", image_folder=tmp_path / "folder")
    assert not manifest_path(tmp_path / "data", "cifar10_jpeg").exists()
