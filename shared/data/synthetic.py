"""Seeded synthetic data, generated on the device from JAX keys.

Every generator takes two keys: ``structure_key`` fixes what the splits share
(cluster centres, covariance eigenvectors, teacher matrix) and ``sample_key``
draws one split's examples, so train and test come from the same
distribution.  ``load`` derives them as ``seeds.derive(seed, name,
"structure")`` and ``seeds.derive(seed, name, split)``.  Arrays use JAX's
default float dtype (float64 under ``jax_enable_x64``).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp

CENTER_BLOCK = 16


def gaussian_mixture(
    structure_key: jax.Array,
    sample_key: jax.Array,
    *,
    num_examples: int,
    dim: int,
    num_classes: int,
    spread: float,
    center_scale: float = 1.0,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """k Gaussian clusters, one per class (Sagun, Bottou & LeCun 2016, arXiv:1611.07476).

    Centres ``mu_c ~ N(0, center_scale^2 I_dim)``; labels balanced (class c
    appears ``num_examples // k`` or one more times) in random order; inputs
    ``x = mu_y + spread * N(0, I_dim)``.  Returns ``(x (N, dim), y (N,), centers (k, dim))``.
    """
    # Drawn in blocks of 16 rows and cut: one compiled sampler for every k ≤ 16, and with JAX's
    # partitionable Threefry (the default) the same numbers as a (k, dim) draw (tests).
    rows = -(-num_classes // CENTER_BLOCK) * CENTER_BLOCK
    centers = center_scale * jax.random.normal(structure_key, (rows, dim))[:num_classes]
    label_key, noise_key = jax.random.split(sample_key)
    labels = jax.random.permutation(label_key, jnp.arange(num_examples) % num_classes)
    noise = jax.random.normal(noise_key, (num_examples, dim))
    return centers[labels] + spread * noise, labels.astype(jnp.int32), centers


def linear_regression(
    structure_key: jax.Array,
    sample_key: jax.Array,
    *,
    num_examples: int,
    spectrum: Sequence[float],
    dim_y: int | None = None,
    noise_std: float = 0.0,
    teacher: str = "gaussian",
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Inputs with a prescribed spectrum and targets ``Y = M X + noise``.

    In the notation of Baldi & Hornik (1989) and Kawaguchi (2016), X is
    ``d_x x N`` with examples as columns, and the eigenvalues of the *sum*
    ``X X^T`` (not the mean) are exactly ``spectrum``:
    ``X = U diag(sqrt(spectrum)) V^T`` with U a random ``d_x x d_x``
    orthogonal matrix (shared by the splits) and V a random ``N x d_x`` matrix
    with orthonormal columns (per split).  ``M`` is ``N(0, 1/d_x)`` entries
    (``teacher="gaussian"``, shape ``d_y x d_x``) or the identity
    (``teacher="identity"``: the auto-associative case, ``d_y = d_x``).  The
    noise is i.i.d. ``N(0, noise_std^2)``.  Returns ``(x = X^T (N, d_x),
    y = Y^T (N, d_y), M)``.  Needs ``N >= d_x``; the assumptions of both papers
    (full rank, distinct eigenvalues) are the caller's to choose.
    """
    eigenvalues = jnp.asarray(spectrum, dtype=jnp.result_type(float))
    dim_x = eigenvalues.shape[0]
    if num_examples < dim_x:
        raise ValueError(f"need num_examples >= {dim_x} for a full-rank X, got {num_examples}")
    if jnp.any(eigenvalues < 0):
        raise ValueError("the eigenvalues of X X^T must be non-negative")
    rotation_key, teacher_key = jax.random.split(structure_key)
    basis_key, noise_key = jax.random.split(sample_key)
    u, _ = jnp.linalg.qr(jax.random.normal(rotation_key, (dim_x, dim_x)))
    v, _ = jnp.linalg.qr(jax.random.normal(basis_key, (num_examples, dim_x)))
    x = (v * jnp.sqrt(eigenvalues)) @ u.T
    if teacher == "identity":
        if dim_y not in (None, dim_x):
            raise ValueError("teacher='identity' needs dim_y == len(spectrum)")
        matrix = jnp.eye(dim_x, dtype=x.dtype)
    elif teacher == "gaussian":
        matrix = jax.random.normal(teacher_key, (dim_y or dim_x, dim_x)) / jnp.sqrt(dim_x)
    else:
        raise ValueError(f"teacher must be 'gaussian' or 'identity', got {teacher!r}")
    noise = noise_std * jax.random.normal(noise_key, (num_examples, matrix.shape[0]))
    return x, x @ matrix.T + noise, matrix


def random_labels(
    structure_key: jax.Array,
    sample_key: jax.Array,
    *,
    num_examples: int,
    dim: int,
    num_classes: int,
) -> tuple[jax.Array, jax.Array]:
    """Inputs ``N(0, I_dim)`` and labels uniform on ``{0..k-1}``, independent of them.

    Nothing to generalise from, everything to memorise (Zhang et al. 2017,
    arXiv:1611.03530).  ``structure_key`` is unused: the splits share nothing.
    """
    del structure_key
    input_key, label_key = jax.random.split(sample_key)
    x = jax.random.normal(input_key, (num_examples, dim))
    y = jax.random.randint(label_key, (num_examples,), 0, num_classes, dtype=jnp.int32)
    return x, y


def randomize_labels(
    key: jax.Array, labels: jax.Array, num_classes: int, fraction: float = 1.0
) -> jax.Array:
    """Replace each label, independently with probability ``fraction``, by a uniform
    random class (Zhang et al. 2017's "partially corrupted labels"; 1.0 = random labels)."""
    pick_key, label_key = jax.random.split(key)
    replace = jax.random.bernoulli(pick_key, fraction, labels.shape)
    fresh = jax.random.randint(label_key, labels.shape, 0, num_classes, dtype=labels.dtype)
    return jnp.where(replace, fresh, labels)
