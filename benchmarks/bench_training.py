"""Training throughput of the shared engine, and achieved FLOP/s against the device's peak.

    .venv/bin/python benchmarks/bench_training.py --quick --out results/bench_training.csv

Measures, on synthetic data already on the device (not in CI):

1. steps/second of the engine's epoch (SGD-Nesterov with weight decay, BatchNorm
   in train mode; driven as the engine drives it, ``loop="auto"``: one ``lax.scan``,
   or jitted steps for convnets on the CPU, see ``shared.training.loops``) for
   Keskar's F1 and C1, and ResNet-20/56 (option B), at batch 128 and 256;
2. 1000 one-hidden-layer nets (Choromanska et al.: 100 inputs, 50 hidden ReLU
   units, 10 classes, batch 100) trained together with ``vmap`` versus one after
   another with the same compiled epoch (``--quick``: 64 nets, and says so).

FLOPs per training step come from XLA's cost analysis of one compiled step
(``jax.jit(step).lower(...).compile().cost_analysis()["flops"]``; the analysis
counts a ``scan`` body once, so the scanned epoch is not used for it). The peak
is *measured*, not a datasheet number: the best FLOP/s of a jitted n×n float32
matmul (2n³ FLOPs, n = 2048) over 10 repetitions, on all the cores XLA uses,
measured before and after the benchmarks (the larger is kept). Each timing
is the best of ``--repeats`` runs of a whole epoch, after compilation.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from shared.benchmarking import best_seconds
from shared.io import write_table  # noqa: E402
from shared.models import registry  # noqa: E402
from shared.training import (  # noqa: E402
    init_ensemble,
    init_network,
    init_train_state,
    make_optimizer,
    make_train_step,
    member_keys,
)
from shared.training.keys import init_key, train_key  # noqa: E402
from shared.training.loops import build_epoch_runner  # noqa: E402
from shared.training.losses import cross_entropy  # noqa: E402


def device_name() -> str:
    dev = jax.devices()[0]
    if dev.platform != "cpu":
        return f"{dev.platform}:{dev.device_kind}"
    model = platform.processor() or "cpu"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"cpu:{model} ({os.cpu_count()} cores)"




def measured_peak(n: int = 2048, repeats: int = 10) -> float:
    """FLOP/s of a jitted n×n float32 matmul (the achievable dense peak)."""
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
    mm = jax.jit(jnp.matmul)
    jax.block_until_ready(mm(a, b))
    return 2.0 * n**3 / best_seconds(lambda: mm(a, b), repeats)


def step_flops(net: Any, ts: Any, x: jax.Array, y: jax.Array, opt: Any, vmapped: bool) -> float:
    step = make_train_step(net, opt)
    key = jax.random.key(0)
    if vmapped:
        fn = jax.vmap(lambda t, xb, yb: step(t, None, xb, yb, key), in_axes=(0, None, None))
    else:
        fn = lambda t, xb, yb: step(t, None, xb, yb, key)
    cost = jax.jit(fn).lower(ts, x, y).compile().cost_analysis()
    if isinstance(cost, list):  # older jax returned one dict per device
        cost = cost[0]
    return float(cost.get("flops", float("nan")))


def synthetic(n: int, shape: tuple[int, ...], classes: int) -> tuple[jax.Array, jax.Array]:
    x = jax.random.normal(jax.random.key(1), (n, *shape), jnp.float32)
    y = jax.random.randint(jax.random.key(2), (n,), 0, classes)
    return x, y


def bench_model(name: str, shape: tuple[int, ...], batch: int, steps: int, repeats: int, peak: float) -> dict[str, Any]:
    net, params, state = init_network(registry.builder(name), jax.random.key(0))
    opt = make_optimizer("nesterov", 0.01, weight_decay=5e-4)
    ts = init_train_state(params, state, opt)
    x, y = synthetic(batch * steps, shape, 10)
    key = jax.random.key(3)
    t0 = time.perf_counter()
    run, loop = build_epoch_runner(
        net, opt, batch_size=batch, loss=cross_entropy, augment=None, ensemble=False,
        hyper_axis=None, loop="auto", example=(ts, None, key, x, y),
    )  # fmt: skip
    compile_s = time.perf_counter() - t0
    jax.block_until_ready(run(ts, None, key, x, y, jnp.int32(0)))
    seconds = best_seconds(lambda: run(ts, None, key, x, y, jnp.int32(0)), repeats)
    flops = step_flops(net, ts, x[:batch], y[:batch], opt, vmapped=False)
    sps = steps / seconds
    return {
        "benchmark": f"{name} train step",
        "loop": loop,
        "batch": batch,
        "networks": 1,
        "steps_per_s": sps,
        "examples_per_s": sps * batch,
        "gflop_per_step": flops / 1e9,
        "achieved_gflops": flops * sps / 1e9,
        "peak_fraction": flops * sps / peak,
        "compile_s": compile_s,
    }


def bench_ensemble(members: int, steps: int, repeats: int, peak: float) -> list[dict[str, Any]]:
    batch, hidden = 100, 50
    build = registry.builder("choromanska", n_hidden=hidden)
    keys = member_keys(0, "bench", seeds=range(members))
    net, params, state = init_ensemble(build, jax.vmap(init_key)(keys))
    tkeys = jax.vmap(train_key)(keys)
    opt = make_optimizer("sgd", 0.05)
    x, y = synthetic(batch * steps, (100,), 10)
    ts = jax.vmap(lambda p, s: init_train_state(p, s, opt))(params, state)
    e0 = jnp.int32(0)

    v_run, loop_mode = build_epoch_runner(
        net, opt, batch_size=batch, loss=cross_entropy, augment=None, ensemble=True,
        hyper_axis=None, loop="auto", example=(ts, None, tkeys, x, y),
    )  # fmt: skip
    jax.block_until_ready(v_run(ts, None, tkeys, x, y, e0))
    t_vmap = best_seconds(lambda: v_run(ts, None, tkeys, x, y, e0), repeats)

    members_ts = [jax.tree_util.tree_map(lambda a, i=i: a[i], ts) for i in range(members)]
    one, _ = build_epoch_runner(
        net, opt, batch_size=batch, loss=cross_entropy, augment=None, ensemble=False,
        hyper_axis=None, loop="auto", example=(members_ts[0], None, tkeys[0], x, y),
    )  # fmt: skip
    jax.block_until_ready(one(members_ts[0], None, tkeys[0], x, y, e0))

    def loop() -> Any:
        return [one(members_ts[i], None, tkeys[i], x, y, e0) for i in range(members)]

    t_loop = best_seconds(loop, max(1, repeats // 2))
    flops_v = step_flops(net, ts, x[:batch], y[:batch], opt, vmapped=True)
    rows = []
    for mode, seconds in (("vmap", t_vmap), ("loop", t_loop)):
        sps = steps / seconds  # ensemble steps (every member takes one step)
        rows.append(
            {
                "benchmark": f"{members} one-hidden-layer nets ({mode})",
                "loop": loop_mode,
                "batch": batch,
                "networks": members,
                "steps_per_s": sps,
                "examples_per_s": sps * batch * members,
                "gflop_per_step": flops_v / 1e9,
                "achieved_gflops": flops_v * sps / 1e9,
                "peak_fraction": flops_v * sps / peak,
                "compile_s": float("nan"),
            }
        )
    rows[0]["speedup_vs_loop"] = t_loop / t_vmap
    return rows


def to_markdown(df: pd.DataFrame) -> str:
    cols = list(df.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, row in df.iterrows():
        cells = []
        for c in cols:
            v = row[c]
            cells.append(f"{v:.4g}" if isinstance(v, float) else str(v))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps and 64 nets, not 1000")
    parser.add_argument("--out", default="results/bench_training.csv", help="CSV path")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--models", default="keskar_f1,keskar_c1,resnet20,resnet56")
    args = parser.parse_args(argv)
    steps = 3 if args.quick else 20  # per timed epoch (F1, which is fast: 20 either way)
    repeats = args.repeats or (2 if args.quick else 3)
    members = 64 if args.quick else 1000

    device = device_name()
    peak = measured_peak()
    print(f"device: {device}; measured float32 matmul peak: {peak / 1e9:.1f} GFLOP/s", flush=True)
    shapes = {"keskar_f1": (28, 28, 1)}
    rows = []
    for name in args.models.split(","):
        for batch in (128, 256):
            n_steps = 20 if name == "keskar_f1" else steps
            row = bench_model(name, shapes.get(name, (32, 32, 3)), batch, n_steps, repeats, peak)
            print(f"  {row['benchmark']} @ {batch}: {row['steps_per_s']:.2f} steps/s", flush=True)
            rows.append(row)
    ens_steps = 10 if args.quick else 50
    rows.extend(bench_ensemble(members, ens_steps, repeats, peak))
    peak_end = measured_peak()  # again, in case the machine was busy at the start
    if peak_end > peak:
        for row in rows:
            row["peak_fraction"] *= peak / peak_end
        peak = peak_end
    df = pd.DataFrame(rows)
    df.insert(0, "device", device)
    df["peak_gflops"] = peak / 1e9
    df["quick"] = bool(args.quick)
    if args.quick:
        print(f"(--quick: {steps} steps per timing, best of {repeats}; {members} nets, not 1000)")
    print(to_markdown(df.drop(columns=["device", "quick"])))
    write_table(args.out, df)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
