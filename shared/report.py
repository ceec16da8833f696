"""The HTML report: one self-contained static page (images embedded as base64).

Scorecard first (module × claim: paper vs ours, verdict, colour), then per module
its figures with the captions its run wrote (setup and measured numbers), its
claims' reasoning, and its provenance.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import json
from pathlib import Path
from typing import Any

from shared.io import atomic_path, read_json
from shared.module import TOOLKIT
from shared.plotting import VERDICT_COLOURS
from shared.report_surface import interactive_surfaces

CSS = """
body { font-family: -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif; margin: 2em auto;
       max-width: 1200px; color: #222; line-height: 1.45; padding: 0 1em; }
h1 { margin-bottom: 0.2em; } h2 { border-bottom: 2px solid #ddd; padding-bottom: 0.2em; margin-top: 2em; }
table { border-collapse: collapse; width: 100%; font-size: 0.9em; margin: 0.8em 0; }
th, td { border: 1px solid #ddd; padding: 6px 8px; vertical-align: top; text-align: left; }
th { background: #f4f4f4; }
.verdict { color: white; font-weight: 600; border-radius: 4px; padding: 2px 6px; white-space: nowrap; }
figure { margin: 1.5em 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { font-size: 0.9em; color: #444; margin-top: 0.4em; }
.small { font-size: 0.85em; color: #555; } pre { background: #f7f7f7; padding: 0.8em; overflow-x: auto;
       font-size: 0.8em; }
.ours { font-size: 0.75em; background: #e3f2fd; border-radius: 3px; padding: 1px 4px; }
"""


def _esc(x: Any) -> str:
    return html.escape(str(x))


def _value_summary(values: dict[str, Any]) -> str:
    """A short text for the measured values: scalars as they are, lists by their extremes."""
    parts = []
    for name, value in values.items():
        if isinstance(value, list) and value and all(isinstance(v, int | float) for v in value):
            parts.append(f"{name}: n={len(value)}, min {min(value):.3g}, max {max(value):.3g}")
        elif isinstance(value, float):
            parts.append(f"{name} = {value:.4g}")
        else:
            text = json.dumps(value)
            parts.append(f"{name} = {text if len(text) < 120 else text[:117] + '…'}")
    return "; ".join(parts) if parts else "—"


def _badge(verdict: str) -> str:
    colour = VERDICT_COLOURS.get(verdict, "#555")
    return f'<span class="verdict" style="background:{colour}">{_esc(verdict)}</span>'


def _scorecard(modules: list[tuple[str, dict[str, Any]]]) -> str:
    rows = []
    for module, verdicts in modules:
        for claim in verdicts["claims"]:
            ours = ' <span class="ours">our test</span>' if claim.get("ours") else ""
            if claim.get("by_construction"):
                ours += ' <span class="ours">holds by construction: a consistency check, not evidence</span>'

            rows.append(
                "<tr class='scorecard-row'>"
                f"<td><a href='#{_esc(module)}'>{_esc(module)}</a></td>"
                f"<td><b>{_esc(claim['id'])}</b>{ours}<br><span class='small'>{_esc(claim['statement'])}</span></td>"
                f"<td>{_esc(claim['paper_value']) if claim['paper_value'] is not None else '—'}</td>"
                f"<td>{_esc(_value_summary(claim['values']))}</td>"
                f"<td>{_badge(claim['verdict'])}</td></tr>"
            )
    return (
        "<table id='scorecard'><thead><tr><th>module</th><th>claim</th><th>paper</th>"
        "<th>ours (measured)</th><th>verdict</th></tr></thead><tbody>"
        + "".join(rows)
        + "</tbody></table>"
    )


def _claims_table(verdicts: dict[str, Any], where: str = "where in the paper") -> str:
    rows = "".join(
        f"<tr><td><b>{_esc(c['id'])}</b></td><td>{_esc(c['where'])}</td>"
        f"<td>{_esc(c['measured'])}</td><td>{_esc(c['reason'])}</td><td>{_badge(c['verdict'])}</td></tr>"
        for c in verdicts["claims"]
    )
    return (
        f"<table><thead><tr><th>claim</th><th>{_esc(where)}</th><th>what we measure</th>"
        f"<th>how the verdict was reached</th><th>verdict</th></tr></thead><tbody>{rows}</tbody></table>"
    )


def _provenance(outdir: Path) -> list[str]:
    prov_path = outdir / "provenance.json"
    if not prov_path.exists():
        return []
    prov = read_json(prov_path)
    code = prov["code"]
    device = prov["device"]
    walls = ", ".join(f"{k} {v:.1f} s" for k, v in prov.get("rule_wall_s", {}).items())
    return [
        "<p class='small'><b>Provenance.</b> "
        f"commit {_esc(code['commit'][:10])}{' (uncommitted changes)' if code['dirty'] else ''}; "
        f"device {_esc(', '.join(device['devices']))} ({_esc(device['backend'])}, "
        f"x64={device['x64']}); seed {_esc(prov['seed'])}; wall time per rule: {_esc(walls or '—')}.</p>"
        f"<details><summary class='small'>full provenance</summary><pre>"
        f"{_esc(json.dumps(prov, indent=1))}</pre></details>"
    ]


def _module_section(module: str, outdir: Path, verdicts: dict[str, Any]) -> str:
    parts = [f"<h2 id='{_esc(module)}'>{_esc(module)}</h2>"]
    parts.append(f"<p class='small'>{_esc(verdicts['paper']['citation'])}</p>")
    if verdicts.get("conventions"):
        parts.append(f"<p class='small'><b>Conventions.</b> {_esc(verdicts['conventions'])}</p>")
    parts.append(_claims_table(verdicts))
    parts += _figures(outdir)
    parts += interactive_surfaces(outdir)
    parts += _provenance(outdir)
    return "\n".join(parts)


def _figures(outdir: Path) -> list[str]:
    parts = []
    for registry in sorted((outdir / "figures").glob("*.json")):
        for fig in read_json(registry):
            data = base64.b64encode((outdir / fig["file"]).read_bytes()).decode("ascii")
            parts.append(
                f"<figure><img alt='{_esc(fig['title'])}' src='data:image/png;base64,{data}'>"
                f"<figcaption><b>{_esc(fig['title'])}.</b> {_esc(fig['caption'])}</figcaption></figure>"
            )
    return parts


# --- the toolkit check (shared/toolkit) ----------------------------------------------------------


def _num(value: Any, fmt: str = ".3g") -> str:
    """A table cell: a number in ``fmt``, or a dash for a missing one (NaN)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return _esc(value)
    return "—" if number != number else format(number, fmt)


def _bottom_ritz_text(table: Any) -> str:
    """What the bottom-k Lanczos Ritz values of this run can and cannot be used for."""
    lanczos = table[table.estimator.str.startswith("Lanczos")]
    top = lanczos[lanczos.quantity.str.startswith("λ_top")]
    bottom = lanczos[lanczos.quantity.str.startswith("λ_bottom")]
    if bottom.empty:
        return ""
    label = str(bottom.estimator.iloc[0])
    errors = ", ".join(f"{e:.1e}" for e in bottom.rel_error)
    converged = int((bottom.rel_error <= 1e-6).sum())
    return (
        "<p><b>Bottom-k Ritz values: what they can and cannot be used for.</b> "
        f"{_esc(label)} gives the top-{len(top)} eigenvalues to a relative {top.rel_error.max():.1e}, but the "
        f"bottom-{len(bottom)} Ritz values have relative errors {_esc(errors)} (smallest first; residuals "
        f"{_esc(', '.join(f'{r:.1e}' for r in bottom.residual))}): {converged} of {len(bottom)} within 1e-6, the "
        f"others up to {100 * bottom.rel_error.max():.2g} % off. The smallest eigenvalues of a trained net's "
        "Hessian sit at the edge of the bulk near zero, packed far closer together than their distance to the "
        "top outliers, and a Krylov space of that size resolves only the most extreme of them. "
        "<i>They can be used</i> as bounds: by Cauchy interlacing (claim T-lanczos-bounds) the i-th smallest "
        "Ritz value is never below the i-th smallest eigenvalue, so a negative one proves the Hessian indefinite, "
        "with its Ritz vector v as a direction of negative curvature (vᵀHv = θ &lt; 0); and some eigenvalue lies "
        "within each Ritz value's residual. <i>They cannot be used</i> as estimates of the bottom eigenvalues "
        f"beyond the most extreme one (each lies above the eigenvalue it approaches, here by up to "
        f"{100 * bottom.rel_error.max():.2g} %), nor for the ratio |λ_min|/λ_max unless the bottom Ritz value's "
        "residual is small, nor for the number of negative eigenvalues (the Morse index) or the density near "
        "zero: use SLQ for the density, an exact Hessian of a small model for the index, and many more Lanczos "
        "steps for the edge of the bulk (running Lanczos on a shifted H does not help: the Krylov space is the "
        "same). Even a small residual certifies an eigenvalue near θ, not that it is the smallest.</p>"
    )


def _toolkit_section(outdir: Path, verdicts: dict[str, Any] | None = None) -> str:
    """The estimators' and landscape tools' accuracy (``shared.toolkit``), with its verdicts."""
    import pandas as pd

    table = pd.read_csv(outdir / "tables" / "estimators.csv")
    rows = "".join(
        f"<tr><td>{_esc(r.estimator)}</td><td>{_esc(r.quantity)}</td><td>{_num(r.exact, '.6g')}</td>"
        f"<td>{_num(r.estimate, '.6g')}</td><td>{_num(r.rel_error, '.2e')}</td><td>{_num(r.stderr, '.2e')}</td>"
        f"<td>{_num(r.residual, '.1e')}</td>"
        f"<td>{'—' if pd.isna(r.within_3se) else f'{int(r.within_3se)}/{int(r.draws)}'}</td>"
        f"<td>{_num(r.pooled_z, '.2f')}</td></tr>"
        for r in table.itertuples()
    )
    parts = ["<h2 id='toolkit'>Toolkit accuracy</h2>"]
    if verdicts is not None:
        parts.append(f"<p class='small'>{_esc(verdicts['paper']['citation'])}</p>")
    parts.append(
        "<p class='small'>Every curvature estimator and landscape tool the modules use, against a ground truth "
        "computed independently (the exact Hessian of a small twin network, a closed form, a NumPy "
        "implementation of the official recipe), so that the tools' error is visible next to the results that "
        "rely on them, and a regression in any of them fails a verdict. Thresholds are declared in "
        "<code>shared/toolkit/claims.yaml</code> from each method's theory; the stochastic estimators are "
        "judged in units of their own standard errors over independent draws.</p>"
    )
    if verdicts is not None:
        if verdicts.get("conventions"):
            parts.append(f"<p class='small'><b>Conventions.</b> {_esc(verdicts['conventions'])}</p>")
        parts.append(_claims_table(verdicts, where="theory"))
    parts.append(
        "<table id='toolkit-table'><thead><tr><th>estimator</th><th>quantity</th><th>exact</th><th>estimate</th>"
        "<th>relative error</th><th>stderr</th><th>residual</th><th>draws within 3 stderr</th>"
        f"<th>pooled z</th></tr></thead><tbody>{rows}</tbody></table>"
    )
    parts.append(_bottom_ritz_text(table))
    parts += _landscape_tables(outdir)
    parts += _figures(outdir)
    parts += interactive_surfaces(outdir)
    parts += _provenance(outdir)
    return "\n".join(p for p in parts if p)


def _landscape_tables(outdir: Path) -> list[str]:
    """Keskar's Metric 2.1 against its closed form, and the plane against the NumPy recipe."""
    import pandas as pd

    keskar_path, plane_path = outdir / "tables" / "keskar.csv", outdir / "tables" / "plane.csv"
    if not (keskar_path.exists() and plane_path.exists()):
        return []
    keskar = pd.read_csv(keskar_path).iloc[0]
    plane = pd.read_csv(plane_path)
    return [
        "<table id='toolkit-landscape'><thead><tr><th>tool</th><th>setting</th><th>exact / reference</th>"
        "<th>suite</th><th>relative difference</th></tr></thead><tbody>"
        f"<tr><td>Keskar Metric 2.1 (full space, {int(keskar.maxiter)} L-BFGS-B iterations, float32)</td>"
        f"<td>diagonal quadratic, {int(keskar.parameters)} parameters, ε = {keskar.epsilon:g}, "
        f"|g_i| = {keskar.gradient:g}</td><td>{keskar.closed_form:.6g} (closed form)</td>"
        f"<td>{keskar.sharpness:.6g} ({int(keskar.nit)} iterations)</td><td>{keskar.rel_error:.2e} "
        f"(any vertex within {keskar.vertex_gap_rel:.1e})</td></tr>"
        f"<tr><td>filter-normalised plane (Li et al. §4)</td><td>{len(plane)} points, small convnet, BatchNorm "
        "eval, float64</td><td>NumPy recipe and forward pass "
        f"(loss {plane.loss_numpy.min():.4g}–{plane.loss_numpy.max():.4g})</td>"
        f"<td>shared.landscape (loss {plane.loss_suite.min():.4g}–{plane.loss_suite.max():.4g})</td>"
        f"<td>{plane.rel_diff.max():.2e} (largest over the grid)</td></tr></tbody></table>"
    ]


def _timings_section(timings: list[dict[str, Any]]) -> str:
    """Wall time of every rule (Snakemake's benchmark files), grouped by module with totals."""
    if not timings:
        return ""
    totals: dict[str, float] = {}
    for row in timings:
        totals[row["module"]] = totals.get(row["module"], 0.0) + row["wall_s"]
    rows = "".join(
        f"<tr><td>{_esc(r['module'])}</td><td>{_esc(r['rule'])}</td><td>{r['wall_s']:.1f}</td></tr>"
        for r in timings
    )
    total_rows = "".join(f"<tr><td><b>{_esc(m)}</b></td><td>all rules</td><td><b>{t:.1f}</b></td></tr>"
                         for m, t in totals.items())
    return "\n".join([
        "<h2 id='timings'>Provenance: wall time per rule</h2>",
        f"<p class='small'>From Snakemake's benchmark files of this run (also in <code>timings.csv</code>); "
        f"all rules: {sum(totals.values()):.0f} s.</p>",
        "<table id='timings-table'><thead><tr><th>module</th><th>rule</th><th>wall time (s)</th></tr></thead>"
        f"<tbody>{total_rows}{rows}</tbody></table>",
    ])


def render(results: Path, modules: list[str], scale: str, timings: list[dict[str, Any]] | None = None) -> str:
    loaded = [(m, read_json(results / m / "verdicts.json")) for m in modules]
    counts: dict[str, int] = {}
    for _, v in loaded:
        for c in v["claims"]:
            key = f"{c['verdict']} (by construction, not evidence)" if c.get("by_construction") else c["verdict"]
            counts[key] = counts.get(key, 0) + 1
    summary = ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))
    body = [
        "<h1>landscape-replications</h1>",
        f"<p class='small'>Scale <b>{_esc(scale)}</b>; generated "
        f"{dt.datetime.now(dt.UTC).strftime('%Y-%m-%d %H:%M UTC')}; {len(modules)} module(s); "
        f"{_esc(summary)}. Every value under “ours” is computed by the run that made this page; "
        "the paper's values come from each module's claims.yaml.</p>",
        "<h2>Scorecard</h2>",
        _scorecard(loaded),
    ]
    body += [_toolkit_section(results / m, v) if m == TOOLKIT else _module_section(m, results / m, v)
             for m, v in loaded]
    toolkit = results / TOOLKIT
    if TOOLKIT not in modules and (toolkit / "tables" / "estimators.csv").exists():  # not in the scorecard
        verdicts_path = toolkit / "verdicts.json"
        body.append(_toolkit_section(toolkit, read_json(verdicts_path) if verdicts_path.exists() else None))
    body.append(_timings_section(timings or []))
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>landscape-replications report ({_esc(scale)})</title><style>{CSS}</style></head>"
        "<body>" + "\n".join(body) + "</body></html>"
    )


def write_report(results: Path, modules: list[str], out: Path, scale: str,
                 timings: list[dict[str, Any]] | None = None) -> None:
    text = render(results, modules, scale, timings)
    with atomic_path(out) as tmp:
        tmp.write_text(text, encoding="utf-8")
