"""This suite beside the tools users know, on the same work: PyHessian and Li et al.'s recipe.

    .venv/bin/pip install -r benchmarks/requirements-anchors.txt      # torch 2.13 CPU, PyHessian
    .venv/bin/python benchmarks/bench_anchors.py --quick --out results/bench_anchors.csv
    .venv/bin/python benchmarks/bench_anchors.py --out results/bench_anchors.csv     # issue #12's sizes

One process, one ResNet-20 (shared.models.resnet, BatchNorm in eval mode, untrained, seeded),
one set of images (``--data cifar10``: the prepared CIFAR-10 training split through
shared.data; default: random CIFAR-shaped images, seeded), batch 128 (``--quick``: 64), and
a PyTorch twin of the same network holding the same weights (``TorchResNet``: convs OIHW,
inputs NCHW, BatchNorm with the same ε and running statistics). Rows:

- ``forward``: the loss over all images; floors are each side's own jitted / no-grad pass.
- ``hvp``: one Hessian-vector product over all images on the same vector (PyHessian's
  ``dataloader_hv_product`` vs ``shared.curvature.hvp``); agreement: relative L2 error.
- ``surface``: an N×N filter-normalized plane (N = 11, quick 5) from the same two Gaussian
  directions, normalized on each side independently (ours: ``shared.landscape.directions``;
  theirs: a minimal PyTorch version of the official recipe — each output filter rescaled to
  the norm of the same filter of the weights, biases and BatchNorm zeroed); agreement: max
  |Δ loss|.
- ``power``: top eigenvalue. PyHessian stops at a 1e-3 relative change of the Rayleigh
  quotient; ours at a residual ‖Hv − μv‖ ≤ rtol·|μ| with rtol = 1e-2 (about the same
  accuracy: both errors against a 40-step Lanczos reference are printed).
- ``lanczos``: 20 steps (quick 10), ours vs PyHessian's density(iter=m, n_v=1), whose core is
  the same Lanczos run; agreement: |Δ top Ritz value| / top. (PyHessian 0.1 calls
  ``torch.eig``, removed from PyTorch in 1.9: the benchmark supplies it from
  ``torch.linalg.eigh``, exact for the symmetric tridiagonal matrix it is called on.)
- ``slq``: 90 steps × 1 draw (quick 20) for both; agreement: |Δ of the top node| / top.
- ``hutchinson`` / ``hutch++``: m = 81 matvecs (quick 12); PyHessian's trace(maxIter=m,
  tol=0) is Hutchinson; agreement: |Δ estimate| in units of the two standard errors combined.

Every row: both times, the ratio ours/theirs, each side's ratio to its own floor (one
forward-and-backward pass over the images, times the matvecs: an HVP costs about 2–3 such
passes), and the process's peak resident memory after the row (cumulative: a row that
raises it shows it). Times are the minimum of ``--repeats`` (default 1) after a warm-up
that compiles. PyTorch runs with ``torch.set_num_threads(--threads)``; XLA uses every core.
"""

from __future__ import annotations

import argparse
import csv
import platform
import resource
import subprocess
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.flatten_util import ravel_pytree

from shared import seeds
from shared.curvature.lanczos import lanczos_eigs
from shared.curvature.operators import apply
from shared.curvature.power import power_iteration
from shared.curvature.slq import quadrature_rules
from shared.curvature.trace import hutch_plus_plus, hutchinson
from shared.io import atomic_path
from shared.landscape import directions, surface
from shared.models import registry
from shared.models.mlp import BN_EPSILON
from shared.sharpness.measures import hessian_of

ROOT_SEED = 0


# --- the PyTorch twin ---------------------------------------------------------------------------

def torch_twin(model: Any, params: Any, state: Any) -> Any:
    """A PyTorch ResNet with the Flax model's structure and weights (eval mode)."""
    import torch
    from torch import nn

    p, s = nnx.to_pure_dict(params), nnx.to_pure_dict(state)

    def conv(kernel: Any, stride: int) -> Any:
        k = torch.from_numpy(np.array(kernel)).permute(3, 2, 0, 1).contiguous()
        layer = nn.Conv2d(k.shape[1], k.shape[0], k.shape[2], stride=stride, padding=1 if k.shape[2] == 3 else 0,
                          bias=False)
        layer.weight.data.copy_(k)
        return layer

    def bn(pp: Any, ss: Any) -> Any:
        layer = nn.BatchNorm2d(len(np.asarray(pp["scale"])), eps=BN_EPSILON)
        layer.weight.data.copy_(torch.from_numpy(np.array(pp["scale"])))
        layer.bias.data.copy_(torch.from_numpy(np.array(pp["bias"])))
        layer.running_mean.copy_(torch.from_numpy(np.array(ss["mean"])))
        layer.running_var.copy_(torch.from_numpy(np.array(ss["var"])))
        return layer

    class Block(nn.Module):
        def __init__(self, flax_block: Any, pp: Any, ss: Any) -> None:
            super().__init__()
            self.conv1, self.bn1 = conv(pp["conv1"]["kernel"], flax_block.stride), bn(pp["bn1"], ss["bn1"])
            self.conv2, self.bn2 = conv(pp["conv2"]["kernel"], 1), bn(pp["bn2"], ss["bn2"])
            self.proj = None
            if flax_block.proj_conv is not None:
                self.proj = nn.Sequential(conv(pp["proj_conv"]["kernel"], flax_block.stride),
                                          bn(pp["proj_bn"], ss["proj_bn"]))

        def forward(self, x: Any) -> Any:
            out = self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))
            return torch.relu(out + (x if self.proj is None else self.proj(x)))

    class TorchResNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            if model.shortcut != "B":
                raise ValueError("the twin covers shortcut option B (the default) only")
            self.stem, self.stem_bn = conv(p["stem"]["kernel"], 1), bn(p["stem_bn"], s["stem_bn"])
            self.blocks = nn.Sequential(*[Block(b, p["blocks"][i], s["blocks"][i])
                                          for i, b in enumerate(model.blocks)])
            kernel = torch.from_numpy(np.array(p["linear"]["kernel"]))
            self.linear = nn.Linear(kernel.shape[0], kernel.shape[1])
            self.linear.weight.data.copy_(kernel.T)
            self.linear.bias.data.copy_(torch.from_numpy(np.array(p["linear"]["bias"])))

        def forward(self, x: Any) -> Any:
            x = torch.relu(self.stem_bn(self.stem(x)))
            return self.linear(self.blocks(x).mean(dim=(2, 3)))

    return TorchResNet().eval()


def to_torch_layout(model: Any, tree: Any, net: Any) -> list[Any]:
    """A Flax parameter pytree as a list matching ``net.parameters()`` (same tensors, torch layout)."""
    import torch

    d = nnx.to_pure_dict(tree)
    out: dict[str, Any] = {}

    def put(prefix: str, pp: Any) -> None:
        for name, value in pp.items():
            key = f"{prefix}.{name}" if prefix else str(name)
            if isinstance(value, dict):
                put(key, value)
            else:
                out[key] = np.array(value)  # a writable copy (torch wants one)

    put("", d)
    tensors = []
    for name, param in net.named_parameters():
        tensors.append(torch.from_numpy(_flax_value(out, name, param.ndim)).reshape(param.shape))
    return tensors


def _flax_value(flat: dict[str, np.ndarray], torch_name: str, ndim: int) -> np.ndarray:
    """The Flax array behind a torch parameter name (twin naming), in torch layout."""
    parts = torch_name.split(".")
    if parts[0] == "blocks":
        i, layer, kind = parts[1], parts[2], parts[-1]
        if layer == "proj":
            layer = "proj_conv" if parts[3] == "0" else "proj_bn"
        base = f"blocks.{i}.{layer}"
    else:
        base, kind = parts[0], parts[-1]
    if ndim == 4:
        return np.ascontiguousarray(flat[f"{base}.kernel"].transpose(3, 2, 0, 1))
    if base == "linear":
        return np.ascontiguousarray(flat["linear.kernel"].T) if kind == "weight" else flat["linear.bias"]
    return flat[f"{base}.scale"] if kind == "weight" else flat[f"{base}.bias"]


def torch_filter_normalized(direction: list[Any], weights: list[Any]) -> list[Any]:
    """The official recipe (loss-landscape ``net_plotter.normalize_directions_for_weights`` with
    norm='filter', ignore='biasbn'), written independently: 1-D tensors (biases, BatchNorm) are
    zeroed; every other tensor has each slice along dim 0 (an output filter, or a row of the
    linear layer) rescaled to the norm of the same slice of the weights."""
    out = []
    for d, w in zip(direction, weights, strict=True):
        if d.dim() <= 1:
            out.append(d.new_zeros(d.shape))
            continue
        d = d.clone()
        for f in range(d.shape[0]):
            d[f] = d[f] * (w[f].norm() / (d[f].norm() + 1e-10))
        out.append(d)
    return out


def _torch_eig_removed(torch: Any) -> bool:
    try:
        torch.eig(torch.eye(2), eigenvectors=True)
    except (RuntimeError, AttributeError):
        return True
    return False


def _symmetric_eig_shim(a: Any, eigenvectors: bool = False) -> tuple[Any, Any]:
    """``torch.eig``'s old return layout ([n, 2] real/imaginary parts, eigenvectors as columns) from
    ``torch.linalg.eigh``: PyHessian only calls it on the symmetric Lanczos tridiagonal matrix."""
    import torch

    values, vectors = torch.linalg.eigh(a)
    pairs = torch.stack([values, torch.zeros_like(values)], dim=1)
    return pairs, (vectors if eigenvectors else torch.empty(0))


# --- timing helpers -------------------------------------------------------------------------------

def best_of(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    """(minimum wall time over ``repeats`` calls, the last result), results blocked on."""
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = jax.block_until_ready(fn())
        best = min(best, time.perf_counter() - start)
    return best, result


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="128 images, batch 64, fewer steps")
    parser.add_argument("--data", choices=["random", "cifar10"], default="random")
    parser.add_argument("--data-dir", default=None, help="prepared tfds folder for --data cifar10")
    parser.add_argument("--images", type=int, default=None)
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--out", default=None, help="CSV file for the table")
    args = parser.parse_args(argv)

    import torch
    from pyhessian import hessian as pyhessian_hessian

    torch.set_num_threads(args.threads)
    if not hasattr(torch, "eig") or _torch_eig_removed(torch):
        torch.eig = _symmetric_eig_shim  # PyHessian 0.1's density() calls torch.eig (removed in torch 1.9)
    quick = args.quick
    n_images = args.images or (128 if quick else 512)
    batch = 64 if quick else 128
    grid_n = 5 if quick else 11
    lanczos_m, slq_m, trace_m = (10, 20, 12) if quick else (20, 90, 81)

    model = registry.build("resnet20", rngs=nnx.Rngs(seeds.derive(ROOT_SEED, "anchors", "resnet20")))
    if args.data == "cifar10":
        from shared import data as datasets

        train = datasets.load("cifar10", "train", data_dir=args.data_dir)
        x_np, y_np = np.asarray(train.x[:n_images], np.float32), np.asarray(train.y[:n_images])
    else:
        rng = seeds.numpy_rng(ROOT_SEED, "anchors", "images")
        x_np = rng.standard_normal((n_images, 32, 32, 3)).astype(np.float32)
        y_np = rng.integers(0, 10, n_images)
    obj, params = surface.from_model(model, (jnp.asarray(x_np), jnp.asarray(y_np)), bn_mode="eval",
                                     batch_size=batch)
    net = torch_twin(model, params, obj.state)
    xt = torch.from_numpy(x_np).permute(0, 3, 1, 2).contiguous()
    yt = torch.from_numpy(np.array(y_np, np.int64))
    loader = [(xt[i:i + batch], yt[i:i + batch]) for i in range(0, n_images, batch)]
    criterion = torch.nn.CrossEntropyLoss()
    flat, unravel = ravel_pytree(params)
    n_params = int(flat.size)
    rows: list[dict[str, Any]] = []

    # floors: one forward, one forward-and-backward over all images, each side
    loss_jit = jax.jit(lambda o, p: o(p))
    vg_jit = jax.jit(lambda o, p: jax.value_and_grad(o)(p))
    best_of(lambda: loss_jit(obj, params), 1)
    best_of(lambda: vg_jit(obj, params), 1)
    ours_fwd, ours_loss = best_of(lambda: loss_jit(obj, params), max(args.repeats, 2))
    ours_fb, _ = best_of(lambda: vg_jit(obj, params), max(args.repeats, 2))

    def torch_loss() -> float:
        with torch.no_grad():
            return sum(float(criterion(net(xb), yb)) * len(yb) for xb, yb in loader) / n_images

    def torch_fb() -> None:
        net.zero_grad()
        for xb, yb in loader:
            (criterion(net(xb), yb) * len(yb) / n_images).backward()

    torch_loss()
    theirs_fwd, theirs_loss = best_of(torch_loss, max(args.repeats, 2))
    theirs_fb, _ = best_of(torch_fb, max(args.repeats, 2))

    def row(task: str, work: str, ours: float, theirs: float | None, passes: float, agree: str,
            floor: str = "fb", note: str = "") -> None:
        """``passes`` forward-and-backward passes (``floor="fb"``) or forward passes ("fwd") per side."""
        f_ours, f_theirs = (ours_fb, theirs_fb) if floor == "fb" else (ours_fwd, theirs_fwd)
        rows.append(dict(
            task=task, work=work, ours_s=round(ours, 3), theirs_s=None if theirs is None else round(theirs, 3),
            ratio=None if theirs is None else round(ours / theirs, 3),
            ours_per_floor=round(ours / (passes * f_ours), 2),
            theirs_per_floor=None if theirs is None else round(theirs / (passes * f_theirs), 2),
            agreement=agree, peak_rss_mb=round(peak_rss_mb()), note=note or f"floor: {passes:g} x {floor} pass",
        ))
        print(f"  {task}: ours {ours:.2f} s, theirs {theirs if theirs is None else round(theirs, 2)} s; {agree}",
              flush=True)

    rows.append(dict(task="forward", work=f"{n_images} images", ours_s=round(ours_fwd, 3),
                     theirs_s=round(theirs_fwd, 3), ratio=round(ours_fwd / theirs_fwd, 3), ours_per_floor=1.0,
                     theirs_per_floor=1.0, agreement=f"|Δ loss| = {abs(float(ours_loss) - theirs_loss):.2e}",
                     peak_rss_mb=round(peak_rss_mb()), note=f"fwd+bwd floor: ours {ours_fb:.2f} s, "
                                                            f"theirs {theirs_fb:.2f} s"))
    print(f"  forward: ours {ours_fwd:.2f} s, theirs {theirs_fwd:.2f} s", flush=True)

    # one HVP on the same vector
    op = hessian_of(obj, params)
    v = jax.random.normal(seeds.derive(ROOT_SEED, "anchors", "v"), (n_params,), flat.dtype)
    v_t = to_torch_layout(model, unravel(v), net)
    ph = pyhessian_hessian(net, criterion, dataloader=loader, cuda=False)
    best_of(lambda: apply(op, v), 1)
    t_ours, hv = best_of(lambda: apply(op, v), args.repeats)
    t_theirs, (_, hv_t) = best_of(lambda: ph.dataloader_hv_product(v_t), args.repeats)
    hv_ours_t = to_torch_layout(model, unravel(hv), net)
    num = sum(float(((a - b) ** 2).sum()) for a, b in zip(hv_ours_t, hv_t, strict=True))
    den = sum(float((b**2).sum()) for b in hv_t)
    row("hvp", f"1 HVP, {n_params:,} params", t_ours, t_theirs, 1, f"rel. L2 error {np.sqrt(num / den):.1e}")

    def bare_hvp() -> float:
        """One bare jitted HVP, timed again now (best of 2): the per-matvec reference of the rows
        that loop over matvecs, measured beside them in the same process."""
        return best_of(lambda: apply(op, v), 2)[0]

    def per_matvec_note(total: float, matvecs: float, hvp_now: float) -> str:
        return (f"floor: {matvecs:g} x fb pass; per matvec {total / matvecs:.3f} s vs a bare HVP timed right after "
                f"{hvp_now:.3f} s ({total / matvecs / hvp_now:.2f}x)")

    # filter-normalized surface from the same raw Gaussian directions
    raw1 = directions.gaussian_like(params, seeds.derive(ROOT_SEED, "anchors", "d1"))
    raw2 = directions.gaussian_like(params, seeds.derive(ROOT_SEED, "anchors", "d2"))
    d1 = directions.normalize_direction(raw1, params)
    d2 = directions.normalize_direction(raw2, params)
    coords = np.linspace(-1.0, 1.0, grid_n)
    surface.plane(obj, params, d1, d2, coords, coords[:1], chunk_size=grid_n)  # compile outside the timing
    t_ours, land = best_of(lambda: surface.plane(obj, params, d1, d2, coords, coords, chunk_size=grid_n),
                           args.repeats)
    weights = [p_.detach().clone() for p_ in net.parameters()]
    td1 = torch_filter_normalized(to_torch_layout(model, raw1, net), weights)
    td2 = torch_filter_normalized(to_torch_layout(model, raw2, net), weights)

    def torch_surface() -> np.ndarray:
        values = np.zeros((grid_n, grid_n))
        for j, b in enumerate(coords):
            for i, a in enumerate(coords):
                with torch.no_grad():
                    for p_, w, e1, e2 in zip(net.parameters(), weights, td1, td2, strict=True):
                        p_.copy_(w + a * e1 + b * e2)
                values[j, i] = torch_loss()
        with torch.no_grad():
            for p_, w in zip(net.parameters(), weights, strict=True):
                p_.copy_(w)
        return values

    t_theirs, values = best_of(torch_surface, args.repeats)
    ours_values = np.asarray(land.table["loss"]).reshape(grid_n, grid_n)
    row("surface", f"{grid_n}x{grid_n} filter-normalized plane", t_ours, t_theirs, grid_n**2,
        f"max |Δ loss| {np.max(np.abs(ours_values - values)):.1e}", floor="fwd")

    # reference top eigenvalue for the accuracy of the power iterations
    reference = float(lanczos_eigs(op, seeds.derive(ROOT_SEED, "anchors", "ref"), k=1,
                                   num_steps=min(40, n_params)).top.eigenvalues[0])
    t_ours, pw = best_of(lambda: power_iteration(op, seeds.derive(ROOT_SEED, "anchors", "power"), max_iters=100,
                                                 rtol=1e-2), args.repeats)
    torch.manual_seed(0)
    hv_calls = {"n": 0}
    hv_product = ph.dataloader_hv_product

    def counted_hv_product(v: Any) -> Any:  # PyHessian's own stopping rule sets its matvec count
        hv_calls["n"] += 1
        return hv_product(v)

    ph.dataloader_hv_product = counted_hv_product
    t_theirs, (ev, _) = best_of(lambda: ph.eigenvalues(maxIter=100, tol=1e-3), args.repeats)
    ph.dataloader_hv_product = hv_product
    theirs_matvecs = hv_calls["n"] // args.repeats
    ours_err = abs(float(pw.eigenvalue) - reference) / abs(reference)
    theirs_err = abs(ev[0] - reference) / abs(reference)
    row("power", f"top eigenvalue (ours {int(pw.num_matvecs)} matvecs, theirs {theirs_matvecs})", t_ours, t_theirs,
        float(pw.num_matvecs),
        f"rel. error vs 40-step Lanczos: ours {ours_err:.1e}, theirs {theirs_err:.1e}",
        note=per_matvec_note(t_ours, float(pw.num_matvecs), bare_hvp()))

    t_ours, eig = best_of(lambda: lanczos_eigs(op, seeds.derive(ROOT_SEED, "anchors", "lanczos"), k=1,
                                               num_steps=lanczos_m), args.repeats)
    torch.manual_seed(0)
    t_theirs, (nodes_t, _) = best_of(lambda: ph.density(iter=lanczos_m, n_v=1), args.repeats)
    top_t = max(nodes_t[0])
    row("lanczos", f"{lanczos_m} steps", t_ours, t_theirs, lanczos_m,
        f"|Δ top Ritz| / top {abs(float(eig.top.eigenvalues[0]) - top_t) / abs(top_t):.1e}",
        note=per_matvec_note(t_ours, lanczos_m, bare_hvp()))

    t_ours, rules = best_of(lambda: quadrature_rules(op, seeds.derive(ROOT_SEED, "anchors", "slq"),
                                                     num_steps=slq_m, num_draws=1), args.repeats)
    torch.manual_seed(1)
    t_theirs, (nodes_t, _) = best_of(lambda: ph.density(iter=slq_m, n_v=1), args.repeats)
    top_t = max(nodes_t[0])
    row("slq", f"{slq_m} steps x 1 draw", t_ours, t_theirs, slq_m,
        f"|Δ top node| / top {abs(float(np.max(np.asarray(rules[0]))) - top_t) / abs(top_t):.1e}")

    t_ours, tr = best_of(lambda: hutchinson(op, seeds.derive(ROOT_SEED, "anchors", "trace"), num_probes=trace_m),
                         args.repeats)
    torch.manual_seed(2)
    t_theirs, samples_t = best_of(lambda: ph.trace(maxIter=trace_m, tol=0.0), args.repeats)
    se_t = np.std(samples_t, ddof=1) / np.sqrt(len(samples_t))
    gap = abs(float(tr.estimate) - np.mean(samples_t)) / np.hypot(float(tr.stderr), se_t)
    row("hutchinson", f"{trace_m} probes", t_ours, t_theirs, trace_m,
        f"|Δ estimate| = {gap:.2f} combined standard errors")
    m3 = trace_m - trace_m % 3
    t_ours, tpp = best_of(lambda: hutch_plus_plus(op, seeds.derive(ROOT_SEED, "anchors", "hpp"), num_matvecs=m3),
                          args.repeats)
    row("hutch++", f"{m3} matvecs (theirs: Hutchinson, same matvecs)", t_ours, t_theirs * m3 / trace_m, m3,
        f"estimate {float(tpp.estimate):.4g} ± {float(tpp.stderr):.2g} vs Hutchinson {np.mean(samples_t):.4g} "
        f"± {se_t:.2g}")

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    header = (f"{time.strftime('%Y-%m-%d')}, commit {commit}, {platform.processor() or platform.machine()}, "
              f"JAX {jax.__version__} ({jax.default_backend()}), torch {torch.__version__} "
              f"({args.threads} threads), ResNet-20 ({n_params:,} params), {n_images} {args.data} images, "
              f"batch {batch}")
    print(f"\n{header}\n")
    print("| work | setting | this suite (s) | PyTorch tool (s) | ratio | ours / floor | theirs / floor "
          "| agreement | peak RSS (MB) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['task']} | {r['work']} | {r['ours_s']} | {r['theirs_s']} | {r['ratio']} | {r['ours_per_floor']} "
              f"| {r['theirs_per_floor']} | {r['agreement']} | {r['peak_rss_mb']} |")
    for r in rows:
        if "per matvec" in r["note"]:
            print(f"- {r['task']}: {r['note']}")
    if args.out:
        with atomic_path(args.out) as tmp, open(tmp, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=[*rows[0], "header"])
            writer.writeheader()
            writer.writerows({**r, "header": header} for r in rows)


if __name__ == "__main__":
    main()
