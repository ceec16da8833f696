"""Linear networks without biases.

- ``LinearAutoencoder``: Baldi & Hornik (1989), §2: x ↦ A B x with B (p×n) the
  encoder and A (n×p) the decoder. Flax kernels act on row vectors
  (``x @ kernel``), so the encoder kernel is Bᵀ and the decoder kernel is Aᵀ;
  ``ae_params_from_matrices`` / ``ae_matrices`` convert between the two views.
- ``DeepLinear``: Kawaguchi (2016), §2: x ↦ W_H ⋯ W_1 x for widths
  (d_0 = d_x, d_1, …, d_H = d_y); layer k's kernel is W_kᵀ.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx


class LinearAutoencoder(nnx.Module):
    """Baldi & Hornik's linear autoencoder: n → p → n_out (n_out = n by default)."""

    def __init__(
        self, n_in: int, n_hidden: int, n_out: int | None = None, *, rngs: nnx.Rngs,
        param_dtype: Any = jnp.float32,
    ) -> None:
        n_out = n_in if n_out is None else n_out
        self.encoder = nnx.Linear(n_in, n_hidden, use_bias=False, rngs=rngs, param_dtype=param_dtype)
        self.decoder = nnx.Linear(n_hidden, n_out, use_bias=False, rngs=rngs, param_dtype=param_dtype)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.decoder(self.encoder(x))


def params_with_kernels(params: Any, kernels: dict[tuple[str | int, ...], Any]) -> Any:
    """A copy of ``params`` whose linear layers at the given paths hold the weight matrices
    W (the papers' column-vector convention, y = W x). Flax acts on row vectors, so a kernel
    stores Wᵀ; e.g. ``{("layers", 0): W_1, ("layers", 1): W_2}``."""
    out = jax.tree_util.tree_map(lambda v: v, params)
    for path, w in kernels.items():
        node = out
        for key in path:
            node = node[key]
        node["kernel"][...] = jnp.asarray(w).T
    return out


def ae_params_from_matrices(params: Any, A: jax.Array, B: jax.Array) -> Any:
    """Return a copy of the autoencoder's params with decoder A (n×p), encoder B (p×n)."""
    return params_with_kernels(params, {("encoder",): B, ("decoder",): A})


def ae_matrices(params: Any) -> tuple[jax.Array, jax.Array]:
    """(A, B) in the paper's column-vector convention from the autoencoder's params
    (with a leading run axis, each of A and B gets one too)."""
    decoder, encoder = params["decoder"]["kernel"][...], params["encoder"]["kernel"][...]
    return jnp.swapaxes(decoder, -1, -2), jnp.swapaxes(encoder, -1, -2)


class DeepLinear(nnx.Module):
    """Kawaguchi's deep linear network with H = len(widths) - 1 weight matrices, no biases."""

    def __init__(
        self, widths: Sequence[int], *, rngs: nnx.Rngs, param_dtype: Any = jnp.float32
    ) -> None:
        if len(widths) < 2:
            raise ValueError(f"widths needs at least input and output sizes, got {list(widths)}")
        self.layers = nnx.List(
            [
                nnx.Linear(a, b, use_bias=False, rngs=rngs, param_dtype=param_dtype)
                for a, b in zip(widths[:-1], widths[1:], strict=True)
            ]
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        for layer in self.layers:
            x = layer(x)
        return x
