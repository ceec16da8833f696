"""The verdict engine: each rule type decides correctly, and a false claim fails."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.claims import MissingQuantity, apply_rule, judge, load_claims, paper_table
from shared.config import available_modules, module_dir


def claim(rule: dict, partial: dict | None = None, paper_value=None) -> dict:  # type: ignore[no-untyped-def]
    out = {"id": "X", "statement": "s", "where": "w", "measured": "m", "rule": rule,
           "paper_value": paper_value}
    if partial:
        out["partial"] = partial
    return out


@pytest.mark.parametrize(
    "rule, value, holds",
    [
        ({"type": "at_most", "threshold": 1e-9}, 1e-12, True),
        ({"type": "at_most", "threshold": 1e-9}, 1e-6, False),
        ({"type": "at_most", "threshold": 1e-9}, [1e-12, 1e-3], False),
        ({"type": "at_most", "threshold": 1.0}, float("nan"), False),
        ({"type": "at_least", "threshold": 0.5}, [0.6, 0.9], True),
        ({"type": "at_least", "threshold": 0.5}, [0.6, 0.4], False),
        ({"type": "equals", "target": 0}, 0, True),
        ({"type": "equals", "target": 0}, 2, False),
        ({"type": "monotone", "direction": "increasing"}, [1, 2, 2, 5], True),
        ({"type": "monotone", "direction": "increasing", "strict": True}, [1, 2, 2, 5], False),
        ({"type": "monotone", "direction": "decreasing"}, [3, 2, 4], False),
        ({"type": "fraction_at_most", "threshold": 1.0, "min_fraction": 0.75}, [0, 0, 0, 5], True),
        ({"type": "fraction_at_most", "threshold": 1.0, "min_fraction": 0.8}, [0, 0, 0, 5], False),
    ],
)
def test_rules(rule: dict, value, holds: bool) -> None:  # type: ignore[no-untyped-def]
    rule = {**rule, "quantity": "q"}
    assert apply_rule(rule, {"q": value}, None).holds is holds


@pytest.mark.parametrize(
    "direction, value, censored, holds",
    [
        # the last median hit the step cap: a lower bound above the previous value still decides
        ("increasing", [80.0, 750.0, 13095.0, 20000.0], [False, False, False, True], True),
        # two capped medians: equal bounds prove nothing about the order of the true values
        ("increasing", [80.0, 750.0, 20000.0, 20000.0], [False, False, True, True], False),
        # a bound on the earlier value never proves an increase
        ("increasing", [500.0, 600.0], [True, False], False),
        ("decreasing", [600.0, 500.0], [True, False], True),
        ("decreasing", [600.0, 500.0], [False, True], False),
        ("increasing", [1.0, 2.0], [False], False),  # one flag per value, or the rule fails
    ],
)
def test_monotone_with_censored_lower_bounds(direction: str, value: list, censored: list, holds: bool) -> None:
    rule = {"type": "monotone", "quantity": "q", "censored": "c", "direction": direction, "strict": True}
    outcome = apply_rule(rule, {"q": value, "c": censored}, None)
    assert outcome.holds is holds
    assert outcome.values["c"] == censored
    if any(censored) and len(censored) == len(value):
        assert "≥" in outcome.detail and "lower bound" in outcome.detail


def test_close_to_paper_and_ratio() -> None:
    rule = {"type": "close_to_paper", "quantity": "q", "rtol": 0.1}
    assert apply_rule(rule, {"q": 1.05}, 1.0).holds
    assert not apply_rule(rule, {"q": 1.2}, 1.0).holds
    ratio = {"type": "ratio_at_least", "quantity": "a", "denominator": "b", "threshold": 10}
    assert apply_rule(ratio, {"a": 100.0, "b": 5.0}, None).holds
    assert not apply_rule(ratio, {"a": 30.0, "b": 5.0}, None).holds


def test_a_false_claim_is_not_reproduced() -> None:
    """A claim that the minimum has a negative eigenvalue must fail on correct numbers."""
    v = judge(claim({"type": "at_most", "quantity": "lam_min", "threshold": -1e-3}), {"lam_min": 0.0})
    assert v.verdict == "not reproduced"
    assert "lam_min" in v.reason and v.values == {"lam_min": 0.0}


def test_partial_and_not_testable() -> None:
    rule = {"type": "at_most", "quantity": "gap", "threshold": 1e-6}
    partial = {"type": "fraction_at_most", "quantity": "gap", "threshold": 1e-6, "min_fraction": 0.5}
    assert judge(claim(rule, partial), {"gap": [0, 0, 1]}).verdict == "partially reproduced"
    assert judge(claim(rule, partial), {"gap": [0, 1, 1]}).verdict == "not reproduced"
    with pytest.raises(MissingQuantity, match="claim 'X': quantity 'gap' is not in the measurements"):
        judge(claim(rule), {})  # a missing quantity is an error, not a verdict
    why = {"gap": {"not_testable": "needs MNIST"}}
    verdict = judge(claim(rule), why)
    assert verdict.verdict == "not testable at this scale" and verdict.reason == "needs MNIST"
    assert judge(claim({"type": "close_to_paper", "quantity": "gap"}), {"gap": 1.0}).verdict == (
        "not testable at this scale"
    )


@pytest.mark.parametrize("module", available_modules())
def test_every_claims_file_is_valid(module: str) -> None:
    claims = load_claims(module_dir(module) / "claims.yaml")
    assert claims["claims"], module


def test_claims_schema_rejects_a_claim_without_a_rule(tmp_path: Path) -> None:
    bad = tmp_path / "claims.yaml"
    bad.write_text("paper: {citation: x}\nclaims:\n  - {id: A, statement: s, where: w, measured: m}\n")
    with pytest.raises(Exception, match="rule"):
        load_claims(bad)


def test_paper_tables_are_read_by_row_and_a_ragged_row_is_rejected(tmp_path: Path) -> None:
    head = ("paper: {citation: x}\nclaims:\n  - {id: A, statement: s, where: w, measured: m,"
            " rule: {type: equals, quantity: q, target: 1}}\n")
    good = tmp_path / "good.yaml"
    good.write_text(head + "paper_tables:\n  t1: {source: Table 1, columns: [n, rho],"
                    " rows: [[25, 0.76], [50, 0.69]]}\n")
    assert paper_table(load_claims(good), "t1") == [{"n": 25, "rho": 0.76}, {"n": 50, "rho": 0.69}]
    with pytest.raises(KeyError, match="t1"):
        paper_table(load_claims(good), "t2")
    ragged = tmp_path / "ragged.yaml"
    ragged.write_text(head + "paper_tables:\n  t1: {source: Table 1, columns: [n, rho], rows: [[25, 0.76], [50]]}\n")
    with pytest.raises(ValueError, match=r"paper_tables.t1: rows \[1\]"):
        load_claims(ragged)
    unsourced = tmp_path / "unsourced.yaml"
    unsourced.write_text(head + "paper_tables:\n  t1: {columns: [n], rows: [[25]]}\n")
    with pytest.raises(Exception, match="source"):
        load_claims(unsourced)


def _numbers_typed_as_paper_constants(path: Path) -> list[str]:
    """Module-level names ``PAPER_*`` whose value contains a number literal."""
    import ast

    found = []
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign):
            targets = node.targets
        else:
            targets = [node.target] if isinstance(node, ast.AnnAssign) else []
        names = [t.id for t in targets if isinstance(t, ast.Name) and t.id.upper().startswith("PAPER")]
        value = getattr(node, "value", None)
        if names and value is not None and any(isinstance(c, ast.Constant) and isinstance(c.value, (int, float))
                                               and not isinstance(c.value, bool) for c in ast.walk(value)):
            found.append(f"{path.name}: {names[0]}")
    return found


def test_no_module_types_a_paper_number_in_code(tmp_path: Path) -> None:
    """The paper's numbers live only in claims.yaml: no replication module holds a ``PAPER_*``
    constant with a number in it (the guard fires on a planted one)."""
    root = Path(__file__).resolve().parents[1] / "replications"
    assert [hit for py in sorted(root.glob("*/*.py")) for hit in _numbers_typed_as_paper_constants(py)] == []
    planted = tmp_path / "theory.py"
    planted.write_text("PAPER_RHO = {25: 0.7616}\nPAPER_DATA = {'f1': 'MNIST'}\n")
    assert _numbers_typed_as_paper_constants(planted) == ["theory.py: PAPER_RHO"]


def test_a_check_that_holds_by_construction_is_marked_and_not_counted_as_evidence() -> None:
    from shared.report import _scorecard

    rule = {"type": "at_most", "quantity": "q", "threshold": 0.0}
    marked = judge({**claim(rule), "by_construction": True}, {"q": 0.0})
    plain = judge(claim(rule), {"q": 0.0})
    assert marked.verdict == plain.verdict == "reproduced"
    assert marked.by_construction and not plain.by_construction
    html = _scorecard([("m", {"claims": [marked.as_dict(), plain.as_dict()]})])
    assert html.count("holds by construction") == 1
