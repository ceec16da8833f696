"""shared.benchmarking.forward_flops against a hand count: a dense layer n_in -> n_out costs
2·n_in·n_out FLOPs per example (multiply and add), plus its bias and activation."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from replications.keskar_large_batch import models
from shared.benchmarking import forward_flops
from shared.training import init_network


def test_forward_flops_of_an_mlp_is_its_matmuls_plus_elementwise_work() -> None:
    net, params, state = init_network(models.builder("mlp", widths=[40, 30, 10]), jax.random.key(0))
    x = jnp.zeros((16, 40), jnp.float32)
    matmuls = 2.0 * (40 * 30 + 30 * 10)
    flops = forward_flops(net, params, state, x)
    assert matmuls <= flops <= matmuls + 4 * (30 + 10)  # biases, ReLU: a few FLOPs per unit
