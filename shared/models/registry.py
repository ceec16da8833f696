"""Build a model by name: what module configs use (``model: {name: resnet56, ...}``).

    model = registry.build("resnet56_noshort", rngs=nnx.Rngs(key))
    make = registry.builder("choromanska", n_hidden=100)   # rngs -> model
    registry.param_count("resnet110")                      # no FLOPs spent

Names (kwargs are passed through to the constructor):

- ``mlp`` (``widths=…``), ``keskar_f1``, ``choromanska`` (``n_hidden=…``),
  ``sagun_fullconn``, ``dinh_relu``;
- ``keskar_c1`` … ``keskar_c4``, ``vgg9``;
- ``resnet`` (``depth=…``), ``resnet{20,56,110}``, ``resnet{20,56,110}_noshort``,
  ``wrn56_{2,4,8}``, ``wrn56_{2,4,8}_noshort``;
- ``deep_linear`` (``widths=…``), ``linear_autoencoder`` (``n_in=…, n_hidden=…``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
from flax import nnx

from shared.models.convnets import keskar_c1, keskar_c2, keskar_c3, keskar_c4, vgg9
from shared.models.linear import DeepLinear, LinearAutoencoder
from shared.models.mlp import MLP, choromanska_net, dinh_relu_net, keskar_f1, sagun_fullconn
from shared.models.resnet import resnet

Builder = Callable[..., nnx.Module]

MODELS: dict[str, Builder] = {
    "mlp": MLP,
    "keskar_f1": keskar_f1,
    "choromanska": choromanska_net,
    "sagun_fullconn": sagun_fullconn,
    "dinh_relu": dinh_relu_net,
    "keskar_c1": keskar_c1,
    "keskar_c2": keskar_c2,
    "keskar_c3": keskar_c3,
    "keskar_c4": keskar_c4,
    "vgg9": vgg9,
    "resnet": resnet,
    "deep_linear": DeepLinear,
    "linear_autoencoder": LinearAutoencoder,
}
for _depth in (20, 56, 110):
    MODELS[f"resnet{_depth}"] = functools.partial(resnet, _depth)
    MODELS[f"resnet{_depth}_noshort"] = functools.partial(resnet, _depth, noshort=True)
for _k in (2, 4, 8):
    MODELS[f"wrn56_{_k}"] = functools.partial(resnet, 56, width=_k)
    MODELS[f"wrn56_{_k}_noshort"] = functools.partial(resnet, 56, width=_k, noshort=True)


def names() -> list[str]:
    """Every registered model name, sorted."""
    return sorted(MODELS)


def build(name: str, *, rngs: nnx.Rngs, **kwargs: Any) -> nnx.Module:
    """The model called ``name``, initialised from ``rngs``."""
    try:
        make = MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; known: {names()}") from None
    return make(rngs=rngs, **kwargs)


def builder(name: str, **kwargs: Any) -> Callable[[nnx.Rngs], nnx.Module]:
    """``rngs -> model``: what ``shared.training.init_network`` / ``init_ensemble`` take."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; known: {names()}")
    return lambda rngs: build(name, rngs=rngs, **kwargs)


def param_count(name: str, **kwargs: Any) -> int:
    """Number of trainable parameters, from shapes only (``nnx.eval_shape``)."""
    model = nnx.eval_shape(lambda: build(name, rngs=nnx.Rngs(0), **kwargs))
    return sum(int(leaf.size) for leaf in jax.tree_util.tree_leaves(nnx.state(model, nnx.Param)))
