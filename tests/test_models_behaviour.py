"""Behaviour of the models: shortcuts, BatchNorm modes, dropout keys, dtypes."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from shared.models import registry
from shared.models.mlp import MLP
from shared.models.resnet import BasicBlock, CifarResNet
from shared.training.network import init_network


def _zero_residual(block: BasicBlock) -> None:
    block.bn2.scale[...] = jnp.zeros_like(block.bn2.scale[...])
    block.bn2.bias[...] = jnp.zeros_like(block.bn2.bias[...])


@pytest.mark.parametrize("shortcut", ["A", "B"])
def test_zeroed_residual_branch_is_identity_with_shortcut(shortcut: str) -> None:
    block = BasicBlock(8, 8, 1, shortcut=shortcut, rngs=nnx.Rngs(0))  # type: ignore[arg-type]
    _zero_residual(block)
    block.eval()
    x = jax.nn.relu(jax.random.normal(jax.random.key(1), (2, 6, 6, 8)))  # post-ReLU input
    np.testing.assert_array_equal(np.asarray(block(x)), np.asarray(x))


def test_zeroed_residual_branch_is_zero_without_shortcut() -> None:
    block = BasicBlock(8, 8, 1, shortcut="none", rngs=nnx.Rngs(0))
    _zero_residual(block)
    block.eval()
    x = jax.nn.relu(jax.random.normal(jax.random.key(1), (2, 6, 6, 8)))
    np.testing.assert_array_equal(np.asarray(block(x)), 0.0)


def test_noshort_network_has_no_residual_path() -> None:
    short = nnx.eval_shape(lambda: CifarResNet(8, rngs=nnx.Rngs(0), shortcut="B"))
    noshort = nnx.eval_shape(lambda: CifarResNet(8, rngs=nnx.Rngs(0), shortcut="none"))
    assert all(b.shortcut == "none" and b.proj_conv is None for b in noshort.blocks)
    assert any(b.proj_conv is not None for b in short.blocks)  # option B projections
    block = nnx.eval_shape(lambda: BasicBlock(4, 4, 1, shortcut="none", rngs=nnx.Rngs(0)))
    assert block.skip(jnp.ones((1, 2, 2, 4))) is None
    # Option A's stage-changing shortcut subsamples and zero-pads channels.
    a_block = nnx.eval_shape(lambda: BasicBlock(4, 8, 2, shortcut="A", rngs=nnx.Rngs(0)))
    x = jnp.arange(2 * 4 * 4 * 4, dtype=jnp.float32).reshape(2, 4, 4, 4)
    skip = a_block.skip(x)
    assert skip is not None and skip.shape == (2, 2, 2, 8)
    np.testing.assert_array_equal(np.asarray(skip[..., 2:6]), np.asarray(x[:, ::2, ::2, :]))
    np.testing.assert_array_equal(np.asarray(skip[..., :2]), 0.0)


def test_batchnorm_modes_and_state_updates() -> None:
    net, params, state = init_network(
        lambda r: MLP((5, 8, 8, 3), batch_norm=True, dropout=0.5, rngs=r), jax.random.key(0)
    )
    x = jax.random.normal(jax.random.key(1), (16, 5)) * 3.0 + 1.0
    key = jax.random.key(2)
    out_train, new_state = net.apply(params, state, x, mode="train", key=key)
    out_eval, same_state = net.apply(params, state, x, mode="eval", key=key)
    out_bs, bs_state = net.apply(params, state, x, mode="batch_stats", key=key)
    assert same_state is state and bs_state is state
    assert not np.allclose(np.asarray(out_train), np.asarray(out_bs))  # dropout only in train
    assert not np.allclose(np.asarray(out_bs), np.asarray(out_eval))  # batch vs running stats
    changed = jax.tree_util.tree_map(lambda a, b: not np.array_equal(np.asarray(a), np.asarray(b)), new_state, state)
    assert all(jax.tree_util.tree_leaves(changed))  # every running statistic moved
    # batch_stats mode normalises with the batch's own statistics: the hidden
    # pre-activations after BN have zero mean over the batch.
    model = net.model(params, state, mode="batch_stats")
    h = model.norms[0](model.layers[0](x))
    np.testing.assert_allclose(np.asarray(h.mean(0)), np.asarray(params["norms"][0]["bias"][...]), atol=1e-5)


def test_nnx_train_eval_switch_on_the_module() -> None:
    model = nnx.eval_shape(lambda: registry.build("keskar_c1", rngs=nnx.Rngs(0), image_size=8))
    assert model.fc1.bn.use_running_average is False and not model.fc1.dropout.deterministic
    model.eval()
    assert model.fc1.bn.use_running_average is True and model.fc1.dropout.deterministic
    model.train()
    assert model.conv1.bn.use_running_average is False


def test_dropout_depends_only_on_the_call_key() -> None:
    model = MLP((6, 32, 32, 3), dropout=0.5, rngs=nnx.Rngs(0))
    x = jnp.ones((4, 6))
    a, b = model(x, rngs=jax.random.key(3)), model(x, rngs=jax.random.key(3))
    c = model(x, rngs=jax.random.key(4))
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert not np.allclose(np.asarray(a), np.asarray(c))


@pytest.mark.x64
def test_float64_params_give_float64_outputs_and_statistics() -> None:
    model = MLP((3, 4, 2), batch_norm=True, rngs=nnx.Rngs(0), param_dtype=jnp.float64)
    out = model(jnp.ones((2, 3), jnp.float64))
    assert out.dtype == jnp.float64
    assert model.norms[0].mean[...].dtype == jnp.float64  # running stats updated in float64
    resnet = nnx.eval_shape(lambda: CifarResNet(8, rngs=nnx.Rngs(0), param_dtype=jnp.float64))
    leaves = jax.tree_util.tree_leaves(nnx.state(resnet))
    assert all(leaf.dtype == jnp.float64 for leaf in leaves)


def test_dinh_alpha_scaling_is_an_observational_equivalence() -> None:
    model = registry.build("dinh_relu", rngs=nnx.Rngs(0), n_in=5, n_hidden=7, num_classes=3)
    x = jax.random.normal(jax.random.key(2), (4, 5))
    before = model(x)
    model.layers[0].kernel[...] = model.layers[0].kernel[...] * 10.0
    model.layers[1].kernel[...] = model.layers[1].kernel[...] / 10.0
    np.testing.assert_allclose(np.asarray(model(x)), np.asarray(before), rtol=1e-5, atol=1e-6)
