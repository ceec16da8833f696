"""Dinh et al.'s reparametrisations leave the function unchanged and transform the Hessian exactly
as predicted; λ_max and trace wrappers agree with eigh; adaptive sharpness is invariant."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.flatten_util import ravel_pytree

from shared.curvature.exact import flat_hessian
from shared.landscape import surface
from shared.models.mlp import MLP
from shared.sharpness import (
    adaptive_sharpness,
    alpha_scale,
    hessian_trace,
    keskar_sharpness,
    relative_change,
    scale_before_batchnorm,
    scale_filters,
    top_eigenvalues,
)
from shared.sharpness.reparametrize import get_leaf, rescale_layers

pytestmark = pytest.mark.x64

exact_hessian = jax.jit(flat_hessian)  # (objective, params): the objective is a pytree argument


@pytest.fixture(scope="module")
def dinh():
    """Dinh et al.'s one-hidden-layer rectified net (with biases), float64, on 40 examples."""
    rng = np.random.default_rng(0)
    data = (rng.normal(size=(40, 4)), rng.integers(0, 3, size=40))
    model = MLP((4, 6, 3), rngs=nnx.Rngs(0), param_dtype=jnp.float64)
    obj, params = surface.from_model(model, data, batch_size=20)
    return obj, params


def _logits(obj, params):
    return obj.forward.value(params, obj.state, obj.data.stacked[0][0])


def _scale_vector(params, alpha):
    """s with T_α(θ) = s ⊙ θ in ravel order: α on (W₁, b₁), 1/α on W₂, 1 on b₂."""
    s = {"layers": {0: {"kernel": alpha, "bias": alpha}, 1: {"kernel": 1 / alpha, "bias": 1.0}}}
    tree = jax.tree_util.tree_map(lambda w: w, params)
    for layer in (0, 1):
        for name in ("kernel", "bias"):
            tree["layers"][layer][name][...] = jnp.full_like(params["layers"][layer][name][...],
                                                            s["layers"][layer][name])
    return np.asarray(ravel_pytree(tree)[0])


@pytest.mark.parametrize("alpha", [0.1, 10.0])
def test_alpha_scale_keeps_logits_and_transforms_hessian_blocks_exactly(dinh, alpha):
    obj, params = dinh
    scaled = alpha_scale(params, ("layers", 0), ("layers", 1), alpha)
    assert relative_change(_logits(obj, params), _logits(obj, scaled)) <= 1e-12
    h, h_scaled = np.asarray(exact_hessian(obj, params)), np.asarray(exact_hessian(obj, scaled))
    s = _scale_vector(params, alpha)
    # L(Sθ) = L(θ) ⇒ H(Sθ) = S⁻¹ H(θ) S⁻¹: H₁₁/α², α² H₂₂, H₁₂ unchanged, H₁₃/α, α H₂₃
    np.testing.assert_allclose(h_scaled, h / np.outer(s, s), rtol=1e-8, atol=1e-12 * np.abs(h).max())


def test_lambda_max_grows_as_alpha_squared_through_the_second_layer_block(dinh):
    obj, params = dinh
    n = ravel_pytree(params)[0].size  # 51
    alpha = 100.0
    scaled = alpha_scale(params, ("layers", 0), ("layers", 1), alpha)
    top = top_eigenvalues(obj, scaled, jax.random.key(0), k=1, num_steps=n)
    h = np.asarray(exact_hessian(obj, params))
    eig_scaled = np.linalg.eigvalsh(np.asarray(exact_hessian(obj, scaled)))
    assert float(top.eigenvalues[0]) == pytest.approx(eig_scaled[-1], rel=1e-8)
    # block prediction: λ_max(H(T_α θ)) / α² → λ_max(H₂₂(θ)), H₂₂ the W₂ block (indices in ravel order)
    idx = np.flatnonzero(_scale_vector(params, 2.0) == 0.5)
    lam22 = np.linalg.eigvalsh(h[np.ix_(idx, idx)])[-1]
    assert float(top.eigenvalues[0]) / alpha**2 == pytest.approx(lam22, rel=1e-3)
    assert float(top.eigenvalues[0]) > 100 * np.linalg.eigvalsh(h)[-1]


def test_trace_wrapper_is_exact_when_the_sketch_spans_everything(dinh):
    obj, params = dinh
    n = ravel_pytree(params)[0].size
    h = np.asarray(exact_hessian(obj, params))
    tr = hessian_trace(obj, params, jax.random.key(1), num_matvecs=3 * n)
    assert float(tr.estimate) == pytest.approx(np.trace(h), rel=1e-8)


def test_adaptive_sharpness_is_invariant_but_keskar_full_space_is_not(dinh):
    obj, params = dinh
    scaled = alpha_scale(params, ("layers", 0), ("layers", 1), 10.0)
    a = adaptive_sharpness(obj, params, rho=0.05, steps=3)
    b = adaptive_sharpness(obj, scaled, rho=0.05, steps=3)
    assert a.value > 0 and len(a.losses) == 4
    assert b.value == pytest.approx(a.value, rel=1e-8)
    one = adaptive_sharpness(obj, params, rho=0.05, steps=1)
    assert one.value <= a.value + 1e-15
    k_a = keskar_sharpness(obj, params, epsilon=1e-3)
    k_b = keskar_sharpness(obj, scaled, epsilon=1e-3)
    assert k_b.sharpness > 3 * k_a.sharpness  # reparametrisation inflates Metric 2.1 (Dinh et al. §4.2)


def test_one_step_adaptive_sharpness_is_asams_closed_form(dinh):
    obj, params = dinh
    w, unravel = ravel_pytree(params)
    g = jax.grad(lambda v: obj(unravel(v)))(w)
    t = jnp.abs(w)
    eps = 0.05 * t**2 * g / jnp.linalg.norm(t * g)  # Kwon et al. 2021, Algorithm 1 (η = 0)
    res = adaptive_sharpness(obj, params, rho=0.05, steps=1)
    assert res.max_loss == pytest.approx(max(float(obj(unravel(w + eps))), res.loss), rel=1e-12)


def test_per_filter_scaling_and_chains(dinh):
    obj, params = dinh
    c = jnp.asarray(np.random.default_rng(1).uniform(0.1, 10, size=6))
    scaled = scale_filters(params, ("layers", 0), ("layers", 1), c)
    assert relative_change(_logits(obj, params), _logits(obj, scaled)) <= 1e-12
    np.testing.assert_allclose(get_leaf(scaled, ("layers", 0, "bias")), get_leaf(params, ("layers", 0, "bias")) * c)
    with pytest.raises(ValueError):
        rescale_layers(params, [("layers", 0), ("layers", 1)], [2.0, 2.0])  # product ≠ 1
    with pytest.raises(KeyError):
        alpha_scale(params, ("layers", 5), ("layers", 1), 2.0)


class ConvFlatten(nnx.Module):
    """conv3×3-4 → ReLU → max-pool 2 → flatten (NHWC) → dense-3."""

    def __init__(self, *, rngs: nnx.Rngs) -> None:
        self.conv = nnx.Conv(2, 4, (3, 3), rngs=rngs, param_dtype=jnp.float64)
        self.head = nnx.Linear(3 * 3 * 4, 3, rngs=rngs, param_dtype=jnp.float64)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = nnx.max_pool(jax.nn.relu(self.conv(x)), (2, 2), strides=(2, 2))
        return self.head(x.reshape(x.shape[0], -1))


def test_per_filter_scaling_through_a_conv_flatten():
    from shared.models.functional import pure

    f, params = pure(ConvFlatten(rngs=nnx.Rngs(0)))
    x = jnp.asarray(np.random.default_rng(0).normal(size=(5, 6, 6, 2)))
    scaled = scale_filters(params, ("conv",), ("head",), jnp.asarray([0.5, 2.0, 3.0, 0.25]))
    assert relative_change(f(params, x), f(scaled, x)) <= 1e-12


def test_scaling_before_batchnorm_in_both_modes():
    from shared.models.mlp import MLP as BNMLP

    rng = np.random.default_rng(0)
    data = (rng.normal(size=(20, 4)), rng.integers(0, 3, size=20))
    model = BNMLP((4, 6, 3), batch_norm=True, rngs=nnx.Rngs(0), param_dtype=jnp.float64)
    c = jnp.asarray(rng.uniform(0.5, 2.0, size=6))
    for mode in ("eval", "batch_stats"):
        obj, params = surface.from_model(model, data, bn_mode=mode)
        p2, s2 = scale_before_batchnorm(params, obj.state, ("layers", 0), ("norms", 0), c)
        x = obj.data.stacked[0][0]
        before = obj.forward.value(params, obj.state, x)
        after = obj.forward.value(p2, s2, x)
        assert relative_change(before, after) <= 1e-4  # exact up to BatchNorm's ε = 1e-5 (ε = 0: see
        # test_landscape_surface's per-filter test, exact to 1e-10)


def test_ball_sharpness_of_a_linear_loss_is_its_closed_form() -> None:
    """L(θ) = cᵀθ + 1: max over ‖δ‖₂ ≤ ε of L(θ + δ) − L(θ) is ε‖c‖ (δ = εc/‖c‖), reached by the
    first normalised-gradient step, so the measure is 100 ε‖c‖ / (1 + L(θ)) in float32."""
    import jax.numpy as jnp
    import numpy as np

    from shared.sharpness import ball_sharpness

    c = jnp.asarray([3.0, -4.0, 12.0], jnp.float32)  # ‖c‖ = 13
    theta = {"w": jnp.asarray([0.1, 0.2, -0.05], jnp.float32)}
    loss = lambda p: jnp.dot(c, p["w"]) + 1.0  # noqa: E731
    value = ball_sharpness(loss, theta, radius=0.01, steps=3)
    np.testing.assert_allclose(value, 100 * 0.01 * 13 / (1 + float(loss(theta))), rtol=1e-5)
    with pytest.raises(ValueError, match="radius > 0"):
        ball_sharpness(loss, theta, radius=0.0, steps=3)
