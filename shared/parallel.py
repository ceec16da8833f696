"""Several devices on one machine: a 1D mesh over ``jax.devices()`` and a leading axis split over it.

Everything the suite does many times independently — ensemble members (``vmap`` over runs),
landscape grid points, trace-estimator probes, SLQ draws — has a leading axis that can be
split across devices with ``jax.sharding`` (data parallelism; no cross-device reductions
inside a member, a point or a probe):

    mesh = device_mesh()                       # 1D, every device, axis ``AXIS``
    x, n = pad_leading(x, mesh.size)           # rows to a multiple of the device count
    x = shard_leading(x, mesh)                 # row block i on device i
    y = jax.jit(jax.vmap(f))(x)                # jit partitions the vmapped computation
    y = unpad_leading(y, n)

With one device every helper here is the identity (no ``device_put``, nothing padded), so the
one-device path runs the code it ran before this module existed, bit for bit. With D devices a
vmapped computation runs on D row blocks of 1/D the size; each row is computed on one device
by the same program, but a batched kernel of another batch size can round differently, and
sums over rows (means, traces) reduce in another order, so callers state a float tolerance.

Tested on the CPU with fake host devices (``XLA_FLAGS=--xla_force_host_platform_device_count=4``
set before jax is imported; ``tests/test_sharding.py``).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

AXIS = "shard"


@functools.cache
def _mesh(devices: tuple[Any, ...], axis: str) -> Mesh:
    return Mesh(np.array(devices), (axis,))


def device_mesh(axis: str = AXIS, devices: Sequence[Any] | None = None) -> Mesh:
    """A 1D mesh named ``axis`` over ``devices`` (default: every device, ``jax.devices()``)."""
    return _mesh(tuple(jax.devices() if devices is None else devices), axis)


def mesh_for(count: int, axis: str = AXIS) -> Mesh:
    """The mesh over the first d devices, d the largest divisor of ``count`` that is at most the
    device count: ``count`` rows then split evenly without padding (6 runs on 4 devices: 3
    devices with 2 each; a prime count of runs above the device count: one device)."""
    devices = jax.devices()
    d = max(k for k in range(1, min(len(devices), max(count, 1)) + 1) if count % k == 0)
    return device_mesh(axis, devices[:d])


def replicate(tree: Any, mesh: Mesh | None = None) -> Any:
    """``tree`` replicated on every device of ``mesh`` (default :func:`device_mesh`); the
    identity with one device. Shared inputs (data, a centre, an operator) go through this, so
    that an array committed to one device does not clash with sharded ones."""
    mesh = device_mesh() if mesh is None else mesh
    if mesh.size == 1:
        return tree
    return jax.device_put(tree, NamedSharding(mesh, P()))


def shard_leading(tree: Any, mesh: Mesh | None = None) -> Any:
    """Every leaf's leading axis split in ``mesh.size`` equal blocks, block i on device i (the
    identity with one device). Leading axes must be a multiple of ``mesh.size``
    (:func:`pad_leading`); scalars are replicated."""
    mesh = device_mesh() if mesh is None else mesh
    if mesh.size == 1:
        return tree
    (axis,) = mesh.axis_names
    sharded, replicated = NamedSharding(mesh, P(axis)), NamedSharding(mesh, P())

    def put(leaf: Any) -> Any:
        shape = np.shape(leaf)
        if not shape:
            return jax.device_put(leaf, replicated)
        if shape[0] % mesh.size:
            raise ValueError(f"a leading axis of {shape[0]} rows does not split over {mesh.size} devices; "
                             "pad it first (shared.parallel.pad_leading)")
        return jax.device_put(leaf, sharded)

    return jax.tree_util.tree_map(put, tree)


def padded_length(count: int, multiple: int) -> int:
    """``count`` rounded up to a multiple of ``multiple``."""
    return -(-count // multiple) * multiple


def pad_leading(tree: Any, multiple: int) -> tuple[Any, int]:
    """``(padded, count)``: every leaf's leading axis padded to a multiple of ``multiple`` by
    repeating its last row (finite, valid inputs: a probe, a key, a grid point), and the
    original row count for :func:`unpad_leading`. The identity when nothing is missing.
    NumPy leaves stay NumPy; jax arrays (typed PRNG keys too) stay on their devices."""
    leaves = jax.tree_util.tree_leaves(tree)
    if not leaves:
        return tree, 0
    count = int(np.shape(leaves[0])[0])
    extra = padded_length(count, multiple) - count
    if extra == 0:
        return tree, count

    def pad(leaf: Any) -> Any:
        if int(np.shape(leaf)[0]) != count:
            raise ValueError(f"leading axes differ: {np.shape(leaf)[0]} vs {count}")
        xp = np if isinstance(leaf, np.ndarray) else jnp
        return xp.concatenate([leaf, xp.repeat(leaf[-1:], extra, axis=0)])

    return jax.tree_util.tree_map(pad, tree), count


def unpad_leading(tree: Any, count: int) -> Any:
    """The first ``count`` rows of every leaf (undoes :func:`pad_leading`)."""
    return jax.tree_util.tree_map(lambda leaf: leaf if leaf.shape[0] == count else leaf[:count], tree)


def devices_of(tree: Any) -> set[Any]:
    """The devices holding any leaf of ``tree`` (``x.sharding.device_set``; tests, diagnostics)."""
    out: set[Any] = set()
    for leaf in jax.tree_util.tree_leaves(tree):
        out |= set(leaf.sharding.device_set)
    return out
