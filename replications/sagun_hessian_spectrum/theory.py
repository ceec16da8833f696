"""The mathematics of Sagun et al. (2016, 2017) and Papyan (2019) that the module measures.

Notation. Mean cross-entropy L(θ) = (1/N) Σᵢ ℓ(f(θ, xᵢ), yᵢ), logits oᵢ = f(θ, xᵢ) ∈ R^k,
pᵢ = softmax(oᵢ), Jᵢ = ∂oᵢ/∂θ ∈ R^{k×P}. The Hessian splits (Sagun et al. 2017, §2, their
eq. for ∇²L; Schraudolph 2002) into

    H = G + R,   G = (1/N) Σᵢ Jᵢᵀ (diag pᵢ − pᵢpᵢᵀ) Jᵢ,   R = (1/N) Σᵢ Σ_c (p_ic − [yᵢ = c]) ∇²_θ f_c(θ, xᵢ).

Since diag p − ppᵀ = Σ_{c'} p_{c'} (e_{c'} − p)(e_{c'} − p)ᵀ (expand: ppᵀ − 2ppᵀ + diag p),

    G = (1/N) Σᵢ Σ_{c'} p_{ic'} δ_{i,c'} δ_{i,c'}ᵀ,   δ_{i,c'} = Jᵢᵀ(pᵢ − e_{c'}) = ∇_θ ℓ(f(θ, xᵢ), c'),

the second moment of the gradients "as if example i had label c'" (Papyan 2019, §2-3, the
δ_{i,c,c'} of his notation with c = yᵢ). Their class/cross-class means

    δ_{c,c'} = mean_{i: yᵢ = c} δ_{i,c'}

are what Papyan (2019) finds behind the outliers: the top eigenspace of G lies in their span
(``class_mean_directions``, ``captured_fraction``). The logit Hessian diag p − ppᵀ has the
all-ones vector in its kernel, so it has rank ≤ k − 1: k − 1 or k outliers are expected
(shared/papers/CLAIMS.md, Module 4b; never hard-coded here).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# --- the spectrum: bulk, negative mass, outliers (S1-S4) ----------------------------------------

def near_zero_fraction(eig: np.ndarray, rtol: float = 1e-3) -> float:
    """The fraction of eigenvalues with |λ| < rtol · λ_max (Sagun et al. 2016's "bulk at zero";
    λ_max the largest eigenvalue, as the issue defines it)."""
    eig = np.asarray(eig, np.float64)
    scale = float(np.max(eig))
    return float(np.mean(np.abs(eig) < rtol * scale)) if scale > 0 else 1.0


def negative_mass(eig: np.ndarray) -> float:
    """Σ|λ⁻| / Σ|λ|: the share of the spectrum's absolute mass on negative eigenvalues."""
    eig = np.asarray(eig, np.float64)
    total = float(np.sum(np.abs(eig)))
    return float(np.sum(np.abs(eig[eig < 0])) / total) if total > 0 else 0.0


def negative_fraction(eig: np.ndarray, rtol: float = 1e-3) -> float:
    """The fraction of eigenvalues below −rtol · λ_max."""
    eig = np.asarray(eig, np.float64)
    return float(np.mean(eig < -rtol * float(np.max(eig))))


@dataclass(frozen=True)
class OutlierCount:
    """The bulk-edge criterion's answer: ``count`` outliers, the ratio of the gap that separates
    the last of them from the bulk (λ_count / λ_{count+1}, the next one clamped at the floor; the
    largest gap ratio among the candidates when the count is 0), the bulk reference
    e = max(λ_{window+1}, floor) and the gap ratios of the top ``window``."""

    count: int
    ratio: float
    edge: float
    ratios: np.ndarray


def count_outliers(eig: np.ndarray, *, window: int, min_ratio: float, edge_factor: float,
                   floor_rtol: float = 1e-3) -> OutlierCount:
    """The bulk-edge criterion (README, "Counting outliers"); it does not know k.

    Sort the eigenvalues in decreasing order λ₁ ≥ λ₂ ≥ …; floor = ``floor_rtol``·λ₁ (the
    near-zero bulk). The bulk reference is e = max(λ_{w+1}, floor) with w = ``window``: at most w
    eigenvalues can be outliers, so λ_{w+1} lies in the bulk whatever the spikes do (a robust
    point of the bulk's upper part, unmoved by the top w). An index i ≤ w *separates outliers
    from the bulk* when (a) λᵢ ≥ ``edge_factor``·e (λᵢ stands clear above the bulk) and (b) its
    gap ratio rᵢ = λᵢ / max(λ_{i+1}, floor) is at least ``min_ratio``. The count is the deepest
    such i (all of λ₁…λᵢ are outliers), 0 when there is none. The deepest — not the largest — gap:
    a dominant λ₁ followed by smaller outliers has its largest gap below λ₁ but is counted to the
    last outlier; a spike just above the bulk with rᵢ < ``min_ratio`` (a near miss) and gaps inside
    the bulk's upper tail (below ``edge_factor``·e) are never counted.
    """
    lam = np.sort(np.asarray(eig, np.float64))[::-1]
    if lam.size < 2 or lam[0] <= 0:
        return OutlierCount(0, 1.0, float(lam[0]) if lam.size else 0.0, np.zeros(0))
    floor = floor_rtol * lam[0]
    w = min(window, lam.size - 1)
    edge = max(float(lam[w]), floor)
    top = lam[:w]
    ratios = top / np.maximum(lam[1 : w + 1], floor)
    separating = np.flatnonzero((ratios >= min_ratio) & (top >= edge_factor * edge))
    if separating.size == 0:
        return OutlierCount(0, float(np.max(ratios)), edge, ratios)
    count = int(separating[-1]) + 1
    return OutlierCount(count, float(ratios[count - 1]), edge, ratios)


# --- the Gauss-Newton split (S5) ----------------------------------------------------------------

def logit_hessian(p: np.ndarray) -> np.ndarray:
    """∇²_o ℓ = diag p − ppᵀ for a probability vector p (or a batch [..., k])."""
    p = np.asarray(p, np.float64)
    return np.einsum("...i,ij->...ij", p, np.eye(p.shape[-1])) - p[..., :, None] * p[..., None, :]


def gauss_newton_from_jacobians(jac: np.ndarray, p: np.ndarray) -> np.ndarray:
    """G = (1/N) Σᵢ Jᵢᵀ (diag pᵢ − pᵢpᵢᵀ) Jᵢ from Jacobians [N, k, P] and probabilities [N, k]."""
    jac = np.asarray(jac, np.float64)
    return np.einsum("ncp,ncd,ndq->pq", jac, logit_hessian(p), jac) / jac.shape[0]


def residual_share(h: np.ndarray, g: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For the top ``count`` eigenpairs (λᵢ, uᵢ) of H: λᵢ, the Rayleigh quotients uᵢᵀGuᵢ and the
    residual's share uᵢᵀ(H − G)uᵢ / λᵢ (0: the outlier is all Gauss–Newton)."""
    lam, vec = np.linalg.eigh(0.5 * (h + h.T))
    lam, vec = lam[::-1][:count], vec[:, ::-1][:, :count]
    gq = np.einsum("pi,pq,qi->i", vec, g, vec)
    return lam, gq, (lam - gq) / lam


# --- class-mean gradients and principal angles (S7) ---------------------------------------------

def as_if_gradients(jac: np.ndarray, p: np.ndarray) -> np.ndarray:
    """δ_{i,c'} = Jᵢᵀ(pᵢ − e_{c'}) for every example i and label c': [N, k, P]."""
    jac, p = np.asarray(jac, np.float64), np.asarray(p, np.float64)
    k = p.shape[-1]
    resid = p[:, None, :] - np.eye(k)[None]  # [N, c', c]
    return np.einsum("nec,ncp->nep", resid, jac)


def class_mean_directions(jac: np.ndarray, p: np.ndarray, y: np.ndarray, *,
                          cross_only: bool = True) -> np.ndarray:
    """The class/cross-class means δ_{c,c'} = mean_{i: yᵢ=c} δ_{i,c'} as rows: the k(k−1) with
    c ≠ c' (``cross_only``) or all k²."""
    delta = as_if_gradients(jac, p)
    k = p.shape[-1]
    rows: list[np.ndarray] = []
    for c in range(k):
        mean = delta[np.asarray(y) == c].mean(axis=0)  # [k, P]
        rows.extend(mean[e] for e in range(k) if not (cross_only and e == c))
    return np.asarray(rows)


def orthonormal_span(rows: np.ndarray, rtol: float = 1e-8) -> np.ndarray:
    """An orthonormal basis (columns) of the span of ``rows``, by SVD with a relative cutoff."""
    u, s, _ = np.linalg.svd(np.asarray(rows, np.float64).T, full_matrices=False)
    return u[:, s > rtol * (s[0] if s.size else 0.0)]


def principal_cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """cos θⱼ of the principal angles between span(a) and span(b) (columns; Björck & Golub 1973:
    the singular values of QₐᵀQ_b), descending."""
    qa, qb = orthonormal_span(a.T), orthonormal_span(b.T)
    return np.clip(np.linalg.svd(qa.T @ qb, compute_uv=False), 0.0, 1.0)


def captured_fraction(vectors: np.ndarray, span_rows: np.ndarray) -> float:
    """Mean cos² of the principal angles between span(``vectors`` columns) and span(``span_rows``):
    the average share of a unit vector of the first subspace that lies in the second (1: inside;
    a random m-dimensional subspace against an r-dimensional one in R^P gives about r/P)."""
    cos = principal_cosines(vectors, span_rows.T)
    m = vectors.shape[1]
    return float(np.sum(cos[:m] ** 2) / m)


# --- one basin (S6) -----------------------------------------------------------------------------

def barrier(losses: np.ndarray) -> tuple[float, float]:
    """On a loss profile along a line (first and last entries the endpoints): the barrier
    max(L) − max(L(0), L(1)) (0 when the profile never rises above both ends) and the same
    relative to max(L(0), L(1))."""
    losses = np.asarray(losses, np.float64)
    ends = max(losses[0], losses[-1])
    height = max(0.0, float(np.max(losses)) - ends)
    return height, height / ends if ends > 0 else (0.0 if height == 0 else np.inf)


def spiked_spectrum(rng: np.random.Generator, size: int, spikes: list[float], bulk_scale: float,
                    zero_fraction: float) -> np.ndarray:
    """A synthetic spectrum for tests and the README: ``spikes`` plus a bulk of ``size − len(spikes)``
    values, a ``zero_fraction`` of them tiny (|λ| ≤ 1e-6·bulk_scale) and the rest |N(0, bulk_scale²)|
    with a few negative ones."""
    n = size - len(spikes)
    zeros = int(round(zero_fraction * n))
    bulk = np.concatenate([1e-6 * bulk_scale * rng.standard_normal(zeros),
                           bulk_scale * np.abs(rng.standard_normal(n - zeros)) * rng.choice([1, 1, 1, -1], n - zeros)])
    return np.concatenate([np.asarray(spikes, np.float64), bulk])
