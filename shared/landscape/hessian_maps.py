r"""Maps of the extreme Hessian eigenvalues over a plane of parameter space (Li et al. 2018, §6).

Li, Xu, Taylor, Studer, Goldstein (NeurIPS 2018) §6 ("A note of caution: are we really
seeing convexity?") plot, at each point θ(α, β) = θ* + α δ + β η of a 2D grid,

    |λ_min / λ_max|   of ∇²L(θ(α, β)) (the Hessian of the full loss, not of the 2D slice),

small (blue) where the loss is locally convex and large (yellow) where it has significant
negative curvature. Their code (``hess_vec_prod.min_max_hessian_eigs``) calls scipy's
``eigsh`` twice on a Hessian-vector-product operator, the second time shifted by λ_max to
reach λ_min. Here one Lanczos run of ``num_steps`` matvecs per point
(:func:`shared.curvature.lanczos_eigs`, full reorthogonalisation) gives both extremes with
their residuals ‖Hy − θy‖, which bound the distance to an eigenvalue; λ_min (the most
negative) converges more slowly than λ_max, so read the residual columns before the map.
Each point's Lanczos start vector is drawn from ``fold_in(key, point index)``, so the map does
not depend on chunking, and the map is written chunk by chunk through
:func:`shared.landscape.surface.map_points` so that a killed run resumes.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from shared.curvature.hvp import hessian_operator
from shared.curvature.lanczos import Loop, lanczos_eigs
from shared.landscape.surface import (
    ChunkCallback,
    Objective,
    combine,
    fingerprint,
    grid,
    map_points,
    objective_fingerprint,
    stack,
)


def extreme_eigenvalues(
    objective: Objective, params: Any, key: jax.Array, *, num_steps: int = 20, loop: Loop = "auto",
    rtol: float = 1e-3,
) -> dict[str, float]:
    """λ_max, λ_min of ∇²L(θ) from one Lanczos run, with residuals and convergence flags."""
    op = hessian_operator(objective.batch_loss, params, objective.data, reduction="mean",
                          unroll_batches=objective.unroll_batches)
    res = lanczos_eigs(op, key, k=1, num_steps=min(num_steps, op.size), rtol=rtol, loop=loop)
    lmax, lmin = float(res.top.eigenvalues[0]), float(res.bottom.eigenvalues[0])
    return {
        "lambda_max": lmax,
        "lambda_min": lmin,
        "ratio": abs(lmin / lmax) if lmax != 0 else float("nan"),
        "residual_max": float(res.top.residuals[0]),
        "residual_min": float(res.bottom.residuals[0]),
        "converged_max": float(bool(res.top.converged[0])),
        "converged_min": float(bool(res.bottom.converged[0])),
    }


def eigenvalue_map(
    objective: Objective,
    origin: Any,
    d1: Any,
    d2: Any,
    alphas: np.ndarray | list[float],
    betas: np.ndarray | list[float],
    key: jax.Array,
    *,
    num_steps: int = 20,
    loop: Loop = "auto",
    rtol: float = 1e-3,
    workdir: str | Path | None = None,
    name: str = "hessian_map",
    spec: Mapping[str, Any] | None = None,
    chunk_size: int = 8,
    on_chunk: ChunkCallback | None = None,
) -> pd.DataFrame:
    """Table (alpha, beta, lambda_max, lambda_min, ratio = |λ_min/λ_max|, residuals, converged flags).

    One Lanczos run per grid point (module docstring). ``loop="python"`` is the faster
    choice for conv nets on CPU (see ``shared/curvature/lanczos.py``). The BatchNorm mode is
    the objective's (``objective.bn_mode``).
    """
    coords = grid(alphas, betas)
    directions = stack([d1, d2])
    full_spec = {
        **(spec or {}),
        "objective": objective_fingerprint(objective),
        "origin": fingerprint(origin),
        "directions": [fingerprint(d1), fingerprint(d2)],
        "key": fingerprint(jax.random.key_data(key)),
        "num_steps": num_steps,
        "rtol": rtol,
    }
    point_params = jax.jit(combine)

    def compute(block: np.ndarray, start: int) -> dict[str, np.ndarray]:
        rows = []
        for i, c in enumerate(block):
            params = point_params(origin, directions, jnp.asarray(c))
            rows.append(extreme_eigenvalues(objective, params, jax.random.fold_in(key, start + i),
                                            num_steps=num_steps, loop=loop, rtol=rtol))
        return {k: np.array([r[k] for r in rows]) for k in rows[0]}

    table, _ = map_points(coords, ("alpha", "beta"), compute, chunk_size=chunk_size, workdir=workdir, name=name,
                          spec=full_spec, on_chunk=on_chunk)
    return table
