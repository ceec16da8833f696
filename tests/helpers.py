"""Small models and matrices shared by several test files (fixtures live in conftest.py)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx


class TinyMLP(nnx.Module):
    """Dense layers of the given sizes, tanh between them, linear output; float64 by default.

    ``TinyMLP([d_in, d_out])`` is a linear model. Parameters are ``{"layers": {0: ..., 1: ...}}``,
    so ``ravel_pytree`` orders them layer by layer, bias before kernel.
    """

    def __init__(self, sizes: Sequence[int], *, rngs: nnx.Rngs, dtype: jnp.dtype = jnp.float64) -> None:
        pairs = zip(sizes[:-1], sizes[1:], strict=True)
        self.layers = nnx.List([nnx.Linear(a, b, rngs=rngs, param_dtype=dtype) for a, b in pairs])

    def __call__(self, x: jax.Array) -> jax.Array:
        for layer in self.layers[:-1]:
            x = jnp.tanh(layer(x))
        return self.layers[-1](x)


def wishart(n: int = 150, m: int = 300, seed: int = 0) -> np.ndarray:
    """XᵀX / m for a standard normal m×n matrix X: an n×n positive definite test matrix."""
    x = np.random.default_rng(seed).normal(size=(m, n))
    return x.T @ x / m


def claims_by_id(module_path: Path) -> dict[str, Any]:
    """A module's declared claims (its ``claims.yaml``), keyed by claim id."""
    from shared.claims import load_claims

    return {c["id"]: c for c in load_claims(module_path / "claims.yaml")["claims"]}


class _Messages(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@contextlib.contextmanager
def jax_compile_messages() -> Iterator[list[str]]:
    """JAX's log lines inside the block with ``jax_log_compiles`` on (lowerings, compilations)."""
    handler, logger = _Messages(), logging.getLogger("jax")
    logger.addHandler(handler)
    try:
        with jax.log_compiles(True):
            yield handler.messages
    finally:
        logger.removeHandler(handler)
