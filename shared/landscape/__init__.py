"""Loss-landscape tools (Li et al. 2018; Keskar et al. 2017 §2.2): directions, lines and
planes of the loss, Hessian eigenvalue maps, and their figures.

    objective, params = surface.from_model(model, (x, y), bn_mode="eval", batch_size=500)
    d1 = directions.random_direction(params, seeds.derive(0, "li", "x"))   # filter-normalised
    d2 = directions.random_direction(params, seeds.derive(0, "li", "y"))
    result = surface.plane(objective, params, d1, d2, alphas, betas, workdir=work)
    plots.plot_contour(result.table)
"""

from shared.landscape.directions import (
    PCADirections,
    between,
    biasbn_mask,
    filter_norms,
    gaussian_like,
    normalize_direction,
    pca_directions,
    project,
    random_direction,
)
from shared.landscape.hessian_maps import eigenvalue_map, extreme_eigenvalues
from shared.landscape.surface import (
    BatchLoss,
    Landscape,
    Objective,
    evaluate_points,
    fingerprint,
    from_apply,
    from_model,
    grid,
    interpolation,
    line,
    map_points,
    plane,
)

__all__ = [
    "BatchLoss",
    "Landscape",
    "Objective",
    "PCADirections",
    "between",
    "biasbn_mask",
    "eigenvalue_map",
    "evaluate_points",
    "extreme_eigenvalues",
    "filter_norms",
    "fingerprint",
    "from_apply",
    "from_model",
    "gaussian_like",
    "grid",
    "interpolation",
    "line",
    "map_points",
    "normalize_direction",
    "pca_directions",
    "plane",
    "project",
    "random_direction",
]
