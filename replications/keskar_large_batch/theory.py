r"""Keskar, Mudigere, Nocedal, Smelyanskiy & Tang (ICLR 2017): the paper's quantities.

Notation of the paper (§2): f is the mean cross-entropy over the training set, x ∈ ℝⁿ the
parameters, x₀ the initial point, x_s* and x_ℓ* the minimizers that small-batch (SB) and
large-batch (LB) Adam reach from x₀.

- **Metric 2.1** (§2.2.1, sharpness): φ_{x,f}(ε, A) = [max_{y ∈ C_ε} f(x + Ay) − f(x)] /
  (1 + f(x)) × 100 with the box C_ε = {z ∈ ℝᵖ : |z_i| ≤ ε(|(A⁺x)_i| + 1)}, maximised by 10
  iterations of L-BFGS-B; A = Iₙ (Table 3) or a random n×100 matrix (Table 4). Implemented
  once, in :mod:`shared.sharpness.keskar` (this module only calls it).
- **Parametric plot** (§2.2, Figure 3): f(α x_ℓ* + (1 − α) x_s*), α ∈ [−1, 2]; α = 0 is the
  SB minimizer, α = 1 the LB one (:func:`interpolate`).
- **Distance ratio** (§3): ‖x_s* − x₀‖₂ / ‖x_ℓ* − x₀‖₂, "in the range 3–10"
  (:func:`distance_ratio`).
- **Stopping** (§2.2): "trained, without any budget or limits, until the loss function
  ceased to improve"; the paper gives no tolerance. Ours, :func:`stopping_update`: a run stops
  at the first epoch at which its full training loss has not fallen below (best so far −
  ``min_delta``) for ``patience`` consecutive epochs (Keras ``EarlyStopping`` on the training
  loss), or at a cap ``max_epochs`` (then marked capped).

The paper's Tables 2–4 (``shared/papers/CLAIMS.md``, Module 5, verified [V]) are in
``claims.yaml`` (``paper_tables``), as (mean, sd) over 5 runs; accuracies as fractions.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from pathlib import Path

import numpy as np

from shared.claims import load_claims, paper_table

NETWORKS = ("f1", "f2", "c1", "c2", "c3", "c4")
PAPER_DATA = {"f1": "MNIST", "f2": "TIMIT", "c1": "CIFAR-10", "c2": "CIFAR-10", "c3": "CIFAR-100",
              "c4": "CIFAR-100"}
PAPER_TYPE = {"f1": "fully connected", "f2": "fully connected", "c1": "shallow conv", "c2": "deep conv",
              "c3": "shallow conv", "c4": "deep conv"}
SB_BATCH = 256  # §2.2
LB_FRACTION = 0.1  # §2.2: LB = 10 % of the training set
ALPHA_RANGE = (-1.0, 2.0)  # Figure 3

SharpCell = tuple[str, float, str]  # (space, ε, regime) of Tables 3 and 4
CLAIMS_PATH = Path(__file__).with_name("claims.yaml")


@cache
def paper_accuracy() -> dict[str, dict[str, tuple[float, float]]]:
    """Table 2 (``claims.yaml`` ``paper_tables.table2_accuracy``): {network: {"test_sb": (mean, sd), ..}}."""
    out: dict[str, dict[str, tuple[float, float]]] = {}
    for row in paper_table(load_claims(CLAIMS_PATH), "table2_accuracy"):
        out.setdefault(row["network"], {})[f"{row['split']}_{row['regime']}"] = (row["mean"], row["sd"])
    return out


@cache
def paper_sharpness() -> dict[str, dict[SharpCell, tuple[float, float]]]:
    """Tables 3 and 4 (``paper_tables.sharpness``): {network: {(space, ε, regime): (mean, sd)}}."""
    out: dict[str, dict[SharpCell, tuple[float, float]]] = {}
    for row in paper_table(load_claims(CLAIMS_PATH), "sharpness"):
        cell = (row["space"], float(row["epsilon"]), row["regime"])
        out.setdefault(row["network"], {})[cell] = (row["mean"], row["sd"])
    return out


F2_NOT_TESTABLE = ("F2 is a fully connected network on TIMIT (speech frames), which is licensed by the LDC and "
                   "not available to this project; the paper's F2 rows are shown for reference only")


def paper_gap(network: str) -> dict[str, float]:
    """Table 2's test-accuracy gap SB − LB as {mean, sd}, sd = √(sd_SB² + sd_LB²) (independent runs)."""
    sb, lb = paper_accuracy()[network]["test_sb"], paper_accuracy()[network]["test_lb"]
    return {"mean": sb[0] - lb[0], "sd": float(np.hypot(sb[1], lb[1]))}


def lb_batch_size(n_train: int, fraction: float = LB_FRACTION) -> int:
    """The LB batch: ``fraction`` of the training set (the paper: 10 %), at least 1."""
    return max(1, int(round(fraction * n_train)))


def stopping_update(best: np.ndarray, since: np.ndarray, loss: np.ndarray, *, min_delta: float,
                    patience: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One epoch of the stopping rule, per run: ``(best, since, stop)``.

    An epoch improves when ``loss < best − min_delta``; then ``best = loss`` and ``since = 0``,
    otherwise ``since += 1``. A run stops once ``since >= patience``. A non-finite loss stops it.
    """
    loss = np.asarray(loss, np.float64)
    improved = np.isfinite(loss) & (loss < np.asarray(best) - min_delta)
    best = np.where(improved, loss, best)
    since = np.where(improved, 0, np.asarray(since) + 1)
    stop = (since >= patience) | ~np.isfinite(loss)
    return best, since, stop


def interpolate(x_s: np.ndarray, x_l: np.ndarray, alpha: float) -> np.ndarray:
    """α x_ℓ + (1 − α) x_s (Figure 3): α = 0 gives x_s, α = 1 gives x_ℓ."""
    return alpha * np.asarray(x_l) + (1.0 - alpha) * np.asarray(x_s)


def alphas(points: int) -> np.ndarray:
    """``points`` equally spaced α in [−1, 2] (the Keras code: ``linspace(-1, 2, 25)``)."""
    return np.linspace(*ALPHA_RANGE, points)


def second_difference(alpha: Sequence[float], values: Sequence[float], at: float) -> float:
    """[f(a − h) − 2 f(a) + f(a + h)] / h² at the grid point ``at`` (equally spaced grid):
    the curvature of the parametric curve there, in units of ‖x_ℓ − x_s‖⁻²."""
    a = np.asarray(alpha, np.float64)
    v = np.asarray(values, np.float64)
    i = int(np.argmin(np.abs(a - at)))
    if not np.isclose(a[i], at, atol=1e-9) or i == 0 or i == len(a) - 1:
        raise ValueError(f"α = {at} must be an interior grid point of {a.tolist()}")
    h = a[i + 1] - a[i]
    return float((v[i - 1] - 2 * v[i] + v[i + 1]) / h**2)


def distance_ratio(x0: np.ndarray, x_s: np.ndarray, x_l: np.ndarray) -> float:
    """‖x_s − x₀‖₂ / ‖x_ℓ − x₀‖₂ (§3; the paper reports 3–10)."""
    num = np.linalg.norm(np.asarray(x_s, np.float64) - np.asarray(x0, np.float64))
    den = np.linalg.norm(np.asarray(x_l, np.float64) - np.asarray(x0, np.float64))
    return float(num / den) if den > 0 else float("inf")


def peak_drop(curve: Sequence[float]) -> float:
    """max over epochs − final value of a test-accuracy curve: > 0 when it peaked then fell
    (Figure 2: the paper finds LB curves that do not, so early stopping would not help)."""
    c = np.asarray(curve, np.float64)
    return float(np.max(c) - c[-1])


def threshold_batch(batches: Sequence[int], accuracy: Sequence[Sequence[float]], drop: float) -> float:
    """The smallest batch size whose mean test accuracy is more than ``drop`` below the best
    mean over smaller-or-equal batches (Figure 4's threshold; NaN when none falls that far)."""
    means = [float(np.mean(a)) for a in accuracy]
    for i in range(1, len(batches)):
        if means[i] < max(means[:i]) - drop:
            return float(batches[i])
    return float("nan")
