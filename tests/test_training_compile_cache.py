"""Compiled training programs kept by value: ``StepDecayOptimizer`` is the old optimizer, runs that
differ only in weight decay compile their step once, and weight decay still acts."""

from __future__ import annotations

import contextlib
import re
from collections import Counter
from collections.abc import Iterator

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from shared.models import registry
from shared.training import Arrays, fit, init_key, init_network, make_optimizer, member_key, step_decay, train_key
from shared.training.compile_cache import clear_all
from shared.training.divergence import all_finite
from shared.training.optimizers import StepDecayOptimizer
from shared.training.schedules import traced_step_decay
from tests.helpers import jax_compile_messages

COMPILED = re.compile(r"Finished XLA compilation of jit\((\w+)\)")
TRAINING = ("step_at", "epoch_fn", "batches", "evaluate")  # the programs fit builds per run
MLP = registry.builder("mlp", widths=(6, 12, 3), batch_norm=True)
CONV = registry.builder("vgg9", in_channels=1, image_size=8, num_classes=3, cfg=[4, "M"])


@contextlib.contextmanager
def compiles() -> Iterator[Counter[str]]:
    """The XLA compilations inside the block, by jitted function name; filled when the block ends."""
    names: Counter[str] = Counter()
    with jax_compile_messages() as messages:
        yield names
    names.update(m.group(1) for m in map(COMPILED.search, messages) if m)


def blobs(n: int = 120, shape: tuple[int, ...] = (6,)) -> Arrays:
    """Three Gaussian classes (train 96, test 24)."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, n).astype(np.int32)
    centres = rng.normal(size=(3, int(np.prod(shape)))) * 2.0
    x = (centres[y] + rng.normal(size=(n, centres.shape[1]))).astype(np.float32).reshape((n, *shape))
    return Arrays(x[:96], y[:96], x[96:], y[96:])


def old_optimizer(wd: float, lr: float = 0.1, steps_per_epoch: int = 6) -> optax.GradientTransformation:
    """Li's optimizer as built before: the numbers are compile-time constants (wd = 0: no decay term)."""
    return make_optimizer("nesterov", step_decay(lr, steps_per_epoch, (2,), factor=0.1), momentum=0.9,
                          weight_decay=wd)


def train(build: object, data: Arrays, optimizer: object, hyper: object = None, loop: str = "auto") -> object:
    key = member_key(0, "compile_cache", seed=0)
    net, params, state = init_network(build, init_key(key))  # type: ignore[arg-type]
    return fit(net, params, state, data, optimizer=optimizer, hyper=hyper, epochs=3, batch_size=16,  # type: ignore[arg-type]
               key=train_key(key), eval_every=3, progress=False, loop=loop)  # type: ignore[arg-type]


def flat(params: object) -> np.ndarray:
    return np.concatenate([np.ravel(leaf) for leaf in jax.tree_util.tree_leaves(params)])


def test_traced_step_decay_is_optax_bit_for_bit() -> None:
    old = step_decay(0.1, 7, (2, 5, 9), factor=0.1)
    new = jax.jit(lambda c, b: traced_step_decay(jnp.asarray(0.1), b, jnp.asarray(0.1))(c))
    bounds = jnp.asarray([14, 35, 63], jnp.int32)
    for count in (0, 13, 14, 34, 35, 62, 63, 500):
        assert np.asarray(new(jnp.int32(count), bounds)) == np.asarray(jax.jit(old)(jnp.int32(count)))


@pytest.mark.parametrize("wd", [0.0, 5e-4])
def test_step_decay_optimizer_updates_equal_the_old_construction(wd: float) -> None:
    params = {"w": jnp.asarray([[0.5, -1.0], [2.0, 0.25]]), "b": jnp.asarray([0.1, -0.3])}
    opt = StepDecayOptimizer("nesterov", momentum=0.9)
    hyper = opt.hyper(0.1, 3, (2,), factor=0.1, weight_decay=wd)
    old = old_optimizer(wd, steps_per_epoch=3)
    step_new = jax.jit(lambda g, s, p, h: opt(h).update(g, s, p))
    step_old = jax.jit(old.update)
    p_new = p_old = params
    s_new, s_old = opt(hyper).init(params), old.init(params)
    for i in range(8):  # across the boundary at step 6
        g = jax.tree_util.tree_map(lambda p, i=i: jnp.sin(p * (i + 1)), p_new)
        u_new, s_new = step_new(g, s_new, p_new, hyper)
        u_old, s_old = step_old(g, s_old, p_old)
        p_new, p_old = optax.apply_updates(p_new, u_new), optax.apply_updates(p_old, u_old)
        np.testing.assert_allclose(flat(p_new), flat(p_old), rtol=1e-6, atol=1e-7)


def test_fit_with_the_factory_equals_fit_with_the_old_optimizer() -> None:
    data = blobs()
    opt = StepDecayOptimizer("nesterov", momentum=0.9)
    for wd in (0.0, 5e-4):
        new = train(MLP, data, opt, opt.hyper(0.1, 6, (2,), factor=0.1, weight_decay=wd))
        old = train(MLP, data, old_optimizer(wd))
        np.testing.assert_allclose(flat(new.params), flat(old.params), rtol=1e-5, atol=1e-6)  # type: ignore[attr-defined]


@pytest.mark.parametrize(("build", "shape", "loop"), [(MLP, (6,), "scan"), (CONV, (8, 8, 1), "steps")])
def test_a_second_weight_decay_compiles_no_training_step(build: object, shape: tuple[int, ...], loop: str) -> None:
    clear_all()
    data, opt = blobs(shape=shape), StepDecayOptimizer("nesterov", momentum=0.9)
    with compiles() as first:
        a = train(build, data, opt, opt.hyper(0.1, 6, (2,), weight_decay=0.0), loop)
    assert any(first[name] for name in TRAINING), first  # the counter sees the first run compile
    with compiles() as second:
        b = train(build, data, opt, opt.hyper(0.1, 6, (2,), weight_decay=0.5), loop)
    assert not any(second[name] for name in TRAINING), second
    # weight decay acts through the shared program: a different, smaller minimum ...
    assert not np.allclose(flat(a.params), flat(b.params))  # type: ignore[attr-defined]
    assert np.linalg.norm(flat(b.params)) < np.linalg.norm(flat(a.params))  # type: ignore[attr-defined]
    # ... the one a fresh compilation reaches
    clear_all()
    fresh = train(build, data, opt, opt.hyper(0.1, 6, (2,), weight_decay=0.5), loop)
    np.testing.assert_array_equal(flat(b.params), flat(fresh.params))  # type: ignore[attr-defined]


def test_another_network_or_momentum_is_compiled_again() -> None:
    clear_all()
    data, opt = blobs(), StepDecayOptimizer("nesterov", momentum=0.9)
    hyper = opt.hyper(0.1, 6, (2,))
    train(MLP, data, opt, hyper, "scan")
    with compiles() as other_net:
        train(registry.builder("mlp", widths=(6, 8, 3), batch_norm=True), data, opt, hyper, "scan")
    assert other_net["epoch_fn"] == 1, other_net
    with compiles() as other_momentum:
        train(MLP, data, StepDecayOptimizer("nesterov", momentum=0.5), hyper, "scan")
    assert other_momentum["epoch_fn"] == 1, other_momentum


def test_networks_hash_by_their_graphs() -> None:
    a, _, _ = init_network(MLP, jax.random.key(0))
    b, _, _ = init_network(MLP, jax.random.key(1))
    c, _, _ = init_network(registry.builder("mlp", widths=(6, 8, 3), batch_norm=True), jax.random.key(0))
    assert a == b and hash(a) == hash(b)
    assert a != c


def test_all_finite_checks_every_inexact_leaf() -> None:
    tree = {"a": jnp.ones((2, 3)), "b": jnp.ones(4, jnp.bfloat16), "n": jnp.arange(3)}
    assert bool(all_finite(tree)) and bool(all_finite({"n": jnp.arange(2)})) and bool(all_finite({}))
    for leaf, bad in (("a", jnp.nan), ("a", -jnp.inf), ("b", jnp.inf)):
        broken = dict(tree, **{leaf: tree[leaf].at[1].set(bad)})
        assert not bool(jax.jit(all_finite)(broken)), (leaf, bad)
