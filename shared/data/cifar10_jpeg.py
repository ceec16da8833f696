"""``cifar10_jpeg``: the JPEG q75 copy of CIFAR-10 as a tensorflow-datasets builder.

A DIFFERENT data set from ``cifar10``: a third party re-encoded all 60,000
images as JPEG quality 75 with 4:2:0 chroma subsampling, so accuracies run a
little below those on the original.  Every result made from it is labelled
"CIFAR-10 (JPEG q75 copy)" (the registry title), never plain "CIFAR-10".

The builder reads its manual folder, which holds either the archive
``cifar10-jpeg.tar.gz`` (sha256 checked against the published value) or an
unpacked tree ``<root>/{train,test}/<class>/<image>.jpg`` (the layout
``tfds.ImageFolder`` reads; its content digest is recorded).  Each JPEG is
decoded exactly once, here, with Pillow, and stored losslessly (PNG), so every
machine reads the same pixels whatever JPEG decoder it has.  Decoder versions
and source checksums go into the data set's metadata and from there into the
manifest.

Krizhevsky (2009), Learning multiple layers of features from tiny images.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from shared.data.errors import DataCorruptedError, DataNotPreparedError
from shared.data.manifest import sha256_file
from shared.data.registry import CIFAR10_CLASSES, CIFAR10_JPEG_ARCHIVE, prepare_instructions

ARCHIVE_SHA256 = "efac85c8ed52f4ead1e1f1b670d8dcf435d551fccebdd8b6365e0a01a504f3a4"
TITLE = "CIFAR-10 (JPEG q75 copy)"
_SHAPE = (32, 32, 3)


def find_source(manual_dir: Path) -> tuple[str, Path]:
    """``("archive", file)`` or ``("folder", root)`` found in ``manual_dir``."""
    if (manual_dir / CIFAR10_JPEG_ARCHIVE).is_file():
        return "archive", manual_dir / CIFAR10_JPEG_ARCHIVE
    for root in (manual_dir, manual_dir / "cifar10-jpeg"):
        if (root / "train").is_dir() and (root / "test").is_dir():
            return "folder", root
    raise DataNotPreparedError(
        f"Data set 'cifar10_jpeg': {manual_dir} holds neither {CIFAR10_JPEG_ARCHIVE} nor "
        "an image folder with train/ and test/ subfolders.\n"
        + prepare_instructions("cifar10_jpeg", "DATA_DIR")
    )


def folder_digest(root: Path) -> str:
    """sha256 over the sorted lines ``<split>/<class>/<file> <sha256 of the file>``."""
    digest = hashlib.sha256()
    for path in sorted(root.glob("*/*/*.jpg")):
        digest.update(f"{path.relative_to(root).as_posix()} {sha256_file(path)}\n".encode())
    return digest.hexdigest()


def decode_jpeg(data: bytes, where: str) -> np.ndarray:
    """A 32x32 RGB uint8 array, decoded by Pillow; ``DataCorruptedError`` otherwise."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            pixels = np.asarray(image)
    except OSError as err:
        raise DataCorruptedError(f"Data set 'cifar10_jpeg': cannot decode {where}: {err}") from err
    if pixels.shape != _SHAPE or pixels.dtype != np.uint8:
        raise DataCorruptedError(
            f"Data set 'cifar10_jpeg': {where} is {pixels.shape} {pixels.dtype}, "
            f"expected {_SHAPE} uint8"
        )
    return pixels


def decoder_versions() -> dict[str, Any]:
    """Pillow's version and its JPEG library's: the decoder that fixed the pixels."""
    import PIL
    from PIL import features

    return {
        "pillow": PIL.__version__,
        "libjpeg_turbo": features.version("libjpeg_turbo"),
        "jpeg": features.version_codec("jpg"),
    }


class Cifar10Jpeg(tfds.core.GeneratorBasedBuilder):
    """CIFAR-10 (JPEG q75 copy): 50,000 train and 10,000 test 32x32 RGB images."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "JPEGs decoded once with Pillow, stored as PNG."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        f"Put {CIFAR10_JPEG_ARCHIVE} (sha256 {ARCHIVE_SHA256}) in the manual folder, or pass "
        "an unpacked folder <root>/{train,test}/<class>/*.jpg."
    )

    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls) -> epath.Path:  # type: ignore[override]
        """This file.  tfds would look the top-level package up as a resource, which
        fails when ``shared`` is imported as a namespace package (an editable
        install, run outside the repository)."""
        return epath.Path(__file__)

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=f"{TITLE}: CIFAR-10 re-encoded as JPEG quality 75, 4:2:0 chroma.",
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=_SHAPE),
                    "label": tfds.features.ClassLabel(names=CIFAR10_CLASSES),
                }
            ),
            supervised_keys=("image", "label"),
            metadata=tfds.core.MetadataDict(),
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict[str, Any]:
        kind, path = find_source(Path(dl_manager.manual_dir))
        source: dict[str, Any] = {"title": TITLE, "kind": kind, "path": str(path)}
        if kind == "archive":
            digest = sha256_file(path)
            if digest != ARCHIVE_SHA256:
                raise DataCorruptedError(
                    f"Data set 'cifar10_jpeg': {path} has sha256 {digest}, "
                    f"expected {ARCHIVE_SHA256}."
                )
            source["sha256"] = digest
        else:
            source["content_sha256"] = folder_digest(path)
        source["decoder"] = decoder_versions()
        self.info.metadata["source"] = source
        return {split: self._generate_examples(kind, path, split) for split in ("train", "test")}

    def _generate_examples(  # type: ignore[override]
        self, kind: str, path: Path, split: str
    ) -> Iterator[tuple[str, dict[str, Any]]]:
        if kind == "archive":
            yield from _archive_examples(path, split)
        else:
            yield from _folder_examples(path, split)


def _example(data: bytes, relative: str) -> tuple[str, dict[str, Any]]:
    label = relative.split("/")[-2]
    if label not in CIFAR10_CLASSES:
        raise DataCorruptedError(f"Data set 'cifar10_jpeg': unknown class folder in {relative}")
    return relative, {"image": decode_jpeg(data, relative), "label": label}


def _archive_examples(archive: Path, split: str) -> Iterator[tuple[str, dict[str, Any]]]:
    with tarfile.open(archive, "r:gz") as tar:
        for member in tar:
            parts = member.name.split("/")
            if member.isfile() and len(parts) == 4 and parts[1] == split:
                handle = tar.extractfile(member)
                assert handle is not None
                yield _example(handle.read(), "/".join(parts[1:]))


def _folder_examples(root: Path, split: str) -> Iterator[tuple[str, dict[str, Any]]]:
    for path in sorted((root / split).glob("*/*.jpg")):
        yield _example(path.read_bytes(), path.relative_to(root).as_posix())
