"""Claims and verdicts: a paper's claims (``claims.yaml``) judged on a run's
measurements, by rules declared in advance.

A module's run writes measurements (``measurements/<step>.json``: named
quantities, each a number, a list, a bool, or ``{"not_testable": reason}``).
``judge`` applies each claim's rule to them and returns a verdict:

- ``reproduced``: the claim's ``rule`` holds;
- ``partially reproduced``: the rule fails but the claim's declared ``partial``
  rule holds (a weaker criterion written in ``claims.yaml`` beforehand);
- ``not reproduced``: both fail: a result, shown with its numbers;
- ``not testable at this scale``: the run marked a quantity ``not_testable``
  with a reason (or the paper gives no value to compare with).

A quantity absent from the measurements is not a verdict but an error
(``MissingQuantity``, a ``KeyError``): a misspelt name must not pass as "not
testable". ``check_claims_quantities`` catches it before any run, against the
quantities a module's steps declare.

Rule types (each names the ``quantity`` it reads, except ``all_of``):

========================  =======================================================
``at_most``               value <= threshold (every element, for a list)
``at_least``              value >= threshold (every element, for a list)
``equals``                value == target (exact; for counts, booleans, strings)
``close_to_paper``        |value − paper_value| <= atol + rtol·|paper_value|
``monotone``              the list is increasing / decreasing (strictly or not); with
                          ``censored`` (a list of booleans, True where the value is only a
                          lower bound, e.g. a median that reached a step cap) a pair is
                          judged only where the bound decides it (increasing: the earlier
                          value must be exact; decreasing: the later one)
``ratio_at_least``        value(quantity) / value(denominator) >= threshold
``fraction_at_most``      at least ``min_fraction`` of the list's elements are <= threshold
``all_of``                every sub-rule in ``rules`` holds
``group_difference``      per-seed groups ``quantity`` (A) and ``other`` (B): A is
                          ``greater``/``less`` than B (``direction``), significant at
                          ``level``: Welch's one-sided t-test (``method: t_test``,
                          the default) or a one-sided BCa bootstrap interval of
                          mean(A) − mean(B) that excludes 0 (``method: bootstrap``)
``within_paper_spread``   |mean(quantity) − paper mean| <= k·√(sd_paper² + sd_ours²),
                          ``paper_value: {mean: .., sd: ..}``, sd_ours with ddof=1
``trend``                 y (``quantity``: a list, or a list of per-seed lists) against
                          sizes (``x``: a quantity, or ``x_values``) is ``increasing``/
                          ``decreasing``, significant at ``level``: one-sided Spearman
                          (``method: spearman``) or Kendall (``kendall``) test, or the
                          least-squares slope's one-sided t-test (``slope``)
========================  =======================================================

The statistical rules (the last three) use ``scipy.stats``; their ``level`` (or
``k``) is declared in ``claims.yaml`` before any run. A non-finite value (NaN,
inf, or the strings ``"nan"``/``"inf"`` the JSON writer makes of them) or a
non-number in their data makes them fail, saying so: nothing is dropped. Their
bootstrap draws are seeded from the rule itself (or its ``seed``), so a verdict
is reproducible. Each reports n, the estimate, its one-sided (1 − level)
interval and/or the p-value, and the level, in ``detail`` and ``values``.
Optional keys: ``n_resamples`` (bootstrap draws, >= 99, default 9999), ``seed``,
and for Spearman/Kendall ``interval: none`` to skip their bootstrap interval (the
verdict rests on the p-value; the slope's interval is t-based, from ``linregress``).
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import yaml
from scipy import stats

VERDICTS = (
    "reproduced",
    "partially reproduced",
    "not reproduced",
    "not testable at this scale",
)
RULE_TYPES = (
    "at_most", "at_least", "equals", "close_to_paper", "monotone", "ratio_at_least",
    "fraction_at_most", "all_of", "group_difference", "within_paper_spread", "trend",
)
STAT_RULE_TYPES = ("group_difference", "within_paper_spread", "trend")
#: measurement names a rule reads, by key
QUANTITY_KEYS = ("quantity", "denominator", "other", "x", "censored")
DEFAULT_N_RESAMPLES = 9999

CLAIMS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["paper", "claims"],
    "additionalProperties": False,
    "properties": {
        "paper": {
            "type": "object",
            "required": ["citation"],
            "properties": {"citation": {"type": "string"}, "url": {"type": "string"}},
        },
        "conventions": {"type": "string"},
        "notes": {"type": "string"},
        "paper_tables": {
            "type": "object",
            "additionalProperties": {
                "type": "object",
                "required": ["source", "columns", "rows"],
                "additionalProperties": False,
                "properties": {
                    "source": {"type": "string"},
                    "columns": {"type": "array", "minItems": 1, "items": {"type": "string"}},
                    "rows": {"type": "array", "minItems": 1, "items": {"type": "array"}},
                },
            },
        },
        "claims": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["id", "statement", "where", "measured", "rule"],
                "additionalProperties": False,
                "properties": {
                    "id": {"type": "string"},
                    "statement": {"type": "string"},
                    "where": {"type": "string"},
                    "measured": {"type": "string"},
                    "ours": {"type": "boolean"},
                    "by_construction": {"type": "boolean"},
                    "paper_value": {},
                    "paper_value_source": {"type": "string"},
                    "rule": {"$ref": "#/$defs/rule"},
                    "partial": {"$ref": "#/$defs/rule"},
                },
            },
        },
    },
    "$defs": {
        "rule": {
            "type": "object",
            "required": ["type"],
            "properties": {
                "type": {"enum": list(RULE_TYPES)},
                "quantity": {"type": "string"},
                "denominator": {"type": "string"},
                "threshold": {"type": "number"},
                "min_fraction": {"type": "number", "minimum": 0, "maximum": 1},
                "target": {},
                "rtol": {"type": "number", "minimum": 0},
                "atol": {"type": "number", "minimum": 0},
                "direction": {"enum": ["increasing", "decreasing", "greater", "less"]},
                "strict": {"type": "boolean"},
                "rules": {"type": "array", "items": {"$ref": "#/$defs/rule"}},
                "other": {"type": "string"},
                "x": {"type": "string"},
                "censored": {"type": "string"},
                "x_values": {"type": "array", "minItems": 2, "items": {"type": "number"}},
                "level": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1},
                "k": {"type": "number", "exclusiveMinimum": 0},
                "method": {"enum": ["t_test", "bootstrap", "spearman", "kendall", "slope"]},
                "interval": {"enum": ["bootstrap", "none"]},
                "n_resamples": {"type": "integer", "minimum": 99},
                "seed": {"type": "integer", "minimum": 0},
            },
            "allOf": [
                {
                    "if": {"properties": {"type": {"const": "monotone"}}},
                    "then": {"properties": {"direction": {"enum": ["increasing", "decreasing"]}}},
                },
                {
                    "if": {"properties": {"type": {"const": "group_difference"}}},
                    "then": {
                        "required": ["quantity", "other", "direction", "level"],
                        "properties": {
                            "direction": {"enum": ["greater", "less"]},
                            "method": {"enum": ["t_test", "bootstrap"]},
                        },
                    },
                },
                {
                    "if": {"properties": {"type": {"const": "within_paper_spread"}}},
                    "then": {"required": ["quantity", "k"]},
                },
                {
                    "if": {"properties": {"type": {"const": "trend"}}},
                    "then": {
                        "required": ["quantity", "direction", "level", "method"],
                        "properties": {
                            "direction": {"enum": ["increasing", "decreasing"]},
                            "method": {"enum": ["spearman", "kendall", "slope"]},
                        },
                        "oneOf": [{"required": ["x"]}, {"required": ["x_values"]}],
                    },
                },
            ],
        }
    },
}
_RULE_SCHEMA: dict[str, Any] = {"$ref": "#/$defs/rule", "$defs": CLAIMS_SCHEMA["$defs"]}
# built once: ``jsonschema.validate`` would check the schema itself on every call
_RULE_VALIDATOR = jsonschema.validators.validator_for(_RULE_SCHEMA)(_RULE_SCHEMA)


class NotTestable(Exception):
    """The run marked a quantity the rule needs not testable (or the paper gives no value)."""


class MissingQuantity(KeyError):
    """A quantity the rule needs is not in the measurements: an error, never a verdict."""

    def __init__(self, quantity: str, message: str | None = None) -> None:
        self.quantity = quantity
        super().__init__(message or f"quantity {quantity!r} is not in the measurements")

    def __str__(self) -> str:  # KeyError would show the message in quotes
        return str(self.args[0])


@dataclass
class RuleOutcome:
    holds: bool
    detail: str
    values: dict[str, Any] = field(default_factory=dict)


@dataclass
class Verdict:
    id: str
    statement: str
    where: str
    measured: str
    paper_value: Any
    paper_value_source: str | None
    ours: bool
    verdict: str
    values: dict[str, Any]
    reason: str
    rule: dict[str, Any]
    partial_rule: dict[str, Any] | None
    by_construction: bool = False  # a consistency check that holds by construction: not evidence

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def load_claims(path: str | Path) -> dict[str, Any]:
    """Read and schema-check a ``claims.yaml``."""
    with open(path) as fh:
        claims = yaml.safe_load(fh)
    jsonschema.validate(claims, CLAIMS_SCHEMA)
    ids = [c["id"] for c in claims["claims"]]
    if len(ids) != len(set(ids)):
        raise ValueError(f"{path}: duplicate claim ids in {ids}")
    for c in claims["claims"]:
        _check_paper_spread(c, where=str(path))
    for name, table in claims.get("paper_tables", {}).items():
        width = len(table["columns"])
        bad = [i for i, row in enumerate(table["rows"]) if len(row) != width]
        if bad:
            raise ValueError(f"{path}: paper_tables.{name}: rows {bad} do not have the {width} columns "
                             f"{table['columns']}")
    return claims


def paper_table(claims: Mapping[str, Any], name: str) -> list[dict[str, Any]]:
    """A table of the paper's numbers from ``claims.yaml``'s ``paper_tables``: one dict per row.

    The paper's numbers live only in ``claims.yaml`` (cited in ``source``); code reads them
    from here to show them beside ours, never types them.
    """
    tables = claims.get("paper_tables", {})
    if name not in tables:
        raise KeyError(f"paper_tables has no {name!r}; it has {sorted(tables)}")
    table = tables[name]
    return [dict(zip(table["columns"], row, strict=True)) for row in table["rows"]]


def _iter_rules(rule: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    """The rule and, recursively, every sub-rule of an ``all_of``."""
    yield rule
    for sub in rule.get("rules", ()):
        yield from _iter_rules(sub)


def _check_paper_spread(claim: Mapping[str, Any], where: str) -> None:
    """A ``within_paper_spread`` claim's ``paper_value`` must be ``{mean: .., sd: ..}``."""
    rules = [claim["rule"], *([claim["partial"]] if "partial" in claim else [])]
    if not any(r.get("type") == "within_paper_spread" for rule in rules for r in _iter_rules(rule)):
        return
    problem = _paper_spread_problem(claim.get("paper_value"))
    if problem:
        raise ValueError(f"{where}: claim {claim['id']!r}: {problem}")


def _paper_spread_problem(pv: Any) -> str | None:
    if not isinstance(pv, Mapping) or not {"mean", "sd"} <= set(pv):
        return f"within_paper_spread needs paper_value {{mean: .., sd: ..}}, not {pv!r}"
    mean, sd = pv["mean"], pv["sd"]
    if not (_finite(mean) and _finite(sd)) or isinstance(mean, bool) or isinstance(sd, bool) or sd < 0:
        return f"paper_value mean and sd must be finite numbers, sd >= 0, not {dict(pv)!r}"
    return None


def rule_quantities(rule: Mapping[str, Any]) -> set[str]:
    """Every measurement name a rule reads (``quantity``, ``denominator``, ``other``,
    ``x``), through ``all_of`` recursively. Given a claim (a mapping with ``rule``),
    those of its ``rule`` and its ``partial`` rule."""
    if "rule" in rule and "type" not in rule:
        return rule_quantities(rule["rule"]) | (rule_quantities(rule["partial"]) if "partial" in rule else set())
    return {r[key] for r in _iter_rules(rule) for key in QUANTITY_KEYS if key in r}


def check_claims_quantities(claims: Mapping[str, Any], declared: set[str], where: str) -> None:
    """Raise ``ValueError`` (one line) when a claim reads a quantity that is not in
    ``declared`` (the quantities its module's steps declare), naming the claim, the
    quantity and the closest declared names."""
    for claim in claims["claims"]:
        unknown = sorted(rule_quantities(claim) - set(declared))
        if unknown:
            name = unknown[0]
            close = difflib.get_close_matches(name, sorted(declared), n=3, cutoff=0.6)
            hint = f"did you mean {' or '.join(repr(c) for c in close)}?" if close else "no declared name is close"
            more = f" (also unknown: {', '.join(repr(u) for u in unknown[1:])})" if len(unknown) > 1 else ""
            raise ValueError(
                f"{where}: claim {claim['id']!r} reads quantity {name!r}, which no step declares; {hint}{more}"
            )


def _quantity(measurements: Mapping[str, Any], name: str) -> Any:
    if name not in measurements:
        close = difflib.get_close_matches(name, [str(k) for k in measurements], n=3, cutoff=0.6)
        hint = f" (closest measured: {', '.join(repr(c) for c in close)})" if close else ""
        raise MissingQuantity(name, f"quantity {name!r} is not in the measurements{hint}")
    value = measurements[name]
    if isinstance(value, Mapping) and "not_testable" in value:
        raise NotTestable(str(value["not_testable"]))
    return value


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, Sequence) and not isinstance(value, str) else [value]


def _finite(x: Any) -> bool:
    return isinstance(x, bool) or (isinstance(x, int | float) and math.isfinite(x))


def apply_rule(rule: Mapping[str, Any], measurements: Mapping[str, Any], paper_value: Any) -> RuleOutcome:
    """Evaluate one rule; raise ``NotTestable`` when the run marked an input not
    testable, ``MissingQuantity`` when an input is not in the measurements."""
    kind = rule["type"]
    if kind in STAT_RULE_TYPES:
        return _apply_stat_rule(rule, measurements, paper_value)
    if kind == "all_of":
        outcomes = [apply_rule(r, measurements, paper_value) for r in rule["rules"]]
        values: dict[str, Any] = {}
        for o in outcomes:
            values.update(o.values)
        return RuleOutcome(
            all(o.holds for o in outcomes), "; ".join(o.detail for o in outcomes), values
        )
    name = rule["quantity"]
    value = _quantity(measurements, name)
    values = {name: value}
    items = _as_list(value)
    if kind in ("at_most", "at_least"):
        t = rule["threshold"]
        ok = all(_finite(v) for v in items) and all(
            (v <= t) if kind == "at_most" else (v >= t) for v in items
        )
        sign = "<=" if kind == "at_most" else ">="
        worst = max(items) if kind == "at_most" else min(items)
        return RuleOutcome(ok, f"{name} = {_fmt(worst)} {sign} {t}: {ok}", values)
    if kind == "equals":
        ok = value == rule["target"]
        return RuleOutcome(ok, f"{name} = {_fmt(value)} == {rule['target']!r}: {ok}", values)
    if kind == "close_to_paper":
        if paper_value is None:
            raise NotTestable("the paper gives no value to compare with")
        rtol, atol = rule.get("rtol", 0.0), rule.get("atol", 0.0)
        ok = _finite(value) and abs(value - paper_value) <= atol + rtol * abs(paper_value)
        return RuleOutcome(
            ok, f"|{name} − paper| = |{_fmt(value)} − {paper_value}| <= {atol} + {rtol}·|paper|: {ok}",
            values,
        )
    if kind == "monotone":
        strict = rule.get("strict", False)
        increasing = rule["direction"] == "increasing"
        lower = [False] * len(items)
        if "censored" in rule:
            lower = [bool(v) for v in _as_list(_quantity(measurements, rule["censored"]))]
            values[rule["censored"]] = lower
        pairs = list(zip(range(len(items) - 1), range(1, len(items)), strict=True))

        def pair_holds(i: int, j: int) -> bool:
            a, b = items[i], items[j]
            # a lower bound decides a pair only from the side it bounds: true b >= b > a, or
            # true a >= a > b; a bound on the other side proves nothing
            if lower[i] if increasing else lower[j]:
                return False
            if increasing:
                return bool(b > a) if strict else bool(b >= a)
            return bool(b < a) if strict else bool(b <= a)

        ok = len(lower) == len(items) and len(items) >= 2 and all(_finite(v) for v in items) and all(
            pair_holds(i, j) for i, j in pairs)
        shown = "[" + ", ".join(("≥ " if low else "") + _fmt(v) for v, low in zip(items, lower, strict=False)) + "]"
        censored_note = " (≥: a censored lower bound)" if any(lower) else ""
        return RuleOutcome(ok, f"{name} = {shown}{censored_note} {rule['direction']}: {ok}", values)
    if kind == "ratio_at_least":
        den_name = rule["denominator"]
        den = _quantity(measurements, den_name)
        values[den_name] = den
        ratio = value / den if den else math.inf
        ok = _finite(ratio) and ratio >= rule["threshold"]
        return RuleOutcome(ok, f"{name}/{den_name} = {_fmt(ratio)} >= {rule['threshold']}: {ok}", values)
    if kind == "fraction_at_most":
        t = rule["threshold"]
        hits = sum(1 for v in items if _finite(v) and v <= t)
        frac = hits / len(items) if items else 0.0
        ok = frac >= rule["min_fraction"]
        detail = f"{hits}/{len(items)} of {name} <= {t} (fraction {frac:.3f} >= {rule['min_fraction']}): {ok}"
        return RuleOutcome(ok, detail, values)
    raise ValueError(f"unknown rule type {kind!r}; allowed: {', '.join(RULE_TYPES)}")


# --- statistical rules (scipy.stats) ---------------------------------------------------

_STAT_WARNINGS: tuple[type[Warning], ...] = (
    RuntimeWarning, stats.ConstantInputWarning, stats.NearConstantInputWarning, stats.DegenerateDataWarning,
)


def _apply_stat_rule(rule: Mapping[str, Any], measurements: Mapping[str, Any], paper_value: Any) -> RuleOutcome:
    try:
        error = jsonschema.exceptions.best_match(_RULE_VALIDATOR.iter_errors(dict(rule)))
        if error is not None:
            raise error
    except jsonschema.ValidationError as err:
        raise ValueError(f"invalid {rule['type']} rule {dict(rule)!r}: {err.message}") from None
    with warnings.catch_warnings():  # degenerate data gives NaN, which fails the rule below
        for category in _STAT_WARNINGS:
            warnings.simplefilter("ignore", category)
        if rule["type"] == "group_difference":
            return _group_difference(rule, measurements)
        if rule["type"] == "within_paper_spread":
            return _within_paper_spread(rule, measurements, paper_value)
        return _trend(rule, measurements)


_NEVER_DROPPED = "the rule fails on non-finite or non-numeric values, which are never dropped"


def _not_a_finite_number(v: Any) -> bool:
    if isinstance(v, bool | np.bool_) or not isinstance(v, int | float | np.integer | np.floating):
        return True
    return not math.isfinite(v)


def _sample(name: str, items: Sequence[Any], labels: Sequence[str] | None = None) -> tuple[np.ndarray, str | None]:
    """The items as a float array, or why they cannot be used: a non-finite value (NaN,
    inf, "nan", "inf", ...) or a non-number fails the rule; nothing is dropped."""
    labels = labels if labels is not None else [f"[{i}]" for i in range(len(items))]
    bad = [(label, v) for label, v in zip(labels, items, strict=True) if _not_a_finite_number(v)]
    if bad:
        shown = ", ".join(f"{v!r} at {label}" for label, v in bad[:6]) + (", …" if len(bad) > 6 else "")
        return np.empty(0), f"{name} has {len(bad)} non-finite or non-numeric value(s) of {len(items)} ({shown})"
    return np.asarray(items, dtype=float), None


def _seed(rule: Mapping[str, Any]) -> int:
    """The bootstrap's seed: the rule's ``seed``, else one derived from the rule's text."""
    if "seed" in rule:
        return int(rule["seed"])
    text = json.dumps(dict(rule), sort_keys=True, default=str)
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "big")


def _interval(lo: float, hi: float) -> str:
    return f"{'(' if math.isinf(lo) else '['}{lo:.4g}, {hi:.4g}{')' if math.isinf(hi) else ']'}"


def _pct(level: float) -> str:
    return f"{100 * (1 - level):.4g}%"


def _p_text(p: float, level: float) -> str:
    return f"p = {p:.3g} {'<=' if p <= level else '>'} level {level:g}" if math.isfinite(p) else f"p undefined ({p})"


def _mean_difference(a: np.ndarray, b: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.mean(a, axis=axis) - np.mean(b, axis=axis)


def _spearman_rho(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    """Spearman's rho, vectorised for the bootstrap: Pearson's r of the (average) ranks,
    which is what ``scipy.stats.spearmanr`` computes."""
    return stats.pearsonr(stats.rankdata(x, axis=axis), stats.rankdata(y, axis=axis), axis=axis).statistic


def _kendall_tau(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    return stats.kendalltau(x, y, axis=axis).statistic


def _group_difference(rule: Mapping[str, Any], measurements: Mapping[str, Any]) -> RuleOutcome:
    a_name, b_name = rule["quantity"], rule["other"]
    a_raw, b_raw = _quantity(measurements, a_name), _quantity(measurements, b_name)
    values: dict[str, Any] = {a_name: a_raw, b_name: b_raw}
    direction, level, method = rule["direction"], float(rule["level"]), rule.get("method", "t_test")
    key = f"{a_name} − {b_name}"
    a, a_bad = _sample(a_name, _as_list(a_raw))
    b, b_bad = _sample(b_name, _as_list(b_raw))
    if a_bad or b_bad:
        problem = "; ".join(p for p in (a_bad, b_bad) if p)
        head = f"{a_name} {'>' if direction == 'greater' else '<'} {b_name} ({method}, level {level:g})"
        values[key] = {"method": method, "n": [len(_as_list(a_raw)), len(_as_list(b_raw))], "level": level,
                       "failed": "non-finite or non-numeric values"}
        return RuleOutcome(False, f"{head}: {problem}: {_NEVER_DROPPED}: False", values)
    n = [len(a), len(b)]
    sign = ">" if direction == "greater" else "<"
    if min(n) < 2:
        values[key] = {"method": method, "n": n, "level": level, "failed": "too few values"}
        return RuleOutcome(False, f"{a_name} {sign} {b_name}: n = {n[0]} vs {n[1]}, each group needs >= 2: False",
                           values)
    estimate = float(np.mean(a) - np.mean(b))
    if method == "t_test":
        res = stats.ttest_ind(a, b, equal_var=False, alternative=direction)
        ci = res.confidence_interval(confidence_level=1 - level)
        lo, hi, p = float(ci.low), float(ci.high), float(res.pvalue)
        ok = math.isfinite(p) and p <= level
        test = f"Welch's one-sided t-test, df = {float(res.df):.3g}, level {level:g}"
        how = f"{_p_text(p, level)}; {_pct(level)} one-sided Welch CI {_interval(lo, hi)}"
        values[key] = {"method": "Welch t-test, one-sided", "n": n, "estimate": estimate,
                       "interval": [lo, hi], "p_value": p, "level": level}
    else:
        n_resamples, seed = int(rule.get("n_resamples", DEFAULT_N_RESAMPLES)), _seed(rule)
        res = stats.bootstrap(
            (a, b), _mean_difference, vectorized=True, n_resamples=n_resamples, alternative=direction,
            confidence_level=1 - level, method="BCa", rng=np.random.default_rng(seed),
        )
        lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
        ok = bool(lo > 0) if direction == "greater" else bool(hi < 0)  # NaN: False
        test = f"one-sided BCa bootstrap, {n_resamples} resamples, seed {seed}, level {level:g}"
        how = (f"{_pct(level)} one-sided bootstrap CI {_interval(lo, hi)} "
               f"{'excludes' if ok else 'does not exclude'} 0")
        values[key] = {"method": f"BCa bootstrap, one-sided, {n_resamples} resamples, seed {seed}", "n": n,
                       "estimate": estimate, "interval": [lo, hi], "level": level}
    detail = (f"{a_name} {sign} {b_name} ({test}): n = {n[0]} vs {n[1]}, "
              f"mean({a_name}) − mean({b_name}) = {estimate:.4g}, {how}: {ok}")
    return RuleOutcome(ok, detail, values)


def _within_paper_spread(rule: Mapping[str, Any], measurements: Mapping[str, Any], paper_value: Any) -> RuleOutcome:
    name, k = rule["quantity"], float(rule["k"])
    if paper_value is None:
        raise NotTestable("the paper gives no value to compare with")
    problem = _paper_spread_problem(paper_value)
    if problem:
        raise ValueError(problem)
    raw = _quantity(measurements, name)
    values: dict[str, Any] = {name: raw}
    key = f"{name} vs paper"
    ours, bad = _sample(name, _as_list(raw))
    if bad or len(ours) < 2:
        why = f"{bad}: {_NEVER_DROPPED}" if bad else f"n = {len(ours)}: our sd needs >= 2 values"
        values[key] = {"n": len(_as_list(raw)), "k": k, "failed": "non-finite or non-numeric values" if bad
                       else "too few values"}
        return RuleOutcome(False, f"mean({name}) within k = {k:g} paper spreads: {why}: False", values)
    p_mean, p_sd = float(paper_value["mean"]), float(paper_value["sd"])
    mean, sd = float(np.mean(ours)), float(np.std(ours, ddof=1))
    diff, bound = mean - p_mean, k * math.sqrt(p_sd**2 + sd**2)
    ok = abs(diff) <= bound
    values[key] = {"n": len(ours), "mean": mean, "sd": sd, "paper_mean": p_mean, "paper_sd": p_sd,
                   "difference": diff, "bound": bound, "k": k}
    detail = (f"|mean({name}) − paper mean| = |{mean:.4g} − {p_mean:.4g}| = {abs(diff):.4g} "
              f"{'<=' if ok else '>'} k·√(sd_paper² + sd_ours²) = {k:g}·√({p_sd:.4g}² + {sd:.4g}²) = {bound:.4g} "
              f"(n = {len(ours)}, sd with ddof=1; a spread criterion, no p-value): {ok}")
    return RuleOutcome(ok, detail, values)


def _trend(rule: Mapping[str, Any], measurements: Mapping[str, Any]) -> RuleOutcome:
    name, direction, level, method = rule["quantity"], rule["direction"], float(rule["level"]), rule["method"]
    y_raw = _quantity(measurements, name)
    values: dict[str, Any] = {name: y_raw}
    if "x" in rule:
        x_label = rule["x"]
        x_raw = _quantity(measurements, x_label)
        values[x_label] = x_raw
    else:
        x_label, x_raw = "x_values", rule["x_values"]
    key = f"trend of {name} in {x_label}"
    sizes, groups = _as_list(x_raw), _as_list(y_raw)
    if len(sizes) != len(groups):
        raise ValueError(f"trend: {name} has {len(groups)} entries but {x_label} has {len(sizes)} sizes")
    x_flat, y_flat, labels = [], [], []
    for i, (size, group) in enumerate(zip(sizes, groups, strict=True)):
        nested = isinstance(group, Sequence) and not isinstance(group, str)
        for j, v in enumerate(_as_list(group)):
            x_flat.append(size)
            y_flat.append(v)
            labels.append(f"[{i}][{j}]" if nested else f"[{i}]")
    head = f"{name} {direction} in {x_label} ({method}, level {level:g})"
    xs, x_bad = _sample(x_label, sizes)
    ys, y_bad = _sample(name, y_flat, labels)
    if x_bad or y_bad:
        values[key] = {"method": method, "n": len(y_flat), "level": level,
                       "failed": "non-finite or non-numeric values"}
        problem = "; ".join(p for p in (x_bad, y_bad) if p)
        return RuleOutcome(False, f"{head}: {problem}: {_NEVER_DROPPED}: False", values)
    xs = np.asarray(x_flat, dtype=float)
    n, n_sizes = len(ys), len(np.unique(xs))
    if n < 3 or n_sizes < 2:
        values[key] = {"method": method, "n": n, "sizes": n_sizes, "level": level, "failed": "too few values"}
        return RuleOutcome(False, f"{head}: n = {n} at {n_sizes} sizes, needs >= 3 values at >= 2 sizes: False",
                           values)
    alternative = "greater" if direction == "increasing" else "less"
    interval_how: str | None
    if method == "slope":
        res = stats.linregress(xs, ys, alternative=alternative)
        estimate, p, stderr = float(res.slope), float(res.pvalue), float(res.stderr)
        margin = float(stats.t.ppf(1 - level, n - 2)) * stderr
        lo, hi = (estimate - margin, math.inf) if direction == "increasing" else (-math.inf, estimate + margin)
        statistic = "least-squares slope"
        interval_how = f"t-based from linregress (stderr {stderr:.3g}, df {n - 2})"
    else:
        test = stats.spearmanr if method == "spearman" else stats.kendalltau
        res = test(xs, ys, alternative=alternative)
        estimate, p = float(res.statistic), float(res.pvalue)
        statistic = "Spearman's rho" if method == "spearman" else "Kendall's tau-b"
        if rule.get("interval", "bootstrap") == "bootstrap":
            n_resamples, seed = int(rule.get("n_resamples", DEFAULT_N_RESAMPLES)), _seed(rule)
            boot = stats.bootstrap(
                (xs, ys), _spearman_rho if method == "spearman" else _kendall_tau, paired=True, vectorized=True,
                n_resamples=n_resamples, alternative=alternative, confidence_level=1 - level, method="BCa",
                rng=np.random.default_rng(seed),
            )
            lo, hi = float(boot.confidence_interval.low), float(boot.confidence_interval.high)
            interval_how = f"paired BCa bootstrap ({n_resamples} resamples, seed {seed})"
        else:
            lo, hi, interval_how = math.nan, math.nan, None
    ok = math.isfinite(estimate) and math.isfinite(p) and p <= level
    values[key] = {"method": f"{statistic}, one-sided", "n": n, "sizes": n_sizes, "estimate": estimate,
                   "p_value": p, "level": level, "interval": [lo, hi] if interval_how else None,
                   "interval_method": interval_how}
    ci = f"{_pct(level)} one-sided CI {_interval(lo, hi)} by {interval_how}" if interval_how else "no interval asked"
    detail = (f"{head}: n = {n} at {n_sizes} sizes, {statistic} = {estimate:.4g}, one-sided {_p_text(p, level)}; "
              f"{ci}: {ok}")
    return RuleOutcome(ok, detail, values)


def _fmt(x: Any) -> str:
    if isinstance(x, float):
        return f"{x:.4g}"
    if isinstance(x, list):
        return "[" + ", ".join(_fmt(v) for v in x[:8]) + (", …]" if len(x) > 8 else "]")
    return repr(x)


def judge(claim: Mapping[str, Any], measurements: Mapping[str, Any]) -> Verdict:
    """The verdict on one claim, with the numbers and the reasoning behind it."""
    paper_value = claim.get("paper_value")
    base = dict(
        id=claim["id"],
        statement=claim["statement"],
        where=claim["where"],
        measured=claim["measured"],
        paper_value=paper_value,
        paper_value_source=claim.get("paper_value_source"),
        ours=bool(claim.get("ours", False)),
        by_construction=bool(claim.get("by_construction", False)),
        rule=dict(claim["rule"]),
        partial_rule=dict(claim["partial"]) if "partial" in claim else None,
    )
    try:
        main = apply_rule(claim["rule"], measurements, paper_value)
        if main.holds:
            return Verdict(**base, verdict="reproduced", values=main.values, reason=main.detail)
        if "partial" in claim:
            weak = apply_rule(claim["partial"], measurements, paper_value)
            values = {**main.values, **weak.values}
            if weak.holds:
                reason = f"rule failed ({main.detail}); partial rule holds ({weak.detail})"
                return Verdict(**base, verdict="partially reproduced", values=values, reason=reason)
            reason = f"rule failed ({main.detail}); partial rule failed ({weak.detail})"
            return Verdict(**base, verdict="not reproduced", values=values, reason=reason)
        return Verdict(**base, verdict="not reproduced", values=main.values, reason=main.detail)
    except NotTestable as why:
        return Verdict(**base, verdict="not testable at this scale", values={}, reason=str(why))
    except MissingQuantity as missing:  # an error, not a verdict: name the claim and let it propagate
        raise MissingQuantity(missing.quantity, f"claim {claim['id']!r}: {missing}") from None


def judge_all(claims: Mapping[str, Any], measurements: Mapping[str, Any]) -> list[Verdict]:
    return [judge(c, measurements) for c in claims["claims"]]


def merge_measurements(paths: Sequence[str | Path]) -> dict[str, Any]:
    """Union of several measurement files; a quantity defined twice is an error."""
    import json

    merged: dict[str, Any] = {}
    for path in paths:
        data = json.loads(Path(path).read_text())
        clash = set(merged) & set(data)
        if clash:
            raise ValueError(f"quantities measured twice: {sorted(clash)} (in {path})")
        merged.update(data)
    return merged
