r"""The loss surface L(θ) of a model on a fixed data set, and its sections (lines, planes).

Li, Xu, Taylor, Studer, Goldstein, "Visualizing the loss landscape of neural nets"
(NeurIPS 2018), §3–4: with a centre θ* and directions δ, η (``directions.py``),

    f(α) = L(θ* + α δ)                      (1D plots, §3),
    f(α, β) = L(θ* + α δ + β η)             (2D contour and surface plots, §3–4),

evaluated on a grid of (α, β), where L is the mean loss over a whole data set (Li et al.
use the full training set, no augmentation, ``net.eval()``). Keskar et al. (ICLR 2017) §2.2
use the same machinery for their parametric plot f(x_s + α(x_ℓ − x_s)), α ∈ [−1, 2].

:class:`Objective` fixes what "the loss" means: a model's forward pass f(θ, x) with its
non-parameter state (BatchNorm running statistics) in a stated BatchNorm mode
(``"eval"``: running averages, the default and Li's ``net.eval()``; ``"batch_stats"``: each
batch's own statistics, Keskar's Keras ``mode=2``, so the value depends on the batching),
dropout off, a per-example loss ℓ and a data set in fixed batches:

    L(θ) = (1/N) Σᵢ ℓ(f(θ, xᵢ), yᵢ),   acc(θ) = (1/N) Σᵢ [argmax f(θ, xᵢ) = yᵢ].

Points are evaluated many at a time: each call runs ``lax.map`` over a block of points
(``vmap`` over ``vmap_size`` of them at a time) inside one ``jax.jit``, and the block is
split across devices with ``jax.shard_map`` over a 1D mesh (one device: a plain jit). On
CPU ``vmap_size=1`` is the default: XLA:CPU lowers a convolution vmapped over its kernel to
a grouped convolution that we measured 5× slower per point than one point at a time.
Grids are written chunk by chunk through :func:`shared.resume.chunk`, keyed by a hash of
everything that shapes the chunk (the objective's data and state, the centre, the directions,
the chunk's coordinates), so a killed run resumes where it stopped and gives the same table.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
from flax import nnx
from jax.sharding import PartitionSpec as P

from shared import parallel
from shared.curvature.hvp import Batches, batch_data, reduce_batches
from shared.curvature.operators import Static
from shared.resume import chunk, is_cached
from shared.training.losses import correct, cross_entropy

BNMode = Literal["eval", "batch_stats"]
PerExampleLoss = Callable[[jax.Array, jax.Array], jax.Array]
ChunkCallback = Callable[[int, int, bool], None]
POINTS = "points"  # the mesh axis grid points are split over (``shared.parallel``)


# --------------------------------------------------------------------------- objective


@dataclass(frozen=True, eq=False)
class _Merged:
    """``(params, state, x) -> nnx.merge(graphdef, params, state)(x)``; equal for equal graphs."""

    graphdef: Any

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Merged) and self.graphdef == other.graphdef

    def __hash__(self) -> int:
        return hash(self.graphdef)

    def __call__(self, params: Any, state: Any, x: jax.Array) -> jax.Array:
        return nnx.merge(self.graphdef, params, state, copy=True)(x)  # copy: BN may write its statistics


@dataclass(frozen=True)
class _Stateless:
    """``(params, state, x) -> f(params, x)`` for a plain forward function (state unused)."""

    fn: Static

    def __call__(self, params: Any, state: Any, x: jax.Array) -> jax.Array:
        del state
        return self.fn.value(params, x)


@functools.partial(jax.tree_util.register_dataclass, data_fields=["state"], meta_fields=["forward", "loss"])
@dataclass(frozen=True)
class BatchLoss:
    """``loss_fn(params, (x, y))`` = mean ℓ over one batch, the form ``shared.curvature`` takes.

    A pytree: the non-parameter ``state`` is its leaves, traced by the jitted curvature code;
    its structure is equal across objectives with the same forward pass (graph) and loss, so
    two networks of one architecture share compiled Hessian-vector products.
    """

    forward: Static
    loss: Static
    state: Any

    def __call__(self, params: Any, batch: tuple[jax.Array, jax.Array]) -> jax.Array:
        x, y = batch
        return jnp.mean(self.loss.value(self.forward.value(params, self.state, x), y))


@functools.partial(
    jax.tree_util.register_dataclass,
    data_fields=["state", "data"],
    meta_fields=["forward", "loss", "bn_mode", "split", "unroll_batches"],
)
@dataclass(frozen=True, eq=False)
class Objective:
    """L(θ) = (1/N) Σᵢ ℓ(f(θ, xᵢ), yᵢ) over ``data`` (module docstring); a pytree.

    ``forward(params, state, x)`` is the model in BatchNorm mode ``bn_mode`` ("eval",
    "batch_stats", or "none" for models without BatchNorm) with dropout off; ``state`` is its
    non-parameter state (traced, so new statistics reuse compiled code); ``data`` is a
    :class:`shared.curvature.Batches` of ``(x, y)``; ``split`` names the data ("train",
    "test", "train[2000]"…) for captions. Build it with :func:`from_model` or
    :func:`from_apply`. ``objective(params)`` is L(θ); :meth:`metrics` adds accuracy.
    """

    forward: Static
    loss: Static
    state: Any
    data: Batches
    bn_mode: str = "eval"
    split: str = "train"
    unroll_batches: bool | None = None

    @property
    def num_examples(self) -> int:
        return self.data.num_examples

    @property
    def batch_loss(self) -> BatchLoss:
        """The per-batch mean loss for ``shared.curvature.hessian_operator(..., reduction="mean")``."""
        return BatchLoss(self.forward, self.loss, self.state)

    def _batch_metrics(self, params: Any, state: Any, batch: tuple[jax.Array, jax.Array]) -> tuple[Any, Any]:
        x, y = batch
        out = self.forward.value(params, state, x)
        return jnp.mean(self.loss.value(out, y)), jnp.mean(correct(out, y))

    def metrics(self, params: Any, state: Any = None) -> tuple[jax.Array, jax.Array]:
        """(L(θ), accuracy) over all batches; ``state`` overrides the objective's own."""
        state = self.state if state is None else state
        fn = lambda batch: self._batch_metrics(params, state, batch)
        return reduce_batches(fn, self.data, "mean", self.unroll_batches)

    def __call__(self, params: Any) -> jax.Array:
        """L(θ) (traceable)."""
        fn = lambda batch: jnp.mean(self.loss.value(self.forward.value(params, self.state, batch[0]), batch[1]))
        return reduce_batches(fn, self.data, "mean", self.unroll_batches)


def _as_batches(data: Batches | tuple[Any, Any], batch_size: int | None, dtype: Any) -> Batches:
    """``data`` as Batches, with floating inputs cast to the params' dtype (float32 or float64)."""
    if not isinstance(data, Batches):
        x, y = data
        x = jnp.asarray(x)
        if jnp.issubdtype(x.dtype, jnp.floating):
            x = x.astype(dtype)
        data = batch_data((x, jnp.asarray(y)), batch_size)
    return data


def _float_dtype(params: Any) -> Any:
    leaves = [leaf for leaf in jax.tree_util.tree_leaves(params) if jnp.issubdtype(leaf.dtype, jnp.floating)]
    if not leaves:
        raise TypeError("params have no floating-point leaves")
    return jnp.result_type(*[leaf.dtype for leaf in leaves])


def has_batchnorm(model: nnx.Module) -> bool:
    """Whether ``model`` contains an ``nnx.BatchNorm`` layer."""
    return any(isinstance(node, nnx.BatchNorm) for _, node in nnx.iter_graph(model))


def from_model(
    model: nnx.Module,
    data: Batches | tuple[Any, Any],
    *,
    bn_mode: BNMode = "eval",
    loss: PerExampleLoss = cross_entropy,
    batch_size: int | None = None,
    split: str = "train",
    unroll_batches: bool | None = None,
) -> tuple[Objective, Any]:
    """``(Objective, params)`` for an NNX model in BatchNorm mode ``bn_mode``, dropout off.

    ``data`` is a :class:`Batches` or an ``(x, y)`` pair split into batches of
    ``batch_size`` (None: one batch). The model itself is not modified. ``bn_mode`` is
    recorded as "none" when the model has no BatchNorm.
    """
    if bn_mode not in ("eval", "batch_stats"):
        raise ValueError(f"bn_mode must be 'eval' or 'batch_stats' ('train' updates state), got {bn_mode!r}")
    view = nnx.view(model, use_running_average=bn_mode == "eval", deterministic=True, raise_if_not_found=False)
    graphdef, params, state = nnx.split(view, nnx.Param, ...)  # type: ignore[misc]
    mode = bn_mode if has_batchnorm(model) else "none"
    batches = _as_batches(data, batch_size, _float_dtype(params))
    obj = Objective(Static(_Merged(graphdef)), Static(loss), state, batches, mode, split, unroll_batches)
    return obj, params


def from_apply(
    apply: Callable[[Any, jax.Array], jax.Array],
    params: Any,
    data: Batches | tuple[Any, Any],
    *,
    bn_mode: str,
    loss: PerExampleLoss = cross_entropy,
    batch_size: int | None = None,
    split: str = "train",
    unroll_batches: bool | None = None,
) -> Objective:
    """An Objective for a pure forward function ``apply(params, x)`` (e.g. ``shared.models.pure``).

    The function's BatchNorm mode is fixed inside it, so the caller states it in ``bn_mode``
    (recorded for captions: "eval", "batch_stats", "none").
    """
    batches = _as_batches(data, batch_size, _float_dtype(params))
    return Objective(Static(_Stateless(Static(apply))), Static(loss), None, batches, bn_mode, split, unroll_batches)


# --------------------------------------------------------------------------- points


def combine(origin: Any, directions: Any, coords: jax.Array) -> Any:
    """θ = origin + Σ_k c_k d_k for stacked ``directions`` (leading axis k); non-float leaves kept."""

    def leaf(o: jax.Array, d: jax.Array) -> jax.Array:
        if not jnp.issubdtype(o.dtype, jnp.floating):
            return o
        return o + jnp.tensordot(coords.astype(o.dtype), d.astype(o.dtype), axes=1)

    return jax.tree_util.tree_map(leaf, origin, directions)


def stack(directions: Sequence[Any]) -> Any:
    """Stack k direction pytrees on a new leading axis."""
    return jax.tree_util.tree_map(lambda *ds: jnp.stack(ds), *directions)


def replicate(tree: Any) -> Any:
    """``tree`` replicated on every device of the points mesh (a no-op with one device), so that
    arrays committed to one device do not clash with the sharded points."""
    return parallel.replicate(tree, parallel.device_mesh(POINTS))


def default_vmap_size() -> int:
    """Points evaluated together by ``vmap``: 1 on CPU (module docstring), 8 on accelerators."""
    return 1 if jax.default_backend() == "cpu" else 8


@functools.cache
def _points_program(devices: tuple[Any, ...], vmap_size: int, moves_state: bool) -> Callable:
    """Jitted ``(objective, origin, directions, coords[P, k]) -> (loss[P], accuracy[P])``."""
    mesh = parallel.device_mesh(POINTS, devices)

    def local(objective: Objective, origin: Any, directions: Any, coords: jax.Array) -> tuple[Any, Any]:
        def one(c: jax.Array) -> tuple[Any, Any]:
            point = combine(origin, directions, c)
            return objective.metrics(*point) if moves_state else objective.metrics(point)

        return jax.lax.map(one, coords, batch_size=vmap_size if vmap_size > 1 else None)

    sharded = jax.shard_map(
        local, mesh=mesh, in_specs=(P(), P(), P(), P(POINTS)), out_specs=P(POINTS), check_vma=False
    )
    return jax.jit(sharded)


def evaluate_points(
    objective: Objective,
    origin: Any,
    directions: Sequence[Any],
    coords: np.ndarray | jax.Array,
    *,
    vmap_size: int | None = None,
    moves_state: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """(L, accuracy) at origin + Σ_k coords[i, k] directions[k] for every row i of ``coords``.

    One jitted call for the whole block (module docstring); the block is padded to a
    multiple of the number of devices and the padding dropped. With ``moves_state``,
    ``origin`` and each direction are ``(params, state)`` pairs and the BatchNorm statistics
    move too (Li et al.'s ``dir_type=states``; a zero state direction keeps them fixed).
    """
    coords = np.asarray(coords, dtype=np.float64)
    if coords.ndim != 2 or coords.shape[1] != len(directions):
        raise ValueError(f"coords must be [P, {len(directions)}], got shape {coords.shape}")
    return _evaluate_stacked(objective, origin, stack(directions), coords, vmap_size, moves_state)


def _evaluate_stacked(
    objective: Objective, origin: Any, stacked: Any, coords: np.ndarray, vmap_size: int | None, moves_state: bool
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`evaluate_points` with the directions already stacked (once per section)."""
    vmap_size = default_vmap_size() if vmap_size is None else int(vmap_size)
    devices = tuple(jax.devices())
    num = coords.shape[0]
    if num == 0:
        return np.zeros(0), np.zeros(0)
    # rows padded to a multiple of the device count (lax.map handles a remainder that vmap_size does not divide)
    padded, _ = parallel.pad_leading(coords, len(devices))
    program = _points_program(devices, vmap_size, moves_state)
    loss, acc = program(objective, origin, stacked, jnp.asarray(padded, _float_dtype(origin)))
    return np.asarray(loss)[:num], np.asarray(acc)[:num]


# --------------------------------------------------------------------------- resumable grids


def fingerprint(*trees: Any) -> str:
    """A content hash of pytrees (structure, shapes, dtypes and bytes of every leaf)."""
    h = hashlib.sha256()
    for tree in trees:
        leaves, treedef = jax.tree_util.tree_flatten(tree)
        h.update(str(treedef).encode())
        for leaf in leaves:
            a = np.asarray(leaf)
            h.update(f"{a.shape}{a.dtype}".encode())
            h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:16]


def objective_fingerprint(objective: Objective) -> dict[str, Any]:
    """What identifies an objective in chunk specs: its data, state, modes and loss."""
    loss = objective.loss.value
    return {
        "data": fingerprint(objective.data),
        "state": fingerprint(objective.state),
        "bn_mode": objective.bn_mode,
        "split": objective.split,
        "loss": getattr(loss, "__qualname__", type(loss).__name__),
        "forward": type(objective.forward.value).__name__,
    }


def map_points(
    coords: np.ndarray,
    coord_names: Sequence[str],
    compute: Callable[[np.ndarray, int], Mapping[str, np.ndarray]],
    *,
    chunk_size: int,
    workdir: str | Path | None = None,
    name: str = "landscape",
    spec: Mapping[str, Any] | None = None,
    on_chunk: ChunkCallback | None = None,
) -> tuple[pd.DataFrame, int]:
    """``(table, chunks computed)``: ``compute(coords_chunk, first_index)`` over chunks of rows.

    The table has one column per coordinate plus the columns ``compute`` returns, rows in
    the order of ``coords``. With ``workdir`` each chunk goes through
    :func:`shared.resume.chunk` under ``name`` with ``spec`` plus the chunk's coordinates in
    its key; reused chunks are not recomputed, so a killed run resumes. Fresh and reused
    chunks are both read back from their CSV (full precision), so the table is identical
    either way; without ``workdir`` the same numbers are kept in memory.
    ``on_chunk(i, num_chunks, reused)`` is called after each chunk (progress, tests).
    """
    coords = np.asarray(coords, dtype=np.float64)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    starts = list(range(0, coords.shape[0], chunk_size))
    frames, computed = [], 0
    for i, start in enumerate(starts):
        block = coords[start : start + chunk_size]

        def run(block: np.ndarray = block, start: int = start) -> pd.DataFrame:
            cols = {n: block[:, j] for j, n in enumerate(coord_names)}
            cols.update({k: np.asarray(v, dtype=np.float64) for k, v in compute(block, start).items()})
            return pd.DataFrame(cols)

        if workdir is None:
            frame, reused = run(), False
        else:
            key = {**(spec or {}), "name": name, "first_index": start, "coords": block.tolist()}
            reused = is_cached(name, key, Path(workdir))
            frame = chunk(name, key, run, workdir=Path(workdir))
        computed += 0 if reused else 1
        frames.append(frame)
        if on_chunk is not None:
            on_chunk(i, len(starts), reused)
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=list(coord_names))
    return table, computed


@dataclass(frozen=True)
class Landscape:
    """A tidy table of a line or plane section and how it was evaluated (for captions).

    ``table`` has columns ``alpha`` [, ``beta``], ``loss``, ``accuracy``; ``bn_mode`` and
    ``split`` come from the objective; ``chunks_computed`` of ``chunks_total`` were computed
    in this call (the rest were reused from ``workdir``).
    """

    table: pd.DataFrame
    bn_mode: str
    split: str
    num_examples: int
    dtype: str
    chunks_computed: int
    chunks_total: int
    meta: dict[str, Any] = field(default_factory=dict)


def _section(
    objective: Objective,
    origin: Any,
    directions: Sequence[Any],
    coords: np.ndarray,
    coord_names: Sequence[str],
    *,
    workdir: str | Path | None,
    name: str,
    spec: Mapping[str, Any] | None,
    chunk_size: int,
    vmap_size: int | None,
    moves_state: bool,
    on_chunk: ChunkCallback | None,
) -> Landscape:
    dtype = _float_dtype(origin)
    full_spec: dict[str, Any] = {
        **(spec or {}),
        "objective": objective_fingerprint(objective),
        "origin": fingerprint(origin),
        "directions": [fingerprint(d) for d in directions],
        "dtype": str(jnp.dtype(dtype)),
        "moves_state": moves_state,
    }

    obj_r, origin_r, stacked_r = replicate((objective, origin, stack(directions)))  # once, not per chunk

    def compute(block: np.ndarray, start: int) -> dict[str, np.ndarray]:
        del start
        loss, acc = _evaluate_stacked(obj_r, origin_r, stacked_r, block, vmap_size, moves_state)
        return {"loss": loss, "accuracy": acc}

    table, computed = map_points(
        coords, coord_names, compute, chunk_size=chunk_size, workdir=workdir, name=name, spec=full_spec,
        on_chunk=on_chunk,
    )
    total = -(-len(coords) // chunk_size)
    meta = {"spec": json.loads(json.dumps(full_spec, default=str))}
    return Landscape(table, objective.bn_mode, objective.split, objective.num_examples, str(jnp.dtype(dtype)),
                     computed, total, meta)


def grid(alphas: Sequence[float] | np.ndarray, betas: Sequence[float] | np.ndarray) -> np.ndarray:
    """All (α, β) pairs, β varying slowest (row-major in β): shape [len(α)·len(β), 2]."""
    a, b = np.meshgrid(np.asarray(alphas, np.float64), np.asarray(betas, np.float64), indexing="xy")
    return np.stack([a.ravel(), b.ravel()], axis=1)


def plane(
    objective: Objective,
    origin: Any,
    d1: Any,
    d2: Any,
    alphas: Sequence[float] | np.ndarray,
    betas: Sequence[float] | np.ndarray,
    *,
    workdir: str | Path | None = None,
    name: str = "plane",
    spec: Mapping[str, Any] | None = None,
    chunk_size: int = 64,
    vmap_size: int | None = None,
    on_chunk: ChunkCallback | None = None,
) -> Landscape:
    """f(α, β) = L(θ* + α δ + β η) on the grid ``alphas`` × ``betas`` (Li et al. §3–4).

    Rows are ordered β-major (:func:`grid`). ``spec`` (e.g. model name, seed) is added to
    every chunk's key; the data, state, centre and directions are hashed into it anyway.
    """
    coords = grid(alphas, betas)
    return _section(objective, origin, [d1, d2], coords, ("alpha", "beta"), workdir=workdir, name=name, spec=spec,
                    chunk_size=chunk_size, vmap_size=vmap_size, moves_state=False, on_chunk=on_chunk)


def line(
    objective: Objective,
    origin: Any,
    direction: Any,
    alphas: Sequence[float] | np.ndarray,
    *,
    workdir: str | Path | None = None,
    name: str = "line",
    spec: Mapping[str, Any] | None = None,
    chunk_size: int = 64,
    vmap_size: int | None = None,
    moves_state: bool = False,
    on_chunk: ChunkCallback | None = None,
) -> Landscape:
    """f(α) = L(θ* + α δ) for each α (Li et al. §3; 1D plots).

    With ``moves_state``, ``origin`` and ``direction`` are ``(params, state)`` pairs.
    """
    coords = np.asarray(alphas, np.float64).reshape(-1, 1)
    return _section(objective, origin, [direction], coords, ("alpha",), workdir=workdir, name=name, spec=spec,
                    chunk_size=chunk_size, vmap_size=vmap_size, moves_state=moves_state, on_chunk=on_chunk)


def interpolation(
    objective: Objective,
    start: Any,
    end: Any,
    alphas: Sequence[float] | np.ndarray,
    *,
    start_state: Any = None,
    end_state: Any = None,
    **kwargs: Any,
) -> Landscape:
    """f(α) = L((1 − α) θ_a + α θ_b) (Keskar et al. §2.2 with θ_a = x_s, θ_b = x_ℓ; Li et al. §3).

    Given ``start_state`` and ``end_state`` (the two models' BatchNorm statistics), these are
    interpolated too, as in Li et al.'s ``dir_type=states`` (their README: interpolating
    weights alone "cannot produce correct loss values" with BatchNorm); note that a linearly
    extrapolated running variance can turn negative for α outside [0, 1].
    """
    diff = jax.tree_util.tree_map(jnp.subtract, end, start)
    if (start_state is None) != (end_state is None):
        raise ValueError("give both start_state and end_state, or neither")
    if start_state is None:
        return line(objective, start, diff, alphas, **kwargs)
    dstate = jax.tree_util.tree_map(
        lambda a, b: (b - a) if jnp.issubdtype(jnp.asarray(a).dtype, jnp.floating) else jnp.zeros_like(a),
        start_state, end_state,
    )
    return line(objective, (start, start_state), (diff, dstate), alphas, moves_state=True, **kwargs)
