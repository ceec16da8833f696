"""Benchmark of the landscape and sharpness toolkit against the floor of bare jitted passes.

    .venv/bin/python benchmarks/bench_landscape.py --quick --out bench_landscape.csv
    .venv/bin/python benchmarks/bench_landscape.py --out bench_landscape.csv      # 51×51, long on CPU

(a) **Surface**: a filter-normalised 2D loss/accuracy surface (Li et al. 2018, biases and
BatchNorm zeroed in the directions) of ResNet-20 (BatchNorm in eval mode) on 2,000 random
CIFAR-shaped images (32×32×3, 10 classes), evaluated in batches of 500, on an N×N grid over
[−1, 1]² written chunk by chunk (one grid row per chunk) to a temporary ``workdir`` through
``shared.resume``. N = 51 as in the paper's figures; ``--quick`` uses N = 5 (25 points).
The floor is N² times the time of one bare jitted evaluation of the same loss and accuracy at
one point (the same batches): the forward passes no surface can avoid. The surface time is
measured warm (the first chunk's shape is compiled beforehand; compile time is reported).

(c) **Keskar Metric 2.1**: ε = 1e-3, 10 L-BFGS-B iterations, in the full space (A = I) and
in a random 100-dimensional subspace, for an F1-like MLP (``keskar_f1``: 784 → 5 × [512, BN,
ReLU] → 10, BatchNorm in eval mode; ``--quick``: 2 hidden layers) on random MNIST-sized data
(60,000 × 784; ``--quick``: 10,000), loss over the whole set in batches of 10,000. The floor
is (function evaluations + 1) times one bare jitted value-and-gradient of the loss over the
data: L-BFGS-B needs f and ∇f at every point it tries, and f(x) once (``KeskarResult.evals``,
the passes actually made). The search starts at a seeded random point of the box (the
default ``init="random"``; y = 0 is a stationary point at a minimum) with scipy's
``gtol``/``ftol`` set to 0; a run flagged ``no_progress`` is marked in the setting column.
The subspace is timed twice: "A drawn" draws A (n × 100 N(0, 1) numbers) and solves for A⁺x
inside the timing; "A given" draws A before it (the Keskar module draws one A per minimum and
shares it between its ε cells), so only A⁺x and the passes are timed.
``--skip surface`` runs only the three Metric 2.1 rows. ``--keskar-model keskar_c1`` times
them for C1 (CIFAR-shaped, 50,000 examples by default; issue #15's goal: ≤ 1 minute on one
H100-class GPU):

    .venv/bin/python benchmarks/bench_landscape.py --skip surface --keskar-model keskar_c1 \
        --keskar-examples 50000 --keskar-batch 5000 --out bench_keskar_c1.csv

Li et al.'s headline (issue #17), for a GPU: the 51×51 ResNet-56 surface on the full training
set's size (the paper: about an hour on four GPUs; the goal: ≤ 5 minutes on one H100-class GPU)

    .venv/bin/python benchmarks/bench_landscape.py --model resnet56 --grid 51 --num-examples 50000 \
        --batch-size 1000 --skip keskar --out bench_li_surface.csv

The work is the same on random CIFAR-shaped images as on CIFAR-10's (the same passes).

Every row gives the wall time, the work (grid points or function evaluations), the rate,
the floor and the ratio time/floor. The machine is shared: rerun for stable numbers.
"""

from __future__ import annotations

import argparse
import csv
import tempfile
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.flatten_util import ravel_pytree

from shared import seeds
from shared.benchmarking import median_seconds
from shared.io import atomic_path
from shared.landscape import directions, surface
from shared.landscape.surface import evaluate_points
from shared.models import registry
from shared.sharpness.keskar import keskar_sharpness, random_subspace

ROOT_SEED = 0




def random_images(key: jax.Array, n: int, shape: tuple[int, ...], classes: int) -> tuple[jax.Array, jax.Array]:
    kx, ky = jax.random.split(key)
    return jax.random.normal(kx, (n, *shape), jnp.float32), jax.random.randint(ky, (n,), 0, classes)


def bench_surface(grid: int, num_examples: int, batch_size: int, vmap_size: int | None,
                  model_name: str = "resnet20") -> dict[str, Any]:
    model = registry.build(model_name, rngs=nnx.Rngs(seeds.derive(ROOT_SEED, "bench", model_name)))
    data = random_images(seeds.derive(ROOT_SEED, "bench", "cifar"), num_examples, (32, 32, 3), 10)
    obj, params = surface.from_model(model, data, bn_mode="eval", batch_size=batch_size)
    d1 = directions.random_direction(params, seeds.derive(ROOT_SEED, "bench", "x"))
    d2 = directions.random_direction(params, seeds.derive(ROOT_SEED, "bench", "y"))
    alphas = betas = np.linspace(-1.0, 1.0, grid)

    one_point = jax.jit(lambda o, p: o.metrics(p))
    start = time.perf_counter()
    jax.block_until_ready(one_point(obj, params))
    floor_compile = time.perf_counter() - start
    t_point = median_seconds(lambda: one_point(obj, params), reps=3)

    start = time.perf_counter()  # compile the chunk shape (one grid row) once, outside the timing
    evaluate_points(obj, params, [d1, d2], np.zeros((grid, 2)), vmap_size=vmap_size)
    warm_chunk = time.perf_counter() - start
    compile_s = max(warm_chunk - grid * t_point, 0.0)

    with tempfile.TemporaryDirectory() as work:
        start = time.perf_counter()
        result = surface.plane(obj, params, d1, d2, alphas, betas, workdir=work, chunk_size=grid,
                               vmap_size=vmap_size)
        elapsed = time.perf_counter() - start
    points = grid * grid
    assert len(result.table) == points and result.chunks_computed == grid
    floor = points * t_point
    return {
        "task": "surface",
        "setting": f"{model_name} {grid}x{grid} filter-norm, {num_examples} imgs, batch {batch_size}, BN {obj.bn_mode}",
        "work": points, "unit": "grid points", "time_s": elapsed, "compile_s": compile_s + floor_compile,
        "per_s": points / elapsed, "floor_s": floor, "ratio": elapsed / floor,
    }


KESKAR_INPUTS = {"keskar_f1": ((784,), "mnist"), "keskar_c1": ((32, 32, 3), "cifar")}


def bench_keskar(num_examples: int, depth: int, dim: int | None, given: bool = False, model_name: str = "keskar_f1",
                 batch_size: int = 10_000) -> dict[str, Any]:
    """One Metric 2.1 row; ``given``: A drawn before the timing and passed as ``subspace`` (how
    the Keskar module calls it: one A per minimum for all its ε cells), else drawn inside.
    ``model_name``: ``keskar_f1`` (``depth`` hidden layers) or ``keskar_c1`` (CIFAR-shaped)."""
    shape, data_name = KESKAR_INPUTS[model_name]
    kw = {"depth": depth} if model_name == "keskar_f1" else {}
    model = registry.build(model_name, rngs=nnx.Rngs(seeds.derive(ROOT_SEED, "bench", model_name[-2:])), **kw)
    data = random_images(seeds.derive(ROOT_SEED, "bench", data_name), num_examples, shape, 10)
    obj, params = surface.from_model(model, data, bn_mode="eval", batch_size=batch_size)

    value_and_grad = jax.jit(lambda o, p: jax.value_and_grad(o)(p))
    start = time.perf_counter()
    jax.block_until_ready(value_and_grad(obj, params))
    floor_compile = time.perf_counter() - start
    t_eval = median_seconds(lambda: value_and_grad(obj, params), reps=3)

    key = seeds.derive(ROOT_SEED, "bench", "keskar_subspace")
    keskar_sharpness(obj, params, epsilon=1e-3, dim=dim, key=key, maxiter=1)  # compile outside the timing
    a = None
    if given and dim is not None:
        flat = ravel_pytree(params)[0]
        a = jax.block_until_ready(random_subspace(jax.random.fold_in(key, 0), flat.size, dim, flat.dtype))
    start = time.perf_counter()
    res = keskar_sharpness(obj, params, epsilon=1e-3, dim=None if a is not None else dim, subspace=a, key=key,
                           maxiter=10)
    elapsed = time.perf_counter() - start
    evals = res.evals  # f(x) + one value-and-gradient per L-BFGS-B evaluation
    floor = evals * t_eval
    n_params = sum(int(w.size) for w in jax.tree_util.tree_leaves(params))
    space = "full space" if dim is None else f"subspace p={dim}" + (" (A given)" if a is not None else " (A drawn)")
    return {
        "task": "keskar_metric_2.1",
        "setting": ((f"F1-like 784-{depth}x512-10" if model_name == "keskar_f1" else "C1 (keskar_c1)")
                    + f" ({n_params:,} params), {num_examples} examples, {space}, "
                    f"eps 1e-3, init {res.init}, {res.nit} it, phi={res.sharpness:.3g}"
                    + (", NO PROGRESS" if res.no_progress else "")),
        "work": evals, "unit": "f+grad evals", "time_s": elapsed, "compile_s": floor_compile,
        "per_s": evals / elapsed, "floor_s": floor, "ratio": elapsed / floor,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="5×5 surface, 2-layer F1 on 10,000 examples")
    parser.add_argument("--grid", type=int, default=None, help="grid side N (default 51, quick 5)")
    parser.add_argument("--num-examples", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--vmap-size", type=int, default=None, help="points vmapped together (default: 1 on CPU)")
    parser.add_argument("--skip", choices=["surface", "keskar"], action="append", default=[])
    parser.add_argument("--model", default="resnet20", help="surface model (registry name), e.g. resnet56")
    parser.add_argument("--keskar-model", choices=sorted(KESKAR_INPUTS), default="keskar_f1",
                        help="Metric 2.1's network: keskar_f1 (MNIST-shaped) or keskar_c1 (CIFAR-shaped)")
    parser.add_argument("--keskar-examples", type=int, default=None,
                        help="Metric 2.1's training-set size (default: F1 60,000, quick 10,000; C1 50,000)")
    parser.add_argument("--keskar-batch", type=int, default=10_000, help="Metric 2.1's evaluation batch")
    parser.add_argument("--out", default=None, help="CSV file for the table")
    args = parser.parse_args(argv)
    grid = args.grid or (5 if args.quick else 51)
    rows = []
    if "surface" not in args.skip:
        rows.append(bench_surface(grid, args.num_examples, args.batch_size, args.vmap_size, args.model))
    if "keskar" not in args.skip:
        n, depth = (10_000, 2) if args.quick else (60_000, 5)
        if args.keskar_model == "keskar_c1":
            n = 50_000
        n = args.keskar_examples or n
        for dim, given in ((None, False), (100, False), (100, True)):
            rows.append(bench_keskar(n, depth, dim, given, args.keskar_model, args.keskar_batch))
    print(f"\ndevice: {jax.devices()[0].device_kind} x{len(jax.devices())}, backend {jax.default_backend()}"
          + (" (--quick: smaller grid and model)" if args.quick else ""))
    print("\n| task | setting | work | time (s) | compile (s) | rate | floor (s) | time/floor |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['task']} | {r['setting']} | {r['work']} {r['unit']} | {r['time_s']:.2f} | {r['compile_s']:.1f} "
              f"| {r['per_s']:.3g}/s | {r['floor_s']:.2f} | {r['ratio']:.2f} |")
    if args.out:
        with atomic_path(args.out) as tmp, open(tmp, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)


if __name__ == "__main__":
    main()
