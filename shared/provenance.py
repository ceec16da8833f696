"""Provenance: what made each results file (config, seeds, code, packages, device, time)."""

from __future__ import annotations

import csv
import datetime as dt
import importlib.metadata
import platform
import subprocess
from pathlib import Path
from typing import Any

from shared.config import ROOT
from shared.io import read_json, write_json

PACKAGES = (
    "jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy", "scipy", "pandas",
    "matplotlib", "seaborn", "scikit-learn", "snakemake", "tensorflow-datasets",
)


def git_commit() -> dict[str, Any]:
    """The code's commit and whether the working tree had uncommitted changes."""
    def run(*cmd: str) -> str:
        out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)
        return out.stdout.strip()

    commit = run("git", "rev-parse", "HEAD") or "unknown"
    dirty = bool(run("git", "status", "--porcelain", "--untracked-files=no"))
    return {"commit": commit, "dirty": dirty}


def package_versions() -> dict[str, str]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def device_description() -> dict[str, Any]:
    import jax

    devices = jax.devices()
    return {
        "backend": jax.default_backend(),
        "devices": [f"{d.platform}:{getattr(d, 'device_kind', '?')}" for d in devices],
        "x64": bool(jax.config.read("jax_enable_x64")),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
    }


def write_step_record(outdir: Path, step: str, cfg: dict[str, Any], wall_s: float,
                      streams: list[str]) -> None:
    """``runinfo/<step>.json``: how one step ran."""
    write_json(
        outdir / "runinfo" / f"{step}.json",
        {
            "step": step,
            "finished": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "wall_s": round(wall_s, 3),
            "seed": cfg["seed"],
            "seed_streams": streams,
            "device": device_description(),
        },
    )


def benchmark_seconds(path: Path) -> float:
    """Wall time of one rule from its Snakemake ``benchmark:`` file (the last repeat)."""
    with open(path) as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    return float(rows[-1]["s"])


def timings_table(results: Path, benchmarks: list[Path]) -> list[dict[str, Any]]:
    """One row per rule: module, rule, wall seconds (Snakemake's benchmark files)."""
    rows = []
    for path in sorted(benchmarks):
        rel = path.relative_to(results)
        rows.append({"module": rel.parts[0], "rule": path.stem, "wall_s": round(benchmark_seconds(path), 2)})
    return rows


def write_timings(out: Path, rows: list[dict[str, Any]]) -> None:
    import pandas as pd

    from shared.io import write_table

    write_table(out, pd.DataFrame(rows, columns=["module", "rule", "wall_s"]))


def write_module_provenance(module: str, cfg: dict[str, Any], out: Path, runinfo: list[Path],
                            benchmarks: list[Path]) -> None:
    """``provenance.json``: settings, seeds, code, packages, device and the rules' wall times."""
    from shared.fingerprint import code_fingerprint

    steps = {p.stem: read_json(p) for p in sorted(runinfo)}
    write_json(
        out,
        {
            "module": module,
            "config": cfg,
            "seed": cfg["seed"],
            "code": {**git_commit(), "fingerprint": code_fingerprint(module)},
            "packages": package_versions(),
            "device": next(iter(steps.values()))["device"] if steps else device_description(),
            "steps": steps,
            "rule_wall_s": {p.stem: benchmark_seconds(p) for p in sorted(benchmarks)},
            "written": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        },
    )
