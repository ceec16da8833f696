"""Claims and verdicts: a paper's claims (``claims.yaml``) judged on a run's
measurements, by rules declared in advance.

A module's run writes measurements (``measurements/<step>.json``: named
quantities, each a number, a list, a bool, or ``{"not_testable": reason}``).
``judge`` applies each claim's rule to them and returns a verdict:

- ``reproduced``: the claim's ``rule`` holds;
- ``partially reproduced``: the rule fails but the claim's declared ``partial``
  rule holds (a weaker criterion written in ``claims.yaml`` beforehand);
- ``not reproduced``: both fail: a result, shown with its numbers;
- ``not testable at this scale``: a quantity is missing, or the run marked it
  ``not_testable`` with a reason.

Rule types (each names the ``quantity`` it reads, except ``all_of``):

=====================  ==========================================================
``at_most``            value <= threshold (every element, for a list)
``at_least``           value >= threshold (every element, for a list)
``equals``             value == target (exact; for counts, booleans, strings)
``close_to_paper``     |value − paper_value| <= atol + rtol·|paper_value|
``monotone``           the list is increasing / decreasing (strictly or not)
``ratio_at_least``     value(quantity) / value(denominator) >= threshold
``fraction_at_most``   at least ``min_fraction`` of the list's elements are <= threshold
``all_of``             every sub-rule in ``rules`` holds
=====================  ==========================================================
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import yaml

VERDICTS = (
    "reproduced",
    "partially reproduced",
    "not reproduced",
    "not testable at this scale",
)
RULE_TYPES = (
    "at_most", "at_least", "equals", "close_to_paper", "monotone", "ratio_at_least",
    "fraction_at_most", "all_of",
)

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
                "direction": {"enum": ["increasing", "decreasing"]},
                "strict": {"type": "boolean"},
                "rules": {"type": "array", "items": {"$ref": "#/$defs/rule"}},
            },
        }
    },
}


class NotTestable(Exception):
    """A quantity the rule needs is absent or marked not testable."""


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
    return claims


def _quantity(measurements: Mapping[str, Any], name: str) -> Any:
    if name not in measurements:
        raise NotTestable(f"quantity {name!r} was not measured at this scale")
    value = measurements[name]
    if isinstance(value, Mapping) and "not_testable" in value:
        raise NotTestable(str(value["not_testable"]))
    return value


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, Sequence) and not isinstance(value, str) else [value]


def _finite(x: Any) -> bool:
    return isinstance(x, bool) or (isinstance(x, int | float) and math.isfinite(x))


def apply_rule(rule: Mapping[str, Any], measurements: Mapping[str, Any], paper_value: Any) -> RuleOutcome:
    """Evaluate one rule; raise ``NotTestable`` when its inputs are missing."""
    kind = rule["type"]
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
        pairs = list(zip(items[:-1], items[1:], strict=True))
        if rule["direction"] == "increasing":
            ok = all((b > a) if strict else (b >= a) for a, b in pairs)
        else:
            ok = all((b < a) if strict else (b <= a) for a, b in pairs)
        ok = ok and len(items) >= 2 and all(_finite(v) for v in items)
        return RuleOutcome(ok, f"{name} = {_fmt(items)} {rule['direction']}: {ok}", values)
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
