"""The suite and the PyTorch tools users know agree on the same work (#12): a small ResNet,
its PyTorch twin with the same weights (benchmarks/bench_anchors.py), the same images and the
same directions give the same surface values, the same HVP and the same top eigenvalue.

Skipped where PyTorch or PyHessian is not installed (CI installs neither:
``pip install -r benchmarks/requirements-anchors.txt`` and ``pip install --no-deps pyhessian``).
"""

from __future__ import annotations

import importlib.util

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.flatten_util import ravel_pytree

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("torch") is None or importlib.util.find_spec("pyhessian") is None,
    reason="PyTorch and PyHessian are optional (benchmarks/requirements-anchors.txt)",
)


@pytest.fixture(scope="module")
def twins():  # type: ignore[no-untyped-def]
    import torch

    from benchmarks.bench_anchors import torch_twin
    from shared.landscape import surface
    from shared.models import registry

    torch.set_num_threads(2)
    model = registry.build("resnet", depth=8, rngs=nnx.Rngs(3))  # ResNet-8: one block per stage
    rng = np.random.default_rng(0)
    x = rng.standard_normal((12, 16, 16, 3)).astype(np.float32)
    y = rng.integers(0, 10, 12)
    obj, params = surface.from_model(model, (jnp.asarray(x), jnp.asarray(y)), bn_mode="eval", batch_size=6)
    net = torch_twin(model, params, obj.state)
    xt = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()
    loader = [(xt[i:i + 6], torch.from_numpy(y[i:i + 6].astype(np.int64))) for i in (0, 6)]
    return model, obj, params, net, loader


def _torch_loss(net, loader) -> float:  # type: ignore[no-untyped-def]
    import torch

    with torch.no_grad():
        return sum(float(torch.nn.functional.cross_entropy(net(xb), yb)) * len(yb) for xb, yb in loader) / 12


@pytest.mark.filterwarnings("ignore:Using backward\\(\\) with create_graph=True:UserWarning")  # PyHessian's own
def test_the_same_loss_hvp_and_top_eigenvalue(twins) -> None:  # type: ignore[no-untyped-def]
    import torch
    from pyhessian import hessian

    from benchmarks.bench_anchors import to_torch_layout
    from shared.curvature.operators import apply
    from shared.curvature.power import power_iteration
    from shared.sharpness.measures import hessian_of

    model, obj, params, net, loader = twins
    assert float(obj(params)) == pytest.approx(_torch_loss(net, loader), rel=1e-5)
    flat, unravel = ravel_pytree(params)
    v = jax.random.normal(jax.random.key(0), flat.shape, flat.dtype)
    op = hessian_of(obj, params)
    ours = to_torch_layout(model, unravel(apply(op, v)), net)
    ph = hessian(net, torch.nn.CrossEntropyLoss(), dataloader=loader, cuda=False)
    _, theirs = ph.dataloader_hv_product(to_torch_layout(model, unravel(v), net))
    num = sum(float(((a - b) ** 2).sum()) for a, b in zip(ours, theirs, strict=True))
    den = sum(float((b**2).sum()) for b in theirs)
    assert np.sqrt(num / den) < 1e-4  # float32 on both sides
    ours_top = float(power_iteration(op, jax.random.key(1), max_iters=500, rtol=1e-5).eigenvalue)
    torch.manual_seed(0)
    theirs_top = ph.eigenvalues(maxIter=500, tol=1e-6)[0][0]
    assert ours_top == pytest.approx(theirs_top, rel=1e-3)


def test_the_same_filter_normalized_surface(twins) -> None:  # type: ignore[no-untyped-def]
    import torch

    from benchmarks.bench_anchors import to_torch_layout, torch_filter_normalized
    from shared.landscape import directions, surface

    model, obj, params, net, loader = twins
    raw1 = directions.gaussian_like(params, jax.random.key(2))
    raw2 = directions.gaussian_like(params, jax.random.key(3))
    d1, d2 = (directions.normalize_direction(r, params) for r in (raw1, raw2))
    coords = np.linspace(-1.0, 1.0, 3)
    ours = np.asarray(surface.plane(obj, params, d1, d2, coords, coords).table["loss"]).reshape(3, 3)
    weights = [p.detach().clone() for p in net.parameters()]
    # the reference recipe, written independently, on the same raw directions
    t1 = torch_filter_normalized(to_torch_layout(model, raw1, net), weights)
    t2 = torch_filter_normalized(to_torch_layout(model, raw2, net), weights)
    # and our normalization, mapped to the torch layout, is the same direction
    for a, b in zip(to_torch_layout(model, d1, net), t1, strict=True):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6)
    theirs = np.zeros((3, 3))
    for j, b in enumerate(coords):
        for i, a in enumerate(coords):
            with torch.no_grad():
                for p, w, e1, e2 in zip(net.parameters(), weights, t1, t2, strict=True):
                    p.copy_(w + a * e1 + b * e2)
            theirs[j, i] = _torch_loss(net, loader)
    with torch.no_grad():
        for p, w in zip(net.parameters(), weights, strict=True):
            p.copy_(w)
    np.testing.assert_allclose(ours, theirs, rtol=2e-5, atol=1e-5)
