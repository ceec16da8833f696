"""A module's verdicts: its ``claims.yaml`` judged on its run's measurements."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from shared.claims import judge_all, load_claims, merge_measurements
from shared.config import module_dir
from shared.io import write_json


def write_module_verdicts(module: str, outdir: Path) -> list[dict]:
    """Read ``outdir/measurements/*.json``, judge every claim, write ``verdicts.json``."""
    claims = load_claims(module_dir(module) / "claims.yaml")
    files = sorted((outdir / "measurements").glob("*.json"))
    measurements = merge_measurements(files)
    verdicts = [v.as_dict() for v in judge_all(claims, measurements)]
    write_json(
        outdir / "verdicts.json",
        {
            "module": module,
            "paper": claims["paper"],
            "conventions": claims.get("conventions"),
            "summary": dict(Counter(v["verdict"] for v in verdicts)),
            "claims": verdicts,
            "measurement_files": [str(f.relative_to(outdir)) for f in files],
        },
    )
    return verdicts
