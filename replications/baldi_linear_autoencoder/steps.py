"""Baldi & Hornik (1989) experiments: the steps ``module.py`` declares.

- ``critical_points``: B1–B3. Every analytic critical point with |I| ≤ p is
  built with a random invertible mixing C; its gradient, loss and exact
  Hessian inertia are measured in float64 and compared with ``theory``.
- ``gradient_descent``: B4. Many random initializations per (data set, init
  distribution: small, unit or glorot), vmapped, trained by full-batch gradient
  descent; the final loss restricted to range(Σ) vs Σ_{i>p} λ_i and principal
  angles between the learned decoder's column space and the top-p eigenvectors.

Every step takes the resolved settings and returns its measurements, tables and
figures (``shared.module.StepResult``); the kit writes them.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
from flax import nnx
from jax.flatten_util import ravel_pytree

from replications.baldi_linear_autoencoder import theory
from replications.baldi_linear_autoencoder.module import GD_DATASETS, GD_QUANTITIES, INITS, gd_quantity
from shared import plotting, resume, seeds
from shared.curvature.exact import flat_hessian, inertia, relative_gradient_norm
from shared.models.functional import pure
from shared.models.linear import LinearAutoencoder, ae_matrices, ae_params_from_matrices
from shared.module import FigureOut, StepResult
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

GD_BLOCK = 10_000  # GD steps per jitted block; every run's finiteness is checked after each block
GAP_FLOOR = 1e-17  # relative gaps at or below rounding are drawn here on the log axis
TRUNCATED_STD = 0.87962566103423978  # std of a standard normal truncated to [−2, 2] (Glorot's draw)


def gradient_descent(cfg: dict[str, Any]) -> StepResult:
    measurements: dict[str, Any] = {}
    frames = []
    for spec in cfg["gradient_descent"]:
        name, init = spec["dataset"], spec.get("init", "small")
        frame = resume.chunk(f"{name}_{init}", {**spec, "init": init, "seed": cfg["seed"]},
                             lambda spec=spec: _descend_on(spec, cfg["seed"], cfg.get("data_dir")))
        frames.append(frame)
        measurements[gd_quantity("rel_gap", name, init)] = frame.rel_gap.tolist()
        measurements[gd_quantity("max_angle", name, init)] = frame.max_angle.tolist()
        measurements[gd_quantity("failed_runs", name, init)] = int(frame.failed.sum())
    for name in GD_DATASETS:
        for init in INITS:
            if gd_quantity("rel_gap", name, init) not in measurements:
                reason = {"not_testable": f"{name} from {init} inits is not among this scale's gradient_descent runs"}
                measurements.update({gd_quantity(q, name, init): reason for q in GD_QUANTITIES})
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


def init_std(spec: dict[str, Any], n: int, p: int) -> float:
    """The std of every weight under the spec's init: ``init_scale`` (small, unit), or
    ``init_scale`` · √(2/(fan_in + fan_out)) = init_scale · √(2/(n + p)) (glorot; both layers)."""
    if spec.get("init", "small") == "glorot":
        return float(spec["init_scale"] * np.sqrt(2.0 / (n + p)))
    return float(spec["init_scale"])


def draw_inits(spec: dict[str, Any], n: int, p: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``runs`` seeded draws of the decoder A (runs, n, p) and encoder B (runs, p, n): small and
    unit are N(0, init_scale²) per weight; glorot is Glorot's (Xavier's) normal draw as
    ``jax.nn.initializers.glorot_normal`` makes it: a standard normal truncated to [−2, 2], scaled
    to std init_scale·√(2/(fan_in + fan_out)). NumPy draws them (a JAX draw compiles for every
    shape, seconds each on a CPU)."""
    kind = spec.get("init", "small")
    rng = seeds.numpy_rng(seed, MODULE, "gradient_descent", spec["dataset"], kind, "init")
    std, runs = init_std(spec, n, p), spec["runs"]
    draws = []
    for shape in ((runs, n, p), (runs, p, n)):
        z = rng.standard_normal(shape)
        if kind == "glorot":
            outside = np.abs(z) > 2.0
            while outside.any():  # resample until every value lies in [−2, 2]
                z[outside] = rng.standard_normal(int(outside.sum()))
                outside = np.abs(z) > 2.0
            z /= TRUNCATED_STD
        draws.append(std * z)
    return draws[0], draws[1]


@functools.partial(jax.jit, static_argnames="length")
def _gd_block(a: jax.Array, b: jax.Array, lam: jax.Array, lr: float, length: int) -> tuple[jax.Array, jax.Array]:
    """``length`` full-batch GD steps on E of every run (vmap), in Σ's eigenbasis (Σ = diag λ):
    ∇_A E = −2(ΣBᵀ − A·BΣBᵀ), ∇_B E = −2(AᵀΣ − AᵀA·BΣ): O(np²) per step instead of O(n²p)."""
    def grads(a: jax.Array, b: jax.Array) -> tuple[jax.Array, jax.Array]:
        bs = b * lam
        return -2.0 * (bs.T - a @ (bs @ b.T)), -2.0 * (a.T * lam - (a.T @ a) @ bs)

    def run(a: jax.Array, b: jax.Array) -> tuple[jax.Array, jax.Array]:
        def body(carry: tuple[jax.Array, jax.Array], _: None) -> tuple[tuple[jax.Array, jax.Array], None]:
            ga, gb = grads(*carry)
            return (carry[0] - lr * ga, carry[1] - lr * gb), None

        return jax.lax.scan(body, (a, b), None, length=length, unroll=8)[0]

    return jax.vmap(run)(a, b)


def gd_eigenbasis(a: np.ndarray, b: np.ndarray, lam: np.ndarray, lr: float,
                  steps: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Plain full-batch gradient descent on E from every run's (A, B) at once, all given in Σ's
    eigenbasis (A (runs, n, p), B (runs, p, n), Σ = diag ``lam``). Returns the final A, B and which
    runs failed: a run whose weights turn non-finite is frozen at its weights at the start of
    that block of ``GD_BLOCK`` steps (the last finite ones checked) and marked failed."""
    lam_j = jnp.asarray(lam)
    a_j, b_j = jnp.asarray(a), jnp.asarray(b)
    failed = np.zeros(a_j.shape[0], dtype=bool)
    done = 0
    while done < steps:
        length = min(GD_BLOCK, steps - done)
        new_a, new_b = _gd_block(a_j, b_j, lam_j, lr, length)
        finite = jnp.all(jnp.isfinite(new_a), axis=(1, 2)) & jnp.all(jnp.isfinite(new_b), axis=(1, 2))
        failed |= ~np.asarray(finite)
        frozen = jnp.asarray(failed)[:, None, None]
        a_j, b_j = jnp.where(frozen, a_j, new_a), jnp.where(frozen, b_j, new_b)
        done += length
    return np.asarray(a_j), np.asarray(b_j), failed


def _descend(spec: dict[str, Any], x: np.ndarray, seed: int, init: Any = None) -> pd.DataFrame:
    """Full-batch GD on E from ``runs`` random inits at once (vmap over runs).

    ``init`` replaces the seeded draws of the spec's init distribution (``draw_inits``): the
    autoencoder's params with a leading run axis, or its matrices (A (runs, n, p), B (runs, p, n)).

    E depends on the data only through Σ = XᵀX = U diag(λ) Uᵀ, and gradient descent commutes
    with the orthogonal change of coordinates A → UᵀA, B → BU, so every run is trained in
    Σ's eigenbasis (``gd_eigenbasis``): the same iterates up to rounding, at O(np²) a step.
    Each run's result: E, E_V (the loss restricted to range(Σ), ``theory.range_loss``), their
    gaps to the global minimum Σ_{i>p} λ_i, and the largest principal angle between the
    decoder's column space and the top-p eigenvectors.
    """
    lam, vec = eigensystem(x)
    lam = np.clip(lam, 0.0, None)  # a singular Σ's zero eigenvalues come out as ±rounding
    n, p = x.shape[1], spec["p"]
    given = init is not None
    if not given:
        init = draw_inits(spec, n, p, seed)
    a0, b0 = (np.asarray(m) for m in (init if isinstance(init, tuple) else ae_matrices(init)))
    lr = spec["lr"] / lam[0]
    a, b, failed = gd_eigenbasis(vec.T @ a0, b0 @ vec, lam, lr, spec["steps"])
    eye = np.eye(n)
    optimum = float(lam[p:].sum())
    whole = np.where(failed, np.nan, theory.range_loss(lam, eye, a, b, range_only=False))
    ranged = np.where(failed, np.nan, theory.range_loss(lam, eye, a, b))
    angles = np.array([np.nan if bad else theory.principal_angles(d, eye[:, :p]).max()
                       for d, bad in zip(a, failed, strict=True)])
    return pd.DataFrame(
        dict(
            init="given" if given else spec.get("init", "small"),
            init_scale=np.nan if given else spec["init_scale"],
            init_std=np.nan if given else init_std(spec, n, p),
            run=np.arange(a.shape[0]),
            p=p,
            steps=spec["steps"],
            lr_lambda1=spec["lr"],
            lr=lr,
            range_dim=int(theory.range_mask(lam).sum()),
            final_loss=whole,
            range_loss=ranged,
            global_loss=optimum,
            next_critical_loss=float(lam.sum() - lam[: p - 1].sum() - lam[p]),  # I = {1..p−1, p+1}
            rel_gap=(ranged - optimum) / optimum,
            rel_gap_whole=(whole - optimum) / optimum,
            max_angle=angles,
            failed=failed,
        )
    )


INIT_WORDS = {"small": "Gaussian, std {std:.3g}", "unit": "Gaussian, std {std:.3g}",
              "glorot": "Glorot's truncated normal, std {std:.3g} = {scale:g}·√(2/(n+p))"}


def _plot_descent(table: pd.DataFrame) -> FigureOut:
    import matplotlib.pyplot as plt

    datasets = list(dict.fromkeys(table.dataset))
    fig, axes = plt.subplots(2, len(datasets), figsize=(5.6 * len(datasets), 8), squeeze=False,
                             layout="constrained")
    colours = {"small": "#4c72b0", "unit": "#dd8452", "glorot": "#55a868", "given": "#8172b3"}
    parts = []
    for j, name in enumerate(datasets):
        sub = table[table.dataset == name]
        first = sub.iloc[0]
        saddle_gap = (first.next_critical_loss - first.global_loss) / first.global_loss
        top, bottom = axes[0, j], axes[1, j]
        for init, runs in sub.groupby("init", sort=False):
            row = runs.iloc[0]
            label = f"{init}: {INIT_WORDS.get(init, '{std}').format(std=row.init_std, scale=row.init_scale)}"
            gaps = np.log10(np.clip(runs.rel_gap.fillna(np.inf), GAP_FLOOR, None))
            top.hist(np.minimum(gaps, 1.0), bins=60, range=(-17, 1), histtype="step", lw=1.6,
                     color=colours.get(init), label=label)
            bottom.hist(np.log10(np.clip(runs.max_angle.fillna(np.pi), 1e-16, None)), bins=64, range=(-16, 0.5),
                        histtype="step", lw=1.6, color=colours.get(init), label=init)
            parts.append(
                f"{name}, {init} init ({label.split(': ', 1)[1]}): {len(runs):,} runs × {row.steps:,} GD steps at "
                f"step size {row.lr_lambda1:g}/λ₁ = {row.lr:.3g}; max relative gap {runs.rel_gap.max():.2e} "
                f"(whole E: {runs.rel_gap_whole.max():.2e}), max principal angle {runs.max_angle.max():.2e} rad, "
                f"{int(runs.failed.sum())} failed"
            )
        top.axvline(np.log10(saddle_gap), color="#c62828", ls=":",
                    label=f"best saddle {{1..p−1, p+1}}: {saddle_gap:.3g}")
        top.set(title=f"{name} (p = {first.p}, rank Σ = {first.range_dim}): final loss gap",
                xlabel="log10 (E_V − E*)/E*  (≤ 1e-17 at −17)", ylabel="runs")
        top.legend(fontsize=7)
        bottom.set(title=f"{name}: largest angle to the top-{first.p} PCA subspace",
                   xlabel="log10 angle (rad)", ylabel="runs")
        bottom.legend(fontsize=7)
    caption = (
        "Full-batch gradient descent on E from random initializations of each distribution, all runs of "
        "one (data set, init) trained together (vmap, float64, in Σ's eigenbasis). Top: relative gap of "
        "the final loss restricted to range(Σ), E_V, to the global minimum E* = Σ_(i>p) λ_i, with the "
        "lowest saddle marked; bottom: largest principal angle between the decoder's column space and the "
        "top-p eigenvectors of Σ. " + "; ".join(parts) + "."
    )
    return FigureOut(fig, caption)
