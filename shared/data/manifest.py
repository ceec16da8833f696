"""Manifests: what ``prepare`` wrote, with the sha256 of every file.

A data set counts as prepared when ``<data_dir>/<name>/landscape_manifest.json``
exists and every file it lists still has the recorded size and sha256.  That
catches truncated and corrupted files before anything reads them, and puts the
checksums into every result's provenance.  The manifest sits next to the tfds
version folder, so deleting the data set deletes its manifest too.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from shared import io
from shared.data.errors import DataCorruptedError, DataNotPreparedError
from shared.data.paths import manifest_path
from shared.data.registry import prepare_instructions

_CHUNK = 1 << 20


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def file_records(folder: Path) -> dict[str, dict[str, Any]]:
    """``{file name: {"bytes": size, "sha256": hex}}`` for the files directly in ``folder``."""
    return {
        path.name: {"bytes": path.stat().st_size, "sha256": sha256_file(path)}
        for path in sorted(folder.iterdir())
        if path.is_file()
    }


def write_manifest(data_dir: Path, name: str, version_dir: Path, record: dict[str, Any]) -> Path:
    """Checksum every file of ``version_dir`` and write the manifest of ``name`` atomically."""
    target = manifest_path(data_dir, name)
    manifest = {
        **record,
        "name": name,
        "version_dir": version_dir.relative_to(data_dir).as_posix(),
        "files": file_records(version_dir),
    }
    io.write_json(target, manifest)
    target.chmod(0o644)  # atomic writes start as 0600; a shared data folder must be readable
    return target


def read_manifest(data_dir: Path, name: str) -> dict[str, Any]:
    """The manifest of ``name``; ``DataNotPreparedError`` if absent, corrupted if unreadable."""
    target = manifest_path(data_dir, name)
    if not target.is_file():
        raise DataNotPreparedError(
            f"Data set {name!r} is not prepared in {data_dir}.\n"
            f"Looked for {target} (missing).\n" + prepare_instructions(name, data_dir)
        )
    try:
        manifest: dict[str, Any] = json.loads(target.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataCorruptedError(
            f"Data set {name!r}: the manifest {target} is unreadable ({err}).\n"
            + _reprepare(name, data_dir)
        ) from err
    return manifest


def verify_manifest(data_dir: Path, name: str) -> dict[str, Any]:
    """Read the manifest of ``name`` and check every listed file's size and sha256.

    Returns the manifest; raises ``DataNotPreparedError`` when it is missing and
    ``DataCorruptedError`` naming the first file that is missing, truncated or
    altered.
    """
    manifest = read_manifest(data_dir, name)
    version_dir = data_dir / manifest["version_dir"]
    for file_name, expected in manifest["files"].items():
        path = version_dir / file_name
        problem = None
        if not path.is_file():
            problem = "is missing"
        elif path.stat().st_size != expected["bytes"]:
            problem = f"has {path.stat().st_size} bytes, expected {expected['bytes']} (truncated?)"
        elif sha256_file(path) != expected["sha256"]:
            problem = f"has sha256 {sha256_file(path)}, expected {expected['sha256']}"
        if problem:
            raise DataCorruptedError(
                f"Data set {name!r} in {data_dir} is corrupted: {path} {problem}.\n"
                + _reprepare(name, data_dir)
            )
    return manifest


def _reprepare(name: str, data_dir: Path) -> str:
    return "Replace the damaged copy. " + prepare_instructions(name, data_dir, force=True)
