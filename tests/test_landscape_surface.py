"""Lines and planes of the loss: chunked = point by point, resume after a kill, and the property
filter normalisation exists for (Li et al. §4): a function-preserving rescaling of filters
leaves the filter-normalised surface unchanged."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
from flax import nnx

from shared.landscape import directions, surface
from shared.models.mlp import MLP
from shared.sharpness.reparametrize import relative_change, rescale_layers, scale_before_batchnorm

ROOT = Path(__file__).resolve().parent.parent
ALPHAS = np.linspace(-1.0, 1.0, 5)
BETAS = np.linspace(-0.5, 0.5, 3)

pytestmark = pytest.mark.x64


def _data(n=40, d=5, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)), rng.integers(0, classes, size=n)


@pytest.fixture(scope="module")
def relu_problem():
    model = MLP((5, 8, 6, 3), rngs=nnx.Rngs(0), param_dtype=jnp.float64)
    obj, params = surface.from_model(model, _data(), batch_size=16)  # 2 batches + remainder 8
    d1 = directions.random_direction(params, jax.random.key(1))
    d2 = directions.random_direction(params, jax.random.key(2))
    return obj, params, d1, d2


def test_objective_records_its_mode_and_matches_a_direct_computation(relu_problem):
    obj, params, _, _ = relu_problem
    assert obj.bn_mode == "none" and obj.split == "train" and obj.num_examples == 40
    x, y = _data()
    model = MLP((5, 8, 6, 3), rngs=nnx.Rngs(0), param_dtype=jnp.float64)
    logits = model(jnp.asarray(x))
    expected = -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(40), y])
    loss, acc = obj.metrics(params)
    np.testing.assert_allclose(loss, expected, rtol=1e-12)
    assert float(acc) == pytest.approx(float(np.mean(np.argmax(np.asarray(logits), -1) == y)), abs=1e-12)
    np.testing.assert_allclose(obj(params), expected, rtol=1e-12)


def test_plane_in_chunks_equals_point_by_point(relu_problem):
    obj, params, d1, d2 = relu_problem
    result = surface.plane(obj, params, d1, d2, ALPHAS, BETAS, chunk_size=4)
    table = result.table
    assert list(table.columns) == ["alpha", "beta", "loss", "accuracy"]
    assert len(table) == 15 and result.chunks_total == 4 and result.chunks_computed == 4
    metrics = jax.jit(lambda o, p: o.metrics(p))
    for row in table.itertuples():
        p = jax.tree_util.tree_map(lambda w, a, b, r=row: w + r.alpha * a + r.beta * b, params, d1, d2)
        loss, acc = metrics(obj, p)
        assert row.loss == pytest.approx(float(loss), rel=1e-12)
        assert row.accuracy == pytest.approx(float(acc), abs=1e-12)
    # vmap over several points at a time gives the same numbers
    again = surface.plane(obj, params, d1, d2, ALPHAS, BETAS, chunk_size=7, vmap_size=3).table  # 7, 7, 1: remainders
    np.testing.assert_allclose(again["loss"], table["loss"], rtol=1e-12)


def test_killed_plane_resumes_to_the_same_table(relu_problem, tmp_path):
    obj, params, d1, d2 = relu_problem
    fresh = surface.plane(obj, params, d1, d2, ALPHAS, BETAS, chunk_size=4, workdir=tmp_path / "fresh").table

    class Killed(Exception):
        pass

    def kill_after_two(i, n, reused):
        if i == 1:
            raise Killed

    work = tmp_path / "killed"
    with pytest.raises(Killed):
        surface.plane(obj, params, d1, d2, ALPHAS, BETAS, chunk_size=4, workdir=work, on_chunk=kill_after_two)
    assert len(list(work.glob("plane.*.csv"))) == 2
    resumed = surface.plane(obj, params, d1, d2, ALPHAS, BETAS, chunk_size=4, workdir=work)
    assert resumed.chunks_computed == 2 and resumed.chunks_total == 4
    pd.testing.assert_frame_equal(resumed.table, fresh)
    # in-memory evaluation gives the same numbers as the CSV round trip
    memory = surface.plane(obj, params, d1, d2, ALPHAS, BETAS, chunk_size=4).table
    pd.testing.assert_frame_equal(memory, fresh)
    # a different direction does not reuse the chunks
    other = surface.plane(obj, params, d2, d1, ALPHAS, BETAS, chunk_size=4, workdir=work)
    assert other.chunks_computed == 4


def test_filter_normalised_surface_is_invariant_to_relu_rescaling(relu_problem):
    """Layer-wise scalings (3, 1/4, 4/3) of a ReLU chain multiply every filter of a layer by its
    factor and leave the function unchanged; the filter-normalised surface must not move."""
    obj, params, _, _ = relu_problem
    layers = [("layers", 0), ("layers", 1), ("layers", 2)]
    scaled = rescale_layers(params, layers, [3.0, 0.25, 4.0 / 3.0])
    x = obj.data.stacked[0][0]
    assert relative_change(obj.forward.value(params, obj.state, x), obj.forward.value(scaled, obj.state, x)) < 1e-12

    def surfaces(norm):
        out = []
        for p in (params, scaled):
            d1 = directions.random_direction(p, jax.random.key(1), norm=norm)
            d2 = directions.random_direction(p, jax.random.key(2), norm=norm)
            out.append(surface.plane(obj, p, d1, d2, ALPHAS, BETAS, chunk_size=15).table)
        return out

    before, after = surfaces("filter")
    np.testing.assert_allclose(after["loss"], before["loss"], rtol=1e-10)
    np.testing.assert_array_equal(after["accuracy"], before["accuracy"])
    raw_before, raw_after = surfaces("none")  # what normalisation protects against
    assert np.max(np.abs(raw_after["loss"] - raw_before["loss"])) > 1e-2


class LinearBN(nnx.Module):
    """dense-8 → BatchNorm (ε = 1e-12) → ReLU → dense-3."""

    def __init__(self, *, rngs: nnx.Rngs) -> None:
        self.dense = nnx.Linear(5, 8, rngs=rngs, param_dtype=jnp.float64)
        self.bn = nnx.BatchNorm(8, epsilon=1e-12, rngs=rngs, param_dtype=jnp.float64)
        self.bn.mean = nnx.BatchStat(jnp.linspace(-0.5, 0.5, 8))
        self.bn.var = nnx.BatchStat(jnp.linspace(0.5, 2.0, 8))
        self.head = nnx.Linear(8, 3, rngs=rngs, param_dtype=jnp.float64)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.head(jax.nn.relu(self.bn(self.dense(x))))


@pytest.mark.parametrize("bn_mode", ["eval", "batch_stats"])
def test_filter_normalised_surface_is_invariant_to_per_filter_scaling_before_batchnorm(bn_mode):
    obj, params = surface.from_model(LinearBN(rngs=nnx.Rngs(3)), _data(), bn_mode=bn_mode, batch_size=20)
    assert obj.bn_mode == bn_mode
    scales = jnp.asarray(np.random.default_rng(4).uniform(0.2, 5.0, size=8))
    new_params, new_state = scale_before_batchnorm(params, obj.state, ("dense",), ("bn",), scales)
    scaled_obj = dataclasses.replace(obj, state=new_state)
    x = obj.data.stacked[0][0]
    change = relative_change(obj.forward.value(params, obj.state, x),
                             scaled_obj.forward.value(new_params, new_state, x))
    assert change < 1e-10
    tables = []
    for o, p in ((obj, params), (scaled_obj, new_params)):
        d1 = directions.random_direction(p, jax.random.key(5))
        d2 = directions.random_direction(p, jax.random.key(6))
        tables.append(surface.plane(o, p, d1, d2, ALPHAS, BETAS, chunk_size=15).table)
    np.testing.assert_allclose(tables[1]["loss"], tables[0]["loss"], rtol=1e-9)


def test_line_and_interpolation(relu_problem):
    obj, params, d1, _ = relu_problem
    other = jax.tree_util.tree_map(lambda w, d: w + d, params, d1)
    alphas = np.linspace(-1, 2, 7)
    interp = surface.interpolation(obj, params, other, alphas, chunk_size=3)
    along = surface.line(obj, params, d1, alphas, chunk_size=7)
    assert list(interp.table.columns) == ["alpha", "loss", "accuracy"]
    np.testing.assert_allclose(interp.table["loss"], along.table["loss"], rtol=1e-12)
    # with equal BN states the state-moving path is the same line
    interp_states = surface.interpolation(obj, params, other, alphas, start_state=obj.state, end_state=obj.state)
    np.testing.assert_allclose(interp_states.table["loss"], along.table["loss"], rtol=1e-12)


def test_interpolating_batchnorm_statistics_moves_the_state():
    obj, params = surface.from_model(LinearBN(rngs=nnx.Rngs(3)), _data(), batch_size=40)
    state_b = jax.tree_util.tree_map(lambda s: 2.0 * s, obj.state)
    table = surface.interpolation(obj, params, params, [0.0, 1.0], start_state=obj.state, end_state=state_b).table
    loss_b, _ = obj.metrics(params, state_b)
    assert table["loss"].iloc[0] == pytest.approx(float(obj(params)), rel=1e-12)
    assert table["loss"].iloc[1] == pytest.approx(float(loss_b), rel=1e-12)


def test_plane_sharded_over_two_host_devices_matches_one_device(relu_problem):
    """jax.shard_map over a 2-device mesh (forced CPU devices in a subprocess) gives the same table."""
    obj, params, d1, d2 = relu_problem
    one = surface.plane(obj, params, d1, d2, ALPHAS, BETAS, chunk_size=15).table
    script = textwrap.dedent("""
        import sys, jax, jax.numpy as jnp, numpy as np
        from flax import nnx
        from shared.landscape import directions, surface
        from shared.models.mlp import MLP
        assert len(jax.devices()) == 2, jax.devices()
        rng = np.random.default_rng(0)
        x, y = rng.normal(size=(40, 5)), rng.integers(0, 3, size=40)
        obj, p = surface.from_model(MLP((5, 8, 6, 3), rngs=nnx.Rngs(0), param_dtype=jnp.float64), (x, y),
                                    batch_size=16)
        d1 = directions.random_direction(p, jax.random.key(1))
        d2 = directions.random_direction(p, jax.random.key(2))
        t = surface.plane(obj, p, d1, d2, np.linspace(-1, 1, 5), np.linspace(-0.5, 0.5, 3), chunk_size=15).table
        np.save(sys.argv[1], t["loss"].to_numpy())
    """)
    out = Path(os.environ.get("TMPDIR", "/tmp")) / f"two_devices_{os.getpid()}.npy"
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2", "JAX_PLATFORMS": "cpu",
           "JAX_ENABLE_X64": "1"}  # float64 throughout the subprocess, as in this module
    proc = subprocess.run([sys.executable, "-c", script, str(out)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    np.testing.assert_allclose(np.load(out), one["loss"], rtol=1e-12)
    out.unlink()
