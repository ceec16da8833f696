"""Starting points for a critical-point search spread over the loss range: snapshots of
full-batch Adam runs (Pennington & Bahri 2017 and Dauphin et al. 2014 seed their searches
along optimization paths, so that starts lie at every energy, not only near the initial one)."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax


def adam_snapshots(loss: Any, x0: Any, checkpoints: list[int], lr: float) -> np.ndarray:
    """Full-batch Adam (optax) from every row of ``x0`` [rows, P]; the parameters at each step
    in ``checkpoints`` (increasing), as rows [rows·len(checkpoints), P], run by run."""
    opt = optax.adam(lr)
    gaps = np.diff([0, *checkpoints])

    def run(x: jax.Array) -> jax.Array:
        state = opt.init(x)
        out = []
        for gap in gaps:  # a handful of checkpoints: unrolled at trace time
            def body(carry: Any, _: Any) -> tuple[Any, None]:
                x, state = carry
                update, state = opt.update(jax.grad(loss)(x), state)
                return (optax.apply_updates(x, update), state), None

            (x, state), _ = jax.lax.scan(body, (x, state), None, length=int(gap))
            out.append(x)
        return jnp.stack(out)

    snaps = np.asarray(jax.jit(jax.vmap(run))(jnp.asarray(x0)))
    return snaps.reshape(-1, snaps.shape[-1])
