"""Flax NNX models used by the replication modules, each citing its paper."""

from shared.models.functional import PureModel, pure
from shared.models.linear import DeepLinear, LinearAutoencoder

__all__ = ["DeepLinear", "LinearAutoencoder", "PureModel", "pure"]
