"""Keskar et al. (2017) experiments: the steps ``module.py`` declares.

- ``minima`` (KS1–KS4, KS7, Hessian measures): per network slot (F1, C1–C4; the quick scale
  fills F1 and C1 with small analogues on MNIST-1D), ``seeds`` SB and LB runs of Adam from
  the same initial point per seed (the official Keras code's shared ``x0.h5``), each regime's
  runs trained together (``vmap``) until its training loss stops improving
  (``theory.stopping_update``). At every minimum: train/test accuracy (Table 2), Metric 2.1
  in the full space and a random 100-dim subspace at ε ∈ {1e-3, 5e-4} (Tables 3–4,
  ``shared.sharpness.keskar``), the top Hessian eigenvalue (Lanczos) and the trace (Hutch++)
  of the training loss; per seed pair the parametric plot f(αx_ℓ + (1 − α)x_s) (Figure 3)
  and the distance ratio ‖x_s − x₀‖/‖x_ℓ − x₀‖ (§3); the test accuracy per epoch (Figure 2).
- ``batch_size`` (KS5, Figure 4): test accuracy and sharpness vs batch size, one network.
- ``warm_start`` (KS6, Figure 5): SB for a few epochs, then LB from those iterates.

Losses, Hessians and sharpness are evaluated in the configured BatchNorm mode (``bn_mode``:
``eval``, running averages, by default; the authors' Keras ``mode=2`` used batch statistics,
``batch_stats``), dropout off. Every step prints its projected cost first.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
from jax.flatten_util import ravel_pytree

from replications.keskar_large_batch import models, theory
from shared import data, plotting, resume
from shared.benchmarking import forward_flops, print_projected_cost
from shared.curvature import hessian_operator, hutch_plus_plus, lanczos_eigs
from shared.landscape import from_model
from shared.module import FigureOut, StepResult
from shared.sharpness.keskar import keskar_sharpness, random_subspace
from shared.training import (
    Network,
    init_network,
    init_train_state,
    make_ensemble_evaluator,
    make_evaluator,
    make_optimizer,
    member_key,
)
from shared.training.loops import build_epoch_runner
from shared.training.losses import cross_entropy

MODULE = "keskar_large_batch"
SLOTS = ("f1", "c1", "c2", "c3", "c4")  # F2 (TIMIT) is never run: theory.F2_NOT_TESTABLE
CELLS = (("full", 1e-3), ("full", 5e-4), ("subspace", 1e-3), ("subspace", 5e-4))


def cell_name(space: str, eps: float) -> str:
    """``full_1e3`` for (full, 1e-3), ``subspace_5e4`` for (subspace, 5e-4)."""
    mantissa, exponent = f"{eps:.0e}".split("e")
    return f"{space}_{mantissa}e{abs(int(exponent))}"


def _projected_cost(what: str, flops: float) -> None:
    print_projected_cost(MODULE, what, flops)


# --- data and networks ---------------------------------------------------------------------------

def load_data(spec: Mapping[str, Any], cfg: Mapping[str, Any]) -> tuple[Any, Any, str]:
    """(train, test, title) of a network's data set, optionally a seeded training subset."""
    kw: dict[str, Any] = {}
    if cfg.get("data_dir"):
        kw["data_dir"] = cfg["data_dir"]
    sub = spec.get("train_subset")
    train = data.load(spec["dataset"], "train", subset=sub, seed=cfg["seed"], **kw) if sub else \
        data.load(spec["dataset"], "train", **kw)
    test = data.load(spec["dataset"], "test", **kw)
    return train, test, train.title



def member(tree: Any, i: int) -> Any:
    return jax.tree_util.tree_map(lambda leaf: leaf[i], tree)


def stack_trees(trees: list[Any]) -> Any:
    return jax.tree_util.tree_map(lambda *leaves: jnp.stack(leaves), *trees)


def init_members(build: Any, cfg: Mapping[str, Any], slot: str, run_seeds: list[int]) -> tuple[Network, Any, Any]:
    """One initial point per seed (shared by that seed's SB and LB runs), stacked."""
    outs = [init_network(build, jax.random.fold_in(member_key(cfg["seed"], MODULE, slot, "init", seed=s), 0))
            for s in run_seeds]
    return outs[0][0], stack_trees([o[1] for o in outs]), stack_trees([o[2] for o in outs])


# --- training until the loss stops improving -----------------------------------------------------

def max_epochs(tcfg: Mapping[str, Any], regime: str) -> int:
    """The epoch cap of a regime: ``lb_max_epochs`` for LB when set (an LB epoch is only
    1/``lb_fraction`` steps, so LB needs many more epochs than SB to reach its stopping rule)."""
    if regime == "lb" and tcfg.get("lb_max_epochs"):
        return int(tcfg["lb_max_epochs"])
    return int(tcfg["max_epochs"])


def train_until_flat(net: Network, params: Any, state: Any, x: jax.Array, y: jax.Array, xt: jax.Array,
                     yt: jax.Array, *, batch: int, tcfg: Mapping[str, Any], keys: jax.Array,
                     max_epochs: int, stop_rule: bool = True,
                     snapshots: tuple[int, ...] = ()) -> dict[str, Any]:
    """Adam on stacked members (``vmap``) from ``params``/``state`` until each member's full
    training loss (``bn_mode``) stops improving (``theory.stopping_update``) or ``max_epochs``.
    A stopped member is frozen. ``stop_rule=False`` trains exactly ``max_epochs``. Returns the
    final params/state, per-member stop epochs and capped flags, the history (one row per
    member and epoch while it trains) and the params/state at the ``snapshots`` epochs."""
    tx = make_optimizer(tcfg["optimizer"], tcfg["lr"])
    ts = jax.jit(jax.vmap(lambda p, s: init_train_state(p, s, tx)))(params, state)
    run, _ = build_epoch_runner(net, tx, batch_size=batch, loss=cross_entropy, augment=None, ensemble=True,
                                hyper_axis=None, loop="auto", example=(ts, None, keys, x, y))
    evaluate = make_ensemble_evaluator(net, mode=tcfg["bn_mode"], batch_size=tcfg["eval_batch"])

    @jax.jit
    def keep(stop: jax.Array, old: Any, new: Any) -> Any:
        return jax.tree_util.tree_map(
            lambda o, n: jnp.where(stop.reshape((-1,) + (1,) * (o.ndim - 1)), o, n), old, new)

    m = len(keys)
    best, since = np.full(m, np.inf), np.zeros(m, int)
    stopped, stop_epoch = np.zeros(m, bool), np.full(m, max_epochs)
    rows: list[dict[str, Any]] = []
    snaps: dict[int, tuple[Any, Any]] = {}
    if 0 in snapshots:
        snaps[0] = (ts.params, ts.model_state)
    for epoch in range(max_epochs):
        new, _ = run(ts, None, keys, x, y, jnp.int32(epoch))
        ts = keep(jnp.asarray(stopped), ts, new)
        tl, ta = (np.asarray(v, np.float64) for v in jax.device_get(evaluate(ts.params, ts.model_state, x, y)))
        vl, va = (np.asarray(v, np.float64) for v in jax.device_get(evaluate(ts.params, ts.model_state, xt, yt)))
        for i in np.flatnonzero(~stopped):
            rows.append({"member": int(i), "epoch": epoch + 1, "train_loss": tl[i], "train_acc": ta[i],
                         "test_loss": vl[i], "test_acc": va[i]})
        if epoch + 1 in snapshots:
            snaps[epoch + 1] = (ts.params, ts.model_state)
        if stop_rule:
            best, since, stop = theory.stopping_update(best, since, tl, min_delta=tcfg["min_delta"],
                                                       patience=tcfg["patience"])
            newly = stop & ~stopped
            stop_epoch[newly] = epoch + 1
            stopped |= newly
            if stopped.all():
                break
    failed = np.asarray(jax.device_get(ts.failed), bool)
    return {"params": ts.params, "state": ts.model_state, "epochs": stop_epoch, "capped": ~stopped if stop_rule
            else np.zeros(m, bool), "failed": failed, "history": pd.DataFrame(rows), "snapshots": snaps}


# --- measures at a minimum -----------------------------------------------------------------------

def objective(net: Network, params: Any, state: Any, x: Any, y: Any, tcfg: Mapping[str, Any],
              split: str = "train", cache: dict[str, Any] | None = None) -> tuple[Any, Any]:
    """(Objective, params): the mean cross-entropy over (x, y) in the configured BatchNorm mode.

    With a ``cache`` (one dict per network and data set), a model whose non-parameter state
    equals the cached objective's (no BatchNorm: nothing but constants) reuses that
    Objective: its Hessian operator holds the state as a jit-static value compared by
    identity, so a new Objective per minimum would recompile Lanczos and Hutch++ each time
    (measured: ~4-5 s per call on 2 cores, vs ~0.4 s reused)."""
    model = net.model(params, state, "eval")
    obj, p = from_model(model, (x, y), bn_mode=tcfg["bn_mode"], batch_size=tcfg["eval_batch"], split=split)
    if cache is None:
        return obj, p
    old = cache.get("obj")
    if old is not None and _same_leaves(old.state, obj.state):
        return old, p
    cache["obj"] = obj
    return obj, p


def _same_leaves(a: Any, b: Any) -> bool:
    la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    same: bool = str(jax.tree_util.tree_structure(a)) == str(jax.tree_util.tree_structure(b))
    return same and len(la) == len(lb) and all(
        np.shape(u) == np.shape(v) and np.array_equal(np.asarray(u), np.asarray(v)) for u, v in zip(la, lb,
                                                                                                      strict=True))


def sharpness_cells(obj: Any, params: Any, scfg: Mapping[str, Any], key: jax.Array) -> dict[str, Any]:
    """Metric 2.1 in every configured cell (space × ε); one random subspace A per ``key``
    (the same for a seed's SB and LB minima), drawn once here for every ε (as
    ``keskar_sharpness`` would draw it from ``key``: the same A and start points). No-progress
    runs are flagged, not warned."""
    out: dict[str, Any] = {}
    a = None
    if "subspace" in scfg["spaces"]:
        flat = ravel_pytree(params)[0]
        a = random_subspace(jax.random.fold_in(key, 0), flat.size, int(scfg["subspace_dim"]), flat.dtype)
    for space, eps in [(s, e) for s in scfg["spaces"] for e in scfg["epsilons"]]:
        res = keskar_sharpness(obj, params, epsilon=eps, subspace=a if space == "subspace" else None,
                               key=key, maxiter=scfg["maxiter"], restarts=scfg["restarts"],
                               on_no_progress="ignore")
        name = cell_name(space, eps)
        out[f"sharp_{name}"] = res.sharpness
        out[f"no_progress_{name}"] = res.no_progress
        out[f"evals_{name}"] = res.evals
    return out


def hessian_measures(obj: Any, params: Any, hcfg: Mapping[str, Any], key: jax.Array) -> dict[str, float]:
    """λ_max (Lanczos, ``lanczos_steps`` matvecs) and tr H (Hutch++, ``hutchpp_matvecs``)."""
    op = hessian_operator(obj.batch_loss, params, obj.data, reduction="mean")
    n = op.size
    steps = min(int(hcfg["lanczos_steps"]), n)
    eig = lanczos_eigs(op, jax.random.fold_in(key, 0), k=1, num_steps=steps)
    tr = hutch_plus_plus(op, jax.random.fold_in(key, 1), num_matvecs=int(hcfg["hutchpp_matvecs"]))
    return {"lambda_max": float(eig.top.eigenvalues[0]), "lambda_max_converged": bool(eig.top.converged[0]),
            "trace": float(tr.estimate), "trace_stderr": float(tr.stderr)}


def interpolate_state(s_state: Any, l_state: Any, alpha: float) -> Any:
    """BatchNorm statistics along the line as the weights (Li et al.'s ``states``); variances
    extrapolated below 0 (α outside [0, 1]) are floored at 0 (BN's ε keeps them finite)."""
    def leaf(path: Any, a: Any, b: Any) -> Any:
        if not jnp.issubdtype(jnp.asarray(a).dtype, jnp.floating):
            return a
        v = theory.interpolate(np.asarray(a), np.asarray(b), alpha)
        return jnp.asarray(np.maximum(v, 0.0) if "var" in jax.tree_util.keystr(path) else v, jnp.asarray(a).dtype)

    return jax.tree_util.tree_map_with_path(leaf, s_state, l_state)


def parametric(net: Network, sb: tuple[Any, Any], lb: tuple[Any, Any], alphas: np.ndarray,
               sets: Mapping[str, tuple[Any, Any]], tcfg: Mapping[str, Any]) -> pd.DataFrame:
    """f(αx_ℓ + (1 − α)x_s) and accuracy on each data set in ``sets`` (Figure 3)."""
    evaluate = make_evaluator(net, mode=tcfg["bn_mode"], batch_size=tcfg["eval_batch"])
    xs, unravel = ravel_pytree(sb[0])
    xl, _ = ravel_pytree(lb[0])
    rows = []
    for a in alphas:
        params = unravel(jnp.asarray(theory.interpolate(np.asarray(xs), np.asarray(xl), float(a)), xs.dtype))
        state = interpolate_state(sb[1], lb[1], float(a))
        for split, (x, y) in sets.items():
            loss, acc = jax.device_get(evaluate(params, state, x, y))
            rows.append({"alpha": float(a), "split": split, "loss": float(loss), "accuracy": float(acc)})
    return pd.DataFrame(rows)


# --- step: minima (KS1-KS4, KS7, Hessian measures) ------------------------------------------------

def _slot_table(slot: str, spec: Mapping[str, Any], cfg: Mapping[str, Any]) -> pd.DataFrame:
    """Everything measured for one network, as one long table (column ``table``: runs,
    history, parametric), so that a killed run resumes per network (``shared.resume``)."""
    tcfg, scfg, hcfg = cfg["training"], cfg["sharpness"], cfg["hessian"]
    train, test, _ = load_data(spec, cfg)
    x, y, xt, yt = train.x, train.y, test.x, test.y
    n = int(x.shape[0])
    run_seeds = list(range(tcfg["seeds"]))
    build = models.builder(spec["model"], **spec.get("model_kwargs", {}))
    net, p0, s0 = init_members(build, cfg, slot, run_seeds)
    batches = {"sb": int(tcfg["sb_batch"]), "lb": theory.lb_batch_size(n, tcfg["lb_fraction"])}
    frames = []
    results = {}
    for regime, batch in batches.items():
        keys = jnp.stack([jax.random.fold_in(member_key(cfg["seed"], MODULE, slot, regime, seed=s), 1)
                          for s in run_seeds])
        t0 = time.perf_counter()
        res = train_until_flat(net, p0, s0, x, y, xt, yt, batch=batch, tcfg=tcfg, keys=keys,
                               max_epochs=max_epochs(tcfg, regime))
        res["time"] = time.perf_counter() - t0
        print(f"[{MODULE}] {slot} {regime} (batch {batch}): epochs {res['epochs'].tolist()}, capped "
              f"{res['capped'].tolist()}, {res['time']:.1f} s", flush=True)
        results[regime] = res
        hist = res["history"].assign(table="history", network=slot, regime=regime, batch=batch)
        hist["seed"] = [run_seeds[i] for i in hist["member"]]
        frames.append(hist.drop(columns="member"))
    evaluate = make_evaluator(net, mode=tcfg["bn_mode"], batch_size=tcfg["eval_batch"])
    rows = []
    cache: dict[str, Any] = {}
    for i, s in enumerate(run_seeds):
        x0 = np.asarray(ravel_pytree(member(p0, i))[0])
        ends = {r: np.asarray(ravel_pytree(member(results[r]["params"], i))[0]) for r in batches}
        for regime, res in results.items():
            params, state = member(res["params"], i), member(res["state"], i)
            tl, ta = jax.device_get(evaluate(params, state, x, y))
            vl, va = jax.device_get(evaluate(params, state, xt, yt))
            obj, _ = objective(net, params, state, x, y, tcfg, cache=cache)
            key = member_key(cfg["seed"], MODULE, slot, "measure", seed=s)
            row: dict[str, Any] = {
                "table": "runs", "network": slot, "regime": regime, "seed": s, "batch": batches[regime],
                "epochs": int(res["epochs"][i]), "capped": bool(res["capped"][i]), "failed": bool(res["failed"][i]),
                "train_loss": float(tl), "train_acc": float(ta), "test_loss": float(vl), "test_acc": float(va),
                "distance_from_init": float(np.linalg.norm(ends[regime] - x0)),
                "distance_ratio": theory.distance_ratio(x0, ends["sb"], ends["lb"]),
            }
            row.update(sharpness_cells(obj, params, scfg, jax.random.fold_in(key, 0)))
            row.update(hessian_measures(obj, params, hcfg, jax.random.fold_in(key, 1)))
            curve = res["history"].query("member == @i")["test_acc"].to_numpy()
            row["peak_drop"] = theory.peak_drop(curve) if len(curve) else math.nan
            row["best_test_acc"] = float(np.max(curve)) if len(curve) else math.nan
            rows.append(row)
        sb = (member(results["sb"]["params"], i), member(results["sb"]["state"], i))
        lb = (member(results["lb"]["params"], i), member(results["lb"]["state"], i))
        alphas = theory.alphas(cfg["parametric"]["points"])
        par = parametric(net, sb, lb, alphas, {"train": (x, y), "test": (xt, yt)}, tcfg)
        frames.append(par.assign(table="parametric", network=slot, seed=s))
    frames.append(pd.DataFrame(rows))
    return pd.concat(frames, ignore_index=True)


def _split(table: pd.DataFrame, kind: str) -> pd.DataFrame:
    return table[table["table"] == kind].dropna(axis=1, how="all").drop(columns="table").reset_index(drop=True)


def _curvatures(par: pd.DataFrame) -> dict[int, tuple[float, float]]:
    """Per seed, the curvature of the training loss along the line at α = 0 (x_s) and α = 1 (x_ℓ)."""
    out = {}
    for s, g in par[par["split"] == "train"].groupby("seed"):
        g = g.sort_values("alpha")
        out[int(s)] = (theory.second_difference(g["alpha"], g["loss"], 0.0),
                       theory.second_difference(g["alpha"], g["loss"], 1.0))
    return out


def uncapped_seeds(runs: pd.DataFrame) -> list[int]:
    """Seeds whose SB and LB runs both reached the stopping rule (neither hit its epoch cap)."""
    capped = runs.get("capped", pd.Series(False, index=runs.index)).astype(bool)
    bad = set(runs.loc[capped, "seed"].astype(int))
    return sorted(int(s) for s in runs["seed"].unique() if int(s) not in bad)


def slot_measurements(slot: str, runs: pd.DataFrame, par: pd.DataFrame, spec: Mapping[str, Any],
                      cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The quantities the claims read for one network slot (names end in ``_<slot>``).

    The claims compare minima: a seed whose SB or LB run hit its epoch cap (``capped``) is
    left out of every quantity (both its runs, so pairs stay paired); with fewer than 2
    seeds left, every quantity is not testable, with the reason."""
    keep = uncapped_seeds(runs)
    n_all = int(runs["seed"].nunique())
    if len(keep) < 2:
        why = {"not_testable": f"{slot.upper()}: only {len(keep)} of {n_all} seeds reached the stopping rule in "
               "both regimes (the others hit the epoch cap, so their end points are not minima); >= 2 needed"}
        return {f"{q}_{slot}": why for q in SLOT_QUANTITIES}
    runs = runs[runs["seed"].isin(keep)]
    par = par[par["seed"].isin(keep)]
    sb, lb = (runs[runs["regime"] == r].sort_values("seed") for r in ("sb", "lb"))
    curv = _curvatures(par)
    q: dict[str, Any] = {
        "test_acc_sb": sb["test_acc"].tolist(), "test_acc_lb": lb["test_acc"].tolist(),
        "train_acc_sb": sb["train_acc"].tolist(), "train_acc_lb": lb["train_acc"].tolist(),
        "train_acc_gap": abs(float(sb["train_acc"].mean() - lb["train_acc"].mean())),
        "kappa_sb": [curv[s][0] for s in sb["seed"]], "kappa_lb": [curv[s][1] for s in sb["seed"]],
        "lb_peak_drop": lb["peak_drop"].tolist(), "lb_best_test_acc": lb["best_test_acc"].tolist(),
        "distance_ratio": sb["distance_ratio"].tolist(),
        "lambda_max_sb": sb["lambda_max"].tolist(), "lambda_max_lb": lb["lambda_max"].tolist(),
        "trace_sb": sb["trace"].tolist(), "trace_lb": lb["trace"].tolist(),
    }
    for space, eps in CELLS:
        name = cell_name(space, eps)
        col = f"sharp_{name}"
        if col in runs:
            q[f"sharp_{name}_sb"], q[f"sharp_{name}_lb"] = sb[col].tolist(), lb[col].tolist()
        else:
            why = {"not_testable": f"Metric 2.1 cell {name} is not configured at this scale"}
            q[f"sharp_{name}_sb"] = q[f"sharp_{name}_lb"] = why
    full = q["sharp_full_1e3_sb"]
    q["sharp_ratio_full_1e3"] = (float(np.mean(q["sharp_full_1e3_lb"]) / np.mean(full))
                                 if isinstance(full, list) and np.mean(full) > 0 else
                                 (math.inf if isinstance(full, list) else full))
    if spec.get("analogue", False):
        q["test_gap"] = {"not_testable": f"{slot.upper()} is a scaled-down analogue at this scale "
                         f"({spec['model']} on {spec['dataset']}): its size is not comparable with Table 2"}
    else:
        q["test_gap"] = [a - b for a, b in zip(q["test_acc_sb"], q["test_acc_lb"], strict=True)]
    return {f"{k}_{slot}": v for k, v in q.items()}


SLOT_QUANTITIES = (
    "test_acc_sb", "test_acc_lb", "train_acc_sb", "train_acc_lb", "train_acc_gap", "kappa_sb", "kappa_lb",
    "lb_peak_drop", "lb_best_test_acc", "distance_ratio", "lambda_max_sb", "lambda_max_lb", "trace_sb",
    "trace_lb", *[f"sharp_{cell_name(s, e)}_{r}" for s, e in CELLS for r in ("sb", "lb")],
    "sharp_ratio_full_1e3", "test_gap",
)


def minima_quantities() -> tuple[str, ...]:
    return (*[f"{q}_{slot}" for slot in SLOTS for q in SLOT_QUANTITIES], "f2_rows")


def _label(slot: str, spec: Mapping[str, Any] | None) -> str:
    if spec is None:
        return f"{slot.upper()} (not run)"
    if spec.get("analogue", False):
        return f"{slot.upper()}-like: {spec['model']} on {spec['dataset']}"
    return f"{slot.upper()}{' (reconstruction)' if slot == 'f1' else ''}: {spec['model']} on {spec['dataset']}"


def _mean_sd(values: pd.Series) -> tuple[float, float]:
    v = values.to_numpy(np.float64)
    return float(np.mean(v)), float(np.std(v, ddof=1)) if len(v) > 1 else math.nan


def _used(runs: pd.DataFrame, slot: str, regime: str) -> tuple[pd.DataFrame, int]:
    """A network's runs of one regime that enter the verdicts (seeds with no capped run), and
    the number of seeds left out because a run hit its epoch cap."""
    if not len(runs) or slot not in set(runs["network"]):
        return runs.iloc[:0] if len(runs) else runs, 0
    mine = runs[runs["network"] == slot]
    keep = uncapped_seeds(mine)
    sel = mine[(mine["regime"] == regime) & mine["seed"].isin(keep)]
    return sel, int(mine["seed"].nunique()) - len(keep)


def table2(runs: pd.DataFrame, networks: Mapping[str, Any]) -> pd.DataFrame:
    """Table 2, ours beside the paper's: accuracy mean ± sd per network, regime and split."""
    rows = []
    for slot in theory.NETWORKS:
        spec = networks.get(slot)
        for regime in ("sb", "lb"):
            for split in ("train", "test"):
                p_mean, p_sd = theory.paper_accuracy()[slot][f"{split}_{regime}"]
                sel, excluded = _used(runs, slot, regime)
                mean, sd = _mean_sd(sel[f"{split}_acc"]) if len(sel) else (math.nan, math.nan)
                rows.append({"network": _label(slot, spec), "slot": slot, "regime": regime.upper(), "split": split,
                             "ours_mean": mean, "ours_sd": sd, "n": len(sel), "capped_seeds_excluded": excluded,
                             "paper_mean": p_mean,
                             "paper_sd": p_sd, "note": theory.F2_NOT_TESTABLE if slot == "f2" else
                             ("not configured at this scale" if spec is None else "")})
    return pd.DataFrame(rows)


def sharpness_table(runs: pd.DataFrame, networks: Mapping[str, Any], space: str) -> pd.DataFrame:
    """Table 3 (``full``) or 4 (``subspace``), ours beside the paper's, every cell."""
    rows = []
    for slot in theory.NETWORKS:
        spec = networks.get(slot)
        for eps in (1e-3, 5e-4):
            for regime in ("sb", "lb"):
                p_mean, p_sd = theory.paper_sharpness()[slot][(space, eps, regime)]
                col = f"sharp_{cell_name(space, eps)}"
                sel, excluded = _used(runs, slot, regime)
                ok = len(sel) and col in sel
                mean, sd = _mean_sd(sel[col]) if ok else (math.nan, math.nan)
                no_prog = int(sel[f"no_progress_{cell_name(space, eps)}"].sum()) if ok else 0
                rows.append({"network": _label(slot, spec), "slot": slot, "epsilon": eps, "regime": regime.upper(),
                             "ours_mean": mean, "ours_sd": sd, "n": len(sel) if ok else 0,
                             "capped_seeds_excluded": excluded, "no_progress_runs": no_prog,
                             "paper_mean": p_mean, "paper_sd": p_sd,
                             "note": theory.F2_NOT_TESTABLE if slot == "f2" else
                             ("not configured at this scale" if spec is None else "")})
    return pd.DataFrame(rows)


def hessian_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Per network and regime: Metric 2.1 (full, ε = 1e-3), λ_max and tr H, mean ± sd over the
    seeds that enter the verdicts (no capped run)."""
    rows = []
    for (slot, regime), _ in runs.groupby(["network", "regime"], sort=False):
        g, excluded = _used(runs, str(slot), str(regime))
        row: dict[str, Any] = {"network": slot, "regime": str(regime).upper(), "n": len(g),
                               "capped_seeds_excluded": excluded}
        for col in ("sharp_full_1e3", "lambda_max", "trace", "distance_from_init"):
            if col in g:
                row[f"{col}_mean"], row[f"{col}_sd"] = _mean_sd(g[col])
        row["lanczos_converged"] = int(g["lambda_max_converged"].sum())
        rows.append(row)
    return pd.DataFrame(rows)


def _not_configured(slot: str, scale_note: str) -> dict[str, Any]:
    why = {"not_testable": f"network {slot.upper()} is not configured at this scale ({scale_note})"}
    return {f"{q}_{slot}": why for q in SLOT_QUANTITIES}


def minima(cfg: dict[str, Any]) -> StepResult:
    networks = cfg["networks"]
    tcfg, scfg, hcfg = cfg["training"], cfg["sharpness"], cfg["hessian"]
    total = 0.0
    for slot, spec in networks.items():
        train, _, _ = load_data(spec, cfg)
        build = models.builder(spec["model"], **spec.get("model_kwargs", {}))
        net, p, s = init_network(build, jax.random.key(0))
        fwd = forward_flops(net, p, s, train.x)
        n = int(train.x.shape[0])
        epochs = max_epochs(tcfg, "sb") + max_epochs(tcfg, "lb")
        seen = tcfg["seeds"] * epochs * n * 3 * fwd * 4 / 3  # train + per-epoch evaluation
        evals = 2 * tcfg["seeds"] * (len(scfg["spaces"]) * len(scfg["epsilons"]) * (scfg["maxiter"] + 5)
                                     * scfg["restarts"] * 3 + (hcfg["lanczos_steps"] + hcfg["hutchpp_matvecs"]) * 6
                                     + 2 * cfg["parametric"]["points"]) * n * fwd
        total += seen + evals
        _projected_cost(f"minima {slot} (at most {max_epochs(tcfg, 'sb')} SB + {max_epochs(tcfg, 'lb')} LB epochs × "
                        f"{tcfg['seeds']} seeds, "
                        f"{fwd:.3g} FLOP/example; Metric 2.1, Lanczos, Hutch++, parametric plot)", seen + evals)
    _projected_cost("minima (all networks, at most)", total)
    frames = {slot: resume.chunk(f"minima_{slot}", {"spec": spec, "training": tcfg, "sharpness": scfg,
                                                    "hessian": hcfg, "parametric": cfg["parametric"],
                                                    "seed": cfg["seed"]},
                                 functools.partial(_slot_table, slot, spec, cfg))
              for slot, spec in networks.items()}
    measurements: dict[str, Any] = {"f2_rows": {"not_testable": theory.F2_NOT_TESTABLE}}
    runs_l, hist_l, par_l = [], [], []
    for slot in SLOTS:
        if slot not in networks:
            measurements.update(_not_configured(slot, "absent from the config's networks"))
            continue
        table = frames[slot]
        runs, hist, par = _split(table, "runs"), _split(table, "history"), _split(table, "parametric")
        measurements.update(slot_measurements(slot, runs, par, networks[slot], cfg))
        runs_l.append(runs)
        hist_l.append(hist)
        par_l.append(par)
    runs = pd.concat(runs_l, ignore_index=True) if runs_l else pd.DataFrame()
    hist = pd.concat(hist_l, ignore_index=True) if hist_l else pd.DataFrame()
    par = pd.concat(par_l, ignore_index=True) if par_l else pd.DataFrame()
    plotting.setup()
    return StepResult(
        measurements=measurements,
        tables={"minima_runs": runs, "table2_accuracy": table2(runs, networks),
                "table3_sharpness_full": sharpness_table(runs, networks, "full"),
                "table4_sharpness_subspace": sharpness_table(runs, networks, "subspace"),
                "hessian_measures": hessian_table(runs), "parametric": par, "histories": hist},
        figures={"parametric_plots": _plot_parametric(par, runs, networks, cfg),
                 "accuracy_vs_epoch": _plot_epochs(hist, networks, cfg, runs),
                 "sharpness_measures": _plot_measures(runs, networks)},
    )


# --- step: batch_size (KS5) -----------------------------------------------------------------------

@dataclass(frozen=True)
class _Experiment:
    """The network slot a sweep (KS5) or warm start (KS6) runs on: data, initial members, cost."""

    slot: str
    spec: dict[str, Any]
    x: Any
    y: Any
    xt: Any
    yt: Any
    title: str
    net: Network
    p0: Any
    s0: Any
    seeds: list[int]
    fwd: float  # FLOP of one forward pass over the training set


def _experiment(cfg: dict[str, Any], part: str) -> _Experiment:
    slot = cfg[part]["network"]
    spec = cfg["networks"][slot]
    train, test, title = load_data(spec, cfg)
    build = models.builder(spec["model"], **spec.get("model_kwargs", {}))
    run_seeds = list(range(cfg[part]["seeds"]))
    net, p0, s0 = init_members(build, cfg, slot, run_seeds)
    fwd = forward_flops(net, member(p0, 0), member(s0, 0), train.x)
    return _Experiment(slot, spec, train.x, train.y, test.x, test.y, title, net, p0, s0, run_seeds, fwd)


def batch_size(cfg: dict[str, Any]) -> StepResult:
    bcfg, tcfg, scfg = cfg["batch_size"], cfg["training"], cfg["sharpness"]
    ex = _experiment(cfg, "batch_size")
    slot, spec, title, net, p0, s0, run_seeds, fwd = ex.slot, ex.spec, ex.title, ex.net, ex.p0, ex.s0, ex.seeds, ex.fwd
    x, y, xt, yt = ex.x, ex.y, ex.xt, ex.yt
    n = int(x.shape[0])
    flops = len(bcfg["batches"]) * bcfg["seeds"] * (bcfg["max_epochs"] * n * 4 * fwd + 3 * 15 * n * fwd)
    _projected_cost(f"batch_size sweep ({slot}, batches {bcfg['batches']}, {bcfg['seeds']} seeds, at most "
                    f"{bcfg['max_epochs']} epochs each)", flops)

    def compute() -> pd.DataFrame:
        rows = []
        tc = {**tcfg, "max_epochs": bcfg["max_epochs"]}
        evaluate = make_evaluator(net, mode=tcfg["bn_mode"], batch_size=tcfg["eval_batch"])
        cache: dict[str, Any] = {}
        for b in bcfg["batches"]:
            keys = jnp.stack([jax.random.fold_in(member_key(cfg["seed"], MODULE, "sweep", slot, b, seed=s), 1)
                              for s in run_seeds])
            res = train_until_flat(net, p0, s0, x, y, xt, yt, batch=int(b), tcfg=tc, keys=keys,
                                   max_epochs=bcfg["max_epochs"])
            for i, s in enumerate(run_seeds):
                params, state = member(res["params"], i), member(res["state"], i)
                _, ta = jax.device_get(evaluate(params, state, x, y))
                _, va = jax.device_get(evaluate(params, state, xt, yt))
                obj, _ = objective(net, params, state, x, y, tcfg, cache=cache)
                sh = keskar_sharpness(obj, params, epsilon=1e-3, key=member_key(cfg["seed"], MODULE, "sweep_sharp",
                                                                                 seed=s),
                                      maxiter=scfg["maxiter"], on_no_progress="ignore")
                rows.append({"network": slot, "batch": int(b), "seed": s, "epochs": int(res["epochs"][i]),
                             "capped": bool(res["capped"][i]), "train_acc": float(ta), "test_acc": float(va),
                             "sharp_full_1e3": sh.sharpness, "no_progress": sh.no_progress})
            print(f"[{MODULE}] sweep batch {b}: test acc {[round(r['test_acc'], 4) for r in rows[-len(run_seeds):]]}",
                  flush=True)
        return pd.DataFrame(rows)

    table = resume.chunk(f"batch_size_{slot}", {"spec": spec, "sweep": bcfg, "training": tcfg, "seed": cfg["seed"],
                                                "maxiter": scfg["maxiter"]}, compute)
    bs = sorted(table["batch"].unique().tolist())
    acc = [table[table["batch"] == b].sort_values("seed")["test_acc"].tolist() for b in bs]
    sharp = [table[table["batch"] == b].sort_values("seed")["sharp_full_1e3"].tolist() for b in bs]
    measurements = {
        "sweep_batches": [int(b) for b in bs], "sweep_test_acc": acc, "sweep_sharpness": sharp,
        "sweep_test_acc_smallest": acc[0], "sweep_test_acc_largest": acc[-1],
        "sweep_threshold": theory.threshold_batch(bs, acc, bcfg["drop"]),
    }
    plotting.setup()
    return StepResult(measurements=measurements, tables={"batch_size_sweep": table},
                      figures={"accuracy_vs_batch": _plot_sweep(table, slot, title, measurements, bcfg)})


# --- step: warm_start (KS6) -----------------------------------------------------------------------

def warm_start(cfg: dict[str, Any]) -> StepResult:
    wcfg, tcfg, scfg = cfg["warm_start"], cfg["training"], cfg["sharpness"]
    ex = _experiment(cfg, "warm_start")
    slot, spec, title, net, p0, s0, run_seeds, fwd = ex.slot, ex.spec, ex.title, ex.net, ex.p0, ex.s0, ex.seeds, ex.fwd
    x, y, xt, yt = ex.x, ex.y, ex.xt, ex.yt
    n = int(x.shape[0])
    starts = sorted(int(e) for e in wcfg["sb_epochs"])
    flops = wcfg["seeds"] * (max(starts) + len(starts) * wcfg["lb_max_epochs"]) * n * 4 * fwd
    _projected_cost(f"warm_start ({slot}: SB {max(starts)} epochs, then LB from epochs {starts}, "
                    f"{wcfg['seeds']} seeds, at most {wcfg['lb_max_epochs']} LB epochs each)", flops)

    def compute() -> pd.DataFrame:
        sb_keys = jnp.stack([jax.random.fold_in(member_key(cfg["seed"], MODULE, slot, "sb", seed=s), 1)
                             for s in run_seeds])
        sb = train_until_flat(net, p0, s0, x, y, xt, yt, batch=int(tcfg["sb_batch"]), tcfg=tcfg, keys=sb_keys,
                              max_epochs=max(starts), stop_rule=False, snapshots=tuple(starts))
        # every (start epoch, seed) pair is one member of a single LB ensemble
        params = stack_trees([member(sb["snapshots"][e][0], i) for e in starts for i in range(len(run_seeds))])
        state = stack_trees([member(sb["snapshots"][e][1], i) for e in starts for i in range(len(run_seeds))])
        keys = jnp.stack([jax.random.fold_in(member_key(cfg["seed"], MODULE, slot, "warm", e, seed=s), 1)
                          for e in starts for s in run_seeds])
        lb_batch = theory.lb_batch_size(n, tcfg["lb_fraction"])
        lb = train_until_flat(net, params, state, x, y, xt, yt, batch=lb_batch, tcfg=tcfg, keys=keys,
                              max_epochs=wcfg["lb_max_epochs"])
        evaluate = make_evaluator(net, mode=tcfg["bn_mode"], batch_size=tcfg["eval_batch"])
        rows = []
        cache: dict[str, Any] = {}
        for j, (e, s) in enumerate([(e, s) for e in starts for s in run_seeds]):
            p, st = member(lb["params"], j), member(lb["state"], j)
            _, va = jax.device_get(evaluate(p, st, xt, yt))
            _, ta = jax.device_get(evaluate(p, st, x, y))
            obj, _ = objective(net, p, st, x, y, tcfg, cache=cache)
            sh = keskar_sharpness(obj, p, epsilon=1e-3, key=member_key(cfg["seed"], MODULE, "warm_sharp", e, seed=s),
                                  maxiter=scfg["maxiter"], on_no_progress="ignore")
            rows.append({"network": slot, "sb_epochs": e, "seed": s, "lb_batch": lb_batch,
                         "lb_epochs": int(lb["epochs"][j]), "capped": bool(lb["capped"][j]),
                         "train_acc": float(ta), "test_acc": float(va), "sharp_full_1e3": sh.sharpness,
                         "no_progress": sh.no_progress})
        return pd.DataFrame(rows)

    table = resume.chunk(f"warm_start_{slot}", {"spec": spec, "warm": wcfg, "training": tcfg, "seed": cfg["seed"],
                                                "maxiter": scfg["maxiter"]}, compute)
    acc = [table[table["sb_epochs"] == e].sort_values("seed")["test_acc"].tolist() for e in starts]
    sharp = [table[table["sb_epochs"] == e].sort_values("seed")["sharp_full_1e3"].tolist() for e in starts]
    measurements = {"ws_epochs": starts, "ws_test_acc": acc, "ws_sharpness": sharp}
    plotting.setup()
    return StepResult(measurements=measurements, tables={"warm_start": table},
                      figures={"warm_start": _plot_warm(table, slot, title, wcfg)})


# --- figures ---------------------------------------------------------------------------------------

def _plot_parametric(par: pd.DataFrame, runs: pd.DataFrame, networks: Mapping[str, Any],
                     cfg: Mapping[str, Any]) -> FigureOut:
    import matplotlib.pyplot as plt

    slots = [s for s in SLOTS if s in networks]
    fig, axes = plt.subplots(1, max(1, len(slots)), figsize=(5 * max(1, len(slots)), 3.8), squeeze=False)
    notes = []
    for ax, slot in zip(axes[0], slots, strict=False):
        seed0 = int(par[par["network"] == slot]["seed"].min())
        g = par[(par["network"] == slot) & (par["seed"] == seed0)]
        acc_ax = ax.twinx()
        for split, style in (("train", "-"), ("test", "--")):
            h = g[g["split"] == split].sort_values("alpha")
            ax.semilogy(h["alpha"], h["loss"], style, color="C0", label=f"{split} loss")
            acc_ax.plot(h["alpha"], h["accuracy"], style, color="C3", label=f"{split} accuracy")
        ax.axvline(0, color="grey", lw=0.6)
        ax.axvline(1, color="grey", lw=0.6)
        ax.set_xlabel("α  (0: SB minimizer, 1: LB minimizer)")
        ax.set_ylabel("cross-entropy", color="C0")
        acc_ax.set_ylabel("accuracy", color="C3")
        acc_ax.grid(False)
        ax.set_title(_label(slot, networks[slot]), fontsize=9)
        ax.legend(loc="upper left", fontsize=7)
        curv = _curvatures(par[par["network"] == slot])
        notes.append(f"{slot.upper()}: curvature of the train loss at α = 0 / α = 1 per seed "
                     + ", ".join(f"{a:.3g} / {b:.3g}" for a, b in curv.values()))
    fig.tight_layout()
    caption = (f"f(α x_ℓ + (1 − α) x_s) for α in [−1, 2] ({cfg['parametric']['points']} points), seed 0's SB/LB "
               f"pair from the same initial point; BatchNorm mode {cfg['training']['bn_mode']}. " + "; ".join(notes))
    return FigureOut(fig, caption)


def _plot_epochs(hist: pd.DataFrame, networks: Mapping[str, Any], cfg: Mapping[str, Any],
                 runs: pd.DataFrame | None = None) -> FigureOut:
    import matplotlib.pyplot as plt

    slots = [s for s in SLOTS if s in networks]
    fig, axes = plt.subplots(1, max(1, len(slots)), figsize=(5 * max(1, len(slots)), 3.6), squeeze=False)
    for ax, slot in zip(axes[0], slots, strict=False):
        for regime, colour in (("sb", "C0"), ("lb", "C3")):
            for s, g in hist[(hist["network"] == slot) & (hist["regime"] == regime)].groupby("seed"):
                ax.plot(g["epoch"], g["test_acc"], color=colour, alpha=0.7,
                        label=f"{regime.upper()} test" if s == 0 else None)
                ax.plot(g["epoch"], g["train_acc"], color=colour, alpha=0.35, ls=":",
                        label=f"{regime.upper()} train" if s == 0 else None)
        ax.set_xscale("log")
        ax.set_xlabel("epoch")
        ax.set_ylabel("accuracy")
        ax.set_title(_label(slot, networks[slot]), fontsize=9)
        ax.legend(fontsize=7)
    fig.tight_layout()
    t = cfg["training"]
    capped = ("none" if runs is None or not len(runs) or not runs["capped"].any() else
              ", ".join(f"{r.network.upper()} {r.regime.upper()} seed {r.seed}" for r in runs[runs["capped"]]
                        .itertuples()))
    caption = (f"Train and test accuracy per epoch, every seed, until the training loss stopped improving "
               f"(no fall below best − {t['min_delta']} for {t['patience']} epochs; caps SB {max_epochs(t, 'sb')}, "
               f"LB {max_epochs(t, 'lb')}; capped runs: {capped}, left out of the verdicts). "
               "Figure 2's question: does LB's test accuracy peak and then fall?")
    return FigureOut(fig, caption)


def _value_scale(ax: Any, values: Any) -> None:
    """A log y axis when every value is positive, else symlog with its linear part down to the
    smallest nonzero |value| (Metric 2.1 can be 0 and λ_max negative at a saddle)."""
    v = np.asarray(values, float)
    v = v[np.isfinite(v)]
    if v.size and (v > 0).all():
        ax.set_yscale("log")
    else:
        nonzero = np.abs(v[v != 0])
        ax.set_yscale("symlog", linthresh=float(nonzero.min()) if nonzero.size else 1e-3)


def _plot_measures(runs: pd.DataFrame, networks: Mapping[str, Any]) -> FigureOut:
    import matplotlib.pyplot as plt

    cols = [c for c in ("sharp_full_1e3", "sharp_subspace_1e3", "lambda_max", "trace") if c in runs]
    fig, axes = plt.subplots(1, len(cols), figsize=(3.6 * len(cols), 3.4), squeeze=False)
    for ax, col in zip(axes[0], cols, strict=True):
        for k, regime in enumerate(("sb", "lb")):
            sel = runs[runs["regime"] == regime]
            xs = [SLOTS.index(s) + (k - 0.5) * 0.25 for s in sel["network"]]
            ax.scatter(xs, sel[col], color="C0" if regime == "sb" else "C3", label=regime.upper(), s=18)
        used = [s for s in SLOTS if s in networks]
        ax.set_xticks([SLOTS.index(s) for s in used], [s.upper() for s in used])
        _value_scale(ax, runs[col])
        ax.set_title(col, fontsize=9)
        ax.legend(fontsize=7)
    fig.tight_layout()
    caption = ("Sharpness of every minimum: Metric 2.1 (full space and random subspace, ε = 1e-3), the top "
               "Hessian eigenvalue (Lanczos) and the Hessian trace (Hutch++) of the training loss, SB vs LB.")
    return FigureOut(fig, caption)


def _plot_sweep(table: pd.DataFrame, slot: str, title: str, m: Mapping[str, Any],
                bcfg: Mapping[str, Any]) -> FigureOut:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    g = table.groupby("batch")
    ax.errorbar(g["test_acc"].mean().index, g["test_acc"].mean(), yerr=g["test_acc"].std(), color="C0",
                marker="o", label="test accuracy")
    ax.set_xscale("log")
    batches = sorted(table["batch"].unique())
    ax.set_xticks(batches, [str(int(b)) for b in batches])  # the sweep's sizes, not log-axis decades
    ax.minorticks_off()
    ax.set_xlabel("batch size")
    ax.set_ylabel("test accuracy", color="C0")
    ax2 = ax.twinx()
    ax2.errorbar(g["sharp_full_1e3"].mean().index, g["sharp_full_1e3"].mean(), yerr=g["sharp_full_1e3"].std(),
                 color="C3", marker="s", label="Metric 2.1 (full, ε = 1e-3)")
    _value_scale(ax2, table["sharp_full_1e3"])
    ax2.set_ylabel("sharpness", color="C3")
    ax2.grid(False)
    ax.set_title(f"{slot.upper()} on {title}", fontsize=9)
    fig.tight_layout()
    found = m["sweep_threshold"] is not None and bool(np.isfinite(m["sweep_threshold"]))
    threshold = f"{int(m['sweep_threshold'])}" if found else "none (no batch size fell that far)"
    caption = (f"Test accuracy and Metric 2.1 vs batch size ({slot.upper()} on {title}, {bcfg['seeds']} seeds each; "
               f"mean ± sd). Threshold (first batch whose mean accuracy is > {bcfg['drop']} below the best of the "
               f"smaller ones): {threshold}. Paper: ≈ 500 for C1, ≈ 15000 for F2.")
    return FigureOut(fig, caption)


def _plot_warm(table: pd.DataFrame, slot: str, title: str, wcfg: Mapping[str, Any]) -> FigureOut:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    g = table.groupby("sb_epochs")
    ax.errorbar(g["test_acc"].mean().index, g["test_acc"].mean(), yerr=g["test_acc"].std(), color="C0", marker="o")
    ax.set_xlabel("SB epochs before switching to LB")
    ax.set_ylabel("LB test accuracy", color="C0")
    ax2 = ax.twinx()
    ax2.errorbar(g["sharp_full_1e3"].mean().index, g["sharp_full_1e3"].mean(), yerr=g["sharp_full_1e3"].std(),
                 color="C3", marker="s")
    _value_scale(ax2, table["sharp_full_1e3"])
    ax2.set_ylabel("Metric 2.1 (full, ε = 1e-3)", color="C3")
    ax2.grid(False)
    ax.set_title(f"Warm start, {slot.upper()} on {title}", fontsize=9)
    fig.tight_layout()
    caption = (f"LB runs (fresh Adam state) started from the SB iterate after {wcfg['sb_epochs']} epochs, "
               f"{wcfg['seeds']} seeds, each trained until its loss stopped improving (cap "
               f"{wcfg['lb_max_epochs']}); test accuracy and sharpness of the end points (mean ± sd). "
               "Paper (Figure 5): 100 SB epochs, LB from each.")
    return FigureOut(fig, caption)
