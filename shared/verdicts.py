"""A module's verdicts: its ``claims.yaml`` judged on its run's declared measurement files."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from shared.claims import judge_all, load_claims, merge_measurements
from shared.io import write_json


def write_module_verdicts(module: str, claims_path: Path, measurement_files: list[Path], out: Path) -> list[dict]:
    """Judge every claim on the union of ``measurement_files``; write ``out`` (verdicts.json)."""
    claims = load_claims(claims_path)
    files = sorted(measurement_files)
    measurements = merge_measurements(files)
    verdicts = [v.as_dict() for v in judge_all(claims, measurements)]
    write_json(
        out,
        {
            "module": module,
            "paper": claims["paper"],
            "conventions": claims.get("conventions"),
            "summary": dict(Counter(v["verdict"] for v in verdicts)),
            "claims": verdicts,
            "measurement_files": [str(f.relative_to(out.parent)) for f in files],
        },
    )
    return verdicts
