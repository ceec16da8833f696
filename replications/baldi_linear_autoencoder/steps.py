"""Baldi & Hornik (1989) experiments: the steps ``module.py`` declares.

- ``critical_points``: B1–B3. Every analytic critical point with |I| ≤ p is
  built with a random invertible mixing C; its gradient, loss and exact
  Hessian inertia are measured in float64 and compared with ``theory``.
- ``gradient_descent``: B4. Many random initializations (vmapped) trained by
  full-batch gradient descent; final loss vs Σ_{i>p} λ_i and principal angles
  between the learned decoder's column space and the top-p eigenvectors.

Every step takes the resolved settings and returns its measurements, tables and
figures (``shared.module.StepResult``); the kit writes them.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pandas as pd
from flax import nnx
from jax.flatten_util import ravel_pytree

from replications.baldi_linear_autoencoder import theory
from replications.baldi_linear_autoencoder.module import GD_DATASETS
from shared import plotting, resume, seeds
from shared.curvature.exact import flat_hessian, inertia, relative_gradient_norm
from shared.models.functional import gaussian_ensemble, pure
from shared.models.linear import LinearAutoencoder, ae_matrices, ae_params_from_matrices
from shared.module import FigureOut, StepResult
from shared.training.fullbatch import train_ensemble
from shared.training.losses import total_squared_error

MODULE = "baldi_linear_autoencoder"
ZERO_RTOL = 1e-9  # |λ| <= 1e-9 · max|λ| counts as a zero Hessian eigenvalue (float64)


# --- data -------------------------------------------------------------------------------

def load_patterns(spec: dict[str, Any], seed: int, data_dir: str | None = None) -> tuple[np.ndarray, str]:
    """Training patterns X (T × n) for a data-set spec, and a description of them."""
    name = spec["dataset"]
    if name == "synthetic":
        rng = seeds.numpy_rng(seed, MODULE, "synthetic")
        spectrum = spec["spectrum"]
        x = theory.synthetic_patterns(rng, spectrum, spec["samples"])
        return x, f"synthetic, n={len(spectrum)}, T={spec['samples']}, spectrum {spectrum}"
    if name in ("digits", "mnist", "fashion_mnist"):
        from shared import data

        train = data.load(name, "train", preprocessing=["flatten"], dtype=np.float64,
                          data_dir=data_dir)
        x = np.asarray(train.x, dtype=np.float64)
        x = x - x.mean(axis=0)
        return x, f"{train.title}, training split ({x.shape[0]:,} × {x.shape[1]}, pixels in [0, 1], centred)"
    raise ValueError(f"unknown dataset {name!r}")


def eigensystem(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues (descending) and eigenvectors of the sum-covariance Σ = Xᵀ X."""
    lam, vec = np.linalg.eigh(x.T @ x)
    order = np.argsort(lam)[::-1]
    return lam[order], vec[:, order]


def sum_squared_error(model, params, x):  # type: ignore[no-untyped-def]
    """E = Σ_t ‖x_t − A B x_t‖² (the paper's sum convention)."""
    return total_squared_error(model(params, x), x)


def _template(n: int, p: int) -> tuple[Any, Any]:
    """The model and a parameter template (its values are always replaced)."""
    return pure(LinearAutoencoder(n, p, rngs=nnx.Rngs(0), param_dtype=jnp.float64))


# --- B1-B3: the enumerated critical points ------------------------------------------------

def critical_points(cfg: dict[str, Any]) -> StepResult:
    spec = cfg["critical_points"]
    x, description = load_patterns(spec, cfg["seed"])
    lam, vec = eigensystem(x)
    n, p = x.shape[1], spec["p"]
    model, template = _template(n, p)
    xj = jnp.asarray(x)
    loss = jax.jit(lambda prm: sum_squared_error(model, prm, xj))
    hessian = jax.jit(lambda prm: flat_hessian(loss, prm))
    rng = seeds.numpy_rng(cfg["seed"], MODULE, "mixing")

    rows = []
    optimum = tuple(range(p))
    for index_set in theory.index_sets(n, p):
        mixing = theory.random_mixing(rng, p)
        A, B = theory.critical_point(vec, index_set, p, mixing)
        params = ae_params_from_matrices(template, A, B)
        h = inertia(hessian(params), rtol=ZERO_RTOL)
        rows.append(
            dict(
                index_set="{" + ",".join(str(i + 1) for i in index_set) + "}",
                rank=len(index_set),
                loss_theory=theory.critical_loss(lam, index_set),
                loss_measured=float(loss(params)),
                rel_grad_norm=relative_gradient_norm(loss, params),
                index_theory=theory.hessian_index(lam, index_set, p),
                index_measured=h.negative,
                nullity_theory=theory.hessian_nullity(n, p, len(index_set)),
                nullity_measured=h.zero,
                min_eigenvalue=h.min_eigenvalue,
                max_abs_eigenvalue=float(np.max(np.abs(h.eigenvalues))),
                type="minimum" if h.negative == 0 else "saddle",
                theory_type="minimum" if index_set == optimum else "saddle",
            )
        )
    table = pd.DataFrame(rows)
    saddles = table[table.theory_type == "saddle"]
    minimum = table[table.theory_type == "minimum"]
    trace = float(lam.sum())
    measurements = {
        "n_critical_points": len(table),
        "max_rel_grad_norm": float(table.rel_grad_norm.max()),
        "max_rel_loss_error": float(((table.loss_measured - table.loss_theory).abs() / trace).max()),
        "index_mismatches": int((table.index_measured != table.index_theory).sum()),
        "nullity_mismatches": int((table.nullity_measured != table.nullity_theory).sum()),
        "saddles_without_negative_eigenvalue": int((saddles.index_measured == 0).sum()),
        "minimum_rel_min_eigenvalue": float(
            (minimum.min_eigenvalue / minimum.max_abs_eigenvalue).min()
        ),
        "minima_found": sorted(table[table.type == "minimum"].index_set.tolist()),
        "spectrum": lam.tolist(),
    }
    plotting.setup()
    return StepResult(
        measurements=measurements,
        tables={"critical_points": table},
        figures={"critical_points": _plot_critical_points(table, n, p, description),
                 "saddle_slice": _plot_saddle_slice(loss, template, lam, vec, p)},
    )


def _plot_critical_points(table: pd.DataFrame, n: int, p: int, description: str) -> FigureOut:
    import matplotlib.pyplot as plt
    import seaborn as sns

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    jitter = np.linspace(-0.15, 0.15, len(table))[::-1]  # spreads equal ranks apart; no randomness
    data = table.assign(rank_jittered=table["rank"] + jitter)
    sns.scatterplot(data=data, x="rank_jittered", y="loss_measured", hue="index_measured",
                    style="type", palette="viridis", ax=axes[0], s=45)
    axes[0].set(xlabel="|I| (rank of W, jittered)", ylabel="E at the critical point (sum)",
                title="Loss at every critical point")
    axes[0].legend(fontsize=7, ncol=2, title=None)
    lim = max(table.index_theory.max(), table.index_measured.max()) + 1
    axes[1].plot([0, lim], [0, lim], color="grey", lw=1, zorder=0)
    sns.scatterplot(data=table, x="index_theory", y="index_measured", hue="type", ax=axes[1])
    axes[1].set(xlabel="index from theory (#negative eigenvalues)",
                ylabel="index measured (eigvalsh of jax.hessian)",
                title="Hessian index: measured vs derived")
    n_saddle = int((table.type == "saddle").sum())
    caption = (
        f"All {len(table)} critical points with |I| ≤ p = {p} of the linear autoencoder "
        f"(n = {n}; data: {description}), each with a random invertible mixing C, float64. "
        f"Left: loss vs |I|, coloured by the measured Hessian index. Right: measured vs "
        f"derived index ({int((table.index_measured == table.index_theory).sum())}/{len(table)} "
        f"agree). Measured: {int((table.type == 'minimum').sum())} minimum "
        f"({', '.join(table[table.type == 'minimum'].index_set)}), {n_saddle} saddles; "
        f"max ‖∇E‖/(|E|+1) = {table.rel_grad_norm.max():.2e}."
    )
    return FigureOut(fig, caption)


def _plot_saddle_slice(loss, template, lam, vec, p) -> FigureOut:  # type: ignore[no-untyped-def]
    """E on the plane through the index-1 saddle {1..p−1, p+1} and the minimum {1..p},
    spanned by their difference and the saddle's negative-curvature eigenvector."""
    import matplotlib.pyplot as plt

    mixing = np.eye(p)
    saddle_set = (*range(p - 1), p)
    saddle = ae_params_from_matrices(template, *theory.critical_point(vec, saddle_set, p, mixing))
    minimum = ae_params_from_matrices(template, *theory.critical_point(vec, tuple(range(p)), p, mixing))
    theta_s, unravel = ravel_pytree(saddle)
    theta_m, _ = ravel_pytree(minimum)
    flat_loss = jax.jit(lambda t: loss(unravel(t)))
    eig, eigvec = np.linalg.eigh(np.asarray(jax.hessian(flat_loss)(theta_s)))
    d1 = np.asarray(theta_m - theta_s)
    d2 = eigvec[:, 0] - (eigvec[:, 0] @ d1) / (d1 @ d1) * d1
    d2 *= np.linalg.norm(d1) / np.linalg.norm(d2)
    alphas, betas = np.linspace(-0.5, 1.5, 81), np.linspace(-1.0, 1.0, 81)
    grid = jnp.asarray([[theta_s + a * d1 + b * d2 for a in alphas] for b in betas])
    values = np.asarray(jax.vmap(jax.vmap(flat_loss))(grid))
    fig, ax = plt.subplots(figsize=(6, 4.6))
    low, high = float(values.min()), float(np.quantile(values, 0.6))
    levels = np.linspace(low, high, 25)
    cs = ax.contourf(alphas, betas, np.minimum(values, high), levels=levels, cmap="viridis", extend="max")
    ax.contour(alphas, betas, values, levels=levels[::3], colors="white", linewidths=0.4)
    fig.colorbar(cs, ax=ax, label="E (sum), clipped at the 60th percentile")
    ax.plot([0], [0], "rx", ms=10, label=f"saddle I={{{','.join(str(i + 1) for i in saddle_set)}}}")
    ax.plot([1], [0], "w*", ms=13, label=f"minimum I={{1..{p}}}")
    ax.set(xlabel="α (towards the minimum)", ylabel="β (negative-curvature eigenvector)",
           title="Loss through a saddle and the minimum")
    ax.legend(loc="lower left", fontsize=8)
    caption = (
        f"E(θ_s + α d₁ + β d₂) with θ_s the index-1 saddle I = {{1..{p - 1},{p + 1}}} and "
        f"θ_m the minimum (C = I); d₁ = θ_m − θ_s, d₂ the Hessian eigenvector at θ_s with "
        f"eigenvalue {eig[0]:.4g} (theory: {theory.hessian_spectrum_theory(lam, saddle_set, p)[0]:.4g}), "
        f"orthogonalized to d₁ and scaled to |d₁|. E(θ_s) = {float(flat_loss(theta_s)):.4g}, "
        f"E(θ_m) = {float(flat_loss(theta_m)):.4g}."
    )
    return FigureOut(fig, caption)


# --- B4: gradient descent from many initializations ----------------------------------------

def gradient_descent(cfg: dict[str, Any]) -> StepResult:
    measurements: dict[str, Any] = {}
    frames = []
    for spec in cfg["gradient_descent"]:
        name = spec["dataset"]
        frame = resume.chunk(name, {**spec, "seed": cfg["seed"]},
                             lambda spec=spec: _descend_on(spec, cfg["seed"], cfg.get("data_dir")))
        frames.append(frame)
        measurements[f"gd_rel_gap_{name}"] = frame.rel_gap.tolist()
        measurements[f"gd_max_angle_{name}"] = frame.max_angle.tolist()
        measurements[f"gd_failed_runs_{name}"] = int((~np.isfinite(frame.final_loss)).sum())
    for name in GD_DATASETS:
        if f"gd_rel_gap_{name}" not in measurements:
            reason = {"not_testable": f"{name} is not among this scale's gradient_descent data sets"}
            measurements.update({f"gd_{q}_{name}": reason for q in ("rel_gap", "max_angle", "failed_runs")})
    table = pd.concat(frames, ignore_index=True)
    plotting.setup()
    return StepResult(measurements=measurements, tables={"gradient_descent": table},
                      figures={"gradient_descent": _plot_descent(table)})


def _descend_on(spec: dict[str, Any], seed: int, data_dir: str | None) -> pd.DataFrame:
    x, description = load_patterns(spec, seed, data_dir)
    frame = _descend(spec, x, seed)
    frame.insert(0, "dataset", spec["dataset"])
    frame["description"] = description
    return frame


def _descend(spec: dict[str, Any], x: np.ndarray, seed: int, init: Any = None) -> pd.DataFrame:
    """Full-batch GD on E from ``runs`` random inits at once (vmap over runs).

    ``init`` (params with a leading run axis) replaces the seeded Gaussian inits.

    E depends on the data only through Σ = XᵀX, so the T patterns are replaced by
    the n rows of Σ^{1/2}: the same loss and gradients at a fraction of the cost.
    """
    lam, vec = eigensystem(x)
    n, p = x.shape[1], spec["p"]
    root = (vec * np.sqrt(np.clip(lam, 0, None))) @ vec.T
    model, template = _template(n, p)
    data = jnp.asarray(root)
    lr = spec["lr"] / lam[0]
    optimizer = optax.sgd(lr)

    key = seeds.derive(seed, MODULE, "gradient_descent", spec["dataset"], "init")
    if init is None:
        init = gaussian_ensemble(template, key, spec["runs"], spec["init_scale"])
    run = train_ensemble(lambda prm, d: sum_squared_error(model, prm, d), init, data, optimizer,
                         spec["steps"], log_every=spec["steps"], desc=f"GD {spec['dataset']}")
    final_params, final_loss = run.params, run.final_loss
    optimum = float(lam[p:].sum())
    decoders = np.asarray(ae_matrices(final_params)[0])  # A of every run
    angles = np.array(
        [theory.principal_angles(a, vec[:, :p]).max() if np.all(np.isfinite(a)) else np.nan
         for a in decoders]
    )
    return pd.DataFrame(
        dict(
            run=np.arange(spec["runs"]),
            p=p,
            steps=spec["steps"],
            lr=lr,
            init_scale=spec["init_scale"],
            final_loss=final_loss,
            global_loss=optimum,
            next_critical_loss=float(lam.sum() - lam[: p - 1].sum() - lam[p]),  # I = {1..p−1, p+1}
            rel_gap=(final_loss - optimum) / optimum,
            max_angle=angles,
            failed=run.failed,
        )
    )


def _plot_descent(table: pd.DataFrame) -> FigureOut:
    import matplotlib.pyplot as plt

    datasets = list(dict.fromkeys(table.dataset))
    fig, axes = plt.subplots(2, len(datasets), figsize=(5.2 * len(datasets), 7.5), squeeze=False)
    parts = []
    for j, name in enumerate(datasets):
        sub = table[table.dataset == name]
        optimum, nxt = sub.global_loss.iloc[0], sub.next_critical_loss.iloc[0]
        ax = axes[0, j]
        span = nxt - optimum
        lo, hi = optimum - 0.1 * span, nxt + 0.1 * span
        ax.hist(np.clip(sub.final_loss, lo, hi), bins=60, range=(lo, hi), color="#4c72b0")
        ax.axvline(optimum, color="#2e7d32", ls="--", label=f"global min Σ_(i>p) λ_i = {optimum:.4g}")
        ax.axvline(nxt, color="#c62828", ls=":", label=f"best saddle {{1..p−1, p+1}} = {nxt:.4g}")
        ax.set(title=f"{name}: final loss, {len(sub)} inits (p = {sub.p.iloc[0]})", xlabel="final E",
               ylabel="runs")
        ax.legend(fontsize=7)
        ax = axes[1, j]
        ax.hist(np.log10(np.maximum(sub.max_angle, 1e-16)), bins=40, range=(-16, 0.5), color="#dd8452")
        ax.set(title=f"{name}: largest principal angle to the top-{sub.p.iloc[0]} PCA subspace",
               xlabel="log10 angle (rad)", ylabel="runs")
        parts.append(
            f"{name}: {len(sub)} runs, {sub.steps.iloc[0]} GD steps at lr = {sub.lr.iloc[0]:.3g}, "
            f"max relative gap {sub.rel_gap.max():.2e}, max principal angle {sub.max_angle.max():.2e} rad"
        )
    caption = (
        "Full-batch gradient descent on E from random Gaussian initializations, all runs "
        "vmapped in one jitted computation (float64). Top: final losses with the global "
        "minimum and the lowest saddle marked; bottom: largest principal angle between the "
        "decoder's column space and the top-p eigenvectors of Σ. " + "; ".join(parts) + "."
    )
    return FigureOut(fig, caption)
