"""Hutch++ on a small convnet in a process whose address space is capped (resource.RLIMIT_AS).

Used by tests/test_curvature_memory.py. argv: cap_gib num_matvecs batch_size|auto images;
prints the footprint of one matvec, the estimate and the chunk used."""
import resource
import sys

cap = int(float(sys.argv[1]) * 2**30)
resource.setrlimit(resource.RLIMIT_AS, (cap, cap))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from flax import nnx  # noqa: E402

from shared.curvature.chunking import auto_chunk, matvec_footprint_bytes  # noqa: E402
from shared.curvature.hvp import batch_data, hessian_operator  # noqa: E402
from shared.curvature.trace import hutch_plus_plus  # noqa: E402
from shared.models.functional import pure  # noqa: E402


class ConvNet(nnx.Module):
    def __init__(self, rngs: nnx.Rngs) -> None:
        self.c1 = nnx.Conv(3, 32, (3, 3), rngs=rngs)
        self.c2 = nnx.Conv(32, 32, (3, 3), rngs=rngs)
        self.out = nnx.Linear(32 * 16 * 16, 10, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = jax.nn.relu(self.c2(jax.nn.relu(self.c1(x))))
        return self.out(x.reshape(x.shape[0], -1))


model, params = pure(ConvNet(nnx.Rngs(0)))
key = jax.random.key(0)
n_images = int(sys.argv[4]) if len(sys.argv) > 4 else 256
x = jax.random.normal(key, (n_images, 16, 16, 3))
y = jax.random.randint(key, (n_images,), 0, 10)


def loss(p, batch):
    xb, yb = batch
    logits = model(p, xb)
    return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), yb[:, None], axis=1))


op = hessian_operator(loss, params, batch_data((x, y)), reduction="mean")
num = int(sys.argv[2])
batch = None if sys.argv[3] == "auto" else int(sys.argv[3])
print("footprint MB", matvec_footprint_bytes(op) / 2**20, flush=True)
chunk = auto_chunk(op, num // 3) if batch is None else batch
res = hutch_plus_plus(op, jax.random.key(1), num_matvecs=num, batch_size=batch)
print(f"estimate {float(res.estimate):.6g} chunk {chunk}")
