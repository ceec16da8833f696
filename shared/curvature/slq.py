r"""Spectral density by stochastic Lanczos quadrature (Ghorbani, Krishnan & Xiao 2019).

The spectral density of a symmetric A ∈ Rⁿˣⁿ is φ(t) = (1/n) Σᵢ δ(t − λᵢ). For a unit probe
v, vᵀ f(A) v = Σᵢ (vᵀuᵢ)² f(λᵢ) is a Stieltjes integral against the spectral measure of v,
and m Lanczos steps from v give its m-point Gauss quadrature (Golub & Welsch 1969; Golub &
Meurant, *Matrices, Moments and Quadrature with Applications*, 2010):

    vᵀ f(A) v ≈ Σ_{j=1}^m w_j f(θ_j),   θ_j = eigenvalues of T,  w_j = (e₁ᵀ s_j)²,

exact for polynomials f of degree ≤ 2m − 1, with Σ_j w_j = 1. Probes with E[vvᵀ] = I/n
(normalised Rademacher z/√n, or Gaussian z/‖z‖) make the quadrature an unbiased estimate of
(1/n) tr f(A). Averaging over n_v independent draws and smoothing each node with a
Gaussian gives Ghorbani et al.'s estimator (§2 and the appendix of "An Investigation into
Neural Net Optimization via Hessian Eigenvalue Density", ICML 2019):

    φ_σ(t) = (1/n_v) Σ_{l=1}^{n_v} Σ_{j=1}^m w_j^{(l)} N(t; θ_j^{(l)}, σ²),

a mixture of Gaussians with total weight 1, so it integrates to one when the grid covers
every node by several σ (``SpectralDensity.mass`` reports the numerical integral). The
default σ follows their reference code: σ² = 10⁻⁵ · max(1, θ_max − θ_min).

With several devices (``shared.parallel``) the independent draws are split across them (each
Lanczos run stays on one device: its steps are sequential); the draws' keys are the same as
on one device, so every device runs the same draws it would have run there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cache, partial
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec as P

from shared.curvature.chunking import SAFETY, matvec_footprint_bytes, memory_budget_bytes, one_vector_per_call
from shared.curvature.failures import require_finite
from shared.curvature.lanczos import (
    LanczosDecomposition,
    Loop,
    check_steps,
    resolve_loop,
    ritz_pairs,
    run_fori,
    run_host_loop,
)
from shared.curvature.operators import Operator
from shared.parallel import device_mesh, pad_leading, padded_length, replicate, shard_leading, unpad_leading

Probe = Literal["rademacher", "gaussian"]


def probe_vector(key: jax.Array, size: int, dtype: jnp.dtype, kind: Probe) -> jax.Array:
    """A unit probe with E[vvᵀ] = I/n: Rademacher z/√n or Gaussian z/‖z‖."""
    if kind == "rademacher":
        return jax.random.rademacher(key, (size,), dtype) / jnp.sqrt(jnp.asarray(size, dtype))
    if kind == "gaussian":
        z = jax.random.normal(key, (size,), dtype)
        return z / jnp.linalg.norm(z)
    raise ValueError(f"probe must be 'rademacher' or 'gaussian', got {kind!r}")


@partial(
    jax.tree_util.register_dataclass,
    data_fields=["nodes", "weights", "grid", "density", "sigma", "alphas", "betas"],
    meta_fields=["num_matvecs"],
)
@dataclass(frozen=True)
class SpectralDensity:
    """SLQ output: per-draw quadrature rules and the smoothed density φ_σ on ``grid``.

    ``nodes`` and ``weights`` are [n_v, m] (nodes ascending per draw, weights summing to 1);
    ``alphas``/``betas`` are the per-draw tridiagonal matrices.
    """

    nodes: jax.Array
    weights: jax.Array
    grid: jax.Array
    density: jax.Array
    sigma: jax.Array
    alphas: jax.Array
    betas: jax.Array
    num_matvecs: int = field(default=0)

    def moment(self, k: int) -> tuple[jax.Array, jax.Array]:
        """Estimate of (1/n) tr(Aᵏ) and its standard error over draws.

        Each draw gives Σ_j w_j θ_jᵏ = vᵀAᵏv exactly for k ≤ 2m − 1 (Gauss quadrature).
        """
        per_draw = jnp.sum(self.weights * self.nodes**k, axis=-1)
        num_draws = per_draw.shape[0]
        stderr = (
            jnp.std(per_draw, ddof=1) / math.sqrt(num_draws)
            if num_draws > 1
            else jnp.full((), jnp.nan, per_draw.dtype)
        )
        return jnp.mean(per_draw), stderr

    @property
    def mass(self) -> jax.Array:
        """Trapezoid integral of the density over the grid (≈ 1)."""
        return jnp.trapezoid(self.density, self.grid)


def gaussian_density(
    nodes: jax.Array, weights: jax.Array, grid: jax.Array, sigma: float | jax.Array
) -> jax.Array:
    """φ_σ(t) = mean over draws of Σ_j w_j N(t; θ_j, σ²) at every grid point t.

    ``nodes`` and ``weights`` are [n_v, m]; the grid is processed in chunks of 1024 points.
    """
    nodes, weights = nodes.reshape(-1), weights.reshape(-1) / nodes.shape[0]
    norm = 1.0 / (sigma * math.sqrt(2 * math.pi))

    def at(t: jax.Array) -> jax.Array:
        return norm * jnp.sum(weights * jnp.exp(-0.5 * ((t - nodes) / sigma) ** 2))

    return jax.lax.map(at, grid, batch_size=min(1024, grid.shape[0]))


def default_sigma(nodes: jax.Array) -> jax.Array:
    """σ with σ² = 10⁻⁵ · max(1, θ_max − θ_min) (Ghorbani et al.'s reference code)."""
    width = jnp.max(nodes) - jnp.min(nodes)
    return jnp.sqrt(1e-5 * jnp.maximum(1.0, width))


def _draw(op: Operator, key: jax.Array, probe: Probe) -> tuple[jax.Array, jax.Array]:
    """(restart key, unit probe v₀) of one draw; the same in both loop modes."""
    probe_key, restart_key = jax.random.split(key)
    return restart_key, probe_vector(probe_key, op.size, op.dtype, probe)


def _rules(decomp: LanczosDecomposition) -> tuple[jax.Array, ...]:
    theta, s, _ = ritz_pairs(decomp)
    return theta, s[..., 0, :] ** 2, decomp.alphas, decomp.betas


def auto_draws_batch(op: Operator, num_steps: int, num_draws: int, budget_bytes: int | None = None) -> int:
    """Draws per vmapped chunk within the memory budget: each holds an [m, n] Lanczos basis and
    one matvec's working memory (``chunking.SAFETY`` × ``matvec_footprint_bytes``)."""
    budget = memory_budget_bytes() if budget_bytes is None else budget_bytes
    per_draw = SAFETY * matvec_footprint_bytes(op) + (num_steps + 2) * op.size * np.dtype(op.dtype).itemsize
    return int(max(1, min(num_draws, budget // max(per_draw, 1.0))))


def default_draws_batch(op: Operator, num_steps: int, num_draws: int) -> int:
    """Draws per call when the caller names none: 1 for a convolutional operator on a CPU, where
    vmapped matvecs run convolutions slower per vector (``shared.curvature.chunking``), else
    :func:`auto_draws_batch`."""
    if one_vector_per_call(op):
        return 1
    return auto_draws_batch(op, num_steps, num_draws)


@partial(jax.jit, static_argnames=("num_steps", "num_draws", "probe", "draws_batch_size"))
def _rules_fori(
    op: Operator, key: jax.Array, num_steps: int, num_draws: int, probe: Probe,
    draws_batch_size: int | None,
) -> tuple[jax.Array, ...]:
    def one_draw(k: jax.Array) -> tuple[jax.Array, ...]:
        restart_key, v0 = _draw(op, k, probe)
        return _rules(run_fori(op, restart_key, v0, num_steps))

    keys = jax.random.split(key, num_draws)
    batch = num_draws if draws_batch_size is None else draws_batch_size
    return jax.lax.map(one_draw, keys, batch_size=batch)


@cache
def _rules_fori_sharded(mesh: Any, num_steps: int, probe: Probe, batch: int) -> Any:
    """``(op, keys[D·k]) -> rules``: ``_rules_fori``'s ``lax.map`` over each device's k draws
    (``batch`` at a time) under ``shard_map`` on the 1D ``mesh``."""

    def local(op: Operator, keys: jax.Array) -> tuple[jax.Array, ...]:
        def one_draw(k: jax.Array) -> tuple[jax.Array, ...]:
            restart_key, v0 = _draw(op, k, probe)
            return _rules(run_fori(op, restart_key, v0, num_steps))

        return jax.lax.map(one_draw, keys, batch_size=min(batch, keys.shape[0]))

    (axis,) = mesh.axis_names
    return jax.jit(jax.shard_map(local, mesh=mesh, in_specs=(P(), P(axis)), out_specs=P(axis), check_vma=False))


_draws_jit = jax.jit(jax.vmap(_draw, in_axes=(None, 0, None)), static_argnums=(2,))
_draw_jit = jax.jit(_draw, static_argnums=(2,))
_rules_jit = jax.jit(_rules)


def quadrature_rules(
    op: Operator,
    key: jax.Array,
    *,
    num_steps: int,
    num_draws: int,
    probe: Probe = "rademacher",
    draws_batch_size: int | None = None,
    loop: Loop = "auto",
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """(nodes, weights, alphas, betas), each [n_v, m], of ``num_draws`` Lanczos quadratures.

    Draws run under ``vmap`` (HVPs then share their primal passes; memory n_v·m·n), in
    chunks of ``draws_batch_size``; ``None`` sizes the chunk from the memory budget of
    ``shared.curvature.chunking`` (one draw: its [m, n] basis plus a matvec's footprint),
    never all draws at once by default, and one draw at a time, unvmapped, for a
    convolutional operator on a CPU (:func:`default_draws_batch`). ``loop`` as in :func:`lanczos`; both loops draw the
    same probes from ``key``.
    """
    loop = resolve_loop(loop, op)
    mesh = device_mesh()
    if draws_batch_size is None:  # the budget is per device
        draws_batch_size = min(num_draws, mesh.size * default_draws_batch(op, num_steps, num_draws))
    check_steps(op, num_steps, loop)
    if mesh.size > 1:
        return _rules_sharded(op, key, num_steps, num_draws, probe, draws_batch_size, loop, mesh)
    if loop == "fori":
        return _rules_fori(op, key, num_steps, num_draws, probe, draws_batch_size)
    keys = jax.random.split(key, num_draws)
    batch = num_draws if draws_batch_size is None else draws_batch_size
    chunks = []
    for start in range(0, num_draws, batch):
        if batch == 1:  # one draw per call: no vmap over the matvec (``default_draws_batch``)
            restart_key, v0 = _draw_jit(op, keys[start], probe)
            rules = _rules_jit(run_host_loop(op, restart_key, v0, num_steps))
            chunks.append(tuple(r[None] for r in rules))
            continue
        restart_keys, v0s = _draws_jit(op, keys[start : start + batch], probe)
        chunks.append(_rules_jit(run_host_loop(op, restart_keys, v0s, num_steps, batched=True)))
    return tuple(jnp.concatenate(parts) for parts in zip(*chunks, strict=True))  # type: ignore[return-value]


def _rules_sharded(
    op: Operator, key: jax.Array, num_steps: int, num_draws: int, probe: Probe, batch: int, loop: str, mesh: Any
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """:func:`quadrature_rules` with the draws split across the devices of ``mesh``: ``batch``
    draws at a time in all (rounded up to a multiple of D, ``batch``/D per device), the same
    keys as on one device."""
    op = replicate(op, mesh)
    keys = jax.random.split(key, num_draws)
    batch = padded_length(batch, mesh.size)  # whole rows per device: only the last chunk is padded
    if loop == "fori":
        padded, rows = pad_leading(keys, mesh.size)
        program = _rules_fori_sharded(mesh, num_steps, probe, batch // mesh.size)
        return unpad_leading(program(op, shard_leading(padded, mesh)), rows)  # type: ignore[no-any-return]
    chunks = []
    for start in range(0, num_draws, batch):
        padded, rows = pad_leading(keys[start : start + batch], mesh.size)
        restart_keys, v0s = _draws_jit(op, shard_leading(padded, mesh), probe)
        rules = _rules_jit(run_host_loop(op, restart_keys, v0s, num_steps, batched=True))
        chunks.append(unpad_leading(rules, rows))
    return tuple(jnp.concatenate(parts) for parts in zip(*chunks, strict=True))  # type: ignore[return-value]


def slq(
    op: Operator,
    key: jax.Array,
    *,
    num_steps: int,
    num_draws: int,
    probe: Probe = "rademacher",
    sigma: float | None = None,
    grid: jax.Array | None = None,
    num_grid: int | None = None,
    draws_batch_size: int | None = None,
    loop: Loop = "auto",
) -> SpectralDensity:
    """Stochastic Lanczos quadrature density φ_σ (module docstring); n_v·m matvecs.

    ``grid`` defaults to [θ_min − 6σ, θ_max + 6σ] with spacing σ/4 (``num_grid`` points if
    given), so the density integrates to one up to rounding.
    """
    nodes, weights, alphas, betas = quadrature_rules(
        op, key, num_steps=num_steps, num_draws=num_draws, probe=probe,
        draws_batch_size=draws_batch_size, loop=loop,
    )
    require_finite("SLQ", nodes, weights)
    s = default_sigma(nodes) if sigma is None else jnp.asarray(sigma, nodes.dtype)
    if grid is None:
        lo, hi = jnp.min(nodes) - 6 * s, jnp.max(nodes) + 6 * s
        if num_grid is None:
            num_grid = int(min(max(1000, math.ceil(float((hi - lo) / (s / 4))) + 1), 200_000))
        grid = jnp.linspace(lo, hi, num_grid, dtype=nodes.dtype)
    density = jax.jit(gaussian_density)(nodes, weights, grid, s)
    return SpectralDensity(nodes, weights, grid, density, s, alphas, betas, num_steps * num_draws)
