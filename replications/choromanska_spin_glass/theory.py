"""The mathematics of Choromanska et al. (2015) and of the spherical spin glass they map onto.

**Convention (one, used everywhere in this module).** The spherical p-spin glass with p = 3
(the paper's H = 3; "depth" in the network analogy) on Λ spins:

    H(w) = Λ^{−(p−1)/2} Σ_{i,j,k} X_{ijk} w_i w_j w_k,   X_{ijk} ~ N(0, 1) i.i.d.,
    on the sphere S = {w ∈ R^Λ : Σ_i w_i² = Λ},

the paper's §3 (arXiv:1412.0233 v3), with p = 3 a factor Λ^{−1}. It is
*minimised*; energies are reported per spin, H/Λ, which is O(1) and **negative** at the
minima. With this convention (that of Auffinger, Ben Arous & Černý 2013, "Random matrices and
complexity of spin glasses", CPAM 66:165–201, hereafter ABČ) the low critical values lie near
−E_∞ and the ground state is −E_0 (E_0 > E_∞ > 0), per spin.

Only the symmetric part of X enters H, so the code works with X_s = sym(X) (the mean over the
six index permutations): H(w) = Λ^{−1} X_s[w, w, w],

    ∇H(w) = 3 Λ^{−1} X_s[·, w, w],      ∇²H(w) = 6 Λ^{−1} X_s[·, ·, w],

and, by Euler's identity for a cubic form, w·∇H = 3H. On the sphere of radius √Λ the
Riemannian gradient is P_w ∇H with P_w = I − wwᵀ/Λ, and the Riemannian Hessian on the
tangent space T_w = w^⊥ is

    Hess H(w) = P_w (∇²H(w) − (w·∇H(w)/Λ) I) P_w  (restricted to T_w)
              = ∇²H(w)|_{T_w} − 3 (H(w)/Λ) I.

**Reference energies (ABČ 2013, §2: the complexity of critical values and of index-k critical
points of the pure p-spin, and the ground state as the zero of the complexity of minima).** For the pure p-spin,

    E_∞(p) = 2 √((p − 1)/p)                      (p = 3: 2√(2/3)),

the energy (per spin, sign flipped) below which critical points have a finite index: the
Riemannian Hessian at a critical point at energy u·Λ is a GOE matrix whose semicircle has
radius 2√(p(p−1)) centred at −p·u, whose left edge reaches 0 at u = −2√(p(p−1))/p = −E_∞.
The complexity (exponential growth rate of the mean number) of critical points of index k at
energies below u·Λ is, for u ≤ −E_∞,

    Θ_{k,p}(u) = ½ log(p − 1) − (p − 2)/(4(p − 1)) u² − (k + 1) I_1(u),
    I_1(u) = −(u/E_∞²) √(u² − E_∞²) − log(−u + √(u² − E_∞²)) + log E_∞,

(I_1 is the large-deviation rate of the GOE's smallest eigenvalue, I_1(−E_∞) = 0), and
Θ_{k,p}(u) = Θ_{k,p}(−E_∞) for u ≥ −E_∞. E_0 is the unique zero of u ↦ Θ_{0,p}(−u) for u > E_∞:
no local minima (in the mean, hence none with high probability) lie below −E_0·Λ, which is the
ground state (ABČ 2013, §2). The index-k thresholds E_k (zeros of Θ_{k,p}) decrease to E_∞
as k grows: the "band" (−E_0, −E_∞) of the paper's §3.

E_∞ and E_0 are computed here, never typed in: ``e_inf`` is the closed form, ``e_zero`` the
root of ``complexity`` found by ``scipy.optimize.brentq``.
"""

from __future__ import annotations

import math
from functools import cache
from pathlib import Path

import numpy as np
from scipy import optimize

from shared.claims import load_claims, paper_table

P_SPIN = 3  # the paper's H = 3
CLAIMS_PATH = Path(__file__).with_name("claims.yaml")


@cache
def paper_rho() -> dict[int, float]:
    """Table 1's ρ(train, test) by width n₁, from ``claims.yaml`` ``paper_tables.table1_rho`` ([S])."""
    return {int(r["n_hidden"]): float(r["rho"]) for r in paper_table(load_claims(CLAIMS_PATH), "table1_rho")}


# --- reference energies (ABČ 2013) -------------------------------------------------------

def e_inf(p: int = P_SPIN) -> float:
    """E_∞(p) = 2√((p−1)/p) (ABČ 2013, §2; Choromanska et al. 2015, §3)."""
    return 2.0 * math.sqrt((p - 1) / p)


def rate_i1(u: float, p: int = P_SPIN) -> float:
    """I_1(u) for u ≤ −E_∞ (ABČ 2013, §2): 0 at u = −E_∞, dI_1/du = −(2/E_∞²)√(u² − E_∞²)."""
    e = e_inf(p)
    if u > -e:
        raise ValueError(f"I_1 is defined for u <= -E_inf = {-e}, got {u}")
    root = math.sqrt(max(u * u - e * e, 0.0))
    return -(u / e**2) * root - math.log(-u + root) + math.log(e)


def complexity(u: float, k: int = 0, p: int = P_SPIN) -> float:
    """Θ_{k,p}(u): the complexity of critical points of index k with H/Λ ≤ u (ABČ 2013, §2);
    constant at its value at −E_∞ for u ≥ −E_∞."""
    e = e_inf(p)
    v = min(u, -e)
    return 0.5 * math.log(p - 1) - (p - 2) / (4 * (p - 1)) * v * v - (k + 1) * rate_i1(v, p)


def total_complexity(u: float, p: int = P_SPIN) -> float:
    """Θ_p(u): the complexity of all critical points with H/Λ ≤ u (ABČ 2013, §2)."""
    e = e_inf(p)
    if u <= -e:
        return 0.5 * math.log(p - 1) - (p - 2) / (4 * (p - 1)) * u * u - rate_i1(u, p)
    if u <= 0:
        return 0.5 * math.log(p - 1) - (p - 2) / (4 * (p - 1)) * u * u
    return 0.5 * math.log(p - 1)


def e_k(k: int, p: int = P_SPIN) -> float:
    """E_k: −E_k is the zero of Θ_{k,p} below −E_∞ (brentq); E_0 is the ground state."""
    e = e_inf(p)
    if complexity(-e, k, p) <= 0:  # (never for p = 3; guards other p)
        raise ValueError(f"Θ_{k},{p}(−E_inf) <= 0: no zero below −E_inf")
    low = -e - 1.0
    while complexity(low, k, p) >= 0:
        low -= 1.0
    return -float(optimize.brentq(lambda u: complexity(u, k, p), low, -e, xtol=1e-14, rtol=1e-14))


def e_zero(p: int = P_SPIN) -> float:
    """E_0(p): −E_0·Λ is the ground-state energy (ABČ 2013, §2)."""
    return e_k(0, p)


# --- the Hamiltonian (NumPy: data preparation, tests) ---------------------------------------

def symmetrize(x: np.ndarray) -> np.ndarray:
    """X_s = the mean of X over the six permutations of its three indices."""
    return (x + x.transpose(0, 2, 1) + x.transpose(1, 0, 2) + x.transpose(1, 2, 0)
            + x.transpose(2, 0, 1) + x.transpose(2, 1, 0)) / 6.0


def hamiltonian(x: np.ndarray, w: np.ndarray) -> float:
    """H(w) = Λ^{−(p−1)/2} Σ X_{ijk} w_i w_j w_k (p = 3), in NumPy (any X, symmetric or not)."""
    lam = x.shape[0]
    return float(np.einsum("ijk,i,j,k->", x, w, w, w) / lam)


def random_sphere_points(rng: np.random.Generator, runs: int, lam: int) -> np.ndarray:
    """``runs`` points uniform on the sphere Σ w_i² = Λ (normalised Gaussians)."""
    w = rng.standard_normal((runs, lam))
    return w * (math.sqrt(lam) / np.linalg.norm(w, axis=1, keepdims=True))


def tangent_basis(w: np.ndarray) -> np.ndarray:
    """An orthonormal basis (Λ × (Λ−1), as columns) of the tangent space w^⊥: the columns 2..Λ
    of the Householder reflection that maps w/|w| to ±e_1."""
    u = w / np.linalg.norm(w)
    sign = 1.0 if u[0] >= 0 else -1.0
    v = u.copy()
    v[0] += sign  # v = u + sign·e_1 never vanishes
    reflect = np.eye(len(w)) - 2.0 * np.outer(v, v) / (v @ v)
    return reflect[:, 1:]


# --- the network side (paper §5) ---------------------------------------------------------------

def normalized_index(eigenvalues: np.ndarray, rtol: float) -> tuple[int, float]:
    """The index (eigenvalues below −rtol·max|λ|) and the normalized index (index / count),
    the paper's §5 measure of how far from a minimum a solution is."""
    eig = np.asarray(eigenvalues, dtype=np.float64)
    tol = rtol * float(np.max(np.abs(eig)))
    index = int(np.sum(eig < -tol))
    return index, index / eig.size
