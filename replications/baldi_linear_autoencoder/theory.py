"""Baldi & Hornik (1989): the closed-form critical points of the linear autoencoder.

Convention (used everywhere in this module, as in the paper §2): the error is a
SUM over the T training patterns and the covariance is a SUM too,

    E(A, B) = Σ_t ‖x_t − A B x_t‖² = tr[(I − AB) Σ (I − AB)ᵀ],   Σ = Σ_t x_t x_tᵀ,

with B (p×n) the encoder and A (n×p) the decoder (auto-associative case, Y = X,
so the paper's Σ_YX Σ_XX⁻¹ Σ_XY is Σ_XX = Σ). λ_1 > … > λ_n are the eigenvalues
of Σ with orthonormal eigenvectors u_1, …, u_n.

Critical points (the paper's Theorem / Fact 1–2, with the rank-deficient ones of
its §3): for an index set I with |I| = r ≤ p and any invertible p×p matrix C,

    A = [U_I, 0] C,    B = C⁻¹ [U_I, 0]ᵀ,    W = AB = P_{U_I},
    E(I) = tr Σ − Σ_{i∈I} λ_i.

Hessian inertia at I (derived in this module's README.md): with J = {1..n} \\ I,

    index(I)   = #{(i, k) : i ∈ I, k ∈ J, λ_k > λ_i} + (p − r)(n − r),
    nullity(I) = r² + 2 r (p − r),

so I = {1, …, p} is the only critical point with index 0 (the global minimum,
up to GL(p)); every other one is a saddle with a strictly negative eigenvalue.
With C orthogonal and coordinates in the eigenbasis the spectrum is known
exactly (``hessian_spectrum_theory``), which the tests use as ground truth.

Singular Σ (real data: digits has pixels that never vary). The paper assumes Σ
invertible; its problem is the one on V = range(Σ), where every pattern lives.
With P the orthogonal projector onto V and W = AB,

    E(W) = E_V(W) + ‖(I − P) W Σ^{1/2}‖²_F,   E_V(W) = ‖P (I − W) Σ^{1/2}‖²_F = E(P W P),

so E never sees W's inputs from null(Σ) (W (I − P): the encoder's columns there,
which gradient descent never moves), and E_V also drops W's outputs into null(Σ)
(the decoder's rows there). ``range_loss`` is E_V; its minimum is Σ_{i>p} λ_i too.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence

import numpy as np


def index_sets(n: int, p: int) -> Iterator[tuple[int, ...]]:
    """Every I ⊂ {0..n−1} with |I| ≤ p (0-based), smallest sizes first."""
    for r in range(p + 1):
        yield from itertools.combinations(range(n), r)


def critical_loss(eigenvalues: Sequence[float], index_set: Sequence[int]) -> float:
    """E(I) = tr Σ − Σ_{i∈I} λ_i (sum convention)."""
    lam = np.asarray(eigenvalues, dtype=np.float64)
    return float(lam.sum() - lam[list(index_set)].sum())


def hessian_index(eigenvalues: Sequence[float], index_set: Sequence[int], p: int) -> int:
    """Number of strictly negative Hessian eigenvalues at critical point I."""
    lam = np.asarray(eigenvalues, dtype=np.float64)
    n, r = lam.size, len(index_set)
    kept = set(index_set)
    crossings = sum(1 for i in kept for k in range(n) if k not in kept and lam[k] > lam[i])
    return crossings + (p - r) * (n - r)


def hessian_nullity(n: int, p: int, r: int) -> int:
    """Number of zero Hessian eigenvalues at a critical point of rank r (distinct λ)."""
    del n
    return r * r + 2 * r * (p - r)


def hessian_spectrum_theory(eigenvalues: Sequence[float], index_set: Sequence[int], p: int) -> np.ndarray:
    """All 2np Hessian eigenvalues at I for C orthogonal (sorted ascending).

    Blocks of the quadratic form of E around the critical point (README.md):
    kept pair (i, j ∈ I): {4λ_j, 0}; live unit i with discarded k:
    eig of 2[[λ_i, −λ_k], [−λ_k, λ_k]]; dead unit with discarded k: ±2λ_k; dead
    unit with kept k: {0, 0}.
    """
    lam = np.asarray(eigenvalues, dtype=np.float64)
    n = lam.size
    kept = list(index_set)
    dropped = [k for k in range(n) if k not in kept]
    out: list[float] = []
    for _i in kept:
        for j in kept:
            out += [4 * lam[j], 0.0]
    for i in kept:
        for k in dropped:
            out += list(np.linalg.eigvalsh(2 * np.array([[lam[i], -lam[k]], [-lam[k], lam[k]]])))
    dead = p - len(kept)
    for _ in range(dead):
        for k in dropped:
            out += [2 * lam[k], -2 * lam[k]]
        for _k in kept:
            out += [0.0, 0.0]
    return np.sort(np.asarray(out))


def critical_point(
    eigenvectors: np.ndarray, index_set: Sequence[int], p: int, mixing: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(A, B) = ([U_I, 0] C, C⁻¹ [U_I, 0]ᵀ) for the invertible mixing matrix C (p×p)."""
    n = eigenvectors.shape[0]
    padded = np.zeros((n, p))
    padded[:, : len(index_set)] = eigenvectors[:, list(index_set)]
    A = padded @ mixing
    B = np.linalg.solve(mixing, padded.T)
    return A, B


def random_mixing(rng: np.random.Generator, p: int, cond: float = 4.0) -> np.ndarray:
    """A random invertible C = Q₁ diag(s) Q₂ with singular values in [1/√cond, √cond]."""
    q1, _ = np.linalg.qr(rng.standard_normal((p, p)))
    q2, _ = np.linalg.qr(rng.standard_normal((p, p)))
    s = np.exp(rng.uniform(-0.5, 0.5, size=p) * np.log(cond))
    return q1 @ np.diag(s) @ q2


def principal_angles(basis_a: np.ndarray, basis_b: np.ndarray) -> np.ndarray:
    """Principal angles (radians, ascending) between the column spaces of two n×p matrices."""
    qa, _ = np.linalg.qr(basis_a)
    qb, _ = np.linalg.qr(basis_b)
    cosines = np.clip(np.linalg.svd(qa.T @ qb, compute_uv=False), -1.0, 1.0)
    return np.sort(np.arccos(cosines))


def synthetic_patterns(rng: np.random.Generator, spectrum: Sequence[float], samples: int) -> np.ndarray:
    """X (samples × n) whose sum-covariance Xᵀ X has exactly the given eigenvalues.

    X = Q diag(√λ) Uᵀ with Q (samples × n) orthonormal columns and U a random
    rotation, so Xᵀ X = U diag(λ) Uᵀ.
    """
    lam = np.asarray(spectrum, dtype=np.float64)
    n = lam.size
    if samples < n:
        raise ValueError(f"samples ({samples}) must be >= n ({n})")
    q, _ = np.linalg.qr(rng.standard_normal((samples, n)))
    u, _ = np.linalg.qr(rng.standard_normal((n, n)))
    return q @ np.diag(np.sqrt(lam)) @ u.T


ZERO_RTOL = 1e-9  # an eigenvalue of Σ counts as zero when λ <= 1e-9·λ_1, as a Hessian's does


def range_mask(eigenvalues: Sequence[float]) -> np.ndarray:
    """Which eigenvalues of Σ span its range: λ > 1e-9·max|λ|; the others span null(Σ). (Digits:
    its zero eigenvalues come out below 1e-17 λ_1, its smallest nonzero one is 2e-6 λ_1.)"""
    lam = np.asarray(eigenvalues, dtype=np.float64)
    return lam > ZERO_RTOL * np.max(np.abs(lam))


def range_loss(eigenvalues: Sequence[float], eigenvectors: np.ndarray, A: np.ndarray, B: np.ndarray,
               range_only: bool = True) -> np.ndarray:
    """E_V = ‖P (I − AB) Σ^{1/2}‖²_F, the loss restricted to V = range(Σ) (module doc); with
    ``range_only=False`` the whole E = ‖(I − AB) Σ^{1/2}‖²_F. Σ = U diag(λ) Uᵀ is given by its
    eigenvalues and eigenvectors (columns); A (…, n, p) and B (…, p, n) may carry leading run axes.

    Computed in the eigenbasis from the residual itself, R = Uᵀ(I − AB)U, as
    Σ_{j, k} λ_k R_jk² over the rows j of V: no cancellation against tr Σ."""
    lam = np.clip(np.asarray(eigenvalues, dtype=np.float64), 0.0, None)
    U = np.asarray(eigenvectors, dtype=np.float64)
    residual = np.eye(lam.size) - (U.T @ np.asarray(A)) @ (np.asarray(B) @ U)
    rows = range_mask(lam) if range_only else np.ones(lam.size, dtype=bool)
    return np.sum(residual[..., rows, :] ** 2 * lam, axis=(-2, -1))
