"""A real SLURM cluster through Snakemake's executor plugin (issue #19, part 1).

CI starts a single-node cluster from Debian's packages (``.ci/slurm/start.sh``: slurmctld,
slurmd, slurmdbd on MariaDB so that ``sacct`` answers, munge). Here a smoke DAG goes through
``--workflow-profile profiles/slurm``: its steps must run as SLURM jobs (``sacct`` lists them),
a job cancelled mid-run by ``scancel`` must resume on resubmission without rerunning the step
that had finished, and the tables and verdicts must equal the local run's bit for bit.
Skipped where no cluster answers, except under ``REQUIRE_SLURM=1`` (CI), where that fails.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, SNAKEMAKE

MODULE = "baldi_linear_autoencoder"  # two steps: one finishes, the other is cancelled
STEPS = ("critical_points", "gradient_descent")


def _cluster_up() -> bool:
    if shutil.which("sinfo") is None:
        return False
    proc = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, check=False)
    return proc.returncode == 0 and "idle" in proc.stdout


pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not _cluster_up() and os.environ.get("REQUIRE_SLURM") != "1",
                       reason="no SLURM cluster answers (CI starts one: .ci/slurm/start.sh)"),
]


def _outputs(results: Path) -> dict[str, str]:
    out = {str(p.relative_to(results)): p.read_text() for p in sorted(results.glob(f"{MODULE}/tables/*.csv"))}
    verdicts = json.loads((results / MODULE / "verdicts.json").read_text())["claims"]
    out["verdicts"] = json.dumps(verdicts, sort_keys=True)
    return out


def _sacct(since: str) -> list[dict[str, str]]:
    """The jobs SLURM's accounting recorded since ``since``: id, state and the plugin's comment
    (which names the rule)."""
    proc = subprocess.run(["sacct", "-X", "-n", "-P", "-S", since, "--format=JobID,State,Comment"],
                          capture_output=True, text=True, check=True)
    rows = [line.split("|", 2) for line in proc.stdout.splitlines() if line.strip()]
    return [{"id": r[0], "state": r[1], "comment": r[2]} for r in rows]


def _running_job_of(rule: str) -> str | None:
    proc = subprocess.run(["squeue", "-h", "-t", "RUNNING", "-o", "%i|%k"], capture_output=True, text=True,
                          check=True)
    for line in proc.stdout.splitlines():
        job, _, comment = line.partition("|")
        if comment == f"rule_{rule}":
            return job
    return None


@pytest.mark.timeout(1800)  # two submissions through the queue, after the session's smoke DAG
def test_smoke_dag_runs_as_slurm_jobs_resumes_after_scancel_and_matches_local(
        smoke_results: Path, tmp_path: Path) -> None:
    assert _cluster_up(), "REQUIRE_SLURM=1 but no SLURM node is idle: run .ci/slurm/start.sh"
    since = time.strftime("%Y-%m-%dT%H:%M:%S")
    results = tmp_path / "results"
    env = {**os.environ, "LANDSCAPE_RESULTS": str(results)}
    command = [SNAKEMAKE, "--workflow-profile", "profiles/slurm", MODULE, "--config", "scale=smoke"]
    out = results / "smoke" / MODULE

    # 1. one job at a time, no retries: whichever step runs first finishes, the other is
    #    cancelled mid-run (the two steps are independent: Snakemake picks the order)
    proc = subprocess.Popen([*command, "--jobs", "1", "--retries", "0"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    cancelled = finished_step = cancelled_step = None
    deadline = time.time() + 900
    while time.time() < deadline and proc.poll() is None and cancelled is None:
        for step, other in (STEPS, STEPS[::-1]):
            job = _running_job_of(f"{MODULE}__{step}")
            if job is not None and (out / "measurements" / f"{other}.json").exists():
                time.sleep(3)  # mid-run: the job has started its Python process
                subprocess.run(["scancel", job], check=True)
                cancelled, cancelled_step, finished_step = job, step, other
                break
        time.sleep(1)
    log, _ = proc.communicate(timeout=600)
    assert cancelled is not None, "the second step never ran as a SLURM job:\n" + log[-3000:]
    assert proc.returncode != 0, "Snakemake did not notice the cancelled job:\n" + log[-3000:]
    finished = out / "measurements" / f"{finished_step}.json"
    assert finished.exists() and not (out / "measurements" / f"{cancelled_step}.json").exists()
    first_mtime = finished.stat().st_mtime_ns

    # 2. resubmit the same command: only the cancelled step runs again
    again = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900, check=False)
    assert again.returncode == 0, (again.stdout + again.stderr)[-4000:]
    assert finished.stat().st_mtime_ns == first_mtime, "the finished step was rerun"

    # 3. SLURM ran the steps: accounting shows each step's job, the cancelled one included
    jobs = _sacct(since)
    by_rule = {step: [j for j in jobs if f"{MODULE}__{step}" in j["comment"]] for step in STEPS}
    assert [j["state"] for j in by_rule[finished_step]] == ["COMPLETED"], jobs
    states = [j["state"] for j in by_rule[cancelled_step]]
    assert states[-1] == "COMPLETED" and any(s.startswith("CANCELLED") for s in states), jobs
    assert any(j["id"] == cancelled for j in by_rule[cancelled_step])
    # verdicts and provenance are local rules: no job of theirs
    assert not [j for j in jobs if "__verdicts" in j["comment"] or "__provenance" in j["comment"]]

    # 4. the same numbers as the local run, bit for bit
    assert _outputs(results / "smoke") == _outputs(smoke_results)
