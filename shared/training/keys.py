"""Keys of runs and ensemble members, all derived from one root seed by names.

    key = member_key(root_seed, "keskar", "f1", "sb", seed=3)
    net, params, state = init_network(build, init_key(key))
    fit(..., key=train_key(key))

``member_keys`` stacks the same keys for an ensemble, so member i of a vmapped
ensemble and a looped run with ``seed=seeds[i]`` see identical randomness.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp

from shared.seeds import derive, name_to_int


def member_key(root_seed: int, *names: str | int, seed: int) -> jax.Array:
    """The key of the run ``seed`` under ``names`` (``derive(root_seed, *names, seed)``)."""
    return derive(root_seed, *names, int(seed))


def member_keys(root_seed: int, *names: str | int, seeds: Sequence[int]) -> jax.Array:
    """``member_key`` for each seed, stacked along a leading axis."""
    return jnp.stack([member_key(root_seed, *names, seed=s) for s in seeds])


def init_key(key: jax.Array) -> jax.Array:
    """The key that initialises a run's parameters."""
    return jax.random.fold_in(key, name_to_int("init"))


def train_key(key: jax.Array) -> jax.Array:
    """The key that drives a run's data order, augmentation and dropout."""
    return jax.random.fold_in(key, name_to_int("train"))
