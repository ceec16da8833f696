"""Keskar et al. (2017): the module's mathematics against ground truth, and planted runs whose
claims must come out 'not reproduced' (no gap, equal sharpness, a peaking LB curve, ...)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

from replications.keskar_large_batch import steps, theory
from shared.claims import judge, load_claims
from shared.config import module_dir
from shared.training import init_network

CLAIMS = {c["id"]: c for c in load_claims(module_dir("keskar_large_batch") / "claims.yaml")["claims"]}


# --- theory ---------------------------------------------------------------------------------------

def test_stopping_rule_stops_after_patience_epochs_without_improvement() -> None:
    losses = [1.0, 0.5, 0.4999, 0.49995, 0.4999, 0.3]
    best, since = np.array([np.inf]), np.array([0])
    stops = []
    for loss in losses:
        best, since, stop = theory.stopping_update(best, since, np.array([loss]), min_delta=1e-3, patience=3)
        stops.append(bool(stop[0]))
    assert stops == [False, False, False, False, True, False]  # epochs 3-5 fail to beat 0.5 − 1e-3
    _, _, stop = theory.stopping_update(np.array([1.0]), np.array([0]), np.array([np.nan]), min_delta=0, patience=9)
    assert stop[0]


def test_second_difference_of_a_parabola_is_its_curvature() -> None:
    a = theory.alphas(25)
    assert a[8] == 0 and a[16] == 1 and len(a) == 25
    f = 3.0 * (a - 1.0) ** 2 + 0.5 * a**4
    assert theory.second_difference(a, f, 1.0) == pytest.approx(6 + 6 * 1 + 0.5 * 2 * 0.125**2, rel=1e-9)
    assert theory.second_difference(a, f, 0.0) == pytest.approx(6 + 0.5 * 2 * 0.125**2, rel=1e-9)
    with pytest.raises(ValueError):
        theory.second_difference(a, f, 2.0)


def test_distance_ratio_and_peak_drop() -> None:
    x0 = np.zeros(4)
    assert theory.distance_ratio(x0, np.array([3.0, 4, 0, 0]), np.array([0, 0, 1.0, 0])) == pytest.approx(5)
    assert theory.peak_drop([0.5, 0.8, 0.7]) == pytest.approx(0.1)
    assert theory.peak_drop([0.5, 0.7, 0.8]) == 0
    assert theory.threshold_batch([32, 128, 512], [[0.9, 0.91], [0.9, 0.9], [0.8, 0.82]], 0.02) == 512


def test_paper_gap_is_table2_difference() -> None:
    gap = theory.paper_gap("c1")
    assert gap["mean"] == pytest.approx(0.8004 - 0.7726)
    assert gap["sd"] == pytest.approx(np.hypot(0.0012, 0.0042))
    assert theory.lb_batch_size(50000) == 5000


def test_paper_tables_cover_every_cell_and_agree_with_the_gap_claims() -> None:
    """Tables 2–4 come from claims.yaml's ``paper_tables`` and cover every network and cell; each
    ``within_paper_spread`` claim's paper_value is Table 2's SB − LB gap (the two cannot drift)."""
    from shared.claims import load_claims

    acc, sharp = theory.paper_accuracy(), theory.paper_sharpness()
    assert set(acc) == set(sharp) == set(theory.NETWORKS)
    for net in theory.NETWORKS:
        assert set(acc[net]) == {f"{s}_{r}" for s in ("train", "test") for r in ("sb", "lb")}
        assert set(sharp[net]) == {(sp, e, r) for sp in ("full", "subspace") for e in (1e-3, 5e-4)
                                   for r in ("sb", "lb")}
    assert sharp["f1"][("full", 1e-3, "lb")] == (205.14, 69.52)
    claims = load_claims(theory.CLAIMS_PATH)["claims"]
    spread = [c for c in claims if c["rule"]["type"] == "within_paper_spread"]
    assert spread
    for c in spread:
        net = c["rule"]["quantity"].removeprefix("test_gap_")
        gap = theory.paper_gap(net)
        assert c["paper_value"]["mean"] == pytest.approx(gap["mean"], abs=1e-6), c["id"]
        assert c["paper_value"]["sd"] == pytest.approx(gap["sd"], abs=1e-6), c["id"]


# --- the module's call of Metric 2.1 and its interpolation ------------------------------------------

def _mlp(seed: int = 0):  # type: ignore[no-untyped-def]
    from replications.keskar_large_batch import models

    return init_network(models.builder("mlp", widths=[6, 5, 3]), jax.random.key(seed))


def test_subspace_box_bound_used_by_the_module_is_the_pseudo_inverse_box(x64) -> None:  # type: ignore[no-untyped-def]
    """The box the module's Metric 2.1 call searches is ε(|(A⁺x)_i| + 1) with A the call's own
    random subspace (A⁺ = numpy's pinv), and the full-space box is ε(|x_i| + 1)."""
    from shared.sharpness.keskar import random_subspace, ravel

    net, params, state = _mlp()
    rng = np.random.default_rng(0)
    x, y = jnp.asarray(rng.normal(size=(40, 6))), jnp.asarray(rng.integers(0, 3, 40))
    tcfg = {"bn_mode": "eval", "eval_batch": 40}
    obj, p = steps.objective(net, params, state, x, y, tcfg)
    key = jax.random.key(3)
    scfg = {"spaces": ["subspace", "full"], "epsilons": [1e-3], "subspace_dim": 4, "maxiter": 2, "restarts": 1}
    from shared.sharpness.keskar import keskar_sharpness

    res = keskar_sharpness(obj, p, epsilon=1e-3, dim=4, key=key, maxiter=2, on_no_progress="ignore")
    flat, _ = ravel(p)
    a = np.asarray(random_subspace(jax.random.fold_in(key, 0), flat.size, 4, flat.dtype))
    np.testing.assert_allclose(res.bound, 1e-3 * (np.abs(np.linalg.pinv(a) @ np.asarray(flat)) + 1), rtol=1e-9)
    full = keskar_sharpness(obj, p, epsilon=1e-3, maxiter=2, on_no_progress="ignore")
    np.testing.assert_allclose(full.bound, 1e-3 * (np.abs(np.asarray(flat)) + 1), rtol=1e-12)
    cells = steps.sharpness_cells(obj, p, scfg, key)
    assert cells["sharp_subspace_1e3"] == pytest.approx(res.sharpness) and cells["sharp_full_1e3"] >= 0


def test_parametric_endpoints_reproduce_the_two_models_losses() -> None:
    from shared.training import make_evaluator

    net, p_s, s_s = _mlp(0)
    _, p_l, s_l = _mlp(1)
    rng = np.random.default_rng(1)
    sets = {"train": (jnp.asarray(rng.normal(size=(50, 6)), jnp.float32), jnp.asarray(rng.integers(0, 3, 50))),
            "test": (jnp.asarray(rng.normal(size=(30, 6)), jnp.float32), jnp.asarray(rng.integers(0, 3, 30)))}
    tcfg = {"bn_mode": "eval", "eval_batch": 64}
    par = steps.parametric(net, (p_s, s_s), (p_l, s_l), theory.alphas(7), sets, tcfg)
    evaluate = make_evaluator(net, mode="eval", batch_size=64)
    for split, (x, y) in sets.items():
        for alpha, (p, s) in ((0.0, (p_s, s_s)), (1.0, (p_l, s_l))):
            loss, acc = evaluate(p, s, x, y)
            row = par[(par["split"] == split) & np.isclose(par["alpha"], alpha)]
            assert float(row["loss"].iloc[0]) == pytest.approx(float(loss), rel=1e-5)
            assert float(row["accuracy"].iloc[0]) == pytest.approx(float(acc))
    mid = par[(par["split"] == "train") & np.isclose(par["alpha"], 0.5)]["loss"].iloc[0]
    assert np.isfinite(mid)


def test_interpolated_batchnorm_variance_is_floored_at_zero() -> None:
    s = {"bn": {"var": jnp.array([1.0, 2.0]), "mean": jnp.array([0.0, 1.0])}}
    l_ = {"bn": {"var": jnp.array([3.0, 0.5]), "mean": jnp.array([1.0, -1.0])}}
    out = steps.interpolate_state(s, l_, 2.0)
    np.testing.assert_allclose(out["bn"]["var"], [5.0, 0.0])  # 2·0.5 − 2 = −1 → 0
    np.testing.assert_allclose(out["bn"]["mean"], [2.0, -3.0])  # means extrapolate freely


# --- planted runs: every claim can fail -------------------------------------------------------------

def _runs(test_sb, test_lb, train_sb, train_lb, sharp_sb, sharp_lb, lam_sb, lam_lb, peak, ratio, slot="f1"):  # type: ignore[no-untyped-def]
    rows = []
    for i in range(len(test_sb)):
        for regime, te, tr, sh, lam in (("sb", test_sb[i], train_sb[i], sharp_sb[i], lam_sb[i]),
                                        ("lb", test_lb[i], train_lb[i], sharp_lb[i], lam_lb[i])):
            row = {"network": slot, "regime": regime, "seed": i, "test_acc": te, "train_acc": tr,
                   "distance_ratio": ratio[i], "lambda_max": lam, "trace": 10 * lam, "peak_drop": peak[i] if
                   regime == "lb" else 0.0, "best_test_acc": te + (peak[i] if regime == "lb" else 0.0)}
            for space, eps in steps.CELLS:
                row[f"sharp_{steps.cell_name(space, eps)}"] = sh * (1 + 0.01 * i)
            rows.append(row)
    return pd.DataFrame(rows)


def _parametric(k_sb: list[float], k_lb: list[float]) -> pd.DataFrame:
    a = theory.alphas(25)
    rows = []
    for s, (ks, kl) in enumerate(zip(k_sb, k_lb, strict=True)):
        loss = np.where(a < 0.5, 0.5 * ks * a**2, 0.5 * kl * (a - 1) ** 2) + 0.01
        rows += [{"alpha": x, "split": "train", "loss": v, "accuracy": 1.0, "seed": s} for x, v in zip(a, loss,
                                                                                                       strict=True)]
    return pd.DataFrame(rows)


GOOD = dict(test_sb=[0.980, 0.981, 0.9805, 0.980, 0.9802], test_lb=[0.978, 0.9785, 0.9782, 0.9778, 0.9781],
            train_sb=[0.999] * 5, train_lb=[0.998] * 5, sharp_sb=[1.0, 1.2, 0.9, 1.1, 1.0],
            sharp_lb=[200.0, 180, 210, 190, 205], lam_sb=[1.0, 1.1, 0.9, 1.0, 1.05], lam_lb=[50.0, 60, 55, 52, 58],
            peak=[0.0, 0.001, 0.0, 0.0005, 0.0], ratio=[5.0, 6, 4, 7, 5])


# Table 2's sizes for C1 (test 0.8004 vs 0.7726): a paper-like C1 pair has a gap of that size.
GOOD_C1 = dict(GOOD, test_sb=[0.800, 0.801, 0.8005, 0.800, 0.8002], test_lb=[0.772, 0.7725, 0.7722, 0.7728, 0.7731])
SLOTS = ["f1", "c1"]  # the networks the quick scale runs (the planted runs are the paper's, analogue: False)


def _judge(ids: list[str], slot: str = "f1", **over):  # type: ignore[no-untyped-def]
    spec = {"network": slot, "model": "mlp", "dataset": "mnist", "analogue": False}
    k_sb, k_lb = over.pop("k_sb", [1.0, 1.1, 0.9, 1.0, 1.2]), over.pop("k_lb", [30.0, 28, 35, 31, 29])
    good = GOOD_C1 if slot == "c1" else GOOD
    m = steps.slot_measurements(slot, _runs(**{**good, **over}, slot=slot), _parametric(k_sb, k_lb), spec, {})
    return {i: judge(CLAIMS[i.format(S=slot.upper())], m).verdict for i in ids}


IDS = ["KS1-{S}", "KS1-size-{S}", "KS2-{S}", "KS3-{S}", "KS4-{S}", "KS7-{S}", "KSH-{S}"]


@pytest.mark.parametrize("slot", SLOTS)
def test_planted_paper_like_runs_reproduce_every_claim(slot: str) -> None:
    assert set(_judge(IDS, slot).values()) == {"reproduced"}


@pytest.mark.parametrize("slot", SLOTS)
def test_planted_no_gap_is_not_reproduced(slot: str) -> None:
    good = GOOD_C1 if slot == "c1" else GOOD
    v = _judge(["KS1-{S}", "KS1-size-{S}"], slot, test_lb=good["test_sb"])
    assert v == {"KS1-{S}": "not reproduced", "KS1-size-{S}": "not reproduced"}


@pytest.mark.parametrize("slot", SLOTS)
def test_planted_equal_sharpness_fails_ks2_and_ksh(slot: str) -> None:
    v = _judge(["KS2-{S}", "KSH-{S}"], slot, sharp_lb=GOOD["sharp_sb"], lam_lb=GOOD["lam_sb"])
    assert v == {"KS2-{S}": "not reproduced", "KSH-{S}": "not reproduced"}


@pytest.mark.parametrize("slot", SLOTS)
def test_planted_equal_basins_fail_ks3(slot: str) -> None:
    assert _judge(["KS3-{S}"], slot, k_lb=[1.0, 1.1, 0.9, 1.0, 1.2])["KS3-{S}"] == "not reproduced"


@pytest.mark.parametrize("slot", SLOTS)
def test_planted_peaking_lb_curve_fails_ks4(slot: str) -> None:
    assert _judge(["KS4-{S}"], slot, peak=[0.05] * 5)["KS4-{S}"] == "not reproduced"


@pytest.mark.parametrize("slot", SLOTS)
def test_planted_distance_ratio_below_one_fails_ks7(slot: str) -> None:
    assert _judge(["KS7-{S}"], slot, ratio=[0.5, 0.8, 0.9, 0.7, 0.6])["KS7-{S}"] == "not reproduced"


def test_planted_flat_sweep_and_warm_start_are_not_reproduced() -> None:
    flat = {"sweep_batches": [32, 128, 512], "sweep_test_acc": [[0.9, 0.91, 0.9], [0.91, 0.9, 0.9], [0.9, 0.9, 0.91]],
            "sweep_test_acc_smallest": [0.9, 0.91, 0.9], "sweep_test_acc_largest": [0.9, 0.9, 0.91]}
    assert judge(CLAIMS["KS5"], flat).verdict == "not reproduced"
    falling = {**flat, "sweep_test_acc": [[0.95, 0.94, 0.95], [0.9, 0.91, 0.9], [0.8, 0.81, 0.82]],
               "sweep_test_acc_smallest": [0.95, 0.94, 0.95], "sweep_test_acc_largest": [0.8, 0.81, 0.82]}
    assert judge(CLAIMS["KS5"], falling).verdict == "reproduced"
    ws = {"ws_epochs": [0, 5, 20], "ws_test_acc": [[0.8, 0.8], [0.8, 0.8], [0.8, 0.8]],
          "ws_sharpness": [[5.0, 5.1], [5.0, 5.1], [5.0, 5.1]]}
    assert judge(CLAIMS["KS6"], ws).verdict == "not reproduced"


def test_analogue_network_size_claim_is_not_testable_and_f2_never_is() -> None:
    spec = {"model": "mlp", "dataset": "mnist1d", "analogue": True}
    m = steps.slot_measurements("f1", _runs(**GOOD), _parametric([1.0] * 5, [30.0] * 5), spec, {})
    assert judge(CLAIMS["KS1-size-F1"], m).verdict == "not testable at this scale"
    assert judge(CLAIMS["KS-F2"], {"f2_rows": {"not_testable": theory.F2_NOT_TESTABLE}}).verdict == \
        "not testable at this scale"


def test_capped_seeds_leave_the_verdicts_and_all_capped_is_not_testable() -> None:
    spec = {"network": "f1", "model": "mlp", "dataset": "mnist", "analogue": False}
    runs = _runs(**GOOD)
    runs["capped"] = False
    par = _parametric([1.0, 1.1, 0.9, 1.0, 1.2], [30.0, 28, 35, 31, 29])
    runs.loc[(runs["seed"] == 1) & (runs["regime"] == "lb"), "capped"] = True
    m = steps.slot_measurements("f1", runs, par, spec, {})
    assert m["test_acc_sb_f1"] == [GOOD["test_sb"][i] for i in (0, 2, 3, 4)]  # seed 1's pair left out
    assert len(m["kappa_lb_f1"]) == 4 and len(m["sharp_full_1e3_sb_f1"]) == 4
    table = steps.table2(runs, {"f1": spec})
    assert set(table[table["slot"] == "f1"]["capped_seeds_excluded"]) == {1}
    runs["capped"] = runs["seed"] != 0
    m = steps.slot_measurements("f1", runs, par, spec, {})
    assert judge(CLAIMS["KS2-F1"], m).verdict == "not testable at this scale"


def test_conv1d_analogue_equals_a_numpy_convnet() -> None:
    """The quick scale's C1 analogue (models.Conv1DNet): two SAME k5 cross-correlations, ReLU,
    max-pool 2, then a linear layer on the (position, channel) flattening, in NumPy."""
    from flax import nnx

    from replications.keskar_large_batch import models

    net = models.builder("conv1d", channels=3)(nnx.Rngs(0))
    x = np.asarray(jax.random.normal(jax.random.key(1), (4, 40)), np.float32)

    def conv(h: np.ndarray, layer: nnx.Conv) -> np.ndarray:
        w, b = np.asarray(layer.kernel[...]), np.asarray(layer.bias[...])  # (5, in, out), (out,)
        pad = np.pad(h, ((0, 0), (2, 2), (0, 0)))
        return np.stack([np.einsum("bki,kio->bo", pad[:, t:t + 5], w) for t in range(h.shape[1])], 1) + b

    def pool(h: np.ndarray) -> np.ndarray:
        return np.maximum(h[:, 0::2], h[:, 1::2])

    h = pool(np.maximum(conv(x[..., None], net.conv1), 0))
    h = pool(np.maximum(conv(h, net.conv2), 0))
    want = h.reshape(4, -1) @ np.asarray(net.out.kernel[...]) + np.asarray(net.out.bias[...])
    np.testing.assert_allclose(np.asarray(net(jnp.asarray(x))), want, rtol=1e-5, atol=1e-5)
