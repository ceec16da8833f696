"""Seeds: one root key per run, every random choice derived by folding in names.

    key = seeds.derive(root_seed, "baldi_linear_autoencoder", "gd", "init")

Names are hashed (stable across processes and Python versions, unlike
``hash()``) and folded into the key one after another, so that adding a new
consumer never shifts the streams of existing ones (big_vision style).
"""

from __future__ import annotations

import hashlib

import jax


def name_to_int(name: str | int) -> int:
    """A stable 31-bit integer for a name (ints pass through)."""
    if isinstance(name, int):
        if name < 0:
            raise ValueError(f"seed components must be non-negative, got {name}")
        return name
    digest = hashlib.sha256(name.encode("utf-8")).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


_USED: list[tuple[int, tuple[str | int, ...]]] = []


def derive(root_seed: int, *names: str | int) -> jax.Array:
    """``jax.random.key(root_seed)`` folded with each name in turn (recorded for provenance)."""
    if (int(root_seed), names) not in _USED:
        _USED.append((int(root_seed), names))
    key = jax.random.key(int(root_seed))
    for name in names:
        key = jax.random.fold_in(key, name_to_int(name))
    return key


def used_streams() -> list[str]:
    """Every (root seed, names) stream derived in this process, as 'seed/name/name'."""
    return ["/".join(str(part) for part in (seed, *names)) for seed, names in _USED]
