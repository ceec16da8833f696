"""A NaN in a Hessian product or in Lanczos is caught, and counted per seed."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest

from shared.curvature import (
    batch_data,
    hessian_operator,
    hutch_plus_plus,
    hutchinson,
    lanczos_eigs,
    power_iteration,
    slq,
)
from shared.curvature.failures import NonFiniteError, per_seed


def loss_fn(params, batch):  # type: ignore[no-untyped-def]
    """Mean squared error of a linear model; log(x) makes it NaN when an input is negative."""
    x, y = batch
    return jnp.mean((jnp.log(x) @ params["w"] - y) ** 2)


def operator(poisoned: bool):  # type: ignore[no-untyped-def]
    key = jax.random.key(0)
    x = jax.random.uniform(key, (64, 5), minval=0.5, maxval=2.0)
    if poisoned:
        x = x.at[3, 2].set(-1.0)  # log(-1) = NaN: one bad example poisons the full-batch loss
    y = jnp.ones((64,))
    params = {"w": jnp.ones((5,))}
    return hessian_operator(loss_fn, params, batch_data((x, y), 16), reduction="mean")


ESTIMATORS = {
    "lanczos": lambda op, k: lanczos_eigs(op, k, k=2, num_steps=5),
    "power": lambda op, k: power_iteration(op, k, max_iters=20),
    "slq": lambda op, k: slq(op, k, num_steps=4, num_draws=2),
    "hutchinson": lambda op, k: hutchinson(op, k, num_probes=8),
    "hutch++": lambda op, k: hutch_plus_plus(op, k, num_matvecs=9),
}


@pytest.mark.parametrize("name", list(ESTIMATORS))
def test_every_estimator_raises_on_nan(name: str) -> None:
    estimate = ESTIMATORS[name]
    estimate(operator(False), jax.random.key(1))  # finite data: fine
    with pytest.raises(NonFiniteError, match="non-finite"):
        estimate(operator(True), jax.random.key(1))


def test_failed_seeds_are_counted_not_averaged() -> None:
    runs = per_seed(lambda seed: float(power_iteration(operator(seed == 2), jax.random.key(seed),
                                                        max_iters=20).eigenvalue), [0, 1, 2, 3])
    assert runs.n_failed == 1 and list(runs.failed) == [2]
    assert sorted(runs.results) == [0, 1, 3]
