"""Dauphin et al. (2014): the model, the data and the optimizers the module compares.

Model (CPU-sized, exact Hessians): a one-hidden-layer tanh MLP on downsampled digit images,
parameters as one flat float64 vector θ = (W₁, b₁, W₂, b₂):

    f(x) = W₂ tanh(W₁ x + b₁) + b₂,   L(θ) = (1/m) Σ_μ CE(softmax f(x_μ), y_μ) + ½ wd ‖θ‖²,

the training error ε = L(θ) (the paper's "training error" axis; the classification error is
reported beside it). The small weight decay keeps critical points at finite θ.

Optimizers on a flat loss (``step`` functions of (H, g)): gradient descent −ηg, damped Newton
−(H + λI)⁻¹g, and saddle-free Newton −(|H| + λI)⁻¹g (``shared.critical.finder.sfn_step``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from shared.critical import finder

FlatLoss = Callable[[jax.Array], jax.Array]


def downsample(images: np.ndarray, side: int) -> np.ndarray:
    """(N, H, W[, 1]) images → (N, side²) features by area-averaging resize (jax.image.resize,
    antialiased), then standardized per feature (zero mean, unit variance; constant features 0)."""
    imgs = np.asarray(images, dtype=np.float64)
    if imgs.ndim == 4:
        imgs = imgs[..., 0]
    small = np.asarray(jax.image.resize(jnp.asarray(imgs), (imgs.shape[0], side, side), "linear", antialias=True))
    flat = small.reshape(imgs.shape[0], side * side)
    sd = flat.std(axis=0)
    return (flat - flat.mean(axis=0)) / np.where(sd > 0, sd, 1.0)


def num_params(inputs: int, hidden: int, classes: int) -> int:
    return inputs * hidden + hidden + hidden * classes + classes


def unflatten(theta: jax.Array, inputs: int, hidden: int, classes: int) -> tuple[jax.Array, ...]:
    i = 0
    out = []
    for shape in ((hidden, inputs), (hidden,), (classes, hidden), (classes,)):
        size = int(np.prod(shape))
        out.append(theta[i:i + size].reshape(shape))
        i += size
    return tuple(out)


def mlp_logits(theta: jax.Array, x: jax.Array, hidden: int, classes: int) -> jax.Array:
    w1, b1, w2, b2 = unflatten(theta, x.shape[1], hidden, classes)
    return jnp.tanh(x @ w1.T + b1) @ w2.T + b2


def mlp_loss(x: np.ndarray, y: np.ndarray, hidden: int, classes: int, weight_decay: float) -> FlatLoss:
    """θ ↦ mean cross-entropy + ½ wd ‖θ‖² on (x, y) (y integer labels)."""
    xj, yj = jnp.asarray(x), jnp.asarray(y)

    def loss(theta: jax.Array) -> jax.Array:
        logp = jax.nn.log_softmax(mlp_logits(theta, xj, hidden, classes))
        ce = -jnp.mean(jnp.take_along_axis(logp, yj[:, None], axis=1))
        return ce + 0.5 * weight_decay * jnp.sum(theta**2)

    return loss


def init_params(rng: np.random.Generator, inputs: int, hidden: int, classes: int, rows: int) -> np.ndarray:
    """LeCun-normal weights (std 1/√fan_in), zero biases; ``rows`` independent draws."""
    out = []
    for _ in range(rows):
        w1 = rng.standard_normal((hidden, inputs)) / np.sqrt(inputs)
        w2 = rng.standard_normal((classes, hidden)) / np.sqrt(hidden)
        out.append(np.concatenate([w1.ravel(), np.zeros(hidden), w2.ravel(), np.zeros(classes)]))
    return np.asarray(out)


# --- optimizer steps on (H, g) -------------------------------------------------------------------

def newton_step(hessian: jax.Array, grad: jax.Array, damping: float = 0.0) -> jax.Array:
    """−(H + λI)⁻¹ g via the eigendecomposition (eigenvalues |λ_i + λ| below 1e-12·max raised to it,
    keeping their sign: plain Newton is attracted to saddles, the point of the comparison)."""
    lam, vec = jnp.linalg.eigh(0.5 * (hessian + hessian.T))
    shifted = lam + damping
    tiny = 1e-12 * jnp.max(jnp.abs(shifted))
    shifted = jnp.where(jnp.abs(shifted) < tiny, jnp.where(shifted < 0, -tiny, tiny), shifted)
    return -vec @ ((vec.T @ grad) / shifted)


def sfn_step(hessian: jax.Array, grad: jax.Array, damping: float = 0.0) -> jax.Array:
    """Saddle-free Newton −(|H| + λI)⁻¹ g (Dauphin et al. 2014, Eq. 10), from ``shared.critical``."""
    return finder.sfn_step(hessian, grad, damping=damping, floor=1e-12)


def gd_step(hessian: jax.Array, grad: jax.Array, lr: float) -> jax.Array:
    del hessian
    return -lr * grad


StepFn = Callable[[jax.Array, jax.Array, float], jax.Array]
METHODS: dict[str, StepFn] = {"gd": gd_step, "newton": newton_step, "sfn": sfn_step}


def method_runner(loss: FlatLoss, step: StepFn, iterations: int,
                  max_norm: float = np.inf) -> Callable[[np.ndarray, float], tuple[np.ndarray, np.ndarray]]:
    """A jitted ``run(x0, param)``: ``iterations`` steps x ← x + step(H(x), g(x), param) (exact H) from
    every row of ``x0`` (vmapped); a step longer than ``max_norm`` is scaled down to it. ``run``
    returns (end points, losses [rows, iterations + 1]); one compilation serves every ``param``."""
    grad, hess = jax.grad(loss), jax.hessian(loss)

    def one(x: jax.Array, param: jax.Array) -> tuple[jax.Array, jax.Array]:
        def body(x: jax.Array, _: Any) -> tuple[jax.Array, jax.Array]:
            p = step(hess(x), grad(x), param)  # type: ignore[arg-type]
            p = p * jnp.minimum(1.0, max_norm / jnp.maximum(jnp.linalg.norm(p), 1e-300))
            x_new = x + p
            return x_new, loss(x_new)

        x_end, losses = jax.lax.scan(body, x, None, length=iterations)
        return x_end, jnp.concatenate([loss(x)[None], losses])

    fn = jax.jit(jax.vmap(one, in_axes=(0, None)))

    def run(x0: np.ndarray, param: float) -> tuple[np.ndarray, np.ndarray]:
        xs, ls = fn(jnp.asarray(x0), jnp.asarray(param, dtype=jnp.asarray(x0).dtype))
        return np.asarray(xs), np.asarray(ls)

    return run


def run_method(loss: FlatLoss, x0: np.ndarray, step: StepFn, param: float, iterations: int,
               max_norm: float = np.inf) -> tuple[np.ndarray, np.ndarray]:
    """``method_runner`` once: (end points, losses [rows, iterations + 1])."""
    return method_runner(loss, step, iterations, max_norm)(x0, param)


def gd_losses(loss: FlatLoss, x0: np.ndarray, lr: float, steps: int) -> np.ndarray:
    """Full-batch gradient descent from every row of ``x0``: the loss after each step [rows, steps + 1]."""
    grad = jax.grad(loss)

    def one(x: jax.Array) -> jax.Array:
        def body(x: jax.Array, _: Any) -> tuple[jax.Array, jax.Array]:
            x = x - lr * grad(x)
            return x, loss(x)

        _, ls = jax.lax.scan(body, x, None, length=steps)
        return jnp.concatenate([loss(x)[None], ls])

    return np.asarray(jax.jit(jax.vmap(one))(jnp.asarray(x0)))


def steps_within(losses: np.ndarray, delta: float) -> np.ndarray:
    """Per row: the number of steps before the loss first leaves [L₀ − δ, L₀ + δ] (L₀ the row's first
    value); rows that never leave get the full length (a censored count)."""
    losses = np.asarray(losses)
    out = np.abs(losses - losses[:, :1]) > delta
    first = np.where(out.any(axis=1), out.argmax(axis=1), losses.shape[1])
    return first.astype(int)
