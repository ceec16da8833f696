"""Fully connected classifiers (Flax NNX), and the small nets named in the papers.

Every model maps a batch of inputs (any trailing shape; flattened) to logits.
Conventions shared by every model in ``shared/models``:

- **BatchNorm / Dropout mode is explicit.** ``model.train()`` (batch statistics,
  running averages updated, dropout on) or ``model.eval()`` (running averages,
  dropout off), or ``nnx.view(model, use_running_average=..., deterministic=...)``.
  Models built fresh are in train mode (NNX's default).
- **Dropout keys are passed at call time**, ``model(x, rngs=key)`` (a key array
  or an ``nnx.Rngs``), never stored in the module: the module's non-parameter
  state is then only BatchNorm's running statistics, and a training step's
  dropout mask depends on the key the engine derives for that step.
- **BatchNorm matches PyTorch's defaults**: momentum 0.1 in PyTorch's sense
  (``momentum=0.9`` in Flax's), epsilon 1e-5.
- Weights use Flax's initialisers (LeCun normal kernels, zero biases) unless a
  model says otherwise; the papers' frameworks (Keras, PyTorch) used others.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

BN_MOMENTUM = 0.9  # PyTorch's momentum=0.1
BN_EPSILON = 1e-5

ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "relu": jax.nn.relu,
    "tanh": jnp.tanh,
    "sigmoid": jax.nn.sigmoid,
    "softplus": jax.nn.softplus,
    "elu": jax.nn.elu,
    "gelu": jax.nn.gelu,
    "leaky_relu": jax.nn.leaky_relu,
    "linear": lambda x: x,
}

Rngish = nnx.Rngs | jax.Array | None


def activation(name: str) -> Callable[[jax.Array], jax.Array]:
    """The activation function called ``name`` (see ``ACTIVATIONS``)."""
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; known: {sorted(ACTIVATIONS)}") from None


def make_batch_norm(features: int, rngs: nnx.Rngs, param_dtype: Any = jnp.float32) -> nnx.BatchNorm:
    """BatchNorm with PyTorch's defaults, its running statistics in ``param_dtype``.

    (``nnx.BatchNorm`` keeps them in float32 whatever ``param_dtype`` is; a float64
    model needs float64 statistics for float64 eval-mode losses and Hessians.)
    """
    layer = nnx.BatchNorm(features, momentum=BN_MOMENTUM, epsilon=BN_EPSILON, param_dtype=param_dtype, rngs=rngs)
    layer.mean = nnx.BatchStat(jnp.zeros((features,), param_dtype))
    layer.var = nnx.BatchStat(jnp.ones((features,), param_dtype))
    return layer


def dropout_rngs(rngs: Rngish) -> nnx.Rngs | None:
    """Turn a call-time dropout key into an ``nnx.Rngs`` whose stream advances per layer."""
    if rngs is None or isinstance(rngs, nnx.Rngs):
        return rngs
    return nnx.Rngs(dropout=rngs)


class MLP(nnx.Module):
    """A fully connected net: ``widths = (d_in, h_1, …, h_L, d_out)``.

    Each hidden layer is Linear → [BatchNorm] → activation → [Dropout]; the last
    layer is linear (logits). Inputs are flattened after the batch axis.
    """

    def __init__(
        self,
        widths: Sequence[int],
        *,
        rngs: nnx.Rngs,
        activation_name: str = "relu",
        batch_norm: bool = False,
        dropout: float = 0.0,
        use_bias: bool = True,
        kernel_init: Any = None,
        bias_init: Any = None,
        param_dtype: Any = jnp.float32,
    ) -> None:
        widths = [int(w) for w in widths]
        if len(widths) < 2:
            raise ValueError(f"widths needs at least input and output sizes, got {widths}")
        init_kw: dict[str, Any] = {}
        if kernel_init is not None:
            init_kw["kernel_init"] = kernel_init
        if bias_init is not None:
            init_kw["bias_init"] = bias_init
        self.widths = tuple(widths)
        self.act = activation(activation_name)
        self.layers = nnx.List(
            [
                nnx.Linear(a, b, use_bias=use_bias, param_dtype=param_dtype, rngs=rngs, **init_kw)
                for a, b in zip(widths[:-1], widths[1:], strict=True)
            ]
        )
        hidden = widths[1:-1]
        self.norms = nnx.List([make_batch_norm(h, rngs, param_dtype) for h in hidden] if batch_norm else [])
        self.dropouts = nnx.List([nnx.Dropout(dropout) for _ in hidden] if dropout > 0 else [])

    def __call__(self, x: jax.Array, *, rngs: Rngish = None) -> jax.Array:
        rngs = dropout_rngs(rngs)
        x = x.reshape((x.shape[0], -1))
        for i, layer in enumerate(self.layers[:-1]):
            x = layer(x)
            if len(self.norms):
                x = self.norms[i](x)
            x = self.act(x)
            if len(self.dropouts):
                x = self.dropouts[i](x, rngs=rngs)
        return self.layers[-1](x)


def keskar_f1(*, rngs: nnx.Rngs, depth: int = 5, width: int = 512, num_classes: int = 10, **kw: Any) -> MLP:
    """Keskar et al. (2017) F1, the fully connected MNIST network (Table 1).

    The paper's Appendix B.1 was not at hand (``CLAIMS.md``: "NOT FOUND"), and the
    official repository has no F1 code. Our choice, from the recollection that B.1
    reads "a 784-dimensional input layer followed by 5 batch-normalized layers of
    512 neurons each with ReLU activations" and a 10-way softmax output:
    784 → 5 × [Linear 512, BatchNorm, ReLU] → Linear 10. Unverified against the
    PDF; ``depth``/``width`` let a module pick e.g. 784-512-512-10 instead.
    """
    return MLP((784, *([width] * depth), num_classes), batch_norm=True, rngs=rngs, **kw)


def choromanska_net(n_hidden: int, *, rngs: nnx.Rngs, n_in: int = 100, num_classes: int = 10, **kw: Any) -> MLP:
    """Choromanska et al. (2015) §5: one hidden ReLU layer on 10×10 MNIST.

    n₁ ∈ {25, 50, 100, 250, 500} hidden units, 100 inputs, 10 outputs; biases
    and the initialisation scale are not given in the paper (we keep biases and
    Flax's LeCun-normal kernels).
    """
    return MLP((n_in, n_hidden, num_classes), rngs=rngs, **kw)


def sagun_fullconn(
    *,
    rngs: nnx.Rngs,
    input_dim: int = 2,
    layer_sizes: Sequence[int] = (10, 5),
    num_classes: int = 2,
    init_scale: float = 0.1,
    **kw: Any,
) -> MLP:
    """Sagun et al. (2017) ``fullconn`` model (code: ``leventsagun/hessian-for-basicDL``,
    ``hessianexps/model/fullconn.py`` and ``forward.py``).

    input_dim → layer_sizes (ReLU, with biases) → num_classes logits; the code's
    defaults are input_dim 2, layer sizes [10, 5], 2 classes, and weights *and*
    biases drawn from N(0, 0.1²) (``param_scale = 0.1``).
    """
    init = jax.nn.initializers.normal(stddev=init_scale)
    return MLP(
        (input_dim, *layer_sizes, num_classes),
        kernel_init=init,
        bias_init=init,
        rngs=rngs,
        **kw,
    )


def dinh_relu_net(
    *,
    rngs: nnx.Rngs,
    n_in: int = 784,
    n_hidden: int = 100,
    num_classes: int = 10,
    use_bias: bool = False,
    **kw: Any,
) -> MLP:
    """Dinh et al. (2017) §3: the one-hidden-layer rectified net y = φ_rect(x·θ₁)·θ₂.

    No biases by default, so that the α-scale transformation
    T_α(θ₁, θ₂) = (αθ₁, α⁻¹θ₂) is an exact observational equivalence (with
    biases, the hidden bias must be scaled by α too).
    """
    return MLP((n_in, n_hidden, num_classes), use_bias=use_bias, rngs=rngs, **kw)
