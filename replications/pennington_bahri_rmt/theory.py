"""Pennington & Bahri (2017): the model, the data and the paper's closed forms.

Network (the paper's setup [S]: single-hidden-layer tanh networks of size n, input = hidden =
output = n, no biases), on m random regression examples (x, y ~ N(0, I_n)):

    f(x) = W₂ tanh(W₁ x / √n) / √n,   ε(W) = (1 / 2mn) Σ_μ ‖f(x_μ) − y_μ‖²,

so ε = ½ at f ≡ 0 (unit-variance targets). φ = P / (m n), P = 2n² parameters over the m·n
scalar targets: the ratio of the Gauss–Newton matrix JᵀJ (P × P, J of m·n rows), the
Wishart part of the paper's model.

Closed forms (the paper's [U] unless marked; CLAIMS.md Optional 8):
- minimizer energy ε_min(φ) ≈ ½(1 − φ)² for φ < 1 [V abstract: "well approximated by"];
- index near ε_c: α(ε) ≈ α₀ |(ε − ε_c)/ε_c|^{3/2} [V abstract: "scales like the 3/2 power"];
- ε_c(φ) = (1/16)[1 − 20φ − 8φ² + (1 + 8φ)^{3/2}] [U: recalled, not copied from the paper; shown
  beside ours, never a threshold].
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from scipy import optimize


def samples_for(n: int, phi: float) -> int:
    """m = round(P / (φ n)) with P = 2n²."""
    return max(1, int(round(2 * n * n / (phi * n))))


def tanh_loss(x: np.ndarray, y: np.ndarray):  # type: ignore[no-untyped-def]
    """ε(W) on the flat vector [vec W₁, vec W₂] (row-major), float64."""
    n = x.shape[1]
    xj, yj = jnp.asarray(x), jnp.asarray(y)

    def loss(v):  # type: ignore[no-untyped-def]
        w1 = v[: n * n].reshape(n, n)
        w2 = v[n * n:].reshape(n, n)
        out = jnp.tanh(xj @ w1.T / np.sqrt(n)) @ w2.T / np.sqrt(n)
        return 0.5 * jnp.mean(jnp.sum((out - yj) ** 2, axis=1)) / n

    return loss


def tanh_outputs(x: np.ndarray):  # type: ignore[no-untyped-def]
    """v -> f(x_μ)_i for all μ, i, flattened (m·n,), the outputs ``tanh_loss`` compares with y."""
    n = x.shape[1]
    xj = jnp.asarray(x)

    def outputs(v):  # type: ignore[no-untyped-def]
        w1 = v[: n * n].reshape(n, n)
        w2 = v[n * n:].reshape(n, n)
        return (jnp.tanh(xj @ w1.T / np.sqrt(n)) @ w2.T / np.sqrt(n)).ravel()

    return outputs


def gauss_newton(x: np.ndarray, points: np.ndarray) -> np.ndarray:
    """The Gauss–Newton part of ε's Hessian at each row of ``points``: G = JᵀJ / (m n), J = ∂f/∂v of
    the m·n outputs (so H = G + (1/mn) Σ (f − y)_{μi} ∇²f_{μi}); float64, [points, P, P]."""
    jac = jax.jit(jax.vmap(jax.jacfwd(tanh_outputs(x))))(jnp.asarray(points))
    j = np.asarray(jac, dtype=np.float64)
    return np.einsum("kap,kaq->kpq", j, j) / j.shape[1]


def minimizer_energy(phi: float | np.ndarray) -> float | np.ndarray:
    """½(1 − φ)² for φ < 1, 0 beyond (the paper's approximation)."""
    return 0.5 * np.clip(1.0 - np.asarray(phi, dtype=np.float64), 0.0, None) ** 2


def critical_energy_recalled(phi: float | np.ndarray) -> float | np.ndarray:
    """ε_c(φ) as CLAIMS.md recalls it [U]: shown beside ours, not used by any rule."""
    phi = np.asarray(phi, dtype=np.float64)
    return (1.0 - 20 * phi - 8 * phi**2 + (1 + 8 * phi) ** 1.5) / 16.0


def power_law(eps: np.ndarray, alpha0: float, eps_c: float, gamma: float) -> np.ndarray:
    """α(ε) = α₀ · max(ε − ε_c, 0)^γ (ε_c, α₀, γ fitted)."""
    return alpha0 * np.clip(eps - eps_c, 0.0, None) ** gamma


def fit_exponent(eps: np.ndarray, index: np.ndarray, rng: np.random.Generator, resamples: int = 200,
                 level: float = 0.95) -> tuple[float, float, float, float]:
    """Least-squares fit of ``power_law`` to (ε, α) and a percentile-bootstrap interval of γ over
    resampled points. Returns (γ, γ_low, γ_high, ε_c); NaNs when the fit fails."""
    eps = np.asarray(eps, dtype=np.float64)
    index = np.asarray(index, dtype=np.float64)

    def fit(e: np.ndarray, a: np.ndarray) -> np.ndarray:
        p0 = (max(float(a.max()), 1e-3) / max(float(np.ptp(e)), 1e-6) ** 1.5, float(e.min()) - 1e-3, 1.5)
        lower = (0.0, float(e.min()) - 10 * max(float(np.ptp(e)), 1e-3), 0.1)
        upper = (np.inf, float(e.max()), 6.0)
        try:
            params, _ = optimize.curve_fit(power_law, e, a, p0=p0, bounds=(lower, upper), maxfev=20000)
        except (RuntimeError, ValueError):
            return np.full(3, np.nan)
        return np.asarray(params)

    best = fit(eps, index)
    draws = []
    for _ in range(resamples):
        pick = rng.integers(0, eps.size, eps.size)
        draws.append(fit(eps[pick], index[pick])[2])
    draws_arr = np.asarray(draws)
    draws_arr = draws_arr[np.isfinite(draws_arr)]
    if not np.isfinite(best).all() or draws_arr.size < resamples // 2:
        return float("nan"), float("nan"), float("nan"), float("nan")
    lo, hi = np.quantile(draws_arr, [(1 - level) / 2, (1 + level) / 2])
    return float(best[2]), float(lo), float(hi), float(best[1])
