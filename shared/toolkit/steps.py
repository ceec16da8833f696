r"""How accurate are the matrix-free curvature estimators and the landscape tools? Small
problems whose answer is known exactly, so that every estimator is judged against the truth by
the claims in ``shared/toolkit/claims.yaml`` (thresholds declared there, from the estimators'
theory) and a regression in any of them fails its verdict.

One step, ``check`` (one process, so that the imports and JAX's start are paid once), in two
parts.

**The curvature estimators** (:func:`estimators`). The twin: an MLP (``widths``; 64-32-10,
2,410 parameters, ReLU at the quick scale) trained briefly (``train_steps``) by full-batch Adam
on scikit-learn's digits (training split), mean cross-entropy, float64. At its final parameters the exact Hessian H
(``jax.hessian``, symmetrised) and its spectrum (``eigvalsh``) are the ground truth for

- Lanczos (full reorthogonalisation, ``lanczos_steps``) on the Hessian-vector-product operator:
  the top-k and bottom-k Ritz values (k = ``ritz_values``) and their residuals;
- power iteration (``power_iters``, stopping at residual <= ``power_rtol``·|μ|) on the same
  operator: λ_max;
- SLQ (Ghorbani et al. 2019; ``slq_runs`` independent runs of ``slq_steps`` steps ×
  ``slq_draws`` Rademacher draws): per draw, the Gauss quadrature Σ_j w_j θ_jᵏ against the
  probe's own vᵀHᵏv (k = 0..3, exact for degree <= 2m − 1), and the moments (1/n) tr(Hᵏ),
  k = 1, 2, 3, with their standard errors;
- Hutchinson and Hutch++ traces (``trace_matvecs`` matvecs each), ``trace_draws``
  independent draws each, every draw's error in units of its own standard error.

Lanczos and power iteration run on the Hessian-vector-product operator the modules use, so
that their agreement with the exact spectrum also checks the operator. The stochastic
estimators (SLQ, Hutchinson, Hutch++) run on the dense operator of the exact H: they only ever
call ``op.matvec``/``op.matmat``, the two operators agree to rounding (the Lanczos check), and
the dense product makes the repeated draws their statistics need cheap.

**The landscape tools** (:func:`landscape_tools`). Keskar et al.'s Metric 2.1 (full space) on a
separable convex quadratic with a tiny gradient, against its closed form; and Li et al.'s filter-normalised
plane of a small convnet against an independent NumPy implementation of the official recipe
(``net_plotter.normalize_directions_for_weights(norm='filter', ignore='biasbn')``) and a NumPy
forward pass. Settings: ``shared/toolkit/config.yaml``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pandas as pd
from flax import nnx

from shared import plotting, seeds
from shared.curvature import (
    Operator,
    batch_data,
    dense_operator,
    hessian_operator,
    hutch_plus_plus,
    hutchinson,
    lanczos_eigs,
    power_iteration,
    slq,
)
from shared.curvature.exact import flat_hessian
from shared.models.functional import pure
from shared.models.mlp import MLP, make_batch_norm
from shared.module import FigureOut, StepResult
from shared.training.fullbatch import train_ensemble

MOMENTS = (1, 2, 3)  # SLQ moments (1/n) tr(Hᵏ) judged against the exact spectrum
MAX_POWER = 3  # Gauss quadrature checked draw by draw for k = 0..3 (k = 0: the weights sum to vᵀv = 1)
TRACE_ESTIMATORS = ("Hutchinson", "Hutch++")
WITHIN = 3.0  # "within k standard errors" of the trace claims (claims.yaml: fraction_at_most threshold)


# --------------------------------------------------------------------------- the twin network


def twin_network(widths: tuple[int, ...], seed: int, train_steps: int) -> tuple:
    """The trained twin: (loss_fn(params, batch), params, data as one batch)."""
    from shared import data as datasets

    train = datasets.load("digits", "train", dtype=jnp.float64)
    x, y = jnp.asarray(train.x).reshape(len(train), -1), jnp.asarray(train.y)
    model, params = pure(MLP(widths, rngs=seeds.flax_rngs(seed), param_dtype=jnp.float64))

    def loss_fn(prm, batch):  # type: ignore[no-untyped-def]
        inputs, labels = batch
        return optax.softmax_cross_entropy_with_integer_labels(model(prm, inputs), labels).mean()

    batched = jax.tree_util.tree_map(lambda v: v[None], params)
    run = train_ensemble(loss_fn, batched, (x, y), optax.adam(1e-2), train_steps, log_every=train_steps,
                         progress=False)
    trained = jax.tree_util.tree_map(lambda v: v[0], run.params)
    return loss_fn, trained, (x, y)


def _row(estimator: str, quantity: str, truth: float, estimate: float, **extra: Any) -> dict[str, Any]:
    return dict(estimator=estimator, quantity=quantity, exact=truth, estimate=estimate,
                abs_error=abs(estimate - truth), rel_error=abs(estimate - truth) / abs(truth) if truth else math.nan,
                stderr=extra.get("stderr", math.nan), residual=extra.get("residual", math.nan),
                draws=extra.get("draws", math.nan), within_3se=extra.get("within", math.nan),
                pooled_z=extra.get("pooled_z", math.nan))


# --------------------------------------------------------------------------- the checks, one by one
# Each takes an operator and the exact answer and returns (measurements, table rows, extras), so
# that tests can run it on a small matrix and plant the failure its claim rules out.


def lanczos_check(op: Operator, exact: np.ndarray, key: jax.Array, *, k: int, num_steps: int
                  ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Top-k and bottom-k Ritz values against the exact spectrum ``exact`` (ascending).

    ``lanczos_top_rel_error``: |θ_i − λ_i|/|λ_i| for the k largest. ``lanczos_bound_violation``:
    by Cauchy interlacing the i-th largest Ritz value is <= λ_{n−i+1} and the i-th smallest
    >= λ_i; the largest excursion outside those bounds, over ‖H‖₂ (0 when none)."""
    ritz = lanczos_eigs(op, key, k=k, num_steps=num_steps)
    top, bottom = np.asarray(ritz.top.eigenvalues, np.float64), np.asarray(ritz.bottom.eigenvalues, np.float64)
    top_res, bottom_res = np.asarray(ritz.top.residuals), np.asarray(ritz.bottom.residuals)
    largest, smallest = exact[::-1][:k], exact[:k]
    norm = float(np.max(np.abs(exact)))
    label = f"Lanczos ({num_steps} steps)"
    rows = [_row(label, f"λ_top{i + 1}", float(largest[i]), float(top[i]), residual=float(top_res[i]))
            for i in range(k)]
    rows += [_row(label, f"λ_bottom{i + 1}", float(smallest[i]), float(bottom[i]), residual=float(bottom_res[i]))
             for i in range(k)]
    excursion = max(float(np.max(top - largest)), float(np.max(smallest - bottom)), 0.0)
    measurements = {
        "lanczos_top_rel_error": (np.abs(top - largest) / np.abs(largest)).tolist(),
        "lanczos_bound_violation": excursion / norm,
    }
    return measurements, rows


def power_check(op: Operator, exact: np.ndarray, key: jax.Array, *, max_iters: int, rtol: float
                ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """λ_max by power iteration: did it stop on its residual test, and how far is it from λ_max."""
    result = power_iteration(op, key, max_iters=max_iters, rtol=rtol)
    truth, estimate = float(exact[-1]), float(result.eigenvalue)
    row = _row(f"power iteration (rtol {rtol:g}, {int(result.num_matvecs)} matvecs)", "λ_max", truth, estimate,
               residual=float(result.residual))
    return {"power_converged": bool(result.converged),
            "power_rel_error": abs(estimate - truth) / abs(truth)}, [row]


def slq_probes(op: Operator, key: jax.Array, num_draws: int) -> np.ndarray:
    """The unit probes ``slq(op, key, num_draws=...)`` draws ([num_draws, n]), by its own helper."""
    from shared.curvature.slq import _draw  # the probe of one draw, shared by both of slq's loops

    _, probes = jax.vmap(_draw, in_axes=(None, 0, None))(op, jax.random.split(key, num_draws), "rademacher")
    return np.asarray(probes, np.float64)


def slq_check(op: Operator, hessian: np.ndarray, exact: np.ndarray, key: jax.Array, *, num_steps: int,
              num_draws: int, runs: int) -> tuple[dict[str, Any], list[dict[str, Any]], Any]:
    """``runs`` independent SLQ runs: per-draw quadrature exactness and the pooled moment z-scores.

    ``slq_quadrature_error``: max over runs, draws and k in 0..3 of |Σ_j w_j θ_jᵏ − vᵀHᵏv| / ‖H‖₂ᵏ
    (Gauss quadrature with m nodes is exact for degree <= 2m − 1). ``slq_moment_z``: for k = 1, 2, 3,
    (mean over runs of the estimate − (1/n) Σ λᵏ) / (√(Σ_r stderr_r²) / runs), the z-test of the mean
    error over runs × draws independent draws. Returns the first run's density too (the figure)."""
    norm = float(np.max(np.abs(exact)))
    worst, estimates, stderrs, first = 0.0, [], [], None
    for r in range(runs):
        run_key = jax.random.fold_in(key, r)
        density = slq(op, run_key, num_steps=num_steps, num_draws=num_draws)
        first = density if first is None else first
        probes = slq_probes(op, run_key, num_draws)
        nodes, weights = np.asarray(density.nodes, np.float64), np.asarray(density.weights, np.float64)
        applied = probes  # rows vᵀHᵏ, k = 0, 1, …
        for k in range(MAX_POWER + 1):
            if k:
                applied = applied @ hessian
            quadrature = np.sum(weights * nodes**k, axis=-1)
            direct = np.sum(applied * probes, axis=-1)
            worst = max(worst, float(np.max(np.abs(quadrature - direct))) / norm**k)
        moments = [density.moment(k) for k in MOMENTS]
        estimates.append([float(m[0]) for m in moments])
        stderrs.append([float(m[1]) for m in moments])
    est, se = np.asarray(estimates), np.asarray(stderrs)
    truth = np.array([np.mean(exact**k) for k in MOMENTS])
    pooled_se = np.sqrt(np.sum(se**2, axis=0)) / runs
    z = (est.mean(axis=0) - truth) / pooled_se
    label = f"SLQ ({num_steps} steps × {num_draws} draws, {runs} runs)"
    rows = [_row(label, f"(1/n) tr(H^{k})", float(truth[i]), float(est[:, i].mean()), stderr=float(pooled_se[i]),
                 draws=runs * num_draws, pooled_z=float(z[i])) for i, k in enumerate(MOMENTS)]
    rows.append(_row(label, "quadrature − vᵀHᵏv, k ≤ 3 (/‖H‖ᵏ)", 0.0, worst, draws=runs * num_draws))
    measurements = {"slq_quadrature_error": worst, "slq_moment_z": z.tolist()}
    return measurements, rows, first


def _trace_estimator(kind: str) -> Callable[..., Any]:
    """Looked up at call time, so that a test can plant a broken estimator."""
    if kind == "Hutchinson":
        return lambda op, key, matvecs: hutchinson(op, key, num_probes=matvecs)
    if kind == "Hutch++":
        return lambda op, key, matvecs: hutch_plus_plus(op, key, num_matvecs=matvecs)
    raise ValueError(f"unknown trace estimator {kind!r}; allowed: {', '.join(TRACE_ESTIMATORS)}")


def trace_check(kind: str, op: Operator, trace: float, key: jax.Array, *, matvecs: int, draws: int
                ) -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]:
    """``draws`` independent trace estimates, each judged in units of its own standard error.

    Per draw z_r = (estimate_r − tr H)/stderr_r (``<prefix>_abs_z`` holds |z_r|); the pooled
    z = (mean_r estimate_r − tr H)/(√(Σ_r stderr_r²)/draws) is the z-test of the mean error."""
    estimate = _trace_estimator(kind)
    values, errors = [], []
    for r in range(draws):
        result = estimate(op, jax.random.fold_in(key, r), matvecs)
        values.append(float(result.estimate))
        errors.append(float(result.stderr))
    est, se = np.asarray(values), np.asarray(errors)
    z = (est - trace) / se
    pooled_se = float(np.sqrt(np.sum(se**2)) / draws)
    pooled_z = float((est.mean() - trace) / pooled_se)
    within = int(np.sum(np.abs(z) <= WITHIN))
    prefix = "hutchinson" if kind == "Hutchinson" else "hutchpp"
    label = f"{kind} ({matvecs} matvecs, {draws} draws)"
    rows = [_row(label, "tr(H)", trace, float(est.mean()), stderr=pooled_se, draws=draws, within=within,
                 pooled_z=pooled_z)]
    per_draw = [dict(estimator=kind, draw=r, estimate=float(est[r]), stderr=float(se[r]), z=float(z[r]))
                for r in range(draws)]
    return {f"{prefix}_abs_z": np.abs(z).tolist(), f"{prefix}_pooled_z": pooled_z}, rows, per_draw


def exact_hessian(loss_fn: Callable, params: Any, data: Any) -> np.ndarray:
    """The dense Hessian of the twin's loss, symmetrised (float64)."""
    h = np.asarray(jax.jit(lambda p: flat_hessian(lambda q: loss_fn(q, data), p))(params), np.float64)
    return 0.5 * (h + h.T)


def one_blas_thread() -> Any:
    """NumPy's BLAS/LAPACK on one thread (a context manager). Its threads contend with XLA's in the
    same process: eigvalsh of the quick twin's 2,410² Hessian took 18 s on two threads after the
    Hessian's computation and 1.9 s on one (2-core CPU)."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api="blas")


def check(settings: dict) -> StepResult:
    """The toolkit check, one step (one process: the imports and JAX's start are paid once):
    the curvature estimators on the twin network, then the landscape tools."""
    plotting.setup()
    with one_blas_thread():
        curvature, tools = estimators(settings), landscape_tools(settings)
    return StepResult(measurements={**curvature.measurements, **tools.measurements},
                      tables={**curvature.tables, **tools.tables}, figures={**curvature.figures, **tools.figures})


def estimators(settings: dict) -> StepResult:
    """Every curvature estimator against the exact Hessian of the twin network."""
    widths = tuple(settings["widths"])
    loss_fn, params, data = twin_network(widths, settings["seed"], settings["train_steps"])
    hessian = exact_hessian(loss_fn, params, data)
    exact = np.linalg.eigvalsh(hessian)
    n = exact.size
    op = hessian_operator(loss_fn, params, batch_data(data, 512), reduction="mean")
    dense = dense_operator(hessian)
    key = seeds.derive(settings["seed"], "toolkit_check")  # the stream's name predates the kit
    measurements: dict[str, Any] = {"parameters": n, "exact_spectrum": exact.tolist()}
    rows: list[dict[str, Any]] = []
    per_draw: list[dict[str, Any]] = []

    found, new = lanczos_check(op, exact, jax.random.fold_in(key, 0), k=settings["ritz_values"],
                               num_steps=settings["lanczos_steps"])
    measurements.update(found)
    rows += new
    found, new = power_check(op, exact, jax.random.fold_in(key, 1), max_iters=settings["power_iters"],
                             rtol=settings["power_rtol"])
    measurements.update(found)
    rows += new
    found, new, density = slq_check(dense, hessian, exact, jax.random.fold_in(key, 2),
                                    num_steps=settings["slq_steps"], num_draws=settings["slq_draws"],
                                    runs=settings["slq_runs"])
    measurements.update(found)
    rows += new
    trace = float(np.trace(hessian))
    for i, kind in enumerate(TRACE_ESTIMATORS):
        found, new, draws = trace_check(kind, dense, trace, jax.random.fold_in(key, 3 + i),
                                        matvecs=settings["trace_matvecs"], draws=settings["trace_draws"])
        measurements.update(found)
        rows += new
        per_draw += draws
    table = pd.DataFrame(rows)
    draws_table = pd.DataFrame(per_draw)
    return StepResult(
        measurements=measurements,
        tables={"estimators": table, "draws": draws_table},
        figures={"toolkit": _plot_estimators(exact, density, table, draws_table, measurements, widths, settings)},
    )


def _plot_estimators(exact: np.ndarray, density: Any, table: pd.DataFrame, draws: pd.DataFrame,
                     measurements: dict[str, Any], widths: tuple[int, ...], settings: dict) -> FigureOut:
    import matplotlib.pyplot as plt

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4), gridspec_kw={"width_ratios": [1.6, 1]})
    grid, values = np.asarray(density.grid), np.asarray(density.density)
    ax.hist(exact, bins=120, density=True, alpha=0.5, color="#4c72b0", label="exact eigenvalues")
    ax.plot(grid, values, color="#c62828", lw=1.2,
            label=f"SLQ density ({settings['slq_steps']} steps × {settings['slq_draws']} draws)")
    ax.set_yscale("log")
    peak = float(np.histogram(exact, bins=120, density=True)[0].max())
    ax.set_ylim(peak * 1e-6, peak * 10)  # the smoothed density's far tails carry no information
    ax.set(xlabel="Hessian eigenvalue", ylabel="density (log)", title="Twin network: exact vs SLQ")
    ax.legend(fontsize=8)
    colours = {"Hutchinson": "#4c72b0", "Hutch++": "#dd8452"}
    for i, kind in enumerate(TRACE_ESTIMATORS):
        z = draws[draws.estimator == kind].z.to_numpy()
        bx.scatter(np.full(z.size, i) + np.linspace(-0.2, 0.2, z.size), z, s=14, color=colours[kind])
    slq_z = np.asarray(measurements["slq_moment_z"])
    bx.scatter(np.full(slq_z.size, 2.0), slq_z, s=22, marker="D", color="#55a868")
    bx.axhspan(-WITHIN, WITHIN, color="#dddddd", zorder=0)
    bx.set_xticks([0, 1, 2], ["Hutchinson\n(per draw)", "Hutch++\n(per draw)", "SLQ moments\n(pooled z)"])
    bx.set(ylabel="error / own standard error", title="Stochastic estimators in their own units")
    lanczos = table[table.estimator.str.startswith("Lanczos")]
    top = lanczos[lanczos.quantity.str.startswith("λ_top")]
    bottom = lanczos[lanczos.quantity.str.startswith("λ_bottom")]
    caption = (
        f"MLP {'-'.join(map(str, widths))} ({exact.size} parameters) after {settings['train_steps']} full-batch "
        "Adam steps on digits (training split), mean cross-entropy, float64. Left: all eigenvalues of the exact "
        "Hessian (histogram) and the SLQ density of the first run (line). Right: every Hutchinson and Hutch++ "
        f"draw's error in units of its own standard error ({settings['trace_draws']} draws each, "
        f"{settings['trace_matvecs']} matvecs per draw; grey band ±{WITHIN:g}) and the pooled z of the SLQ "
        f"moments k = 1, 2, 3 ({settings['slq_runs']} runs × {settings['slq_draws']} draws). Lanczos "
        f"({settings['lanczos_steps']} steps): top-{len(top)} relative error at most {top.rel_error.max():.1e}; "
        f"bottom-{len(bottom)} from {bottom.rel_error.min():.1e} to {bottom.rel_error.max():.1e}."
    )
    return FigureOut(fig, caption)


# --------------------------------------------------------------------------- Keskar's Metric 2.1


def keskar_check(cfg: dict[str, Any], seed: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """Metric 2.1 (full space, A = I) of f(z) = f₀ + gᵀ(z − x) + ½(z − x)ᵀ diag(h) (z − x), float32.

    h ~ U(0, ``max_curvature``), x ~ N(0, 1), g = ±``gradient`` (a trained minimum's tiny
    gradient), ε = ``epsilon``. The box |y_i| <= b_i = ε(|x_i| + 1) and the separable closed form
    Δ* = Σ_i ½ h_i b_i² + |g_i| b_i (each coordinate at its better vertex), φ* = 100 Δ*/(1 + f₀).
    ``keskar_rel_error`` = (φ − φ*)/φ*; any vertex of the box is within 2 Σ|g_i| b_i of Δ*."""
    from shared.sharpness import keskar

    rng = seeds.numpy_rng(seed, "toolkit", "keskar")
    n, eps, f0 = int(cfg["parameters"]), float(cfg["epsilon"]), 0.1
    h = rng.uniform(0.0, float(cfg["max_curvature"]), n).astype(np.float32)
    x = rng.normal(size=n).astype(np.float32)
    g = (float(cfg["gradient"]) * rng.choice([-1.0, 1.0], n)).astype(np.float32)
    xj, hj, gj = jnp.asarray(x), jnp.asarray(h), jnp.asarray(g)

    def loss(z: jax.Array) -> jax.Array:
        step = z - xj
        return f0 + gj @ step + 0.5 * step @ (hj * step)

    res = keskar.keskar_sharpness(loss, xj, epsilon=eps, maxiter=int(cfg["maxiter"]),
                                  key=seeds.derive(seed, "toolkit", "keskar"), on_no_progress="ignore")
    b = eps * (np.abs(x.astype(np.float64)) + 1)
    h64, g64 = h.astype(np.float64), g.astype(np.float64)
    delta = float(np.sum(0.5 * h64 * b**2 + np.abs(g64) * b))
    closed = 100.0 * delta / (1.0 + f0)
    rel_error = (res.sharpness - closed) / closed
    row: dict[str, Any] = dict(
        parameters=n, epsilon=eps, gradient=float(cfg["gradient"]), max_curvature=float(cfg["max_curvature"]),
        maxiter=int(cfg["maxiter"]), sharpness=res.sharpness, closed_form=closed, rel_error=rel_error,
        vertex_gap_rel=float(2 * np.sum(np.abs(g64) * b) / delta), nit=res.nit, nfev=res.nfev,
        no_progress=res.no_progress, message=res.message)
    return {"keskar_no_progress": bool(res.no_progress), "keskar_rel_error": float(rel_error)}, row


# --------------------------------------------------------------------------- the filter-normalised plane


class TinyConvNet(nnx.Module):
    """conv3×3 'same' (with bias) → BatchNorm → ReLU, once per entry of ``channels``; flatten;
    a dense layer to 10 classes. Input 8×8×1 (digits)."""

    def __init__(self, channels: Sequence[int], *, rngs: nnx.Rngs, param_dtype: Any = jnp.float64) -> None:
        convs, norms, c_in = [], [], 1
        for c_out in channels:
            convs.append(nnx.Conv(c_in, int(c_out), (3, 3), padding="SAME", param_dtype=param_dtype, rngs=rngs))
            norms.append(make_batch_norm(int(c_out), rngs, param_dtype))
            c_in = int(c_out)
        self.convs, self.norms = nnx.List(convs), nnx.List(norms)
        self.head = nnx.Linear(64 * c_in, 10, param_dtype=param_dtype, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        for conv, norm in zip(self.convs, self.norms, strict=True):
            x = jax.nn.relu(norm(conv(x)))
        return self.head(x.reshape((x.shape[0], -1)))


def plane_network(cfg: dict[str, Any], seed: int) -> TinyConvNet:
    """The convnet with every parameter kind non-trivial, drawn in NumPy (Flax's initialisers
    would compile one program per parameter): kernels N(0, 1/fan_in) with each output filter
    (conv and dense) rescaled by a log-uniform factor in [1/s, s] (s = ``filter_scale``), so that
    filter-wise, layer-wise and wrong-axis normalisations differ; biases N(0, 0.1²); BatchNorm
    scales U(0.5, 1.5), offsets N(0, 0.1²), running means N(0, 0.1²), running variances U(0.5, 2)."""
    abstract = nnx.eval_shape(lambda: TinyConvNet(cfg["channels"], rngs=nnx.Rngs(0)))
    graphdef, state = nnx.split(abstract)
    rng = seeds.numpy_rng(seed, "toolkit", "plane", "parameters")
    spread = math.log(float(cfg["filter_scale"]))

    def draw(path: Any, leaf: Any) -> jax.Array:
        name, shape = jax.tree_util.keystr(path), tuple(leaf.shape)
        if name.endswith("['kernel'].value"):
            fan_in = int(np.prod(shape[:-1]))
            value = rng.normal(0.0, 1.0 / math.sqrt(fan_in), shape) * np.exp(rng.uniform(-spread, spread, shape[-1]))
        elif name.endswith("['scale'].value"):
            value = rng.uniform(0.5, 1.5, shape)
        elif name.endswith("['var'].value"):
            value = rng.uniform(0.5, 2.0, shape)
        elif name.endswith(("['bias'].value", "['mean'].value")):
            value = rng.normal(0.0, 0.1, shape)
        else:
            raise ValueError(f"unexpected state {name} in the plane's convnet")
        return jnp.asarray(value, leaf.dtype)

    return nnx.merge(graphdef, jax.tree_util.tree_map_with_path(draw, state))


def _named(tree: Any) -> dict[str, np.ndarray]:
    """Leaves of a parameter pytree by path (``['convs'][0]['kernel'].value``), as float64 NumPy."""
    return {jax.tree_util.keystr(path): np.asarray(leaf, np.float64)
            for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def li_filter_normalize(direction: dict[str, np.ndarray], weights: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Li et al. (2018) §4, the official ``net_plotter.normalize_directions_for_weights`` with
    ``norm='filter'``, ``ignore='biasbn'``, in NumPy: a parameter with ndim <= 1 (bias, BatchNorm)
    is zeroed; otherwise every filter d_j ← d_j · ‖w_j‖/(‖d_j‖ + 1e-10). PyTorch iterates the first
    axis (output channels); Flax keeps the output filter on the last axis."""
    out = {}
    for name, w in weights.items():
        d = np.array(direction[name], np.float64)
        if w.ndim <= 1:
            out[name] = np.zeros_like(w)
            continue
        for j in range(w.shape[-1]):
            d[..., j] *= np.linalg.norm(w[..., j]) / (np.linalg.norm(d[..., j]) + 1e-10)
        out[name] = d
    return out


def numpy_loss(weights: dict[str, np.ndarray], stats: list[tuple[np.ndarray, np.ndarray, float]],
               x: np.ndarray, y: np.ndarray) -> float:
    """Mean softmax cross-entropy of :class:`TinyConvNet` in eval mode, in NumPy (float64): conv
    3×3 'same' as a sum of nine shifted products, BatchNorm with its running statistics."""
    h = x
    for i, (mean, var, eps) in enumerate(stats):
        kernel, bias = weights[f"['convs'][{i}]['kernel'].value"], weights[f"['convs'][{i}]['bias'].value"]
        padded = np.pad(h, ((0, 0), (1, 1), (1, 1), (0, 0)))
        rows, cols = h.shape[1], h.shape[2]
        out = sum(padded[:, a:a + rows, b:b + cols, :] @ kernel[a, b] for a in range(3) for b in range(3)) + bias
        scale, offset = weights[f"['norms'][{i}]['scale'].value"], weights[f"['norms'][{i}]['bias'].value"]
        h = np.maximum((out - mean) / np.sqrt(var + eps) * scale + offset, 0.0)
    logits = h.reshape(h.shape[0], -1) @ weights["['head']['kernel'].value"] + weights["['head']['bias'].value"]
    top = logits.max(axis=1, keepdims=True)
    log_z = np.log(np.sum(np.exp(logits - top), axis=1)) + top[:, 0]
    return float(np.mean(log_z - logits[np.arange(len(y)), y]))


def plane_check(cfg: dict[str, Any], seed: int) -> tuple[dict[str, Any], pd.DataFrame]:
    """The suite's filter-normalised plane (``directions.normalize_direction`` + ``surface.plane``)
    against the NumPy recipe (:func:`li_filter_normalize`) evaluated by :func:`numpy_loss`, from the
    same two Gaussian draws, on the same ``grid`` × ``grid`` points of [−extent, extent]².

    ``plane_direction_rel_diff``: max over parameters and filters of ‖suite − NumPy‖/‖NumPy‖ (for
    ndim <= 1 parameters, where the recipe gives 0: ‖suite‖/‖weights‖). ``plane_loss_rel_diff``:
    max over the grid of |L_suite − L_NumPy|/|L_NumPy| (inf if the suite's grid misses a point)."""
    from shared import data as datasets
    from shared.landscape import directions, surface

    model = plane_network(cfg, seed)
    train = datasets.load("digits", "train", dtype=jnp.float64)
    x, y = np.asarray(train.x, np.float64)[: cfg["examples"]], np.asarray(train.y)[: cfg["examples"]]
    objective, params = surface.from_model(model, (jnp.asarray(x), jnp.asarray(y)), bn_mode="eval")
    leaves, treedef = jax.tree_util.tree_flatten(params)
    weights = _named(params)
    rng = seeds.numpy_rng(seed, "toolkit", "plane", "directions")
    raw = [{name: rng.standard_normal(w.shape) for name, w in weights.items()} for _ in range(2)]
    suite = [directions.normalize_direction(
        jax.tree_util.tree_unflatten(treedef, [jnp.asarray(r[name], leaf.dtype)
                                               for name, leaf in zip(weights, leaves, strict=True)]),
        params, norm="filter", ignore="biasbn") for r in raw]
    recipe = [li_filter_normalize(r, weights) for r in raw]

    worst = 0.0
    for s_tree, ref in zip(suite, recipe, strict=True):
        for name, s in _named(s_tree).items():
            w, d = weights[name], ref[name]
            if w.ndim <= 1:
                worst = max(worst, float(np.linalg.norm(s)) / max(float(np.linalg.norm(w)), 1e-300))
                continue
            axes = tuple(range(w.ndim - 1))
            per_filter = np.sqrt(np.sum((s - d) ** 2, axis=axes)) / np.sqrt(np.sum(d**2, axis=axes))
            worst = max(worst, float(np.max(per_filter)))

    coords = np.linspace(-float(cfg["extent"]), float(cfg["extent"]), int(cfg["grid"]))
    landscape = surface.plane(objective, params, suite[0], suite[1], coords, coords)
    stats = [(np.asarray(norm.mean[...], np.float64), np.asarray(norm.var[...], np.float64), float(norm.epsilon))
             for norm in model.norms]
    expected = {}
    for i, alpha in enumerate(coords):
        for j, beta in enumerate(coords):
            point = {name: weights[name] + alpha * recipe[0][name] + beta * recipe[1][name] for name in weights}
            expected[(i, j)] = numpy_loss(point, stats, x, y)
    rows, seen = [], set()
    for alpha, beta, loss in landscape.table[["alpha", "beta", "loss"]].itertuples(index=False):
        i, j = int(np.argmin(np.abs(coords - alpha))), int(np.argmin(np.abs(coords - beta)))
        on_grid = abs(coords[i] - alpha) <= 1e-12 and abs(coords[j] - beta) <= 1e-12 and (i, j) not in seen
        seen.add((i, j))
        reference = expected[(i, j)] if on_grid else math.nan
        rows.append(dict(alpha=alpha, beta=beta, loss_suite=loss, loss_numpy=reference,
                         rel_diff=abs(loss - reference) / abs(reference) if on_grid else math.inf))
    table = pd.DataFrame(rows)
    complete = len(seen) == len(expected) == len(table)
    loss_diff = float(table.rel_diff.max()) if complete and np.all(np.isfinite(table.rel_diff)) else math.inf
    return {"plane_direction_rel_diff": worst, "plane_loss_rel_diff": loss_diff}, table


def landscape_tools(settings: dict) -> StepResult:
    """Metric 2.1 against its closed form; the filter-normalised plane against the NumPy recipe."""
    found, keskar_row = keskar_check(settings["keskar"], settings["seed"])
    measurements = dict(found)
    found, plane = plane_check(settings["plane"], settings["seed"])
    measurements.update(found)
    return StepResult(
        measurements=measurements,
        tables={"keskar": pd.DataFrame([keskar_row]), "plane": plane},
        figures={"plane": _plot_plane(plane, measurements, settings["plane"])},
    )


def _plot_plane(table: pd.DataFrame, measurements: dict[str, Any], cfg: dict[str, Any]) -> FigureOut:
    import matplotlib.pyplot as plt

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(10.5, 4), layout="constrained")
    alphas, betas = np.unique(table.alpha), np.unique(table.beta)
    grid = table.pivot(index="beta", columns="alpha", values="loss_suite").to_numpy()
    ref = table.pivot(index="beta", columns="alpha", values="loss_numpy").to_numpy()
    filled = ax.contourf(alphas, betas, grid, levels=20, cmap="viridis")
    ax.contour(alphas, betas, ref, levels=filled.levels[::3], colors="white", linestyles="dashed", linewidths=0.8)
    fig.colorbar(filled, ax=ax, label="loss")
    ax.set(xlabel="α", ylabel="β", title="suite (filled) and NumPy recipe (dashed)")
    ax.locator_params(nbins=5)
    diff = table.pivot(index="beta", columns="alpha", values="rel_diff").to_numpy()
    half_a, half_b = (alphas[1] - alphas[0]) / 2, (betas[1] - betas[0]) / 2  # pixels centred on the points
    image = bx.imshow(np.log10(np.maximum(diff, 1e-18)), origin="lower", cmap="magma", aspect="auto",
                      extent=(alphas[0] - half_a, alphas[-1] + half_a, betas[0] - half_b, betas[-1] + half_b))
    bx.grid(False)
    fig.colorbar(image, ax=bx, label="log10 |L_suite − L_NumPy| / L_NumPy")
    bx.set(xlabel="α", ylabel="β", title="relative difference")
    channels = "-".join(str(c) for c in cfg["channels"])
    caption = (
        f"Filter-normalised plane L(θ + αδ + βη) of a convnet (conv3×3+BN+ReLU with {channels} channels, dense "
        f"head; filters rescaled over [1/{cfg['filter_scale']:g}, {cfg['filter_scale']:g}]) on {cfg['examples']} "
        f"digits, BatchNorm in eval mode, float64, {cfg['grid']}×{cfg['grid']} points of "
        f"[−{cfg['extent']:g}, {cfg['extent']:g}]². The suite's directions and plane against the official recipe "
        "(normalize_directions_for_weights, norm='filter', ignore='biasbn') written in NumPy with a NumPy forward "
        f"pass: largest per-filter direction difference {measurements['plane_direction_rel_diff']:.1e}, largest "
        f"relative loss difference {measurements['plane_loss_rel_diff']:.1e}."
    )
    return FigureOut(fig, caption)
