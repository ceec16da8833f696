"""Li et al. (2018): the module's mathematics against ground truth (filter normalisation against a
NumPy port of the official recipe, the plane of a quadratic, the non-convexity scores on constructed
surfaces, the reduced-width and no-shortcut ResNets), and planted runs whose claims must come out
'not reproduced'."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
from flax import nnx

from replications.li_visualization import module as li_module
from replications.li_visualization import steps, theory
from shared.claims import judge, load_claims
from shared.config import ConfigError, module_dir
from shared.landscape.directions import gaussian_like, random_direction
from shared.landscape.surface import from_apply, plane
from shared.models.resnet import CifarResNet, resnet

CLAIMS = {c["id"]: c for c in load_claims(module_dir("li_visualization") / "claims.yaml")["claims"]}


# --- filter normalisation against the official recipe (net_plotter.normalize_direction) --------------

def _official_numpy(draw: dict, weights: dict) -> dict:
    """Li's loop on PyTorch layouts: for each filter (first axis) d ← d · ‖w‖ / (‖d‖ + 1e-10); tensors
    with ndim <= 1 (biases, BN) zeroed (``ignore='biasbn'``). Flax kernels are (…, in, out): moving the
    last axis first gives PyTorch's (out, …)."""
    out = {}
    for path, d in draw.items():
        w = weights[path]
        if w.ndim <= 1:
            out[path] = np.zeros_like(w)
            continue
        dt, wt = np.moveaxis(d, -1, 0).copy(), np.moveaxis(w, -1, 0)
        for j in range(dt.shape[0]):
            dt[j] = dt[j] * (np.linalg.norm(wt[j]) / (np.linalg.norm(dt[j]) + 1e-10))
        out[path] = np.moveaxis(dt, 0, -1)
    return out


def _flat(tree) -> dict:  # type: ignore[no-untyped-def]
    return {jax.tree_util.keystr(p): np.asarray(v, np.float64) for p, v in jax.tree_util.tree_leaves_with_path(tree)}


class _ConvBNDense(nnx.Module):
    """conv3×3 (with bias) → BN → ReLU → dense: every kind of leaf the module's nets have."""

    def __init__(self, *, rngs: nnx.Rngs) -> None:
        self.conv = nnx.Conv(2, 5, (3, 3), rngs=rngs)
        self.bn = nnx.BatchNorm(5, rngs=rngs)
        self.head = nnx.Linear(5, 3, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.head(jnp.mean(jax.nn.relu(self.bn(self.conv(x))), axis=(1, 2)))


def test_filter_normalised_directions_match_a_numpy_port_of_the_official_recipe() -> None:
    params = nnx.split(_ConvBNDense(rngs=nnx.Rngs(0)), nnx.Param, ...)[1]  # type: ignore[misc]
    params = jax.tree_util.tree_map(lambda w: w + 0.3 if w.ndim == 1 else w, params)  # non-trivial BN
    key = jax.random.key(7)
    ours = _flat(random_direction(params, key))  # the module's call: norm="filter", ignore="biasbn"
    ref = _official_numpy(_flat(gaussian_like(params, key)), _flat(params))
    assert set(ours) == set(ref) and any(v.ndim == 4 for v in ours.values())
    for path in ref:
        np.testing.assert_allclose(ours[path], ref[path], rtol=2e-5, atol=1e-7, err_msg=path)
    assert all(not ours[p].any() for p in ours if ours[p].ndim <= 1)  # biases and BN zeroed


# --- the plane of a quadratic, exactly ---------------------------------------------------------------

@pytest.mark.x64
def test_plane_of_a_quadratic_is_reproduced_exactly() -> None:
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(30, 4)), rng.normal(size=30)
    theta, d1, d2 = (rng.normal(size=4) for _ in range(3))
    obj = from_apply(lambda p, xb: xb @ p, jnp.asarray(theta), (jnp.asarray(x), jnp.asarray(y)), bn_mode="none",
                     loss=lambda pred, t: (pred - t) ** 2)
    a = np.linspace(-1, 1, 7)
    tab = plane(obj, jnp.asarray(theta), jnp.asarray(d1), jnp.asarray(d2), a, a).table
    aa, bb = tab["alpha"].to_numpy(), tab["beta"].to_numpy()
    r0, g1, g2 = x @ theta - y, x @ d1, x @ d2
    # L(θ + αd1 + βd2) = mean (r0 + α g1 + β g2)²: a quadratic in (α, β) with closed-form coefficients
    expect = (np.mean(r0**2) + 2 * aa * np.mean(r0 * g1) + 2 * bb * np.mean(r0 * g2) + aa**2 * np.mean(g1**2)
              + bb**2 * np.mean(g2**2) + 2 * aa * bb * np.mean(g1 * g2))
    np.testing.assert_allclose(tab["loss"].to_numpy(), expect, rtol=1e-12)
    z = steps.to_grid(tab, "loss")[2]
    faa, fbb, fab = theory.fd_hessian_2d(z, a[1] - a[0], a[1] - a[0])  # exact for a quadratic
    np.testing.assert_allclose(faa, 2 * np.mean(g1**2), rtol=1e-9)
    np.testing.assert_allclose(fbb, 2 * np.mean(g2**2), rtol=1e-9)
    np.testing.assert_allclose(fab, 2 * np.mean(g1 * g2), rtol=1e-9)


# --- ResNets: reduced width, no residual path without shortcuts -----------------------------------------

def test_base_width_sets_the_stage_widths_and_the_default_is_unchanged() -> None:
    small = nnx.eval_shape(lambda: resnet(20, rngs=nnx.Rngs(0), base_width=4, width=2, noshort=True))
    assert small.stem.out_features == 8 and small.blocks[-1].conv2.out_features == 32
    default = nnx.eval_shape(lambda: CifarResNet(20, rngs=nnx.Rngs(0)))
    assert default.stem.out_features == 16 and default.blocks[-1].conv2.out_features == 64
    with pytest.raises(ValueError, match="base_width"):
        resnet(8, rngs=nnx.Rngs(0), base_width=0)


def test_reduced_width_noshort_resnet_is_a_plain_chain_of_residual_branches() -> None:
    model = resnet(8, rngs=nnx.Rngs(1), base_width=2, in_channels=1, noshort=True)
    model.eval()
    x = jax.random.normal(jax.random.key(0), (3, 8, 8, 1))
    assert all(b.skip(x) is None and b.proj_conv is None for b in model.blocks)

    @nnx.jit
    def both(m: CifarResNet, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        h = jax.nn.relu(m.stem_bn(m.stem(x)))
        for block in m.blocks:
            h = jax.nn.relu(block.residual(h))  # nothing added: no residual path
        return m(x), m.linear(jnp.mean(h, axis=(1, 2)))

    out, chain = both(model, x)
    np.testing.assert_allclose(out, chain, rtol=1e-5, atol=1e-6)


# --- non-convexity scores on constructed surfaces ---------------------------------------------------------

A = np.linspace(-1, 1, 21)
AA, BB = np.meshgrid(A, A)


def test_convex_bowl_has_one_minimum_and_no_nonconvex_points() -> None:
    z = 0.5 * AA**2 + 2 * BB**2 + 0.3 * AA * BB + 0.1
    assert theory.grid_local_minima(z) == 1
    assert theory.grid_nonconvex_fraction(z, A, A, t=0.1, level=10.0) == 0.0


def test_saddle_and_egg_crate_are_non_convex() -> None:
    saddle = AA**2 - BB**2 + 1
    assert theory.grid_local_minima(saddle) == 2  # the two border minima at β = ±1, α = 0
    assert theory.grid_nonconvex_fraction(saddle, A, A, t=0.1, level=10.0) == 1.0  # λ_min/λ_max = −1 everywhere
    crate = AA**2 + BB**2 + 0.3 * np.cos(6 * np.pi * AA) * np.cos(6 * np.pi * BB) + 1
    assert theory.grid_local_minima(crate) > 5
    assert theory.grid_nonconvex_fraction(crate, A, A, t=0.1, level=10.0) > 0.3
    concave = -(AA**2) - BB**2 + 5
    assert theory.grid_nonconvex_fraction(concave, A, A, t=0.1, level=10.0) == 1.0  # λ_max < 0 counts
    # the chance-level mask: only points below `level` are judged
    assert np.isnan(theory.grid_nonconvex_fraction(saddle + 100, A, A, t=0.1, level=10.0))


def test_eigen_ratio_and_hessian_map_fraction() -> None:
    r = theory.eigen_ratio_2d(np.array([2.0, 1.0]), np.array([-1.0, 3.0]), np.array([0.0, 0.0]))
    np.testing.assert_allclose(r, [-0.5, 1 / 3])
    assert theory.hessian_nonconvex_fraction([-1.0, -0.01, 0.5, -1.0], [10.0, 10.0, 10.0, -2.0], t=0.05) == 0.5


def test_second_difference_mean_rise_and_axis_width() -> None:
    a = np.linspace(-0.5, 1.5, 41)
    f = 3 * a**2 + (a - 1) ** 4
    assert theory.second_difference(a, f, 0.0) == pytest.approx(6 + 12 + 2 * 0.05**2, rel=1e-9)
    assert theory.second_difference(a, f, 1.0) == pytest.approx(6 + 2 * 0.05**2, rel=1e-9)
    b = np.linspace(-1, 1, 21)
    assert theory.mean_rise(b, b**2, 0.2) == pytest.approx((0.01 + 0.04) / 2)
    z = AA**2 + 4 * BB**2
    # f exceeds 0.25 at |α| = 0.5 and |β| = 0.25 (interpolated linearly between grid points on β)
    width = theory.axis_width(z, A, A, rise=0.25)
    beta_cross = 0.2 + (0.25 - 0.16) / (0.36 - 0.16) * 0.1
    assert width == pytest.approx((0.5 + 0.5 + 2 * beta_cross) / 4)


# --- config checks ----------------------------------------------------------------------------------------

def _quick_cfg() -> dict:
    import yaml

    cfg = yaml.safe_load((module_dir("li_visualization") / "config.yaml").read_text())["li_visualization"]
    return {**cfg["scales"]["quick"], "seed": 0}


@pytest.mark.parametrize(("path", "value", "key"), [
    (("vgg", "weight_decays"), [5e-4, 0], "vgg.weight_decays"),
    (("resnets", "depths"), [8, 21], "resnets.depths"),
    (("resnets", "widths"), [2, 4], "resnets.widths"),
    (("grid", "points"), 20, "grid.points"),
    (("vgg", "interpolation_points"), 40, "vgg.interpolation_points"),
])
def test_bad_config_is_one_line_naming_the_key(path, value, key) -> None:  # type: ignore[no-untyped-def]
    cfg = _quick_cfg()
    cfg[path[0]] = {**cfg[path[0]], path[1]: value}
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")) as err:
        li_module.check(cfg)
    assert "\n" not in str(err.value)
    li_module.check(_quick_cfg())


# --- planted runs: every claim can fail -----------------------------------------------------------------

def _curve(k_sb: float, k_lb: float) -> pd.DataFrame:
    a = np.linspace(-0.5, 1.5, 41)
    loss = np.where(a < 0.5, 0.5 * k_sb * a**2, 0.5 * k_lb * (a - 1) ** 2) + 0.01
    return pd.DataFrame({"alpha": a, "split": "train", "loss": loss, "accuracy": 1.0})


def _vgg_m(k=((1.0, 5.0), (5.0, 1.0)), fn=((0.1, 0.5), (0.1, 0.5)), err=((5.0, 9.0), (4.0, 8.0))):  # type: ignore[no-untyped-def]
    runs, curves, lines = [], [], []
    a = np.linspace(-1, 1, 21)
    for i, wd in enumerate((0.0, 5e-4)):
        curves.append(_curve(*k[i]).assign(weight_decay=wd))
        for j, regime in enumerate(("sb", "lb")):
            runs.append({"weight_decay": wd, "regime": regime, "test_error_pct": err[i][j]})
            for s in range(2):
                lines.append(pd.DataFrame({"alpha": a, "loss": fn[i][j] * a**2 / 0.5**2 + 0.01}).assign(
                    weight_decay=wd, regime=regime, direction_seed=s))
    return steps.vgg_measurements(pd.DataFrame(runs), pd.concat(curves), pd.concat(lines), 0.5)


def test_planted_vgg_claims() -> None:
    good = _vgg_m()
    assert judge(CLAIMS["L1"], good).verdict == "reproduced"
    assert judge(CLAIMS["L2"], good).verdict == "reproduced"
    no_flip = _vgg_m(k=((1.0, 5.0), (1.0, 5.0)))  # LB looks sharper with weight decay too
    assert judge(CLAIMS["L1"], no_flip).verdict == "partially reproduced"
    sb_sharper = _vgg_m(k=((5.0, 1.0), (1.0, 5.0)))  # the opposite pictures: fails rule and partial
    assert judge(CLAIMS["L1"], sb_sharper).verdict == "not reproduced"
    inverted = _vgg_m(fn=((0.5, 0.1), (0.5, 0.1)))  # the sharper minimum has the lower test error
    assert judge(CLAIMS["L2"], inverted).verdict == "not reproduced"
    tie = _vgg_m(err=((5.0, 5.0), (4.0, 8.0)))
    assert tie["l2_agree"] == [0, 1] and judge(CLAIMS["L2"], tie).verdict == "partially reproduced"


def _runs(nc_short, nc_noshort, minima=(1, 1, 1, 3), hess=(0.1, 0.6), ratio=(0.05, 0.4), width_nc=0.1):  # type: ignore[no-untyped-def]
    rows = []
    for i, depth in enumerate((8, 20)):
        for ns, nc, mn in ((False, nc_short[i], minima[i]), (True, nc_noshort[i], minima[2 + i])):
            row = {"net": f"r{depth}{ns}", "depth": depth, "width": 1, "shortcut": not ns, "grid_nc_fraction": nc,
                   "grid_minima": mn, "test_error_pct": 5.0, "hessian_nc_fraction": np.nan,
                   "hessian_mean_ratio": np.nan}
            if depth == 20:
                row["hessian_nc_fraction"], row["hessian_mean_ratio"] = hess[ns], ratio[ns]
            rows.append(row)
    rows.append({"net": "r20w2n", "depth": 20, "width": 2, "shortcut": False, "grid_nc_fraction": width_nc,
                 "grid_minima": 1, "test_error_pct": 4.0})
    return pd.DataFrame(rows)


def _seeds(n=(0.3, 0.32, 0.28), s=(0.0, 0.02, 0.01), widths=((0.5, 0.52, 0.48), (0.3, 0.31, 0.29))):  # type: ignore[no-untyped-def]
    rows = []
    for ns, vals, ws in ((True, n, widths[1]), (False, s, widths[0])):
        rows += [{"net": f"n{ns}", "noshort": ns, "direction_seed": i, "grid_nc_fraction": v, "axis_width": w}
                 for i, (v, w) in enumerate(zip(vals, ws, strict=True))]
    return pd.DataFrame(rows)


R = {"depths": [8, 20], "widths": [1, 2], "width_depth": 20}
TRAJ = {"ratio": [0.6, 0.2], "random": 0.01}


def _res(runs: pd.DataFrame | None = None, sd: pd.DataFrame | None = None, traj: dict | None = None) -> dict:
    return steps.resnet_measurements(_runs((0.0, 0.02), (0.05, 0.3)) if runs is None else runs,
                                     _seeds() if sd is None else sd, R, TRAJ if traj is None else traj)


def test_planted_resnet_claims_reproduce_then_fail() -> None:
    good = _res()
    for cid in ("L3", "L4", "L5", "L6", "L7"):
        assert judge(CLAIMS[cid], good).verdict == "reproduced", cid
    # L3: the noshort score does not rise with depth, and equals the short one
    flat = _res(_runs((0.0, 0.02), (0.02, 0.02), minima=(1, 1, 1, 1)))
    assert judge(CLAIMS["L3"], flat).verdict == "not reproduced"
    # L4: the noshort score rises with width (and so does the number of minima)
    wider = _runs((0.0, 0.02), (0.05, 0.3), width_nc=0.4)
    wider.loc[wider["width"] == 2, "grid_minima"] = 9
    assert judge(CLAIMS["L4"], _res(wider)).verdict == "not reproduced"
    # L5: the maps are no less convex without shortcuts
    assert judge(CLAIMS["L5"], _res(_runs((0.0, 0.02), (0.05, 0.3), hess=(0.5, 0.5), ratio=(0.3, 0.2)))).verdict \
        == "not reproduced"
    # L6: the PCA plane captures no more than random directions
    assert judge(CLAIMS["L6"], _res(traj={"ratio": [0.01, 0.005], "random": 0.01})).verdict == "not reproduced"
    # L7: the seed-to-seed spread swamps the difference, and a seed inverts it
    assert judge(CLAIMS["L7"], _res(sd=_seeds(n=(0.1, 0.0, 0.3), s=(0.2, 0.1, 0.0)))).verdict == "not reproduced"


def test_single_depth_width_or_seed_is_not_testable() -> None:
    runs = _runs((0.0, 0.02), (0.05, 0.3))
    one = runs[(runs["depth"] == 20) & (runs["width"] == 1)]
    m = steps.resnet_measurements(one, _seeds().query("direction_seed == 0"), {**R, "depths": [20], "widths": [1]},
                                  TRAJ)
    for cid in ("L3", "L4", "L7"):
        assert judge(CLAIMS[cid], m).verdict == "not testable at this scale", cid


def test_net_specs_share_the_width_one_nets() -> None:
    specs = steps.net_specs({"depths": [8, 20], "widths": [1, 2], "width_depth": 20})
    assert [s.name for s in specs] == ["resnet8", "resnet8_noshort", "resnet20", "resnet20_noshort", "resnet20_w2",
                                       "resnet20_w2_noshort"]
    assert steps.NetSpec(56, 8, True).paper_name == "wrn56_8_noshort"
    assert theory.paper_test_error_unverified()[steps.NetSpec(56, 8, True).paper_name] == 8.70


def test_vgg_runs_find_the_papers_unverified_errors() -> None:
    assert theory.paper_test_error_unverified()[steps.vgg_paper_key("sb", 0.0)] == 7.37
    assert theory.paper_test_error_unverified()[steps.vgg_paper_key("lb", 5e-4)] == 10.19


def test_vgg_trainings_with_two_weight_decays_compile_one_training_step() -> None:
    """``train_net`` passes weight decay and the schedule as arrays: the second weight decay reuses
    the first one's compiled step, and still decays (a smaller, different minimum)."""
    from types import SimpleNamespace

    from shared.models import registry
    from shared.training.compile_cache import clear_all
    from tests.test_training_compile_cache import compiles

    rng = np.random.default_rng(0)
    split = lambda n: SimpleNamespace(x=rng.normal(size=(n, 8, 8, 1)).astype(np.float32),  # noqa: E731
                                      y=rng.integers(0, 3, n).astype(np.int32))
    sets = {"train": split(64), "test": split(16)}
    tcfg = {"optimizer": "nesterov", "momentum": 0.9, "decay_epochs": [1], "eval_batch": 64}
    build = registry.builder("vgg9", in_channels=1, image_size=8, num_classes=3, cfg=[4, "M"])
    clear_all()
    runs = {}
    for wd in (0.0, 0.5):
        with compiles() as seen:
            runs[wd] = steps.train_net(build, ("vgg", "sb", f"wd{wd:g}"), sets, tcfg, batch=16, weight_decay=wd,
                                       lr=0.1, epochs=2, seed=0)
        if wd:
            assert seen["step_at"] == 0, seen
    norm = {wd: float(np.linalg.norm(np.concatenate([np.ravel(v) for v in jax.tree_util.tree_leaves(r["params"])])))
            for wd, r in runs.items()}
    assert norm[0.5] < norm[0.0]
