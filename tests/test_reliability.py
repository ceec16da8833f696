"""Reliability: a killed DAG resumes to the same verdicts and tables, runs are
deterministic, and numerical failures are counted, never averaged in."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from shared.claims import judge
from tests.conftest import ROOT, SNAKEMAKE, run_snakemake


def _outputs(results: Path) -> dict[str, str]:
    """Every table and every verdict (reasons and values included) of a results folder."""
    out = {}
    for path in sorted(results.glob("*/tables/*.csv")):
        out[str(path.relative_to(results))] = path.read_text()
    for path in sorted(results.glob("*/verdicts.json")):
        claims = json.loads(path.read_text())["claims"]
        out[str(path.relative_to(results))] = json.dumps(claims, sort_keys=True)
    return out


def _failed_logs(stderr: str) -> str:
    """The tails of the logs Snakemake names for its failed jobs (what CI shows of a failure)."""
    paths = dict.fromkeys(re.findall(r"log: (\S+\.log)", stderr))
    return "".join(f"\n--- {p} ---\n{Path(p).read_text()[-3000:]}" for p in paths if Path(p).is_file())


@pytest.mark.slow
@pytest.mark.timeout(1800)  # alone, the session's smoke DAG (its setup) counts against the limit too
def test_killed_dag_resumes_to_the_same_results(smoke_results: Path, tmp_path: Path) -> None:
    """SIGKILL the whole DAG (make, Snakemake and its jobs) at several moments, rerun the
    README's command, and compare with the uninterrupted run of the session fixture."""
    results = tmp_path / "results"
    venv = Path(SNAKEMAKE).parent.parent
    command = ["make", "-s", "replicate", f"VENV={venv}", "CORES=2", "SNAKEMAKE_ARGS=--config scale=smoke"]
    env = {**os.environ, "LANDSCAPE_RESULTS": str(results)}
    for delay in (6, 15, 30):
        proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
        time.sleep(delay)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    final = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900,
                           check=False)
    assert final.returncode == 0, final.stderr[-1500:] + _failed_logs(final.stderr)
    resumed, reference = _outputs(results / "smoke"), _outputs(smoke_results)
    assert resumed.keys() == reference.keys()
    for name in reference:
        assert resumed[name] == reference[name], name
    # nothing half-written was left behind as a finished file
    assert not list(results.rglob(".*.tmp")) and not [p for p in results.rglob(".*") if p.is_file()]


@pytest.mark.slow
def test_same_command_twice_is_bit_identical(smoke_results: Path, tmp_path: Path) -> None:
    proc = run_snakemake(["baldi_linear_autoencoder", "--config", "scale=smoke"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    again = {k: v for k, v in _outputs(tmp_path / "smoke").items() if k.startswith("baldi")}
    reference = {k: v for k, v in _outputs(smoke_results).items() if k.startswith("baldi")}
    assert again == reference and again


def test_diverging_runs_are_marked_failed_and_fail_the_verdict() -> None:
    """Inject divergence (a step size far above the stability limit) into Baldi's GD."""
    import jax

    from replications.baldi_linear_autoencoder import steps
    from shared.models.functional import gaussian_ensemble

    spec = {"dataset": "synthetic", "spectrum": [4.0, 3.0, 2.0, 1.0], "samples": 50, "p": 2,
            "runs": 6, "steps": 400, "lr": 0.1, "init_scale": 1e-3}
    with jax.enable_x64(True):
        x, _ = steps.load_patterns(spec, 0)
        _, template = steps._template(4, 2)
        init = gaussian_ensemble(template, jax.random.key(0), 6, 1e-3)
        init = jax.tree_util.tree_map(lambda v: v.at[-1].set(1e3), init)  # the last run diverges
        frame = steps._descend(spec, x, 0, init=init)
    assert frame.failed.tolist() == [False] * 5 + [True]
    assert np.isnan(frame.final_loss.iloc[-1]) and np.isfinite(frame.final_loss.iloc[:-1]).all()
    claim = {"id": "B4", "statement": "s", "where": "w", "measured": "m",
             "rule": {"type": "at_most", "quantity": "gap", "threshold": 1e-6}}
    verdict = judge(claim, {"gap": frame.rel_gap.tolist()})
    assert verdict.verdict == "not reproduced"
    good = judge(claim, {"gap": frame.rel_gap.iloc[:-1].tolist()})
    assert good.verdict == "reproduced"


def test_a_killed_writers_temporary_is_removed_by_the_next_write(tmp_path: Path) -> None:
    """SIGKILL leaves ``atomic_path``'s temporary behind; the next write of the same output
    removes it (and leaves other outputs' temporaries alone)."""
    from shared.io import atomic_path

    target = tmp_path / "figures" / "plot[1].png"
    target.parent.mkdir()
    stale = target.parent / ".plot[1].png.k1ll3d.png"
    other = target.parent / ".other.png.k1ll3d.png"
    stale.write_bytes(b"half")
    other.write_bytes(b"half")
    with atomic_path(target) as tmp:
        tmp.write_bytes(b"whole")
    assert target.read_bytes() == b"whole"
    assert not stale.exists() and other.exists()
