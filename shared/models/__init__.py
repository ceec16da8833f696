"""Flax NNX models used by the replication modules, each citing its paper."""

from shared.models import registry
from shared.models.convnets import VGG, KeskarDeep, KeskarShallow
from shared.models.functional import PureModel, pure
from shared.models.linear import DeepLinear, LinearAutoencoder
from shared.models.mlp import MLP
from shared.models.resnet import BasicBlock, CifarResNet

__all__ = [
    "MLP",
    "VGG",
    "BasicBlock",
    "CifarResNet",
    "DeepLinear",
    "KeskarDeep",
    "KeskarShallow",
    "LinearAutoencoder",
    "PureModel",
    "pure",
    "registry",
]
