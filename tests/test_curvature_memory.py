"""Memory-safe defaults (#12): probes go through an operator in chunks sized from a budget.

Hutch++ with 150 matvecs on a small convnet completes in a process whose address space is
capped at 2 GiB (``resource.RLIMIT_AS``, set in a subprocess), with the default chunking and a
0.25 GiB budget; the same call with every probe of a third in one vmapped program (the old
default) runs out of memory under the same cap, so the cap is what the test says it is.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from shared.curvature import chunking
from shared.curvature.chunking import apply_in_chunks, auto_chunk, memory_budget_bytes
from shared.curvature.hvp import batch_data, hessian_operator, unrolls
from shared.curvature.operators import dense_operator

PROBE = Path(__file__).with_name("memory_probe.py")
REPO = Path(__file__).resolve().parents[1]
CAP_GIB = 2


def _probe(batch: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, chunking.BUDGET_ENV: "0.25", "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, str(PROBE), str(CAP_GIB), "150", batch, "64"],
                          capture_output=True, text=True, timeout=600, env=env, cwd=REPO)


def test_hutch_plus_plus_completes_under_a_memory_cap_that_the_all_at_once_path_exceeds() -> None:
    chunked = _probe("auto")
    assert chunked.returncode == 0, chunked.stderr[-2000:]
    chunk = int(chunked.stdout.split("chunk")[-1])
    assert 1 <= chunk < 50
    assert np.isfinite(float(chunked.stdout.split("estimate")[-1].split()[0]))
    at_once = _probe("50")  # the old default: all 50 probes of a third in one program
    assert at_once.returncode != 0 and "Out of memory" in at_once.stderr


@pytest.mark.parametrize("chunk", [1, 3, 7, 10, None])
def test_chunks_give_the_vmapped_result(chunk: int | None) -> None:
    rng = np.random.default_rng(0)
    a = rng.standard_normal((6, 6)).astype(np.float32)
    op = dense_operator(a + a.T)
    vs = jnp.asarray(rng.standard_normal((10, 6)), jnp.float32)
    np.testing.assert_allclose(apply_in_chunks(op, vs, chunk), jax.vmap(op.matvec)(vs), rtol=1e-6, atol=1e-6)


def test_the_default_chunk_follows_the_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    op = dense_operator(np.eye(50, dtype=np.float32))
    per_vector = chunking.matvec_footprint_bytes(op)
    assert per_vector >= 50 * 4  # at least the vector itself
    assert auto_chunk(op, 1000, budget_bytes=1) == 1
    assert auto_chunk(op, 1000, budget_bytes=10**12) == 1000
    assert auto_chunk(op, 1000, budget_bytes=int(chunking.SAFETY * per_vector * 5)) == 5
    monkeypatch.setenv(chunking.BUDGET_ENV, "0.5")
    assert memory_budget_bytes() == 2**29
    for bad in ("lots", "0", "-1"):
        monkeypatch.setenv(chunking.BUDGET_ENV, bad)
        with pytest.raises(ValueError, match=f"{chunking.BUDGET_ENV} has value '{bad}'; allowed: a positive"):
            memory_budget_bytes()


def test_short_batch_loops_run_straight_line_and_long_ones_scan() -> None:
    x = jnp.ones((40, 3))
    assert unrolls(batch_data((x,)), None)  # one batch: never inside a loop
    assert unrolls(batch_data((x,), 4), None)  # 10 batches <= the cap
    assert not unrolls(batch_data((x,), 2), None)  # 20 batches: a scan
    assert unrolls(batch_data((x,), 2), True) and not unrolls(batch_data((x,), 4), False)
    loss = lambda p, b: jnp.sum((b[0] @ p) ** 2)  # noqa: E731
    op = hessian_operator(loss, jnp.ones(3), batch_data((x,), 2), reduction="sum")
    np.testing.assert_allclose(op.matvec(jnp.eye(3)[0]), 2 * (x.T @ x)[0], rtol=1e-6)


def test_slq_draws_are_chunked_by_the_budget() -> None:
    from shared.curvature.slq import auto_draws_batch, quadrature_rules

    rng = np.random.default_rng(1)
    a = rng.standard_normal((40, 40)).astype(np.float32)
    op = dense_operator(a + a.T)
    assert auto_draws_batch(op, 10, 8, budget_bytes=1) == 1
    assert auto_draws_batch(op, 10, 8, budget_bytes=10**12) == 8
    chunked = quadrature_rules(op, jax.random.key(0), num_steps=10, num_draws=8, draws_batch_size=3)
    together = quadrature_rules(op, jax.random.key(0), num_steps=10, num_draws=8, draws_batch_size=8)
    for c, t in zip(chunked, together, strict=True):
        np.testing.assert_allclose(c, t, rtol=1e-4, atol=1e-5)


def _conv_operator() -> object:
    """The Hessian of a one-layer tanh convnet's mean squared activation (a convolution inside)."""
    rng = np.random.default_rng(2)
    x = jnp.asarray(rng.standard_normal((8, 6, 6, 2)), jnp.float32)
    kernel = jnp.asarray(0.3 * rng.standard_normal((3, 3, 2, 3)), jnp.float32)

    def loss(k: jax.Array, batch: tuple[jax.Array, ...]) -> jax.Array:
        y = jax.lax.conv_general_dilated(batch[0], k, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return jnp.mean(jnp.tanh(y) ** 2)

    return hessian_operator(loss, kernel, batch_data((x,), 4), reduction="mean")


def test_convolutional_operators_go_one_vector_per_call_on_a_cpu() -> None:
    """The platform rule of ``chunking``: vmapped convolutions are slow per vector on XLA:CPU, so a
    convolutional operator's default chunk is 1 there (unvmapped), with the same products; dense
    operators keep the budget's chunk."""
    from shared.curvature.slq import default_draws_batch, quadrature_rules

    conv, dense = _conv_operator(), dense_operator(np.eye(54, dtype=np.float32))
    assert chunking.has_convolution(conv) and not chunking.has_convolution(dense)
    on_cpu = jax.default_backend() == "cpu"
    assert chunking.default_chunk(conv, 10) == (1 if on_cpu else auto_chunk(conv, 10))
    assert chunking.default_chunk(dense, 10) == auto_chunk(dense, 10)
    if on_cpu:
        assert default_draws_batch(conv, 8, 4) == 1
    vs = jax.random.normal(jax.random.key(0), (5, conv.size), jnp.float32)
    np.testing.assert_allclose(apply_in_chunks(conv, vs), jax.vmap(conv.matvec)(vs), rtol=1e-5, atol=1e-6)
    one_by_one = quadrature_rules(conv, jax.random.key(1), num_steps=8, num_draws=4)
    together = quadrature_rules(conv, jax.random.key(1), num_steps=8, num_draws=4, draws_batch_size=4)
    for a, b in zip(one_by_one, together, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
