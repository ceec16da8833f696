"""Optimizers, schedules, augmentation, keys and the progress bar."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from shared.training import (
    cosine,
    init_key,
    make_optimizer,
    member_key,
    member_keys,
    random_crop_flip,
    step_decay,
    train_key,
)
from shared.training.progress import progress_enabled


def test_nesterov_with_weight_decay_matches_pytorch_update() -> None:
    # torch.optim.SGD(lr, momentum=μ, nesterov=True, weight_decay=wd):
    # g ← g + wd·θ; b ← μb + g; θ ← θ − lr(g + μb)
    lr, mu, wd = 0.1, 0.9, 5e-4
    tx = make_optimizer("nesterov", lr, momentum=mu, weight_decay=wd)
    theta = jnp.array([1.0, -2.0])
    state = tx.init(theta)
    b = jnp.zeros(2)
    ref = theta
    for g in (jnp.array([0.3, 0.1]), jnp.array([-0.2, 0.5])):
        upd, state = tx.update(g, state, theta)
        theta = optax.apply_updates(theta, upd)
        gg = g + wd * ref
        b = mu * b + gg
        ref = ref - lr * (gg + mu * b)
    np.testing.assert_allclose(np.asarray(theta), np.asarray(ref), rtol=1e-6)


def test_optimizer_names() -> None:
    params = {"w": jnp.ones(3)}
    for name in ("sgd", "momentum", "nesterov", "adam", "adamw"):
        tx = make_optimizer(name, 1e-2, weight_decay=1e-4)
        upd, _ = tx.update({"w": jnp.ones(3)}, tx.init(params), params)
        assert np.all(np.asarray(upd["w"]) < 0)
    with pytest.raises(ValueError, match="unknown optimizer"):
        make_optimizer("lbfgs", 1.0)


def test_li_step_schedule_and_cosine() -> None:
    sched = step_decay(0.1, steps_per_epoch=391)  # Li: ×0.1 at epochs 150, 225, 275
    for epoch, lr in ((0, 0.1), (149, 0.1), (150, 0.01), (224, 0.01), (225, 1e-3), (275, 1e-4)):
        assert float(sched(epoch * 391)) == pytest.approx(lr)
    assert float(sched(150 * 391 - 1)) == pytest.approx(0.1)
    cos = cosine(0.1, 1000)
    assert float(cos(0)) == pytest.approx(0.1) and float(cos(1000)) == pytest.approx(0.0)
    assert float(cos(500)) == pytest.approx(0.05)


def test_crop_flip_is_key_driven_and_shifts_windows() -> None:
    images = jax.random.uniform(jax.random.key(0), (16, 8, 8, 3)) + 1.0  # no zeros inside
    a = random_crop_flip(jax.random.key(1), images)
    b = random_crop_flip(jax.random.key(1), images)
    c = random_crop_flip(jax.random.key(2), images)
    assert a.shape == images.shape
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert not np.array_equal(np.asarray(a), np.asarray(c))
    padded = np.pad(np.asarray(images), ((0, 0), (4, 4), (4, 4), (0, 0)))
    for i in range(16):
        windows = [
            w
            for dy in range(9)
            for dx in range(9)
            for w in (
                padded[i, dy : dy + 8, dx : dx + 8],
                padded[i, dy : dy + 8, dx : dx + 8][:, ::-1],
            )
        ]
        assert any(np.array_equal(np.asarray(a[i]), w) for w in windows)


def test_keys_are_named_and_distinct() -> None:
    k = member_key(3, "module", "run", seed=5)
    stacked = member_keys(3, "module", "run", seeds=[4, 5])
    assert np.array_equal(jax.random.key_data(stacked[1]), jax.random.key_data(k))
    assert not np.array_equal(jax.random.key_data(init_key(k)), jax.random.key_data(train_key(k)))


def test_progress_bar_quiet_in_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    assert progress_enabled() is False
    assert progress_enabled(True) is True
    monkeypatch.delenv("CI")
    assert progress_enabled() is False  # pytest's stderr is not a terminal
