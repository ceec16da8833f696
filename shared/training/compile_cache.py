"""Compiled training programs kept by value, so that equal runs compile once per process.

``fit`` builds its epoch runner, evaluator and state initialiser from the network,
the optimizer, the loss, the augmentation and the shapes of its arguments. Two
runs whose parts are equal (``Network`` compares its NNX graph definitions; a
``StepDecayOptimizer`` its name and momentum; functions by identity) and whose
arguments have the same shapes, dtypes and shardings run the same program, so
the second takes the first one's compiled program instead of compiling its own.
A key holding something unhashable is not cached. JAX's trace-time settings
(x64, PRNG implementation, ...) are part of every key.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any, TypeVar

import jax

T = TypeVar("T")


def trace_settings() -> Hashable:
    """JAX's settings that change what a traced function computes (x64, PRNG, matmul precision, ...)."""
    from jax._src import config as jax_config

    return jax_config.trace_context()


def abstract_signature(tree: Any) -> Hashable:
    """Tree structure and each leaf's type (shape, dtype, weak type) and sharding."""
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    return treedef, tuple((jax.typeof(leaf), getattr(leaf, "sharding", None)) for leaf in leaves)


class CompileCache:
    """A least-recently-used map from value keys to built programs."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.entries: OrderedDict[Hashable, Any] = OrderedDict()
        self.hits = self.misses = 0

    def get(self, key: Hashable, build: Callable[[], T]) -> T:
        """The program stored under ``key``, else ``build()`` (stored when ``key`` hashes)."""
        full = (key, trace_settings())
        try:
            found = full in self.entries
        except TypeError:  # something in the key is unhashable: build, do not cache
            self.misses += 1
            return build()
        if found:
            self.hits += 1
            self.entries.move_to_end(full)
            return self.entries[full]  # type: ignore[no-any-return]
        self.misses += 1
        value = build()
        self.entries[full] = value
        while len(self.entries) > self.size:
            self.entries.popitem(last=False)
        return value

    def clear(self) -> None:
        self.entries.clear()
        self.hits = self.misses = 0


RUNNERS = CompileCache(16)  # compiled epoch runners (``loops.build_epoch_runner``)
EVALUATORS = CompileCache(16)  # jitted evaluators (``evaluate.make_evaluator``)
INITIALISERS = CompileCache(16)  # jitted optimizer-state initialisers (``engine.fit``)


def clear_all() -> None:
    """Forget every kept program (tests)."""
    for cache in (RUNNERS, EVALUATORS, INITIALISERS):
        cache.clear()
