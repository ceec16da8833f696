"""How accurate are the matrix-free curvature estimators? A small twin network where the
exact Hessian is cheap, so the report can show every estimator next to the truth.

The twin: an MLP (``widths``; 64-32-10, 2,410 parameters, ReLU at the quick scale) trained
briefly (``train_steps``) by full-batch Adam on scikit-learn's digits (training split), mean
cross-entropy, float64. At its final parameters we compare the exact spectrum
(``jax.hessian`` + ``eigvalsh``) with

- Lanczos (full reorthogonalization, ``lanczos_steps``): top-5 and bottom-5 Ritz values;
- power iteration (``power_iters``): λ_max;
- SLQ (Ghorbani et al. 2019; ``slq_steps`` steps, ``slq_draws`` Rademacher draws): the
  moments (1/n) tr(Hᵏ), k = 1, 2, 3, with their standard errors;
- Hutchinson and Hutch++ traces with their standard errors (``trace_matvecs`` each).

Settings: ``shared/toolkit/config.yaml``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pandas as pd

from shared import plotting, seeds
from shared.curvature import (
    batch_data,
    hessian_operator,
    hutch_plus_plus,
    hutchinson,
    lanczos_eigs,
    power_iteration,
    slq,
)
from shared.curvature.exact import flat_hessian
from shared.models.functional import pure
from shared.models.mlp import MLP
from shared.module import FigureOut, StepResult
from shared.training.fullbatch import train_ensemble


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


def estimators(settings: dict) -> StepResult:
    """Every estimator against the exact spectrum of the twin network."""
    widths = tuple(settings["widths"])
    loss_fn, params, data = twin_network(widths, settings["seed"], settings["train_steps"])
    exact = np.linalg.eigvalsh(np.asarray(jax.jit(lambda p: flat_hessian(lambda q: loss_fn(q, data), p))(params)))
    n = exact.size
    op = hessian_operator(loss_fn, params, batch_data(data, 512), reduction="mean")
    key = seeds.derive(settings["seed"], "toolkit_check")  # the stream's name predates the kit
    lanczos_steps, budget = settings["lanczos_steps"], settings["trace_matvecs"]
    slq_label = f"SLQ ({settings['slq_steps']} steps × {settings['slq_draws']} draws)"
    rows = []

    def row(estimator: str, quantity: str, truth: float, estimate: float, stderr: float = float("nan")) -> None:
        rows.append(dict(estimator=estimator, quantity=quantity, exact=truth, estimate=estimate,
                         abs_error=abs(estimate - truth), rel_error=abs(estimate - truth) / max(abs(truth), 1e-300),
                         stderr=stderr))

    ritz = lanczos_eigs(op, jax.random.fold_in(key, 0), k=5, num_steps=lanczos_steps)
    for i, value in enumerate(np.asarray(ritz.top.eigenvalues)):
        row(f"Lanczos ({lanczos_steps} steps)", f"λ_top{i + 1}", float(exact[-1 - i]), float(value))
    for i, value in enumerate(np.asarray(ritz.bottom.eigenvalues)):
        row(f"Lanczos ({lanczos_steps} steps)", f"λ_bottom{i + 1}", float(exact[i]), float(value))
    power = power_iteration(op, jax.random.fold_in(key, 1), max_iters=settings["power_iters"], rtol=1e-8)
    row("power iteration", "λ_max", float(exact[-1]), float(power.eigenvalue))
    density = slq(op, jax.random.fold_in(key, 2), num_steps=settings["slq_steps"], num_draws=settings["slq_draws"])
    for k in (1, 2, 3):
        estimate, stderr = density.moment(k)
        row(slq_label, f"(1/n) tr(H^{k})", float(np.mean(exact**k)), float(estimate), float(stderr))
    hutch = hutchinson(op, jax.random.fold_in(key, 3), num_probes=budget)
    row(f"Hutchinson ({budget} matvecs)", "tr(H)", float(exact.sum()), float(hutch.estimate), float(hutch.stderr))
    hpp = hutch_plus_plus(op, jax.random.fold_in(key, 4), num_matvecs=budget)
    row(f"Hutch++ ({budget} matvecs)", "tr(H)", float(exact.sum()), float(hpp.estimate), float(hpp.stderr))
    table = pd.DataFrame(rows)
    plotting.setup()
    return StepResult(
        measurements={"parameters": n, "exact_spectrum": exact.tolist()},
        tables={"estimators": table},
        figures={"toolkit": _plot(exact, density, table, widths, settings, slq_label)},
    )


def _plot(exact: np.ndarray, density, table: pd.DataFrame, widths: tuple[int, ...],  # type: ignore[no-untyped-def]
          settings: dict, slq_label: str) -> FigureOut:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    grid, values = np.asarray(density.grid), np.asarray(density.density)
    ax.hist(exact, bins=120, density=True, alpha=0.5, color="#4c72b0", label="exact eigenvalues")
    ax.plot(grid, values, color="#c62828", lw=1.2, label=slq_label.replace("SLQ", "SLQ density"))
    ax.set_yscale("log")
    peak = float(np.histogram(exact, bins=120, density=True)[0].max())
    ax.set_ylim(peak * 1e-6, peak * 10)  # the smoothed density's far tails carry no information
    ax.set(xlabel="Hessian eigenvalue", ylabel="density (log)", title="Twin network: exact vs SLQ")
    ax.legend()
    lanczos = table[table.estimator.str.startswith("Lanczos")]
    caption = (
        f"MLP {'-'.join(map(str, widths))} ({exact.size} parameters) after {settings['train_steps']} full-batch "
        "Adam steps "
        "on digits (training split), mean cross-entropy, float64. Histogram: all eigenvalues of the exact "
        "Hessian; line: the SLQ density. Largest relative error of the Lanczos top/bottom-5: "
        f"{lanczos.rel_error.max():.1e}; the full comparison is the table above."
    )
    return FigureOut(fig, caption)
