"""Hessian eigenvalue maps (Li et al. §6) against eigh of the exact Hessian, resume, and plots."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from flax import nnx

from shared.curvature.exact import flat_hessian
from shared.landscape import directions, plots, surface
from shared.landscape.hessian_maps import eigenvalue_map
from shared.models.mlp import MLP

pytestmark = pytest.mark.x64


@pytest.fixture(scope="module")
def problem():
    rng = np.random.default_rng(0)
    data = (rng.normal(size=(30, 4)), rng.integers(0, 3, size=30))
    model = MLP((4, 5, 3), activation_name="tanh", rngs=nnx.Rngs(0), param_dtype=jnp.float64)
    obj, params = surface.from_model(model, data, batch_size=8)
    d1 = directions.random_direction(params, jax.random.key(1))
    d2 = directions.random_direction(params, jax.random.key(2))
    return obj, params, d1, d2


def test_eigenvalue_map_equals_eigh_of_the_exact_hessian(problem, tmp_path):
    obj, params, d1, d2 = problem
    n = sum(w.size for w in jax.tree_util.tree_leaves(params))  # 43: Lanczos with n steps is exact
    alphas, betas = [0.0, 0.7], [-0.4]
    table = eigenvalue_map(obj, params, d1, d2, alphas, betas, jax.random.key(0), num_steps=n,
                           workdir=tmp_path, chunk_size=1)
    assert list(table.columns[:5]) == ["alpha", "beta", "lambda_max", "lambda_min", "ratio"]
    exact = jax.jit(lambda o, p: flat_hessian(o, p))
    for row in table.itertuples():
        p = jax.tree_util.tree_map(lambda w, a, b, r=row: w + r.alpha * a + r.beta * b, params, d1, d2)
        eig = np.linalg.eigvalsh(np.asarray(exact(obj, p)))
        assert row.lambda_max == pytest.approx(eig[-1], rel=1e-8)
        assert row.lambda_min == pytest.approx(eig[0], rel=1e-8, abs=1e-10)
        assert row.ratio == pytest.approx(abs(eig[0] / eig[-1]), rel=1e-7)
        assert row.converged_max == 1.0
    # rerun: every chunk is reused and the table is identical
    again = eigenvalue_map(obj, params, d1, d2, alphas, betas, jax.random.key(0), num_steps=n,
                           workdir=tmp_path, chunk_size=1, on_chunk=lambda i, k, reused: _assert(reused))
    pd.testing.assert_frame_equal(again, table)


def _assert(flag: bool) -> None:
    assert flag


def test_plots_render_every_kind_of_figure(problem):
    obj, params, d1, d2 = problem
    table = surface.plane(obj, params, d1, d2, np.linspace(-1, 1, 4), np.linspace(-1, 1, 3)).table
    line = surface.line(obj, params, d1, np.linspace(-1, 1, 5)).table
    eig = table.assign(ratio=np.linspace(0, 1, len(table)))
    figures = [
        plots.plot_line({"train": line, "test": line}, log_loss=True, title="line"),
        plots.plot_contour(table, levels=np.linspace(0.5, 3, 6)),
        plots.plot_surface_3d(table, zmax=5.0),
        plots.plot_trajectory(table, np.array([[0.5, 0.5], [0.2, 0.1], [0.0, 0.0]]), [0.7, 0.2]),
        plots.plot_eigen_ratio(eig),
    ]
    for fig in figures:
        assert fig.axes
        fig.canvas.draw()
        plt.close(fig)
    a, b, z = plots.to_grid(table)
    assert z.shape == (3, 4) and np.all(np.diff(a) > 0) and np.all(np.diff(b) > 0)
