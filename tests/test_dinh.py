"""Dinh et al. (2017): the module's mathematics against ground truth (exact Hessians, closed
forms, invariances), and planted runs whose claims must come out 'not reproduced'."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
from flax import nnx
from jax.flatten_util import ravel_pytree

from replications.dinh_reparametrization import models, steps, theory
from shared.claims import judge, load_claims
from shared.config import module_dir
from shared.landscape import from_model
from shared.models.mlp import MLP
from shared.sharpness import alpha_scale, relative_change, scale_before_batchnorm, scale_filters

CLAIMS = {c["id"]: c for c in load_claims(module_dir("dinh_reparametrization") / "claims.yaml")["claims"]}
SHARP = {"epsilon": 1e-3, "maxiter": 3, "subspace_dim": 4, "ball_steps": 3, "adaptive_rho": 0.05,
         "adaptive_steps": 3, "fn_directions": 3, "fn_radius": 0.05, "fn_points": 5}


def _data(n: int = 60, d: int = 5, k: int = 3, seed: int = 0, dtype: Any = jnp.float32) -> tuple[Any, Any]:
    rng = np.random.default_rng(seed)
    return jnp.asarray(rng.normal(size=(n, d)), dtype), jnp.asarray(rng.integers(0, k, n))


def _mlp_objective(widths: tuple[int, ...], dtype: Any = jnp.float32, batch_norm: bool = False, bn_mode: str = "eval"):  # type: ignore[no-untyped-def]
    x, y = _data(d=widths[0], k=widths[-1], dtype=dtype)
    model = MLP(widths, batch_norm=batch_norm, rngs=nnx.Rngs(0), param_dtype=dtype)
    obj, params = from_model(model, (x, y), bn_mode=bn_mode)  # type: ignore[arg-type]
    return obj, params, x


# --- function invariance (D1, D8) -------------------------------------------------------------------

@pytest.mark.parametrize("alpha", [1e-3, 0.1, 10.0, 1e3])
def test_alpha_scale_layerwise_and_per_filter_keep_the_mlp_function_in_float32(alpha: float) -> None:
    obj, params, x = _mlp_objective((5, 7, 6, 3))
    base = steps.logits(obj, params, x)
    c = jnp.power(jnp.float32(alpha), jax.random.uniform(jax.random.key(1), (7,), minval=-1, maxval=1))
    for p in (alpha_scale(params, steps.FIRST, steps.SECOND, alpha), steps.layerwise(params, 3, alpha),
              scale_filters(params, steps.FIRST, steps.SECOND, c)):
        assert relative_change(jnp.asarray(base), jnp.asarray(steps.logits(obj, p, x))) <= 1e-5
    scaled = steps.layerwise(params, 3, alpha)
    kernels = [ravel_pytree(scaled["layers"][i]["kernel"])[0] / ravel_pytree(params["layers"][i]["kernel"])[0]
               for i in range(3)]
    np.testing.assert_allclose([float(jnp.median(k)) for k in kernels], [alpha, alpha, alpha**-2], rtol=1e-5)


def test_alpha_scale_and_per_filter_scaling_keep_the_convnet_function() -> None:
    model = models.ConvNet(rngs=nnx.Rngs(0), side=8, in_channels=1, channels=(3, 4), hidden=6, num_classes=3)
    x = jnp.asarray(np.random.default_rng(0).uniform(size=(10, 8, 8, 1)), jnp.float32)
    obj, params = from_model(model, (x, jnp.zeros(10, jnp.int32)))
    base = jnp.asarray(steps.logits(obj, params, x))
    for alpha in (1e-2, 1e2):
        p = alpha_scale(params, steps.FIRST, steps.SECOND, alpha)
        assert relative_change(base, jnp.asarray(steps.logits(obj, p, x))) <= 1e-5
        p = scale_filters(params, steps.FIRST, steps.SECOND, jnp.asarray([alpha, 1.0, 1 / alpha]))
        assert relative_change(base, jnp.asarray(steps.logits(obj, p, x))) <= 1e-5
        p = steps.layerwise(params, 4, alpha)
        assert relative_change(base, jnp.asarray(steps.logits(obj, p, x))) <= 1e-5
    bn = models.ConvNet(rngs=nnx.Rngs(0), side=8, in_channels=1, channels=(3, 4), hidden=6, num_classes=3,
                        batch_norm=True)
    obj, params = from_model(bn, (x, jnp.zeros(10, jnp.int32)), bn_mode="batch_stats")
    p2, _ = scale_before_batchnorm(params, None, steps.FIRST, steps.NORM, jnp.asarray([10.0, 3.0, 30.0]))
    assert relative_change(jnp.asarray(steps.logits(obj, params, x)), jnp.asarray(steps.logits(obj, p2, x))) <= 1e-3


def test_zeroing_the_first_layer_gives_a_constant_function_at_distance_eps() -> None:
    obj, params, x = _mlp_objective((5, 7, 6, 3))
    eps = 1e-3
    p_star = alpha_scale(params, steps.FIRST, steps.SECOND, eps / steps._first_layer_norm(params))
    assert steps._first_layer_norm(p_star) == pytest.approx(eps, rel=1e-5)
    witness = steps._zero_first_layer(p_star)
    out = steps.logits(obj, witness, x)
    np.testing.assert_allclose(out, np.broadcast_to(out[0], out.shape), rtol=1e-6)
    assert float(jnp.linalg.norm(ravel_pytree(witness)[0] - ravel_pytree(p_star)[0])) == pytest.approx(eps, rel=1e-5)


# --- the Hessian's block scaling law against the exact Hessian (D2) ----------------------------------

@pytest.mark.x64
def test_hessian_blocks_scale_as_alpha_powers_and_the_trace_follows_the_closed_form() -> None:
    obj, params, _ = _mlp_objective((3, 4, 2), dtype=jnp.float64)
    flat, unravel = ravel_pytree(params)
    hess = jax.jit(jax.hessian(lambda v, o: o(unravel(v))))
    h = np.asarray(hess(flat, obj))
    # S: α on layers[0] (kernel and bias), 1/α on layers[1]'s kernel, 1 on its bias (ravel order)
    marks = ravel_pytree({"layers": {0: {"bias": jnp.full(4, 1.0), "kernel": jnp.full((3, 4), 1.0)},
                                     1: {"bias": jnp.full(2, 0.0), "kernel": jnp.full((4, 2), 2.0)}}})[0]
    marks = np.asarray(marks)
    blocks = {k: np.flatnonzero(marks == k) for k in (1.0, 2.0, 0.0)}
    alphas = theory.alpha_grid(-2, 2, 9)
    lam = []
    for a in alphas:
        s = np.where(marks == 1.0, a, np.where(marks == 2.0, 1 / a, 1.0))
        h_a = np.asarray(hess(ravel_pytree(alpha_scale(params, steps.FIRST, steps.SECOND, float(a)))[0], obj))
        np.testing.assert_allclose(h_a, h / np.outer(s, s), rtol=1e-7, atol=1e-10 * np.abs(h_a).max())
        i1, i2 = blocks[1.0], blocks[2.0]
        np.testing.assert_allclose(h_a[np.ix_(i1, i1)], h[np.ix_(i1, i1)] / a**2, rtol=1e-7, atol=1e-14)
        np.testing.assert_allclose(h_a[np.ix_(i2, i2)], h[np.ix_(i2, i2)] * a**2, rtol=1e-7, atol=1e-14)
        np.testing.assert_allclose(h_a[np.ix_(i1, i2)], h[np.ix_(i1, i2)], rtol=1e-7, atol=1e-14)
        tr = theory.predicted_trace(a, np.trace(h[np.ix_(i1, i1)]), np.trace(h[np.ix_(i2, i2)]),
                                    np.trace(h[np.ix_(blocks[0.0], blocks[0.0])]))
        assert np.trace(h_a) == pytest.approx(float(tr), rel=1e-9)
        lam.append(np.linalg.eigvalsh(h_a)[-1])
    lam_arr = np.asarray(lam)
    up = theory.fit_slope(alphas[alphas >= 10], lam_arr[alphas >= 10])
    down = theory.fit_slope(alphas[alphas <= 0.1], lam_arr[alphas <= 0.1])
    assert 1.9 < up.slope < 2.05 and -2.05 < down.slope < -1.9
    # the module's Lanczos and Hutch++ on the same net agree with the exact spectrum
    cfg = {"hessian": {"lanczos_steps": flat.size, "hutchpp_matvecs": 3 * flat.size}, "sharpness": SHARP}
    vals, vec = steps.measures(obj, params, cfg, jax.random.key(0), names=("lambda_max", "trace"))
    assert vals["lambda_max"] == pytest.approx(np.linalg.eigvalsh(h)[-1], rel=1e-8)
    assert vals["trace"] == pytest.approx(np.trace(h), rel=1e-8)
    v = ravel_pytree(vec)[0]
    assert float(v @ h @ v) == pytest.approx(vals["lambda_max"], rel=1e-8)


def test_fit_slope_recovers_a_power_law_and_its_interval() -> None:
    x = np.logspace(1, 3, 5)
    res = theory.fit_slope(x, 3 * x**2 * (1 + 0.01 * np.array([1, -1, 1, -1, 1])))
    assert res.low < 2 < res.high and res.high - res.low < 0.05
    assert np.isnan(theory.fit_slope(x, -x).slope)


# --- sharpness measures: closed forms and invariances (D3, D4, D6) -----------------------------------

@pytest.mark.x64
def test_ball_sharpness_of_a_linear_loss_is_eps_times_the_gradient_norm() -> None:
    g = jnp.asarray([3.0, -4.0, 0.0])
    params = {"w": jnp.zeros(3)}
    res = steps.ball_sharpness(lambda p: jnp.dot(g, p["w"]) + 1.0, params, radius=0.1, steps=2)  # type: ignore[arg-type]
    assert res == pytest.approx(100 * 0.1 * 5.0 / 2.0, rel=1e-12)


def test_sublevel_width_of_a_parabola() -> None:
    lam, eps = 50.0, 0.01
    t = np.linspace(-0.1, 0.1, 41)
    width, censored = theory.sublevel_width(t, 0.5 * lam * t**2, eps)
    assert not censored and width == pytest.approx(2 * np.sqrt(2 * eps / lam), rel=2e-2)
    width, censored = theory.sublevel_width(t, 0.5 * t**2, eps)
    assert censored and width == pytest.approx(0.2)


def test_best_constant_loss_is_the_label_entropy() -> None:
    from scipy.optimize import minimize

    y = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2, 2])
    ce = lambda z: float(np.mean(np.log(np.sum(np.exp(z))) - z[y]))  # noqa: E731
    assert theory.best_constant_loss(y, 4) == pytest.approx(minimize(ce, np.zeros(4)).fun, abs=1e-6)
    assert theory.constant_function_bound(0.5, 2.0) == pytest.approx(100.0)


@pytest.mark.x64
def test_filter_normalised_and_adaptive_measures_are_invariant_and_hessian_ones_are_not() -> None:
    obj, params, _ = _mlp_objective((5, 7, 6, 3), dtype=jnp.float64)
    cfg = {"hessian": {"lanczos_steps": 20, "hutchpp_matvecs": 30}, "sharpness": SHARP}
    key = jax.random.key(3)
    base, _ = steps.measures(obj, params, cfg, key, names=steps.INVARIANT + ("ball",))
    rise = []
    assert base["fn_sharpness"] > 0 and base["fn_curvature"] > 0 and base["adaptive"] > 0
    for alpha in (1e-2, 1e2):
        p = alpha_scale(params, steps.FIRST, steps.SECOND, alpha)
        vals, _ = steps.measures(obj, p, cfg, key, names=steps.INVARIANT + ("ball",))
        for name in steps.INVARIANT:
            assert vals[name] == pytest.approx(base[name], rel=1e-8), name
        rise.append(vals["ball"] / base["ball"])
    assert min(rise) > 10  # the Euclidean-ball ε-sharpness is not invariant
    c = jnp.asarray(np.random.default_rng(0).uniform(0.1, 10, 7))
    p = scale_filters(params, steps.FIRST, steps.SECOND, c)
    assert steps.adaptive_sharpness(obj, p, rho=0.05, steps=3).value == pytest.approx(base["adaptive"], rel=1e-8)


@pytest.mark.x64
def test_measures_before_batchnorm_are_invariant_up_to_its_epsilon() -> None:
    obj, params, _ = _mlp_objective((5, 7, 3), dtype=jnp.float64, batch_norm=True, bn_mode="batch_stats")
    cfg = {"hessian": {"lanczos_steps": 20, "hutchpp_matvecs": 30}, "sharpness": SHARP}
    key = jax.random.key(4)
    base, _ = steps.measures(obj, params, cfg, key, names=steps.INVARIANT)
    p, _ = scale_before_batchnorm(params, None, steps.FIRST, steps.NORM, jnp.full(7, 10.0))
    vals, _ = steps.measures(obj, p, cfg, key, names=steps.INVARIANT)
    for name in steps.INVARIANT:
        assert vals[name] == pytest.approx(base[name], rel=1e-3), name
    p, s2 = scale_before_batchnorm(params, obj.state, steps.FIRST, steps.NORM, jnp.full(7, 0.5))
    assert steps.loss(dataclasses.replace(obj, state=s2), p) == pytest.approx(steps.loss(obj, params), rel=1e-4)


# --- planted runs: every claim can fail ---------------------------------------------------------------

ALPHAS = theory.alpha_grid(-3, 3, 13)


def _scan(**over: Any) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A paper-like scan of one network: power laws α^±2, flat invariant measures, shrinking widths."""
    a = ALPHAS
    slope = over.get("slope", 2.0)
    lam = 2.0 / a**slope + 3.0 * a**slope + 1.0
    width = 0.3 / np.sqrt(lam)
    frame = pd.DataFrame({
        "network": "mlp", "alpha": a, "rel_change": over.get("rel_change", 3e-7), "layerwise_rel_change": 2e-7,
        "filters_rel_change": 2e-7, "flips": 0, "layerwise_flips": 0, "filters_flips": over.get("flips", 0),
        "test_acc": 0.97, "train_loss": 0.01 * (1 + over.get("orbit", 0.0) * np.log10(a) ** 2),
        "param_norm": 10.0 * np.maximum(a, 1 / a), "lambda_max": lam, "trace": 5 * lam,
        "keskar_full": lam / 5, "keskar_subspace": over.get("subspace", lam / 50), "ball": lam / 20,
        "adaptive": 1e-3, "fn_sharpness": over.get("fn_sharpness", 2e-3 * (1 + 1e-7 * a)), "fn_curvature": 0.4,
        "adaptive_filters": 1e-3, "width": over.get("width", width), "width_censored": False,
    })
    cons = pd.DataFrame([{"network": "mlp", "epsilon": 1e-3, "bound": 200.0, "ball": over.get("ball", 5000.0),
                          "keskar_full": 9000.0, "witness_sharpness": 201.0, "witness_distance": 1e-3,
                          "witness_in_box": True}])
    return frame, cons


CFG = {"networks": {"mlp": {}}, "bn_networks": {"mlp_bn": {}}, "slopes": {"branch_exp": 1, "level": 0.05}}


def _judge_reparam(ids: list[str], **over: Any) -> dict[str, str]:
    scan, cons = _scan(**over)
    m = steps.reparametrize_measurements(scan, cons, CFG)
    m.update(_bn(**over.get("bn", {})))
    m.update(steps.sharp_generalizes_measurements(_d5(**over.get("d5", {}))))
    return {i: judge(CLAIMS[i], m).verdict for i in ids}


def _bn(change: float = 1e-5, lam_span: float = 100.0, planted: float = 0.0) -> dict[str, Any]:
    c = theory.alpha_grid(-1, 3, 9)
    frame = pd.DataFrame({"network": "mlp_bn", "scale": c, "rel_change_eval": change, "filters_rel_change_eval": 1e-6,
                          "rel_change_batch_stats": 1e-6, "filters_rel_change_batch_stats": 1e-6, "flips_eval": 0,
                          "flips_batch_stats": 0, "filters_flips_eval": 0, "filters_flips_batch_stats": 0,
                          "lambda_max": 1 + lam_span * (c == c.min()), "trace": 1 + lam_span * (c == c.min()),
                          "test_acc": 0.95, "adaptive": 1e-3 * (1 + planted * c), "fn_sharpness": 2e-3,
                          "fn_curvature": 0.4})
    return steps.batchnorm_measurements(frame, CFG)


def _d5(sb_acc: float = 0.97, lb_acc: float = 0.94, ratio: float = 3.0) -> pd.DataFrame:
    rows = []
    for seed in range(3):
        base = {q: 1.0 + 0.1 * seed for q in steps.D5_MEASURES}
        rows += [{"seed": seed, "model": "SB", "alpha": 1.0, "test_acc": sb_acc + 0.002 * seed, **base},
                 {"seed": seed, "model": "SB after T_α", "alpha": 10.0, "test_acc": sb_acc + 0.002 * seed,
                  **{q: v * 2 * ratio for q, v in base.items()}},
                 {"seed": seed, "model": "LB", "alpha": 1.0, "test_acc": lb_acc + 0.003 * seed,
                  **{q: v * 2 for q, v in base.items()}}]
    return pd.DataFrame(rows)


IDS = ["D1", "D2", "D3", "D4", "D5", "D6", "D7", "D8"]


def test_planted_paper_like_runs_reproduce_every_claim() -> None:
    assert set(_judge_reparam(IDS).values()) == {"reproduced"}


def test_planted_non_invariant_measure_is_caught_by_the_d6_rule() -> None:
    """A 'filter-normalised' measure that grows with α (as λ_max does) fails D6."""
    grows = 2e-3 * (1 + ALPHAS**2)
    assert _judge_reparam(["D6"], fn_sharpness=grows)["D6"] == "not reproduced"
    assert _judge_reparam(["D6"], bn={"planted": 1.0})["D6"] == "partially reproduced"


def test_planted_failures_are_not_reproduced() -> None:
    assert _judge_reparam(["D1"], flips=1)["D1"] == "not reproduced"
    assert _judge_reparam(["D1"], rel_change=1e-3)["D1"] == "partially reproduced"
    assert _judge_reparam(["D2"], slope=1.0)["D2"] == "not reproduced"  # λ spans only 3 orders with slope 1
    assert _judge_reparam(["D3"], ball=100.0)["D3"] == "partially reproduced"  # search below the bound
    assert _judge_reparam(["D4"], orbit=1.0)["D4"] == "not reproduced"  # the loss moves along the orbit
    assert _judge_reparam(["D4"], width=np.full(len(ALPHAS), 0.1))["D4"] == "partially reproduced"
    assert _judge_reparam(["D5"], d5={"sb_acc": 0.90})["D5"] == "partially reproduced"  # SB not better
    assert _judge_reparam(["D5"], d5={"ratio": 0.4})["D5"] == "not reproduced"  # still flatter than LB
    assert _judge_reparam(["D7"], subspace=np.full(len(ALPHAS), 0.5))["D7"] == "not reproduced"
    assert _judge_reparam(["D8"], bn={"change": 0.05})["D8"] == "not reproduced"
    assert _judge_reparam(["D8"], bn={"lam_span": 1.0})["D8"] == "not reproduced"


def test_no_batchnorm_network_makes_d8_not_testable() -> None:
    m = steps.batchnorm_measurements(pd.DataFrame(), {**CFG, "bn_networks": {}})
    assert judge(CLAIMS["D8"], m).verdict == "not testable at this scale"


# --- configuration -------------------------------------------------------------------------------------

@pytest.mark.parametrize(("override", "key"), [
    ({"sb_lb": {"network": "vgg"}}, "sb_lb.network"),
    ({"alphas": {"min_exp": -3, "max_exp": 3, "points": 4}}, "alphas"),
    ({"slopes": {"branch_exp": 2.9, "level": 0.05}}, "slopes.branch_exp"),
    ({"hessian": {"lanczos_steps": 10, "hutchpp_matvecs": 10, "bn_mode": "eval"}}, "hessian.hutchpp_matvecs"),
    ({"hessian": {"lanczos_steps": 10, "hutchpp_matvecs": 12, "bn_mode": "train"}}, "bn_mode"),
])
def test_bad_config_stops_with_one_line_naming_the_key(override: dict[str, Any], key: str) -> None:
    from shared.config import ConfigError, module_defaults, resolve

    name = "dinh_reparametrization"
    cfg = module_defaults(name)
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")) as err:
        resolve({**cfg, name: {**cfg[name], **override}, "scale": "quick"}, name)
    assert "\n" not in str(err.value)


def test_every_scale_validates() -> None:
    from shared.config import module_defaults, resolve

    name = "dinh_reparametrization"
    for scale in ("smoke", "quick", "paper"):
        cfg = resolve({**module_defaults(name), "scale": scale}, name)
        assert cfg["sb_lb"]["network"] in cfg["networks"]
