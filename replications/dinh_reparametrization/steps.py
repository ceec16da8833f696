"""Dinh et al. (2017) experiments: the steps ``module.py`` declares.

- ``reparametrize`` (D1–D4, D6, D7): per configured network without BatchNorm, train it to a
  minimum (shared trainer), then for every α of a log grid apply T_α to its first two layers
  (``shared.sharpness.alpha_scale``) and measure: the function on the test set (and under the
  layer-wise extension and per-filter scalings), λ_max (Lanczos) and tr ∇²L (Hutch++),
  Keskar's Metric 2.1 in the full space and a random subspace, the Euclidean-ball
  ε-sharpness (the paper's §4.2 definition, by projected gradient ascent), Kwon et al.'s
  adaptive sharpness, and two filter-normalised measures (Li et al. 2018); the 1D slice along
  the top Hessian eigenvector (width of the ε-sublevel interval); the §4.2 construction
  α = ε/‖θ₁‖ with its constant-function witness.
- ``batchnorm`` (D8, D6 under BatchNorm): per network with BatchNorm, per-filter scalings of the
  layer before the first BatchNorm (``scale_before_batchnorm``): function vs Hessian.
- ``sharp_generalizes`` (D5): small-batch (SB) and large-batch (LB) runs of one network from the
  same initial points, then T_α applied to the SB minimum until every Hessian-based and
  ε-sharpness measure calls it sharper than the LB minimum; test accuracies beside.

Losses are the mean cross-entropy over the whole training set; a network without BatchNorm has
no mode; BatchNorm nets are evaluated in the configured ``hessian.bn_mode`` (printed). Every
step prints its projected cost first (``shared.benchmarking.print_projected_cost``).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
from jax.flatten_util import ravel_pytree

from replications.dinh_reparametrization import models, theory
from shared import data, plotting, resume
from shared.benchmarking import forward_flops, print_projected_cost
from shared.curvature import apply, hutch_plus_plus, lanczos_eigs
from shared.landscape import Objective, from_model, line, random_direction
from shared.module import FigureOut, StepResult
from shared.seeds import derive
from shared.sharpness import (
    adaptive_sharpness,
    alpha_scale,
    ball_sharpness,
    hessian_of,
    keskar_sharpness,
    relative_change,
    rescale_layers,
    scale_before_batchnorm,
    scale_filters,
)
from shared.training import Arrays, fit, fit_ensemble, init_ensemble, init_network, make_optimizer, member_keys

MODULE = "dinh_reparametrization"
FIRST, SECOND = ("layers", 0), ("layers", 1)  # T_α acts on these (models.py: the same paths for every net)
NORM = ("norms", 0)
#: measures that T_α can change (the paper) and those built to be invariant (the field's answer)
NON_INVARIANT = ("lambda_max", "trace", "keskar_full", "keskar_subspace", "ball")
INVARIANT = ("fn_sharpness", "fn_curvature", "adaptive")
LABELS = {"lambda_max": "λ_max (Lanczos)", "trace": "tr ∇²L (Hutch++)", "keskar_full": "Metric 2.1, full space",
          "keskar_subspace": "Metric 2.1, random subspace", "ball": "ε-sharpness, Euclidean ball",
          "adaptive": "adaptive sharpness (ASAM)", "fn_sharpness": "filter-normalised sharpness",
          "fn_curvature": "filter-normalised curvature"}
D5_MEASURES = ("lambda_max", "trace", "keskar_full", "keskar_subspace", "ball")


def _cost(what: str, flops: float) -> None:
    print_projected_cost(MODULE, what, flops)


# --- data, networks, training ----------------------------------------------------------------------

def load_data(spec: Mapping[str, Any], cfg: Mapping[str, Any]) -> tuple[Any, Any]:
    kw: dict[str, Any] = {"data_dir": cfg["data_dir"]} if cfg.get("data_dir") else {}
    sub = spec.get("train_subset")
    train = data.load(spec["dataset"], "train", subset=sub, seed=cfg["seed"], **kw) if sub else \
        data.load(spec["dataset"], "train", **kw)
    return train, data.load(spec["dataset"], "test", **kw)


def _builder(spec: Mapping[str, Any], batch_norm: bool) -> Any:
    return models.builder(spec["model"], batch_norm, **spec.get("model_kwargs", {}))



def train_one(spec: Mapping[str, Any], cfg: Mapping[str, Any], slot: str, batch_norm: bool,
              train: Any, test: Any) -> tuple[Any, Any, Any, float]:
    """(net, params, state, forward FLOPs per example) of one network trained as ``cfg['training']``."""
    t = cfg["training"]
    key = derive(cfg["seed"], MODULE, slot, "init")
    net, p0, s0 = init_network(_builder(spec, batch_norm), key)
    fwd = forward_flops(net, p0, s0, train.x)
    n = int(train.x.shape[0])
    _cost(f"training {slot} ({t['epochs']} epochs of {n} examples, batch {t['batch']})", 3 * fwd * n * t["epochs"])
    res = fit(net, p0, s0, Arrays(train.x, train.y, test.x, test.y), optimizer=make_optimizer(t["optimizer"], t["lr"]),
              epochs=int(t["epochs"]), batch_size=int(t["batch"]), key=derive(cfg["seed"], MODULE, slot, "train"),
              eval_every=int(t["epochs"]), eval_batch_size=int(t["eval_batch"]), progress=False, desc=slot)
    return net, res.params, res.model_state, fwd


def objective(net: Any, params: Any, state: Any, x: Any, y: Any, bn_mode: str, batch: int) -> tuple[Objective, Any]:
    """(Objective, params) of the mean cross-entropy over (x, y) in BatchNorm mode ``bn_mode``."""
    return from_model(net.model(params, state, "eval"), (x, y), bn_mode=bn_mode, batch_size=batch)  # type: ignore[arg-type]


@functools.cache
def _forward_jit() -> Any:
    return jax.jit(lambda obj, p, x: obj.forward.value(p, obj.state, x))


def logits(obj: Objective, params: Any, x: jax.Array) -> np.ndarray:
    return np.asarray(_forward_jit()(obj, params, x))


@jax.jit
def _loss_jit(obj: Objective, params: Any) -> jax.Array:
    return obj(params)


def loss(obj: Objective, params: Any) -> float:
    """L(θ) (one jitted program per objective kind)."""
    return float(_loss_jit(obj, params))


# --- measures --------------------------------------------------------------------------------------

def top_eigen(obj: Objective, params: Any, key: jax.Array, steps: int) -> tuple[float, Any]:
    """(λ_max, its unit eigenvector as a pytree) by Lanczos."""
    op = hessian_of(obj, params)
    res = lanczos_eigs(op, key, k=1, num_steps=min(steps, op.size), return_vectors=True)
    _, unravel = ravel_pytree(params)
    assert res.top.eigenvectors is not None
    return float(res.top.eigenvalues[0]), unravel(res.top.eigenvectors[0])


def measures(obj: Objective, params: Any, cfg: Mapping[str, Any], key: jax.Array,
             names: tuple[str, ...] = NON_INVARIANT + INVARIANT) -> tuple[dict[str, float], Any]:
    """The sharpness measures ``names`` at ``params`` (module docstring), and the top eigenvector.

    ``lambda_max`` and ``trace`` need the Hessian (Lanczos, Hutch++); the eigenvector is None
    without ``lambda_max``. The random choices (Lanczos start, Hutch++ probes, Metric 2.1's start and subspace A, the
    filter-normalised directions) come from ``key``, the same at every point of a scan, so a
    measure's change along the orbit is the reparametrisation's alone."""
    h, s = cfg["hessian"], cfg["sharpness"]
    out: dict[str, float] = {}
    vec = None
    if "lambda_max" in names:
        out["lambda_max"], vec = top_eigen(obj, params, jax.random.fold_in(key, 0), int(h["lanczos_steps"]))
    op = hessian_of(obj, params)
    if "trace" in names:
        trace = hutch_plus_plus(op, jax.random.fold_in(key, 1), num_matvecs=int(h["hutchpp_matvecs"]))
        out["trace"] = float(trace.estimate)
    for name, dim in (("keskar_full", None), ("keskar_subspace", int(s["subspace_dim"]))):
        if name in names:
            out[name] = keskar_sharpness(obj, params, epsilon=float(s["epsilon"]), dim=dim,
                                         key=jax.random.fold_in(key, 2), maxiter=int(s["maxiter"]),
                                         on_no_progress="ignore").sharpness
    if "ball" in names:
        out["ball"] = ball_sharpness(obj, params, radius=float(s["epsilon"]), steps=int(s["ball_steps"]))
    if "adaptive" in names:
        out["adaptive"] = adaptive_sharpness(obj, params, rho=float(s["adaptive_rho"]),
                                             steps=int(s["adaptive_steps"])).value
    if "fn_sharpness" in names or "fn_curvature" in names:
        out.update(fn_measures(obj, params, s, jax.random.fold_in(key, 3), op))
    return out, vec


def fn_measures(obj: Objective, params: Any, s: Mapping[str, Any], key: jax.Array, op: Any = None) -> dict[str, float]:
    """Filter-normalised sharpness: the mean over ``fn_directions`` filter-normalised Gaussian
    directions d (Li et al. 2018 §4, biases and BatchNorm parameters zeroed) of
    max_{|s| ≤ r} L(θ + s d) − L(θ) on ``fn_points`` values of s, and of the curvature dᵀ∇²L d."""
    op = hessian_of(obj, params) if op is None else op
    loss0 = loss(obj, params)
    grid = np.linspace(-float(s["fn_radius"]), float(s["fn_radius"]), int(s["fn_points"]))
    rise, curv = [], []
    for k in range(int(s["fn_directions"])):
        d = random_direction(params, jax.random.fold_in(key, k))
        table = line(obj, params, d, grid).table
        rise.append(float(table["loss"].max()) - loss0)
        flat = ravel_pytree(d)[0]
        curv.append(float(jnp.dot(flat, apply(op, flat))))
    return {"fn_sharpness": float(np.mean(rise)), "fn_curvature": float(np.mean(curv))}


def eigen_slice(obj: Objective, params: Any, vec: Any, lam: float, cfg: Mapping[str, Any]) -> pd.DataFrame:
    """L(θ + t v) along the unit top eigenvector v, t ∈ [−r, r], r = span·√(2ε/λ_max)."""
    f = cfg["flatness"]
    r = float(f["span"]) * float(np.sqrt(2 * float(f["epsilon"]) / max(lam, 1e-30)))
    t = np.linspace(-r, r, int(f["slice_points"]))
    return line(obj, params, vec, t).table.rename(columns={"alpha": "t"})


# --- step: reparametrize (D1-D4, D6, D7) ---------------------------------------------------------

def _first_layer_norm(params: Any) -> float:
    from shared.sharpness import get_leaf

    parts = [get_leaf(params, (*FIRST, "kernel")), get_leaf(params, (*FIRST, "bias"))]
    return float(np.sqrt(sum(float(jnp.sum(jnp.square(p))) for p in parts if p is not None)))


def _zero_first_layer(params: Any) -> Any:
    from shared.sharpness import get_leaf, update_leaf

    params = update_leaf(params, (*FIRST, "kernel"), jnp.zeros_like)
    if get_leaf(params, (*FIRST, "bias")) is not None:
        params = update_leaf(params, (*FIRST, "bias"), jnp.zeros_like)
    return params


def layerwise(params: Any, n_layers: int, alpha: float) -> Any:
    """The layer-wise extension: α on every layer but the last, α^{-(K−1)} on the last (∏ = 1)."""
    scales = [alpha] * (n_layers - 1) + [alpha ** (-(n_layers - 1))]
    return rescale_layers(params, [("layers", i) for i in range(n_layers)], scales, check=False)


def _filter_exponents(params: Any, cfg: Mapping[str, Any], slot: str) -> jax.Array:
    from shared.sharpness import get_leaf

    width = get_leaf(params, (*FIRST, "kernel")).shape[-1]  # type: ignore[union-attr]
    return jax.random.uniform(derive(cfg["seed"], MODULE, slot, "filters"), (width,), minval=-1.0, maxval=1.0)


def scan_network(slot: str, spec: Mapping[str, Any], cfg: Mapping[str, Any]) -> pd.DataFrame:
    """Every measurement of one network without BatchNorm, as one long table (column ``table``:
    ``alpha`` rows, ``slice`` rows, ``construction`` rows), cached per network."""
    train, test = load_data(spec, cfg)
    net, p_trained, s_trained, fwd = train_one(spec, cfg, slot, False, train, test)
    batch = int(cfg["training"]["eval_batch"])
    obj, params = objective(net, p_trained, s_trained, train.x, train.y, "eval", batch)
    test_obj, _ = objective(net, p_trained, s_trained, test.x, test.y, "eval", batch)
    alphas = theory.alpha_grid(**cfg["alphas"])
    n_layers = models.num_layers(spec["model"], spec.get("model_kwargs", {}))
    n = int(train.x.shape[0])
    s, h = cfg["sharpness"], cfg["hessian"]
    per_point = (h["lanczos_steps"] + h["hutchpp_matvecs"] + s["fn_directions"]) * 4 + 3 * (
        2 * (s["maxiter"] + 5) + s["ball_steps"] + s["adaptive_steps"] + 2) + s["fn_directions"] * s["fn_points"]
    _cost(f"{slot}: {len(alphas)} values of α × every measure", len(alphas) * per_point * fwd * n)
    key = derive(cfg["seed"], MODULE, slot, "measures")
    base_logits = logits(test_obj, params, test.x)
    base_pred = base_logits.argmax(-1)
    yt = np.asarray(test.y)
    expo = _filter_exponents(params, cfg, slot)
    loss1 = loss(obj, params)
    rows, slices = [], []
    for a in alphas:
        p_a = alpha_scale(params, FIRST, SECOND, float(a))
        p_l = layerwise(params, n_layers, float(a))
        p_f = scale_filters(params, FIRST, SECOND, jnp.power(jnp.asarray(a, expo.dtype), expo))
        row: dict[str, Any] = {"table": "alpha", "network": slot, "alpha": float(a)}
        for tag, p in (("", p_a), ("layerwise_", p_l), ("filters_", p_f)):
            out = logits(test_obj, p, test.x)
            row[f"{tag}rel_change"] = relative_change(jnp.asarray(base_logits), jnp.asarray(out))
            row[f"{tag}flips"] = int(np.sum(out.argmax(-1) != base_pred))
        row["test_acc"] = float(np.mean(logits(test_obj, p_a, test.x).argmax(-1) == yt))
        row["train_loss"] = loss(obj, p_a)
        row["param_norm"] = float(jnp.linalg.norm(ravel_pytree(p_a)[0]))
        vals, vec = measures(obj, p_a, cfg, key)
        row.update(vals)
        row["adaptive_filters"] = adaptive_sharpness(obj, p_f, rho=float(s["adaptive_rho"]),
                                                     steps=int(s["adaptive_steps"])).value
        sl = eigen_slice(obj, p_a, vec, vals["lambda_max"], cfg)
        width, censored = theory.sublevel_width(sl["t"], sl["loss"], loss1 + float(cfg["flatness"]["epsilon"]))
        row["width"], row["width_censored"] = width, censored
        slices.append(sl.assign(table="slice", network=slot, alpha=float(a), kind="eigen"))
        d = random_direction(p_a, jax.random.fold_in(key, 99))
        fgrid = np.linspace(-1.0, 1.0, int(cfg["flatness"]["slice_points"]))
        slices.append(line(obj, p_a, d, fgrid).table.rename(columns={"alpha": "t"})
                      .assign(table="slice", network=slot, alpha=float(a), kind="filter"))
        rows.append(row)
        print(f"[{MODULE}] {slot} α = {a:.3g}: λ_max {vals['lambda_max']:.4g}, trace {vals['trace']:.4g}, "
              f"Metric 2.1 {vals['keskar_full']:.4g}, fn {vals['fn_sharpness']:.4g}, change {row['rel_change']:.2g}",
              flush=True)
    # §4.2: α = ε/‖θ₁‖ and the constant-function witness (0, α⁻¹θ₂)
    eps = float(s["epsilon"])
    a_star = eps / _first_layer_norm(params)
    p_star = alpha_scale(params, FIRST, SECOND, a_star)
    witness = _zero_first_layer(p_star)
    const = theory.best_constant_loss(np.asarray(train.y), int(train.num_classes))
    loss_star = loss(obj, p_star)
    x_star, x_w = ravel_pytree(p_star)[0], ravel_pytree(witness)[0]
    kes = keskar_sharpness(obj, p_star, epsilon=eps, key=jax.random.fold_in(key, 2), maxiter=int(s["maxiter"]),
                           on_no_progress="ignore")
    box = np.asarray(jnp.abs(x_w - x_star) <= eps * (jnp.abs(x_star) + 1) * (1 + 1e-6))
    construction = {
        "table": "construction", "network": slot, "alpha": a_star, "epsilon": eps, "train_loss": loss_star,
        "loss_trained": loss1, "best_constant_loss": const, "witness_loss": loss(obj, witness),
        "witness_distance": float(jnp.linalg.norm(x_w - x_star)), "witness_in_box": bool(box.all()),
        "bound": theory.constant_function_bound(loss_star, const),
        "witness_sharpness": theory.constant_function_bound(loss_star, loss(obj, witness)),
        "ball": ball_sharpness(obj, p_star, radius=eps, steps=int(s["ball_steps"])),
        "keskar_full": kes.sharpness,
        "test_acc": float(np.mean(logits(test_obj, p_star, test.x).argmax(-1) == yt)),
    }
    return pd.concat([pd.DataFrame(rows), pd.DataFrame([construction]), *slices], ignore_index=True)


def _part(table: pd.DataFrame, kind: str) -> pd.DataFrame:
    return table[table["table"] == kind].dropna(axis=1, how="all").drop(columns="table").reset_index(drop=True)


def invariance(frame: pd.DataFrame, names: tuple[str, ...], at: str = "alpha") -> dict[str, float]:
    """Per measure, (max − min) / |value at α = 1| over the scan (D6's statistic)."""
    ref = frame[np.isclose(frame[at], 1.0)]
    return {m: theory.relative_spread(frame[m], float(ref[m].iloc[0])) for m in names}


def reparametrize_measurements(scan: pd.DataFrame, cons: pd.DataFrame, cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The quantities D1–D4, D6, D7 read, each a list over the configured networks."""
    m: dict[str, list[Any]] = {k: [] for k in REPARAM_QUANTITIES}
    branch, level = float(cfg["slopes"]["branch_exp"]), float(cfg["slopes"]["level"])
    for slot in cfg["networks"]:
        g = scan[scan["network"] == slot].sort_values("alpha")
        c = cons[cons["network"] == slot].iloc[0]
        a = g["alpha"].to_numpy()
        one = g[np.isclose(g["alpha"], 1.0)].iloc[0]
        m["d1_rel_change"].append(float(g[["rel_change", "layerwise_rel_change", "filters_rel_change"]].max().max()))
        m["d1_flips"].append(int(g[["flips", "layerwise_flips", "filters_flips"]].sum().sum()))
        m["d1_acc_range"].append(float(g["test_acc"].max() - g["test_acc"].min()))
        up, down = a >= 10**branch * (1 - 1e-9), a <= 10 ** (-branch) * (1 + 1e-9)
        for measure in ("lambda_max", "trace"):
            hi = theory.fit_slope(a[up], g[measure].to_numpy()[up], level)
            lo = theory.fit_slope(a[down], g[measure].to_numpy()[down], level)
            m["d2_up_low"].append(hi.low)
            m["d2_up_high"].append(hi.high)
            m["d2_down_low"].append(lo.low)
            m["d2_down_high"].append(lo.high)
            m["d2_slopes"].append({"network": slot, "measure": measure, "up": dataclasses.asdict(hi),
                                   "down": dataclasses.asdict(lo)})
        lam = g["lambda_max"].to_numpy()
        m["d2_orders"].append(float(np.log10(lam.max() / lam.min())) if np.all(lam > 0) else float("nan"))
        m["d3_ball_over_bound"].append(float(c["ball"] / c["bound"]))
        m["d3_keskar_over_bound"].append(float(c["keskar_full"] / c["bound"]))
        m["d3_witness_over_bound"].append(float(c["witness_sharpness"] / c["bound"]))
        m["d3_witness_distance_over_eps"].append(float(c["witness_distance"] / c["epsilon"]))
        m["d3_witness_in_box"].append(bool(c["witness_in_box"]))
        m["d4_orbit_rel_change"].append(float(np.max(np.abs(g["train_loss"] - one["train_loss"])) /
                                              max(float(one["train_loss"]), 1e-30)))
        for end in (g.iloc[0], g.iloc[-1]):
            ratio = float(end["width"] / one["width"]) if one["width"] > 0 else float("inf")
            m["d4_width_ratio"].append(float("inf") if bool(end["width_censored"]) else ratio)
        m["d4_norm_growth"].append(float(g["param_norm"].max() / one["param_norm"]))
        inv = invariance(g, INVARIANT)
        m["d6_rel_change"] += [inv[k] for k in INVARIANT]
        non = invariance(g, NON_INVARIANT)
        m["d6_noninvariant_rel_change"] += [non[k] for k in NON_INVARIANT]
        m["d6_adaptive_filters_rel_change"].append(invariance(g, ("adaptive_filters",))["adaptive_filters"])
        sub = g["keskar_subspace"].to_numpy()
        m["d7_subspace_growth"].append(float(sub.max() / one["keskar_subspace"]) if one["keskar_subspace"] > 0
                                       else float("inf"))
    return m


REPARAM_QUANTITIES = (
    "d1_rel_change", "d1_flips", "d1_acc_range", "d2_up_low", "d2_up_high", "d2_down_low", "d2_down_high",
    "d2_slopes", "d2_orders", "d3_ball_over_bound", "d3_keskar_over_bound", "d3_witness_over_bound",
    "d3_witness_distance_over_eps", "d3_witness_in_box", "d4_orbit_rel_change", "d4_width_ratio", "d4_norm_growth",
    "d6_rel_change", "d6_noninvariant_rel_change", "d6_adaptive_filters_rel_change", "d7_subspace_growth",
)


def reparametrize(cfg: dict[str, Any]) -> StepResult:
    frames = []
    for slot, spec in cfg["networks"].items():
        frames.append(resume.chunk(f"reparametrize_{slot}", {"spec": spec, "seed": cfg["seed"], **{
            k: cfg[k] for k in ("training", "alphas", "hessian", "sharpness", "flatness")}},
            functools.partial(scan_network, slot, spec, cfg)))
    table = pd.concat(frames, ignore_index=True)
    scan, cons, slices = _part(table, "alpha"), _part(table, "construction"), _part(table, "slice")
    measurements = reparametrize_measurements(scan, cons, cfg)
    # D5 in the same process: its network has the architecture of networks[sb_lb.network], so the
    # compiled Hessian, Metric 2.1 and line programs are reused (compilation dominates at the quick scale)
    d5 = resume.chunk("sharp_generalizes", {"sb_lb": cfg["sb_lb"], "spec": cfg["networks"][cfg["sb_lb"]["network"]],
                                            "seed": cfg["seed"], **{k: cfg[k] for k in ("training", "hessian",
                                                                                        "sharpness")}},
                      lambda: sb_lb_table(cfg))
    measurements.update(sharp_generalizes_measurements(d5))
    plotting.setup()
    return StepResult(
        measurements=measurements,
        tables={"alpha_scan": scan, "construction": cons, "slices": slices, "d5_comparison": d5},
        figures={"measures_vs_alpha": _plot_measures(scan, cfg), "invariant_vs_not": _plot_invariance(scan, cfg),
                 "slices": _plot_slices(slices, scan, cfg), "sharp_generalizes": _plot_d5(d5)},
    )


# --- step: batchnorm (D8) ------------------------------------------------------------------------

def scan_bn_network(slot: str, spec: Mapping[str, Any], cfg: Mapping[str, Any]) -> pd.DataFrame:
    train, test = load_data(spec, cfg)
    net, p_trained, s_trained, fwd = train_one(spec, cfg, slot, True, train, test)
    batch, mode = int(cfg["training"]["eval_batch"]), cfg["hessian"]["bn_mode"]
    print(f"[{MODULE}] {slot}: losses and Hessians in BatchNorm mode {mode!r}; the function is compared in "
          "'eval' mode (running statistics scaled with the weights) and in 'batch_stats' mode", flush=True)
    obj, params = objective(net, p_trained, s_trained, train.x, train.y, mode, batch)
    evals = {m: objective(net, p_trained, s_trained, test.x, test.y, m, int(test.x.shape[0]))[0]
             for m in ("eval", "batch_stats")}
    scales = theory.alpha_grid(**cfg["bn_scales"])
    n = int(train.x.shape[0])
    h, s = cfg["hessian"], cfg["sharpness"]
    per_point = (h["lanczos_steps"] + h["hutchpp_matvecs"] + s["fn_directions"]) * 4 + 3 * (
        s["adaptive_steps"] + 2) + s["fn_directions"] * s["fn_points"]
    _cost(f"{slot}: {len(scales)} pre-BatchNorm scalings × the Hessian measures", len(scales) * per_point * fwd * n)
    key = derive(cfg["seed"], MODULE, slot, "measures")
    base = {m: logits(o, params, test.x) for m, o in evals.items()}
    expo = _filter_exponents(params, cfg, slot)
    rows = []
    for c in scales:
        row: dict[str, Any] = {"network": slot, "scale": float(c)}
        # per filter: c_j = c·2^u_j, so the per-filter scalings stay within a factor 2 of the grid's c (the
        # invariance holds while c_j²σ_j² ≫ BatchNorm's ε; c^u_j would reach 1/c at the grid's top)
        per_filter = c * jnp.power(jnp.asarray(2.0, expo.dtype), expo)
        for tag, cj in (("", jnp.full(expo.shape, c, expo.dtype)), ("filters_", per_filter)):
            for m, o in evals.items():
                p2, s2 = scale_before_batchnorm(params, o.state, FIRST, NORM, cj)
                out = logits(dataclasses.replace(o, state=s2), p2, test.x)
                row[f"{tag}rel_change_{m}"] = relative_change(jnp.asarray(base[m]), jnp.asarray(out))
                row[f"{tag}flips_{m}"] = int(np.sum(out.argmax(-1) != base[m].argmax(-1)))
        p_c, s_c = scale_before_batchnorm(params, obj.state, FIRST, NORM, jnp.full(expo.shape, c, expo.dtype))
        obj_c = dataclasses.replace(obj, state=s_c) if mode == "eval" else obj
        row["test_acc"] = float(np.mean(logits(dataclasses.replace(evals["eval"], state=scale_before_batchnorm(
            params, evals["eval"].state, FIRST, NORM, jnp.full(expo.shape, c, expo.dtype))[1]), p_c, test.x)
            .argmax(-1) == np.asarray(test.y)))
        vals, _ = measures(obj_c, p_c, cfg, key, names=("lambda_max", "trace") + INVARIANT)
        row.update(vals)
        rows.append(row)
        print(f"[{MODULE}] {slot} c = {c:.3g}: λ_max {vals['lambda_max']:.4g}, trace {vals['trace']:.4g}, "
              f"change (eval) {row['rel_change_eval']:.2g}", flush=True)
    return pd.DataFrame(rows)


BN_QUANTITIES = ("d8_rel_change", "d8_flips", "d8_lambda_orders", "d8_trace_orders", "d8_acc_range",
                 "d6_bn_rel_change")


def batchnorm_measurements(scan: pd.DataFrame, cfg: Mapping[str, Any]) -> dict[str, Any]:
    m: dict[str, list[Any]] = {k: [] for k in BN_QUANTITIES}
    if not cfg["bn_networks"]:
        why = {"not_testable": "no network with BatchNorm is configured at this scale"}
        return dict.fromkeys(BN_QUANTITIES, why)
    for slot in cfg["bn_networks"]:
        g = scan[scan["network"] == slot].sort_values("scale")
        m["d8_rel_change"].append(float(g[["rel_change_eval", "filters_rel_change_eval", "rel_change_batch_stats",
                                           "filters_rel_change_batch_stats"]].max().max()))
        m["d8_flips"].append(int(g[[c for c in g.columns if "flips" in c]].sum().sum()))
        for q in ("lambda_max", "trace"):
            v = g[q].to_numpy()
            m[f"d8_{'lambda' if q == 'lambda_max' else 'trace'}_orders"].append(
                float(np.log10(v.max() / v.min())) if np.all(v > 0) else float("nan"))
        m["d8_acc_range"].append(float(g["test_acc"].max() - g["test_acc"].min()))
        inv = invariance(g, INVARIANT, at="scale")
        m["d6_bn_rel_change"] += [inv[k] for k in INVARIANT]
    return m


def batchnorm(cfg: dict[str, Any]) -> StepResult:
    frames = [resume.chunk(f"batchnorm_{slot}", {"spec": spec, "seed": cfg["seed"], **{
        k: cfg[k] for k in ("training", "bn_scales", "hessian", "sharpness")}},
        functools.partial(scan_bn_network, slot, spec, cfg)) for slot, spec in cfg["bn_networks"].items()]
    scan = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["network", "scale"])
    plotting.setup()
    return StepResult(measurements=batchnorm_measurements(scan, cfg), tables={"batchnorm_scan": scan},
                      figures={"batchnorm": _plot_bn(scan, cfg)})


# --- step: sharp_generalizes (D5) ----------------------------------------------------------------

D5_QUANTITIES = ("d5_sb_test_acc", "d5_lb_test_acc", "d5_min_ratio", "d5_acc_change", "d5_alpha")


def _member(tree: Any, i: int) -> Any:
    return jax.tree_util.tree_map(lambda leaf: leaf[i], tree)


def sb_lb_table(cfg: Mapping[str, Any]) -> pd.DataFrame:
    d = cfg["sb_lb"]
    slot = d["network"]
    spec = cfg["networks"][slot]
    train, test = load_data(spec, cfg)
    seeds = list(range(int(d["seeds"])))
    build = _builder(spec, False)
    keys = member_keys(cfg["seed"], MODULE, "sb_lb", seeds=seeds)
    net, p0, s0 = init_ensemble(build, jnp.stack([jax.random.fold_in(k, 0) for k in keys]))
    n = int(train.x.shape[0])
    fwd = forward_flops(*init_network(build, keys[0]), train.x)
    alphas = [10.0**e for e in d["alpha_exps"]]
    _cost(f"sharp_generalizes ({len(seeds)} seeds, SB {d['sb_epochs']} epochs of batch {d['sb_batch']}, LB "
          f"{d['lb_epochs']} epochs of batch {d['lb_batch']}, measures at up to {len(alphas) + 2} points per seed)",
          len(seeds) * (3 * fwd * n * (d["sb_epochs"] + d["lb_epochs"]) + (len(alphas) + 2) * 200 * fwd * n))
    runs = {}
    for regime in ("sb", "lb"):
        res = fit_ensemble(net, p0, s0, Arrays(train.x, train.y, test.x, test.y),
                           optimizer=make_optimizer(d["optimizer"], d["lr"]), epochs=int(d[f"{regime}_epochs"]),
                           batch_size=int(d[f"{regime}_batch"]), keys=jnp.stack([jax.random.fold_in(k, regime == "lb")
                                                                                 for k in keys]),
                           seeds=seeds, eval_every=int(d[f"{regime}_epochs"]), progress=False, desc=regime)
        runs[regime] = res
    batch = int(cfg["training"]["eval_batch"])
    rows = []
    for i, seed in enumerate(seeds):
        key = derive(cfg["seed"], MODULE, "sb_lb", "measures", seed)
        found: dict[str, dict[str, Any]] = {}
        for regime in ("sb", "lb"):
            p, st = _member(runs[regime].params, i), _member(runs[regime].model_state, i)
            obj, params = objective(net, p, st, train.x, train.y, "eval", batch)
            tobj, _ = objective(net, p, st, test.x, test.y, "eval", batch)
            vals, _ = measures(obj, params, cfg, key, names=D5_MEASURES + ("adaptive",))
            acc = float(np.mean(logits(tobj, params, test.x).argmax(-1) == np.asarray(test.y)))
            found[regime] = {"seed": seed, "model": regime.upper(), "alpha": 1.0, "test_acc": acc,
                             "train_loss": loss(obj, params), "failed": bool(np.atleast_1d(runs[regime].failed)[i]),
                             **vals}
            if regime == "sb":
                sb = (obj, tobj, params)
        obj, tobj, params = sb
        lb = found["lb"]
        chosen = None
        for a in alphas:
            p_a = alpha_scale(params, FIRST, SECOND, a)
            vals, _ = measures(obj, p_a, cfg, key, names=D5_MEASURES + ("adaptive",))
            acc = float(np.mean(logits(tobj, p_a, test.x).argmax(-1) == np.asarray(test.y)))
            chosen = {"seed": seed, "model": "SB after T_α", "alpha": a, "test_acc": acc,
                      "train_loss": loss(obj, p_a), "failed": found["sb"]["failed"], **vals}
            if all(vals[q] > lb[q] for q in D5_MEASURES):
                break
        rows += [found["sb"], chosen, found["lb"]]
        assert chosen is not None
        print(f"[{MODULE}] sb_lb seed {seed}: test acc SB {found['sb']['test_acc']:.4f}, LB {lb['test_acc']:.4f}; "
              f"T_α with α = {chosen['alpha']:.3g}", flush=True)
    return pd.DataFrame(rows)


def sharp_generalizes_measurements(table: pd.DataFrame) -> dict[str, Any]:
    m: dict[str, list[Any]] = {k: [] for k in D5_QUANTITIES}
    for _, g in table.groupby("seed"):
        sb, sba, lb = (g[g["model"] == k].iloc[0] for k in ("SB", "SB after T_α", "LB"))
        m["d5_sb_test_acc"].append(float(sb["test_acc"]))
        m["d5_lb_test_acc"].append(float(lb["test_acc"]))
        m["d5_min_ratio"].append(float(min(sba[q] / lb[q] if lb[q] > 0 else float("inf") for q in D5_MEASURES)))
        m["d5_acc_change"].append(float(abs(sba["test_acc"] - sb["test_acc"])))
        m["d5_alpha"].append(float(sba["alpha"]))
    return m


# --- figures -----------------------------------------------------------------------------------------

def _plot_measures(scan: pd.DataFrame, cfg: Mapping[str, Any]) -> FigureOut:
    import matplotlib.pyplot as plt

    names = NON_INVARIANT + INVARIANT
    fig, axes = plt.subplots(2, 4, figsize=(16, 7), squeeze=False)
    for ax, name in zip(axes.ravel(), names, strict=True):
        acc_ax = ax.twinx()
        for k, (slot, g) in enumerate(scan.groupby("network", sort=False)):
            g = g.sort_values("alpha")
            v = g[name].to_numpy()
            ax.loglog(g["alpha"], np.where(v > 0, v, np.nan), "o-", color=f"C{k}", ms=3, label=slot)
            acc_ax.semilogx(g["alpha"], g["test_acc"], ":", color=f"C{k}", alpha=0.6)
        if name in INVARIANT:  # flat by construction: a decade either side, so rounding does not fill the axis
            mid = float(np.nanmedian(np.abs(scan[name])))
            ax.set_ylim(mid / 10, mid * 10)
        acc_ax.set_ylim(0, 1.02)
        ax.minorticks_off()  # invisible in this style and unlabelled over these decades; half the drawing time
        acc_ax.minorticks_off()
        acc_ax.set_ylabel("test accuracy (dotted)", fontsize=7)
        acc_ax.grid(False)
        ax.set_title(LABELS[name], fontsize=9)
        ax.set_xlabel("α  (T_α: αθ₁, θ₂/α)")
        ax.legend(fontsize=7, loc="upper center")
    fig.tight_layout()
    s = cfg["sharpness"]
    caption = (f"Every sharpness measure at T_α θ for α on a log grid ({len(scan['alpha'].unique())} points), log-log, "
               f"test accuracy (dotted, right axis) flat. Metric 2.1 and the Euclidean-ball ε-sharpness at ε = "
               f"{s['epsilon']} ({s['maxiter']} L-BFGS-B iterations; {s['ball_steps']} ascent steps), random subspace "
               f"p = {s['subspace_dim']}; adaptive sharpness ρ = {s['adaptive_rho']} ({s['adaptive_steps']} steps, "
               f"η = 0); filter-normalised measures over {s['fn_directions']} directions, |s| ≤ {s['fn_radius']}. "
               "Largest change of the test logits over the grid: "
               + ", ".join(f"{k} {g['rel_change'].max():.2g}" for k, g in scan.groupby("network", sort=False)) + ".")
    return FigureOut(fig, caption)


def _plot_invariance(scan: pd.DataFrame, cfg: Mapping[str, Any]) -> FigureOut:
    import matplotlib.pyplot as plt

    slots = list(dict.fromkeys(scan["network"]))
    fig, axes = plt.subplots(1, len(slots), figsize=(6 * len(slots), 4.2), squeeze=False)
    notes = []
    for ax, slot in zip(axes[0], slots, strict=True):
        g = scan[scan["network"] == slot].sort_values("alpha")
        one = g[np.isclose(g["alpha"], 1.0)].iloc[0]
        for k, name in enumerate(NON_INVARIANT + INVARIANT):
            v = g[name].to_numpy() / one[name]
            style = "-" if name in INVARIANT else "--"
            ax.loglog(g["alpha"], np.where(v > 0, v, np.nan), style, marker="o", ms=3, color=f"C{k}",
                      label=LABELS[name], lw=2.2 if name in INVARIANT else 1.2)
        ax.set_xlabel("α")
        ax.set_ylabel("measure(T_α θ) / measure(θ)")
        ax.minorticks_off()  # as in _plot_measures
        ax.set_title(slot, fontsize=9)
        ax.legend(fontsize=7)
        inv = invariance(g, INVARIANT)
        notes.append(f"{slot}: " + ", ".join(f"{LABELS[k]} {v:.2g}" for k, v in inv.items()))
    fig.tight_layout()
    caption = ("Each measure relative to its value at α = 1: the filter-normalised and adaptive measures (solid) stay "
               "at 1, the Hessian and ε-sharpness measures (dashed) move by orders of magnitude. Relative change "
               "(max − min)/value at α = 1 of the invariant ones: " + "; ".join(notes) + ".")
    return FigureOut(fig, caption)


def _plot_slices(slices: pd.DataFrame, scan: pd.DataFrame, cfg: Mapping[str, Any]) -> FigureOut:
    import matplotlib.pyplot as plt

    slot = next(iter(cfg["networks"]))
    alphas = np.sort(scan[scan["network"] == slot]["alpha"].unique())
    picks = [a for a in alphas if np.isclose(np.log10(a) % 1, 0) or np.isclose(np.log10(a) % 1, 1)]
    picks = picks[:: max(1, len(picks) // 5)]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.2))
    for k, a in enumerate(picks):
        e = slices[(slices["network"] == slot) & np.isclose(slices["alpha"], a) & (slices["kind"] == "eigen")]
        e = e.sort_values("t")
        t, v = e["t"].to_numpy(), e["loss"].to_numpy()
        base = float(v[np.abs(t).argmin()])
        even = 0.5 * (v + v[::-1]) - base  # the even part (L(t) + L(−t))/2 − L(0): the gradient's term cancels
        ax1.loglog(t[t > 0], np.maximum(even[t > 0], 1e-12), color=f"C{k}", label=f"α = {a:.3g}")
        f = slices[(slices["network"] == slot) & np.isclose(slices["alpha"], a) & (slices["kind"] == "filter")]
        ax2.plot(f["t"], f["loss"], color=f"C{k}", lw=3 - 0.4 * k, label=f"α = {a:.3g}")
    eps = cfg["flatness"]["epsilon"]
    ax1.axhline(eps, color="grey", lw=0.8, ls=":")
    ax1.set_xlabel("t (distance along the unit top eigenvector of ∇²L(T_α θ))")
    ax1.set_ylabel("[L(T_α θ + t v) + L(T_α θ − t v)]/2 − L(T_α θ)")
    ax1.legend(fontsize=7)
    ax2.set_xlabel("s (filter-normalised random direction d(T_α θ))")
    ax2.set_ylabel("L(T_α θ + s d)")
    ax2.legend(fontsize=7)
    fig.tight_layout()
    g = scan[scan["network"] == slot].sort_values("alpha")
    widths = ", ".join(f"α = {r.alpha:.3g}: {r.width:.3g}" for r in g.itertuples() if r.alpha in picks)
    caption = (f"{slot}: 1D loss slices through T_α θ. Left: along the top Hessian eigenvector (the slice's even part "
               "(L(t) + L(−t))/2 − L(0) for t > 0, log-log): "
               f"the basin narrows as T_α moves away from α = 1 while the loss at the centre does not move; width of "
               f"the interval where L < L(θ) + {eps}: {widths}. Right: along a filter-normalised direction (same seed "
               "at every α): the curves coincide (Li et al.'s normalisation undoes T_α).")
    return FigureOut(fig, caption)


def _plot_bn(scan: pd.DataFrame, cfg: Mapping[str, Any]) -> FigureOut:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4), squeeze=False)
    if not len(scan):
        return FigureOut(fig, "No network with BatchNorm configured at this scale.")
    for k, (slot, g) in enumerate(scan.groupby("network", sort=False)):
        g = g.sort_values("scale")
        axes[0][0].loglog(g["scale"], g["lambda_max"], "o-", color=f"C{k}", label=f"{slot} λ_max")
        axes[0][0].loglog(g["scale"], g["trace"], "s--", color=f"C{k}", label=f"{slot} trace")
        for name in INVARIANT:
            axes[0][1].semilogx(g["scale"], g[name] / g[np.isclose(g["scale"], 1)][name].iloc[0], "o-",
                                label=f"{slot} {LABELS[name]}")
        axes[0][2].loglog(g["scale"], np.maximum(g["rel_change_eval"], 1e-12), "o-", color=f"C{k}",
                          label=f"{slot} eval")
        axes[0][2].loglog(g["scale"], np.maximum(g["rel_change_batch_stats"], 1e-12), "s--", color=f"C{k}",
                          label=f"{slot} batch stats")
    for ax, title in zip(axes[0], ("Hessian measures", "invariant measures / value at c = 1",
                                   "relative change of the test logits"), strict=True):
        ax.set_xlabel("c (the layer before the first BatchNorm scaled by c)")
        ax.xaxis.minorticks_off()  # as in _plot_measures (c spans decades)
        ax.set_title(title, fontsize=9)
        ax.legend(fontsize=7)
    axes[0][0].yaxis.minorticks_off()  # λ_max and the trace move by decades
    fig.tight_layout()
    caption = (f"BatchNorm: the weights (and bias) of the layer before the first BatchNorm scaled by c; Hessian "
               f"measures in BatchNorm mode {cfg['hessian']['bn_mode']!r}; the function compared in eval mode "
               "(running statistics scaled with the weights) and with batch statistics. Largest logit change: "
               + ", ".join(f"{k} {g[['rel_change_eval', 'rel_change_batch_stats']].max().max():.2g}"
                           for k, g in scan.groupby("network", sort=False))
               + " (BatchNorm's ε = 1e-5 is what is not scale-invariant).")
    return FigureOut(fig, caption)


def _plot_d5(table: pd.DataFrame) -> FigureOut:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(D5_MEASURES) + 1, figsize=(3.2 * (len(D5_MEASURES) + 1), 3.6), squeeze=False)
    order = ["SB", "SB after T_α", "LB"]
    for ax, name in zip(axes[0], (*D5_MEASURES, "test_acc"), strict=True):
        for k, model in enumerate(order):
            v = table[table["model"] == model][name]
            ax.scatter(np.full(len(v), k) + np.linspace(-0.1, 0.1, len(v)), v, color=f"C{k}", s=18)
        ax.set_xticks(range(3), order, fontsize=7)
        if name != "test_acc":
            ax.set_yscale("log")
        ax.set_title(LABELS.get(name, "test accuracy"), fontsize=8)
    fig.tight_layout()
    caption = ("A sharp minimum that generalizes: per seed, the small-batch minimum (SB), the same network after T_α "
               "(α the first grid value at which every Hessian and ε-sharpness measure exceeds LB's: "
               + ", ".join(f"{a:.3g}" for a in table[table['model'] == 'SB after T_α']['alpha'])
               + ") and the large-batch minimum (LB); test accuracy on the right (T_α leaves it unchanged).")
    return FigureOut(fig, caption)
