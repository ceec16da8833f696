r"""Dinh, Pascanu, Bengio & Bengio (ICML 2017), "Sharp minima can generalize for deep nets":
the paper's quantities and the small pieces of arithmetic the verdicts rest on.

Notation (the paper's §3–4): a rectified net y = φ_rect(x·θ₁)·θ₂ (deeper: a chain of
rectified layers), L(θ) the mean cross-entropy over the training set.

- **α-scale transformation** (§4, Definition 5): T_α(θ₁, θ₂) = (αθ₁, α⁻¹θ₂), α > 0, and its
  layer-wise extension (α_1, …, α_K) with ∏ α_k = 1. φ_rect is non-negatively homogeneous,
  so f_{T_α θ} = f_θ (observational equivalence, Definition 4). Implemented once in
  :mod:`shared.sharpness.reparametrize` (this module only calls it).
- **Hessian blocks** (§4, Theorems 3–4): differentiating L(αθ₁, α⁻¹θ₂) = L(θ₁, θ₂) twice,
  ∇²L(T_α θ) = S⁻¹ ∇²L(θ) S⁻¹ with S = diag(α on θ₁, α⁻¹ on θ₂, 1 elsewhere): the θ₁θ₁ block
  scales as α⁻², the θ₂θ₂ block as α², the cross block is unchanged. Hence
  tr ∇²L(T_α θ) = α⁻² tr H₁₁ + α² tr H₂₂ + tr H_rest exactly (:func:`predicted_trace`), and
  λ_max ∼ α² λ_max(H₂₂) as α → ∞, ∼ α⁻² λ_max(H₁₁) as α → 0: slopes +2 and −2 on a log-log
  plot (:func:`fit_slope`).
- **ε-sharpness** (§4.2): max_{θ' ∈ B₂(ε, θ)} [L(θ') − L(θ)] / (1 + L(θ)). With
  α = ε/‖θ₁‖₂, T_α θ = (εθ₁/‖θ₁‖, α⁻¹θ₂) and the point (0, α⁻¹θ₂) lies in B₂(ε, T_α θ) (at
  distance exactly ε); there the first layer is zero, so the network is a constant function
  and its loss is at least that of the best constant predictor, whose cross-entropy is the
  entropy of the label frequencies (:func:`best_constant_loss`). So the ε-sharpness of an
  observationally equivalent network is at least [L_const − L(θ)] / (1 + L(θ))
  (:func:`constant_function_bound`). The same point is inside Keskar's full-space box
  |y_i| ≤ ε(|x_i| + 1) (each |αθ₁,i| ≤ ε), so Keskar's Metric 2.1 obeys the same bound (×100).
- **Volume ε-flatness** (§3, Definition 1; Theorem 2): the ε-sublevel set containing θ holds
  the whole orbit {T_α θ : α > 0} (L is constant along it), which is unbounded, so its volume
  is infinite; meanwhile the width of the basin along the top Hessian direction,
  ≈ 2√(2ε/λ_max), shrinks as λ_max grows (:func:`sublevel_width` measures it on a 1D slice).
- **Random-subspace sharpness** (§4.2): the paper says it could not show the same effect for
  Keskar's random-subspace variant (``CLAIMS.md`` Module 6, [U] on wording).
- **BatchNorm** (§5 discussion; Ioffe & Szegedy 2015): a layer followed by BatchNorm is
  scale-invariant, L(cW) = L(W) (up to BatchNorm's ε), so its Hessian block scales as c⁻².

The paper is theoretical: it gives no numbers to compare with (``CLAIMS.md``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats


def alpha_grid(min_exp: float, max_exp: float, points: int) -> np.ndarray:
    """``points`` values of α, log-spaced from 10**min_exp to 10**max_exp; 1 must be on the grid."""
    exps = np.linspace(min_exp, max_exp, points)
    if not np.any(np.isclose(exps, 0.0, atol=1e-12)):
        raise ValueError(f"the α grid must contain 1: exponents {exps.tolist()}")
    exps[np.isclose(exps, 0.0, atol=1e-12)] = 0.0
    return np.power(10.0, exps)


def best_constant_loss(labels: np.ndarray, num_classes: int) -> float:
    """min over constant predictors of the mean cross-entropy: the entropy of the label frequencies."""
    counts = np.bincount(np.asarray(labels, np.int64), minlength=num_classes).astype(np.float64)
    p = counts[counts > 0] / counts.sum()
    return float(-np.sum(p * np.log(p)))


def constant_function_bound(loss: float, const_loss: float, percent: bool = True) -> float:
    """[L_const − L(θ)] / (1 + L(θ)), ×100 with ``percent`` (Keskar's units): §4.2's lower bound."""
    return (100.0 if percent else 1.0) * (const_loss - loss) / (1.0 + loss)


def predicted_trace(alpha: np.ndarray, tr11: float, tr22: float, tr_rest: float) -> np.ndarray:
    """tr ∇²L(T_α θ) = α⁻² tr H₁₁ + α² tr H₂₂ + tr H_rest (module docstring)."""
    a = np.asarray(alpha, np.float64)
    return tr11 / a**2 + tr22 * a**2 + tr_rest


def relative_spread(values: Sequence[float], reference: float) -> float:
    """(max − min) / |reference| of a measure over a grid: 0 for an invariant measure."""
    v = np.asarray(values, np.float64)
    if not np.all(np.isfinite(v)) or not np.isfinite(reference) or reference == 0:
        return float("inf")
    return float((v.max() - v.min()) / abs(reference))


@dataclass(frozen=True)
class Slope:
    """Least-squares slope of log10 y on log10 x with its two-sided (1 − level) t interval."""

    slope: float
    stderr: float
    low: float
    high: float
    n: int
    level: float


def fit_slope(x: Sequence[float], y: Sequence[float], level: float = 0.05) -> Slope:
    """``scipy.stats.linregress`` of log10 y on log10 x; interval slope ± t_{1−level/2, n−2}·stderr.

    Non-positive or non-finite y gives NaN (a failed fit fails its rule; nothing is dropped)."""
    xs, ys = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if len(xs) < 3 or not np.all(np.isfinite(ys)) or np.any(ys <= 0):
        return Slope(float("nan"), float("nan"), float("nan"), float("nan"), len(xs), level)
    res = stats.linregress(np.log10(xs), np.log10(ys))
    margin = float(stats.t.ppf(1 - level / 2, len(xs) - 2)) * float(res.stderr)
    return Slope(float(res.slope), float(res.stderr), float(res.slope) - margin, float(res.slope) + margin,
                 len(xs), level)


def sublevel_width(t: Sequence[float], loss: Sequence[float], level: float) -> tuple[float, bool]:
    """Width of the connected interval around t = 0 where ``loss`` < ``level`` on a 1D slice.

    Crossings are located by linear interpolation between grid points. Returns
    (width, censored): censored is True when the loss stays below ``level`` up to an end of
    the grid on either side (the width is then only a lower bound)."""
    ts, ls = np.asarray(t, np.float64), np.asarray(loss, np.float64)
    i0 = int(np.argmin(np.abs(ts)))
    if not ls[i0] < level:
        return 0.0, False
    ends, censored = [], False
    for step in (1, -1):
        i = i0
        while 0 <= i + step < len(ts) and ls[i + step] < level:
            i += step
        j = i + step
        if not 0 <= j < len(ts):
            ends.append(ts[i])
            censored = True
            continue
        frac = (level - ls[i]) / (ls[j] - ls[i])
        ends.append(ts[i] + frac * (ts[j] - ts[i]))
    return float(abs(ends[0] - ends[1])), censored
