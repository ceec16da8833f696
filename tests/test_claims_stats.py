"""The statistical rules of the verdict engine (``group_difference``,
``within_paper_spread``, ``trend``): a planted effect is detected, pure noise is
declared significant at about the declared level, non-finite data fail, and claims
that read an undeclared (misspelt) quantity are caught before any run.

Runtime: the false-positive simulations use seeded numpy generators; the analytic
tests (Welch, Spearman, Kendall, slope) run 400 simulations each with no bootstrap
interval, the bootstrap variant 200 simulations of 999 resamples each.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy import stats

from shared.claims import (
    CLAIMS_SCHEMA,
    RULE_TYPES,
    MissingQuantity,
    _spearman_rho,
    apply_rule,
    check_claims_quantities,
    judge,
    load_claims,
    rule_quantities,
)

LEVEL = 0.05
BAND = 0.999  # the binomial band a false-positive count must fall in


def binomial_band(n_sims: int, p: float) -> tuple[float, float]:
    """The central 99.9% range of the number of rejections in ``n_sims`` tries at rate ``p``."""
    lo, hi = stats.binom.interval(BAND, n_sims, p)
    return float(lo), float(hi)


def assert_rate_near_level(rejections: int, n_sims: int, level: float) -> None:
    lo, hi = binomial_band(n_sims, level)
    assert lo <= rejections <= hi, (
        f"{rejections}/{n_sims} false positives, outside the {BAND:.1%} binomial band [{lo:g}, {hi:g}] "
        f"around level {level}"
    )


def diff_rule(method: str, direction: str = "greater", **extra: Any) -> dict[str, Any]:
    return {"type": "group_difference", "quantity": "a", "other": "b", "direction": direction,
            "level": LEVEL, "method": method, **extra}


def trend_rule(method: str, direction: str = "increasing", **extra: Any) -> dict[str, Any]:
    return {"type": "trend", "quantity": "y", "x": "width", "direction": direction, "level": LEVEL,
            "method": method, **extra}


WIDTHS = [4.0, 8.0, 16.0, 32.0, 64.0]


def trend_data(rng: np.random.Generator, slope: float, seeds: int = 4) -> dict[str, Any]:
    """y per width, several seeds per width: y = slope·log2(width) + N(0, 1)."""
    y = [[slope * np.log2(w) + float(e) for e in rng.normal(size=seeds)] for w in WIDTHS]
    return {"y": y, "width": WIDTHS}


# --- a planted effect is detected -------------------------------------------------------


@pytest.mark.parametrize("method", ["t_test", "bootstrap"])
def test_group_difference_detects_a_planted_difference(method: str) -> None:
    rng = np.random.default_rng(1)
    m = {"a": rng.normal(1.5, 1.0, 12).tolist(), "b": rng.normal(0.0, 1.0, 12).tolist()}
    extra = {"n_resamples": 999} if method == "bootstrap" else {}
    greater = apply_rule(diff_rule(method, **extra), m, None)
    assert greater.holds, greater.detail
    assert not apply_rule(diff_rule(method, "less", **extra), m, None).holds
    swapped = {"a": m["b"], "b": m["a"]}
    assert apply_rule(diff_rule(method, "less", **extra), swapped, None).holds
    summary = greater.values["a − b"]
    assert summary["n"] == [12, 12] and summary["level"] == LEVEL
    lo, hi = summary["interval"]
    assert 0 < lo < summary["estimate"] and hi == np.inf
    assert "n = 12 vs 12" in greater.detail and "95% one-sided" in greater.detail and "0.05" in greater.detail
    if method == "t_test":
        assert summary["p_value"] < LEVEL and "Welch" in greater.detail and "p = " in greater.detail
    else:
        assert "BCa bootstrap" in greater.detail and "999 resamples" in greater.detail


def test_bootstrap_verdict_is_reproducible() -> None:
    rng = np.random.default_rng(2)
    m = {"a": rng.normal(0.5, 1.0, 8).tolist(), "b": rng.normal(0.0, 1.0, 8).tolist()}
    rule = diff_rule("bootstrap", n_resamples=999)
    first, second = apply_rule(rule, m, None), apply_rule(dict(rule), m, None)
    assert first == second
    assert apply_rule({**rule, "seed": 7}, m, None).values["a − b"]["method"].endswith("seed 7")


@pytest.mark.parametrize("method", ["spearman", "kendall", "slope"])
@pytest.mark.parametrize("direction", ["increasing", "decreasing"])
def test_trend_detects_a_planted_trend(method: str, direction: str) -> None:
    slope = 0.8 if direction == "increasing" else -0.8
    m = trend_data(np.random.default_rng(3), slope)
    extra = {"n_resamples": 999} if method != "slope" else {}
    out = apply_rule(trend_rule(method, direction, **extra), m, None)
    assert out.holds, out.detail
    opposite = "decreasing" if direction == "increasing" else "increasing"
    assert not apply_rule(trend_rule(method, opposite, **extra), m, None).holds
    summary = out.values["trend of y in width"]
    assert summary["n"] == 20 and summary["sizes"] == 5 and summary["level"] == LEVEL
    assert summary["p_value"] < LEVEL and np.sign(summary["estimate"]) == np.sign(slope)
    lo, hi = summary["interval"]
    assert (lo > 0 and hi == np.inf) if direction == "increasing" else (lo == -np.inf and hi < 0)
    assert "n = 20 at 5 sizes" in out.detail and "p = " in out.detail and "95% one-sided CI" in out.detail
    assert ("t-based from linregress" if method == "slope" else "paired BCa bootstrap") in out.detail


def test_trend_with_inline_sizes_and_one_value_per_size() -> None:
    rule = {"type": "trend", "quantity": "y", "x_values": [1, 2, 3, 4, 5, 6], "direction": "decreasing",
            "level": 0.05, "method": "kendall", "interval": "none"}
    out = apply_rule(rule, {"y": [9.0, 7.5, 7.0, 4.0, 3.5, 1.0]}, None)
    assert out.holds and out.values["trend of y in x_values"]["interval"] is None
    assert "no interval asked" in out.detail


def test_bootstrap_spearman_statistic_is_spearmans_rho() -> None:
    rng = np.random.default_rng(4)
    x, y = np.repeat(WIDTHS, 3), rng.normal(size=15)
    assert _spearman_rho(x, y) == pytest.approx(stats.spearmanr(x, y).statistic, abs=1e-12)


def test_within_paper_spread_inside_and_outside() -> None:
    rng = np.random.default_rng(5)
    paper = {"mean": 0.9, "sd": 0.02}
    rule = {"type": "within_paper_spread", "quantity": "acc", "k": 2}
    inside = apply_rule(rule, {"acc": rng.normal(0.9, 0.02, 5).tolist()}, paper)
    assert inside.holds, inside.detail
    summary = inside.values["acc vs paper"]
    assert summary["n"] == 5 and summary["k"] == 2
    assert summary["bound"] == pytest.approx(2 * np.hypot(0.02, summary["sd"]))
    assert "n = 5" in inside.detail and "k·√(sd_paper² + sd_ours²)" in inside.detail
    outside = apply_rule(rule, {"acc": rng.normal(0.8, 0.02, 5).tolist()}, paper)
    assert not outside.holds and "> k·√" in outside.detail
    verdict = judge({"id": "S1", "statement": "s", "where": "w", "measured": "m", "rule": rule,
                     "paper_value": paper}, {"acc": rng.normal(0.8, 0.02, 5).tolist()})
    assert verdict.verdict == "not reproduced"
    no_paper = judge({"id": "S1", "statement": "s", "where": "w", "measured": "m", "rule": rule},
                     {"acc": [0.9, 0.91]})
    assert no_paper.verdict == "not testable at this scale"


# --- pure noise is significant at about the declared level -----------------------------


def test_welch_false_positive_rate_is_the_level() -> None:
    rng, n_sims = np.random.default_rng(10), 400
    rejections = sum(
        apply_rule(diff_rule("t_test"), {"a": rng.normal(0, 1, 8).tolist(), "b": rng.normal(0, 2, 13).tolist()},
                   None).holds
        for _ in range(n_sims)
    )
    assert_rate_near_level(rejections, n_sims, LEVEL)


def test_bootstrap_false_positive_rate_is_the_level() -> None:
    """Few simulations (200, 999 resamples each) to keep the test short; the band is wider."""
    rng, n_sims = np.random.default_rng(11), 200
    rule = diff_rule("bootstrap", "less", n_resamples=999)
    rejections = sum(
        apply_rule(rule, {"a": rng.normal(0, 1, 20).tolist(), "b": rng.normal(0, 1, 20).tolist()}, None).holds
        for _ in range(n_sims)
    )
    assert_rate_near_level(rejections, n_sims, LEVEL)


@pytest.mark.parametrize("method", ["spearman", "kendall", "slope"])
def test_trend_false_positive_rate_is_the_level(method: str) -> None:
    """400 simulations of y independent of the size (5 sizes × 4 seeds); the decision rests
    on the p-value alone, so the (slow) bootstrap interval is switched off here."""
    rng, n_sims = np.random.default_rng(12), 400
    extra = {"interval": "none"} if method != "slope" else {}
    rule = trend_rule(method, **extra)
    rejections = sum(apply_rule(rule, trend_data(rng, 0.0), None).holds for _ in range(n_sims))
    assert_rate_near_level(rejections, n_sims, LEVEL)


def test_within_paper_spread_rarely_fails_on_the_papers_own_distribution() -> None:
    """Not a test at a level: |mean difference| is compared with the spread of single
    values, so on data distributed as the paper's it fails less often than 2·P(Z > k), the
    rate were both means single draws; the count stays under that rate's binomial band."""
    rng, n_sims, k = np.random.default_rng(13), 400, 1.0
    rule = {"type": "within_paper_spread", "quantity": "q", "k": k}
    failures = 0
    for _ in range(n_sims):
        paper_runs = rng.normal(0.0, 1.0, 5)
        paper = {"mean": float(paper_runs.mean()), "sd": float(paper_runs.std(ddof=1))}
        failures += not apply_rule(rule, {"q": rng.normal(0.0, 1.0, 5).tolist()}, paper).holds
    assert failures <= binomial_band(n_sims, 2 * stats.norm.sf(k))[1]


# --- non-finite data fail; the rule's declaration is checked ---------------------------


BAD_VALUES = [float("nan"), float("inf"), "nan", "-inf", None]


@pytest.mark.parametrize("bad", BAD_VALUES, ids=repr)
@pytest.mark.parametrize("kind", ["t_test", "bootstrap", "spread", "spearman", "slope"])
def test_a_non_finite_value_fails_the_rule(kind: str, bad: Any) -> None:
    clean = [1.0, 2.0, 3.0, 4.0, 5.0]
    if kind in ("t_test", "bootstrap"):
        rule: dict[str, Any] = diff_rule(kind, n_resamples=999)
        m: dict[str, Any] = {"a": [10.0, 11.0, 12.0, 13.0, bad], "b": clean}
    elif kind == "spread":
        rule, m = {"type": "within_paper_spread", "quantity": "a", "k": 3}, {"a": [*clean, bad]}
    else:
        rule = {**trend_rule(kind, n_resamples=999), "x": "width"}
        m = {"y": [[1.0, 1.1], [2.0, bad], [3.0, 3.1], [4.0, 4.2], [5.0, 5.1]], "width": WIDTHS}
    out = apply_rule(rule, m, {"mean": 3.0, "sd": 1.0})
    assert not out.holds
    assert "non-finite or non-numeric" in out.detail and "never dropped" in out.detail
    assert repr(bad) in out.detail  # the offending value is shown
    without = {key: [v for v in value if v is not bad] if key != "y" else value for key, value in m.items()}
    if kind not in ("spearman", "slope"):  # dropping it would have made the rule hold
        assert apply_rule(rule, without, {"mean": 3.0, "sd": 1.0}).holds


def test_a_non_finite_size_fails_the_trend() -> None:
    out = apply_rule(trend_rule("slope"), {"y": [1.0, 2.0, 3.0, 4.0], "width": [1, 2, "inf", 4]}, None)
    assert not out.holds and "width has 1 non-finite" in out.detail


def test_too_few_values_fail() -> None:
    assert not apply_rule(diff_rule("t_test"), {"a": [5.0], "b": [0.0, 0.1]}, None).holds
    assert not apply_rule(trend_rule("spearman"), {"y": [1.0, 2.0], "width": [1, 2]}, None).holds
    spread = {"type": "within_paper_spread", "quantity": "a", "k": 2}
    assert not apply_rule(spread, {"a": [1.0]}, {"mean": 1.0, "sd": 0.1}).holds


@pytest.mark.parametrize(
    "bad",
    [
        {"level": 0}, {"level": 1.5}, {"direction": "increasing"}, {"method": "spearman"}, {"n_resamples": 5},
    ],
)
def test_an_invalid_statistical_rule_is_refused(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="invalid group_difference rule"):
        apply_rule({**diff_rule("t_test"), **bad}, {"a": [1.0, 2.0], "b": [0.0, 1.0]}, None)


CLAIMS_YAML = """\
paper: {citation: x}
claims:
  - id: G1
    statement: s
    where: w
    measured: m
    rule: {type: group_difference, quantity: acc_sgd, other: acc_adam, direction: greater, level: 0.05}
  - id: G2
    statement: s
    where: w
    measured: m
    paper_value: {mean: 0.91, sd: 0.01}
    rule: {type: within_paper_spread, quantity: acc_sgd, k: 2}
  - id: G3
    statement: s
    where: w
    measured: m
    rule: {type: trend, quantity: sharpness, x: widths, direction: decreasing, level: 0.01, method: slope}
"""


def test_claims_yaml_with_statistical_rules(tmp_path: Path) -> None:
    good = tmp_path / "claims.yaml"
    good.write_text(CLAIMS_YAML)
    claims = load_claims(good)
    assert rule_quantities(claims["claims"][2]) == {"sharpness", "widths"}
    assert {"group_difference", "within_paper_spread", "trend"} <= set(RULE_TYPES)
    assert CLAIMS_SCHEMA["$defs"]["rule"]["properties"]["level"]["exclusiveMaximum"] == 1


@pytest.mark.parametrize(
    "old, new, match",
    [
        ("level: 0.05}", "level: 1.05}", "1.05 is greater than or equal to the maximum of 1"),
        ("direction: greater", "direction: increasing", r"'increasing' is not one of \['greater', 'less'\]"),
        ("k: 2}", "k: 0}", "0 is less than or equal to the minimum of 0"),
        ("method: slope}", "method: pearson}", "'pearson' is not one of"),
        ("x: widths,", "x: widths, x_values: [1, 2],", "is valid under each of"),
        ("paper_value: {mean: 0.91, sd: 0.01}", "paper_value: 0.91", "within_paper_spread needs paper_value"),
    ],
)
def test_claims_yaml_with_a_bad_statistical_rule_is_refused(tmp_path: Path, old: str, new: str, match: str) -> None:
    bad = tmp_path / "claims.yaml"
    assert old in CLAIMS_YAML
    bad.write_text(CLAIMS_YAML.replace(old, new))
    with pytest.raises(Exception, match=match):
        load_claims(bad)


# --- which quantities a claim reads ------------------------------------------------------


def test_rule_quantities_of_nested_rules() -> None:
    rule = {
        "type": "all_of",
        "rules": [
            {"type": "at_most", "quantity": "gap", "threshold": 1e-6},
            {"type": "all_of", "rules": [
                {"type": "ratio_at_least", "quantity": "big", "denominator": "small", "threshold": 10},
                {"type": "group_difference", "quantity": "a", "other": "b", "direction": "less", "level": 0.05},
            ]},
            {"type": "trend", "quantity": "y", "x": "width", "direction": "increasing", "level": 0.05,
             "method": "kendall"},
            {"type": "trend", "quantity": "z", "x_values": [1, 2, 3], "direction": "increasing", "level": 0.05,
             "method": "kendall"},
        ],
    }
    assert rule_quantities(rule) == {"gap", "big", "small", "a", "b", "y", "width", "z"}
    claim = {"id": "C", "rule": {"type": "equals", "quantity": "n", "target": 0},
             "partial": {"type": "at_most", "quantity": "m", "threshold": 1}}
    assert rule_quantities(claim) == {"n", "m"}


def test_a_misspelt_quantity_is_caught_before_any_run() -> None:
    claims = {"claims": [
        {"id": "B1", "rule": {"type": "equals", "quantity": "gd_failed_runs_digits", "target": 0}},
        {"id": "B4", "rule": {"type": "all_of", "rules": [
            {"type": "equals", "quantity": "gd_failed_runs_digits", "target": 0}]},
         "partial": {"type": "fraction_at_most", "quantity": "gd_rel_gapp_digits", "threshold": 1e-6,
                     "min_fraction": 0.9}},
    ]}
    declared = {"gd_rel_gap_digits", "gd_max_angle_digits", "gd_failed_runs_digits"}
    check_claims_quantities({"claims": claims["claims"][:1]}, declared, "baldi")
    with pytest.raises(ValueError) as err:
        check_claims_quantities(claims, declared, "baldi_linear_autoencoder/claims.yaml")
    message = str(err.value)
    assert "\n" not in message
    assert "'B4'" in message and "'gd_rel_gapp_digits'" in message and "'gd_rel_gap_digits'" in message
    assert message.startswith("baldi_linear_autoencoder/claims.yaml: ")


def test_a_missing_quantity_is_an_error_not_a_verdict() -> None:
    claim = {"id": "T1", "statement": "s", "where": "w", "measured": "m", "rule": trend_rule("slope")}
    with pytest.raises(MissingQuantity, match="claim 'T1': quantity 'width' is not in the measurements"):
        judge(claim, {"y": [1.0, 2.0, 3.0]})
    with pytest.raises(KeyError):  # a KeyError, so no caller can mistake it for a verdict
        judge(claim, {"width": [1, 2, 3], "y_": [1.0, 2.0, 3.0]})
    marked = judge(claim, {"y": {"not_testable": "needs the paper scale"}, "width": [1, 2, 3]})
    assert marked.verdict == "not testable at this scale" and marked.reason == "needs the paper scale"
