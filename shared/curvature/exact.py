"""The exact Hessian of a loss over a parameter pytree, and its inertia.

A dense Hessian is a deliberate tool here, for small models only (exact spectra
and the ground truth that matrix-free estimators are tested against): it costs
O(P²) memory and P Hessian-vector products.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree


def flat_hessian(loss: Callable[[Any], jax.Array], params: Any) -> jax.Array:
    """The P×P Hessian of ``loss`` at ``params`` in ``ravel_pytree`` order."""
    flat, unravel = ravel_pytree(params)
    return jax.hessian(lambda v: loss(unravel(v)))(flat)


def flat_gradient(loss: Callable[[Any], jax.Array], params: Any) -> jax.Array:
    flat, unravel = ravel_pytree(params)
    return jax.grad(lambda v: loss(unravel(v)))(flat)


@dataclass(frozen=True)
class Inertia:
    """Counts of negative, zero and positive eigenvalues, with the tolerance used.

    An eigenvalue λ counts as zero when |λ| ≤ ``tol`` = rtol · max|λ|.
    """

    negative: int
    zero: int
    positive: int
    tol: float
    eigenvalues: np.ndarray

    @property
    def min_eigenvalue(self) -> float:
        return float(self.eigenvalues[0])


def inertia(hessian: jax.Array | np.ndarray, rtol: float = 1e-9) -> Inertia:
    """Sylvester inertia of a symmetric matrix from ``numpy.linalg.eigvalsh``."""
    h = np.asarray(hessian, dtype=np.float64)
    h = 0.5 * (h + h.T)
    eig = np.linalg.eigvalsh(h)
    scale = float(np.max(np.abs(eig))) if eig.size else 0.0
    tol = rtol * max(scale, np.finfo(np.float64).tiny)
    return Inertia(
        negative=int(np.sum(eig < -tol)),
        zero=int(np.sum(np.abs(eig) <= tol)),
        positive=int(np.sum(eig > tol)),
        tol=tol,
        eigenvalues=eig,
    )


def relative_gradient_norm(loss: Callable[[Any], jax.Array], params: Any) -> float:
    """‖∇L‖ / (|L| + 1): scale-aware test of criticality."""
    flat, unravel = ravel_pytree(params)
    value, grad = jax.value_and_grad(lambda v: loss(unravel(v)))(flat)
    return float(jnp.linalg.norm(grad) / (jnp.abs(value) + 1.0))
