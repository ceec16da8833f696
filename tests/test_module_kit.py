"""The module kit: declarations, the step contract, claims checked against declared
quantities, and cached work keyed on the code that made it (shared.fingerprint)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from shared.claims import load_claims, rule_quantities
from shared.config import module_defaults, resolve
from shared.module import StepContractError, StepResult, all_modules, check_result, load, paper_modules
from tests.conftest import ROOT, SNAKEMAKE

BALDI = "baldi_linear_autoencoder"
KAWA = "kawaguchi_deep_linear"
CHOROMANSKA = "choromanska_spin_glass"
SAGUN = "sagun_hessian_spectrum"
KESKAR = "keskar_large_batch"
PENNINGTON = "pennington_bahri_rmt"
DINH = "dinh_reparametrization"
LI = "li_visualization"
DAUPHIN = "dauphin_saddle_points"


@pytest.mark.parametrize("module", all_modules())
def test_every_declaration_is_consistent(module: str) -> None:
    """Names are written once: unique steps, tables and figures; every figure's Snakemake
    caption exists; every claim reads a declared quantity."""
    declared = load(module)
    steps = [s.name for s in declared.steps]
    tables = [t for s in declared.steps for t in s.tables]
    figures = [f.name for s in declared.steps for f in s.figures]
    quantities = [q for s in declared.steps for q in s.quantities]
    for names in (steps, tables, figures, quantities):
        assert len(names) == len(set(names)), names
    for fig in figures:
        assert (declared.path / "captions" / f"{fig}.rst").exists(), fig
    if declared.has_claims:
        claims = load_claims(declared.path / "claims.yaml")
        for claim in claims["claims"]:
            assert rule_quantities(claim) <= declared.quantities(), claim["id"]


def test_a_step_is_a_function_of_its_settings_alone() -> None:
    """Baldi's critical points at the smoke scale, without an output folder."""
    import jax

    from replications.baldi_linear_autoencoder import steps

    settings = resolve({**module_defaults(BALDI), "scale": "smoke"}, BALDI)
    with jax.enable_x64(True):
        result = steps.critical_points(settings)
    step = load(BALDI).step("critical_points")
    check_result(BALDI, step, result)
    assert result.measurements["index_mismatches"] == 0
    assert len(result.tables["critical_points"]) == 22  # |I| <= 2 of n = 6: 1 + 6 + 15


def test_a_step_that_breaks_its_declaration_is_refused() -> None:
    step = load(BALDI).step("gradient_descent")
    good = {q: 0 for q in step.quantities}
    tables = {"gradient_descent": pd.DataFrame()}
    figures = {"gradient_descent": None}
    check_result(BALDI, step, StepResult(good, tables, figures))  # type: ignore[arg-type]
    with pytest.raises(StepContractError, match="missing \\['gd_failed_runs_digits_small'\\]"):
        partial = {k: v for k, v in good.items() if k != "gd_failed_runs_digits_small"}
        check_result(BALDI, step, StepResult(partial, tables, figures))  # type: ignore[arg-type]
    with pytest.raises(StepContractError, match="undeclared \\['gd_rel_gap_imagenet'\\]"):
        check_result(BALDI, step, StepResult({**good, "gd_rel_gap_imagenet": 1}, tables, figures))  # type: ignore[arg-type]
    with pytest.raises(StepContractError, match="tables"):
        check_result(BALDI, step, StepResult(good, {}, figures))  # type: ignore[arg-type]


def _not_testable_by_config(module: str, settings: dict) -> set[str]:  # type: ignore[type-arg]
    """Which claims a scale's settings leave untestable (what the steps mark not_testable)."""
    if module == BALDI:
        measured = {(s["dataset"], s["init"]) for s in settings["gradient_descent"]}
        runs = {"B4-synthetic": ("synthetic", "small"), "B4-synthetic-unit": ("synthetic", "unit"),
                "B4-synthetic-glorot": ("synthetic", "glorot"), "B4-digits": ("digits", "small"),
                "B4-digits-glorot": ("digits", "glorot"), "B4-mnist": ("mnist", "small")}
        return {claim for claim, run in runs.items() if run not in measured}
    if module == SAGUN:
        out = set() if settings["slq_density"]["judge"] else {"S8"}
        return out | ({"S2-digits"} if settings["spectra"]["digits"] is None else set())
    if module == KESKAR:
        out = {"KS-F2"}  # TIMIT: not available
        for slot in ("f1", "c1", "c2", "c3", "c4"):
            spec = settings["networks"].get(slot)
            if spec is None:
                out |= {f"{k}-{slot.upper()}" for k in ("KS1", "KS1-size", "KS2", "KS3", "KS4", "KS7", "KSH")}
            elif spec.get("analogue", False):
                out.add(f"KS1-size-{slot.upper()}")
        return out
    if module == LI:
        r = settings["resnets"]
        return ({"L3"} if len(r["depths"]) < 2 else set()) | ({"L4"} if len(r["widths"]) < 2 else set()) | \
            ({"L5"} if settings["hessian"]["nets"] == "skip" else set()) | \
            ({"L7"} if settings["seeds"]["direction_seeds"] < 2 else set())
    if module == DINH:
        return set() if settings["bn_networks"] else {"D8"}
    if module == PENNINGTON:  # PB3 needs spectra at 3 points or more (free_sum.pb3_measurements)
        tanh = settings["tanh"]
        return set() if tanh["spectrum_points"] * len(tanh["phis"]) >= 3 else {"PB3"}
    return set()


QUICK_TESTABLE = {
    BALDI: ["B1", "B2", "B3", "B4-synthetic", "B4-synthetic-unit", "B4-synthetic-glorot", "B4-digits",
            "B4-digits-glorot"],
    KAWA: ["K1", "K1-real", "K1-generic", "K2", "K3-shallow", "K3-deep", "K3-deep-zero", "K3-zero-H2", "K4",
           "K1-degenerate"],
    CHOROMANSKA: ["C1", "C2", "C3", "C4", "C5", "C6", "C7", "C7-values"],
    SAGUN: ["S1", "S2", "S2-digits", "S3", "S4", "S5", "S6", "S7", "M1", "M2"],
    KESKAR: ["KS1-F1", "KS2-F1", "KS3-F1", "KS4-F1", "KS7-F1", "KSH-F1", "KS1-C1", "KS2-C1", "KS3-C1", "KS4-C1",
             "KS7-C1", "KSH-C1", "KS5", "KS6"],
    LI: ["L1", "L2", "L3", "L5", "L6", "L7"],
    DINH: ["D1", "D2", "D3", "D4", "D5", "D6", "D7", "D8"],
    DAUPHIN: ["DA1", "DA1-approx", "DA2", "DA3-escape", "DA3-sgd"],
    PENNINGTON: ["FV1", "FV2", "FV3", "FV4", "PB1", "PB1-approx", "PB1-exponent", "PB2", "PB3"],
}


@pytest.mark.parametrize("module", paper_modules())
def test_claims_testable_at_the_quick_scale(module: str) -> None:
    """The list a reader gets: every claim is testable at the quick scale except those whose
    data the quick scale does not read (checked against a real run in test_dag)."""
    settings = resolve({**module_defaults(module), "scale": "quick"}, module)
    ids = [c["id"] for c in load_claims(load(module).path / "claims.yaml")["claims"]]
    testable = [i for i in ids if i not in _not_testable_by_config(module, settings)]
    assert testable == QUICK_TESTABLE[module]


# --- the code fingerprint, in a temporary copy of the project -----------------------------------

def _copy_project(dest: Path) -> Path:
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True,
                           text=True, check=True).stdout.split("\n")
    for name in filter(None, files):
        source = ROOT / name
        if source.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
    return dest


def _snakemake(project: Path, *args: str) -> subprocess.CompletedProcess:  # type: ignore[type-arg]
    env = {**{k: v for k, v in os.environ.items() if k != "LANDSCAPE_RESULTS"}, "PYTHONPATH": str(project)}
    proc = subprocess.run([SNAKEMAKE, "--cores", "2", *args, "--config", "scale=smoke"], cwd=project, env=env,
                          capture_output=True, text=True, timeout=900, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


TARGETS = (f"results/smoke/{BALDI}/measurements/gradient_descent.json",
           f"results/smoke/{KAWA}/measurements/critical_points.json")


def _planned(project: Path) -> set[str]:
    """The rules a dry run would execute for the two targets."""
    out = _snakemake(project, "-n", *TARGETS).stdout
    return {name for name, _ in re.findall(r"^(\w+)\s+(\d+)$", out, flags=re.M) if name != "total"}


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, (path, old)
    path.write_text(text.replace(old, new, 1))


@pytest.mark.slow
def test_cached_work_and_rules_follow_the_code(tmp_path: Path) -> None:
    project = _copy_project(tmp_path / "project")
    _snakemake(project, *TARGETS)
    table = project / "results" / "smoke" / BALDI / "tables" / "gradient_descent.csv"
    before = pd.read_csv(table).rel_gap
    workdir = project / "results" / "smoke" / BALDI / "work" / "gradient_descent"
    chunks = len(list(workdir.glob("*.csv")))
    assert chunks >= 1 and _planned(project) == set()

    # 1. a step's arithmetic changes: its rule reruns, its chunk is recomputed, the table changes
    _edit(project / "replications" / BALDI / "steps.py", "rel_gap=(ranged - optimum) / optimum,",
          "rel_gap=(ranged - optimum) / optimum + 1.0,")
    assert _planned(project) == {f"{BALDI}__gradient_descent"}
    _snakemake(project, *TARGETS)
    after = pd.read_csv(table).rel_gap
    assert (after - before - 1.0).abs().max() < 1e-12
    assert len(list(workdir.glob("*.csv"))) == 2 * chunks  # old chunks kept, never reused (their key: other code)

    # 2. an unrelated edit to another module reruns only that module
    _edit(project / "replications" / KAWA / "theory.py", '"""', '"""Edited. ')
    assert _planned(project) == {f"{KAWA}__critical_points"}
    _snakemake(project, *TARGETS)

    # 3. an edit to a shared function the steps use reruns every module's rules
    _edit(project / "shared" / "curvature" / "exact.py", "def inertia(", "def inertia(  # edited\n")
    assert _planned(project) == {f"{BALDI}__gradient_descent", f"{KAWA}__critical_points"}


@pytest.mark.slow
def test_a_misspelt_quantity_stops_the_run_before_any_compute(tmp_path: Path) -> None:
    project = _copy_project(tmp_path / "project")
    _edit(project / "replications" / BALDI / "claims.yaml", "quantity: max_rel_grad_norm",
          "quantity: max_rel_grad_nrom")
    proc = subprocess.run([sys.executable, "-m", "shared.cli", "validate"], cwd=project, capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": str(project)}, check=False)
    assert proc.returncode == 2
    line = proc.stderr.strip()
    assert "\n" not in line and "B1" in line and "max_rel_grad_nrom" in line and "max_rel_grad_norm" in line
    results = tmp_path / "results"
    env = {**os.environ, "LANDSCAPE_RESULTS": str(results), "PYTHONPATH": str(project)}
    snake = subprocess.run([SNAKEMAKE, "--cores", "1"], cwd=project, env=env, capture_output=True, text=True,
                           check=False)
    assert snake.returncode != 0 and "max_rel_grad_nrom" in snake.stderr and not results.exists()
