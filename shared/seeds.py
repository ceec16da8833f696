"""Seeds: one root key per run, every random choice derived by folding in names.

    key = seeds.derive(root_seed, "baldi_linear_autoencoder", "gd", "init")
    rng = seeds.numpy_rng(root_seed, "baldi_linear_autoencoder", "mixing")   # NumPy's streams too

Names are hashed (stable across processes and Python versions, unlike
``hash()``) and folded into the key one after another, so that adding a new
consumer never shifts the streams of existing ones (big_vision style).
"""

from __future__ import annotations

import hashlib
from typing import Any

import jax
import numpy as np


def name_to_int(name: str | int) -> int:
    """A stable 31-bit integer for a name (ints pass through)."""
    if isinstance(name, int):
        if name < 0:
            raise ValueError(f"seed components must be non-negative, got {name}")
        return name
    digest = hashlib.sha256(name.encode("utf-8")).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


_USED: list[tuple[int, tuple[str | int, ...]]] = []


def _record(root_seed: int, names: tuple[str | int, ...], kind: str = "") -> None:
    entry = (int(root_seed), (*names, f"[{kind}]") if kind else names)
    if entry not in _USED:
        _USED.append(entry)


def derive(root_seed: int, *names: str | int) -> jax.Array:
    """``jax.random.key(root_seed)`` folded with each name in turn (recorded for provenance)."""
    _record(root_seed, names)
    key = jax.random.key(int(root_seed))
    for name in names:
        key = jax.random.fold_in(key, name_to_int(name))
    return key


def numpy_rng(root_seed: int, *names: str | int) -> np.random.Generator:
    """A NumPy generator seeded with the stable integer of ``"root/name/name"`` (recorded).

    The same integer as ``name_to_int(f"{root}/{a}/{b}")``, so the streams of the modules
    written before this helper existed are unchanged."""
    _record(root_seed, names, kind="numpy")
    return np.random.default_rng(name_to_int("/".join(str(p) for p in (int(root_seed), *names))))


def flax_rngs(root_seed: int, *names: str | int) -> Any:
    """``nnx.Rngs`` for a model's own initialization, from the root seed folded with ``names``
    (no names: ``nnx.Rngs(root_seed)`` itself); recorded like every other stream."""
    from flax import nnx

    _record(root_seed, names, kind="flax")
    return nnx.Rngs(derive(root_seed, *names) if names else int(root_seed))


def used_streams() -> list[str]:
    """Every (root seed, names) stream derived in this process, as 'seed/name/name'."""
    return ["/".join(str(part) for part in (seed, *names)) for seed, names in _USED]
