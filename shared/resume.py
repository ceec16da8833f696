"""Resume inside a step: finished chunks of work are kept and reused.

A step that loops over independent chunks (configurations, data sets, grid blocks)
wraps each in ``chunk(name, spec, compute)``. ``shared.module.run_step`` opens a
``workspace`` (``<outdir>/work/<step>/`` and the code fingerprint of the module) around
the step; the chunk's table is written atomically to ``<name>.<hash>.csv`` there, and a
rerun after a kill finds it and skips the computation. The hash covers the chunk's
settings and seed *and* the fingerprint of the code (``shared.fingerprint``), so neither a
changed config nor changed code ever reuses a stale chunk. Fresh and reused chunks are
both read back from the CSV, so the step's outputs are bit-identical either way.
Outside a workspace (a test calling a step directly) chunks are computed, not cached.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd

from shared.io import write_table

_WORKSPACE: list[tuple[Path, str]] = []


def spec_hash(spec: Mapping[str, Any]) -> str:
    text = json.dumps(spec, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


@contextmanager
def workspace(workdir: Path, code_fingerprint: str) -> Iterator[None]:
    """Cache chunks under ``workdir``, keyed on their spec and ``code_fingerprint``."""
    _WORKSPACE.append((Path(workdir), code_fingerprint))
    try:
        yield
    finally:
        _WORKSPACE.pop()


def _location(name: str, spec: Mapping[str, Any], workdir: Path | None) -> Path | None:
    """Where a chunk is cached: the explicit ``workdir`` or the open workspace (None: nowhere)."""
    fingerprint = _WORKSPACE[-1][1] if _WORKSPACE else ""
    folder = Path(workdir) if workdir is not None else (_WORKSPACE[-1][0] if _WORKSPACE else None)
    if folder is None:
        return None
    return folder / f"{name}.{spec_hash({'spec': dict(spec), 'code': fingerprint})}.csv"


def folder(name: str, spec: Mapping[str, Any]) -> Path | None:
    """A folder for a resumable computation that is not a table (e.g. training checkpoints),
    keyed like a chunk on its spec and the code fingerprint; ``None`` outside a workspace."""
    path = _location(name, spec, None)
    return None if path is None else path.with_suffix("")


def is_cached(name: str, spec: Mapping[str, Any], workdir: Path | None = None) -> bool:
    path = _location(name, spec, workdir)
    return path is not None and path.exists()


def chunk(name: str, spec: Mapping[str, Any], compute: Callable[[], pd.DataFrame],
          workdir: Path | None = None) -> pd.DataFrame:
    """The chunk's table: reused if finished before (same spec, same code), else computed and
    saved. ``workdir`` overrides the workspace's folder (the code fingerprint stays the
    workspace's: a library caller outside a step keys on its spec alone)."""
    path = _location(name, spec, workdir)
    if path is None:
        buffer = io.StringIO()  # the same CSV round trip as a cached chunk: identical values
        compute().to_csv(buffer, index=False, float_format="%.17g")
        buffer.seek(0)
        return pd.read_csv(buffer)
    if not path.exists():
        write_table(path, compute())
    return pd.read_csv(path)
