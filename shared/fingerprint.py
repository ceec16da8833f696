"""The code that computes a result, as a fingerprint: cached work and rules depend on it.

``code_fingerprint(module)`` hashes the contents of the module's own Python files and of
every Python file under ``shared/`` (coarse on purpose: an edit anywhere in the shared
package reruns every module, an edit in one module reruns only that module), and the
``paper_tables`` of the module's ``claims.yaml`` (data its steps print beside ours; the
claims' rules are not part of it: a verdict rule reads only the measurements). It is a
Snakemake param of every generated rule (a changed fingerprint reruns the rule) and part
of every resumable chunk's key (``shared.resume``), so a number is never reused from code
that no longer exists.
"""

from __future__ import annotations

import hashlib
import json
from functools import cache
from pathlib import Path

import yaml

from shared.config import ROOT


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*.py") if "__pycache__" not in p.parts)


@cache
def tree_fingerprint(folder: str) -> str:
    """sha256 over the relative paths and contents of a folder's Python files."""
    root = Path(folder)
    digest = hashlib.sha256()
    for path in _files(root):
        digest.update(str(path.relative_to(ROOT)).encode())
        digest.update(b"\0")
        digest.update(path.read_bytes())
        digest.update(b"\0")
    return digest.hexdigest()


def code_fingerprint(module: str) -> str:
    """16 hex digits for the module's sources plus ``shared/``."""
    from shared.module import module_folder

    shared = ROOT / "shared"
    own = module_folder(module)
    parts = [tree_fingerprint(str(shared))]
    if shared not in own.parents:
        parts.append(tree_fingerprint(str(own)))
    parts.append(paper_tables_fingerprint(str(own / "claims.yaml")))
    return hashlib.sha256("/".join(parts).encode()).hexdigest()[:16]


@cache
def paper_tables_fingerprint(claims_path: str) -> str:
    """sha256 of the ``paper_tables`` section of a ``claims.yaml`` ("" without one)."""
    path = Path(claims_path)
    if not path.exists():
        return ""
    tables = (yaml.safe_load(path.read_text()) or {}).get("paper_tables", {})
    return hashlib.sha256(json.dumps(tables, sort_keys=True).encode()).hexdigest()
