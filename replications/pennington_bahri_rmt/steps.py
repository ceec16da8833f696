"""Pennington & Bahri (2017) experiments: the steps ``module.py`` declares.

- ``finder_validation``: the critical-point finder (``shared.critical``) where every critical point
  is known: Baldi & Hornik's linear autoencoder (every critical point found matched to an
  enumerated one, per-index recovery, gradient-flat share; Newton-MR beside gradient-norm
  minimization) and Kawaguchi's deep linear net (every non-global critical point found is a saddle).
- ``index_energy``: single-hidden-layer tanh nets (``theory.tanh_loss``) per φ; starts taken along
  Adam trajectories (so their energies span the range), Newton-MR from each, every end point
  described by its exact Hessian: index vs energy (PB1), the lowest minimizer's energy beside
  ½(1 − φ)² (PB2); at up to ``spectrum_points`` approximate critical points per φ, H = G + R
  (Gauss–Newton + residual) and H's exact spectrum against the Wishart ⊞ Wigner free sum whose
  parameters come from G and R, not from H (PB3, ``free_sum.py``).
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import numpy as np
import pandas as pd

from replications.pennington_bahri_rmt import free_sum, theory
from shared import plotting, seeds
from shared.critical import finder, validation
from shared.critical.starts import adam_snapshots
from shared.module import FigureOut, StepResult

MODULE = "pennington_bahri_rmt"


# --- the finder, validated ----------------------------------------------------------------------

def finder_validation(cfg: dict[str, Any]) -> StepResult:
    from replications.baldi_linear_autoencoder import theory as baldi
    from replications.kawaguchi_deep_linear import theory as kawaguchi

    spec = cfg["autoencoder"]
    x = baldi.synthetic_patterns(seeds.numpy_rng(cfg["seed"], MODULE, "autoencoder"), spec["spectrum"],
                                 spec["samples"])
    result = validation.autoencoder_search_result(
        x.T @ x, spec["p"], seeds.numpy_rng(cfg["seed"], MODULE, "autoencoder_starts"), starts=spec["starts"],
        steps=spec["steps"], baseline_starts=spec["baseline_starts"], baseline_steps=spec["baseline_steps"],
        description=f"synthetic, spectrum {spec['spectrum']}, T = {spec['samples']}")

    deep = cfg["deep_linear"]
    rng = seeds.numpy_rng(cfg["seed"], MODULE, "deep_linear")
    problem = kawaguchi.make_problem(rng, deep["widths"][0], deep["samples"], deep["singular_values"], deep["noise"])
    lam, _ = problem.eigensystem()
    optimum = kawaguchi.global_min(lam, problem.y, min(deep["widths"][1:-1]))
    dims = sum(a * b for a, b in zip(deep["widths"][:-1], deep["widths"][1:], strict=True))
    scale = np.exp(rng.uniform(np.log(0.3), np.log(2.0), (deep["starts"], 1)))
    m, runs = validation.deep_linear_search(
        problem.x, problem.y, deep["widths"], optimum, scale * rng.standard_normal((deep["starts"], dims)),
        key=seeds.derive(cfg["seed"], MODULE, "escape"), lr=deep["lr"], escape_steps=deep["escape_steps"],
        steps=deep["steps"])
    result.measurements.update({f"k2_{k}": v for k, v in m.items()})
    result.tables["k2_runs"] = runs
    return result


# --- index vs energy of tanh nets ----------------------------------------------------------------



def index_energy(cfg: dict[str, Any]) -> StepResult:
    spec = cfg["tanh"]
    n, p_dim = spec["n"], 2 * spec["n"] ** 2
    rows: list[pd.DataFrame] = []
    spectra: list[dict[str, Any]] = []
    shown: dict[float, dict[str, Any]] = {}
    for phi in spec["phis"]:
        m = theory.samples_for(n, phi)
        rng = seeds.numpy_rng(cfg["seed"], MODULE, "data", str(phi))
        x, y = rng.standard_normal((m, n)), rng.standard_normal((m, n))
        loss = theory.tanh_loss(x, y)
        x0 = jnp.asarray(rng.standard_normal((spec["starts"], p_dim)))
        starts = adam_snapshots(loss, x0, spec["checkpoints"], spec["lr"])
        found, pts = finder.find_critical_points(loss, starts, steps=spec["newton_steps"], dense=True)
        frame = pts.frame().assign(phi=phi, m=m, steps=found.steps,
                                   checkpoint=np.tile(spec["checkpoints"], spec["starts"]))
        rows.append(frame)
        comparisons = _spectra(loss, x, pts, frame, phi, spec)
        spectra.extend({k: v for k, v in c.items() if np.ndim(v) == 0} for c in comparisons)
        finite = [c for c in comparisons if np.isfinite(c["ks_free"])]
        if finite:  # the figure's point: the median KS(free sum) at this φ
            shown[phi] = sorted(finite, key=lambda c: c["ks_free"])[(len(finite) - 1) // 2]
    table = pd.concat(rows, ignore_index=True)
    approx = table[(table.category != finder.DIVERGED) & (table.rel_grad <= spec["approx_rtol"])]
    strict = table[table.category == finder.CRITICAL]
    fit_rows = approx[(approx.phi == spec["fit_phi"]) & (approx["index"] > 0)]
    rng = seeds.numpy_rng(cfg["seed"], MODULE, "bootstrap")
    if len(fit_rows) >= spec["min_points"]:
        gamma, lo, hi, eps_c = theory.fit_exponent(fit_rows.loss.to_numpy(), fit_rows.index_fraction.to_numpy(),
                                                   rng, resamples=spec["bootstrap"])
    else:
        gamma = lo = hi = eps_c = float("nan")
    phis = list(spec["phis"])
    minimizers = [approx[(approx.phi == phi) & (approx["index"] == 0)].loss for phi in phis]
    lowest = [float(s.min()) if len(s) else float("nan") for s in minimizers]
    predicted = [float(theory.minimizer_energy(phi)) for phi in phis]
    rel_error = [abs(a - b) / b if np.isfinite(a) else float("nan") for a, b in zip(lowest, predicted, strict=True)]

    def pairs(frame: pd.DataFrame) -> tuple[list[float], list[float]]:
        if len(frame) < 3:  # a trend needs points: a NaN makes the rule fail, saying so
            return [float("nan")] * 3, [float("nan")] * 3
        return frame.loss.tolist(), frame.index_fraction.tolist()

    spectra_table = pd.DataFrame(spectra, columns=list(_SPECTRUM_COLUMNS))
    energy_strict, index_strict = pairs(strict)
    energy_approx, index_approx = pairs(approx)
    measurements = {
        "end_points": len(table),
        "critical_points": len(strict),
        "critical_fraction": float(len(strict) / len(table)),
        "gradient_flat_fraction": float(np.mean(table.category == finder.GRADIENT_FLAT)),
        "approx_points": len(approx),
        "energy_strict": energy_strict, "index_strict": index_strict,
        "energy_approx": energy_approx, "index_approx": index_approx,
        "exponent": gamma, "exponent_low": lo, "exponent_high": hi,
        "exponent_width": hi - lo if np.isfinite(hi - lo) else float("nan"),
        "fit_points": len(fit_rows), "fitted_critical_energy": eps_c,
        "minimizer_energy": lowest, "minimizer_prediction": predicted, "minimizer_rel_error": rel_error,
        **free_sum.pb3_measurements(spectra),
    }
    plotting.setup()
    return StepResult(
        measurements=measurements,
        tables={"end_points": table, "spectra": spectra_table,
                "minimizers": pd.DataFrame({"phi": phis, "lowest_minimizer_energy": lowest,
                                            # descriptive, no rule reads it: index 0 at any gradient
                                            "lowest_index0_end_point_any_gradient": [
                                                float(table[(table.phi == phi) & (table["index"] == 0)].loss.min())
                                                for phi in phis],
                                            "half_one_minus_phi_squared": predicted, "rel_error": rel_error,
                                            "critical_energy_recalled_U": theory.critical_energy_recalled(
                                                np.asarray(phis))})},
        figures={"index_energy": _plot_index_energy(table, spec, measurements),
                 "minimizer_energy": _plot_minimizers(phis, lowest, predicted, spec),
                 "spectrum": _plot_spectra(shown, spec, measurements)})


_SPECTRUM_COLUMNS = ("phi", "loss", "index_fraction", "rel_grad", "ratio", "ratio_fitted", "scale", "variance",
                     "residual_mean", "ks_free", "ks_mp", "ks_semicircle", "ks_free_fitted_ratio")


def _spectra(loss, x: np.ndarray, pts: finder.CriticalPoints, frame: pd.DataFrame, phi: float,  # type: ignore[no-untyped-def]
             spec: dict[str, Any]) -> list[dict[str, Any]]:
    """PB3 at up to ``spectrum_points`` approximate critical points of this φ, evenly spread over their
    energies: exact H, Gauss–Newton G, the free-sum prediction from G and R = H − G (``free_sum``)."""
    ok = np.flatnonzero(((frame.category != finder.DIVERGED) & (frame.rel_grad <= spec["approx_rtol"])).to_numpy())
    if not ok.size or not spec["spectrum_points"]:
        return []
    ok = ok[np.argsort(pts.loss[ok], kind="stable")]
    pick = ok[np.unique(np.linspace(0, ok.size - 1, min(spec["spectrum_points"], ok.size)).round().astype(int))]
    hs = finder.hessians(loss, pts.points[pick])
    gs = theory.gauss_newton(x, pts.points[pick])
    out = []
    for i, h, g in zip(pick, hs, gs, strict=True):
        c = free_sum.spectrum_comparison(h, g, phi, fitted_ratio=True)
        c.update(phi=phi, loss=float(pts.loss[i]), index_fraction=float(pts.index_fraction[i]),
                 rel_grad=float(pts.rel_grad[i]))
        out.append(c)
    return out


def _median_text(value: Any) -> str:
    """A PB3 median for a caption, or why there is none (too few points: marked not testable)."""
    return f"{value:.3f}" if isinstance(value, float) else "not computed (too few points)"


def _plot_index_energy(table: pd.DataFrame, spec: dict[str, Any], meas: dict[str, Any]) -> FigureOut:
    import matplotlib.pyplot as plt

    phis = list(spec["phis"])
    fig, axes = plt.subplots(1, len(phis), figsize=(4 * len(phis), 3.8), squeeze=False)
    colors = {finder.CRITICAL: "C0", finder.GRADIENT_FLAT: "C3", finder.NOT_CONVERGED: "C7", finder.DIVERGED: "k"}
    for ax, phi in zip(axes[0], phis, strict=True):
        sub = table[table.phi == phi]
        for cat, group in sub.groupby("category"):
            close = group.rel_grad <= spec["approx_rtol"]
            ax.scatter(group.loss[close], group.index_fraction[close], s=14, color=colors[str(cat)],
                       label=f"{cat}, ‖∇ε‖/(ε+1) ≤ {spec['approx_rtol']:g} ({int(close.sum())})")
            ax.scatter(group.loss[~close], group.index_fraction[~close], s=8, facecolors="none",
                       edgecolors=colors[str(cat)], alpha=0.5, label=f"{cat}, farther ({int((~close).sum())})")
        ax.set(xlabel="energy ε", ylabel="index α (fraction of negative eigenvalues)",
               title=f"φ = {phi} (m = {int(sub.m.iloc[0])})")
        ax.legend(fontsize=6)
    caption = (
        f"End points of Newton-MR (MINRES, float64, exact Hessians) on single-hidden-layer tanh nets, n = {spec['n']} "
        f"(P = {2 * spec['n'] ** 2}), random targets, {spec['starts']} starts per φ taken along Adam trajectories at "
        f"steps {spec['checkpoints']}. Of {meas['end_points']} end points, {meas['critical_points']} are critical "
        f"(‖∇ε‖/(ε+1) ≤ {finder.CRITICAL_RTOL:g}), {100 * meas['gradient_flat_fraction']:.0f}% gradient-flat; "
        f"{meas['approx_points']} are within {spec['approx_rtol']:g} (filled). Exponent of α ∝ (ε − ε_c)^γ at "
        f"φ = {spec['fit_phi']}: γ = {meas['exponent']:.2f} [{meas['exponent_low']:.2f}, {meas['exponent_high']:.2f}] "
        f"(paper: 3/2)."
    )
    return FigureOut(fig, caption)


def _plot_minimizers(phis: list[float], lowest: list[float], predicted: list[float], spec: dict[str, Any]) -> FigureOut:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4))
    grid = np.linspace(0, 1, 101)
    ax.plot(grid, theory.minimizer_energy(grid), color="k", lw=1, label="½(1 − φ)² (paper)")
    ax.plot(phis, lowest, "o", color="C0", label="lowest index-0 end point (ours)")
    ax.set(xlabel="φ = P / (m n)", ylabel="energy ε", title="Energy of minimizers")
    ax.legend(fontsize=8)
    shown = ", ".join(f"φ = {p}: {a:.3f} vs {b:.3f}" for p, a, b in zip(phis, lowest, predicted, strict=True))
    caption = (f"Lowest energy among index-0 end points with ‖∇ε‖/(ε+1) ≤ {spec['approx_rtol']:g} per φ (tanh, "
               f"n = {spec['n']}), beside the paper's ½(1 − φ)²: {shown}.")
    return FigureOut(fig, caption)


def _plot_spectra(shown: dict[float, dict[str, Any]], spec: dict[str, Any], meas: dict[str, Any]) -> FigureOut:
    import matplotlib.pyplot as plt

    phis = list(spec["phis"])
    fig, axes = plt.subplots(1, len(phis), figsize=(4 * len(phis), 3.8), squeeze=False)
    for ax, phi in zip(axes[0], phis, strict=True):
        c = shown.get(phi)
        if c is None:
            ax.set(title=f"φ = {phi}: no approximate critical point analysed")
            continue
        lam = c["eigenvalues"]
        lo = float(min(lam.min(), c["grid"][0], -2.05 * np.sqrt(c["variance"])))
        hi = float(max(np.quantile(lam, 0.97), c["grid"][-1]))  # the axis stops before the largest outliers
        beyond = int(np.sum(lam > hi))
        counts, edges = np.histogram(lam, bins=40, range=(lo, hi))
        heights = counts / (lam.size * np.diff(edges))  # a density over all P eigenvalues, outliers included
        ax.bar(edges[:-1], heights, width=np.diff(edges), align="edge", color="0.75",
               label=f"exact H ({lam.size} eigenvalues; {beyond} beyond {hi:.3g})")
        grid = np.linspace(lo, hi, 600)
        ax.plot(grid, free_sum.free_sum_density(grid, c["ratio"], c["scale"], c["variance"]), color="C0", lw=1.5,
                label=f"Wishart ⊞ Wigner, KS = {c['ks_free']:.3f}")
        ax.plot(grid, free_sum.mp_density(grid, c["ratio"], c["scale"]), "--", color="C1", lw=1,
                label=f"Wishart (MP) alone, KS = {c['ks_mp']:.3f}")
        ax.plot(grid, free_sum.semicircle_density(grid, c["variance"]), "--", color="C2", lw=1,
                label=f"Wigner alone, KS = {c['ks_semicircle']:.3f}")
        ax.set(xlabel="eigenvalue", ylabel="density",
               title=f"φ = {phi}: ε = {c['loss']:.3f}, α = {c['index_fraction']:.3f}")
        ax.set_ylim(0, 1.3 * max(1e-12, float(heights.max())))
        ax.legend(fontsize=6)
    caption = (
        f"Exact Hessian spectra at approximate critical points (‖∇ε‖/(ε+1) ≤ {spec['approx_rtol']:g}) of the tanh nets "
        f"(n = {spec['n']}), one per φ: the point with the median KS distance among the {spec['spectrum_points']} "
        f"analysed per φ; the axis ends at H's 97th percentile or the prediction's support, whichever is larger "
        f"(eigenvalues beyond it counted in the legend). Solid: the free sum of a Marchenko–Pastur law (ratio φ, "
        f"scale = mean eigenvalue of the Gauss–Newton part G) and a semicircle (variance = second spectral "
        f"moment of R = H − G), fitted to the "
        f"components, never to H; dashed: each part alone. Over all {meas['spectrum_points']} points analysed, the "
        f"median KS distance is {_median_text(meas['ks_free_median'])} for the free sum and "
        f"{_median_text(meas['ks_best_single_median'])} "
        f"for the better single part (PB3)."
    )
    return FigureOut(fig, caption)
