"""Shared fixtures: the repository root and a smoke-scale run of the whole DAG."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")


def run_snakemake(args: list[str], results: Path, timeout: int = 900) -> subprocess.CompletedProcess:
    env = {**os.environ, "LANDSCAPE_RESULTS": str(results)}
    return subprocess.run(
        [SNAKEMAKE, "--cores", "2", *args], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=timeout, check=False,
    )


@pytest.fixture(scope="session")
def smoke_results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The whole DAG at the smoke scale, run once per test session into a temporary folder."""
    results = tmp_path_factory.mktemp("results")
    proc = run_snakemake(["--config", "scale=smoke"], results)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return results / "smoke"
