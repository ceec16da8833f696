"""Fashion-MNIST from Debian's ``dataset-fashion-mnist``: restore the upstream gzip files.

Debian ships the original compressed data but rewrote each gzip header (file
name dropped, mtime changed), so the files' sha256 differ from the checksums
tensorflow-datasets registers for ``fashion_mnist``.  Restoring the header of
RFC 1952 -- flag FNAME set, the upstream mtime (0x59A7E9DE for ``train-*``,
0x59A7E9F3 for ``t10k-*``), then the original name without ``.gz`` and a zero
byte -- in front of the unchanged deflate body makes all four files
byte-identical to upstream.  The official builder then verifies them against
its registered checksums itself; nothing here trusts the files.

Xiao, Rasul, Vollgraf (2017), Fashion-MNIST, arXiv:1708.07747.
"""

from __future__ import annotations

import hashlib
import struct
from pathlib import Path
from typing import Any

from shared.data.errors import DataCorruptedError, DataNotPreparedError
from shared.data.registry import prepare_instructions

FASHION_MNIST_MTIMES = {
    "train-images-idx3-ubyte.gz": 0x59A7E9DE,
    "train-labels-idx1-ubyte.gz": 0x59A7E9DE,
    "t10k-images-idx3-ubyte.gz": 0x59A7E9F3,
    "t10k-labels-idx1-ubyte.gz": 0x59A7E9F3,
}

_MAGIC = b"\x1f\x8b\x08"  # gzip, deflate
_FNAME = 0x08
_OTHER_FLAGS = 0x01 | 0x02 | 0x04 | 0x10  # FTEXT, FHCRC, FEXTRA, FCOMMENT


def restore_gzip_header(data: bytes, *, original_name: str, mtime: int) -> bytes:
    """``data`` with the header rewritten to carry ``original_name`` and ``mtime``.

    A header that already names a file (an upstream copy) is returned unchanged.
    The 10-byte header keeps its XFL and OS bytes; the body is not touched.
    """
    if len(data) < 18 or not data.startswith(_MAGIC):
        raise ValueError("not a gzip (deflate) stream")
    flags = data[3]
    if flags & _FNAME:
        return data
    if flags & _OTHER_FLAGS:
        raise ValueError(f"unexpected gzip header flags {flags:#04x}")
    header = _MAGIC + bytes([_FNAME]) + struct.pack("<I", mtime) + data[8:10]
    return header + original_name.encode("latin-1") + b"\x00" + data[10:]


def stage_fashion_mnist(source_dir: Path, staging_dir: Path, data_dir: Path) -> dict[str, Any]:
    """Write the four upstream-identical files of ``source_dir`` into ``staging_dir``.

    Returns provenance: per file, the sha256 of the source and of the restored
    copy (which the builder then checks against its registered checksums).
    """
    missing = [n for n in FASHION_MNIST_MTIMES if not (source_dir / n).is_file()]
    if missing:
        raise DataNotPreparedError(
            f"Data set 'fashion_mnist': {source_dir} lacks {', '.join(missing)}.\n"
            + prepare_instructions("fashion_mnist", data_dir)
        )
    files: dict[str, Any] = {}
    for file_name, mtime in FASHION_MNIST_MTIMES.items():
        source = source_dir / file_name
        original = source.read_bytes()
        try:
            restored = restore_gzip_header(
                original, original_name=file_name[: -len(".gz")], mtime=mtime
            )
        except ValueError as err:
            raise DataCorruptedError(
                f"Data set 'fashion_mnist': {source} is not a usable gzip file ({err}).\n"
                + prepare_instructions("fashion_mnist", data_dir)
            ) from err
        target = staging_dir / file_name
        target.write_bytes(restored)
        files[file_name] = {
            "source": str(source),
            "source_sha256": hashlib.sha256(original).hexdigest(),
            "restored_sha256": hashlib.sha256(restored).hexdigest(),
            "header_restored": restored is not original,
        }
    return {"files": files}
