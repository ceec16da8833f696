"""The minibatch engine: learning, vmapped = looped, divergence, resume, evaluation."""

from __future__ import annotations

import functools
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from shared.models import registry
from shared.training import (
    Arrays,
    fit,
    fit_ensemble,
    init_ensemble,
    init_key,
    init_network,
    make_evaluator,
    make_optimizer,
    member_key,
    member_keys,
    random_crop_flip,
    summarize,
    train_key,
)
from shared.training.losses import correct, cross_entropy

SEEDS = [0, 1, 2]
BUILD = registry.builder("mlp", widths=(6, 12, 3), batch_norm=True, dropout=0.2)


def blobs(n: int = 120, seed: int = 0) -> Arrays:
    """Three Gaussian classes in 6 dimensions (train 96, test 24)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n).astype(np.int32)
    centres = rng.normal(size=(3, 6)) * 2.0
    x = (centres[y] + rng.normal(size=(n, 6))).astype(np.float32)
    return Arrays(x[:96], y[:96], x[96:], y[96:])


def same_tree(a: object, b: object) -> bool:
    eq = jax.tree_util.tree_map(lambda u, v: bool(np.array_equal(u, v)), a, b)
    return all(jax.tree_util.tree_leaves(eq))


def sgd(lr: jax.Array) -> object:
    return make_optimizer("nesterov", lr, weight_decay=5e-4)


def test_fit_learns_and_reports_tidy_history() -> None:
    key = member_key(0, "engine", seed=0)
    net, params, state = init_network(BUILD, init_key(key))
    result = fit(
        net, params, state, blobs(), optimizer=make_optimizer("adam", 3e-2), epochs=6,
        batch_size=16, key=train_key(key), eval_train=True, trajectory_every=2,
    )  # fmt: skip
    h = result.history
    assert list(h["epoch"]) == [1, 2, 3, 4, 5, 6] and list(h["step"]) == [6 * e for e in h.epoch]
    for col in ("train_loss", "train_acc", "test_loss", "test_acc", "train_eval_loss",
                "epoch_time", "wall_time", "failed", "eval_bn_mode"):  # fmt: skip
        assert col in h.columns
    assert h.train_loss.iloc[-1] < h.train_loss.iloc[0]
    assert h.train_eval_acc.iloc[-1] > 0.9 and not result.failed and result.n_failed == 0
    assert set(h.eval_bn_mode) == {"eval"}
    assert result.trajectory_epochs is not None and list(result.trajectory_epochs) == [0, 2, 4, 6]
    assert result.trajectory is not None and result.trajectory.shape[0] == 4


def test_vmapped_ensemble_matches_looped_runs_and_freezes_divergent_member() -> None:
    """Members with lr 0.1 and 0.05 train as their looped runs do (checked for the
    second); the lr=1e30 member blows up, is frozen and reported (with its seed),
    and stays out of summaries."""
    data = blobs()
    keys = member_keys(0, "ensemble", seeds=SEEDS)
    lrs = jnp.array([0.1, 0.05, 1e30])
    net, params, state = init_ensemble(BUILD, jax.vmap(init_key)(keys))
    ens = fit_ensemble(
        net, params, state, data, optimizer=sgd, hypers=lrs, epochs=2, batch_size=16,
        keys=jax.vmap(train_key)(keys), seeds=SEEDS,
    )  # fmt: skip
    assert list(ens.failed) == [False, False, True] and ens.failed_seeds == [2]
    assert ens.n_failed == 1 and ens.failed_step[2] >= 0 and list(ens.failed_step[:2]) == [-1, -1]
    assert np.all(np.isfinite(jax.tree_util.tree_leaves(ens.params)[0]))  # frozen, finite
    for i in (1,):
        key = member_key(0, "ensemble", seed=SEEDS[i])
        net1, p1, s1 = init_network(BUILD, init_key(key))
        one = fit(
            net1, p1, s1, Arrays(data.x_train, data.y_train), optimizer=sgd, hyper=lrs[i], epochs=2, batch_size=16,
            key=train_key(key),
        )  # fmt: skip
        member = jax.tree_util.tree_map(lambda a, i=i: a[i], ens.state)
        for a, b in zip(jax.tree_util.tree_leaves(member), jax.tree_util.tree_leaves(one.state), strict=True):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-6, atol=2e-7)
    failed_rows = ens.history[ens.history.member == 2]
    assert failed_rows.failed.all() and failed_rows.test_loss.isna().all()
    summary = summarize(ens.history)
    assert list(summary.n_failed) == [1, 1] and list(summary.n_ok) == [2, 2]
    ok = ens.history[ens.history.member < 2].groupby("epoch").test_loss.mean().to_numpy()
    np.testing.assert_allclose(summary.test_loss_mean.to_numpy(), ok)


def test_single_run_divergence_stops_the_run() -> None:
    key = member_key(0, "diverge", seed=7)
    net, params, state = init_network(BUILD, init_key(key))
    result = fit(
        net, params, state, blobs(), optimizer=make_optimizer("sgd", 1e30), epochs=5,
        batch_size=16, key=train_key(key), seed=7,
    )  # fmt: skip
    assert result.failed and result.failed_seeds == [7] and len(result.history) == 1
    assert np.isnan(result.history.test_loss.iloc[0])
    assert all(np.all(np.isfinite(leaf)) for leaf in jax.tree_util.tree_leaves(result.params))


def test_resume_from_checkpoint_is_bit_identical(tmp_path: Path) -> None:
    data = blobs()
    key = member_key(0, "resume", seed=0)
    opt = make_optimizer("adam", 1e-2, weight_decay=1e-4)

    def run(epochs: int, folder: Path) -> object:
        net, params, state = init_network(BUILD, init_key(key))  # fresh objects every time
        return fit(
            net, params, state, data, optimizer=opt, epochs=epochs, batch_size=16,
            key=train_key(key), checkpoint_dir=str(folder), checkpoint_every=1,
            trajectory_every=1, trajectory_dir=str(folder / "trajectory"),
        )  # fmt: skip

    straight = run(4, tmp_path / "straight")
    run(2, tmp_path / "killed")  # a run that stopped after epoch 2
    jax.clear_caches()
    resumed = run(4, tmp_path / "killed")
    assert same_tree(jax.device_get(straight.state), jax.device_get(resumed.state))
    cols = ["epoch", "step", "train_loss", "test_loss", "test_acc"]
    assert straight.history[cols].equals(resumed.history[cols])
    assert np.array_equal(straight.trajectory, resumed.trajectory)
    assert (tmp_path / "killed" / "4").is_dir()  # orbax step directory


def test_a_run_killed_after_its_last_checkpoint_keeps_its_trajectory(tmp_path: Path) -> None:
    """The rerun of a run killed after its last checkpoint trains nothing; its trajectory
    must still be the whole path (snapshots live beside the checkpoints by default)."""
    data = blobs()
    key = member_key(0, "resume-traj", seed=0)

    def run(folder: Path | None) -> object:
        net, params, state = init_network(BUILD, init_key(key))
        return fit(
            net, params, state, data, optimizer=make_optimizer("sgd", 0.1), epochs=3, batch_size=16,
            key=train_key(key), checkpoint_dir=None if folder is None else str(folder), trajectory_every=1,
        )  # fmt: skip

    straight = run(None)
    run(tmp_path / "ckpt")
    again = run(tmp_path / "ckpt")  # the step's rerun: starts at epoch 3
    assert straight.trajectory.shape[0] == 4
    assert np.array_equal(straight.trajectory, again.trajectory)
    # a snapshot lost on disk is an error, never a shorter trajectory
    (tmp_path / "ckpt" / "trajectory" / "epoch_000001.npy").unlink()
    with pytest.raises(RuntimeError, match=r"snapshots \[1\] are missing"):
        run(tmp_path / "ckpt")


def test_evaluator_counts_every_example_once_and_modes_differ() -> None:
    data = blobs()
    net, params, state = init_network(BUILD, jax.random.key(0))
    out, _ = net.apply(params, state, jnp.asarray(data.x_train), mode="eval")
    expected_loss = float(jnp.mean(cross_entropy(out, jnp.asarray(data.y_train))))
    expected_acc = float(jnp.mean(correct(out, jnp.asarray(data.y_train))))
    loss, acc = make_evaluator(net, mode="eval", batch_size=25)(
        params, state, data.x_train, data.y_train
    )  # 96 = 3 × 25 + 21: the padded last batch must not count
    assert float(loss) == pytest.approx(expected_loss, rel=1e-5)
    assert float(acc) == pytest.approx(expected_acc)
    loss_bs, _ = make_evaluator(net, mode="batch_stats", batch_size=32)(params, state, data.x_train, data.y_train)
    assert abs(float(loss_bs) - float(loss)) > 1e-4
    with pytest.raises(ValueError, match="divisible"):
        make_evaluator(net, mode="batch_stats", batch_size=25)(params, state, data.x_train, data.y_train)
    with pytest.raises(ValueError, match="eval"):
        make_evaluator(net, mode="train", batch_size=25)


def test_loop_modes_agree_for_a_convnet() -> None:
    """On the CPU a convnet's epoch is driven step by step (XLA:CPU runs convolution
    gradients slowly inside loops); both drivers give the same training, with the
    same on-device augmentation of every batch."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(24, 4, 4, 3)).astype(np.float32)
    data = Arrays(x, rng.integers(0, 10, 24).astype(np.int32))
    build = registry.builder("vgg9", cfg=(4, "M"), image_size=4)  # a tiny VGG: conv, BN, pool
    runs = {}
    for loop in ("auto", "scan"):
        net, params, state = init_network(build, jax.random.key(0))
        runs[loop] = fit(
            net, params, state, data, optimizer=make_optimizer("momentum", 0.01), epochs=1,
            batch_size=8, key=jax.random.key(1), loop=loop,  # type: ignore[arg-type]
            augment=functools.partial(random_crop_flip, pad=1),
        )  # fmt: skip
    assert runs["auto"].loop == "steps" and runs["scan"].loop == "scan"
    for a, b in zip(
        jax.tree_util.tree_leaves(runs["auto"].state),
        jax.tree_util.tree_leaves(runs["scan"].state),
        strict=True,
    ):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
