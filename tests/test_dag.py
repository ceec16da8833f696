"""The whole DAG end to end at the smoke scale: outputs, verdicts, provenance, resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shared.claims import VERDICTS
from shared.config import available_modules
from shared.fingerprint import code_fingerprint
from shared.module import all_modules, load
from tests.conftest import run_snakemake
from tests.test_module_kit import _not_testable_by_config

pytestmark = pytest.mark.slow


def test_every_module_writes_verdicts_and_provenance(smoke_results: Path) -> None:
    for module in available_modules():
        verdicts = json.loads((smoke_results / module / "verdicts.json").read_text())
        assert verdicts["claims"]
        for claim in verdicts["claims"]:
            assert claim["verdict"] in VERDICTS
            assert claim["reason"]
        # the claims the run itself could not test are those test_module_kit derives from the config
        # (which is how it lists the claims testable at the quick scale)
        untested = {c["id"] for c in verdicts["claims"] if c["verdict"] == "not testable at this scale"}
        settings = json.loads((smoke_results / module / "provenance.json").read_text())["config"]
        assert untested == _not_testable_by_config(module, settings)


def test_provenance_names_the_code_and_every_rules_time(smoke_results: Path) -> None:
    for module in all_modules():
        prov = json.loads((smoke_results / module / "provenance.json").read_text())
        assert prov["config"]["scale"] == "smoke"
        assert prov["code"]["fingerprint"] == code_fingerprint(module)
        assert prov["packages"]["jax"] and prov["device"]["backend"] == "cpu"
        steps = {s.name for s in load(module).steps}
        assert set(prov["rule_wall_s"]) == steps == set(prov["steps"])
        for registry in (smoke_results / module / "figures").glob("*.json"):
            for fig in json.loads(registry.read_text()):
                assert (smoke_results / module / fig["file"]).stat().st_size > 1000
    import pandas as pd

    timings = pd.read_csv(smoke_results / "timings.csv")
    expected = {(m, s.name) for m in all_modules() for s in load(m).steps} | {
        (m, "verdicts") for m in all_modules() if load(m).has_claims}
    assert set(zip(timings.module, timings.rule, strict=True)) == expected
    assert (timings.wall_s > 0).all()


def test_baldi_smoke_verdicts_are_computed_not_typed(smoke_results: Path) -> None:
    """The numbers behind the verdicts are the run's own: they match its tables."""
    import pandas as pd

    out = smoke_results / "baldi_linear_autoencoder"
    verdicts = {c["id"]: c for c in json.loads((out / "verdicts.json").read_text())["claims"]}
    table = pd.read_csv(out / "tables" / "critical_points.csv")
    assert verdicts["B1"]["values"]["max_rel_grad_norm"] == pytest.approx(table.rel_grad_norm.max(), rel=1e-12)
    assert verdicts["B3"]["verdict"] == "reproduced"
    assert verdicts["B4-mnist"]["verdict"] == "not testable at this scale"
    assert len(table) == 22  # |I| <= 2 of n = 6: 1 + 6 + 15


def test_rerun_is_a_no_op_and_target_per_module(smoke_results: Path) -> None:
    results = smoke_results.parent
    proc = run_snakemake(["--config", "scale=smoke", "-n", "baldi_linear_autoencoder"], results)
    assert proc.returncode == 0
    assert "Nothing to be done" in proc.stdout + proc.stderr


def test_snakemake_report(smoke_results: Path, tmp_path: Path) -> None:
    out = tmp_path / "snakemake-report.html"
    proc = run_snakemake(["--config", "scale=smoke", "--report", str(out)], smoke_results.parent)
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = out.read_text()
    assert "critical_points.png" in text and "gradient_descent.png" in text


def test_toolkit_table_compares_estimators_with_the_exact_hessian(smoke_results: Path) -> None:
    """The toolkit's tables hold the exact answers, its verdicts judge the run's own numbers, and
    every claim holds at the smoke scale (tests/test_toolkit_check.py shows each one can fail)."""
    import pandas as pd

    out = smoke_results / "toolkit"
    table = pd.read_csv(out / "tables" / "estimators.csv")
    measured = json.loads((out / "measurements" / "check.json").read_text())
    spectrum = sorted(measured["exact_spectrum"])
    top = table[table.quantity == "λ_top1"].iloc[0]
    assert top.exact == pytest.approx(spectrum[-1], rel=1e-12)
    assert top.rel_error < 1e-10  # Lanczos converges on the extreme eigenvalue
    verdicts = {c["id"]: c for c in json.loads((out / "verdicts.json").read_text())["claims"]}
    assert {c["verdict"] for c in verdicts.values()} == {"reproduced"}, {i: c["reason"] for i, c in verdicts.items()}
    tops = table[table.quantity.str.startswith("λ_top")].rel_error.tolist()
    assert verdicts["T-lanczos-top"]["values"]["lanczos_top_rel_error"] == pytest.approx(tops, rel=1e-12, abs=1e-300)
    draws = pd.read_csv(out / "tables" / "draws.csv")
    hutchinson = draws[draws.estimator == "Hutchinson"].z.abs().tolist()
    assert verdicts["T-hutchinson"]["values"]["hutchinson_abs_z"] == pytest.approx(hutchinson, rel=1e-12)
    trace = table[table.estimator.str.startswith("Hutch")]
    assert (trace.within_3se >= 16).all() and (trace.pooled_z.abs() <= 4).all()
    plane = pd.read_csv(out / "tables" / "plane.csv")
    assert verdicts["T-plane"]["values"]["plane_loss_rel_diff"] == pytest.approx(plane.rel_diff.max(), rel=1e-12)
