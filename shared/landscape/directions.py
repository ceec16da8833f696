r"""Directions in parameter space for loss-landscape plots (Li et al., NeurIPS 2018, §4–§7).

**Filter normalisation** (Li et al. §4; official code ``net_plotter.normalize_direction``):
draw d ~ N(0, I) of the shape of θ, then for every layer i and filter j

    d_{i,j} ← d_{i,j} / ‖d_{i,j}‖ · ‖θ_{i,j}‖          (Frobenius norms),

so each filter of the direction has the norm of the matching filter of the weights, and the
plot no longer depends on the scale of individual filters (the scale invariance of ReLU
layers followed by BatchNorm, and Dinh et al.'s α-scalings). A *filter* is the set of
weights producing one output channel or unit. Flax kernels are laid out ``(…, in, out)``
(Dense ``(in, out)``, Conv ``(kh, kw, in, out)``), so the filter index is the **last**
axis: norms are taken over all other axes (PyTorch's layout, and Li's loop, use the first).

Parameters with ndim ≤ 1 (biases, BatchNorm scale and offset) follow the code's
``normalize_directions_for_weights``: with ``ignore="biasbn"`` (the setting of the paper's
figures) they are **zero** in the direction; otherwise they are a copy of the weights
(Li's convention for "filter" and "layer" normalisation) or, with ``norm="none"``, left as
drawn. ``norm="layer"`` rescales each whole tensor to the norm of the weight tensor;
``norm="none"`` keeps the raw Gaussian draw (the un-normalised plots the paper criticises).

Also here: the direction between two solutions (1D interpolation, Keskar et al. §2.2), and
the top two PCA directions of an optimisation trajectory (Li et al. §7, ``setup_PCA_directions``):
PCA (centred, as ``sklearn.decomposition.PCA``) of the matrix whose rows are θ_i − θ_final,
with the explained variance ratio of each component.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

Norm = Literal["filter", "layer", "none"]
Ignore = Literal["biasbn"] | None


def _check(norm: str, ignore: str | None) -> None:
    if norm not in ("filter", "layer", "none"):
        raise ValueError(f"norm must be 'filter', 'layer' or 'none', got {norm!r}")
    if ignore not in ("biasbn", None):
        raise ValueError(f"ignore must be 'biasbn' or None, got {ignore!r}")


@jax.jit
def filter_norms(tree: Any) -> Any:
    """‖θ_{i,j}‖ for every filter j (last axis) of every leaf with ndim ≥ 2; None for others."""

    def leaf(w: jax.Array) -> jax.Array | None:
        if w.ndim < 2:
            return None
        return jnp.sqrt(jnp.sum(jnp.square(w), axis=tuple(range(w.ndim - 1))))

    return jax.tree_util.tree_map(leaf, tree)


def _normalize_leaf(d: jax.Array, w: jax.Array, norm: str, ignore: str | None) -> jax.Array:
    if not jnp.issubdtype(w.dtype, jnp.floating):
        return jnp.zeros_like(w)
    d = d.astype(w.dtype)
    if w.ndim <= 1:
        if ignore == "biasbn":
            return jnp.zeros_like(w)
        return d if norm == "none" else w
    if norm == "none":
        return d
    axes = tuple(range(w.ndim - 1)) if norm == "filter" else None
    dn = jnp.sqrt(jnp.sum(jnp.square(d), axis=axes, keepdims=True))
    wn = jnp.sqrt(jnp.sum(jnp.square(w), axis=axes, keepdims=True))
    return d * jnp.where(dn > 0, wn / jnp.where(dn > 0, dn, 1), 0)


@partial(jax.jit, static_argnames=("norm", "ignore"))
def _normalize(direction: Any, params: Any, norm: str, ignore: str | None) -> Any:
    return jax.tree_util.tree_map(lambda d, w: _normalize_leaf(d, w, norm, ignore), direction, params)


def normalize_direction(direction: Any, params: Any, *, norm: Norm = "filter", ignore: Ignore = "biasbn") -> Any:
    """Rescale ``direction`` to ``params`` filter-wise, layer-wise or not at all (module docstring)."""
    _check(norm, ignore)
    return _normalize(direction, params, norm, ignore)


_BLOCK = 1 << 16  # draws per compiled block (gaussian_like)


@partial(jax.jit, static_argnames="dtype")
def _normal_block(key: jax.Array, index: jax.Array, dtype: Any) -> jax.Array:
    return jax.random.normal(jax.random.fold_in(key, index), (_BLOCK,), dtype)


@jax.jit
def _assemble(blocks: list[jax.Array], params: Any) -> Any:
    """Cut the concatenated blocks into the floating leaves of ``params`` (tree order); zeros elsewhere."""
    flat = jnp.concatenate(blocks) if blocks else jnp.zeros((0,))
    leaves, treedef = jax.tree_util.tree_flatten(params)
    out, start = [], 0
    for w in leaves:
        if jnp.issubdtype(w.dtype, jnp.floating):
            out.append(flat[start : start + w.size].reshape(w.shape).astype(w.dtype))
            start += w.size
        else:
            out.append(jnp.zeros_like(w))
    return jax.tree_util.tree_unflatten(treedef, out)


def gaussian_like(params: Any, key: jax.Array) -> Any:
    """d ~ N(0, I) with the structure, shapes and dtypes of ``params``.

    One Gaussian stream over the floating leaves in tree order, drawn in blocks of 2^16 from
    ``fold_in(key, block)``: a single small compiled program whatever the network. (A draw per
    leaf compiles one threefry program per leaf shape, about 1.5 s each on XLA:CPU: 45 s of
    the 146 s of Li's quick ResNets went there.)
    """
    floating = [w for w in jax.tree_util.tree_leaves(params) if jnp.issubdtype(w.dtype, jnp.floating)]
    dtype = jnp.result_type(*floating) if floating else jnp.float32
    total = sum(int(np.size(w)) for w in floating)
    blocks = [_normal_block(key, jnp.uint32(i), dtype) for i in range(-(-total // _BLOCK))]
    return _assemble(blocks, params)


def random_direction(params: Any, key: jax.Array, *, norm: Norm = "filter", ignore: Ignore = "biasbn") -> Any:
    """A Gaussian direction normalised to ``params`` (Li et al. §4; defaults = the paper's figures).

    The draw is ``gaussian_like(params, key)`` (record the seed: surfaces depend on it).
    """
    _check(norm, ignore)
    return _normalize(gaussian_like(params, key), params, norm, ignore)


def between(start: Any, end: Any) -> Any:
    """The direction θ_b − θ_a: ``line(objective, start, between(start, end), α)`` is f((1−α)θ_a + αθ_b)."""
    return jax.tree_util.tree_map(jnp.subtract, end, start)


@jax.jit
def biasbn_mask(params: Any) -> Any:
    """1 on leaves with ndim ≥ 2 (weights), 0 on ndim ≤ 1 leaves (biases, BatchNorm)."""
    return jax.tree_util.tree_map(lambda w: jnp.full(w.shape, float(w.ndim >= 2), w.dtype), params)


@dataclass(frozen=True)
class PCADirections:
    """The top two PCA directions of a trajectory (Li et al. §7) and the trajectory's coordinates.

    ``directions`` are unit vectors (pytrees shaped like the trajectory's entries, or flat
    arrays); ``explained_variance_ratio[k]`` is component k's share of the total variance of
    the centred rows θ_i − θ_final; ``coordinates[i]`` = (⟨θ_i − θ_final, d₁⟩, ⟨θ_i − θ_final, d₂⟩)
    (Li's ``project_trajectory`` with ``proj_method="cos"``), so the path can be drawn over a
    surface centred at ``origin`` = θ_final.
    """

    directions: tuple[Any, Any]
    explained_variance_ratio: np.ndarray
    coordinates: np.ndarray
    origin: Any


def _flatten_trajectory(trajectory: Sequence[Any] | np.ndarray) -> tuple[np.ndarray, Any]:
    """Rows [T, n] (float64) and an unravel function (None for array input)."""
    if isinstance(trajectory, np.ndarray | jax.Array) and np.ndim(trajectory) == 2:
        return np.asarray(trajectory, np.float64), None
    rows = []
    unravel = None
    for theta in trajectory:
        flat, unravel = ravel_pytree(theta)
        rows.append(np.asarray(flat, np.float64))
    return np.stack(rows), unravel


def pca_directions(
    trajectory: Sequence[Any] | np.ndarray,
    *,
    final: Any = None,
    ignore: Ignore = None,
) -> PCADirections:
    """Top-2 PCA directions of [θ_i − θ_final] (Li et al. §7; module docstring).

    ``trajectory`` is a sequence of parameter pytrees (saved epochs) or an array [T, n] of
    flattened parameter vectors; ``final`` defaults to its last entry. ``ignore="biasbn"``
    (pytrees only) zeroes biases and BatchNorm parameters in the differences first, as Li's
    ``--ignore biasbn``. Signs are fixed so that each component's largest entry is positive.
    """
    rows, unravel = _flatten_trajectory(trajectory)
    mask = None
    if rows.shape[0] < 2:
        raise ValueError("need at least two points on the trajectory")
    if final is None:
        origin_flat = rows[-1]
        origin = trajectory[-1]
    else:
        origin_flat = np.asarray(ravel_pytree(final)[0] if unravel is not None else final, np.float64)
        origin = final
    diffs = rows - origin_flat
    if ignore == "biasbn":
        if unravel is None:
            raise ValueError("ignore='biasbn' needs pytree trajectory entries (ndim decides what is a bias)")
        mask = np.asarray(ravel_pytree(biasbn_mask(trajectory[0]))[0], np.float64)
        diffs = diffs * mask
    elif ignore is not None:
        raise ValueError(f"ignore must be 'biasbn' or None, got {ignore!r}")
    centred = diffs - diffs.mean(axis=0)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    total = float(np.sum(s**2))
    ratio = (s[:2] ** 2) / total if total > 0 else np.zeros(2)
    comps = vt[:2] if mask is None else vt[:2] * mask  # exact zeros, not SVD rounding, on ignored entries
    signs = np.sign(comps[np.arange(comps.shape[0]), np.argmax(np.abs(comps), axis=1)])
    comps = comps * signs[:, None]
    coordinates = diffs @ comps.T
    if unravel is not None:
        dtype = ravel_pytree(trajectory[0])[0].dtype
        dirs = tuple(unravel(jnp.asarray(c, dtype)) for c in comps)
    else:
        dirs = tuple(comps)
    if len(dirs) < 2:
        raise ValueError("the trajectory spans fewer than two dimensions")
    return PCADirections((dirs[0], dirs[1]), np.asarray(ratio), coordinates, origin)


def project(points: Sequence[Any] | np.ndarray, origin: Any, directions: Sequence[Any]) -> np.ndarray:
    """Least-squares coordinates c_i with θ_i − origin ≈ Σ_k c_ik d_k, shape [T, k].

    For orthonormal directions (PCA) this is ⟨θ_i − origin, d_k⟩; for random directions it
    is the oblique projection (Li's ``proj_method="lstsq"``).
    """
    rows, _ = _flatten_trajectory(points)
    o = np.asarray(ravel_pytree(origin)[0] if not isinstance(origin, np.ndarray) else origin, np.float64)
    d = np.stack([np.asarray(ravel_pytree(v)[0] if not isinstance(v, np.ndarray) else v, np.float64)
                  for v in directions], axis=1)
    coef, *_ = np.linalg.lstsq(d, (rows - o).T, rcond=None)
    return coef.T
