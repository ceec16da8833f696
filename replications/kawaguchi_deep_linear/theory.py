"""Kawaguchi (2016) / Lu & Kawaguchi (2017): closed forms for deep linear networks.

Convention (everywhere in this module; column vectors as in the paper, §2):

    L(W) = ½ ‖W_H ⋯ W_1 X − Y‖²_F,   X ∈ ℝ^{d_x×m}, Y ∈ ℝ^{d_y×m},

a SUM over the m examples, with the ½. H is the number of weight matrices;
widths d_0 = d_x, d_1, …, d_H = d_y; p = min(d_1, …, d_{H−1}) is the narrowest
hidden width. Σ = Y Xᵀ (XXᵀ)⁻¹ X Yᵀ with eigenvalues λ_1 ≥ … ≥ λ_{d_y} and
eigenvectors U; B = Y Xᵀ (XXᵀ)⁻¹ is least-squares regression.

- Global minimum (rank-p reduced-rank regression):
  L* = ½[tr(YYᵀ) − Σ_{i ≤ min(p, d_y)} λ_i].
- Critical points (the paper's Theorem 2.3 (ii) via the Baldi–Hornik
  construction): for I ⊂ {1..d_y}, |I| = r ≤ min(p, d_y), any factorization
  of W_H ⋯ W_1 = P_{U_I} B that routes the product through r hidden
  coordinates is critical, with L(I) = ½[tr(YYᵀ) − Σ_{i∈I} λ_i].
- Descent curve from a non-global critical point with r < p and j ∉ I: add
  t·D_k to every layer along an unused hidden coordinate, so that the product
  gains t^H u_j u_jᵀ B and L(t) = L(I) − λ_j t^H + ½ λ_j t^{2H}: a descent at
  order H (for W = 0 and H ≥ 3 the Hessian is exactly zero, Corollary 2.4).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Problem:
    """A regression data set in the paper's column convention, with its spectrum."""

    x: np.ndarray  # d_x × m
    y: np.ndarray  # d_y × m
    offset: float = 0.0  # ½‖Y(I − QQᵀ)‖² dropped by ``compressed`` (a constant of the loss)

    @property
    def regression(self) -> np.ndarray:
        """B = Y Xᵀ (XXᵀ)⁻¹."""
        return np.linalg.solve(self.x @ self.x.T, self.x @ self.y.T).T

    @property
    def sigma(self) -> np.ndarray:
        return self.regression @ self.x @ self.y.T

    def eigensystem(self) -> tuple[np.ndarray, np.ndarray]:
        lam, vec = np.linalg.eigh(self.sigma)
        order = np.argsort(lam)[::-1]
        return lam[order], vec[:, order]

    def loss(self, product: np.ndarray) -> float:
        return float(0.5 * np.sum((product @ self.x - self.y) ** 2) + self.offset)

    @property
    def half_y_norm2(self) -> float:
        """½ tr(YYᵀ) of the original data (the loss at W = 0)."""
        return float(0.5 * np.sum(self.y**2) + self.offset)

    def compressed(self) -> Problem:
        """The same loss with d_x 'examples' instead of m: with Xᵀ = QR (thin QR),
        ‖WX − Y‖² = ‖W Rᵀ − YQ‖² + ‖Y(I − QQᵀ)‖², so (Rᵀ, YQ) and a constant offset
        give identical losses, gradients, Hessians and Σ."""
        q, r = np.linalg.qr(self.x.T)
        y_q = self.y @ q
        rest = 0.5 * float(np.sum(self.y**2) - np.sum(y_q**2))
        return Problem(x=r.T, y=y_q, offset=self.offset + rest)


def make_problem(rng: np.random.Generator, d_x: int, samples: int,
                 singular_values: Sequence[float], noise: float, input_condition: float = 1.0) -> Problem:
    """X = A X₀ with X₀X₀ᵀ = I, and Y = M X₀ + N, N ⟂ rows of X₀, M with the given singular values.

    With ``input_condition`` c = 1, A = I (whitened inputs, XXᵀ = I). With c > 1, A = U diag(a) Vᵀ
    with random orthogonal U, V and a log-spaced from 1 down to 1/c: generic inputs, XXᵀ = AAᵀ
    with condition number c². Either way B = M A⁻¹ and Σ = B X Yᵀ = M Mᵀ has eigenvalues s_i²,
    and tr(YYᵀ) = Σ s_i² + ‖N‖²: the theorem's quantities are fixed, the inputs' geometry
    (and so gradient descent's path) is not.
    """
    if input_condition < 1:
        raise ValueError(f"input_condition ({input_condition}) must be >= 1")
    s = np.asarray(singular_values, dtype=np.float64)
    d_y = s.size
    if samples < d_x + d_y:
        raise ValueError(f"samples ({samples}) must be >= d_x + d_y ({d_x + d_y})")
    q, _ = np.linalg.qr(rng.standard_normal((samples, samples)))
    x = q[:, :d_x].T  # orthonormal rows: XXᵀ = I
    u, _ = np.linalg.qr(rng.standard_normal((d_y, d_y)))
    v, _ = np.linalg.qr(rng.standard_normal((d_x, d_x)))
    m = u @ np.diag(s) @ v[:, :d_y].T
    n = noise * rng.standard_normal((d_y, samples - d_x))
    y = m @ x + n @ q[:, d_x:].T
    if input_condition != 1.0:
        left, _ = np.linalg.qr(rng.standard_normal((d_x, d_x)))
        right, _ = np.linalg.qr(rng.standard_normal((d_x, d_x)))
        x = left @ np.diag(np.geomspace(1.0, 1.0 / input_condition, d_x)) @ right.T @ x
    return Problem(x=x, y=y)


def global_min(lam: np.ndarray, y: np.ndarray, p: int, offset: float = 0.0) -> float:
    """L* = ½[tr(YYᵀ) − Σ_{i ≤ min(p, d_y)} λ_i] (+ the offset of compressed data)."""
    return float(0.5 * (np.sum(y * y) - np.sum(lam[: min(p, lam.size)])) + offset)


def critical_loss(lam: np.ndarray, y: np.ndarray, index_set: Sequence[int], offset: float = 0.0) -> float:
    return float(0.5 * (np.sum(y * y) - np.sum(lam[list(index_set)])) + offset)


def index_sets(d_y: int, r_max: int) -> Iterator[tuple[int, ...]]:
    for r in range(r_max + 1):
        yield from itertools.combinations(range(d_y), r)


def _partial_identity(rows: int, cols: int, r: int) -> np.ndarray:
    e = np.zeros((rows, cols))
    e[range(r), range(r)] = 1.0
    return e


def critical_point(problem: Problem, widths: Sequence[int], index_set: Sequence[int],
                   mixings: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Layers W_1..W_H (W_k is d_k × d_{k−1}) with W_H⋯W_1 = P_{U_I} B.

    The r = |I| used hidden coordinates are the first r of each hidden layer in
    the basis G_k (``mixings[k−1]``, invertible d_k × d_k, k = 1..H−1).
    """
    lam, vec = problem.eigensystem()
    del lam
    r = len(index_set)
    u_i = vec[:, list(index_set)]
    b = problem.regression
    hidden = list(widths[1:-1])
    layers = []
    first = np.zeros((hidden[0], b.shape[1]))
    first[:r] = u_i.T @ b
    layers.append(mixings[0] @ first)
    for k in range(1, len(hidden)):
        layers.append(mixings[k] @ _partial_identity(hidden[k], hidden[k - 1], r) @ np.linalg.inv(mixings[k - 1]))
    last = np.zeros((widths[-1], hidden[-1]))
    last[:, :r] = u_i
    layers.append(last @ np.linalg.inv(mixings[-1]))
    return layers


def descent_directions(problem: Problem, widths: Sequence[int], index_set: Sequence[int],
                       mixings: Sequence[np.ndarray], j: int) -> list[np.ndarray]:
    """D_1..D_H along the unused hidden coordinate r (needs r < p): Π(W_k + tD_k) = W + t^H u_j u_jᵀ B."""
    _, vec = problem.eigensystem()
    r = len(index_set)
    hidden = list(widths[1:-1])
    if r >= min(hidden):
        raise ValueError("no unused hidden coordinate: r must be < p")
    e = [np.eye(h)[:, r] for h in hidden]
    b = problem.regression
    dirs = [np.outer(mixings[0] @ e[0], vec[:, j] @ b)]
    for k in range(1, len(hidden)):
        dirs.append(np.outer(mixings[k] @ e[k], e[k - 1] @ np.linalg.inv(mixings[k - 1])))
    dirs.append(np.outer(vec[:, j], e[-1] @ np.linalg.inv(mixings[-1])))
    return dirs


def product(layers: Sequence[np.ndarray]) -> np.ndarray:
    out = layers[0]
    for w in layers[1:]:
        out = w @ out
    return out
