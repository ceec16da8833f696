"""C7, the redundancy check (Choromanska et al. 2015, §5 [S]): restricted to three values per
layer, the weights of a trained network lose little test accuracy when simulated annealing
chooses them.

For each layer l the weights take values in {−α_l, 0, α_l} with α_l ∈ (0, 1] (three values in
[−1, 1]); the biases stay real (the check is about the weights). The start is the trained
network's ternarization (Li, Zhang & Liu 2016, "Ternary weight networks": |w| below 0.7·mean|w|
→ 0, else sign(w), α_l the mean |w| over the kept entries, capped at 1). Simulated annealing
then minimises the training cross-entropy over the ternary codes: each move sets one random
entry of one layer to a random other code, accepted by the Metropolis rule at a temperature
falling geometrically from ``t_start`` to ``t_end``; the best state visited is kept. All
networks anneal at once (vmap); the loop is compiled (``lax.fori_loop``: an MLP, no convolutions).
The paper's annealing schedule is not given ([S], CLAIMS.md): these are stated choices.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

THRESHOLD = 0.7  # |w| < THRESHOLD · mean|w| → 0 in the starting ternarization
LAYERS = ("w1", "w2")


def ternarize(w: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(codes in {−1, 0, 1} as int8, α ∈ (0, 1]) with α·codes the ternary-weight-network
    approximation of w."""
    cut = THRESHOLD * jnp.mean(jnp.abs(w))
    codes = jnp.where(jnp.abs(w) < cut, 0, jnp.sign(w)).astype(jnp.int8)
    kept = jnp.maximum(jnp.sum(codes != 0), 1)
    alpha = jnp.minimum(jnp.sum(jnp.abs(w) * (codes != 0)) / kept, 1.0)
    return codes, alpha


def _logits(params: dict[str, jax.Array], x: jax.Array) -> jax.Array:
    return jax.nn.relu(x @ params["w1"] + params["b1"]) @ params["w2"] + params["b2"]


def _ternary_params(codes: dict[str, jax.Array], alphas: dict[str, jax.Array],
                    params: dict[str, jax.Array]) -> dict[str, jax.Array]:
    return {**params, **{k: alphas[k] * codes[k].astype(params[k].dtype) for k in LAYERS}}


def _loss(params: dict[str, jax.Array], x: jax.Array, y: jax.Array) -> jax.Array:
    return optax.softmax_cross_entropy_with_integer_labels(_logits(params, x), y).mean()


@functools.partial(jax.jit, static_argnames=("iterations",))
def _anneal_one(params: dict[str, jax.Array], x: jax.Array, y: jax.Array, key: jax.Array, iterations: int,
                t_start: float, t_end: float) -> tuple[dict[str, jax.Array], jax.Array, jax.Array]:
    """Simulated annealing of one network's ternary codes; returns (best codes, best loss, the
    fraction of accepted moves)."""
    start = {k: ternarize(params[k]) for k in LAYERS}
    codes0 = {k: start[k][0] for k in LAYERS}
    alphas = {k: start[k][1] for k in LAYERS}
    sizes = jnp.array([params[k].size for k in LAYERS])
    loss0 = _loss(_ternary_params(codes0, alphas, params), x, y)
    decay = (t_end / t_start) ** (1.0 / max(iterations - 1, 1))

    def step(i: int, state: tuple) -> tuple:
        codes, loss, best_codes, best_loss, accepted, key = state
        key, k_layer, k_entry, k_shift, k_accept = jax.random.split(key, 5)
        layer = jax.random.choice(k_layer, len(LAYERS), p=sizes / sizes.sum())
        proposal = {}
        for index, name in enumerate(LAYERS):
            flat = codes[name].reshape(-1)
            entry = jax.random.randint(k_entry, (), 0, flat.size)
            # one of the two other codes: (c + 1 + {0, 1}) mod 3, mapped back to {−1, 0, 1}
            new = ((flat[entry] + 1 + 1 + jax.random.randint(k_shift, (), 0, 2)) % 3 - 1).astype(jnp.int8)
            changed = flat.at[entry].set(new).reshape(codes[name].shape)
            proposal[name] = jnp.where(layer == index, changed, codes[name])
        new_loss = _loss(_ternary_params(proposal, alphas, params), x, y)
        temperature = t_start * decay**i
        accept = jax.random.uniform(k_accept) < jnp.exp(-(new_loss - loss) / temperature)
        codes = {k: jnp.where(accept, proposal[k], codes[k]) for k in LAYERS}
        loss = jnp.where(accept, new_loss, loss)
        better = loss < best_loss
        best_codes = {k: jnp.where(better, codes[k], best_codes[k]) for k in LAYERS}
        return codes, loss, best_codes, jnp.minimum(loss, best_loss), accepted + accept, key

    init = (codes0, loss0, codes0, loss0, jnp.zeros((), jnp.int32), key)
    _, _, best_codes, best_loss, accepted, _ = jax.lax.fori_loop(0, iterations, step, init)
    return _ternary_params(best_codes, alphas, params), best_loss, accepted / max(iterations, 1)


def anneal(params: dict[str, jax.Array], x: jax.Array, y: jax.Array, keys: jax.Array, iterations: int,
           t_start: float, t_end: float) -> tuple[dict[str, jax.Array], np.ndarray]:
    """Every network of ``params`` (leading axis) annealed with its own key: (ternary params,
    accepted fraction per network)."""
    run = jax.vmap(lambda p, k: _anneal_one(p, x, y, k, iterations, t_start, t_end))
    ternary, _, accepted = run(params, keys)
    return ternary, np.asarray(accepted, np.float64)


def starting_point(params: dict[str, jax.Array]) -> dict[str, jax.Array]:
    """The ternarization the annealing starts from (no annealing), for every network."""
    def one(p: dict[str, jax.Array]) -> dict[str, jax.Array]:
        start = {k: ternarize(p[k]) for k in LAYERS}
        return _ternary_params({k: start[k][0] for k in LAYERS}, {k: start[k][1] for k in LAYERS}, p)

    return jax.vmap(one)(params)


def distinct_weight_values(params: dict[str, jax.Array]) -> int:
    """The largest number of distinct values in one layer of one network (3 by construction)."""
    return max(int(np.unique(np.asarray(params[k][i])).size)
               for k in LAYERS for i in range(params[k].shape[0]))


def accuracy(params: dict[str, jax.Array], x: jax.Array, y: jax.Array) -> np.ndarray:
    """Test accuracy of every network (leading axis)."""
    logits = jax.vmap(lambda p: _logits(p, x))(params)
    return np.asarray(jnp.mean(jnp.argmax(logits, -1) == y, axis=-1), np.float64)


def redundancy_table(trained: dict[str, jax.Array], train: Any, test: Any, key: jax.Array,
                     spec: dict[str, Any], n_hidden: int) -> dict[str, Any]:
    """Per network: test accuracy trained, of the starting ternarization and after annealing,
    the accuracy lost, the accepted fraction and the largest number of distinct weight values
    per layer."""
    count = trained["w1"].shape[0]
    keys = jax.random.split(key, count)
    annealed, accepted = anneal(trained, train.x, train.y, keys, spec["iterations"], spec["t_start"], spec["t_end"])
    start = starting_point(trained)
    acc_trained = accuracy(trained, test.x, test.y)
    acc_start = accuracy(start, test.x, test.y)
    acc_annealed = accuracy(annealed, test.x, test.y)
    return dict(n_hidden=n_hidden, net=np.arange(count), test_accuracy_trained=acc_trained,
                test_accuracy_ternarized=acc_start, test_accuracy_annealed=acc_annealed,
                accuracy_lost=acc_trained - acc_annealed, accepted_fraction=accepted,
                max_distinct_values_per_layer=distinct_weight_values(annealed))
