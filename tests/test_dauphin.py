"""Dauphin et al. (2014): the module's mathematics against ground truth, and planted results whose claims
must come out 'not reproduced'."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from replications.dauphin_saddle_points import theory
from shared.claims import judge, load_claims
from shared.config import ConfigError, deep_merge, module_defaults, module_dir, resolve

pytestmark = pytest.mark.x64
NAME = "dauphin_saddle_points"
CLAIMS = {c["id"]: c for c in load_claims(module_dir(NAME) / "claims.yaml")["claims"]}


def test_mlp_loss_matches_numpy() -> None:
    rng = np.random.default_rng(0)
    m, d, h, c, wd = 7, 5, 3, 10, 0.01
    x, y = rng.standard_normal((m, d)), rng.integers(0, c, m)
    theta = rng.standard_normal(theory.num_params(d, h, c))
    w1 = theta[: h * d].reshape(h, d)
    b1 = theta[h * d: h * d + h]
    w2 = theta[h * d + h: h * d + h + c * h].reshape(c, h)
    b2 = theta[-c:]
    z = np.tanh(x @ w1.T + b1) @ w2.T + b2
    logp = z - z.max(1, keepdims=True)
    logp = logp - np.log(np.exp(logp).sum(1, keepdims=True))
    want = -np.mean(logp[np.arange(m), y]) + 0.5 * wd * np.sum(theta**2)
    got = float(theory.mlp_loss(x, y, h, c, wd)(jnp.asarray(theta)))
    assert got == pytest.approx(want, rel=1e-12)


def test_downsample_shape_and_standardization() -> None:
    imgs = np.random.default_rng(1).uniform(size=(20, 8, 8, 1))
    feats = theory.downsample(imgs, 4)
    assert feats.shape == (20, 16)
    np.testing.assert_allclose(feats.mean(0), 0, atol=1e-12)
    np.testing.assert_allclose(feats.std(0), 1, atol=1e-12)
    # a constant image resizes to the same constant: area averaging
    const = np.full((2, 8, 8), 0.3)
    small = np.asarray(theory.jax.image.resize(jnp.asarray(const), (2, 4, 4), "linear", antialias=True))
    np.testing.assert_allclose(small, 0.3, atol=1e-12)


def test_steps_match_dense_formulas() -> None:
    rng = np.random.default_rng(2)
    a = rng.standard_normal((6, 6))
    h = a + a.T
    g = rng.standard_normal(6)
    lam, v = np.linalg.eigh(h)
    damping = 0.1
    sfn = -v @ ((v.T @ g) / (np.abs(lam) + damping))
    newton = -np.linalg.solve(h + damping * np.eye(6), g)
    np.testing.assert_allclose(np.asarray(theory.sfn_step(jnp.asarray(h), jnp.asarray(g), damping)), sfn, rtol=1e-10)
    np.testing.assert_allclose(np.asarray(theory.newton_step(jnp.asarray(h), jnp.asarray(g), damping)), newton,
                               rtol=1e-9)
    np.testing.assert_allclose(np.asarray(theory.gd_step(jnp.asarray(h), jnp.asarray(g), 0.3)), -0.3 * g)


def test_steps_within_counts_the_band() -> None:
    losses = np.array([[1.0, 1.0005, 0.9995, 0.99, 0.5], [1.0, 1.0, 1.0, 1.0, 1.0]])
    np.testing.assert_array_equal(theory.steps_within(losses, 1e-3), [3, 5])


def _toy_saddle(v: jnp.ndarray) -> jnp.ndarray:
    """½x² − ½y² + ¼y⁴: a saddle at 0 (index 1, loss 0), minima at y = ±1 (loss −¼)."""
    return 0.5 * v[0] ** 2 - 0.5 * v[1] ** 2 + 0.25 * v[1] ** 4


def _escape_measurements(sfn: theory.StepFn) -> dict:  # type: ignore[type-arg]
    rng = np.random.default_rng(3)
    d = rng.standard_normal((5, 2))
    start = 1e-3 * d / np.linalg.norm(d, axis=1, keepdims=True)
    out = {}
    for name, step, param in (("newton", theory.newton_step, 0.0), ("gd", theory.gd_step, 0.1), ("sfn", sfn, 1e-4)):
        end, losses = theory.run_method(_toy_saddle, start, step, param, 20, 1.0)
        out[name] = (end, losses)
    ratio = np.linalg.norm(out["newton"][0], axis=1) / 1e-3
    drop = {k: -v[1][:, -1] for k, v in out.items()}
    sfn_esc, gd_esc = float(np.mean(drop["sfn"] >= 1e-3)), float(np.mean(drop["gd"] >= 1e-3))
    return {"escape_saddles": 5, "newton_returned_fraction": float(np.mean(ratio <= 0.1)),
            "sfn_escaped_fraction": sfn_esc, "sfn_minus_gd_escaped": sfn_esc - gd_esc}


def test_da3_escape_on_a_planted_saddle_and_a_newton_posing_as_sfn() -> None:
    m = _escape_measurements(theory.sfn_step)
    assert m["newton_returned_fraction"] == 1.0 and m["sfn_escaped_fraction"] == 1.0
    assert judge(CLAIMS["DA3-escape"], m).verdict == "reproduced"
    planted = _escape_measurements(theory.newton_step)  # "SFN" that is plain Newton: returns to the saddle
    assert planted["sfn_escaped_fraction"] == 0.0
    assert judge(CLAIMS["DA3-escape"], planted).verdict == "not reproduced"


def test_da3_sgd_comparison_and_a_newton_posing_as_sfn() -> None:
    from replications.dauphin_saddle_points import steps

    rng = np.random.default_rng(4)
    starts = 1e-2 * rng.standard_normal((6, 2))
    grid = {"gd": [0.1], "newton": [1e-3], "sfn": [1e-3]}

    def measure(methods: dict) -> dict:  # type: ignore[type-arg]
        curves, _, _ = steps.compare_methods(_toy_saddle, starts, grid, 10, 1.0, methods)
        final = {k: v[:, -1] for k, v in curves.items()}
        return {"newton_minus_sfn": (final["newton"] - final["sfn"]).tolist(),
                "gd_minus_sfn": (final["gd"] - final["sfn"]).tolist(), "zeros_seeds": [0.0] * 6}

    assert judge(CLAIMS["DA3-sgd"], measure(theory.METHODS)).verdict == "reproduced"
    planted = measure({**theory.METHODS, "sfn": theory.newton_step})
    assert planted["newton_minus_sfn"] == [0.0] * 6
    assert judge(CLAIMS["DA3-sgd"], planted).verdict != "reproduced"


def _da1(error: list[float], index: list[float]) -> dict:  # type: ignore[type-arg]
    return {"critical_points": len(error), "approx_points": len(error), "error_strict": error,
            "index_strict": index, "error_approx": error, "index_approx": index}


def test_da1_planted_rise_and_shuffled_relation() -> None:
    rng = np.random.default_rng(5)
    error = rng.uniform(0.2, 2.3, 30)
    index = np.clip(0.15 * error + 0.02 * rng.standard_normal(30), 0, None)
    for claim in ("DA1", "DA1-approx"):
        assert judge(CLAIMS[claim], _da1(error.tolist(), index.tolist())).verdict == "reproduced"
    shuffled = rng.permutation(index)  # planted: the index-error relation broken
    from scipy import stats

    assert stats.spearmanr(error, shuffled, alternative="greater").pvalue > 0.05
    for claim in ("DA1", "DA1-approx"):
        assert judge(CLAIMS[claim], _da1(error.tolist(), shuffled.tolist())).verdict == "not reproduced"
    # too few critical points: not reproduced whatever the trend
    few = _da1(error[:5].tolist(), index[:5].tolist())
    assert judge(CLAIMS["DA1"], few).verdict == "not reproduced"


def test_da2_planted_plateaus_and_none() -> None:
    index = [1, 1, 2, 3, 5, 8, 12, 20]
    plateau = [900, 800, 600, 400, 300, 200, 150, 100]
    control = [1, 2, 1, 5, 3, 2, 1, 4, 2, 3]
    m = {"plateau_steps": plateau, "plateau_index": index, "plateau_steps_control": control}
    assert judge(CLAIMS["DA2"], m).verdict == "reproduced"
    flat = {**m, "plateau_steps": [2, 3, 1, 4, 2, 3, 1, 2]}  # planted: no slowdown near saddles
    assert judge(CLAIMS["DA2"], flat).verdict == "not reproduced"


def test_bad_config_names_the_key() -> None:
    with pytest.raises(ConfigError, match="search.checkpoints"):
        resolve(deep_merge(module_defaults(NAME), {"scale": "smoke", NAME: {"search": {"checkpoints": [100, 0]}}}),
                NAME)
    with pytest.raises(ConfigError, match="data.name"):
        resolve(deep_merge(module_defaults(NAME), {"scale": "smoke", NAME: {"data": {"name": "cifar"}}}), NAME)


def test_paper_scale_validates() -> None:
    settings = resolve({**module_defaults(NAME), "scale": "paper"}, NAME)
    assert settings["data"]["name"] == "mnist" and settings["data"]["side"] == 10


@pytest.mark.slow
def test_steps_at_the_smoke_scale_return_their_declaration() -> None:
    from replications.dauphin_saddle_points import steps
    from shared.module import check_result, load

    settings = resolve({**module_defaults(NAME), "scale": "smoke"}, NAME)
    for step in load(NAME).steps:
        result = getattr(steps, step.name)(settings)
        check_result(NAME, step, result)
    import matplotlib.pyplot as plt

    plt.close("all")
