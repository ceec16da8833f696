"""Dauphin et al. (2014) experiments: the steps ``module.py`` declares.

- ``critical_points``: a tanh MLP on downsampled digits (``theory``); starts along Adam runs, Newton-MR
  from each (``shared.critical.finder``), every end point described by its exact Hessian. Index vs
  training error (DA1); gradient descent from a perturbed saddle, the steps it spends within δ of
  the saddle's loss (DA2); Newton, gradient descent and saddle-free Newton from the same perturbed
  saddles (DA3-escape).
- ``sfn_from_sgd``: from SGD end points (one per seed), the same number of iterations of gradient
  descent, damped Newton and saddle-free Newton, each with its best setting from a declared grid
  (DA3-sgd).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pandas as pd

from replications.dauphin_saddle_points import theory
from shared import plotting, seeds
from shared.benchmarking import print_projected_cost
from shared.critical import finder
from shared.critical.starts import adam_snapshots
from shared.module import FigureOut, StepResult

MODULE = "dauphin_saddle_points"
CLASSES = 10


def _data(cfg: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    from shared import data

    spec = cfg["data"]
    ds = data.load(spec["name"], "train")
    x = np.asarray(ds.x)[: spec["samples"]]
    y = np.asarray(ds.y)[: spec["samples"]].astype(np.int32)
    return theory.downsample(x, spec["side"]), y


def _loss(cfg: dict[str, Any]) -> tuple[Any, np.ndarray, np.ndarray, int]:
    x, y = _data(cfg)
    net = cfg["net"]
    loss = theory.mlp_loss(x, y, net["hidden"], CLASSES, net["weight_decay"])
    return loss, x, y, theory.num_params(x.shape[1], net["hidden"], CLASSES)


def _class_error(points: np.ndarray, x: np.ndarray, y: np.ndarray, hidden: int) -> np.ndarray:
    fn = jax.jit(jax.vmap(lambda t: jnp.mean(jnp.argmax(theory.mlp_logits(t, jnp.asarray(x), hidden, CLASSES), 1)
                                             != jnp.asarray(y))))
    return np.asarray(fn(jnp.asarray(points)))




def _perturb(rng: np.random.Generator, points: np.ndarray, radius: float) -> np.ndarray:
    d = rng.standard_normal(points.shape)
    return points + radius * d / np.linalg.norm(d, axis=1, keepdims=True)


def spearman_fisher(x: list[float], y: list[float], level: float = 0.05) -> tuple[float, list[float]]:
    """Spearman's ρ (scipy.stats.spearmanr) and its two-sided (1 − level) Fisher-z interval with the
    Bonett & Wright (2000) standard error √((1 + ρ²/2)/(n − 3)); NaNs when n < 4 or ρ is undefined."""
    from scipy import stats

    xs, ys = np.asarray(x, float), np.asarray(y, float)
    if xs.size < 4 or not (np.isfinite(xs).all() and np.isfinite(ys).all()):
        return float("nan"), [float("nan"), float("nan")]
    rho = float(stats.spearmanr(xs, ys).statistic)
    if not np.isfinite(rho):
        return float("nan"), [float("nan"), float("nan")]
    z = np.arctanh(np.clip(rho, -0.999999, 0.999999))
    half = float(stats.norm.ppf(1 - level / 2)) * np.sqrt((1 + rho**2 / 2) / (xs.size - 3))
    return rho, [float(np.tanh(z - half)), float(np.tanh(z + half))]


def _pairs(frame: pd.DataFrame, x: str, y: str) -> tuple[list[float], list[float]]:
    if len(frame) < 3:  # a trend needs points: NaNs make the rule fail, saying so
        return [float("nan")] * 3, [float("nan")] * 3
    return frame[x].tolist(), frame[y].tolist()


# --- DA1, DA2, DA3-escape -------------------------------------------------------------------------

def critical_points(cfg: dict[str, Any]) -> StepResult:
    search, plateau, escape = cfg["search"], cfg["plateau"], cfg["escape"]
    loss, x, y, p_dim = _loss(cfg)
    m = x.shape[0]
    rows = search["starts"] * len(search["checkpoints"])
    # the dense Hessian is ~P Hessian-vector products of ~4 passes of 2·m·P FLOP each; MINRES ≤ P P² products
    per_newton = 8.0 * m * p_dim**2 + 2.0 * p_dim**3
    print_projected_cost(MODULE, "critical_points (Newton-MR, exact Hessians)",
                         rows * search["newton_steps"] * (per_newton + search["backtracks"] * 4.0 * m * p_dim)
                         + rows * per_newton + (escape["saddles"] * 3 * escape["iterations"] + rows) * per_newton
                         + rows * plateau["steps"] * 4.0 * m * p_dim)
    rng = seeds.numpy_rng(cfg["seed"], MODULE, "starts")
    x0 = theory.init_params(rng, x.shape[1], cfg["net"]["hidden"], CLASSES, search["starts"])
    starts = adam_snapshots(loss, x0, search["checkpoints"], search["lr"])
    found, pts = finder.find_critical_points(loss, starts, steps=search["newton_steps"], dense=True,
                                             backtracks=search["backtracks"], max_step=search["max_step"])
    table = pts.frame().assign(steps=found.steps, checkpoint=np.tile(search["checkpoints"], search["starts"]),
                               class_error=_class_error(pts.points, x, y, cfg["net"]["hidden"]))
    usable = table.category != finder.DIVERGED
    approx_mask = (usable & (table.rel_grad <= search["approx_rtol"])).to_numpy()
    strict_mask = (table.category == finder.CRITICAL).to_numpy()
    approx, strict = table[approx_mask], table[strict_mask]
    error_strict, index_strict = _pairs(strict, "loss", "index_fraction")
    error_approx, index_approx = _pairs(approx, "loss", "index_fraction")

    # DA2: GD from each approximate saddle (index >= 1), perturbed; control: GD from the Newton starts
    saddle_ids = np.flatnonzero(approx_mask & (table["index"].to_numpy() >= 1))
    prng = seeds.numpy_rng(cfg["seed"], MODULE, "perturb")
    near = _perturb(prng, pts.points[saddle_ids], plateau["perturbation"]) if len(saddle_ids) else np.zeros((0, p_dim))
    # one compiled GD run for the saddles and the control together
    both = theory.gd_losses(loss, np.concatenate([near, starts]), plateau["lr"], plateau["steps"])
    gd, control_losses = both[: len(saddle_ids)], both[len(saddle_ids):]
    # the band is around the saddle's own loss: prepend it so steps_within measures from L_saddle
    plateau_steps = theory.steps_within(np.concatenate([table.loss.to_numpy()[saddle_ids, None], gd], 1),
                                        plateau["delta"]) - 1
    control_steps = theory.steps_within(control_losses, plateau["delta"])
    saddle_index = table["index"].to_numpy()[saddle_ids]
    plat = pd.DataFrame({"point": saddle_ids, "index": saddle_index, "loss": table.loss.to_numpy()[saddle_ids],
                         "plateau_steps": plateau_steps, "censored": plateau_steps >= plateau["steps"]})

    # DA3-escape: Newton (undamped), GD and SFN from the same perturbed saddles
    pick = saddle_ids[np.argsort(~strict_mask[saddle_ids], kind="stable")][: escape["saddles"]]
    erng = seeds.numpy_rng(cfg["seed"], MODULE, "escape")
    esc_start = _perturb(erng, pts.points[pick], escape["perturbation"]) if len(pick) else np.zeros((0, p_dim))
    esc: dict[str, Any] = {}
    if len(pick):
        for name, param in (("newton", 0.0), ("gd", escape["gd_lr"]), ("sfn", escape["damping"])):
            end, losses = theory.run_method(loss, esc_start, theory.METHODS[name], param, escape["iterations"],
                                            escape["max_step"])
            esc[name] = (end, losses)
        saddle_loss = table.loss.to_numpy()[pick]
        dist0 = np.linalg.norm(esc_start - pts.points[pick], axis=1)
        newton_ratio = np.linalg.norm(esc["newton"][0] - pts.points[pick], axis=1) / dist0
        drop = {k: saddle_loss - np.nan_to_num(v[1][:, -1], nan=np.inf) for k, v in esc.items()}
        escape_table = pd.DataFrame({"point": pick, "index": table["index"].to_numpy()[pick],
                                     "saddle_loss": saddle_loss, "newton_distance_ratio": newton_ratio,
                                     **{f"{k}_loss_drop": v for k, v in drop.items()}})
        newton_returned = float(np.mean(newton_ratio <= escape["return_ratio"]))
        sfn_escaped = float(np.mean(drop["sfn"] >= escape["escape_drop"]))
        gd_escaped = float(np.mean(drop["gd"] >= escape["escape_drop"]))
    else:
        escape_table = pd.DataFrame(columns=["point", "index", "saddle_loss", "newton_distance_ratio"])
        newton_returned = sfn_escaped = gd_escaped = float("nan")

    measurements = {
        "parameters": p_dim, "samples": m, "end_points": len(table), "critical_points": int(strict_mask.sum()),
        "critical_fraction": float(strict_mask.mean()),
        "gradient_flat_fraction": float(np.mean(table.category == finder.GRADIENT_FLAT)),
        "approx_points": int(approx_mask.sum()),
        "error_strict": error_strict, "index_strict": index_strict,
        "error_approx": error_approx, "index_approx": index_approx,
        **dict(zip(("spearman_strict", "spearman_strict_interval"), spearman_fisher(error_strict, index_strict),
                   strict=True)),
        **dict(zip(("spearman_approx", "spearman_approx_interval"), spearman_fisher(error_approx, index_approx),
                   strict=True)),
        "saddles": len(saddle_ids),
        "plateau_steps": plateau_steps.tolist() if len(saddle_ids) >= 3 else [float("nan")] * 3,
        "plateau_index": saddle_index.tolist() if len(saddle_ids) >= 3 else [float("nan")] * 3,
        "plateau_steps_control": control_steps.tolist(),
        "escape_saddles": len(pick), "newton_returned_fraction": newton_returned,
        "sfn_escaped_fraction": sfn_escaped, "gd_escaped_fraction": gd_escaped,
        "sfn_minus_gd_escaped": sfn_escaped - gd_escaped,
    }
    plotting.setup()
    return StepResult(
        measurements=measurements,
        tables={"end_points": table, "plateaus": plat, "escapes": escape_table},
        figures={"index_error": _plot_index_error(table, search, measurements),
                 "plateaus": _plot_plateaus(gd, table.loss.to_numpy()[saddle_ids], saddle_index, esc,
                                            cfg, measurements)},
    )


def _plot_index_error(table: pd.DataFrame, spec: dict[str, Any], meas: dict[str, Any]) -> FigureOut:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4.2))
    colors = {finder.CRITICAL: "C0", finder.GRADIENT_FLAT: "C3", finder.NOT_CONVERGED: "C7", finder.DIVERGED: "k"}
    for cat, group in table.groupby("category"):
        close = group.rel_grad <= spec["approx_rtol"]
        ax.scatter(group.loss[close], 100 * group.index_fraction[close], s=16, color=colors[str(cat)],
                   label=f"{cat}, ‖∇L‖/(L+1) ≤ {spec['approx_rtol']:g} ({int(close.sum())})")
        ax.scatter(group.loss[~close], 100 * group.index_fraction[~close], s=8, facecolors="none",
                   edgecolors=colors[str(cat)], alpha=0.5, label=f"{cat}, farther ({int((~close).sum())})")
    ax.set(xlabel="training error ε (cross-entropy + weight decay)", ylabel="index α (%)",
           title="Index vs training error of Newton-MR end points")
    ax.legend(fontsize=6)
    caption = (f"Newton-MR end points (float64, exact Hessians) of a {meas['parameters']}-parameter tanh MLP on "
               f"{meas['samples']} downsampled digits, from {spec['starts']} Adam runs at steps {spec['checkpoints']}. "
               f"{meas['critical_points']} of {meas['end_points']} are critical "
               f"(‖∇L‖/(L+1) ≤ {finder.CRITICAL_RTOL:g}), "
               f"{meas['approx_points']} within {spec['approx_rtol']:g} (filled), "
               f"{100 * meas['gradient_flat_fraction']:.0f}% gradient-flat. Spearman's ρ(ε, α), critical points: "
               f"{meas['spearman_strict']:.2f}, 95% Fisher interval [{meas['spearman_strict_interval'][0]:.2f}, "
               f"{meas['spearman_strict_interval'][1]:.2f}]. Paper Fig. 1: α rises roughly linearly "
               "with ε (MNIST, CIFAR-10; sizes not found).")
    return FigureOut(fig, caption)


def _plot_plateaus(gd: np.ndarray, saddle_loss: np.ndarray, index: np.ndarray, esc: dict[str, Any],
                   cfg: dict[str, Any], meas: dict[str, Any]) -> FigureOut:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    ax = axes[0]
    for i in range(min(len(gd), 12)):
        ax.plot(gd[i] - saddle_loss[i], lw=0.8, label=f"index {index[i]}" if i < 6 else None)
    ax.axhline(-cfg["plateau"]["delta"], color="k", ls=":", lw=0.8)
    ax.set(xlabel="gradient-descent step", ylabel="L − L(saddle)", title="GD from perturbed saddles (DA2)")
    ax.legend(fontsize=6)
    ax = axes[1]
    for (name, (_, losses)), color in zip(esc.items(), ("C0", "C1", "C2"), strict=False):
        for j, row in enumerate(losses):
            ax.plot(row - row[0], color=color, lw=0.8, alpha=0.7, label=name if j == 0 else None)
    ax.set(xlabel="iteration", ylabel="L − L(start)", title="Escape from saddles (DA3)")
    ax.legend(fontsize=7)
    caption = (f"Left: full-batch GD (lr {cfg['plateau']['lr']}) from {meas['saddles']} approximate saddles perturbed "
               f"by {cfg['plateau']['perturbation']:g}; the dotted line is −δ = −{cfg['plateau']['delta']:g}. Right: "
               f"undamped Newton, GD (lr {cfg['escape']['gd_lr']}) and saddle-free Newton (damping "
               f"{cfg['escape']['damping']:g}) from {meas['escape_saddles']} perturbed saddles; Newton returned to "
               f"the saddle from {100 * meas['newton_returned_fraction']:.0f}%, SFN lowered the loss by ≥ "
               f"{cfg['escape']['escape_drop']:g} from {100 * meas['sfn_escaped_fraction']:.0f}%, GD from "
               f"{100 * meas['gd_escaped_fraction']:.0f}%.")
    return FigureOut(fig, caption)


# --- DA3 from SGD starts --------------------------------------------------------------------------

def _sgd(loss_fn: Any, x0: np.ndarray, xs: np.ndarray, ys: np.ndarray, key: jax.Array, steps: int, lr: float,
         batch: int, hidden: int, weight_decay: float) -> np.ndarray:
    """Minibatch SGD (optax.sgd) from every row of x0, independent batch draws per row."""
    opt = optax.sgd(lr)
    xj, yj = jnp.asarray(xs), jnp.asarray(ys)

    def batch_loss(theta: jax.Array, idx: jax.Array) -> jax.Array:
        logp = jax.nn.log_softmax(theory.mlp_logits(theta, xj[idx], hidden, CLASSES))
        return -jnp.mean(jnp.take_along_axis(logp, yj[idx][:, None], 1)) + 0.5 * weight_decay * jnp.sum(theta**2)

    def run(x: jax.Array, k: jax.Array) -> jax.Array:
        def body(carry: Any, kk: jax.Array) -> tuple[Any, None]:
            x, state = carry
            idx = jax.random.choice(kk, xj.shape[0], (batch,), replace=False)
            update, state = opt.update(jax.grad(batch_loss)(x, idx), state)
            return (optax.apply_updates(x, update), state), None

        (x, _), _ = jax.lax.scan(body, (x, opt.init(x)), jax.random.split(k, steps))
        return x

    keys = jax.random.split(key, x0.shape[0])
    return np.asarray(jax.jit(jax.vmap(run))(jnp.asarray(x0), keys))


def compare_methods(loss: Any, starts: np.ndarray, grid: dict[str, list[float]], iterations: int, max_step: float,
                    methods: dict[str, theory.StepFn] | None = None) -> tuple[dict[str, np.ndarray], dict[str, float],
                                                                          pd.DataFrame]:
    """Every method with every grid value from every start; per method the value with the lowest mean
    final loss. Returns (loss curves [starts, iterations + 1] of the chosen value, chosen values, all runs)."""
    methods = methods or theory.METHODS
    curves, chosen, rows = {}, {}, []
    for name, values in grid.items():
        best = None
        run = theory.method_runner(loss, methods[name], iterations, max_step)
        for v in values:
            _, losses = run(starts, v)
            final = np.where(np.isfinite(losses[:, -1]), losses[:, -1], np.inf)
            rows += [{"method": name, "param": v, "seed": i, "final_loss": f} for i, f in enumerate(final)]
            score = float(np.mean(final))
            if best is None or score < best[0]:
                best = (score, v, losses)
        assert best is not None
        chosen[name], curves[name] = best[1], best[2]
    return curves, chosen, pd.DataFrame(rows)


def sfn_from_sgd(cfg: dict[str, Any]) -> StepResult:
    spec = cfg["sfn"]
    loss, x, y, p_dim = _loss(cfg)
    m = x.shape[0]
    grid = {"gd": spec["gd_lrs"], "newton": spec["dampings"], "sfn": spec["dampings"]}
    runs = spec["seeds"] * sum(len(v) for v in grid.values()) * spec["iterations"]
    print_projected_cost(MODULE, "sfn_from_sgd (exact Hessians per iteration)",
                         runs * (8.0 * m * p_dim**2 + 4.0 * p_dim**3)
                         + spec["seeds"] * spec["sgd_steps"] * 4.0 * spec["batch"] * p_dim)
    rng = seeds.numpy_rng(cfg["seed"], MODULE, "sgd_init")
    x0 = theory.init_params(rng, x.shape[1], cfg["net"]["hidden"], CLASSES, spec["seeds"])
    starts = _sgd(loss, x0, x, y, seeds.derive(cfg["seed"], MODULE, "sgd_batches"), spec["sgd_steps"],
                  spec["sgd_lr"], min(spec["batch"], m), cfg["net"]["hidden"], cfg["net"]["weight_decay"])
    curves, chosen, runs_table = compare_methods(loss, starts, grid, spec["iterations"], spec["max_step"])
    final = {k: np.nan_to_num(v[:, -1], nan=np.inf) for k, v in curves.items()}
    newton_minus_sfn = (final["newton"] - final["sfn"]).tolist()
    gd_minus_sfn = (final["gd"] - final["sfn"]).tolist()
    measurements = {
        "sgd_loss": curves["sfn"][:, 0].tolist(),
        "final_gd": final["gd"].tolist(), "final_newton": final["newton"].tolist(), "final_sfn": final["sfn"].tolist(),
        "newton_minus_sfn": newton_minus_sfn, "gd_minus_sfn": gd_minus_sfn, "zeros_seeds": [0.0] * spec["seeds"],
        "chosen_gd_lr": chosen["gd"], "chosen_newton_damping": chosen["newton"], "chosen_sfn_damping": chosen["sfn"],
    }
    plotting.setup()
    return StepResult(measurements=measurements, tables={"method_runs": runs_table},
                      figures={"sfn_comparison": _plot_sfn(curves, chosen, spec, measurements)})


def _plot_sfn(curves: dict[str, np.ndarray], chosen: dict[str, float], spec: dict[str, Any],
              meas: dict[str, Any]) -> FigureOut:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4))
    labels = {"gd": "gradient descent", "newton": "damped Newton", "sfn": "saddle-free Newton"}
    for (name, c), color in zip(curves.items(), ("C1", "C0", "C2"), strict=True):
        for j, row in enumerate(c):
            ax.plot(row, color=color, lw=0.8, alpha=0.6,
                    label=f"{labels[name]} ({chosen[name]:g})" if j == 0 else None)
    ax.set(xlabel="iteration", ylabel="training loss", yscale="log", title="From SGD end points")
    ax.legend(fontsize=7)
    diff = np.asarray(meas["newton_minus_sfn"])
    caption = (f"{spec['seeds']} seeds: {spec['sgd_steps']} SGD steps (lr {spec['sgd_lr']}, batch {spec['batch']}), "
               f"then {spec['iterations']} iterations of each method (exact Hessians, step length "
               f"≤ {spec['max_step']}), "
               f"each with its best grid value (in brackets). Final loss, damped Newton minus SFN: mean "
               f"{np.mean(diff):.3g}; GD minus SFN: mean {np.mean(meas['gd_minus_sfn']):.3g}.")
    return FigureOut(fig, caption)
