"""Kawaguchi (2016) experiments: the steps ``module.py`` declares.

- ``critical_points`` (K2, K3): analytic critical points W_H⋯W_1 = P_{U_I} B
  distributed over the layers with identity and random mixings (and, for
  H ≥ 3, W = 0 and "two zero layers"), checked in float64: gradient, loss,
  exact Hessian, and a descent direction for every non-global one (negative
  curvature, or the explicit curve of ``theory.descent_directions``).
- ``ensembles`` (K1): ≥ 500 random inits per depth × width, trained together
  by full-batch gradient descent (``shared.training.train_ensemble``); every
  run is classified (below) and none may be a non-global minimum. A run stops
  once it is at L* or stationary; runs still descending after ``steps`` get up
  to ``extensions`` more rounds (only they).
- ``escape`` (K4, ours): steps to leave the degenerate saddle at W ≈ 0 vs
  depth and init scale.
- ``real_data`` (K1 on real data): as ``ensembles``.

The synthetic data enter in compressed form (``theory.Problem.compressed``: d_x
"examples" Rᵀ, YQ and a constant, the same loss, gradients, Hessians and Σ), as
the real data always did: a step costs d_x instead of m rows.

Run classification: ``shared.training.critical.classify_runs`` with its default
thresholds, fixed before any run and stated in the captions: *reached L** when
(L − L*)/L* ≤ 1e-6; otherwise *stationary* when ‖∇L‖/(L + 1) ≤ 1e-6, then
*saddle (negative curvature)* if the exact Hessian has λ_min < −1e-8·max|λ|,
else *saddle (escaped)* if gradient descent from a small random perturbation
(std 1e-3, ``steps`` steps) lowers the loss by more than 1e-3·(L − L*), else a
*non-global minimum candidate*. Runs neither at L* nor stationary get the same
perturbed descent: if it lowers the loss as much they are *still descending*;
if not (stalled), a PSD Hessian makes them a *non-global minimum candidate* (a
flat-bottomed minimum) and a negative eigenvalue leaves them *still descending*
(on the slope of a slow saddle). Non-finite runs are *diverged*.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pandas as pd
from flax import nnx

from replications.kawaguchi_deep_linear import theory
from shared import plotting, resume, seeds
from shared.curvature.exact import flat_hessian, inertia
from shared.models.functional import pure
from shared.models.linear import DeepLinear
from shared.module import FigureOut, StepResult
from shared.training import critical
from shared.training.critical import (
    CATEGORIES,
    ESCAPE_FRACTION,
    NEGATIVE_RTOL,
    PERTURBATION,
    REACHED_RTOL,
    RESOLVED,
    STATIONARY_RTOL,
    classify_runs,
)
from shared.training.fullbatch import train_ensemble

MODULE = "kawaguchi_deep_linear"
ESCAPE_CHECK = 1000  # escape: steps between the checks whether every run has escaped


# --- shared pieces -------------------------------------------------------------------------

def make_problem(cfg: dict[str, Any], singular_values: list[float], name: str,
                 input_condition: float = 1.0) -> theory.Problem:
    data = cfg["data"]
    rng = seeds.numpy_rng(cfg["seed"], MODULE, "data", name)
    return theory.make_problem(rng, data["d_x"], data["samples"], singular_values, data["noise"],
                               input_condition=input_condition)


def network(widths: list[int]) -> tuple[Any, Any]:
    """The model and a parameter template (its values are always replaced)."""
    return pure(DeepLinear(widths, rngs=nnx.Rngs(0), param_dtype=jnp.float64))


def half_squared_error(model, params, data):  # type: ignore[no-untyped-def]
    """L = ½ Σ_examples ‖f(x) − y‖² (rows are examples)."""
    x, y = data
    return 0.5 * jnp.sum((model(params, x) - y) ** 2)


def params_from_layers(template: Any, layers: list[np.ndarray]) -> Any:
    """Kernels are W_kᵀ (Flax acts on row vectors)."""
    out = jax.tree_util.tree_map(lambda v: v, template)
    for k, w in enumerate(layers):
        kernel = out["layers"][k]["kernel"]  # abstract in the template: replaced, not written into
        out["layers"][k]["kernel"] = kernel.replace(jax.device_put(np.ascontiguousarray(w.T)))  # (compiles nothing)
    return out


def _value_and_rel_grad(loss_fn: Any, params: Any, data: Any) -> tuple[jax.Array, jax.Array]:
    """L and ‖∇L‖/(|L| + 1) (``shared.curvature.exact.relative_gradient_norm``), one jitted call."""
    value, grads = jax.value_and_grad(loss_fn)(params, data)
    return value, optax.tree.norm(grads) / (jnp.abs(value) + 1.0)


def _loss_along(problem: theory.Problem, layers: list[np.ndarray], directions: list[np.ndarray], t: float) -> float:
    """L(Π(W_k + t D_k)) in numpy."""
    return problem.loss(theory.product([a + t * d for a, d in zip(layers, directions, strict=True)]))


def _max_gap_reached(gaps: pd.Series) -> float:
    reached = gaps[gaps <= REACHED_RTOL]
    return float(reached.max()) if len(reached) else float("nan")


def _main_problem(cfg: dict[str, Any]) -> tuple[theory.Problem, np.ndarray, tuple[jax.Array, jax.Array]]:
    """The module's data set (distinct Σ eigenvalues), its spectrum, and its rows on the device."""
    problem = make_problem(cfg, cfg["data"]["singular_values"], "main")
    return problem, problem.eigensystem()[0], (jnp.asarray(problem.x.T), jnp.asarray(problem.y.T))


def _label(index_set: tuple[int, ...]) -> str:
    return "{" + ",".join(str(i + 1) for i in index_set) + "}"


# --- K2, K3: analytic critical points --------------------------------------------------------

def critical_points(cfg: dict[str, Any]) -> StepResult:
    spec = cfg["critical_points"]
    problem, lam, data = _main_problem(cfg)
    d_x, d_y = problem.x.shape[0], problem.y.shape[0]
    rng = seeds.numpy_rng(cfg["seed"], MODULE, "mixing")
    scale = 0.5 * float(np.sum(problem.y**2))
    rows, spectra, curves = [], [], []
    for depth in spec["depths"]:
        w = spec["width"]
        widths = [d_x] + [w] * (depth - 1) + [d_y]
        p = min(w, d_y)
        loss_fn, template = _architecture(widths, 0.0)
        evaluate = jax.jit(lambda prm, loss_fn=loss_fn: _value_and_rel_grad(loss_fn, prm, data))
        hessian = jax.jit(lambda prm, loss_fn=loss_fn: flat_hessian(lambda one: loss_fn(one, data), prm))
        points: list[tuple[str, tuple[int, ...], list[np.ndarray], list[np.ndarray] | None]] = []
        for index_set in theory.index_sets(d_y, p):
            for mixing_name in ("identity", "random"):
                mixings = [np.eye(w) if mixing_name == "identity" else
                           np.linalg.qr(rng.standard_normal((w, w)))[0] @ np.diag(rng.uniform(0.5, 2, w))
                           for _ in range(depth - 1)]
                layers = theory.critical_point(problem, widths, index_set, mixings)
                points.append((mixing_name, index_set, layers, mixings))
        if depth >= 3:
            zero_two = [np.zeros((widths[k + 1], widths[k])) if k < 2 else
                        rng.standard_normal((widths[k + 1], widths[k])) for k in range(depth)]
            points.append(("two zero layers", (), zero_two, None))
        top = tuple(range(p))
        for mixing_name, index_set, layers, mixings in points:
            params = params_from_layers(template, layers)
            value, rel_grad = (float(v) for v in evaluate(params))
            h = inertia(hessian(params), rtol=NEGATIVE_RTOL)
            is_global = index_set == top and mixing_name != "two zero layers"
            order = np.nan
            if not is_global and mixings is not None and len(index_set) < p:
                j = next(q for q in range(d_y) if q not in index_set)
                directions = theory.descent_directions(problem, widths, index_set, mixings, j)
                ts = np.geomspace(1e-2, 1e-1, 7)
                drops = value - np.array(
                    [_loss_along(problem, layers, directions, t) for t in ts])
                if np.all(drops > 0):
                    order = float(np.polyfit(np.log(ts), np.log(drops), 1)[0])
                if index_set == () and mixing_name == "identity":
                    curve_ts = np.geomspace(1e-2, 0.8, 40)
                    for t in curve_ts:
                        curves.append(dict(depth=depth, t=t, decrease=value - _loss_along(
                            problem, layers, directions, t)))
            all_zero = all(not np.any(layer) for layer in layers)
            rows.append(dict(
                depth=depth, widths="-".join(map(str, widths)), p=p, index_set=_label(index_set),
                rank=len(index_set), mixing="all zero (W = 0)" if all_zero else mixing_name,
                is_global=is_global,
                loss_theory=theory.critical_loss(lam, problem.y, index_set),
                loss_measured=value,
                rel_grad_norm=rel_grad,
                hessian_min=h.min_eigenvalue, hessian_max=float(h.eigenvalues[-1]),
                hessian_max_abs=float(np.max(np.abs(h.eigenvalues))),
                n_negative=h.negative, n_zero=h.zero,
                negative_curvature=h.negative > 0, descent_order=order,
            ))
            if mixing_name in ("identity", "two zero layers"):
                spectra += [dict(depth=depth, point=f"{_label(index_set)} {mixing_name}" if not all_zero else "W = 0",
                                 eigenvalue=float(e)) for e in h.eigenvalues]
    table = pd.DataFrame(rows)
    nonglobal = table[~table.is_global]
    has_descent = nonglobal.negative_curvature | nonglobal.descent_order.notna()
    zero_rows = table[table.mixing == "all zero (W = 0)"]
    deep_zero = zero_rows[zero_rows.depth >= 3]
    measurements = {
        "spectrum": lam.tolist(),
        "n_critical_points": len(table),
        "max_rel_grad_norm": float(table.rel_grad_norm.max()),
        "max_rel_loss_error": float(
            ((table.loss_measured - table.loss_theory).abs() / scale)[table.mixing != "two zero layers"].max()),
        "nonglobal_without_descent": int((~has_descent).sum()),
        "global_points_with_negative_curvature": int(table[table.is_global].negative_curvature.sum()),
        "h2_saddles_without_negative_curvature": int((~nonglobal[nonglobal.depth == 2].negative_curvature).sum())
        if (nonglobal.depth == 2).any() else {"not_testable": "H = 2 not in critical_points.depths"},
        "deep_saddles_without_negative_curvature": int((~nonglobal[nonglobal.depth >= 3].negative_curvature).sum())
        if (nonglobal.depth >= 3).any() else {"not_testable": "no H >= 3 in critical_points.depths"},
        **deep_psd_saddle_evidence(table),
        "deep_zero_point_max_abs_hessian": deep_zero.hessian_max_abs.tolist()
        if len(deep_zero) else {"not_testable": "no H >= 3 in critical_points.depths"},
        "deep_zero_point_descent_order_error": float((deep_zero.descent_order - deep_zero.depth).abs().max())
        if len(deep_zero) else {"not_testable": "no H >= 3 in critical_points.depths"},
        "h2_zero_point_min_eigenvalue": float(zero_rows[zero_rows.depth == 2].hessian_min.min())
        if (zero_rows.depth == 2).any() else {"not_testable": "H = 2 not in critical_points.depths"},
    }
    plotting.setup()
    return StepResult(
        measurements=measurements,
        tables={"critical_points": table},
        figures={"hessian_spectra": _plot_spectra(pd.DataFrame(spectra), table),
                 "descent_curves": _plot_descent_curves(pd.DataFrame(curves))},
    )


ORDER_ATOL = 0.05  # |fitted descent order − H| at or below: descent at order H (declared before the runs)


def deep_psd_saddle_evidence(table: pd.DataFrame) -> dict[str, Any]:
    """K3-deep off the construction: non-global critical points at H >= 3 with I ≠ ∅ (not W = 0,
    not the 'two zero layers' points, whose zero Hessian blocks follow from the construction)
    whose exact Hessian has no negative eigenvalue, yet the loss falls along the explicit curve at
    order H (|fitted order − H| <= ``ORDER_ATOL``): saddles that second-order tests cannot see
    (Thm 2.3 (iv), Cor. 2.4). Whether the Hessian there is PSD is measured, not constructed."""
    candidates = table[(table.depth >= 3) & ~table.is_global & (table.index_set != "{}")
                       & table.mixing.isin(["identity", "random"])]
    if candidates.empty:
        return {"deep_psd_saddles_off_construction": {"not_testable": "no H >= 3 point with I ≠ ∅"},
                "deep_psd_saddle_descent_orders": {"not_testable": "no H >= 3 point with I ≠ ∅"}}
    psd = candidates[candidates.n_negative == 0]
    shown = psd[(psd.descent_order - psd.depth).abs() <= ORDER_ATOL]
    return {
        "deep_psd_saddles_off_construction": len(shown),
        "deep_psd_saddle_descent_orders": [
            {"H": int(r.depth), "I": r.index_set, "mixing": r.mixing, "order": None if np.isnan(r.descent_order)
             else round(float(r.descent_order), 4)} for r in psd.itertuples()],
    }


def _plot_spectra(spectra: pd.DataFrame, table: pd.DataFrame) -> FigureOut:
    import matplotlib.pyplot as plt
    import seaborn as sns

    depths = sorted(spectra.depth.unique())
    fig, axes = plt.subplots(1, len(depths), figsize=(4.6 * len(depths), 4.4), squeeze=False, sharey=True)
    for ax, depth in zip(axes[0], depths, strict=True):
        sub = spectra[spectra.depth == depth]
        sns.stripplot(data=sub, y="point", x="eigenvalue", ax=ax, size=3, jitter=0.2, color="#4c72b0")
        ax.set_xscale("symlog", linthresh=1e-3)
        ax.axvline(0, color="#c62828", lw=0.8)
        ax.set(title=f"H = {depth}", xlabel="Hessian eigenvalue (symlog)", ylabel="")
    zero = table[table.mixing == "all zero (W = 0)"]
    psd = table[(table.depth >= 3) & ~table.is_global & (table.index_set != "{}")
                & table.mixing.isin(["identity", "random"]) & (table.n_negative == 0)]
    psd_text = ", ".join(sorted({f"H={r.depth} I={r.index_set}" for r in psd.itertuples()})) or "none"
    text = "; ".join(
        f"H={r.depth}: max|∇²L(0)| = {r.hessian_max_abs:.2g}, λ_min = {r.hessian_min:.3g}"
        for r in zero.itertuples()
    )
    caption = (
        "Exact Hessian spectra (float64, jax.hessian) at the analytic critical points "
        "W_H⋯W_1 = P_{U_I} B with identity mixing, at W = 0 and at 'two zero layers' points, per depth "
        f"(hidden width {table.p.iloc[0]}). At W = 0: {text}. Non-global points: "
        f"{int((~table.is_global).sum())}, of which {int((~table.is_global & table.negative_curvature).sum())} "
        "have a negative eigenvalue. Non-global points with I ≠ ∅ at H ≥ 3 whose Hessian is positive "
        f"semi-definite (K3-deep's evidence; the loss falls along the explicit curve at order H): {psd_text}."
    )
    return FigureOut(fig, caption)


def _plot_descent_curves(curves: pd.DataFrame) -> FigureOut:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.5))
    for depth, sub in curves.groupby("depth"):
        ok = sub[sub.decrease > 0]
        ax.loglog(ok.t, ok.decrease, label=f"H = {depth}")
        t0 = ok.t.iloc[0]
        ax.loglog(ok.t, ok.decrease.iloc[0] * (ok.t / t0) ** depth, ls=":", color="grey", lw=0.8)
    ax.set(xlabel="t (curve parameter)", ylabel="L(0) − L(curve(t))",
           title="Descent from W = 0 along Π(t·D_k) = t^H u₁u₁ᵀB")
    ax.legend()
    caption = (
        "Loss decrease along the explicit curve W_k = t·D_k from W = 0 (theory: L(0) − L = λ₁t^H − "
        "½λ₁t^{2H}); dotted lines have slope H. For H ≥ 3 the Hessian at 0 is zero, yet the loss "
        "decreases at order H: a saddle without negative curvature."
    )
    return FigureOut(fig, caption)


# --- K1: random initializations ----------------------------------------------------------------

def _configurations(ens: dict[str, Any], d_x: int, d_y: int) -> list[tuple[str, int, list[int]]]:
    """(width class, depth, widths) for every configuration of an ensemble spec."""
    out = []
    for depth in ens["depths"]:
        for name, w in ens["widths"].items():
            out.append((name, depth, [d_x] + [w] * (depth - 1) + [d_y]))
        if depth >= 3 and ens.get("bottleneck"):
            b = ens["bottleneck"]
            hidden = [b["wide"]] * (depth - 1)
            hidden[(depth - 1) // 2] = b["narrow"]
            out.append(("bottleneck", depth, [d_x, *hidden, d_y]))
    return out


def _architecture(widths: list[int], offset: float) -> tuple[Any, Any]:
    """The loss L(params, data) of one architecture and an abstract parameter template (shapes
    and dtypes: nothing is initialised or compiled). One loss object per configuration, so that
    training, the classifier's evaluation, Hessians and escape test share their compiled code."""
    model, template = pure(nnx.eval_shape(lambda: DeepLinear(widths, rngs=nnx.Rngs(0), param_dtype=jnp.float64)))
    return (lambda prm, d: half_squared_error(model, prm, d) + offset), template


def _gaussian_init(template: Any, rng: np.random.Generator, count: int, scale: float) -> Any:
    """``count`` draws of every kernel, entries N(0, scale²/fan_in) with fan_in the kernel's first
    axis (the init of ``gaussian_ensemble(..., fan_in=True)``), from a NumPy generator: no
    random-number kernel to compile per shape."""
    leaves, treedef = jax.tree_util.tree_flatten(template)
    draws = [scale / np.sqrt(leaf.shape[0]) * rng.standard_normal((count, *leaf.shape)) for leaf in leaves]
    return jax.device_put(jax.tree_util.tree_unflatten(treedef, [d.astype(leaf.dtype) for d, leaf in
                                                                 zip(draws, leaves, strict=True)]))


def _ensemble_runs(cfg: dict[str, Any], ens: dict[str, Any], problem: theory.Problem, data_name: str,
                   width_name: str, depth: int, widths: list[int]) -> pd.DataFrame:
    """Train and classify every run of one configuration (one resumable chunk).

    All runs train together (``train_ensemble``); a run stops once it is at L* or stationary
    (checked every ``steps // 10`` steps), and runs still descending after ``steps`` get up to
    ``extensions`` more rounds, only they. Then ``classify_runs``."""
    lam, _ = problem.eigensystem()
    data = (jnp.asarray(problem.x.T), jnp.asarray(problem.y.T))
    loss_fn, template = _architecture(widths, problem.offset)
    p = min(widths[1:-1])
    optimum = theory.global_min(lam, problem.y, p, problem.offset)
    key = seeds.derive(cfg["seed"], MODULE, "ensembles", data_name, width_name, depth)
    init = _gaussian_init(template, seeds.numpy_rng(cfg["seed"], MODULE, "ensembles", data_name, width_name, depth),
                          ens["runs"], ens["init_scale"])
    check = max(1, ens["steps"] // 10)
    run = train_ensemble(loss_fn, init, data, critical.gradient_descent(ens["lr"]), ens["steps"],
                         log_every=check, chunk_steps=check, until=critical.settled(optimum),
                         extensions=ens["extensions"], extend_rtol=STATIONARY_RTOL, desc=f"H={depth} {width_name}")
    out = classify_runs(loss_fn, run.params, data, optimum, key=jax.random.fold_in(key, 1), lr=ens["lr"],
                        escape_steps=ens["steps"], failed=run.failed)
    return pd.DataFrame(dict(
        data=data_name, depth=depth, width=width_name, widths="-".join(map(str, widths)), p=p,
        run=np.arange(ens["runs"]), final_loss=out.final_loss, global_loss=optimum,
        rel_gap=out.rel_gap, grad_norm=run.grad_norm, steps=run.steps_taken, hessian_min=out.hessian_min,
        escape_drop=out.escape_drop, category=out.category,
    ))


def _ensemble_table(cfg: dict[str, Any], ens: dict[str, Any], problem: theory.Problem, data_name: str,
                    configs: list[tuple[str, int, list[int]]]) -> pd.DataFrame:
    """Every configuration's runs, each configuration a resumable chunk."""
    frames = []
    for width_name, depth, widths in configs:
        spec = dict(seed=cfg["seed"], data=cfg["data"], data_name=data_name, width=width_name, depth=depth,
                    widths=widths, fingerprint=theory_fingerprint(problem),
                    ensembles={k: v for k, v in ens.items() if k not in ("depths", "widths", "bottleneck")})
        frames.append(resume.chunk(
            f"{data_name}-H{depth}-{width_name}", spec,
            lambda width_name=width_name, depth=depth, widths=widths:
            _ensemble_runs(cfg, ens, problem, data_name, width_name, depth, widths),
        ))
    return pd.concat(frames, ignore_index=True)


def theory_fingerprint(problem: theory.Problem) -> str:
    """A short hash of the data, so a resumed chunk never pairs with other data."""
    import hashlib

    digest = hashlib.sha256(np.ascontiguousarray(problem.x).tobytes() + np.ascontiguousarray(problem.y).tobytes())
    return digest.hexdigest()[:16]


def _summary(table: pd.DataFrame) -> pd.DataFrame:
    """Per configuration: runs, the count in every class, the unresolved count (still descending
    or diverged: evidence neither way) and the resolved fraction K1's rule reads."""
    summary = (table.groupby(["data", "depth", "width", "widths"], sort=False)
               .agg(runs=("run", "size"),
                    **{c: ("category", lambda s, c=c: int((s == c).sum())) for c in CATEGORIES},
                    max_gap_reached=("rel_gap", _max_gap_reached))
               .reset_index())
    resolved = summary[list(RESOLVED)].sum(axis=1)
    return summary.assign(unresolved=summary.runs - resolved, resolved_fraction=resolved / summary.runs)


def min_config_resolved_fraction(summary: pd.DataFrame) -> float:
    """K1's evidence rule: the smallest resolved fraction over configurations (a pooled fraction
    would let one badly resolved configuration hide among well-resolved ones)."""
    return float(summary.resolved_fraction.min())


def unresolved_text(summary: pd.DataFrame) -> str:
    """Per-configuration unresolved counts for a caption ('none' when every run is resolved)."""
    rows = summary[summary.unresolved > 0]
    return ", ".join(f"H={r.depth} {r.width} {r.unresolved}/{r.runs}" for r in rows.itertuples()) or "none"


def classifier_text(lr: float, escape_steps: int) -> str:
    """The run classifier's thresholds (``shared.training.critical``), for the captions."""
    return (
        f"Classes (thresholds fixed before any run): reached L* when (L − L*)/L* ≤ {REACHED_RTOL:g}; stationary "
        f"when ‖∇L‖/(L + 1) ≤ {STATIONARY_RTOL:g}, then a strict saddle if λ_min(∇²L) < −{NEGATIVE_RTOL:g}·max|λ|, "
        f"else the escape test: every parameter perturbed by N(0, {PERTURBATION:g}²), {escape_steps} GD steps at lr "
        f"{lr}; the run moved if the loss fell by > {ESCAPE_FRACTION:g}·(L − L*) (a stationary run that moved is a "
        "saddle (escaped), one that did not a non-global minimum candidate; a non-stationary run that moved is "
        "still descending, one that stalled is a candidate if its Hessian is PSD). Unresolved = still descending "
        "or diverged: counted as evidence neither way."
    )


def ensembles(cfg: dict[str, Any]) -> StepResult:
    ens = cfg["ensembles"]
    frames = []
    generic = cfg["generic_inputs"]
    datasets = [("main", cfg["data"]["singular_values"], 1.0),
                ("generic", cfg["data"]["singular_values"], generic["condition"]),
                ("degenerate", cfg["degenerate_singular_values"], 1.0)]
    for data_name, singular_values, condition in datasets:
        # same loss, d_x rows (for generic inputs too: Rᵀ of Xᵀ = QR carries XXᵀ = RᵀR)
        problem = make_problem(cfg, singular_values, data_name, input_condition=condition).compressed()
        configs = _configurations(ens, problem.x.shape[0], problem.y.shape[0])
        if data_name == "degenerate":  # one configuration per depth class, outside the theorem
            configs = [c for c in configs if c[0] == "equal" and c[1] in (2, 3)]
        if data_name == "generic":
            configs = [c for c in configs if c[1] in generic["depths"]]
        frames.append(_ensemble_table(cfg, ens, problem, data_name, configs))
    table = pd.concat(frames, ignore_index=True)
    summary = _summary(table)
    main = table[table.data == "main"]
    degenerate = table[table.data == "degenerate"]
    generic_runs = table[table.data == "generic"]
    resolved = main.category.isin(RESOLVED)
    measurements = {
        "ensemble_runs": len(main),
        "ensemble_min_runs_per_config": int(main.groupby(["depth", "width"]).size().min()),
        "nonglobal_minima": int((main.category == "non-global minimum candidate").sum()),
        "resolved_fraction": float(resolved.mean()),
        "min_config_resolved_fraction": min_config_resolved_fraction(summary[summary.data == "main"]),
        "generic_runs": len(generic_runs),
        "generic_nonglobal_minima": int((generic_runs.category == "non-global minimum candidate").sum()),
        "generic_min_config_resolved_fraction": min_config_resolved_fraction(summary[summary.data == "generic"]),
        "reached_fraction": float((main.category == "reached L*").mean()),
        "diverged_runs": int((main.category == "diverged").sum()),
        "degenerate_nonglobal_minima": int((degenerate.category == "non-global minimum candidate").sum()),
        "degenerate_reached_fraction": float((degenerate.category == "reached L*").mean()),
    }
    plotting.setup()
    return StepResult(measurements=measurements,
                      tables={"ensemble_runs": table, "ensemble_summary": summary},
                      figures={"ensemble_gaps": _plot_gaps(table, summary, cfg)})


def real_problem(cfg: dict[str, Any]) -> tuple[theory.Problem, str]:
    """Real inputs → one-hot targets: PCA-whitened images, X and Y divided by √m (so XXᵀ ≈ I
    and the loss is half the per-example mean), compressed to d_x examples (``Problem.compressed``).
    Whitening is an invertible linear map of the inputs, absorbed by W_1: it changes no critical
    point's nature."""
    from shared import data as datasets

    spec = cfg["real_data"]
    train = datasets.load(spec["dataset"], "train", dtype=jnp.float64, data_dir=cfg.get("data_dir"),
                          preprocessing=["flatten", {"pca": {"num_components": spec["pca"], "whiten": True}}])
    x = np.asarray(train.x, dtype=np.float64)
    labels = np.asarray(train.y)
    m = x.shape[0]
    y = np.eye(int(train.num_classes or labels.max() + 1))[labels]
    problem = theory.Problem(x=x.T / np.sqrt(m), y=y.T / np.sqrt(m)).compressed()
    return problem, f"{train.title} (training split, m = {m:,}), PCA-whitened to {spec['pca']} dims, one-hot targets"


def real_data(cfg: dict[str, Any]) -> StepResult:
    """K1 on real data (the paper scale's 'real data set'; digits at the quick scale)."""
    spec = cfg["real_data"]
    problem, description = real_problem(cfg)
    lam, _ = problem.eigensystem()
    configs = _configurations(spec, problem.x.shape[0], problem.y.shape[0])
    table = _ensemble_table(cfg, spec, problem, spec["dataset"], configs)
    summary = _summary(table)
    resolved = table.category.isin(RESOLVED)
    gaps = np.diff(lam[::-1])
    measurements = {
        "real_runs": len(table),
        "real_nonglobal_minima": int((table.category == "non-global minimum candidate").sum()),
        "real_resolved_fraction": float(resolved.mean()),
        "real_min_config_resolved_fraction": min_config_resolved_fraction(summary),
        "real_sigma_min_relative_gap": float(gaps.min() / lam.max()),
    }
    plotting.setup()
    counts = summary[list(CATEGORIES)].sum()
    fig = _plot_gap_panels(table, "width")
    caption = (
        f"Final relative gap to L* on real data: {description}; d_y = {problem.y.shape[0]}, "
        f"{spec['runs']} inits per depth and width, full-batch GD (lr {spec['lr']}, {spec['steps']} steps + up to "
        f"{spec['extensions']} extensions; each kernel entry N(0, σ²/fan_in), σ = {spec['init_scale']}). Σ's "
        f"eigenvalues are distinct (smallest gap {gaps.min() / lam.max():.1e} of λ_max). All runs: "
        + ", ".join(f"{int(v)} {k}" for k, v in counts.items())
        + f". Unresolved per configuration: {unresolved_text(summary)}. "
        + classifier_text(spec["lr"], spec["steps"])
    )
    return StepResult(measurements=measurements,
                      tables={"real_data_runs": table, "real_data_summary": summary},
                      figures={"real_data_gaps": FigureOut(fig, caption)})


def _plot_gap_panels(table: pd.DataFrame, hue: str) -> Any:
    import matplotlib.pyplot as plt
    import seaborn as sns

    table = table.assign(**{"log10 gap": np.log10(np.clip(table.rel_gap, 1e-16, None))})
    depths = sorted(table.depth.unique())
    fig, axes = plt.subplots(1, len(depths), figsize=(3.6 * len(depths), 3.8), sharey=True, squeeze=False)
    for ax, depth in zip(axes[0], depths, strict=True):
        sns.histplot(data=table[table.depth == depth], x="log10 gap", hue=hue, ax=ax, bins=40,
                     binrange=(-16, 1), element="step", fill=False)
        ax.axvline(np.log10(REACHED_RTOL), color="grey", ls="--", lw=0.8)
        ax.set(title=f"H = {depth}", xlabel="log10 (L − L*)/L*")
    return fig


def _plot_gaps(table: pd.DataFrame, summary: pd.DataFrame, cfg: dict[str, Any]) -> FigureOut:
    fig = _plot_gap_panels(table[table.data == "main"], "width")
    ens = cfg["ensembles"]

    def counts(data: str) -> str:
        return ", ".join(f"{int(v)} {k}" for k, v in summary[summary.data == data][list(CATEGORIES)].sum().items())

    caption = (
        f"Final relative gap to the closed-form global minimum L* for {ens['runs']} random inits per depth and "
        f"width (d_x = {cfg['data']['d_x']}, d_y = {len(cfg['data']['singular_values'])}; each kernel entry "
        f"N(0, σ²/fan_in), σ = {ens['init_scale']}; full-batch GD, lr {ens['lr']}, {ens['steps']} steps + up to "
        f"{ens['extensions']} extensions of {ens['steps']} steps for runs still descending, a run stopped once at "
        "L* or stationary, all runs of a configuration vmapped). Panels: the whitened data (XXᵀ = I); the "
        f"generic-input data (XXᵀ with condition number {cfg['generic_inputs']['condition'] ** 2:g}, depths "
        f"{cfg['generic_inputs']['depths']}) are counted below. Dashed: the 1e-6 threshold for 'reached L*'. "
        "Whitened inputs: "
        f"{counts('main')}; unresolved per configuration: {unresolved_text(summary[summary.data == 'main'])}. "
        f"Generic inputs: {counts('generic')}; unresolved: {unresolved_text(summary[summary.data == 'generic'])}. "
        f"Degenerate data (repeated eigenvalue of Σ, outside the theorem): {counts('degenerate')}. "
        + classifier_text(ens["lr"], ens["steps"])
    )
    return FigureOut(fig, caption)


# --- K4: escape from the degenerate saddle at 0 -------------------------------------------------

def layer_scale(end_to_end: float, depth: int) -> float:
    """The per-layer σ that gives the end-to-end map W_H⋯W_1 the scale ``end_to_end`` at init.

    With every entry of W_k drawn N(0, σ²/d_{k−1}), E‖W_H⋯W_1 x‖² = σ^{2H}·(d_H/d_0)·‖x‖² for any
    hidden widths, so σ = s^{1/H} fixes the end-to-end gain at s·√(d_y/d_x) for every depth: K4
    then compares depths at the same distance from the saddle at 0 in function space (a fixed
    per-layer σ would start the product at σ^H, closer to 0 the deeper the net, which alone makes
    deeper nets slower)."""
    return float(end_to_end ** (1.0 / depth))


def _escape_runs(cfg: dict[str, Any], loss_fn: Any, template: Any, data: Any, threshold: float,
                 depth: int, scale: float, log_every: int) -> pd.DataFrame:
    """Steps until the loss first falls below ``threshold``, for every run at one (H, s), s the
    end-to-end scale at init (``layer_scale``). The ensemble stops once every run is below it
    (checked every ``ESCAPE_CHECK`` steps): later steps cannot change a first crossing."""
    spec = cfg["escape"]
    init = _gaussian_init(template, seeds.numpy_rng(cfg["seed"], MODULE, "escape", depth, str(scale)),
                          spec["runs"], layer_scale(scale, depth))
    run = train_ensemble(loss_fn, init, data, critical.gradient_descent(spec["lr"]), spec["max_steps"],
                         log_every=log_every, chunk_steps=max(log_every, ESCAPE_CHECK),
                         until=lambda loss, grad_norm: loss <= threshold, desc=f"escape H={depth} σ={scale}")
    below = run.loss_history <= threshold
    first = np.where(below.any(axis=1), below.argmax(axis=1), -1)
    return pd.DataFrame(dict(
        depth=depth, end_to_end_scale=scale, layer_scale=layer_scale(scale, depth), run=np.arange(spec["runs"]),
        escape_step=[float(run.log_steps[f]) if f >= 0 else np.nan for f in first],
        escaped=first >= 0, diverged=run.failed,
    ))


def escape(cfg: dict[str, Any]) -> StepResult:
    spec = cfg["escape"]
    problem = make_problem(cfg, cfg["data"]["singular_values"], "main").compressed()  # same loss, d_x rows
    lam, _ = problem.eigensystem()
    data = (jnp.asarray(problem.x.T), jnp.asarray(problem.y.T))
    d_x, d_y = problem.x.shape[0], problem.y.shape[0]
    loss_zero = problem.half_y_norm2
    frames = []
    log_every = max(1, spec["max_steps"] // 20000)  # the first crossing to within a step (0.005% of the budget)
    for depth in spec["depths"]:
        widths = [d_x] + [d_y] * (depth - 1) + [d_y]
        loss_fn, template = _architecture(widths, problem.offset)  # one per depth: compiled once for every σ
        optimum = theory.global_min(lam, problem.y, d_y, problem.offset)
        threshold = loss_zero - 0.5 * (loss_zero - optimum)
        for scale in spec["end_to_end_scales"]:
            chunk_spec = dict(seed=cfg["seed"], data=cfg["data"], depth=depth, scale=scale,
                              **{k: v for k, v in spec.items() if k not in ("depths", "end_to_end_scales")})
            frames.append(resume.chunk(
                f"H{depth}-{scale}", chunk_spec,
                lambda loss_fn=loss_fn, template=template, threshold=threshold, depth=depth, scale=scale:
                _escape_runs(cfg, loss_fn, template, data, threshold, depth, scale, log_every),
            ))
    table = pd.concat(frames, ignore_index=True)
    smallest = min(spec["end_to_end_scales"])
    # censored runs (never escaped) count as max_steps: a median they reach is a lower bound
    filled = table.assign(escape_step=table.escape_step.fillna(spec["max_steps"]))
    at_smallest = filled[filled.end_to_end_scale == smallest].groupby("depth")
    medians = at_smallest.escape_step.median()
    censored = at_smallest.escaped.apply(lambda escaped: bool((~escaped).sum() >= len(escaped) / 2))
    measurements = {
        "escape_depths": [int(d) for d in medians.index],
        "escape_median_steps_smallest_init": [float(v) for v in medians.values],
        "escape_median_is_lower_bound": [bool(censored[d]) for d in medians.index],
        "escape_censored_runs": int((~table.escaped).sum()),
    }
    plotting.setup()
    return StepResult(measurements=measurements, tables={"escape": table},
                      figures={"escape": _plot_escape(filled, spec)})


def _plot_escape(table: pd.DataFrame, spec: dict[str, Any]) -> FigureOut:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.5))
    med = table.groupby(["depth", "end_to_end_scale"]).agg(
        escape_step=("escape_step", "median"), censored=("escaped", lambda e: (~e).sum() >= len(e) / 2)).reset_index()
    for depth, sub in med.groupby("depth"):
        ax.loglog(sub.end_to_end_scale, sub.escape_step, marker="o", label=f"H = {depth}")
    ax.axhline(spec["max_steps"], color="grey", ls=":", lw=0.8)
    ax.set(xlabel="end-to-end scale s at init (layer std s^(1/H)/√fan_in)", ylabel="median steps to halve L(0) − L*",
           title="Escape from the saddle at W = 0")
    ax.legend()
    smallest = med[med.end_to_end_scale == med.end_to_end_scale.min()]
    caption = (
        f"Full-batch GD (lr {spec['lr']}) from small random inits, {spec['runs']} runs per point, hidden "
        "widths = d_y; every depth starts at the same end-to-end scale s (each layer N(0, s^(2/H)/fan_in), so "
        "E‖W_H⋯W_1 x‖² = s²·(d_y/d_x)·‖x‖² for every H): steps until the loss first falls halfway from L(0) "
        f"to L*. Median at s = {smallest.end_to_end_scale.iloc[0]}: "
        + ", ".join(f"H={int(r.depth)}: {'≥ ' if r.censored else ''}{r.escape_step:.0f}" for r in smallest.itertuples())
        + f". Runs that never escaped within {spec['max_steps']} steps count as {spec['max_steps']} "
        "(dotted line): a median marked ≥ is a censored lower bound."
    )
    return FigureOut(fig, caption)
