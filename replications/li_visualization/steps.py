"""Li et al. (NeurIPS 2018) experiments: the steps ``module.py`` declares.

- ``vgg`` (L1, L2): a VGG trained with a small and a large batch, without and with weight
  decay (Figs. 2–3, 5). Per weight decay: the un-normalised 1D interpolation
  f((1 − α)θ_SB + αθ_LB), α ∈ [−0.5, 1.5], with the BatchNorm statistics interpolated too
  (Li's ``dir_type=states``; extrapolated variances floored at 0), and 1D plots along
  filter-normalised random directions (biases and BN zeroed) at each minimum.
- ``resnets`` (L3–L7): ResNets with and without shortcuts over depths and widths: the 2D
  filter-normalised surface of each (Figs. 5–6), the non-convexity scores of ``theory.py``,
  Hessian convexity maps for the configured nets (Fig. 7), extra direction seeds for the
  deepest pair (L7), and the PCA of one net's optimisation trajectory with the path drawn over
  the loss on the PCA plane (§7, Fig. 9).

Surfaces are the mean cross-entropy over a fixed set of training examples (the paper: the whole
training set; the quick scale: a seeded subset, stated in every caption), no augmentation,
BatchNorm in eval mode (running averages, Li's ``net.eval()``). Every step prints its projected
cost first. Direction seeds are ``seeds.derive(seed, MODULE, net, "direction", s, "x"|"y")``,
recorded in the tables and captions.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from jax.flatten_util import ravel_pytree

from replications.li_visualization import theory
from shared import data, resume, seeds
from shared.benchmarking import forward_flops
from shared.landscape import from_model
from shared.landscape.directions import biasbn_mask, pca_directions, random_direction
from shared.landscape.hessian_maps import eigenvalue_map
from shared.landscape.plots import LI_LEVELS, to_grid
from shared.landscape.surface import Objective, line, plane
from shared.models import registry
from shared.module import FigureOut, StepResult
from shared.training import Arrays, StepDecayOptimizer, fit, init_network, random_crop_flip

MODULE = "li_visualization"
CPU_FLOPS = 4e10  # float32 FLOP/s assumed for the projected cost on 2 CPU cores
GPU_FLOPS = 2e13  # float32 FLOP/s assumed on one H100-class GPU
HVP_FORWARDS = 4  # a Hessian-vector product (forward-over-reverse) costs about 4 forward passes


def _projected_cost(what: str, flops: float) -> None:
    print(f"[{MODULE}] projected cost of {what}: {flops:.3g} FLOP ≈ {flops / CPU_FLOPS:,.0f} s on 2 CPU cores "
          f"({CPU_FLOPS:.0e} FLOP/s), ≈ {flops / GPU_FLOPS:,.1f} s on one GPU ({GPU_FLOPS:.0e} FLOP/s)", flush=True)


# --- data, networks, training -------------------------------------------------------------------

def load_sets(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """Training set, test set and the fixed surface set (a seeded training subset, or all of it)."""
    d = cfg["data"]
    kw: dict[str, Any] = {"data_dir": d["data_dir"]} if d.get("data_dir") else {}
    train = data.load(d["dataset"], "train", **kw)
    test = data.load(d["dataset"], "test", **kw)
    n = d.get("surface_examples")
    surface = data.load(d["dataset"], "train", subset=n, seed=cfg["seed"], **kw) if n and n < len(train) else train
    return {"train": train, "test": test, "surface": surface,
            "surface_name": f"{train.title} train" + (f", seeded subset of {len(surface)}" if surface is not train
                                                       else f", all {len(train)}")}



def train_net(build: Any, key_name: tuple[Any, ...], sets: Mapping[str, Any], tcfg: Mapping[str, Any], *,
              batch: int, weight_decay: float, lr: float, epochs: int, seed: int,
              trajectory: bool = False) -> dict[str, Any]:
    """SGD (Nesterov, momentum 0.9 in the paper) with step decay; returns params, state, errors,
    and the trajectory snapshots (every epoch) when asked."""
    net, params, state = init_network(build, seeds.derive(seed, MODULE, *key_name, "init"))
    x, y = sets["train"].x, sets["train"].y
    steps_per_epoch = math.ceil(int(x.shape[0]) / batch)
    # the numbers are arrays passed to the compiled step: runs that differ only in them compile it once
    tx = StepDecayOptimizer(tcfg["optimizer"], momentum=tcfg["momentum"])
    hyper = tx.hyper(lr, steps_per_epoch, tcfg["decay_epochs"], factor=0.1, weight_decay=weight_decay)
    kw: dict[str, Any] = {}
    spec = {"net": list(key_name), "batch": batch, "weight_decay": weight_decay, "lr": lr, "epochs": epochs,
            "seed": seed, "trajectory": trajectory, "training": dict(tcfg), "n_train": int(x.shape[0])}
    folder = resume.folder("checkpoints-" + "-".join(map(str, key_name)), spec)
    if folder is not None:  # a killed run resumes its training (keyed on settings and code)
        kw["checkpoint_dir"], kw["checkpoint_every"] = str(folder), max(1, epochs // 10)
    res = fit(net, params, state, Arrays(x, y, sets["test"].x, sets["test"].y), optimizer=tx, hyper=hyper,
              epochs=epochs, batch_size=batch, key=seeds.derive(seed, MODULE, *key_name, "train"),
              augment=random_crop_flip if tcfg.get("augment") else None, eval_batch_size=tcfg["eval_batch"],
              eval_every=epochs, trajectory_every=1 if trajectory else None, progress=False,
              desc="-".join(map(str, key_name)), **kw)
    last = res.history.iloc[-1]
    return {"net": net, "params": res.params, "state": res.model_state, "failed": bool(np.any(res.failed)),
            "test_error": 100 * (1 - float(last["test_acc"])), "train_loss": float(last.get("train_loss", np.nan)),
            "trajectory": res.trajectory}


def surface_objective(trained: Mapping[str, Any], sets: Mapping[str, Any], cfg: Mapping[str, Any]) -> tuple[
        Objective, Any]:
    model = trained["net"].model(trained["params"], trained["state"], "eval")
    s = sets["surface"]
    return from_model(model, (s.x, s.y), bn_mode="eval", batch_size=cfg["data"]["eval_batch"],
                      split=sets["surface_name"])


def directions(params: Any, seed: int, net: str, s: int) -> tuple[Any, Any]:
    """Two filter-normalised Gaussian directions (biases and BatchNorm zeroed: ``ignore="biasbn"``)."""
    return (random_direction(params, seeds.derive(seed, MODULE, net, "direction", s, "x")),
            random_direction(params, seeds.derive(seed, MODULE, net, "direction", s, "y")))


def axis(cfg: Mapping[str, Any]) -> np.ndarray:
    g = cfg["grid"]
    return np.linspace(-g["range"], g["range"], g["points"])


# --- step vgg: L1, L2 ------------------------------------------------------------------------------

def _interpolate_state(s_state: Any, l_state: Any, alpha: float) -> Any:
    def leaf(path: Any, a: Any, b: Any) -> Any:
        if not jnp.issubdtype(jnp.asarray(a).dtype, jnp.floating):
            return a
        v = (1 - alpha) * a + alpha * b
        return jnp.maximum(v, 0) if "var" in jax.tree_util.keystr(path) else v

    return jax.tree_util.tree_map_with_path(leaf, s_state, l_state)


def interpolation_curve(sb: Mapping[str, Any], lb: Mapping[str, Any], sets: Mapping[str, Any],
                        cfg: Mapping[str, Any], alphas: np.ndarray) -> pd.DataFrame:
    """f((1−α)θ_SB + αθ_LB) on the surface set and the test set, BN statistics interpolated (floored)."""
    metrics = jax.jit(lambda o, p, s: o.metrics(p, s))
    rows = []
    for split, ds in (("train", sets["surface"]), ("test", sets["test"])):
        objs = [from_model(t["net"].model(t["params"], t["state"], "eval"), (ds.x, ds.y), bn_mode="eval",
                           batch_size=cfg["data"]["eval_batch"])[0] for t in (sb, lb)]
        for a in alphas:
            params = jax.tree_util.tree_map(lambda u, v, a=a: (1 - a) * u + a * v, sb["params"], lb["params"])
            state = _interpolate_state(objs[0].state, objs[1].state, float(a))
            loss, acc = metrics(objs[0], params, state)
            rows.append({"alpha": float(a), "split": split, "loss": float(loss), "accuracy": float(acc)})
    return pd.DataFrame(rows)


def vgg(cfg: dict[str, Any]) -> StepResult:
    """L1 (un-normalised interpolation flips with weight decay) and L2 (filter-normalised sharpness
    goes with test error): one VGG per (batch, weight decay)."""
    v, tcfg = cfg["vgg"], cfg["training"]
    sets = load_sets(cfg)
    in_ch, side = int(sets["train"].x.shape[-1]), int(sets["train"].x.shape[1])
    kwargs = {"in_channels": in_ch, "image_size": side, "num_classes": int(sets["train"].num_classes),
              **v.get("model_kwargs", {})}
    build = registry.builder(v["model"], **kwargs)
    net0, p0, s0 = init_network(build, jax.random.key(0))
    fwd = forward_flops(net0, p0, s0, sets["train"].x)
    n_train, n_surf = len(sets["train"]), len(sets["surface"])
    n_runs = 2 * len(v["weight_decays"])
    _projected_cost(f"vgg: {n_runs} trainings, interpolations, filter-normalised lines",
                    fwd * (n_runs * v["epochs"] * n_train * 3 + len(v["weight_decays"]) * v["interpolation_points"]
                           * (n_surf + len(sets["test"])) + n_runs * v["fn_directions"] * v["fn_points"] * n_surf))
    runs, curves, lines = [], [], []
    trained: dict[tuple[str, float], dict[str, Any]] = {}
    for wd in v["weight_decays"]:
        for regime, batch in (("sb", v["sb_batch"]), ("lb", v["lb_batch"])):
            t0 = time.time()
            tr = train_net(build, ("vgg", regime, f"wd{wd:g}"), sets, tcfg, batch=batch, weight_decay=wd,
                           lr=tcfg["lr"], epochs=v["epochs"], seed=cfg["seed"])
            trained[(regime, wd)] = tr
            key = vgg_paper_key(regime, wd)
            wnorm = float(jnp.linalg.norm(ravel_pytree(tr["params"])[0]))
            runs.append({"weight_decay": wd, "regime": regime, "batch": batch, "epochs": v["epochs"],
                         "test_error_pct": tr["test_error"], "train_loss": tr["train_loss"], "weight_norm": wnorm,
                         "failed": tr["failed"], "analogue": v["analogue"],
                         "paper_test_error_pct_unverified": theory.paper_test_error_unverified().get(key, np.nan)})
            print(f"[{MODULE}] vgg {regime} wd={wd:g}: test error {tr['test_error']:.2f} % "
                  f"({time.time() - t0:.1f} s)", flush=True)
            obj, params = surface_objective(tr, sets, cfg)
            fa = np.linspace(-1, 1, v["fn_points"])
            for s in range(v["fn_directions"]):
                d = random_direction(params, seeds.derive(cfg["seed"], MODULE, "vgg", regime, f"wd{wd:g}", "fn", s))
                ln = line(obj, params, d, fa).table
                lines.append(ln.assign(weight_decay=wd, regime=regime, direction_seed=s))
        curve = interpolation_curve(trained[("sb", wd)], trained[("lb", wd)], sets, cfg,
                                    np.linspace(-0.5, 1.5, v["interpolation_points"]))
        curves.append(curve.assign(weight_decay=wd))
    runs_df, curves_df, lines_df = pd.DataFrame(runs), pd.concat(curves), pd.concat(lines)
    m = vgg_measurements(runs_df, curves_df, lines_df, v["fn_radius"])
    figs = {"interpolation": FigureOut(_interp_figure(curves_df, v), _interp_caption(cfg, sets, m)),
            "fn_lines": FigureOut(_lines_figure(lines_df), _lines_caption(cfg, sets, m))}
    return StepResult(measurements=m, tables={"vgg_runs": runs_df, "interpolation": curves_df, "fn_lines": lines_df},
                      figures=figs)


def vgg_paper_key(regime: str, wd: float) -> str:
    """The key of ``theory.paper_test_error_unverified()`` for a VGG run: ``vgg9_sb_wd0``, ``vgg9_lb_wd5e-4``."""
    mantissa, exponent = f"{wd:.0e}".split("e")
    return f"vgg9_{regime}_wd" + ("0" if wd == 0 else f"{mantissa}e{int(exponent)}")


def vgg_measurements(runs: pd.DataFrame, curves: pd.DataFrame, lines: pd.DataFrame, radius: float) -> dict[str, Any]:
    """L1: which end of the un-normalised interpolation looks sharper (second difference of the
    training loss at α = 0 and 1), per weight decay; L2: filter-normalised 1D sharpness (mean rise
    within ``radius``) against test error, per weight decay."""
    wds = sorted(runs["weight_decay"].unique())
    lb_sharper, agree, err_sb, err_lb, fn_sb, fn_lb = [], [], [], [], [], []
    for wd in wds:
        c = curves[(curves["weight_decay"] == wd) & (curves["split"] == "train")].sort_values("alpha")
        k_sb = theory.second_difference(c["alpha"], c["loss"], 0.0)
        k_lb = theory.second_difference(c["alpha"], c["loss"], 1.0)
        lb_sharper.append(bool(k_lb > k_sb))
        r = runs[runs["weight_decay"] == wd].set_index("regime")
        sharp = {}
        for regime in ("sb", "lb"):
            ls = lines[(lines["weight_decay"] == wd) & (lines["regime"] == regime)]
            sharp[regime] = float(np.mean([theory.mean_rise(g.sort_values("alpha")["alpha"], g.sort_values("alpha")[
                "loss"], radius) for _, g in ls.groupby("direction_seed")]))
        e_sb, e_lb = float(r.loc["sb", "test_error_pct"]), float(r.loc["lb", "test_error_pct"])
        err_sb.append(e_sb)
        err_lb.append(e_lb)
        fn_sb.append(sharp["sb"])
        fn_lb.append(sharp["lb"])
        agree.append(int(e_lb != e_sb and (sharp["lb"] > sharp["sb"]) == (e_lb > e_sb)))
    testable = len(wds) == 2 and wds[0] == 0 and wds[1] > 0
    flip: Any = bool(lb_sharper[0] and not lb_sharper[1]) if testable else {
        "not_testable": "L1 needs weight decays [0, w > 0]"}
    return {"l1_lb_sharper": lb_sharper, "l1_lb_sharper_wd0": lb_sharper[0] if testable else flip, "l1_flip": flip,
            "l2_agree": agree, "l2_agree_fraction": float(np.mean(agree)), "vgg_test_error_sb": err_sb,
            "vgg_test_error_lb": err_lb, "l2_fn_sharpness_sb": fn_sb, "l2_fn_sharpness_lb": fn_lb}


def _interp_figure(curves: pd.DataFrame, v: Mapping[str, Any]) -> Any:
    wds = sorted(curves["weight_decay"].unique())
    fig, axes = plt.subplots(1, len(wds), figsize=(5 * len(wds), 3.6), squeeze=False)
    for ax, wd in zip(axes[0], wds, strict=True):
        c = curves[curves["weight_decay"] == wd]
        ax2 = ax.twinx()
        for split, colour in (("train", "tab:blue"), ("test", "tab:red")):
            t = c[c["split"] == split].sort_values("alpha")
            ax.plot(t["alpha"], t["loss"], color=colour, label=f"{split} loss")
            ax2.plot(t["alpha"], 100 * t["accuracy"], color=colour, ls="--", label=f"{split} accuracy")
        ax.set_yscale("log")
        ax.set_xlabel(rf"$\alpha$ (0: SB, batch {v['sb_batch']}; 1: LB, batch {v['lb_batch']})")
        ax.set_ylabel("loss")
        ax2.set_ylabel("accuracy (%)")
        ax.set_title(f"weight decay {wd:g}")
        ax.legend(fontsize="small", loc="upper center")
    fig.tight_layout()
    return fig


def _lines_figure(lines: pd.DataFrame) -> Any:
    wds = sorted(lines["weight_decay"].unique())
    fig, axes = plt.subplots(1, len(wds), figsize=(5 * len(wds), 3.6), squeeze=False, sharey=True)
    for ax, wd in zip(axes[0], wds, strict=True):
        for regime, colour in (("sb", "tab:blue"), ("lb", "tab:orange")):
            for s, g in lines[(lines["weight_decay"] == wd) & (lines["regime"] == regime)].groupby("direction_seed"):
                g = g.sort_values("alpha")
                ax.plot(g["alpha"], g["loss"], color=colour, alpha=0.8, label=regime.upper() if s == 0 else None)
        ax.set_yscale("log")
        ax.set_xlabel(r"$\alpha$ (filter-normalised direction)")
        ax.set_title(f"weight decay {wd:g}")
        ax.legend(fontsize="small")
    axes[0][0].set_ylabel("training loss")
    fig.tight_layout()
    return fig


def _interp_caption(cfg: Mapping[str, Any], sets: Mapping[str, Any], m: Mapping[str, Any]) -> str:
    v = cfg["vgg"]
    return (f"Un-normalised 1D interpolation f((1−α)θ_SB + αθ_LB) between the SB (batch {v['sb_batch']}) and LB "
            f"(batch {v['lb_batch']}) minima of {v['model']} {v.get('model_kwargs', {})}, per weight decay "
            f"{v['weight_decays']} (Li et al. Figs. 2–3). Training loss on {sets['surface_name']}, test loss on the "
            f"test set; BatchNorm eval mode with the running statistics interpolated as the weights "
            f"(variances floored at 0). LB looks sharper (second difference at α=1 > at α=0), per weight decay: "
            f"{m['l1_lb_sharper']}; flip with weight decay: {m['l1_flip']}. Test errors SB "
            f"{_pct(m['vgg_test_error_sb'])}, LB {_pct(m['vgg_test_error_lb'])}. Seed {cfg['seed']}.")


def _lines_caption(cfg: Mapping[str, Any], sets: Mapping[str, Any], m: Mapping[str, Any]) -> str:
    v = cfg["vgg"]
    return (f"Training loss along {v['fn_directions']} filter-normalised random directions (biases and BatchNorm "
            f"zeroed; seeds seeds.derive({cfg['seed']}, '{MODULE}', 'vgg', regime, wd, 'fn', s)) at the SB and LB "
            f"minima (Li et al. Fig. 5, 1D), on {sets['surface_name']}, BatchNorm eval mode. Mean rise within "
            f"|α| ≤ {v['fn_radius']}: SB {_num(m['l2_fn_sharpness_sb'])}, LB {_num(m['l2_fn_sharpness_lb'])}; "
            f"sharper one has the higher test error (per weight decay): {m['l2_agree']}.")


def _pct(xs: Any) -> str:
    return "[" + ", ".join(f"{x:.2f} %" for x in xs) + "]"


def _num(xs: Any) -> str:
    return "[" + ", ".join(f"{x:.3g}" for x in xs) + "]"


# --- step resnets: L3-L7 ---------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class NetSpec:
    depth: int
    width: int
    noshort: bool

    @property
    def name(self) -> str:
        return f"resnet{self.depth}" + (f"_w{self.width}" if self.width > 1 else "") + (
            "_noshort" if self.noshort else "")

    @property
    def paper_name(self) -> str:
        base = f"wrn{self.depth}_{self.width}" if self.width > 1 else f"resnet{self.depth}"
        return base + ("_noshort" if self.noshort else "")


def net_specs(r: Mapping[str, Any]) -> list[NetSpec]:
    """Depth sweep at width 1 (± shortcuts), then the width sweep at ``width_depth`` (± shortcuts)."""
    specs = [NetSpec(d, 1, ns) for d in r["depths"] for ns in (False, True)]
    for k in r["widths"]:
        for ns in (False, True):
            s = NetSpec(r["width_depth"], k, ns)
            if s not in specs:
                specs.append(s)
    return specs


def surface_scores(table: pd.DataFrame, s: Mapping[str, Any], num_classes: int) -> dict[str, float]:
    a, b, z = to_grid(table, "loss")
    return {"grid_minima": theory.grid_local_minima(z),
            "grid_nc_fraction": theory.grid_nonconvex_fraction(z, a, b, t=s["t"], level=math.log(num_classes)),
            "axis_width": theory.axis_width(z, a, b, rise=s["width_rise"])}


def resnets(cfg: dict[str, Any]) -> StepResult:
    """ResNets ± shortcuts over depths and widths: 2D surfaces, scores, Hessian maps, seeds, PCA."""
    r, tcfg, sc = cfg["resnets"], cfg["training"], cfg["scores"]
    sets = load_sets(cfg)
    ncls = int(sets["train"].num_classes)
    base = {"in_channels": int(sets["train"].x.shape[-1]), "num_classes": ncls, "base_width": r["base_width"]}
    specs = net_specs(r)
    deepest = max(r["depths"])
    seed_nets = {NetSpec(deepest, 1, False), NetSpec(deepest, 1, True)}
    hess_nets = {"deepest": seed_nets, "all": set(specs), "skip": set()}[cfg["hessian"]["nets"]]
    traj_net = NetSpec(deepest, 1, False)
    al = axis(cfg)
    hal = np.linspace(-cfg["grid"]["range"], cfg["grid"]["range"], cfg["hessian"]["points"])
    n_train, n_surf, npts = len(sets["train"]), len(sets["surface"]), len(al) ** 2
    total = 0.0
    for sp in specs:
        n, p, s = init_network(registry.builder("resnet", depth=sp.depth, width=sp.width, noshort=sp.noshort, **base),
                               jax.random.key(0))
        fwd = forward_flops(n, p, s, sets["train"].x)
        total += fwd * (r["epochs"] * n_train * 3 + npts * n_surf * (
            1 + (cfg["seeds"]["direction_seeds"] - 1 if sp in seed_nets else 0) + (sp == traj_net)))
        if sp in hess_nets:
            total += fwd * len(hal) ** 2 * cfg["hessian"]["lanczos_steps"] * HVP_FORWARDS * n_surf
    _projected_cost(f"resnets: {len(specs)} trainings, {len(specs) + 2 * (cfg['seeds']['direction_seeds'] - 1) + 1} "
                    f"{len(al)}x{len(al)} surfaces, {len(hess_nets)} Hessian maps", total)
    runs, surfaces, maps, seed_rows = [], [], [], []
    traj_out: dict[str, Any] = {}
    for sp in specs:
        t0 = time.time()
        build = registry.builder("resnet", depth=sp.depth, width=sp.width, noshort=sp.noshort, **base)
        lr = tcfg["lr"] * (r["noshort_lr_factor"] if sp.noshort else 1.0)
        tr = train_net(build, (sp.name,), sets, tcfg, batch=tcfg["batch"], weight_decay=tcfg["weight_decay"], lr=lr,
                       epochs=r["epochs"], seed=cfg["seed"], trajectory=sp == traj_net)
        t_train = time.time() - t0
        obj, params = surface_objective(tr, sets, cfg)
        n_seeds = cfg["seeds"]["direction_seeds"] if sp in seed_nets else 1
        t_hess = 0.0
        row: dict[str, Any] = {}
        for s in range(n_seeds):
            d1, d2 = directions(params, cfg["seed"], sp.name, s)
            tab = plane(obj, params, d1, d2, al, al, chunk_size=r["chunk_size"]).table
            scores = surface_scores(tab, sc, ncls)
            if s == 0:
                surfaces.append(tab.assign(net=sp.name))
                row = scores
                if sp in hess_nets:
                    t1 = time.time()
                    hm = eigenvalue_map(obj, params, d1, d2, hal, hal, seeds.derive(cfg["seed"], MODULE, sp.name,
                                                                                    "lanczos"),
                                        num_steps=cfg["hessian"]["lanczos_steps"], chunk_size=len(hal) ** 2)
                    maps.append(hm.assign(net=sp.name))
                    row["hessian_nc_fraction"] = theory.hessian_nonconvex_fraction(hm["lambda_min"], hm["lambda_max"],
                                                                                   t=sc["t"])
                    row["hessian_mean_ratio"] = float(np.mean(hm["ratio"]))
                    t_hess = time.time() - t1
            if sp in seed_nets:
                seed_rows.append({"net": sp.name, "noshort": sp.noshort, "direction_seed": s, **scores})
        t_traj = time.time()
        if sp == traj_net:
            traj_out = trajectory_plane(tr, obj, params, al, r["chunk_size"], cfg["seed"], sp.name)
        t_traj = time.time() - t_traj
        runs.append({"net": sp.name, "depth": sp.depth, "width": sp.width, "shortcut": not sp.noshort,
                     "base_width": r["base_width"], "lr": lr, "epochs": r["epochs"],
                     "test_error_pct": tr["test_error"], "train_loss": tr["train_loss"], "failed": tr["failed"],
                     "analogue_of": sp.paper_name if r["analogue"] else "",
                     "paper_test_error_pct_unverified": theory.paper_test_error_unverified().get(sp.paper_name, np.nan),
                     **row})
        print(f"[{MODULE}] {sp.name}: test error {tr['test_error']:.2f} %, minima {row['grid_minima']}, "
              f"nc {row['grid_nc_fraction']:.3f} ({time.time() - t0:.1f} s: training {t_train:.1f}, Hessian map "
              f"{t_hess:.1f}, PCA plane {t_traj:.1f}, surfaces the rest)", flush=True)
    runs_df, seeds_df = pd.DataFrame(runs), pd.DataFrame(seed_rows)
    surf_df = pd.concat(surfaces, ignore_index=True)
    maps_df = pd.concat(maps, ignore_index=True) if maps else pd.DataFrame()
    m = resnet_measurements(runs_df, seeds_df, r, traj_out)
    tables = {"resnet_runs": runs_df, "surfaces": surf_df, "hessian_maps": maps_df, "seed_scores": seeds_df,
              "trajectory": traj_out["coords"]}
    cap = (f"on {sets['surface_name']}, BatchNorm eval mode, filter-normalised directions with biases and "
           f"BatchNorm zeroed (seeds seeds.derive({cfg['seed']}, '{MODULE}', net, 'direction', s, 'x'|'y'), s = 0 "
           f"unless stated), {len(al)}×{len(al)} grid on [−{cfg['grid']['range']}, {cfg['grid']['range']}]²")
    figs = {
        "contours": FigureOut(_contours(surf_df, runs_df), f"Loss contours of every ResNet (Li et al. Figs. 5–6) "
                              f"{cap}; the same levels for every panel (Li's 0.1 to 10 by 0.5). Strict local minima "
                              f"and non-convex fraction (t = {sc['t']}) in each title."),
        "surfaces_3d": FigureOut(_surfaces3d(surf_df, runs_df, r), f"3D loss surfaces (clipped at "
                                 f"{r['zmax']}, the same z-axis for every panel) {cap}. Static rendering only "
                                 f"(the report embeds PNGs)."),
        "convexity_maps": FigureOut(_maps(maps_df), "|λ_min/λ_max| of the full Hessian (Lanczos, "
                                    f"{cfg['hessian']['lanczos_steps']} steps per point) on a "
                                    f"{len(hal)}×{len(hal)} grid (Li et al. Fig. 7), {cap}; colour scale 0 to 1 for "
                                    f"every panel. Non-convex fraction (λ_min/λ_max < −{sc['t']}) in each title."),
        "trajectory": FigureOut(_trajectory(traj_out), f"Optimisation path of {traj_net.name} (one snapshot per "
                                f"epoch) projected on the top-2 PCA directions of [θ_i − θ_final] (biases and BN "
                                f"zeroed), over the loss on that plane (Li et al. Fig. 9), {sets['surface_name']}. "
                                f"Explained variance {traj_out['ratio'][0]:.3f} + {traj_out['ratio'][1]:.3f}; two "
                                f"random filter-normalised directions capture {traj_out['random']:.2e}. Paper "
                                f"(unverified [S]): 40–90 %."),
        "seed_spread": FigureOut(_seed_fig(seeds_df), f"Non-convexity score and contour width over "
                                 f"{cfg['seeds']['direction_seeds']} direction seeds for the deepest pair (L7, ours) "
                                 f"{cap}."),
    }
    return StepResult(measurements=m, tables=tables, figures=figs)


def trajectory_plane(tr: Mapping[str, Any], obj: Objective, params: Any, al: np.ndarray, chunk_size: int,
                     seed: int, name: str) -> dict[str, Any]:
    """PCA of the snapshots (biasbn zeroed), the loss on the PCA plane around θ_final, and the share of
    the motion two random filter-normalised directions capture."""
    unravel = ravel_pytree(params)[1]
    traj = [unravel(jnp.asarray(row)) for row in np.asarray(tr["trajectory"])]
    pca = pca_directions(traj, ignore="biasbn")
    span = float(np.max(np.abs(pca.coordinates))) * 1.2 or 1.0
    grid_ax = al / np.max(np.abs(al)) * span
    tab = plane(obj, params, pca.directions[0], pca.directions[1], grid_ax, grid_ax, chunk_size=chunk_size).table
    rows = np.stack([np.asarray(ravel_pytree(t)[0], np.float64) for t in traj])
    mask = np.asarray(ravel_pytree(biasbn_mask(params))[0], np.float64)
    diffs = (rows - rows[-1]) * mask
    centred = diffs - diffs.mean(axis=0)
    d1, d2 = directions(params, seed, name, 0)
    basis, _ = np.linalg.qr(np.stack([np.asarray(ravel_pytree(d)[0], np.float64) for d in (d1, d2)], axis=1))
    total = float(np.sum(centred**2))
    random_share = float(np.sum((centred @ basis) ** 2) / total) if total > 0 else float("nan")
    coords = pd.DataFrame({"epoch": np.arange(len(traj)), "pc1": pca.coordinates[:, 0], "pc2": pca.coordinates[:, 1]})
    return {"table": tab, "coords": coords, "ratio": [float(x) for x in pca.explained_variance_ratio],
            "random": random_share}


def resnet_measurements(runs: pd.DataFrame, seeds_df: pd.DataFrame, r: Mapping[str, Any],
                        traj: Mapping[str, Any]) -> dict[str, Any]:
    """L3-L7 quantities from the per-net table (theory.py scores) and the per-seed table."""
    w1 = runs[runs["width"] == 1].sort_values("depth")
    short, noshort = w1[w1["shortcut"]], w1[~w1["shortcut"]]
    nc_s, nc_n = [float(x) for x in short["grid_nc_fraction"]], [float(x) for x in noshort["grid_nc_fraction"]]
    mn_s, mn_n = [int(x) for x in short["grid_minima"]], [int(x) for x in noshort["grid_minima"]]
    m: dict[str, Any] = {"depths": [int(d) for d in short["depth"]], "nc_short": nc_s, "nc_noshort": nc_n,
                         "minima_short": mn_s, "minima_noshort": mn_n,
                         "test_error_short": [float(x) for x in short["test_error_pct"]],
                         "test_error_noshort": [float(x) for x in noshort["test_error_pct"]]}
    if len(nc_s) >= 2:
        m.update({"l3_rise_noshort": nc_n[-1] - nc_n[0], "l3_rise_short": nc_s[-1] - nc_s[0],
                  "l3_gap_deepest": nc_n[-1] - nc_s[-1], "l3_minima_gap_deepest": mn_n[-1] - mn_s[-1]})
    else:
        why = {"not_testable": f"L3 needs at least two depths; this scale has {m['depths']}"}
        m.update({k: why for k in ("l3_rise_noshort", "l3_rise_short", "l3_gap_deepest", "l3_minima_gap_deepest")})
    wd = runs[(runs["depth"] == r["width_depth"]) & ~runs["shortcut"]].sort_values("width")
    if len(wd) >= 2:
        m["l4_nc_noshort"] = [float(x) for x in wd["grid_nc_fraction"]]
        m["l4_minima_noshort"] = [int(x) for x in wd["grid_minima"]]
    else:
        why = {"not_testable": f"L4 needs at least two widths; this scale has {list(r['widths'])}"}
        m["l4_nc_noshort"] = m["l4_minima_noshort"] = why
    m["widths"] = [int(x) for x in wd["width"]]
    deep = runs[(runs["depth"] == max(r["depths"])) & (runs["width"] == 1)].set_index("shortcut")
    if "hessian_nc_fraction" in deep and deep["hessian_nc_fraction"].notna().all():
        m["l5_hess_nc_short"] = float(deep.loc[True, "hessian_nc_fraction"])
        m["l5_hess_nc_noshort"] = float(deep.loc[False, "hessian_nc_fraction"])
        m["l5_gap"] = m["l5_hess_nc_noshort"] - m["l5_hess_nc_short"]
        m["l5_ratio_gap"] = float(deep.loc[False, "hessian_mean_ratio"] - deep.loc[True, "hessian_mean_ratio"])
    else:
        why = {"not_testable": "no Hessian map for the deepest pair"}
        m.update({k: why for k in ("l5_hess_nc_short", "l5_hess_nc_noshort", "l5_gap", "l5_ratio_gap")})
    m["l6_pca_explained_2"] = float(sum(traj["ratio"][:2]))
    m["l6_random_explained_2"] = traj["random"]
    sd = seeds_df
    nc7_n = [float(x) for x in sd[sd["noshort"]].sort_values("direction_seed")["grid_nc_fraction"]]
    nc7_s = [float(x) for x in sd[~sd["noshort"]].sort_values("direction_seed")["grid_nc_fraction"]]
    if len(nc7_n) >= 2:
        m["l7_nc_noshort"], m["l7_nc_short"] = nc7_n, nc7_s
        m["l7_seed_diffs"] = [a - b for a, b in zip(nc7_n, nc7_s, strict=True)]
        cvs = [float(np.std(g["axis_width"], ddof=1) / np.mean(g["axis_width"])) for _, g in sd.groupby("net")]
        m["l7_width_cv"] = max(cvs)
    else:
        why = {"not_testable": "L7 needs at least two direction seeds"}
        m.update({k: why for k in ("l7_nc_noshort", "l7_nc_short", "l7_seed_diffs", "l7_width_cv")})
    return m


def _panel_grid(n: int, three_d: bool = False) -> tuple[Any, list[Any]]:
    cols = min(n, 4)
    rows = math.ceil(n / cols)
    fig = plt.figure(figsize=(3.6 * cols, 3.4 * rows))
    kw = {"projection": "3d"} if three_d else {}
    return fig, [fig.add_subplot(rows, cols, i + 1, **kw) for i in range(n)]


def _contours(surf: pd.DataFrame, runs: pd.DataFrame) -> Any:
    names = list(runs["net"])
    fig, axes = _panel_grid(len(names))
    info = runs.set_index("net")
    for ax, name in zip(axes, names, strict=True):
        a, b, z = to_grid(surf[surf["net"] == name], "loss")
        ax.contour(a, b, z, levels=LI_LEVELS, cmap="summer")
        ax.set_aspect("equal", adjustable="box")
        ax.set_title(f"{name}\nminima {info.loc[name, 'grid_minima']}, nc {info.loc[name, 'grid_nc_fraction']:.2f}",
                     fontsize=8)
    fig.tight_layout()
    return fig


def _surfaces3d(surf: pd.DataFrame, runs: pd.DataFrame, r: Mapping[str, Any]) -> Any:
    names = list(runs["net"])
    fig, axes = _panel_grid(len(names), three_d=True)
    for ax, name in zip(axes, names, strict=True):
        a, b, z = to_grid(surf[surf["net"] == name], "loss")
        aa, bb = np.meshgrid(a, b)
        ax.plot_surface(aa, bb, np.minimum(z, r["zmax"]), cmap="coolwarm", linewidth=0, vmin=0, vmax=r["zmax"])
        ax.set_zlim(0, r["zmax"])
        ax.set_title(name, fontsize=8)
    fig.tight_layout()
    return fig


def _maps(maps: pd.DataFrame) -> Any:
    names = list(dict.fromkeys(maps["net"])) if len(maps) else []
    fig, axes = _panel_grid(max(len(names), 1))
    for ax, name in zip(axes, names, strict=False):
        a, b, z = to_grid(maps[maps["net"] == name], "ratio")
        mesh = ax.pcolormesh(a, b, z, cmap="viridis", vmin=0.0, vmax=1.0, shading="auto")
        ax.set_aspect("equal", adjustable="box")
        ax.set_title(name, fontsize=8)
        fig.colorbar(mesh, ax=ax)
    fig.tight_layout()
    return fig


def _trajectory(traj: Mapping[str, Any]) -> Any:
    tab, c, ratio = traj["table"], traj["coords"], traj["ratio"]
    a, b, z = to_grid(tab, "loss")
    fig, ax = plt.subplots(figsize=(4.6, 4.2))
    ax.contour(a, b, z, levels=LI_LEVELS, cmap="summer")
    ax.plot(c["pc1"], c["pc2"], "-o", color="tab:red", ms=3, lw=1)
    ax.plot(c["pc1"].iloc[-1], c["pc2"].iloc[-1], "*", color="k", ms=9)
    ax.set_xlabel(f"1st PC: {100 * ratio[0]:.1f} %")
    ax.set_ylabel(f"2nd PC: {100 * ratio[1]:.1f} %")
    fig.tight_layout()
    return fig


def _seed_fig(sd: pd.DataFrame) -> Any:
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.2))
    for name, g in sd.groupby("net"):
        axes[0].plot(g["direction_seed"], g["grid_nc_fraction"], "o-", label=name)
        axes[1].plot(g["direction_seed"], g["axis_width"], "o-", label=name)
    axes[0].set_ylabel("non-convex fraction")
    axes[1].set_ylabel("contour width")
    for ax in axes:
        ax.set_xlabel("direction seed")
        ax.legend(fontsize="small")
    fig.tight_layout()
    return fig
