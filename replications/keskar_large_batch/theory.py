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

The paper's Tables 2–4 (``shared/papers/CLAIMS.md``, Module 5, verified [V]) are below, as
(mean, sd) over 5 runs; accuracies as fractions.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

NETWORKS = ("f1", "f2", "c1", "c2", "c3", "c4")
PAPER_DATA = {"f1": "MNIST", "f2": "TIMIT", "c1": "CIFAR-10", "c2": "CIFAR-10", "c3": "CIFAR-100",
              "c4": "CIFAR-100"}
PAPER_TYPE = {"f1": "fully connected", "f2": "fully connected", "c1": "shallow conv", "c2": "deep conv",
              "c3": "shallow conv", "c4": "deep conv"}
SB_BATCH = 256  # §2.2
LB_FRACTION = 0.1  # §2.2: LB = 10 % of the training set
ALPHA_RANGE = (-1.0, 2.0)  # Figure 3

# Table 2: accuracy (mean, sd) over 5 runs: train SB, train LB, test SB, test LB
PAPER_TABLE2: dict[str, dict[str, tuple[float, float]]] = {
    "f1": {"train_sb": (0.9966, 0.0005), "train_lb": (0.9992, 0.0001), "test_sb": (0.9803, 0.0007),
           "test_lb": (0.9781, 0.0007)},
    "f2": {"train_sb": (0.9999, 0.0003), "train_lb": (0.9835, 0.0208), "test_sb": (0.6402, 0.002),
           "test_lb": (0.5945, 0.0105)},
    "c1": {"train_sb": (0.9989, 0.0002), "train_lb": (0.9966, 0.002), "test_sb": (0.8004, 0.0012),
           "test_lb": (0.7726, 0.0042)},
    "c2": {"train_sb": (0.9999, 0.0004), "train_lb": (0.9999, 0.0001), "test_sb": (0.8924, 0.0012),
           "test_lb": (0.8726, 0.0007)},
    "c3": {"train_sb": (0.9956, 0.0044), "train_lb": (0.9988, 0.0030), "test_sb": (0.4958, 0.0039),
           "test_lb": (0.4645, 0.0043)},
    "c4": {"train_sb": (0.9910, 0.0123), "train_lb": (0.9957, 0.0184), "test_sb": (0.6308, 0.005),
           "test_lb": (0.5781, 0.0017)},
}
# Tables 3 (full space, A = I) and 4 (random 100-dim subspace): Metric 2.1, (mean, sd), per
# (space, ε, regime)
SharpCell = tuple[str, float, str]
PAPER_SHARPNESS: dict[str, dict[SharpCell, tuple[float, float]]] = {
    "f1": {("full", 1e-3, "sb"): (1.23, 0.83), ("full", 1e-3, "lb"): (205.14, 69.52),
           ("full", 5e-4, "sb"): (0.61, 0.27), ("full", 5e-4, "lb"): (42.90, 17.14),
           ("subspace", 1e-3, "sb"): (0.11, 0.00), ("subspace", 1e-3, "lb"): (9.22, 0.56),
           ("subspace", 5e-4, "sb"): (0.05, 0.00), ("subspace", 5e-4, "lb"): (9.17, 0.14)},
    "f2": {("full", 1e-3, "sb"): (1.39, 0.02), ("full", 1e-3, "lb"): (310.64, 38.46),
           ("full", 5e-4, "sb"): (0.90, 0.05), ("full", 5e-4, "lb"): (93.15, 6.81),
           ("subspace", 1e-3, "sb"): (0.29, 0.02), ("subspace", 1e-3, "lb"): (23.63, 0.54),
           ("subspace", 5e-4, "sb"): (0.05, 0.00), ("subspace", 5e-4, "lb"): (6.28, 0.19)},
    "c1": {("full", 1e-3, "sb"): (28.58, 3.13), ("full", 1e-3, "lb"): (707.23, 43.04),
           ("full", 5e-4, "sb"): (7.08, 0.88), ("full", 5e-4, "lb"): (227.31, 23.23),
           ("subspace", 1e-3, "sb"): (2.18, 0.23), ("subspace", 1e-3, "lb"): (137.25, 21.60),
           ("subspace", 5e-4, "sb"): (0.71, 0.15), ("subspace", 5e-4, "lb"): (29.50, 7.48)},
    "c2": {("full", 1e-3, "sb"): (8.68, 1.32), ("full", 1e-3, "lb"): (925.32, 38.29),
           ("full", 5e-4, "sb"): (2.07, 0.86), ("full", 5e-4, "lb"): (175.31, 18.28),
           ("subspace", 1e-3, "sb"): (0.95, 0.34), ("subspace", 1e-3, "lb"): (25.09, 2.61),
           ("subspace", 5e-4, "sb"): (0.31, 0.08), ("subspace", 5e-4, "lb"): (5.82, 0.52)},
    "c3": {("full", 1e-3, "sb"): (29.85, 5.98), ("full", 1e-3, "lb"): (258.75, 8.96),
           ("full", 5e-4, "sb"): (8.56, 0.99), ("full", 5e-4, "lb"): (105.11, 13.22),
           ("subspace", 1e-3, "sb"): (17.02, 2.20), ("subspace", 1e-3, "lb"): (236.03, 31.26),
           ("subspace", 5e-4, "sb"): (4.03, 1.45), ("subspace", 5e-4, "lb"): (86.96, 27.39)},
    "c4": {("full", 1e-3, "sb"): (12.83, 3.84), ("full", 1e-3, "lb"): (421.84, 36.97),
           ("full", 5e-4, "sb"): (4.07, 0.87), ("full", 5e-4, "lb"): (109.35, 16.57),
           ("subspace", 1e-3, "sb"): (6.05, 1.13), ("subspace", 1e-3, "lb"): (72.99, 10.96),
           ("subspace", 5e-4, "sb"): (1.89, 0.33), ("subspace", 5e-4, "lb"): (19.85, 4.12)},
}
F2_NOT_TESTABLE = ("F2 is a fully connected network on TIMIT (speech frames), which is licensed by the LDC and "
                   "not available to this project; the paper's F2 rows are shown for reference only")


def paper_gap(network: str) -> dict[str, float]:
    """Table 2's test-accuracy gap SB − LB as {mean, sd}, sd = √(sd_SB² + sd_LB²) (independent runs)."""
    sb, lb = PAPER_TABLE2[network]["test_sb"], PAPER_TABLE2[network]["test_lb"]
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
