"""Directions: filter normalisation (Li et al. §4) filter by filter, biases/BN zeroed, PCA of a
trajectory in a known plane (Li et al. §7)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.flatten_util import ravel_pytree

from shared.landscape.directions import (
    between,
    filter_norms,
    normalize_direction,
    pca_directions,
    project,
    random_direction,
)
from shared.models.functional import pure
from shared.models.mlp import make_batch_norm

pytestmark = pytest.mark.x64


class ConvBN(nnx.Module):
    """conv3×3-4 → BN → ReLU → flatten → dense-3: conv, dense, bias and BN leaves."""

    def __init__(self, *, rngs: nnx.Rngs) -> None:
        self.conv = nnx.Conv(2, 4, (3, 3), rngs=rngs, param_dtype=jnp.float64)
        self.bn = make_batch_norm(4, rngs, jnp.float64)
        self.head = nnx.Linear(5 * 5 * 4, 3, rngs=rngs, param_dtype=jnp.float64)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = jax.nn.relu(self.bn(self.conv(x)))
        return self.head(x.reshape(x.shape[0], -1))


@pytest.fixture()
def params():
    model = ConvBN(rngs=nnx.Rngs(0))
    _, p = pure(model)
    # non-trivial BN parameters, so "zeroed" is not trivially true
    return jax.tree_util.tree_map(lambda w: w + 0.3 if w.ndim == 1 else w, p)


def _leaves(tree):
    return jax.tree_util.tree_leaves(tree)


def test_filter_normalised_direction_matches_every_filter_norm(params):
    d = random_direction(params, jax.random.key(1), norm="filter", ignore="biasbn")
    dn, wn = filter_norms(d), filter_norms(params)
    # one norm per filter (last axis) of the conv (3,3,2,4) and dense (100,3) kernels; ndim<2 leaves dropped
    assert [w.shape for w in _leaves(wn)] == [(4,), (3,)]
    for dnorm, wnorm in zip(_leaves(dn), _leaves(wn), strict=True):
        np.testing.assert_allclose(dnorm, wnorm, rtol=1e-12)
    kernel = d["conv"]["kernel"][...]
    # the last axis indexes filters: each [..., j] slice has the weight filter's norm
    for j in range(4):
        np.testing.assert_allclose(jnp.linalg.norm(kernel[..., j]),
                                   jnp.linalg.norm(params["conv"]["kernel"][...][..., j]), rtol=1e-12)


def test_biases_and_batchnorm_are_zeroed_with_ignore_biasbn(params):
    d = random_direction(params, jax.random.key(2), norm="filter", ignore="biasbn")
    for dleaf, wleaf in zip(_leaves(d), _leaves(params), strict=True):
        if wleaf.ndim <= 1:
            assert np.all(np.asarray(dleaf) == 0)
        else:
            assert np.all(np.asarray(dleaf) != 0)


def test_without_ignore_1d_leaves_copy_the_weights_as_in_lis_code(params):
    d = random_direction(params, jax.random.key(3), norm="filter", ignore=None)
    for dleaf, wleaf in zip(_leaves(d), _leaves(params), strict=True):
        if wleaf.ndim <= 1:
            np.testing.assert_array_equal(dleaf, wleaf)


def test_layer_and_no_normalisation(params):
    raw = jax.tree_util.tree_map(jnp.ones_like, params)
    d = normalize_direction(raw, params, norm="layer", ignore="biasbn")
    for dleaf, wleaf in zip(_leaves(d), _leaves(params), strict=True):
        if wleaf.ndim >= 2:
            np.testing.assert_allclose(jnp.linalg.norm(dleaf), jnp.linalg.norm(wleaf), rtol=1e-12)
    same = normalize_direction(raw, params, norm="none", ignore=None)
    for a, b in zip(_leaves(same), _leaves(raw), strict=True):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError):
        normalize_direction(raw, params, norm="filters")  # type: ignore[arg-type]


def test_direction_is_deterministic_in_the_key(params):
    a = ravel_pytree(random_direction(params, jax.random.key(7)))[0]
    b = ravel_pytree(random_direction(params, jax.random.key(7)))[0]
    c = ravel_pytree(random_direction(params, jax.random.key(8)))[0]
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def test_gaussian_draw_is_standard_normal_across_blocks_and_keeps_the_tree():
    """The blocked stream (2^16 per block) is N(0, 1) and i.i.d.: a KS test against N(0, 1) on
    each of three blocks and on a leaf that straddles a block boundary; non-float leaves are zero."""
    from scipy import stats

    from shared.landscape.directions import _BLOCK, gaussian_like

    tree = {"a": jnp.zeros((_BLOCK - 1000,), jnp.float32), "b": jnp.zeros((40, 50, 60), jnp.float32),
            "n": jnp.zeros((3,), jnp.int32), "c": jnp.zeros((7,), jnp.float64)}
    d = gaussian_like(tree, jax.random.key(0))
    assert jax.tree_util.tree_structure(d) == jax.tree_util.tree_structure(tree)
    assert all(x.shape == y.shape and x.dtype == y.dtype for x, y in zip(_leaves(d), _leaves(tree), strict=True))
    np.testing.assert_array_equal(np.asarray(d["n"]), 0)
    flat = np.concatenate([np.ravel(d[k]) for k in ("a", "b")])  # tree order: a, b, c, n
    for part in (flat[:_BLOCK], flat[_BLOCK : 2 * _BLOCK], flat[-_BLOCK:], np.ravel(d["b"])[:5000]):
        assert stats.kstest(part, "norm").pvalue > 1e-3
    # consecutive blocks are not copies of each other, and the stream depends on the key
    assert abs(np.corrcoef(flat[:_BLOCK], flat[_BLOCK : 2 * _BLOCK])[0, 1]) < 0.02
    assert not np.allclose(np.asarray(d["a"]), np.asarray(gaussian_like(tree, jax.random.key(1))["a"]))


def test_between_gives_the_interpolation_direction(params):
    other = jax.tree_util.tree_map(lambda w: 2 * w + 1, params)
    d = between(params, other)
    mid = jax.tree_util.tree_map(lambda w, v: w + 0.5 * v, params, d)
    expected = jax.tree_util.tree_map(lambda a, b: 0.5 * (a + b), params, other)
    np.testing.assert_allclose(ravel_pytree(mid)[0], ravel_pytree(expected)[0], rtol=1e-14)


def _plane_trajectory(rng, n=60, steps=15):
    basis, _ = np.linalg.qr(rng.normal(size=(n, 2)))
    u, v = basis.T
    centre = rng.normal(size=n)
    t = np.linspace(0, 1, steps)
    coeff = np.stack([3 * np.cos(2 * t) * (1 - t), np.sin(5 * t) * (1 - t)], axis=1)
    return centre + coeff @ np.stack([u, v]), u, v


def test_pca_of_a_planar_trajectory_recovers_the_plane():
    rng = np.random.default_rng(0)
    traj, u, v = _plane_trajectory(rng)
    pca = pca_directions(traj)
    plane = np.stack([u, v], axis=1)
    for d in pca.directions:
        d = np.asarray(d)
        np.testing.assert_allclose(np.linalg.norm(d), 1.0, rtol=1e-12)
        np.testing.assert_allclose(plane @ (plane.T @ d), d, atol=1e-10)  # d lies in span(u, v)
    assert abs(float(np.dot(pca.directions[0], pca.directions[1]))) < 1e-10
    assert pca.explained_variance_ratio.sum() == pytest.approx(1.0, abs=1e-10)
    assert pca.explained_variance_ratio[0] >= pca.explained_variance_ratio[1]
    # coordinates reconstruct θ_i − θ_final exactly, and equal the least-squares projection
    recon = pca.coordinates @ np.stack(pca.directions)
    np.testing.assert_allclose(recon, traj - traj[-1], atol=1e-10)
    np.testing.assert_allclose(project(traj, traj[-1], list(pca.directions)), pca.coordinates, atol=1e-10)


def test_pca_on_pytrees_ignores_biases_and_bn():
    rng = np.random.default_rng(1)
    traj, _, _ = _plane_trajectory(rng, n=12)
    trees = [{"w": jnp.asarray(row.reshape(3, 4)), "b": jnp.asarray(rng.normal(size=4))} for row in traj]
    pca = pca_directions(trees, ignore="biasbn")
    assert pca.explained_variance_ratio.sum() == pytest.approx(1.0, abs=1e-10)
    for d in pca.directions:
        assert np.all(np.asarray(d["b"]) == 0)
        assert d["w"].shape == (3, 4)
    # without ignoring, the random biases add variance outside the plane
    assert pca_directions(trees).explained_variance_ratio.sum() < 0.999
