r"""Lanczos tridiagonalisation with full reorthogonalisation, and Ritz pairs from it.

After m steps from a unit vector q₁ the Lanczos (1950) recurrence

    β_j q_{j+1} = A q_j − α_j q_j − β_{j−1} q_{j−1},   α_j = q_jᵀ A q_j,

gives an orthonormal basis Q = [q₁ … q_m] and the tridiagonal T = QᵀAQ with diagonal α and
off-diagonal β, so that A Q = Q T + β_m q_{m+1} e_mᵀ. For an eigenpair T s = θ s the Ritz
pair (θ, y = Q s) has residual ‖A y − θ y‖ = β_m |s_m| (Parlett, *The Symmetric Eigenvalue
Problem*, 1998, ch. 13), the diagnostic reported with every Ritz value here; some
eigenvalue of A lies within that residual of θ.

In floating point the q_j lose orthogonality exactly as Ritz values converge (Paige 1976,
"Error analysis of the Lanczos algorithm for tridiagonalizing a symmetric matrix"),
which produces spurious copies of converged eigenvalues. Every step is therefore fully
reorthogonalised against the stored basis, with two passes of classical Gram–Schmidt
("twice is enough", Kahan and Parlett). If β_j falls to rounding level (an invariant subspace;
exact for m ≥ the number of distinct eigenvalues the start vector sees) the recurrence
restarts from a random vector orthogonal to the basis and stores β_j = 0: T becomes block
diagonal, every Ritz value stays an eigenvalue estimate, and the quadrature weights
(squared first components, see ``slq.py``) of the new blocks sum to zero.

With ``loop="fori"`` the whole iteration is one ``lax.fori_loop`` over a
preallocated [m, n] basis under ``jax.jit``; the operator is a pytree argument, so new
parameters or data reuse the compiled code. ``loop="python"`` runs the same jitted step
(with the basis donated, so it is updated in place) m times from the host. The reason is
an XLA:CPU limitation (jax-ml/jax#12868, still open): convolutions inside a loop body get
a slow layout, and we measured the gradient convolutions of a small conv net 5–30× slower
inside ``fori_loop``/``scan`` than outside. The default ``loop="auto"`` (``resolve_loop``)
therefore takes the host loop on a CPU and the compiled loop on accelerators.

Choice of implementation: our own, with ``matfree`` as an independent cross-check in
``tests/test_curvature_lanczos.py`` (same tridiagonal matrix from the same start vector).
``matfree.decomp.tridiag_sym(m, reortho="full")`` computes the same T (it runs Arnoldi and
symmetrises the Hessenberg matrix), but it divides by β without a guard: after an
invariant Krylov subspace (a diagonal test operator with few distinct eigenvalues, or many
steps on a low-rank Hessian) it continues from amplified rounding noise. On
diag(1, 2, 3, −5), each eigenvalue 10-fold, from the all-ones vector with 10 steps
(matfree 0.6.3) it returned Ritz values −23.5 and 26.7, far outside the spectrum [−5, 3].
We also want the residual norm β_m, the restart count, the host-loop mode and the algebraic
ordering of Ritz values as first-class results, and results as frozen dataclasses with
diagnostics (as hessian-eigenthings' ``EigenResult``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from typing import Literal

import jax
import jax.numpy as jnp

from shared.curvature.failures import require_finite
from shared.curvature.operators import Operator

Loop = Literal["auto", "fori", "python"]


def resolve_loop(loop: Loop, op: Operator) -> Literal["fori", "python"]:
    """``"auto"`` (the default of every Lanczos, SLQ and power-iteration entry point): the host
    loop on a CPU, where a matvec inside ``fori_loop`` runs convolutions 5–30× slower (module
    docstring), unless the call is itself being traced (under ``jit``/``vmap`` only the compiled
    loop can run); ``fori`` on accelerators. ``"fori"``/``"python"`` force one."""
    if loop != "auto":
        return loop
    traced = any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree_util.tree_leaves(op.args))
    return "python" if jax.default_backend() == "cpu" and not traced else "fori"

# β_j ≤ BREAKDOWN_FACTOR · eps · ‖A‖ₑₛₜ counts as an invariant subspace.
BREAKDOWN_FACTOR = 100.0


@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class LanczosDecomposition:
    """A Q = Q T + β_m q_{m+1} e_mᵀ: T = tridiag(betas, alphas, betas), Q = ``basis`` rows.

    ``residual_norm`` is β_m; ``num_restarts`` counts invariant subspaces met (β_j set to 0).
    """

    alphas: jax.Array
    betas: jax.Array
    residual_norm: jax.Array
    basis: jax.Array
    num_restarts: jax.Array

    @property
    def num_steps(self) -> int:
        return int(self.alphas.shape[-1])

    def tridiagonal(self) -> jax.Array:
        """The dense m×m matrix T (works on batched decompositions too)."""
        return tridiagonal(self.alphas, self.betas)


def tridiagonal(alphas: jax.Array, betas: jax.Array) -> jax.Array:
    """Dense symmetric tridiagonal matrix from its diagonal [..., m] and off-diagonal [..., m−1]."""
    m = alphas.shape[-1]
    eye = jnp.eye(m, dtype=alphas.dtype)
    upper = jnp.eye(m, k=1, dtype=alphas.dtype)
    padded = jnp.concatenate([betas, jnp.zeros((*betas.shape[:-1], 1), betas.dtype)], axis=-1)
    off = upper * padded[..., :, None]
    return alphas[..., :, None] * eye + off + jnp.swapaxes(off, -1, -2)


HIGHEST = jax.lax.Precision.HIGHEST  # no TF32/bf16 passes on GPU/TPU for the projections


def _orthogonalise(basis: jax.Array, w: jax.Array) -> jax.Array:
    """w − QQᵀw twice (classical Gram–Schmidt, two passes); unfilled rows of Q are zero."""
    for _ in range(2):
        w = w - jnp.matmul(jnp.matmul(basis, w, precision=HIGHEST), basis, precision=HIGHEST)
    return w


def _init_state(op: Operator, key: jax.Array, v0: jax.Array | None, num_steps: int) -> tuple:
    n, dtype = op.size, op.dtype
    if v0 is None:
        v0 = jax.random.normal(jax.random.fold_in(key, 0), (n,), dtype)
    zero = jnp.zeros((), dtype)
    return (
        jnp.zeros((num_steps, n), dtype), jnp.zeros((num_steps,), dtype),
        jnp.zeros((num_steps,), dtype), v0.astype(dtype) / jnp.linalg.norm(v0),
        jnp.zeros((n,), dtype), zero, zero, jnp.zeros((), jnp.int32),
    )


def _step(op: Operator, key: jax.Array, j: jax.Array, state: tuple) -> tuple:
    """Step j: store q_j, α_j = q_jᵀAq_j, fully reorthogonalised residual, β_j, q_{j+1}."""
    basis, alphas, betas, q, q_prev, beta_prev, anorm, restarts = state
    m, n = basis.shape
    dtype = basis.dtype
    basis = basis.at[j].set(q)
    w = op.matvec(q)
    alpha = jnp.vdot(q, w)
    w = _orthogonalise(basis, w - alpha * q - beta_prev * q_prev)
    beta = jnp.linalg.norm(w)
    anorm = jnp.maximum(anorm, jnp.abs(alpha) + beta + beta_prev)
    broke = (beta <= BREAKDOWN_FACTOR * jnp.finfo(dtype).eps * anorm) & (j < m - 1)

    def restart(basis: jax.Array, j: jax.Array) -> jax.Array:
        r = jax.random.normal(jax.random.fold_in(key, j + 1), (n,), dtype)
        r = _orthogonalise(basis, r)
        return r / jnp.linalg.norm(r)

    def proceed(basis: jax.Array, j: jax.Array) -> jax.Array:
        return w / jnp.where(beta > 0, beta, 1)

    q_next = jax.lax.cond(broke, restart, proceed, basis, j)
    beta = jnp.where(broke, jnp.zeros((), dtype), beta)
    return (
        basis, alphas.at[j].set(alpha), betas.at[j].set(beta),
        q_next, q, beta, anorm, restarts + broke.astype(jnp.int32),
    )


def _finish(state: tuple) -> LanczosDecomposition:
    basis, alphas, betas, *_, restarts = state
    return LanczosDecomposition(
        alphas, betas[..., :-1], betas[..., -1], basis, restarts
    )


def run_fori(
    op: Operator, key: jax.Array, v0: jax.Array | None, num_steps: int
) -> LanczosDecomposition:
    """All steps in one ``lax.fori_loop``; traceable, for use inside other jitted code."""
    state = _init_state(op, key, v0, num_steps)
    step = lambda j, s: _step(op, key, j, s)
    return _finish(jax.lax.fori_loop(0, num_steps, step, state))


_init_jit = jax.jit(_init_state, static_argnames=("num_steps",))
_step_jit = jax.jit(_step, donate_argnames=("state",))
_init_batched = jax.jit(
    jax.vmap(_init_state, in_axes=(None, 0, 0, None)), static_argnums=(3,)
)
_step_batched = jax.jit(jax.vmap(_step, in_axes=(None, 0, None, 0)), donate_argnums=(3,))
_finish_jit = jax.jit(_finish)


def run_host_loop(
    op: Operator, key: jax.Array, v0: jax.Array | None, num_steps: int, batched: bool = False
) -> LanczosDecomposition:
    """Host loop over one jitted step (draws along a leading axis of key/v0 if ``batched``)."""
    init, step = (_init_batched, _step_batched) if batched else (_init_jit, _step_jit)
    state = init(op, key, v0, num_steps) if batched else init(op, key, v0, num_steps=num_steps)
    for j in range(num_steps):
        state = step(op, key, jnp.asarray(j, jnp.int32), state)
    return _finish_jit(state)


def check_steps(op: Operator, num_steps: int, loop: str) -> None:
    """Raise unless 1 ≤ num_steps ≤ n and ``loop`` is known."""
    if not 1 <= num_steps <= op.size:
        raise ValueError(f"num_steps must be in [1, {op.size}], got {num_steps}")
    if loop not in ("fori", "python"):
        raise ValueError(f"loop must be 'auto', 'fori' or 'python', got {loop!r}")


_run_fori_jit = jax.jit(run_fori, static_argnames=("num_steps",))


def lanczos(
    op: Operator,
    key: jax.Array,
    num_steps: int,
    *,
    v0: jax.Array | None = None,
    loop: Loop = "auto",
) -> LanczosDecomposition:
    """m = ``num_steps`` Lanczos steps with full reorthogonalisation (module docstring).

    Starts from ``v0`` (normalised) or, if None, from a Gaussian vector drawn with ``key``;
    ``key`` also draws restart vectors after a breakdown. Cost: m matvecs plus O(m²n) flops
    and an [m, n] basis in memory. ``loop="fori"`` compiles all m steps into one
    ``lax.fori_loop``; ``loop="python"`` runs the same jitted step m times from the host
    (for conv nets on CPU, see the module docstring).
    """
    loop = resolve_loop(loop, op)
    check_steps(op, num_steps, loop)
    if loop == "fori":
        decomp = _run_fori_jit(op, key, v0, num_steps=num_steps)
    else:
        decomp = run_host_loop(op, key, v0, num_steps)
    require_finite("Lanczos", decomp.alphas, decomp.betas)
    return decomp


@partial(jax.tree_util.register_dataclass, data_fields=[
    "eigenvalues", "residuals", "converged", "eigenvectors", "tol"
], meta_fields=["num_matvecs"])
@dataclass(frozen=True)
class EigenResult:
    """Ritz values with diagnostics, in the order documented by the producer.

    ``residuals[i]`` = ‖A yᵢ − θᵢ yᵢ‖ (= β_m |s_{m,i}| for Lanczos), and
    ``converged[i]`` = residuals[i] ≤ ``tol``; some eigenvalue of A lies within residuals[i]
    of θᵢ. ``eigenvectors`` ([k, n] rows, unit norm) is None unless requested.
    """

    eigenvalues: jax.Array
    residuals: jax.Array
    converged: jax.Array
    eigenvectors: jax.Array | None
    tol: jax.Array
    num_matvecs: int = field(default=0)


@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class RitzResult:
    """Top-k Ritz values in descending and bottom-k in ascending ALGEBRAIC order.

    ``top.eigenvalues[0]`` estimates λ_max and ``bottom.eigenvalues[0]`` λ_min (the most
    negative, not the smallest in magnitude). ``ritz_values`` holds all m, ascending.
    """

    top: EigenResult
    bottom: EigenResult
    ritz_values: jax.Array
    decomposition: LanczosDecomposition


def ritz_pairs(decomp: LanczosDecomposition) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(θ ascending, S with T S = S diag θ, residuals β_m |S[m−1, i]|)."""
    theta, s = jnp.linalg.eigh(decomp.tridiagonal())
    return theta, s, jnp.abs(decomp.residual_norm[..., None] * s[..., -1, :])


@partial(jax.jit, static_argnames=("k", "return_vectors"))
def _select(
    decomp: LanczosDecomposition, k: int, rtol: float, return_vectors: bool
) -> RitzResult:
    m = decomp.num_steps
    theta, s, residuals = ritz_pairs(decomp)
    tol = rtol * jnp.max(jnp.abs(theta))

    def pick(idx: jax.Array) -> EigenResult:
        vectors = jnp.matmul(s[:, idx].T, decomp.basis, precision=HIGHEST) if return_vectors else None
        res = residuals[idx]
        return EigenResult(theta[idx], res, res <= tol, vectors, tol, m)

    return RitzResult(pick(jnp.arange(m - 1, m - 1 - k, -1)), pick(jnp.arange(k)), theta, decomp)


def lanczos_eigs(
    op: Operator,
    key: jax.Array,
    *,
    k: int,
    num_steps: int,
    v0: jax.Array | None = None,
    rtol: float = 1e-4,
    return_vectors: bool = False,
    loop: Loop = "auto",
) -> RitzResult:
    """Top-k and bottom-k eigenvalue estimates from one Lanczos run of ``num_steps`` matvecs.

    A Ritz value counts as converged when its residual ≤ ``rtol`` · max|θ| (an estimate of
    ‖A‖), which bounds its absolute error by the same amount.
    """
    if not 1 <= k <= num_steps:
        raise ValueError(f"need 1 <= k <= num_steps, got {k=}, {num_steps=}")
    decomp = lanczos(op, key, num_steps, v0=v0, loop=loop)
    return _select(decomp, k, rtol, return_vectors)
