"""Parameter counts against the papers/official code, and output shapes.

Counts of the big nets come from shapes only (``nnx.eval_shape``); expected
values are recomputed here from each architecture's layer list (an oracle
independent of the module code), and checked against the papers' rounded
figures where they give one (He et al. 2016, Table 6).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest
from flax import nnx

from shared.models import registry
from shared.training.network import network_from_model


def conv(k: int, c_in: int, c_out: int, bias: bool = True) -> int:
    return k * k * c_in * c_out + (c_out if bias else 0)


def dense(d_in: int, d_out: int) -> int:
    return d_in * d_out + d_out


def bn(c: int) -> int:
    return 2 * c  # scale and bias (running statistics are not parameters)


def cifar_resnet(depth: int, k: int = 1, shortcut: str = "B", classes: int = 10) -> int:
    n = (depth - 2) // 6
    widths = (16 * k, 32 * k, 64 * k)
    total = conv(3, 3, widths[0], bias=False) + bn(widths[0])
    c_in = widths[0]
    for c in widths:
        for _ in range(n):
            total += conv(3, c_in, c, False) + bn(c) + conv(3, c, c, False) + bn(c)
            if shortcut == "B" and c_in != c:
                total += conv(1, c_in, c, False) + bn(c)
            c_in = c
    return total + dense(widths[-1], classes)


KESKAR_SHALLOW = (
    conv(5, 3, 64) + bn(64) + conv(5, 64, 64) + bn(64)
    + dense(8 * 8 * 64, 384) + bn(384) + dense(384, 192) + bn(192)
)  # fmt: skip
_DEEP = [64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]
KESKAR_DEEP = (
    sum(conv(3, a, b) + bn(b) for a, b in zip([3, *_DEEP[:-1]], _DEEP, strict=True))
    + dense(512, 512) + bn(512)
)  # fmt: skip
_VGG9 = [64, 64, 128, 128, 256, 256, 256]
VGG9 = (
    sum(conv(3, a, b) + bn(b) for a, b in zip([3, *_VGG9[:-1]], _VGG9, strict=True))
    + dense(4 * 4 * 256, 256) + bn(256) + dense(256, 10)
)  # fmt: skip

EXPECTED = {
    "keskar_f1": dense(784, 512) + 4 * dense(512, 512) + 5 * bn(512) + dense(512, 10),
    "keskar_c1": KESKAR_SHALLOW + dense(192, 10),
    "keskar_c3": KESKAR_SHALLOW + dense(192, 100),
    "keskar_c2": KESKAR_DEEP + dense(512, 10),
    "keskar_c4": KESKAR_DEEP + dense(512, 100),
    "vgg9": VGG9,
    "resnet20": cifar_resnet(20),
    "resnet56": cifar_resnet(56),
    "resnet110": cifar_resnet(110),
    "resnet20_noshort": cifar_resnet(20, shortcut="none"),
    "resnet56_noshort": cifar_resnet(56, shortcut="none"),
    "wrn56_2": cifar_resnet(56, 2),
    "wrn56_4": cifar_resnet(56, 4),
    "wrn56_8": cifar_resnet(56, 8),
    "wrn56_8_noshort": cifar_resnet(56, 8, shortcut="none"),
    "sagun_fullconn": dense(2, 10) + dense(10, 5) + dense(5, 2),
    "dinh_relu": 784 * 100 + 100 * 10,
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_param_count_matches_architecture(name: str) -> None:
    assert registry.param_count(name) == EXPECTED[name]


def test_resnet_counts_match_he_et_al_table6() -> None:
    # He et al. (2016) Table 6: 0.27M, 0.85M, 1.7M (option A, which has no extra
    # parameters; option B adds two small 1×1 projections). The module counts
    # equal these formulas (test above, and option A below).
    for depth, millions in ((20, 0.27), (56, 0.85), (110, 1.7)):
        for shortcut in ("A", "B"):
            assert abs(cifar_resnet(depth, shortcut=shortcut) / 1e6 - millions) < 0.035
    assert registry.param_count("resnet", depth=20, shortcut="A") == cifar_resnet(20, shortcut="A")
    assert registry.param_count("resnet20_noshort") == cifar_resnet(20, shortcut="A")


def test_choromanska_and_mlp_counts() -> None:
    for n1 in (25, 500):
        assert registry.param_count("choromanska", n_hidden=n1) == dense(100, n1) + dense(n1, 10)
    assert registry.param_count("mlp", widths=(7, 5, 3), batch_norm=True) == (dense(7, 5) + bn(5) + dense(5, 3))


SHAPES = {
    "keskar_f1": ((2, 28, 28, 1), 10),
    "keskar_c1": ((2, 32, 32, 3), 10),
    "keskar_c2": ((2, 32, 32, 3), 10),
    "keskar_c3": ((2, 32, 32, 3), 100),
    "keskar_c4": ((2, 32, 32, 3), 100),
    "vgg9": ((2, 32, 32, 3), 10),
    "resnet20": ((2, 32, 32, 3), 10),
    "resnet56_noshort": ((2, 32, 32, 3), 10),
    "wrn56_4": ((2, 32, 32, 3), 10),
    "choromanska": ((2, 10, 10), 10),
    "sagun_fullconn": ((2, 2), 2),
}


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_output_shapes_all_modes(name: str) -> None:
    kwargs = {"n_hidden": 25} if name == "choromanska" else {}
    model = nnx.eval_shape(lambda: registry.build(name, rngs=nnx.Rngs(0), **kwargs))
    net, params, state = network_from_model(model)
    shape, classes = SHAPES[name]
    x = jax.ShapeDtypeStruct(shape, jnp.float32)
    for mode in ("train", "eval") if name != "keskar_c1" else ("train", "eval", "batch_stats"):
        out, new_state = jax.eval_shape(
            lambda p, s, x, m=mode: net.apply(p, s, x, mode=m, key=jax.random.key(0)),
            params,
            state,
            x,
        )
        assert out.shape == (shape[0], classes)
        assert jax.tree_util.tree_structure(new_state) == jax.tree_util.tree_structure(state)


def test_registry_names_and_errors() -> None:
    names = registry.names()
    for required in (
        "mlp keskar_f1 choromanska sagun_fullconn dinh_relu keskar_c1 keskar_c2 keskar_c3 "
        "keskar_c4 vgg9 resnet20 resnet56 resnet110 resnet20_noshort resnet56_noshort "
        "resnet110_noshort wrn56_2 wrn56_4 wrn56_8 wrn56_2_noshort deep_linear"
    ).split():
        assert required in names
    with pytest.raises(ValueError, match="unknown model"):
        registry.builder("resnet21")
    model = registry.builder("deep_linear", widths=(3, 2))(nnx.Rngs(0))
    assert model(jnp.ones((1, 3))).shape == (1, 2)
