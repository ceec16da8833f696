"""Sharpness measures and reparametrisations: Keskar et al.'s Metric 2.1, Hessian λ_max and
trace, Kwon et al.'s adaptive sharpness, and Dinh et al.'s function-preserving rescalings."""

from shared.sharpness.keskar import (
    LBFGSB_OPTIONS,
    KeskarResult,
    NoProgressError,
    NoProgressWarning,
    box_bound,
    keskar_sharpness,
    random_subspace,
)
from shared.sharpness.measures import (
    AdaptiveSharpness,
    adaptive_sharpness,
    ball_sharpness,
    hessian_of,
    hessian_trace,
    top_eigenvalues,
)
from shared.sharpness.reparametrize import (
    alpha_scale,
    get_leaf,
    relative_change,
    rescale_layers,
    scale_before_batchnorm,
    scale_filters,
    update_leaf,
)

__all__ = [
    "AdaptiveSharpness",
    "KeskarResult",
    "LBFGSB_OPTIONS",
    "NoProgressError",
    "NoProgressWarning",
    "adaptive_sharpness",
    "alpha_scale",
    "ball_sharpness",
    "box_bound",
    "get_leaf",
    "hessian_of",
    "hessian_trace",
    "keskar_sharpness",
    "random_subspace",
    "relative_change",
    "rescale_layers",
    "scale_before_batchnorm",
    "scale_filters",
    "top_eigenvalues",
    "update_leaf",
]
