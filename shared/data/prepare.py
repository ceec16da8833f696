"""Prepare a tensorflow-datasets data set once, online or from an offline copy.

    python -m shared.data.prepare NAME [--data-dir DIR] [--manual-dir DIR | --image-folder DIR]
                                       [--force]

Online (internet and TensorFlow): the official builder downloads and verifies
the files.  ``--manual-dir DIR``: the builder takes the files from DIR instead
and verifies them against the same registered checksums (for
``fashion_mnist``, Debian's copies first get their upstream gzip headers back,
see ``offline.py``; for ``cifar10_jpeg``, DIR holds ``cifar10-jpeg.tar.gz``).
``--image-folder ROOT``: ``cifar10_jpeg`` from an unpacked
``ROOT/{train,test}/<class>/*.jpg``.  The result is written as array_record
into the data directory together with ``<name>/landscape_manifest.json``,
which the loader verifies on every read.  ``--force`` replaces an existing
copy.  Errors print one message (no traceback) and exit with status 2.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from shared.data.errors import DataCorruptedError, DataError, DataNotPreparedError
from shared.data.manifest import verify_manifest, write_manifest
from shared.data.paths import manifest_path, resolve_data_dir
from shared.data.registry import PREPARE, get_spec, prepare_instructions


def prepare(
    name: str,
    data_dir: str | Path | None = None,
    *,
    manual_dir: str | Path | None = None,
    image_folder: str | Path | None = None,
    force: bool = False,
) -> Path:
    """Prepare ``name`` into the data directory and return its manifest's path.

    A copy that is already prepared and intact is kept as it is (unless
    ``force``); a damaged one raises ``DataCorruptedError`` (rerun with ``force``).
    """
    spec = get_spec(name)
    if spec.kind != "tfds":
        raise ValueError(f"{name!r} is {spec.kind}: it needs no preparation")
    if manual_dir is not None and image_folder is not None:
        raise ValueError("give either manual_dir or image_folder, not both")
    if image_folder is not None and name != "cifar10_jpeg":
        raise ValueError("image_folder is only for cifar10_jpeg")
    root = resolve_data_dir(data_dir)
    if not force and manifest_path(root, name).is_file():
        verify_manifest(root, name)
        return manifest_path(root, name)
    if importlib.util.find_spec("tensorflow") is None:
        raise DataNotPreparedError(
            f"Preparing {name!r} needs TensorFlow, which is not installed here "
            "(reading a prepared data set does not).\n" + prepare_instructions(name, root)
        )
    if name == "cifar10_jpeg" and manual_dir is None and image_folder is None:
        raise DataNotPreparedError(
            "Data set 'cifar10_jpeg' has no download: give the folder holding the archive "
            "or an image folder.\n" + prepare_instructions(name, root)
        )
    folder = manual_dir if manual_dir is not None else image_folder
    offline = Path(folder).expanduser().absolute() if folder is not None else None
    if offline is not None and not offline.is_dir():
        raise DataNotPreparedError(
            f"Data set {name!r}: the folder {offline} does not exist.\n"
            + prepare_instructions(name, root)
        )
    root.mkdir(parents=True, exist_ok=True)
    manifest_path(root, name).unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(dir=root, prefix=".landscape-prepare-") as scratch:
        source, builder = _build(name, root, offline, Path(scratch), force=force)
    version_dir = Path(builder.data_dir)
    record = {
        "title": spec.title,
        "tfds_name": builder.name,
        "version": str(builder.info.version),
        "file_format": builder.info.file_format.value,
        "splits": {s: info.num_examples for s, info in builder.info.splits.items()},
        "source": source,
        "prepared_with": _versions(),
    }
    return write_manifest(root, name, version_dir, record)


def _build(
    name: str, root: Path, offline: Path | None, scratch: Path, *, force: bool
) -> tuple[dict[str, Any], Any]:
    """Run the builder's download_and_prepare; return (source provenance, builder).

    A copy prepared earlier without a manifest (e.g. by ``tfds build``) is
    adopted as it is, and said so, unless ``force`` replaces it.
    """
    import tensorflow_datasets as tfds
    from tensorflow_datasets.core import file_adapters
    from tensorflow_datasets.core.download.download_manager import NonMatchingChecksumError

    if name == "cifar10_jpeg":
        import shared.data.cifar10_jpeg  # noqa: F401  (registers the builder)

    existing = tfds.builder(name, data_dir=str(root))  # whatever format it was written in
    if existing.is_prepared() and not force:
        if existing.info.file_format != file_adapters.FileFormat.ARRAY_RECORD:
            raise DataNotPreparedError(
                f"Data set {name!r} in {root} was prepared in {existing.info.file_format.value} "
                "format (by tfds.load or tfds build); the data layer reads array_record, "
                "which needs no TensorFlow. Replace it:\n"
                + prepare_instructions(name, root, force=True)
            )
        adopted = {"method": "adopted: prepared earlier, outside shared.data.prepare"}
        return {**adopted, **_builder_source(existing)}, existing
    if existing.is_prepared():
        shutil.rmtree(existing.data_dir)
    builder = tfds.builder(name, data_dir=str(root), file_format="array_record")

    source: dict[str, Any] = {"method": "download" if offline is None else "manual_dir"}
    manual = offline
    if name == "fashion_mnist" and offline is not None:
        from shared.data.offline import stage_fashion_mnist

        manual = scratch / "manual"
        manual.mkdir()
        source.update(method="debian_restored_gzip", **stage_fashion_mnist(offline, manual, root))
    if offline is not None:
        source["manual_dir"] = str(offline)
    tfds.disable_progress_bar()
    try:
        builder.download_and_prepare(
            # offline: tfds's scratch copies (downloads/extracted) go away afterwards
            download_dir=str(scratch / "downloads") if offline is not None else None,
            download_config=tfds.download.DownloadConfig(
                manual_dir=str(manual) if manual else None
            ),
        )
    except NonMatchingChecksumError as err:
        raise DataCorruptedError(
            f"Data set {name!r}: a source file does not match the checksum tensorflow-datasets "
            f"registers for it, so nothing was prepared.\n{err}\n"
            + prepare_instructions(name, root)
        ) from err
    except OSError as err:  # requests' ConnectionError is an OSError
        if offline is not None:
            raise
        raise DataNotPreparedError(
            f"Data set {name!r}: download failed ({type(err).__name__}: {err}).\n"
            + prepare_instructions(name, root)
        ) from err
    if builder.url_infos:
        source["verified_downloads"] = {
            info.filename or url: {"bytes": int(info.size), "sha256": info.checksum}
            for url, info in sorted(builder.url_infos.items())
        }
    return {**source, **_builder_source(builder)}, builder


def _builder_source(builder: Any) -> dict[str, Any]:
    """What our own builders record about their source (``cifar10_jpeg``)."""
    metadata = builder.info.metadata or {}
    return dict(metadata.get("source", {}))


def _versions() -> dict[str, str]:
    versions = {"python": sys.version.split()[0]}
    for package in (
        "tensorflow-datasets",
        "tensorflow-cpu",
        "tensorflow",
        "array-record",
        "pillow",
    ):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            pass
    return versions


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=PREPARE, description=__doc__.split("\n\n")[0] if __doc__ else None
    )
    parser.add_argument("name", help="mnist, fashion_mnist, cifar10, cifar100 or cifar10_jpeg")
    parser.add_argument(
        "--data-dir", help="default: $LANDSCAPE_DATA_DIR, else ~/tensorflow_datasets"
    )
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--manual-dir", help="folder with the source files (offline)")
    group.add_argument("--image-folder", help="cifar10_jpeg: ROOT/{train,test}/<class>/*.jpg")
    parser.add_argument("--force", action="store_true", help="replace an existing copy")
    args = parser.parse_args(argv)
    try:
        spec = get_spec(args.name)
    except KeyError as err:
        parser.error(str(err.args[0]))
    if spec.kind != "tfds":
        print(f"{args.name}: {spec.kind} data set, nothing to prepare.")
        return 0
    if args.image_folder and args.name != "cifar10_jpeg":
        parser.error("--image-folder is only for cifar10_jpeg")
    try:
        path = prepare(
            args.name,
            args.data_dir,
            manual_dir=args.manual_dir,
            image_folder=args.image_folder,
            force=args.force,
        )
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"{args.name}: prepared; manifest {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
