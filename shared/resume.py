"""Resume inside a step: finished chunks of work are kept and reused.

A step that loops over independent chunks (configurations, data sets, grid
blocks) wraps each in ``chunk(workdir, name, spec, compute)``. The chunk's table
is written atomically to ``<workdir>/<name>.<hash(spec)>.csv``; a rerun after a
kill finds it and skips the computation. The hash covers everything that
shapes the chunk (its settings and seed), so a changed config never reuses a
stale chunk. Fresh and reused chunks are both read back from the CSV, so the
step's outputs are bit-identical either way.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from shared.io import write_table


def spec_hash(spec: Mapping[str, Any]) -> str:
    text = json.dumps(spec, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def chunk(workdir: Path, name: str, spec: Mapping[str, Any],
          compute: Callable[[], pd.DataFrame]) -> pd.DataFrame:
    """The chunk's table: reused from ``workdir`` if finished before, else computed and saved."""
    path = Path(workdir) / f"{name}.{spec_hash(spec)}.csv"
    if not path.exists():
        write_table(path, compute())
    return pd.read_csv(path)
