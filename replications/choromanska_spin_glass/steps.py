"""Choromanska et al. (2015) experiments: the steps ``module.py`` declares.

- ``spin_glass`` (C1–C3): the spherical 3-spin glass (``theory``) at each Λ, one draw of the
  couplings per Λ; projected (Riemannian) gradient descent from ``runs`` uniform points on the
  sphere, all runs together (``jax.vmap``), each stopped at the first check where its
  Riemannian gradient ‖P_w ∇H‖/√Λ is at most ``tol``. At every point found: H/Λ and the exact
  spectrum of the Riemannian Hessian on the tangent space (``eigvalsh``, every Λ).
- ``networks`` (C4–C6): one-hidden-layer ReLU networks (``shared.models.mlp.choromanska_net``'s
  architecture, written here as a pure function of a flat dict of arrays so that all networks
  of a width share each minibatch's matrix products), ``nets`` per width, trained together by
  plain SGD from different initializations; train and test losses at the solutions; exact
  Hessians of the training loss at a few solutions of small widths.
- ``redundancy`` (C7): a few networks per width trained the same way, then their weights
  restricted to three values per layer by simulated annealing (``redundancy.py``).

Every step takes the resolved settings and returns its measurements, tables and figures
(``shared.module.StepResult``); the kit writes them. Each step prints its projected cost first.
"""

from __future__ import annotations

import functools
import math
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pandas as pd
from jax.flatten_util import ravel_pytree
from scipy import stats
from threadpoolctl import threadpool_limits

from replications.choromanska_spin_glass import theory
from shared import plotting, resume, seeds
from shared.benchmarking import print_projected_cost
from shared.module import FigureOut, StepResult

MODULE = "choromanska_spin_glass"
NEGATIVE_RTOL = 1e-4  # spin glass: a Riemannian Hessian eigenvalue below −1e-4·max|λ| is negative
SMALLEST_BATCH = 8  # a batch of runs still descending is padded to a power of two, at least this
INDEX_RTOLS_SHOWN = (1e-3, 1e-2)  # networks: the normalized index at these thresholds too (table only)
BOOTSTRAP = 1999  # resamples of the intervals in the tables and figures (BCa, seeded)
CONVENTION = "H(w) = Λ⁻¹ Σ X_ijk w_i w_j w_k on Σw_i² = Λ, X ~ N(0,1); minimised; energy H/Λ"


def _projected_cost(what: str, flops: float) -> None:
    print_projected_cost(MODULE, what, flops)


# --- the spin glass (C1-C3) ---------------------------------------------------------------------

@jax.jit
def symmetrize(x: jax.Array) -> jax.Array:
    """``theory.symmetrize`` on the device (Λ = 500: six 0.5 GB transposes)."""
    return (x + x.transpose(0, 2, 1) + x.transpose(1, 0, 2) + x.transpose(1, 2, 0)
            + x.transpose(2, 0, 1) + x.transpose(2, 1, 0)) / 6.0


def energy_and_gradient(xs: jax.Array, w: jax.Array) -> tuple[jax.Array, jax.Array]:
    """H(w)/Λ and ∇H(w) = 3Λ⁻¹ X_s[·, w, w] of one point (X_s symmetric, Λ × Λ × Λ)."""
    lam = w.shape[-1]
    inner = (xs.reshape(lam * lam, lam) @ w).reshape(lam, lam)  # X_s[·, ·, w]
    grad = 3.0 / lam * (inner @ w)
    return jnp.dot(grad, w) / (3.0 * lam), grad  # w·∇H = 3H


def riemannian_gradient(w: jax.Array, grad: jax.Array) -> jax.Array:
    """P_w ∇H = ∇H − (w·∇H/Λ) w on the sphere Σ w_i² = Λ."""
    return grad - (jnp.dot(grad, w) / w.shape[-1]) * w


def retract(w: jax.Array) -> jax.Array:
    """The projection onto the sphere of radius √Λ."""
    return w * (jnp.sqrt(w.shape[-1]) / jnp.linalg.norm(w))


def descent_step(xs: jax.Array, w: jax.Array, lr: float) -> jax.Array:
    """One step of projected (Riemannian) gradient descent: w ← √Λ (w − lr·P_w∇H)/‖·‖."""
    _, grad = energy_and_gradient(xs, w)
    return retract(w - lr * riemannian_gradient(w, grad))


@functools.partial(jax.jit, static_argnames="length")
def _descent_block(xs: jax.Array, w: jax.Array, lr: float, length: int) -> tuple[jax.Array, ...]:
    """``length`` steps of every run (vmap over the leading axis of w); then each run's H/Λ and
    ‖P_w∇H‖/√Λ."""
    def run(w: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        w = jax.lax.fori_loop(0, length, lambda _, v: descent_step(xs, v, lr), w)
        energy, grad = energy_and_gradient(xs, w)
        return w, energy, jnp.linalg.norm(riemannian_gradient(w, grad)) / jnp.sqrt(w.shape[-1])

    return jax.vmap(run)(w)


def padded_size(n: int, total: int) -> int:
    """Rows of a batch holding ``n`` live runs: the next power of two, >= SMALLEST_BATCH, <= total
    (few batch sizes, few compilations)."""
    return min(total, max(n, SMALLEST_BATCH, 1 << max(0, int(n - 1).bit_length())))


def descend(xs: jax.Array, w0: np.ndarray, lr: float, tol: float, max_steps: int,
            check_every: int) -> dict[str, np.ndarray]:
    """Projected gradient descent from every row of ``w0`` (runs × Λ) at once.

    Every ``check_every`` steps each run's Riemannian gradient norm ‖P_w∇H‖/√Λ is checked; a run
    at or below ``tol`` stops there (converged); one that turns non-finite stops (failed). Runs
    still descending are gathered into a smaller batch (padded to a power of two with frozen
    copies), so the cost follows the live runs. A run's trajectory and its stopping step depend
    on its own start only: the result of a batch equals that of each run descended alone.
    """
    w = np.array(w0, dtype=np.float32)
    runs = w.shape[0]
    energy = np.full(runs, np.nan, np.float64)
    gnorm = np.full(runs, np.nan, np.float64)
    steps = np.zeros(runs, np.int64)
    converged = np.zeros(runs, bool)
    failed = np.zeros(runs, bool)
    live = np.arange(runs)
    done = 0
    while live.size and done < max_steps:
        rows = np.concatenate([live, np.full(padded_size(live.size, runs) - live.size, live[0])])
        new_w, e, g = jax.device_get(_descent_block(xs, jnp.asarray(w[rows]), lr, check_every))
        done += check_every
        k = live.size
        new_w, e, g = np.asarray(new_w[:k]), np.asarray(e[:k], np.float64), np.asarray(g[:k], np.float64)
        bad = ~(np.all(np.isfinite(new_w), axis=1) & np.isfinite(e) & np.isfinite(g))
        good = ~bad
        w[live[good]] = new_w[good]
        energy[live], gnorm[live], steps[live] = e, g, done
        failed[live[bad]] = True
        at_tol = good & (g <= tol)
        converged[live[at_tol]] = True
        live = live[good & ~at_tol]
    return dict(w=w, energy=np.where(failed, np.nan, energy), grad_norm=gnorm, steps=steps,
                converged=converged, failed=failed)


def tangent_basis(w: jax.Array) -> jax.Array:
    """``theory.tangent_basis`` in JAX: Λ × (Λ−1) orthonormal columns spanning w^⊥."""
    u = w / jnp.linalg.norm(w)
    sign = jnp.where(u[0] >= 0, 1.0, -1.0)
    v = u.at[0].add(sign)
    reflect = jnp.eye(w.shape[-1], dtype=w.dtype) - 2.0 * jnp.outer(v, v) / jnp.dot(v, v)
    return reflect[:, 1:]


def riemannian_hessian(xs: jax.Array, w: jax.Array) -> jax.Array:
    """The Riemannian Hessian of H on the sphere at w in the basis ``tangent_basis(w)``:
    Qᵀ(∇²H − (w·∇H/Λ) I)Q with ∇²H = 6Λ⁻¹ X_s[·, ·, w] and w·∇H = 3H ((Λ−1) × (Λ−1))."""
    lam = w.shape[-1]
    hess = 6.0 / lam * (xs.reshape(lam * lam, lam) @ w).reshape(lam, lam)
    energy, _ = energy_and_gradient(xs, w)  # H/Λ; w·∇H/Λ = 3H/Λ
    q = tangent_basis(w)
    return q.T @ hess @ q - 3.0 * energy * jnp.eye(lam - 1, dtype=w.dtype)


@jax.jit
def _hessian_spectra(xs: jax.Array, w: jax.Array) -> jax.Array:
    return jax.vmap(lambda v: jnp.linalg.eigvalsh(riemannian_hessian(xs, v)))(w)


def hessian_spectra(xs: jax.Array, w: np.ndarray, chunk: int = 64) -> np.ndarray:
    """The Riemannian Hessian's eigenvalues (ascending) at every row of w, ``chunk`` rows a call
    (the last chunk padded, so one shape is compiled)."""
    out = []
    for start in range(0, w.shape[0], chunk):
        part = w[start:start + chunk]
        pad = np.concatenate([part, np.repeat(part[:1], chunk - part.shape[0], axis=0)]) if w.shape[0] > chunk \
            else part
        out.append(np.asarray(_hessian_spectra(xs, jnp.asarray(pad)))[: part.shape[0]])
    return np.concatenate(out).astype(np.float64)


def couplings(seed: int, lam: int) -> jax.Array:
    """One draw of X ~ N(0, 1) (Λ × Λ × Λ, float32) for this Λ, symmetrized on the device."""
    rng = seeds.numpy_rng(seed, MODULE, "couplings", lam)
    return symmetrize(jnp.asarray(rng.standard_normal((lam, lam, lam), dtype=np.float32)))


def starts(seed: int, lam: int, runs: int) -> np.ndarray:
    return theory.random_sphere_points(seeds.numpy_rng(seed, MODULE, "starts", lam), runs, lam)


def _spin_glass_runs(lam: int, spec: dict[str, Any], seed: int) -> pd.DataFrame:
    t0 = time.perf_counter()
    xs = couplings(seed, lam)
    out = descend(xs, starts(seed, lam, spec["runs"]), spec["lr"], spec["tol"], spec["max_steps"],
                  spec["check_every"])
    spectra = hessian_spectra(xs, out["w"])
    scale = np.max(np.abs(spectra), axis=1)
    negative = np.sum(spectra < -NEGATIVE_RTOL * scale[:, None], axis=1)
    print(f"[{MODULE}] Λ = {lam}: {spec['runs']} runs, {int(out['converged'].sum())} converged, "
          f"{int(out['steps'].sum()):,} run-steps, {time.perf_counter() - t0:.1f} s", flush=True)
    return pd.DataFrame(dict(
        lam=lam, run=np.arange(spec["runs"]), energy=out["energy"], grad_norm=out["grad_norm"],
        steps=out["steps"], converged=out["converged"], failed=out["failed"],
        hessian_min=spectra[:, 0], hessian_max=spectra[:, -1], index=negative,
        normalized_index=negative / (lam - 1), lr=spec["lr"], tol=spec["tol"],
    ))


def spin_glass(cfg: dict[str, Any]) -> StepResult:
    spec = cfg["spin_glass"]
    flops = sum(spec["runs"] * spec["max_steps"] * 2.0 * lam**3 for lam in spec["lambdas"])
    _projected_cost(f"spin_glass (at most: runs × max_steps × 2Λ³ per Λ in {spec['lambdas']})", flops)
    frames = [resume.chunk(f"lambda_{lam}", {**spec, "lam": lam, "seed": cfg["seed"]},
                           functools.partial(_spin_glass_runs, lam, spec, cfg["seed"]))
              for lam in spec["lambdas"]]
    runs = pd.concat(frames, ignore_index=True)
    summary = spin_glass_summary(runs, spec["delta"])
    measurements = spin_glass_measurements(runs, spec["delta"])
    plotting.setup()
    return StepResult(
        measurements=measurements,
        tables={"spin_glass_runs": runs, "spin_glass_summary": summary},
        figures={"energy_histograms": _plot_energies(runs, summary, spec),
                 "spin_glass_hessian": _plot_sg_hessian(runs, summary)},
    )


def _bootstrap_interval(data: tuple[np.ndarray, ...], statistic: Any, seed_name: str,
                        paired: bool = False) -> tuple[float, float]:
    """A 95 % two-sided BCa bootstrap interval (BOOTSTRAP resamples, seeded by name); NaN when
    the data cannot give one."""
    if len(data[0]) < 3:
        return math.nan, math.nan
    import warnings

    with warnings.catch_warnings():  # degenerate data (all equal) gives NaN, reported as such
        warnings.simplefilter("ignore")
        res = stats.bootstrap(data, statistic, paired=paired, vectorized=True, n_resamples=BOOTSTRAP,
                              confidence_level=0.95, method="BCa",
                              rng=seeds.numpy_rng(0, MODULE, "bootstrap", seed_name))
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def _std(a: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.std(a, axis=axis, ddof=1)


def _var(a: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.var(a, axis=axis, ddof=1)


def spin_glass_summary(runs: pd.DataFrame, delta: float) -> pd.DataFrame:
    """Per Λ: runs, converged, mean/std/quantiles of H/Λ at the converged points (std with its
    bootstrap interval), fractions below −E_0 and above −E_∞ + δ, saddles among them."""
    e_inf, e_zero = theory.e_inf(), theory.e_zero()
    rows = []
    for lam, sub in runs.groupby("lam", sort=True):
        ok = sub[sub.converged]
        e = ok.energy.to_numpy()
        lo, hi = _bootstrap_interval((e,), _std, f"sg_std_{lam}")
        q = np.quantile(e, [0.05, 0.25, 0.5, 0.75, 0.95]) if len(e) else [math.nan] * 5
        rows.append(dict(
            lam=lam, runs=len(sub), converged=len(ok), failed=int(sub.failed.sum()),
            mean=float(np.mean(e)) if len(e) else math.nan, std=float(_std(e)) if len(e) > 1 else math.nan,
            std_low=lo, std_high=hi, min=float(np.min(e)) if len(e) else math.nan,
            q05=q[0], q25=q[1], median=q[2], q75=q[3], q95=q[4],
            max=float(np.max(e)) if len(e) else math.nan,
            fraction_below_ground=float(np.mean(e < -e_zero)) if len(e) else math.nan,
            fraction_above_band=float(np.mean(e > -e_inf + delta)) if len(e) else math.nan,
            saddles=int((ok["index"] > 0).sum()), median_steps=float(sub.steps.median()),
            minus_e_zero=-e_zero, minus_e_inf=-e_inf, delta=delta,
        ))
    return pd.DataFrame(rows)


def spin_glass_measurements(runs: pd.DataFrame, delta: float) -> dict[str, Any]:
    """The quantities C1-C3 read, from the per-run table (energies of converged runs only)."""
    e_inf, e_zero = theory.e_inf(), theory.e_zero()
    lams = sorted(int(v) for v in runs.lam.unique())
    energies = [runs[(runs.lam == lam) & runs.converged].energy.to_numpy() for lam in lams]
    converged = runs[runs.converged]
    return {
        "sg_lambdas": lams,
        "sg_e_inf": e_inf,
        "sg_e_zero": e_zero,
        "sg_abs_deviation": [np.abs(e - np.median(e)).tolist() if len(e) else [math.nan] for e in energies],
        "sg_distance_to_threshold": [np.abs(e + e_inf).tolist() if len(e) else [math.nan] for e in energies],
        "sg_std": [float(_std(e)) if len(e) > 1 else math.nan for e in energies],
        "sg_fraction_below_ground": [float(np.mean(e < -e_zero)) if len(e) else math.nan for e in energies],
        "sg_above_band": [(e > -e_inf + delta).astype(float).tolist() if len(e) else [math.nan] for e in energies],
        "sg_fraction_above_band": [float(np.mean(e > -e_inf + delta)) if len(e) else math.nan for e in energies],
        "sg_converged_fraction": [float(runs[runs.lam == lam].converged.mean()) for lam in lams],
        "sg_saddles": int((converged["index"] > 0).sum()),
        "sg_saddle_fraction": float((converged["index"] > 0).mean()) if len(converged) else math.nan,
    }


def _plot_energies(runs: pd.DataFrame, summary: pd.DataFrame, spec: dict[str, Any]) -> FigureOut:
    import matplotlib.pyplot as plt

    e_inf, e_zero, delta = theory.e_inf(), theory.e_zero(), spec["delta"]
    lams = list(summary.lam)
    fig, axes = plt.subplots(len(lams), 1, figsize=(7, 1.9 * len(lams) + 1.0), sharex=True, squeeze=False,
                             layout="constrained")
    ok = runs[runs.converged]
    low = min(float(ok.energy.min()) if len(ok) else -e_zero, -e_zero) - 0.02
    high = max(float(ok.energy.max()) if len(ok) else -e_inf, -e_inf + delta) + 0.02
    bins = np.linspace(low, high, 70)
    for ax, lam in zip(axes[:, 0], lams, strict=True):
        e = ok[ok.lam == lam].energy
        ax.hist(e, bins=bins, color="#4c72b0", alpha=0.85)
        ax.axvline(-e_zero, color="#c62828", lw=1.4, label=f"−E₀ = {-e_zero:.4f} (ground state)")
        ax.axvline(-e_inf, color="#2e7d32", lw=1.4, label=f"−E_∞ = {-e_inf:.4f} (threshold)")
        ax.axvline(-e_inf + delta, color="#757575", ls="--", lw=1.0, label=f"−E_∞ + δ (δ = {delta:g})")
        ax.set_ylabel("runs")
        ax.set_title(f"Λ = {lam}: {len(e)} converged minima", fontsize=9, loc="left")
    axes[0, 0].legend(fontsize=7, loc="upper right")
    axes[-1, 0].set_xlabel("H/Λ at the point found")
    fig.suptitle(CONVENTION, fontsize=8)
    parts = [f"Λ = {r.lam}: {r.converged}/{r.runs} converged, mean {r['mean']:.4f}, std {r['std']:.4f} "
             f"(95% BCa [{r.std_low:.4f}, {r.std_high:.4f}]), {100 * r.fraction_above_band:.1f}% above −E_∞ + δ, "
             f"{100 * r.fraction_below_ground:.1f}% below −E₀" for _, r in summary.iterrows()]
    caption = (
        f"Convention: {CONVENTION}. Projected gradient descent (step {spec['lr']:g}) from {spec['runs']} uniform "
        f"points on the sphere per Λ, one draw of the couplings per Λ, stopped when ‖P_w∇H‖/√Λ <= {spec['tol']:g} "
        f"(at most {spec['max_steps']:,} steps). Reference energies from the complexity of Auffinger, Ben Arous & "
        f"Černý (2013), computed: −E₀ = {-e_zero:.5f}, −E_∞ = −2√(2/3) = {-e_inf:.5f}. " + "; ".join(parts) + "."
    )
    return FigureOut(fig, caption)


def _plot_sg_hessian(runs: pd.DataFrame, summary: pd.DataFrame) -> FigureOut:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), layout="constrained")
    ok = runs[runs.converged]
    for lam, sub in ok.groupby("lam", sort=True):
        axes[0].hist(sub.hessian_min, bins=40, histtype="step", lw=1.5, label=f"Λ = {lam}")
        axes[1].hist(sub["index"], bins=np.arange(-0.5, max(3, int(ok["index"].max()) + 2)), histtype="step",
                     lw=1.5, label=f"Λ = {lam}")
    axes[0].axvline(0, color="#c62828", lw=1)
    axes[0].set(xlabel="smallest eigenvalue of the Riemannian Hessian", ylabel="converged runs",
                title="Smallest Hessian eigenvalue at the points found")
    axes[1].set(xlabel=f"index (eigenvalues < −{NEGATIVE_RTOL:g}·max|λ|)", ylabel="converged runs",
                title="Index at the points found")
    for ax in axes:
        ax.legend(fontsize=8)
    fig.suptitle(CONVENTION, fontsize=8)
    parts = [f"Λ = {r.lam}: {r.saddles} of {r.converged} with a negative eigenvalue, smallest eigenvalue "
             f"{ok[ok.lam == r.lam].hessian_min.min():.3g}" for _, r in summary.iterrows() if r.converged]
    caption = (
        "The exact spectrum (eigvalsh, float32) of the Riemannian Hessian Qᵀ(∇²H − (w·∇H/Λ)I)Q on the tangent "
        "space at every converged point (Q: an orthonormal basis of w^⊥). An eigenvalue below "
        f"−{NEGATIVE_RTOL:g}·max|λ| counts as negative. " + "; ".join(parts) + "."
    )
    return FigureOut(fig, caption)


# --- the networks (C4-C7) ---------------------------------------------------------------------

TRUNCATED_STD = 0.87962566103423978  # std of a standard normal truncated to [−2, 2]


def truncated_normal(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """A standard normal truncated to [−2, 2] (resampled outside), rescaled to unit variance."""
    z = rng.standard_normal(shape)
    outside = np.abs(z) > 2.0
    while outside.any():
        z[outside] = rng.standard_normal(int(outside.sum()))
        outside = np.abs(z) > 2.0
    return z / TRUNCATED_STD


def init_params(rng: np.random.Generator, n_in: int, n_hidden: int, n_out: int) -> dict[str, np.ndarray]:
    """One network's parameters as ``choromanska_net`` draws them (Flax's defaults): LeCun-normal
    kernels (a normal truncated to ±2, std √(1/fan_in) after truncation) and zero biases. NumPy
    draws them (a JAX draw compiles for seconds on a CPU)."""
    return {"w1": (truncated_normal(rng, (n_in, n_hidden)) / math.sqrt(n_in)).astype(np.float32),
            "b1": np.zeros((n_hidden,), np.float32),
            "w2": (truncated_normal(rng, (n_hidden, n_out)) / math.sqrt(n_hidden)).astype(np.float32),
            "b2": np.zeros((n_out,), np.float32)}


def forward(params: dict[str, jax.Array], x: jax.Array) -> jax.Array:
    """Logits of x → Linear → ReLU → Linear (``choromanska_net``: one hidden ReLU layer)."""
    return jax.nn.relu(x @ params["w1"] + params["b1"]) @ params["w2"] + params["b2"]


def cross_entropy(params: dict[str, jax.Array], x: jax.Array, y: jax.Array) -> jax.Array:
    """The mean cross-entropy (negative log-likelihood of the softmax) over the examples."""
    return optax.softmax_cross_entropy_with_integer_labels(forward(params, x), y).mean()


def sgd_order(seed: int, n_train: int, batch: int, epochs: int) -> np.ndarray:
    """The minibatches, (epochs · ⌊n/batch⌋, batch) example indices: a fresh permutation per
    epoch (the last incomplete batch dropped), the same for every network."""
    rng = seeds.numpy_rng(seed, MODULE, "sgd_order")
    per = n_train // batch
    return np.concatenate([rng.permutation(n_train)[: per * batch].reshape(per, batch) for _ in range(epochs)])


@jax.jit
def train_networks(params: dict[str, jax.Array], x: jax.Array, y: jax.Array, order: jax.Array,
                   lr: jax.Array) -> dict[str, jax.Array]:
    """Plain SGD (constant ``lr``) of every network (leading axis of ``params``, vmap) over the
    minibatches ``order``; the minibatch is shared, so its products are one matrix product each."""
    def update(p: dict[str, jax.Array], xb: jax.Array, yb: jax.Array) -> dict[str, jax.Array]:
        grads = jax.grad(cross_entropy)(p, xb, yb)
        return jax.tree_util.tree_map(lambda a, g: a - lr * g, p, grads)

    update_all = jax.vmap(update, in_axes=(0, None, None))
    return jax.lax.scan(lambda p, idx: (update_all(p, x[idx], y[idx]), None), params, order)[0]


@jax.jit
def _evaluate(params: dict[str, jax.Array], x: jax.Array, y: jax.Array) -> tuple[jax.Array, jax.Array]:
    def one(p: dict[str, jax.Array]) -> tuple[jax.Array, jax.Array]:
        logits = forward(p, x)
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
        return loss, jnp.mean(jnp.argmax(logits, -1) != y)

    return jax.vmap(one)(params)


def evaluate(params: dict[str, jax.Array], x: jax.Array, y: jax.Array) -> tuple[np.ndarray, np.ndarray]:
    """Mean cross-entropy and error rate of every network on (x, y), in chunks of networks whose
    hidden activations fit in ~2e8 floats."""
    nets, hidden = params["w1"].shape[0], params["w1"].shape[-1]
    chunk = max(1, min(nets, int(2e8 // max(1, x.shape[0] * hidden))))
    losses, errors = [], []
    for start in range(0, nets, chunk):
        part = jax.tree_util.tree_map(lambda v, s=start: v[s:s + chunk], params)
        loss, err = _evaluate(part, x, y)
        losses.append(np.asarray(loss, np.float64))
        errors.append(np.asarray(err, np.float64))
    return np.concatenate(losses), np.concatenate(errors)


def init_networks(seed: int, n_in: int, n_hidden: int, n_out: int, count: int, stream: str) -> dict[str, jax.Array]:
    """``count`` initializations with a leading network axis; network i draws from its own generator
    (the width's stream, then i), so its init does not depend on how many networks are drawn."""
    base = int(seeds.numpy_rng(seed, MODULE, stream, n_hidden).integers(2**62))
    nets = [init_params(np.random.default_rng([base, i]), n_in, n_hidden, n_out) for i in range(count)]
    return {k: jax.device_put(np.stack([p[k] for p in nets])) for k in nets[0]}


def load_data(spec: dict[str, Any], data_dir: str | None) -> tuple[Any, Any, str]:
    """Train and test splits, flattened, pixels in [0, 1]; MNIST area-averaged to ``resize``²."""
    from shared import data

    steps: list[Any] = []
    if spec.get("resize"):
        steps.append({"resize": {"height": spec["resize"], "width": spec["resize"], "method": "area"}})
    steps.append("flatten")
    train = data.load(spec["dataset"], "train", preprocessing=steps, dtype=np.float32, data_dir=data_dir)
    test = data.load(spec["dataset"], "test", preprocessing=steps, dtype=np.float32, data_dir=data_dir)
    size = f", area-averaged to {spec['resize']}×{spec['resize']}" if spec.get("resize") else ""
    return train, test, (f"{train.title}{size}: {train.x.shape[0]:,} train / {test.x.shape[0]:,} test examples, "
                         f"{train.x.shape[1]} inputs")


def _train_width(n_hidden: int, count: int, stream: str, spec: dict[str, Any], seed: int, train: Any,
                 test: Any, order: np.ndarray) -> tuple[dict[str, jax.Array], pd.DataFrame]:
    t0 = time.perf_counter()
    params = init_networks(seed, train.x.shape[1], n_hidden, train.num_classes, count, stream)
    params = train_networks(params, train.x, train.y, jnp.asarray(order), jnp.float32(spec["lr"]))
    train_loss, train_err = evaluate(params, train.x, train.y)
    test_loss, test_err = evaluate(params, test.x, test.y)
    print(f"[{MODULE}] n₁ = {n_hidden} ({stream}): {count} networks, {time.perf_counter() - t0:.1f} s", flush=True)
    frame = pd.DataFrame(dict(n_hidden=n_hidden, net=np.arange(count), train_loss=train_loss, test_loss=test_loss,
                              train_error=train_err, test_error=test_err,
                              failed=~(np.isfinite(train_loss) & np.isfinite(test_loss))))
    return params, frame


HESSIAN_FLOATS = 2e8  # activations held at once while the Hessian's columns are computed


@functools.partial(jax.jit, static_argnames="block")
def _hessian_and_gradient(params: dict[str, jax.Array], x: jax.Array, y: jax.Array,
                          block: int) -> tuple[jax.Array, jax.Array]:
    """The P × P Hessian, column by column as Hessian-vector products (forward over reverse),
    ``block`` columns at a time (so that MNIST-sized data and n₁ = 100 fit), and the gradient."""
    flat, unravel = ravel_pytree(params)

    def loss(v: jax.Array) -> jax.Array:
        return cross_entropy(unravel(v), x, y)

    grad = jax.grad(loss)
    columns = jax.lax.map(lambda t: jax.jvp(grad, (flat,), (t,))[1], jnp.eye(flat.size, dtype=flat.dtype),
                          batch_size=block)
    return columns, grad(flat)


def _eigvalsh(h: np.ndarray) -> np.ndarray:
    """Eigenvalues of a symmetric matrix: NumPy in float64 on a CPU (one BLAS thread: a
    multi-threaded OpenBLAS next to XLA's threads runs ~20x slower), the device's solver on a GPU."""
    h = 0.5 * (h + h.T)
    if jax.default_backend() != "cpu":
        return np.asarray(jnp.linalg.eigvalsh(jnp.asarray(h, jnp.float32)), np.float64)
    with threadpool_limits(1, "blas"):
        return np.linalg.eigvalsh(h)


def hessian_index(params: dict[str, jax.Array], x: jax.Array, y: jax.Array, rtol: float) -> dict[str, Any]:
    """The exact Hessian of the mean training cross-entropy at one network (Hessian-vector products
    against every basis vector, in the parameters' dtype; eigenvalues in float64 on a CPU): its
    index, normalized index, extreme eigenvalues and the gradient norm."""
    n_params = sum(int(v.size) for v in params.values())
    block = int(max(1, min(n_params, HESSIAN_FLOATS // max(1, x.shape[0] * params["w1"].shape[-1]))))
    hess, grad = _hessian_and_gradient(params, x, y, block)
    eig = _eigvalsh(np.asarray(hess, np.float64))
    index, normalized = theory.normalized_index(eig, rtol)
    others = {f"normalized_index_rtol_{r:g}": theory.normalized_index(eig, r)[1] for r in INDEX_RTOLS_SHOWN}
    return dict(parameters=int(grad.size), index=index, normalized_index=normalized, hessian_min=float(eig[0]),
                hessian_max=float(eig[-1]), grad_norm=float(jnp.linalg.norm(grad)), **others)


def _index_runs(n_hidden: int, spec: dict[str, Any], seed: int, train: Any, test: Any) -> pd.DataFrame:
    idx = spec["index"]
    order = sgd_order(seed, train.x.shape[0], spec["batch"], idx["epochs"])
    params, frame = _train_width(n_hidden, idx["samples"], "index_nets", spec, seed, train, test, order)
    rows = []
    for i in range(idx["samples"]):
        one = jax.tree_util.tree_map(lambda v, i=i: v[i], params)
        rows.append(dict(n_hidden=n_hidden, net=i, train_loss=frame.train_loss[i], test_loss=frame.test_loss[i],
                         **hessian_index(one, train.x, train.y, idx["rtol"])))
    return pd.DataFrame(rows)


def _pearson(a: np.ndarray, b: np.ndarray, axis: int = -1) -> np.ndarray:
    return stats.pearsonr(a, b, axis=axis).statistic


def rho_blocks(train_loss: np.ndarray, test_loss: np.ndarray, blocks: int) -> list[float]:
    """ρ(train, test) in each of ``blocks`` disjoint consecutive blocks of the networks."""
    out = []
    for part in np.array_split(np.arange(len(train_loss)), blocks):
        a, b = train_loss[part], test_loss[part]
        ok = np.isfinite(a) & np.isfinite(b)
        out.append(float(np.corrcoef(a, b)[0, 1]) if ok.all() and np.std(a) > 0 and np.std(b) > 0 else math.nan)
    return out


def network_summary(runs: pd.DataFrame, blocks: int) -> pd.DataFrame:
    rows = []
    for n_hidden, sub in runs.groupby("n_hidden", sort=True):
        ok = sub[~sub.failed]
        tr, te = ok.train_loss.to_numpy(), ok.test_loss.to_numpy()
        v_lo, v_hi = _bootstrap_interval((te,), _var, f"net_var_{n_hidden}")
        r_lo, r_hi = _bootstrap_interval((tr, te), _pearson, f"net_rho_{n_hidden}", paired=True)
        q = np.quantile(te, [0.05, 0.25, 0.5, 0.75, 0.95])
        rows.append(dict(
            n_hidden=n_hidden, nets=len(sub), finite=len(ok), train_loss_mean=float(tr.mean()),
            test_loss_mean=float(te.mean()), test_loss_std=float(_std(te)), test_loss_var=float(_var(te)),
            test_var_low=v_lo, test_var_high=v_hi, q05=q[0], q25=q[1], median=q[2], q75=q[3], q95=q[4],
            test_error_mean=float(ok.test_error.mean()), train_error_mean=float(ok.train_error.mean()),
            rho=float(np.corrcoef(tr, te)[0, 1]), rho_low=r_lo, rho_high=r_hi,
            rho_blocks=" ".join(f"{r:.3f}" for r in rho_blocks(tr, te, blocks)),
            rho_paper=theory.paper_rho().get(int(n_hidden), math.nan),
        ))
    return pd.DataFrame(rows)


def network_measurements(runs: pd.DataFrame, index: pd.DataFrame, blocks: int) -> dict[str, Any]:
    """The quantities C4-C6 read (a failed network's NaN losses stay in: the rules fail on them)."""
    sizes = sorted(int(v) for v in runs.n_hidden.unique())
    test = [runs[runs.n_hidden == n].test_loss.to_numpy() for n in sizes]
    train = [runs[runs.n_hidden == n].train_loss.to_numpy() for n in sizes]
    return {
        "net_sizes": sizes,
        "net_test_abs_deviation": [np.abs(t - np.median(t)).tolist() for t in test],
        "net_test_variance": [float(_var(t)) for t in test],
        "net_rho": [float(np.corrcoef(a, b)[0, 1]) for a, b in zip(train, test, strict=True)],
        "net_rho_blocks": [rho_blocks(a, b, blocks) for a, b in zip(train, test, strict=True)],
        "net_normalized_index": index.normalized_index.tolist(),
    }


def redundancy_measurements(table: pd.DataFrame) -> dict[str, Any]:
    """C7's quantities: the test accuracy each annealed network lost, and (a check that holds by
    construction) the most distinct weight values any of its layers holds."""
    return {
        "net_redundancy_accuracy_loss": table.accuracy_lost.tolist(),
        "net_redundancy_distinct_values": int(table.max_distinct_values_per_layer.max()),
    }


def redundancy(cfg: dict[str, Any]) -> StepResult:
    """C7: ``samples`` networks per width (the ``networks`` step's training), annealed to three
    weight values per layer (``redundancy.py``); the test accuracy lost per network."""
    from replications.choromanska_spin_glass import redundancy as ternary

    spec, red = cfg["networks"], cfg["networks"]["redundancy"]
    train, test, description = load_data(spec, cfg.get("data_dir"))
    n_in = train.x.shape[1]
    flops = sum(red["samples"] * red["iterations"] * 2.0 * train.x.shape[0] * (n_in * n + n * train.num_classes)
                for n in red["sizes"])
    _projected_cost(f"redundancy (simulated annealing, {red['iterations']} moves × the training loss, widths "
                    f"{red['sizes']}, {red['samples']} networks each; plus their SGD)", flops)
    order = sgd_order(cfg["seed"], train.x.shape[0], spec["batch"], spec["epochs"])

    def width_table(n: int) -> pd.DataFrame:
        trained, _ = _train_width(n, red["samples"], "redundancy", spec, cfg["seed"], train, test, order)
        key = seeds.derive(cfg["seed"], MODULE, "annealing", n)
        return pd.DataFrame(ternary.redundancy_table(trained, train, test, key, red, n))

    key = {k: v for k, v in spec.items() if k != "index"}
    table = pd.concat([resume.chunk(f"redundancy_{n}", {**key, "n_hidden": n, "seed": cfg["seed"]},
                                    functools.partial(width_table, n)) for n in red["sizes"]], ignore_index=True)
    plotting.setup()
    setup = (f"{description}; the networks step's training ({spec['epochs']} epochs of SGD, lr {spec['lr']:g}, batch "
             f"{spec['batch']}), {red['samples']} networks per width; simulated annealing of the training "
             f"cross-entropy over codes in {{−1, 0, 1}} × α_l per layer (α_l ≤ 1, biases real), {red['iterations']} "
             f"single-entry moves, temperature {red['t_start']:g} → {red['t_end']:g} (geometric), best state kept")
    return StepResult(measurements=redundancy_measurements(table), tables={"redundancy": table},
                      figures={"redundancy": _plot_redundancy(table, setup)})


def _plot_redundancy(table: pd.DataFrame, setup: str) -> FigureOut:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.2), layout="constrained")
    for column, label, marker in (("test_accuracy_trained", "trained (real weights)", "o"),
                                  ("test_accuracy_ternarized", "ternarized, before annealing", "x"),
                                  ("test_accuracy_annealed", "3 values per layer, annealed", "s")):
        ax.scatter(table.n_hidden, table[column], label=label, marker=marker, alpha=0.8)
    ax.set_xscale("log")
    ax.set(xlabel="hidden width n₁", ylabel="test accuracy", title="Redundancy: weights restricted to 3 values")
    ax.legend(fontsize=8)
    lost = table.groupby("n_hidden").accuracy_lost.agg(["mean", "max"])
    caption = (f"Test accuracy of trained networks, of their ternarization and after simulated annealing. Setup: "
               f"{setup}. Accuracy lost (mean, max) per width: "
               + ", ".join(f"n₁ = {n}: {r['mean']:.3f}, {r['max']:.3f}" for n, r in lost.iterrows())
               + ". The paper reports a loss below 0.025 [S].")
    return FigureOut(fig, caption)


def networks(cfg: dict[str, Any]) -> StepResult:
    spec = cfg["networks"]
    train, test, description = load_data(spec, cfg.get("data_dir"))
    n_in, n_train = train.x.shape[1], train.x.shape[0]
    order = sgd_order(cfg["seed"], n_train, spec["batch"], spec["epochs"])
    samples = order.size
    flops = sum(6.0 * spec["nets"] * samples * (n_in * n + n * train.num_classes) for n in spec["sizes"])
    index_samples = samples // spec["epochs"] * spec["index"]["epochs"]
    flops += sum(spec["index"]["samples"] * (6.0 * index_samples * (n_in * n + 10 * n)
                                             + 4.0 * n_train * (n_in * n + 10 * n) ** 2 + 4.0 * (n_in * n) ** 3)
                 for n in spec["index"]["sizes"])
    _projected_cost(f"networks (6·nets·examples seen·weights per width in {spec['sizes']}, plus the exact "
                    f"Hessians at widths {spec['index']['sizes']})", flops)
    key = {k: v for k, v in spec.items() if k != "index"}
    def width_runs(n: int) -> pd.DataFrame:
        return _train_width(n, spec["nets"], "networks", spec, cfg["seed"], train, test, order)[1]

    frames = [resume.chunk(f"width_{n}", {**key, "n_hidden": n, "seed": cfg["seed"]},
                           functools.partial(width_runs, n))
              for n in spec["sizes"]]
    index_frames = [resume.chunk(f"index_{n}", {**spec, "n_hidden": n, "seed": cfg["seed"]},
                                 functools.partial(_index_runs, n, spec, cfg["seed"], train, test))
                    for n in spec["index"]["sizes"]]
    runs = pd.concat(frames, ignore_index=True)
    index = pd.concat(index_frames, ignore_index=True)
    summary = network_summary(runs, spec["rho_blocks"])
    plotting.setup()
    setup = (f"{description}; one hidden ReLU layer, cross-entropy, plain SGD (lr {spec['lr']:g}, batch "
             f"{spec['batch']}, {spec['epochs']} epochs, the same minibatches for every network), "
             f"{spec['nets']} networks per width from LeCun-normal initializations")
    return StepResult(
        measurements=network_measurements(runs, index, spec["rho_blocks"]),
        tables={"network_runs": runs, "network_summary": summary, "network_index": index},
        figures={"test_loss_histograms": _plot_test_losses(runs, setup),
                 "variance_vs_size": _plot_variance(summary, setup),
                 "train_test_correlation": _plot_rho(summary, setup, spec["rho_blocks"]),
                 "index_histograms": _plot_index(index, setup, spec["index"])},
    )


def _plot_test_losses(runs: pd.DataFrame, setup: str) -> FigureOut:
    import matplotlib.pyplot as plt

    sizes = sorted(runs.n_hidden.unique())
    fig, axes = plt.subplots(len(sizes), 1, figsize=(7, 1.7 * len(sizes) + 1), sharex=True, squeeze=False,
                             layout="constrained")
    finite = runs[~runs.failed]
    bins = np.linspace(float(finite.test_loss.min()), float(finite.test_loss.max()), 60)
    for ax, n in zip(axes[:, 0], sizes, strict=True):
        t = finite[finite.n_hidden == n].test_loss
        ax.hist(t, bins=bins, color="#4c72b0", alpha=0.85)
        ax.set_title(f"n₁ = {n}: {len(t)} networks, mean {t.mean():.4f}, std {t.std():.4f}", fontsize=9, loc="left")
        ax.set_ylabel("networks")
    axes[-1, 0].set_xlabel("test loss (mean cross-entropy) at the solution")
    caption = f"Test losses at the solutions, one panel per width on shared axes. Setup: {setup}."
    return FigureOut(fig, caption)


def _width_ticks(ax: Any, widths: Any) -> None:
    """The widths as the log axis's only tick labels."""
    from matplotlib.ticker import NullFormatter

    ax.set_xticks([int(w) for w in widths], [str(int(w)) for w in widths])
    ax.xaxis.set_minor_formatter(NullFormatter())


def _plot_variance(summary: pd.DataFrame, setup: str) -> FigureOut:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4), layout="constrained")
    err = np.array([summary.test_loss_var - summary.test_var_low, summary.test_var_high - summary.test_loss_var])
    ax.errorbar(summary.n_hidden, summary.test_loss_var, yerr=np.clip(err, 0, None), fmt="o-", capsize=3,
                label="ours (95% BCa bootstrap)")
    ax.set(xscale="log", yscale="log", xlabel="hidden units n₁", ylabel="variance of the test loss",
           title="Variance of the test loss vs width")
    _width_ticks(ax, summary.n_hidden)
    ax.legend(fontsize=8)
    parts = [f"n₁ = {r.n_hidden}: {r.test_loss_var:.3g} [{r.test_var_low:.3g}, {r.test_var_high:.3g}]"
             for _, r in summary.iterrows()]
    caption = f"Variance of the test loss across the solutions (ddof 1), log-log. {'; '.join(parts)}. Setup: {setup}."
    return FigureOut(fig, caption)


def _plot_rho(summary: pd.DataFrame, setup: str, blocks: int) -> FigureOut:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4), layout="constrained")
    err = np.array([summary.rho - summary.rho_low, summary.rho_high - summary.rho])
    ax.errorbar(summary.n_hidden, summary.rho, yerr=np.clip(err, 0, None), fmt="o-", capsize=3,
                label="ours (95% BCa bootstrap)")
    paper = sorted(theory.paper_rho().items())
    ax.plot([p[0] for p in paper], [p[1] for p in paper], "s--", color="#c62828",
            label="paper, Table 1 (MNIST 10×10; third-party reading [S])")
    ax.set(xscale="log", xlabel="hidden units n₁", ylabel="ρ(train loss, test loss)",
           title="Correlation of train and test loss vs width")
    _width_ticks(ax, sorted({*summary.n_hidden, *theory.paper_rho()}))
    ax.legend(fontsize=8)
    parts = [f"n₁ = {r.n_hidden}: ours {r.rho:.3f} [{r.rho_low:.3f}, {r.rho_high:.3f}]"
             + (f", paper {r.rho_paper:.4f}" if np.isfinite(r.rho_paper) else "") for _, r in summary.iterrows()]
    caption = (f"Pearson ρ between training and test loss across the solutions of each width, with 95% BCa "
               f"bootstrap intervals (networks resampled); C5's trend test uses ρ in {blocks} disjoint blocks per "
               f"width. {'; '.join(parts)}. Setup: {setup}.")
    return FigureOut(fig, caption)


def _plot_index(index: pd.DataFrame, setup: str, spec: dict[str, Any]) -> FigureOut:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4), layout="constrained")
    top = max(0.02, float(index.normalized_index.max()) * 1.1)
    for n, sub in index.groupby("n_hidden", sort=True):
        ax.hist(sub.normalized_index, bins=np.linspace(0, top, 30).tolist(), histtype="step", lw=1.6, label=f"n₁ = {n}")
    ax.axvline(0.01, color="#c62828", ls=":", label="0.01 (paper)")
    ax.set(xlabel="normalized index (#negative eigenvalues / #parameters)", ylabel="solutions",
           title="Hessian index at SGD solutions")
    ax.legend(fontsize=8)
    parts = [f"n₁ = {n}: {len(s)} solutions, {int((s['index'] == 0).sum())} minima, normalized index max "
             f"{s.normalized_index.max():.4f} (at thresholds 1e-3, 1e-2: {s['normalized_index_rtol_0.001'].max():.4f}, "
             f"{s['normalized_index_rtol_0.01'].max():.4f}), smallest eigenvalue {s.hessian_min.min():.3g}, largest "
             f"{s.hessian_max.max():.3g}, ‖∇L‖ up to {s.grad_norm.max():.2e}"
             for n, s in index.groupby("n_hidden", sort=True)]
    caption = (f"Exact Hessian (every column a Hessian-vector product, float32; eigvalsh in float64 on a CPU) of the "
               f"mean training cross-entropy at "
               f"SGD solutions of small widths ({spec['samples']} per width, {spec['epochs']} epochs); an eigenvalue "
               f"below −{spec['rtol']:g}·max|λ| counts as negative. "
               f"{'; '.join(parts)}. Setup: {setup}.")
    return FigureOut(fig, caption)
