r"""Figures of loss landscapes: 1D curves, 2D contours, 3D surfaces, PCA trajectories, Hessian maps.

Plot settings follow Li et al. (NeurIPS 2018) and their code (``plot_2D.py``): contour levels
are **fixed** (``--vmin 0.1 --vmax 10 --vlevel 0.5``, i.e. ``np.arange(0.1, 10, 0.5)``) so
that contours of different networks can be compared; 1D plots put loss (left axis) and
accuracy (right axis) on one figure as Keskar et al. (ICLR 2017) Fig. 3 and Li et al.
Fig. 2–3 do. Every function takes the tidy tables of ``surface.py`` / ``hessian_maps.py``
and returns a matplotlib Figure; save it with ``shared.plotting.save`` (which registers the
caption; state the BatchNorm mode, the data split and the direction normalisation in it).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

LI_LEVELS = np.arange(0.1, 10.0, 0.5)  # Li et al.'s plot_2D.py defaults: vmin 0.1, vmax 10, vlevel 0.5


def to_grid(table: pd.DataFrame, value: str = "loss") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(α values, β values, Z[β, α]) from a tidy (alpha, beta, value) table."""
    pivot = table.pivot_table(index="beta", columns="alpha", values=value, aggfunc="first")
    return pivot.columns.to_numpy(float), pivot.index.to_numpy(float), pivot.to_numpy(float)


def plot_line(
    tables: pd.DataFrame | dict[str, pd.DataFrame],
    *,
    log_loss: bool = False,
    accuracy: bool = True,
    xlabel: str = r"$\alpha$",
    title: str | None = None,
) -> Figure:
    """Loss (solid, left axis) and accuracy (dashed, right axis) against α, one line per table.

    ``tables``: one table or ``{label: table}`` (e.g. ``{"train": ..., "test": ...}``).
    """
    tables = {"": tables} if isinstance(tables, pd.DataFrame) else tables
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    ax2 = ax.twinx() if accuracy else None
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (label, table) in enumerate(tables.items()):
        t = table.sort_values("alpha")
        c = colours[i % len(colours)]
        ax.plot(t["alpha"], t["loss"], color=c, label=f"{label} loss".strip())
        if ax2 is not None and "accuracy" in t:
            ax2.plot(t["alpha"], 100 * t["accuracy"], color=c, ls="--", label=f"{label} accuracy".strip())
    if log_loss:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("loss")
    handles, labels = ax.get_legend_handles_labels()
    if ax2 is not None:
        ax2.set_ylabel("accuracy (%)")
        ax2.grid(False)
        h2, l2 = ax2.get_legend_handles_labels()
        handles, labels = handles + h2, labels + l2
    ax.legend(handles, labels, fontsize="small", loc="best")
    if title:
        ax.set_title(title)
    return fig


def plot_contour(
    table: pd.DataFrame,
    *,
    value: str = "loss",
    levels: Sequence[float] | np.ndarray = LI_LEVELS,
    ax: Any = None,
    labels: bool = True,
    title: str | None = None,
) -> Figure:
    """Contour lines of ``value`` over (α, β) at fixed ``levels`` (Li et al. Fig. 5–6)."""
    a, b, z = to_grid(table, value)
    if ax is None:
        fig, ax = plt.subplots(figsize=(4.5, 4.2))
    else:
        fig = ax.figure
    cs = ax.contour(a, b, z, levels=np.asarray(levels), cmap="summer")
    if labels and len(cs.levels):
        ax.clabel(cs, inline=True, fontsize=7)
    ax.set_xlabel(r"$\alpha$")
    ax.set_ylabel(r"$\beta$")
    ax.set_aspect("equal", adjustable="box")
    if title:
        ax.set_title(title)
    return fig


def plot_surface_3d(
    table: pd.DataFrame,
    *,
    value: str = "loss",
    zmax: float | None = None,
    log: bool = False,
    title: str | None = None,
) -> Figure:
    """3D surface of ``value`` over (α, β), clipped at ``zmax`` (Li et al. Fig. 1, 5)."""
    a, b, z = to_grid(table, value)
    if zmax is not None:
        z = np.minimum(z, zmax)
    if log:
        z = np.log(z)
    aa, bb = np.meshgrid(a, b)
    fig = plt.figure(figsize=(5.5, 4.5))
    ax = fig.add_subplot(projection="3d")
    ax.plot_surface(aa, bb, z, cmap="coolwarm", linewidth=0, antialiased=True)
    ax.set_xlabel(r"$\alpha$")
    ax.set_ylabel(r"$\beta$")
    ax.set_zlabel(f"log {value}" if log else value)
    if title:
        ax.set_title(title)
    return fig


def plot_trajectory(
    table: pd.DataFrame | None,
    coordinates: np.ndarray,
    explained_variance_ratio: Sequence[float] | np.ndarray,
    *,
    levels: Sequence[float] | np.ndarray = LI_LEVELS,
    title: str | None = None,
) -> Figure:
    """A trajectory projected onto PCA directions, over the loss contours of that plane (Li et al. Fig. 9).

    ``coordinates`` [T, 2] from ``directions.pca_directions``; axes are labelled with each
    component's explained variance, as in the paper.
    """
    if table is not None:
        fig = plot_contour(table, levels=levels, labels=True)
        ax = fig.axes[0]
    else:
        fig, ax = plt.subplots(figsize=(4.5, 4.2))
    c = np.asarray(coordinates)
    ax.plot(c[:, 0], c[:, 1], "-o", color="tab:red", ms=3, lw=1)
    ax.plot(c[-1, 0], c[-1, 1], "*", color="k", ms=9)
    r = np.asarray(explained_variance_ratio)
    ax.set_xlabel(f"1st PC: {100 * r[0]:.1f} %")
    ax.set_ylabel(f"2nd PC: {100 * r[1]:.1f} %")
    if title:
        ax.set_title(title)
    return fig


def plot_eigen_ratio(table: pd.DataFrame, *, vmax: float = 1.0, title: str | None = None) -> Figure:
    """Heat map of |λ_min/λ_max| over (α, β) (Li et al. §6, Fig. 8): blue convex, yellow not."""
    a, b, z = to_grid(table, "ratio")
    fig, ax = plt.subplots(figsize=(4.8, 4.2))
    mesh = ax.pcolormesh(a, b, z, cmap="viridis", vmin=0.0, vmax=vmax, shading="auto")
    fig.colorbar(mesh, ax=ax, label=r"$|\lambda_{min}/\lambda_{max}|$")
    ax.set_xlabel(r"$\alpha$")
    ax.set_ylabel(r"$\beta$")
    ax.set_aspect("equal", adjustable="box")
    if title:
        ax.set_title(title)
    return fig
