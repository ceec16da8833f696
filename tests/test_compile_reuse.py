"""Networks of one architecture share compiled curvature programs, and each gets its own answer.

``shared.landscape.from_model`` objectives of two networks with the same graph but other weights
and other BatchNorm running statistics: the second network's Hessian-vector product, Lanczos
run and full-batch loss and gradient compile nothing new (every array, the statistics included,
is a traced argument), and each result matches that network's dense Hessian / gradient, so code
that kept the first network's statistics as a stale constant would fail.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.flatten_util import ravel_pytree

from shared.curvature import apply, lanczos_eigs
from shared.curvature.hvp import full_gradient, full_loss
from shared.landscape import Objective, from_model
from shared.models.mlp import MLP
from shared.sharpness import hessian_of
from tests.helpers import jax_compile_messages

WIDTHS = (4, 6, 5, 3)
MISS_MARKERS = ("Finished jaxpr to MLIR module conversion", "Finished XLA compilation")


@contextlib.contextmanager
def compile_log() -> Iterator[list[str]]:
    """The lowerings and compilations inside the block (persistent-cache hits still lower); filled
    when the block ends."""
    misses: list[str] = []
    with jax_compile_messages() as messages:
        yield misses
    misses.extend(m for m in messages if m.startswith(MISS_MARKERS))


def _set_statistics(model: MLP, seed: int) -> MLP:
    """Seeded running statistics: means in [−0.5, 0.5], variances in [0.5, 2]."""
    rng = np.random.default_rng(seed)
    for _, node in nnx.iter_graph(model):
        if isinstance(node, nnx.BatchNorm):
            node.mean[...] = jnp.asarray(rng.uniform(-0.5, 0.5, node.mean.shape), node.mean.dtype)
            node.var[...] = jnp.asarray(rng.uniform(0.5, 2.0, node.var.shape), node.var.dtype)
    return model


def _network(seed: int) -> MLP:
    """The tiny BatchNorm MLP with seeded weights and seeded running statistics."""
    return _set_statistics(MLP(WIDTHS, batch_norm=True, rngs=nnx.Rngs(seed)), seed)


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    return rng.normal(size=(23, WIDTHS[0])).astype(np.float32), rng.integers(0, WIDTHS[-1], size=23)


def _curvature(model: MLP, data: tuple[np.ndarray, np.ndarray]) -> tuple[dict[str, np.ndarray], list[str]]:
    """(λ_max, H v, L, ∇L by the curvature code; the compile log of those calls) in eval mode."""
    obj, params = from_model(model, data, bn_mode="eval", batch_size=12)  # a batch + a remainder of 11
    flat, _ = ravel_pytree(params)
    v = jnp.linspace(-1.0, 1.0, flat.size, dtype=flat.dtype)
    with compile_log() as log:
        op = hessian_of(obj, params)
        out = {
            "hv": apply(op, v),
            "lambda_max": lanczos_eigs(op, jax.random.key(0), k=1, num_steps=op.size).top.eigenvalues[0],
            "loss": full_loss(obj.batch_loss, params, obj.data, reduction="mean"),
            "grad": full_gradient(obj.batch_loss, params, obj.data, reduction="mean"),
        }
        out = {k: np.asarray(a) for k, a in out.items()}
    return out, list(log)


@jax.jit
def _dense(obj: Objective, params: Any) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(L, ∇L, ∇²L) of the objective's own L(θ) by ``jax.hessian`` (no curvature code)."""
    flat, unravel = ravel_pytree(params)
    f = lambda w: obj(unravel(w))
    return f(flat), jax.grad(f)(flat), jax.hessian(f)(flat)


def _reference(model: MLP, data: tuple[np.ndarray, np.ndarray]) -> dict[str, np.ndarray]:
    """The same quantities from the dense Hessian of the full-batch loss."""
    obj, params = from_model(model, data, bn_mode="eval")
    loss, grad, hess = (np.asarray(a, np.float64) for a in _dense(obj, params))
    v = np.linspace(-1.0, 1.0, hess.shape[0])
    return {"hv": hess @ v, "lambda_max": np.linalg.eigvalsh(hess)[-1], "loss": loss, "grad": grad}


def _assert_matches(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> None:
    scale = float(np.abs(want["hv"]).max())
    np.testing.assert_allclose(got["hv"], want["hv"], rtol=1e-4, atol=1e-4 * scale)
    np.testing.assert_allclose(got["lambda_max"], want["lambda_max"], rtol=1e-4)
    np.testing.assert_allclose(got["loss"], want["loss"], rtol=1e-5)
    np.testing.assert_allclose(got["grad"], want["grad"], rtol=1e-4, atol=1e-5 * float(np.abs(want["grad"]).max()))


def test_two_networks_of_one_architecture_share_the_compiled_curvature_programs(data):
    first, second = _network(1), _network(2)
    got1, _ = _curvature(first, data)  # compiles
    got2, log = _curvature(second, data)
    assert log == [], f"the second network compiled anew: {log}"
    want1, want2 = _reference(first, data), _reference(second, data)
    _assert_matches(got1, want1)
    _assert_matches(got2, want2)
    # the networks differ enough that the first one's weights or statistics would fail the check
    assert abs(want1["lambda_max"] - want2["lambda_max"]) > 1e-2 * abs(want2["lambda_max"])
    assert np.abs(want1["hv"] - want2["hv"]).max() > 1e-2 * np.abs(want2["hv"]).max()


def test_new_batchnorm_statistics_alone_reuse_the_programs_and_change_the_hessian(data):
    model = _network(3)
    got1, _ = _curvature(model, data)
    want1 = _reference(model, data)
    _set_statistics(model, 4)  # same weights, other statistics
    got2, log = _curvature(model, data)
    assert log == [], f"new statistics compiled anew: {log}"
    want2 = _reference(model, data)
    _assert_matches(got2, want2)
    assert np.abs(want1["hv"] - want2["hv"]).max() > 1e-2 * np.abs(want2["hv"]).max()
    assert not np.allclose(got1["hv"], got2["hv"], rtol=1e-3)
