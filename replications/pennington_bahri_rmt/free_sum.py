r"""Pennington & Bahri (2017)'s spectral model: a Wishart (Marchenko–Pastur) plus a Wigner
(semicircle) matrix, freely independent, and its comparison with an exact Hessian (PB3).

Conventions (Stieltjes transform G(z) = ∫ ρ(λ) / (z − λ) dλ, so Im G < 0 for Im z > 0 and
ρ(x) = −Im G(x + i0) / π):

- Marchenko–Pastur with ratio c and scale s: the spectrum of s·XᵀX/N for an N × P matrix X of
  standard normals, c = P/N. Mean s, second moment s²(1 + c), support s(1 ∓ √c)², an atom of
  mass 1 − 1/c at 0 when c > 1. G solves  s c z G² − (z − s(1 − c)) G + 1 = 0.
- Semicircle of variance σ² (radius 2σ): G = (z − √(z² − 4σ²)) / (2σ²); its R-transform is σ² g.
- Free sum: subordination, G(z) = G_MP(z − σ² G(z)) (R_{A⊞B} = R_A + R_B). Substituting
  w = z − σ²G into the MP quadratic gives a cubic in G,

      −s c σ² G³ + (s c z + σ²) G² − (z − s(1 − c)) G + 1 = 0,

  solved on the real axis by ``numpy.roots``: where it has a complex pair, the root with
  Im G < 0 is the density's. (σ = 0 leaves the MP quadratic, s = 0 the semicircle's.) A damped
  fixed-point iteration of the subordination equation (``subordinate``) is the general,
  slower route, used by the tests as a second derivation.

In the module, H = G + R at a critical point: G = (1/mn) JᵀJ the Gauss–Newton matrix (P × P,
J of mn rows, ratio φ = P/(mn)), R = H − G the residual. The model's parameters come from the
components, never from H: s = tr G / P (G's mean eigenvalue), c = φ (the model's ratio; G's
own ratio, from its second moment, m₂/s² − 1, is reported beside it), σ² = tr R² / P (R's
second spectral moment, as for a zero-mean Wigner matrix; R's mean is reported, not used).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from scipy import integrate, stats

Stieltjes = Callable[[np.ndarray], np.ndarray]


# --- closed forms ---------------------------------------------------------------------------

def mp_edges(ratio: float, scale: float) -> tuple[float, float]:
    """The support's edges s(1 ∓ √c)² of the continuous part."""
    return scale * (1 - np.sqrt(ratio)) ** 2, scale * (1 + np.sqrt(ratio)) ** 2


def mp_atom(ratio: float) -> float:
    """Mass of the MP atom at 0: 1 − 1/c for c > 1, else 0."""
    return max(0.0, 1.0 - 1.0 / ratio)


def mp_density(x: np.ndarray, ratio: float, scale: float) -> np.ndarray:
    """The continuous part of the MP density, √((b − x)(x − a)) / (2π s c x) on [a, b]."""
    x = np.asarray(x, dtype=np.float64)
    a, b = mp_edges(ratio, scale)
    inside = (x > a) & (x < b) & (x != 0)
    out = np.zeros_like(x)
    xi = x[inside]
    out[inside] = np.sqrt((b - xi) * (xi - a)) / (2 * np.pi * scale * ratio * xi)
    return out


def mp_stieltjes(z: np.ndarray, ratio: float, scale: float) -> np.ndarray:
    """G_MP(z) for Im z > 0 (the branch √(z − a)√(z − b) ~ z at infinity)."""
    z = np.asarray(z, dtype=np.complex128)
    a, b = mp_edges(ratio, scale)
    root = np.sqrt(z - a) * np.sqrt(z - b)
    return ((z - scale * (1 - ratio)) - root) / (2 * scale * ratio * z)


def semicircle_density(x: np.ndarray, variance: float) -> np.ndarray:
    """√(4σ² − x²) / (2πσ²) on [−2σ, 2σ]."""
    x = np.asarray(x, dtype=np.float64)
    return np.sqrt(np.clip(4 * variance - x**2, 0.0, None)) / (2 * np.pi * variance)


def semicircle_stieltjes(z: np.ndarray, variance: float) -> np.ndarray:
    """G_sc(z) = (z − √(z − 2σ)√(z + 2σ)) / (2σ²) for Im z > 0."""
    z = np.asarray(z, dtype=np.complex128)
    r = 2 * np.sqrt(variance)
    return (z - np.sqrt(z - r) * np.sqrt(z + r)) / (2 * variance)


# --- the free sum -----------------------------------------------------------------------------

def subordinate(g_a: Stieltjes, variance: float, z: np.ndarray, *, iterations: int = 20000,
                damping: float = 0.5, tol: float = 1e-13) -> np.ndarray:
    """G of A ⊞ (semicircle of variance σ²) at ``z`` (Im z > 0) by the damped fixed point
    G ← (1 − d) G + d G_A(z − σ² G), started at 1/z; vectorized over ``z``."""
    z = np.asarray(z, dtype=np.complex128)
    g = 1.0 / z
    for _ in range(iterations):
        new = (1 - damping) * g + damping * g_a(z - variance * g)
        if np.max(np.abs(new - g)) <= tol * max(1.0, float(np.max(np.abs(g)))):
            return new
        g = new
    return g


def free_sum_density(x: np.ndarray, ratio: float, scale: float, variance: float) -> np.ndarray:
    """Density of MP(c, s) ⊞ semicircle(σ²) on the real axis (continuous part; with σ = 0 and
    c > 1 the MP atom at 0 is not in it: ``mp_atom``), from the cubic in the module docstring."""
    x = np.asarray(x, dtype=np.float64)
    sc = scale * ratio
    out = np.zeros_like(x)
    for i, xi in enumerate(x.ravel()):
        coeffs = [-sc * variance, sc * xi + variance, -(xi - scale * (1 - ratio)), 1.0]
        roots = np.roots(coeffs)  # strips zero leading coefficients (σ = 0, or s = 0)
        im = float(np.min(roots.imag)) if roots.size else 0.0
        out.flat[i] = -im / np.pi if im < 0 else 0.0
    # a near-double real root leaves ~√eps of spurious imaginary part outside the support
    return np.where(out > 1e-7 * max(float(out.max(initial=0.0)), 1e-300), out, 0.0)


def support_bounds(ratio: float, scale: float, variance: float) -> tuple[float, float]:
    """An interval holding the free sum's support: MP's (with 0 when c > 1) widened by 2σ, plus 5%."""
    a, b = mp_edges(ratio, scale)
    lo, hi = (min(a, 0.0) if ratio > 1 else a) - 2 * np.sqrt(variance), b + 2 * np.sqrt(variance)
    pad = 0.05 * (hi - lo) + 1e-12
    return lo - pad, hi + pad


def free_sum_cdf(ratio: float, scale: float, variance: float, points: int = 801) -> tuple[np.ndarray, np.ndarray]:
    """(grid, CDF) of MP(c, s) ⊞ semicircle(σ²): the density integrated on ``points`` grid points
    (trapezoid), the atom 1 − 1/c added at 0 when σ = 0, normalized to end at 1."""
    lo, hi = support_bounds(ratio, scale, variance)
    grid = np.linspace(lo, hi, points)
    dens = free_sum_density(grid, ratio, scale, variance)
    cdf = integrate.cumulative_trapezoid(dens, grid, initial=0.0)
    if variance == 0:
        cdf = cdf + mp_atom(ratio) * (grid >= 0)
    return grid, cdf / cdf[-1]


def density_cdf(density: Callable[[np.ndarray], np.ndarray], lo: float, hi: float,
                points: int = 801, atom: float = 0.0, atom_at: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """(grid, CDF) of a density given as a function (plus an optional atom), normalized."""
    grid = np.linspace(lo, hi, points)
    cdf = integrate.cumulative_trapezoid(density(grid), grid, initial=0.0) + atom * (grid >= atom_at)
    return grid, cdf / cdf[-1]


def ks_distance(eigenvalues: np.ndarray, grid: np.ndarray, cdf: np.ndarray) -> float:
    """Kolmogorov–Smirnov distance sup |F_emp − F| between eigenvalues and a tabulated CDF
    (linear between grid points, 0 below and 1 above)."""
    return float(stats.kstest(np.asarray(eigenvalues, dtype=np.float64),
                              lambda t: np.interp(t, grid, cdf, left=0.0, right=1.0)).statistic)


# --- the measurement ----------------------------------------------------------------------------

def spectrum_comparison(hessian: np.ndarray, gauss_newton: np.ndarray, ratio: float,
                        points: int = 801, fitted_ratio: bool = False) -> dict[str, Any]:
    """Split H = G + R, fit the model's parameters from G and R (module docstring), predict H's
    spectrum by the free sum, and compare: KS distances of H's exact eigenvalues to the free sum, to
    the MP part alone and to the semicircle part alone (same parameters, no shift). ``fitted_ratio``:
    also the free sum with G's own ratio m₂/s² − 1 in place of ``ratio`` (descriptive)."""
    h = 0.5 * (hessian + hessian.T)
    g = 0.5 * (gauss_newton + gauss_newton.T)
    r = h - g
    p = h.shape[0]
    lam = np.linalg.eigvalsh(h)
    scale = float(np.trace(g) / p)
    g_m2 = float(np.sum(g * g) / p)
    variance = float(np.sum(r * r) / p)
    out: dict[str, Any] = {
        "eigenvalues": lam, "scale": scale, "ratio": ratio, "variance": variance,
        "ratio_fitted": g_m2 / scale**2 - 1 if scale > 0 else float("nan"),
        "residual_mean": float(np.trace(r) / p),
    }
    if not (scale > 0 and variance > 0 and np.isfinite(lam).all()):
        return {**out, "ks_free": float("nan"), "ks_mp": float("nan"), "ks_semicircle": float("nan"),
                "ks_free_fitted_ratio": float("nan")}
    grid, cdf = free_sum_cdf(ratio, scale, variance, points)
    a, b = mp_edges(ratio, scale)
    mp_grid, mp_cdf = density_cdf(lambda t: mp_density(t, ratio, scale), a if ratio <= 1 else -1e-9, b, points,
                                  atom=mp_atom(ratio))
    sd = np.sqrt(variance)
    sc_grid, sc_cdf = density_cdf(lambda t: semicircle_density(t, variance), -2 * sd, 2 * sd, points)
    out.update(grid=grid, cdf=cdf, ks_free=ks_distance(lam, grid, cdf), ks_mp=ks_distance(lam, mp_grid, mp_cdf),
               ks_semicircle=ks_distance(lam, sc_grid, sc_cdf), ks_free_fitted_ratio=float("nan"))
    if fitted_ratio and out["ratio_fitted"] > 0:  # descriptive: the free sum with G's own ratio
        fgrid, fcdf = free_sum_cdf(out["ratio_fitted"], scale, variance, points)
        out["ks_free_fitted_ratio"] = ks_distance(lam, fgrid, fcdf)
    return out


def pb3_measurements(comparisons: list[dict[str, Any]], min_points: int = 3) -> dict[str, Any]:
    """PB3's quantities from ``spectrum_comparison`` results (points with a NaN distance left out).
    With fewer than ``min_points`` finite comparisons the distances are marked not testable: too
    few critical points to judge a spectrum model, which is not evidence against it."""
    ok = [c for c in comparisons if all(np.isfinite(c[k]) for k in ("ks_free", "ks_mp", "ks_semicircle"))]
    if len(ok) < min_points:
        why = {"not_testable": f"{len(ok)} critical point(s) with an exact spectrum compared; PB3 needs {min_points}"}
        return {"spectrum_points": len(ok), **{k: why for k in (
            "ks_free", "ks_mp", "ks_semicircle", "ks_free_minus_best_single", "ks_free_median",
            "ks_best_single_median")}}
    free = [float(c["ks_free"]) for c in ok]
    best = [min(float(c["ks_mp"]), float(c["ks_semicircle"])) for c in ok]
    nan = [float("nan")]
    return {
        "spectrum_points": len(ok), "ks_free": free or nan, "ks_mp": [float(c["ks_mp"]) for c in ok] or nan,
        "ks_semicircle": [float(c["ks_semicircle"]) for c in ok] or nan,
        "ks_free_minus_best_single": [a - b for a, b in zip(free, best, strict=True)] or nan,
        "ks_free_median": float(np.median(free)) if ok else float("nan"),
        "ks_best_single_median": float(np.median(best)) if ok else float("nan"),
    }
