r"""Function-preserving reparametrisations of rectified networks (Dinh et al., ICML 2017, §4).

Dinh, Pascanu, Bengio, Bengio, "Sharp minima can generalize for deep nets" (ICML 2017).
ReLU is non-negatively homogeneous, φ(αz) = αφ(z) for α > 0, so for consecutive layers
y = W₂ φ(W₁x + b₁) + b₂ the **α-scale transformation** (§4)

    T_α : (W₁, b₁, W₂) ↦ (α W₁, α b₁, α⁻¹ W₂)

leaves the function unchanged while the Hessian blocks transform as
H₁₁ → H₁₁/α², H₂₂ → α² H₂₂, H₁₂ → H₁₂ (differentiate L(αθ₁, θ₂/α) = L(θ₁, θ₂) twice), so
λ_max, the trace and Keskar's full-space ε-sharpness can be made arbitrarily large
(Dinh et al. §3–4). Implemented here on a parameter pytree (an ``nnx.State``
or nested dicts; a layer is the path to a node holding ``kernel`` and optionally ``bias``;
Flax layout, so the output axis of a kernel is the last one and the input axis −2):

- :func:`rescale_layers`: layer-wise scalings α_l of a chain of rectified layers with
  ∏ α_l = 1 (kernel_l ← α_l kernel_l, bias_l ← (∏_{k≤l} α_k) bias_l); :func:`alpha_scale` is
  the two-layer T_α.
- :func:`scale_filters`: per-filter (per-unit) scalings c_j > 0 of one layer's output
  channels, undone on the next layer's matching input channels (kernel₁[..., j] ← c_j kernel₁,
  b₁[j] ← c_j b₁[j], kernel₂[..., j, :] ← kernel₂/c_j; through an NHWC flatten too).
- :func:`scale_before_batchnorm`: per-filter scalings of a layer followed by BatchNorm
  (Li et al. 2018 §4's motivating invariance; Ioffe & Szegedy 2015). In "batch_stats" mode
  BN(c z) = BN(z) up to its ε; in "eval" mode the running mean is scaled by c and the
  running variance by c², again exact up to ε:
  (cz − cμ)/√(c²σ² + ε) vs (z − μ)/√(σ² + ε).

Each is checked by :func:`relative_change` of the outputs (tests: ≤ 1e-5 relative).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

Path = tuple[str | int, ...]


def _name(key: Any) -> str | int:
    for attr in ("key", "idx", "name"):
        if hasattr(key, attr):
            return getattr(key, attr)
    return str(key)


def _names(path: tuple[Any, ...]) -> Path:
    """Key names of a tree path, without an ``nnx.Variable``'s trailing ``.value``."""
    names = tuple(_name(k) for k in path)
    return names[:-1] if names and names[-1] == "value" and type(path[-1]).__name__ == "GetAttrKey" else names


def get_leaf(tree: Any, path: Path) -> jax.Array | None:
    """The leaf at ``path`` (e.g. ``("layers", 0, "kernel")``), or None if there is none."""
    found = [leaf for p, leaf in jax.tree_util.tree_flatten_with_path(tree)[0] if _names(p) == tuple(path)]
    return found[0] if found else None


def update_leaf(tree: Any, path: Path, fn: Callable[[jax.Array], jax.Array]) -> Any:
    """A copy of ``tree`` with ``fn`` applied to the leaf at ``path`` (KeyError if absent)."""
    hits = []

    def leaf(p: tuple[Any, ...], x: jax.Array) -> jax.Array:
        if _names(p) == tuple(path):
            hits.append(p)
            return fn(x)
        return x

    out = jax.tree_util.tree_map_with_path(leaf, tree)
    if not hits:
        raise KeyError(f"no leaf at {path}")
    return out


def _kernel(layer: Path) -> Path:
    return (*layer, "kernel")


def _bias(layer: Path) -> Path:
    return (*layer, "bias")


def _scale_bias(params: Any, layer: Path, factor: Any) -> Any:
    if get_leaf(params, _bias(layer)) is None:
        return params
    return update_leaf(params, _bias(layer), lambda b: b * jnp.asarray(factor, b.dtype))


def _multiply_by(factor: float) -> Callable[[jax.Array], jax.Array]:
    return lambda w: w * jnp.asarray(factor, w.dtype)


def rescale_layers(params: Any, layers: Sequence[Path], alphas: Sequence[float], *, check: bool = True) -> Any:
    """kernel_l ← α_l kernel_l and bias_l ← (∏_{k≤l} α_k) bias_l for a chain of layers (∏ α_l = 1).

    Function-preserving when only positively homogeneous maps (ReLU, max/average pooling,
    flatten; no BatchNorm, no biases added elsewhere) sit between consecutive listed layers
    and the last listed layer's output is not rescaled (∏ α = 1).
    """
    if len(layers) != len(alphas):
        raise ValueError("one alpha per layer")
    if any(a <= 0 for a in alphas):
        raise ValueError("scalings must be positive (ReLU is only positively homogeneous)")
    if check and not np.isclose(float(np.prod(alphas)), 1.0, rtol=1e-12, atol=0):
        raise ValueError(f"the product of the scalings must be 1, got {np.prod(alphas)}")
    cumulative = 1.0
    for layer, alpha in zip(layers, alphas, strict=True):
        cumulative *= float(alpha)
        params = update_leaf(params, _kernel(layer), _multiply_by(alpha))
        params = _scale_bias(params, layer, cumulative)
    return params


def alpha_scale(params: Any, first: Path, second: Path, alpha: float) -> Any:
    """Dinh et al.'s T_α: (W₁, b₁, W₂) ↦ (αW₁, αb₁, W₂/α) for consecutive ReLU layers."""
    return rescale_layers(params, [first, second], [alpha, 1.0 / alpha], check=False)


def _input_scales(kernel: jax.Array, scales: jax.Array) -> jax.Array:
    """``scales`` broadcast to a kernel's input axis (−2), tiled through an NHWC flatten."""
    n_in, c = kernel.shape[-2], scales.shape[0]
    if n_in % c:
        raise ValueError(f"next layer's input size {n_in} is not a multiple of {c} filters")
    tiled = jnp.tile(scales, n_in // c)  # NHWC flatten: channel index runs fastest
    return tiled.reshape((n_in, 1))


def scale_filters(params: Any, first: Path, second: Path, scales: Sequence[float] | jax.Array) -> Any:
    """Per-filter c_j > 0 on ``first``'s outputs, undone on ``second``'s inputs (module docstring)."""
    c = jnp.asarray(scales)
    if bool(jnp.any(c <= 0)):
        raise ValueError("per-filter scalings must be positive")
    params = update_leaf(params, _kernel(first), lambda w: w * c.astype(w.dtype))
    if get_leaf(params, _bias(first)) is not None:
        params = update_leaf(params, _bias(first), lambda b: b * c.astype(b.dtype))
    return update_leaf(params, _kernel(second), lambda w: w / _input_scales(w, c).astype(w.dtype))


def scale_before_batchnorm(
    params: Any, state: Any, layer: Path, norm: Path, scales: Sequence[float] | jax.Array
) -> tuple[Any, Any]:
    """Per-filter c_j > 0 on a layer followed by BatchNorm ``norm``; running mean ×c, variance ×c².

    Returns ``(params, state)``; ``state`` (the non-parameter state holding ``norm``'s
    ``mean``/``var``) may be None for batch-statistics evaluation.
    """
    c = jnp.asarray(scales)
    if bool(jnp.any(c <= 0)):
        raise ValueError("per-filter scalings must be positive")
    params = update_leaf(params, _kernel(layer), lambda w: w * c.astype(w.dtype))
    if get_leaf(params, _bias(layer)) is not None:
        params = update_leaf(params, _bias(layer), lambda b: b * c.astype(b.dtype))
    if state is not None:
        state = update_leaf(state, (*norm, "mean"), lambda m: m * c.astype(m.dtype))
        state = update_leaf(state, (*norm, "var"), lambda v: v * jnp.square(c).astype(v.dtype))
    return params, state


def relative_change(a: jax.Array, b: jax.Array) -> float:
    """max |a − b| / max |a|: how much a reparametrisation changed the outputs."""
    a, b = jnp.asarray(a), jnp.asarray(b)
    return float(jnp.max(jnp.abs(a - b)) / jnp.maximum(jnp.max(jnp.abs(a)), jnp.finfo(a.dtype).tiny))
