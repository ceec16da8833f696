"""Curvature tools: exact Hessians for small models, matrix-free estimators for large ones."""

from shared.curvature.gauss_newton import (
    SupervisedLoss,
    ggn_matrix,
    ggn_operator,
    per_example_loss,
    residual_operator,
    supervised_loss,
)
from shared.curvature.hvp import (
    Batches,
    batch_data,
    from_batches,
    full_gradient,
    full_loss,
    hessian_operator,
    hvp,
    reduce_batches,
    seeded_subset,
)
from shared.curvature.lanczos import (
    EigenResult,
    LanczosDecomposition,
    RitzResult,
    lanczos,
    lanczos_eigs,
    ritz_pairs,
)
from shared.curvature.operators import (
    Operator,
    apply,
    callable_operator,
    dense_operator,
    diagonal_operator,
    shifted,
    to_dense,
)
from shared.curvature.power import PowerResult, power_iteration
from shared.curvature.slq import SpectralDensity, gaussian_density, quadrature_rules, slq
from shared.curvature.trace import TraceResult, hutch_plus_plus, hutchinson

__all__ = [
    "Batches",
    "EigenResult",
    "LanczosDecomposition",
    "Operator",
    "PowerResult",
    "RitzResult",
    "SpectralDensity",
    "SupervisedLoss",
    "TraceResult",
    "apply",
    "batch_data",
    "callable_operator",
    "dense_operator",
    "diagonal_operator",
    "from_batches",
    "full_gradient",
    "full_loss",
    "gaussian_density",
    "ggn_matrix",
    "ggn_operator",
    "hessian_operator",
    "hutch_plus_plus",
    "hutchinson",
    "hvp",
    "lanczos",
    "lanczos_eigs",
    "per_example_loss",
    "power_iteration",
    "quadrature_rules",
    "reduce_batches",
    "residual_operator",
    "ritz_pairs",
    "seeded_subset",
    "shifted",
    "slq",
    "supervised_loss",
    "to_dense",
]
