"""Where prepared data lives: one data directory, shared with tensorflow-datasets.

The directory is, in order of precedence: an explicit argument (``--data-dir``,
the Snakemake config key ``data_dir``), the environment variable
``LANDSCAPE_DATA_DIR``, then tensorflow-datasets' own default
``~/tensorflow_datasets``.  This module imports nothing heavy, so a Snakefile
can use it at parse time.
"""

from __future__ import annotations

import os
from pathlib import Path

ENV_VAR = "LANDSCAPE_DATA_DIR"
DEFAULT_DATA_DIR = "~/tensorflow_datasets"
MANIFEST_NAME = "landscape_manifest.json"


def resolve_data_dir(data_dir: str | os.PathLike[str] | None = None) -> Path:
    """The data directory: ``data_dir`` if given, else ``$LANDSCAPE_DATA_DIR``, else the default."""
    chosen = data_dir if data_dir not in (None, "") else os.environ.get(ENV_VAR) or DEFAULT_DATA_DIR
    return Path(chosen).expanduser().absolute()


def manifest_path(data_dir: str | os.PathLike[str], name: str) -> Path:
    """The manifest that marks ``name`` as prepared (and checksums its files)."""
    return Path(data_dir) / name / MANIFEST_NAME
