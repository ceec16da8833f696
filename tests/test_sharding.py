"""Several devices (``shared.parallel``): sharded and one-device results agree.

The same script (this file run as ``__main__``) runs in two subprocesses, one with one host
device and one with four fake host devices (``XLA_FLAGS=--xla_force_host_platform_device_count``
must be set before jax is imported), and saves every result; the test compares them.

What agrees how, and why:
- the critical-point finder's starts (``shared.critical.finder.search``): within the same
  tolerance as the ensembles (one start per row of a vmapped search, 2 rows per device).
- landscape grid: bit for bit. ``lax.map`` evaluates one point at a time (``vmap_size=1`` on
  the CPU), each on one device by the same program; only the number of points per device
  changes, and nothing is summed across points.
- ensembles (``fit_ensemble``, ``train_ensemble``), Hutchinson/Hutch++ probes, SLQ draws:
  within a float32 tolerance. Each member, probe or draw stays on one device and never meets
  the others, but the vmapped program runs on 1/4 of the rows, and XLA:CPU's batched float32
  kernels (a ``dot_general`` with a batch dimension) may round differently for another batch
  size (measured: 2 of 308 ensemble weights differ, by 3e-6 relative, after 3 SGD steps; GD
  params by 6e-8 after 20 steps; matvecs by ≈ 1 ulp); Lanczos carries that through its m steps,
  and a trace estimate's mean over probes is reduced across devices in another order.
  Tolerances: relative ``RTOL`` = 1e-5 (≈ 80 float32 ulps) plus ``RTOL`` × max|x| absolute;
  quadrature weights (squared first components of T's eigenvectors, in [0, 1]) absolute
  ``WEIGHT_ATOL`` = 1e-5. Measured worst cases are 3–10× inside these.
- That the work really was split: every output array of the four-device run is sharded (not
  replicated) over 4 devices (``x.sharding.device_set``, ``is_fully_replicated``).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np

DEVICES = 4
RTOL = 1e-5
WEIGHT_ATOL = 1e-5


def _run(devices: int, out: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
           "JAX_PLATFORMS": "cpu"}
    root = Path(__file__).resolve().parents[1]
    return subprocess.Popen([sys.executable, __file__, str(out)], env=env, cwd=root, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def test_sharded_results_agree_with_one_device(tmp_path: Path) -> None:
    one, four = tmp_path / "one.npz", tmp_path / "four.npz"
    procs = [_run(1, one), _run(DEVICES, four)]  # both at once: two CPU cores
    for p in procs:
        log, _ = p.communicate(timeout=300)
        assert p.returncode == 0, log[-4000:]
    a, b = np.load(one), np.load(four)
    assert int(a["devices"]) == 1 and int(b["devices"]) == DEVICES
    # the outputs of the four-device run really lie on four devices
    for name in ("ensemble_devices", "fullbatch_devices", "surface_devices", "probes_devices",
                 "slq_python_devices", "slq_fori_devices", "finder_devices"):
        assert int(a[name]) == 1 and int(b[name]) == DEVICES, name
    for name in ("surface_loss", "surface_acc"):
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)  # bit for bit
    for name in ("ensemble_state", "ensemble_test_loss", "fullbatch_params", "fullbatch_history",
                 "hutchinson_samples", "hutchinson_estimate", "hpp_samples", "hpp_estimate", "matvecs",
                 "slq_python_nodes", "slq_fori_nodes", "finder_points", "finder_steps"):
        np.testing.assert_allclose(b[name], a[name], rtol=RTOL, atol=RTOL * np.abs(a[name]).max(), err_msg=name)
    for name in ("slq_python_weights", "slq_fori_weights"):
        np.testing.assert_allclose(b[name], a[name], rtol=0, atol=WEIGHT_ATOL, err_msg=name)


# --------------------------------------------------------------------------- the subprocess


def _main(out: str) -> None:
    import jax
    import jax.numpy as jnp
    import optax

    from shared import parallel
    from shared.curvature.chunking import apply_in_chunks
    from shared.curvature.hvp import batch_data, hessian_operator
    from shared.curvature.operators import dense_operator
    from shared.curvature.slq import quadrature_rules
    from shared.curvature.trace import hutch_plus_plus, hutchinson
    from shared.landscape import surface
    from shared.models import registry
    from shared.training import Arrays, fit_ensemble, init_ensemble, init_key, member_keys, train_key
    from shared.training.fullbatch import train_ensemble
    from shared.training.losses import cross_entropy

    res: dict[str, np.ndarray] = {"devices": np.asarray(jax.device_count())}

    def ndev(tree: object) -> np.ndarray:
        """How many devices hold the leaves of ``tree`` split (not copies of the whole array)."""
        assert not any(leaf.sharding.is_fully_replicated for leaf in jax.tree_util.tree_leaves(tree)
                       if leaf.size > 1 and jax.device_count() > 1)
        return np.asarray(len(parallel.devices_of(tree)))

    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 64).astype(np.int32)
    x = (rng.normal(size=(3, 5))[y] * 2 + rng.normal(size=(64, 5))).astype(np.float32)

    def apply(p: dict, xb: jax.Array) -> jax.Array:
        return jnp.tanh(xb @ p["w1"] + p["b1"]) @ p["w2"] + p["b2"]

    def init(key: jax.Array) -> dict:
        k1, k2 = jax.random.split(key)
        return {"w1": jax.random.normal(k1, (5, 8)) / 2, "b1": jnp.zeros(8),
                "w2": jax.random.normal(k2, (8, 3)) / 3, "b2": jnp.zeros(3)}

    params = init(jax.random.key(1))

    # landscape grid: 5 × 3 = 15 points (padded to 16 on four devices)
    obj = surface.from_apply(apply, params, (x, y), bn_mode="none", batch_size=32)
    d1, d2 = init(jax.random.key(2)), init(jax.random.key(3))
    land = surface.plane(obj, params, d1, d2, np.linspace(-1, 1, 5), np.linspace(-1, 1, 3), chunk_size=16)
    res["surface_loss"], res["surface_acc"] = land.table["loss"].to_numpy(), land.table["accuracy"].to_numpy()
    program = surface._points_program(tuple(jax.devices()), 1, False)
    loss, _ = program(*surface.replicate((obj, params, surface.stack([d1, d2]))), jnp.zeros((8, 2)))
    res["surface_devices"] = ndev(loss)

    # minibatch ensemble: 4 small MLPs, one epoch (the run axis split across devices)
    seeds = [0, 1, 2, 3]
    keys = member_keys(0, "sharding", seeds=seeds)
    net, p0, s0 = init_ensemble(registry.builder("mlp", widths=(5, 8, 3)), jax.vmap(init_key)(keys))
    ens = fit_ensemble(net, p0, s0, Arrays(x[:48], y[:48], x[48:], y[48:]), optimizer=optax.sgd(0.1), epochs=1,
                       batch_size=16, keys=jax.vmap(train_key)(keys), seeds=seeds, loop="scan", progress=False)
    res["ensemble_state"] = np.concatenate([np.ravel(np.asarray(v, np.float64))
                                            for v in jax.tree_util.tree_leaves(ens.state)])
    res["ensemble_test_loss"] = ens.history["test_loss"].to_numpy()
    res["ensemble_devices"] = ndev(ens.state)

    # full-batch gradient descent ensemble: 8 runs, 20 steps in chunks of 10
    def loss_fn(p: dict, data: tuple) -> jax.Array:
        return jnp.mean(cross_entropy(apply(p, data[0]), data[1]))

    batched = jax.vmap(init)(jax.random.split(jax.random.key(4), 8))
    gd = optax.sgd(0.1)
    fb = train_ensemble(loss_fn, batched, (x, y), gd, 20, log_every=5, chunk_steps=10, progress=False)
    res["fullbatch_devices"] = ndev(fb.params)
    # again, with the better half of the runs stopped after the first chunk: the batch is rebuilt
    # from the host (and split across the devices again), the same compiled loop goes on
    fb = train_ensemble(loss_fn, batched, (x, y), gd, 20, log_every=5, chunk_steps=10, progress=False,
                        until=lambda value, grad: value < np.median(value))
    assert 0 < int(np.sum(fb.steps_taken == 10)) < 8
    res["fullbatch_params"] = np.concatenate([np.ravel(np.asarray(v)) for v in jax.tree_util.tree_leaves(fb.params)])
    res["fullbatch_history"] = np.concatenate([fb.loss_history, fb.steps_taken[:, None]], axis=1)

    # Hutchinson / Hutch++ on the Hessian of the MLP's loss (n = 75); chunks of 6 probes (on four devices
    # rounded up to 8, 2 per device; 10 probes: the last chunk of 2 padded to 4)
    op = hessian_operator(loss_fn, params, batch_data((x, y), 32), reduction="mean")
    hutch = hutchinson(op, jax.random.key(5), num_probes=10, batch_size=6)
    hpp = hutch_plus_plus(op, jax.random.key(6), num_matvecs=12, batch_size=6)
    res["hutchinson_samples"], res["hutchinson_estimate"] = np.asarray(hutch.samples), np.asarray(hutch.estimate)
    res["hpp_samples"], res["hpp_estimate"] = np.asarray(hpp.samples), np.asarray(hpp.estimate)
    vs = jax.random.normal(jax.random.key(7), (10, op.size))
    matvecs = apply_in_chunks(op, vs, 8)
    res["matvecs"], res["probes_devices"] = np.asarray(matvecs), ndev(apply_in_chunks(op, vs[:8], 8))

    # SLQ on a dense symmetric 40 × 40 matrix (an HVP's Lanczos programs compile for seconds on the
    # CPU; how draws are split does not depend on the operator), 8 Lanczos steps: the host loop
    # with 6 draws, 4 at a time (the second chunk padded), and the compiled loop with 8 draws
    # (2 per device, lax.map over them one at a time)
    g = rng.normal(size=(40, 40)).astype(np.float32)
    dense = dense_operator((g + g.T) / 2)
    nodes, weights, _, _ = quadrature_rules(dense, jax.random.key(8), num_steps=8, num_draws=6, draws_batch_size=4,
                                            loop="python")
    res["slq_python_nodes"], res["slq_python_weights"] = np.asarray(nodes), np.asarray(weights)
    res["slq_python_devices"] = ndev(quadrature_rules(dense, jax.random.key(8), num_steps=8, num_draws=4,
                                                      draws_batch_size=4, loop="python")[0])  # same programs
    nodes, weights, _, _ = quadrature_rules(dense, jax.random.key(9), num_steps=8, num_draws=8, draws_batch_size=4,
                                            loop="fori")
    res["slq_fori_nodes"], res["slq_fori_weights"] = np.asarray(nodes), np.asarray(weights)
    res["slq_fori_devices"] = ndev(nodes)

    # the critical-point finder: Newton-MR from 6 starts (padded to 8 on four devices, 2 per device)
    # on L(x) = Σ (x_i² − 1)² + x₀x₁/10, whose critical points are all non-degenerate
    from shared.critical.finder import search

    def quartic(z: jax.Array) -> jax.Array:
        return jnp.sum((z**2 - 1) ** 2) + 0.1 * z[0] * z[1]

    starts = rng.normal(size=(6, 3)).astype(np.float32)
    found = search(quartic, starts, steps=30, gtol=1e-6)
    res["finder_points"], res["finder_steps"] = found.points, found.steps.astype(np.float64)
    padded, _ = parallel.pad_leading(jnp.asarray(starts), jax.device_count())
    res["finder_devices"] = ndev(parallel.shard_leading(padded))
    np.savez(out, **res)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    _main(sys.argv[1])
