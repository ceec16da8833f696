r"""Li, Xu, Taylor, Studer & Goldstein (NeurIPS 2018): the paper's quantities and our scores.

Notation (§3–4): θ* a trained network, δ, η filter-normalised random directions
(``shared.landscape.directions``), f(α, β) = L(θ* + αδ + βη) on a grid of [−1, 1]² with step h.

Non-convexity scores (declared in ``claims.yaml`` before any run; the issue asks for a
measurable version of the paper's "chaotic" vs "nearly convex"):

- **grid minima** (:func:`grid_local_minima`): the number of strict local minima of the 2D grid,
  a point counting when it is strictly below each of its (up to 8) neighbours on the grid.
  A convex f sampled on a grid has exactly one (or none when ties are exact).
- **grid non-convex fraction** (:func:`grid_nonconvex_fraction`): among the interior grid
  points whose loss is below chance level (ln C for C classes: the region a trained net's basin
  occupies), the fraction where the central-difference Hessian of the 2D section,
  [[f_αα, f_αβ], [f_αβ, f_ββ]], has λ_min/λ_max < −t (t declared; quick and paper t = 0.1).
  Negative curvature of a 2D section implies a non-convex full loss (Li et al. §6, p. 9);
  the converse does not hold.
- **Hessian-map non-convex fraction** (:func:`hessian_nonconvex_fraction`): on a (coarser)
  grid, the fraction of points where the *full* Hessian ∇²L(θ(α, β)) has λ_min/λ_max < −t
  (Lanczos; ``shared.landscape.hessian_maps``); Li et al.'s Fig. 7 colours |λ_min/λ_max|.

Also: the second difference of a 1D curve (the sharpness that the un-normalised 1D
interpolation shows at each end, §4, Figs. 2–3), the mean rise of a filter-normalised 1D curve
(the sharpness it shows, Fig. 5) and the contour width along the axes (L7).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import TypeAlias

import numpy as np
import pandas as pd

from shared.claims import load_claims, paper_table

Vec: TypeAlias = Sequence[float] | np.ndarray | pd.Series

CLAIMS_PATH = Path(__file__).with_name("claims.yaml")


@cache
def paper_test_error_unverified() -> dict[str, float]:
    """The paper's test errors (%) by run name (``vgg9_sb_wd0``, ``resnet56_noshort``, ..), from
    ``claims.yaml`` ``paper_tables.test_error_unverified`` ([S]: shown beside ours, never a threshold)."""
    rows = paper_table(load_claims(CLAIMS_PATH), "test_error_unverified")
    return {row["run"]: float(row["test_error_pct"]) for row in rows}


def grid_local_minima(z: np.ndarray) -> int:
    """Strict local minima of a 2D grid (8-neighbourhood; border points use the neighbours they have)."""
    z = np.asarray(z, np.float64)
    if z.ndim != 2:
        raise ValueError(f"need a 2D grid, got shape {z.shape}")
    padded = np.pad(z, 1, constant_values=np.inf)
    lower = np.ones(z.shape, bool)
    n0, n1 = z.shape
    for di in (-1, 0, 1):
        for dj in (-1, 0, 1):
            if di == dj == 0:
                continue
            lower &= z < padded[1 + di: 1 + di + n0, 1 + dj: 1 + dj + n1]
    return int(np.sum(lower & np.isfinite(z)))


def fd_hessian_2d(z: np.ndarray, h_alpha: float, h_beta: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Central differences (f_αα, f_ββ, f_αβ) at the interior points of ``z[β, α]`` (shape [n_β−2, n_α−2])."""
    z = np.asarray(z, np.float64)
    c = z[1:-1, 1:-1]
    faa = (z[1:-1, 2:] - 2 * c + z[1:-1, :-2]) / h_alpha**2
    fbb = (z[2:, 1:-1] - 2 * c + z[:-2, 1:-1]) / h_beta**2
    fab = (z[2:, 2:] - z[2:, :-2] - z[:-2, 2:] + z[:-2, :-2]) / (4 * h_alpha * h_beta)
    return faa, fbb, fab


def eigen_ratio_2d(faa: np.ndarray, fbb: np.ndarray, fab: np.ndarray) -> np.ndarray:
    """λ_min/λ_max of the symmetric 2×2 matrices [[f_αα, f_αβ], [f_αβ, f_ββ]] (NaN where λ_max = 0).

    Where λ_max < 0 too (a local maximum of the section) the ratio is positive but > 1; we
    return −inf there so such points count as non-convex."""
    mean = 0.5 * (faa + fbb)
    rad = np.sqrt(0.25 * (faa - fbb) ** 2 + fab**2)
    lmax, lmin = mean + rad, mean - rad
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(lmax > 0, lmin / np.where(lmax > 0, lmax, 1.0), np.where(lmax < 0, -np.inf, np.nan))
    return ratio


def grid_nonconvex_fraction(z: np.ndarray, alphas: Vec, betas: Vec, *, t: float,
                            level: float) -> float:
    """Fraction of interior points with z < ``level`` where the 2D section has λ_min/λ_max < −t.

    ``z[β, α]`` on the grids ``alphas`` × ``betas`` (uniform steps). NaN if no interior point is
    below ``level``."""
    a, b = np.asarray(alphas, np.float64), np.asarray(betas, np.float64)
    z = np.asarray(z, np.float64)
    if z.shape != (len(b), len(a)) or min(z.shape) < 3:
        raise ValueError(f"z must be [len(betas), len(alphas)] >= 3x3, got {z.shape}")
    ratio = eigen_ratio_2d(*fd_hessian_2d(z, float(a[1] - a[0]), float(b[1] - b[0])))
    inside = z[1:-1, 1:-1] < level
    if not inside.any():
        return float("nan")
    bad = np.where(np.isnan(ratio), False, ratio < -t)
    return float(np.sum(bad & inside) / np.sum(inside))


def hessian_nonconvex_fraction(lambda_min: Vec, lambda_max: Vec, *, t: float) -> float:
    """Fraction of Hessian-map points with λ_min/λ_max < −t (λ_max ≤ 0 counts as non-convex)."""
    lmin, lmax = np.asarray(lambda_min, np.float64), np.asarray(lambda_max, np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        bad = np.where(lmax > 0, lmin / np.where(lmax > 0, lmax, 1.0) < -t, True)
    return float(np.mean(bad))


def second_difference(alphas: Vec, f: Vec, at: float) -> float:
    """(f(a−h) − 2f(a) + f(a+h)) / h² on a uniform grid containing ``at`` and its two neighbours."""
    a, y = np.asarray(alphas, np.float64), np.asarray(f, np.float64)
    i = int(np.argmin(np.abs(a - at)))
    if not np.isclose(a[i], at) or i == 0 or i == len(a) - 1:
        raise ValueError(f"{at} must be an interior point of the grid")
    h = a[i + 1] - a[i]
    return float((y[i - 1] - 2 * y[i] + y[i + 1]) / h**2)


def mean_rise(alphas: Vec, f: Vec, radius: float) -> float:
    """Mean of f(α) − f(0) over the grid points with 0 < |α| <= ``radius`` (the 1D sharpness of Fig. 5)."""
    a, y = np.asarray(alphas, np.float64), np.asarray(f, np.float64)
    i0 = int(np.argmin(np.abs(a)))
    if not np.isclose(a[i0], 0.0):
        raise ValueError("the grid must contain 0")
    sel = (np.abs(a) <= radius + 1e-12) & (np.arange(len(a)) != i0)
    if not sel.any():
        raise ValueError(f"no grid point within radius {radius}")
    return float(np.mean(y[sel] - y[i0]))


def axis_width(z: np.ndarray, alphas: Vec, betas: Vec, *, rise: float) -> float:
    """Contour width: the mean, over the four rays from the grid centre along ±α and ±β, of the
    distance at which f first exceeds f(0, 0) + ``rise`` (linear interpolation between grid
    points; the ray's length if it never does)."""
    a, b = np.asarray(alphas, np.float64), np.asarray(betas, np.float64)
    z = np.asarray(z, np.float64)
    i0, j0 = int(np.argmin(np.abs(b))), int(np.argmin(np.abs(a)))
    level = z[i0, j0] + rise
    rays = [(np.abs(a[j0:]), z[i0, j0:]), (np.abs(a[: j0 + 1][::-1]), z[i0, : j0 + 1][::-1]),
            (np.abs(b[i0:]), z[i0:, j0]), (np.abs(b[: i0 + 1][::-1]), z[: i0 + 1, j0][::-1])]
    widths = []
    for r, v in rays:
        above = np.flatnonzero(v > level)
        if not len(above):
            widths.append(float(r[-1]))
            continue
        k = int(above[0])
        widths.append(float(r[k - 1] + (level - v[k - 1]) / (v[k] - v[k - 1]) * (r[k] - r[k - 1])))
    return float(np.mean(widths))
