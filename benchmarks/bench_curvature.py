"""Benchmark of the curvature toolkit: one HVP, top-10 Lanczos, and SLQ on a model and data.

    .venv/bin/python benchmarks/bench_curvature.py --quick
    .venv/bin/python benchmarks/bench_curvature.py --model resnet20 --num-examples 500 --out b.csv

Default: a small conv net on 2,000 random CIFAR-shaped images (32×32×3, 10 classes),
cross-entropy averaged over the data, HVPs summed over batches of 500. ``--model`` also
takes any name of ``shared.models.registry`` (e.g. ``resnet20``), built in eval mode
(BatchNorm uses running statistics, so the loss is a sum over examples and the batched
HVP is exact).

Every row reports the median time of warm calls (the first call compiles; the difference
is the compile column), the HVPs it spends, HVPs per second, and the ratio to the floor.
The floor is the number of HVPs times the time of one bare jitted forward-backward pass
over the whole data set (``full_gradient``: the gradient of the same batched loss, with
the same batch loop). An HVP (forward-over-reverse) costs about 2–3 such passes, so a
ratio of 2–3 is the ideal and anything above it is reorthogonalisation, bookkeeping and
dispatch overhead. Lanczos and SLQ run twice (cold and warm): at the default sizes on a
CPU that is long; use ``--quick`` or smaller ``--num-examples``.

On CPU the defaults (``--loop auto --batch-loop auto``) use the host loop and unrolled
batches, because XLA:CPU runs gradient convolutions 5–30× slower inside loop bodies
(jax-ml/jax#12868; see ``shared/curvature/lanczos.py``). Pass ``--loop fori
--batch-loop scan`` to measure the fully compiled loops.
"""

from __future__ import annotations

import argparse
import csv
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from shared import seeds
from shared.benchmarking import median_seconds
from shared.curvature.gauss_newton import supervised_loss
from shared.curvature.hvp import batch_data, full_gradient, hessian_operator
from shared.curvature.lanczos import lanczos_eigs
from shared.curvature.operators import apply
from shared.curvature.slq import quadrature_rules
from shared.io import atomic_path
from shared.models.functional import pure

NUM_CLASSES = 10


class SmallConvNet(nnx.Module):
    """conv3×3/2-16 → ReLU → conv3×3/2-32 → ReLU → dense-10 (25,578 parameters)."""

    def __init__(self, *, rngs: nnx.Rngs) -> None:
        self.conv1 = nnx.Conv(3, 16, (3, 3), strides=(2, 2), rngs=rngs)
        self.conv2 = nnx.Conv(16, 32, (3, 3), strides=(2, 2), rngs=rngs)
        self.head = nnx.Linear(8 * 8 * 32, NUM_CLASSES, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = jax.nn.relu(self.conv2(jax.nn.relu(self.conv1(x))))
        return self.head(x.reshape(x.shape[0], -1))


def build_model(name: str, key: jax.Array) -> nnx.Module:
    if name == "convnet":
        return SmallConvNet(rngs=nnx.Rngs(key))
    from shared.models import registry

    model = registry.build(name, rngs=nnx.Rngs(key), num_classes=NUM_CLASSES)
    model.eval()  # BatchNorm: running statistics, so the loss separates over examples
    return model




def resolve_loops(args: argparse.Namespace, num_batches: int) -> tuple[str, bool]:
    """(Lanczos/SLQ loop, unroll batches): on CPU the host loop and unrolled batches."""
    cpu = jax.default_backend() == "cpu"
    loop = ("python" if cpu else "fori") if args.loop == "auto" else args.loop
    if args.batch_loop == "auto":
        unroll = cpu and num_batches <= 16
    else:
        unroll = args.batch_loop == "unroll"
    return loop, unroll


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    key_data, key_model, key_v, key_lanczos, key_slq = (
        seeds.derive(args.seed, "bench_curvature", name)
        for name in ("data", "model", "v", "lanczos", "slq")
    )
    kx, ky = jax.random.split(key_data)
    x = jax.random.normal(kx, (args.num_examples, 32, 32, 3), jnp.float32)
    y = jax.random.randint(ky, (args.num_examples,), 0, NUM_CLASSES)
    f, params = pure(build_model(args.model, key_model))
    loss = supervised_loss(f, "cross_entropy", "mean")
    data = batch_data((x, y), args.batch_size)
    loop, unroll = resolve_loops(args, data.num_stacked + (data.remainder is not None))
    op = hessian_operator(loss, params, data, reduction="mean", unroll_batches=unroll)
    v = jax.random.normal(key_v, (op.size,), op.dtype)
    print(f"model {args.model}: {op.size:,} parameters ({op.dtype}); {args.num_examples} "
          f"examples in batches of {args.batch_size}; seed {args.seed}; backend "
          f"{jax.default_backend()}; Lanczos loop {loop!r}; batches "
          f"{'unrolled' if unroll else 'scanned'}")

    grad = lambda: full_gradient(loss, params, data, reduction="mean", unroll_batches=unroll)
    jax.block_until_ready(grad())  # compile
    floor = median_seconds(grad, args.reps)
    rows = []

    def record(task: str, hvps: int, fn: Callable[[], Any], reps: int) -> None:
        """Cold call (compiles), then the median of ``reps`` warm calls."""
        cold = median_seconds(fn, 1)
        t = median_seconds(fn, reps)
        rows.append({
            "task": task, "hvps": hvps, "seconds": t, "hvps_per_s": hvps / t,
            "floor_seconds": hvps * floor, "ratio_to_floor": t / (hvps * floor),
            "compile_seconds": max(cold - t, 0.0),
        })
        print(f"  {task}: {t:.3f} s (first call {cold:.3f} s)")

    record("hvp", 1, lambda: apply(op, v), args.reps)
    k, m = 10, args.lanczos_steps
    record(f"lanczos top-{k} ({m} steps)", m,
           lambda: lanczos_eigs(op, key_lanczos, k=k, num_steps=m, loop=loop).top.eigenvalues, 1)
    m, d = args.slq_steps, args.slq_draws
    record(f"slq ({m} steps x {d} draws)", m * d,
           lambda: quadrature_rules(op, key_slq, num_steps=m, num_draws=d, loop=loop), 1)
    for row in rows:
        row.update(model=args.model, num_params=op.size, num_examples=args.num_examples,
                   batch_size=args.batch_size, forward_backward_seconds=floor,
                   backend=jax.default_backend(), loop=loop, unroll_batches=unroll,
                   seed=args.seed)
    return rows


def markdown(rows: Sequence[dict[str, Any]]) -> str:
    head = "| task | HVPs | time (s) | HVPs/s | floor (s) | ratio to floor | compile (s) |"
    lines = [head, "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(
            f"| {r['task']} | {r['hvps']} | {r['seconds']:.3f} | {r['hvps_per_s']:.2f} | "
            f"{r['floor_seconds']:.3f} | {r['ratio_to_floor']:.2f} | {r['compile_seconds']:.2f} |"
        )
    return "\n".join(lines)


def write_csv(path: str, rows: Sequence[dict[str, Any]]) -> None:
    with atomic_path(path) as tmp, tmp.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", default="convnet",
                   help="'convnet' (built in) or a shared.models.registry name, e.g. resnet20")
    p.add_argument("--num-examples", type=int, default=2000)
    p.add_argument("--batch-size", type=int, default=500)
    p.add_argument("--lanczos-steps", type=int, default=40, help="steps for the top-10 run")
    p.add_argument("--slq-steps", type=int, default=90)
    p.add_argument("--slq-draws", type=int, default=10)
    p.add_argument("--reps", type=int, default=3, help="repetitions of the cheap timings")
    p.add_argument("--loop", choices=["auto", "fori", "python"], default="auto",
                   help="Lanczos/SLQ loop; auto = python (host loop) on CPU, fori elsewhere")
    p.add_argument("--batch-loop", choices=["auto", "scan", "unroll"], default="auto",
                   help="loop over batches; auto = unroll on CPU for <= 16 batches, else scan")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="CSV path for the table")
    p.add_argument("--quick", action="store_true",
                   help="256 examples, batches of 128, 20 Lanczos steps, SLQ 20 steps x 4 draws")
    args = p.parse_args(argv)
    if args.quick:
        args.num_examples, args.batch_size = 256, 128
        args.lanczos_steps, args.slq_steps, args.slq_draws = 20, 20, 4
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    rows = run(args)
    print()
    print(f"floor: one jitted forward-backward pass over the data = "
          f"{rows[0]['forward_backward_seconds']:.4f} s (an HVP costs about 2-3 of them)")
    print(markdown(rows))
    if args.out:
        write_csv(args.out, rows)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
