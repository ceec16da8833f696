"""Training engine: optax optimizers and schedules, a jit-compiled epoch over
on-device data, vmapped ensembles, full-batch GD ensembles, orbax checkpoints,
trajectory snapshots and tidy metrics. See ``engine`` and ``fullbatch``."""

from shared.training.augment import random_crop_flip
from shared.training.checkpoint import Checkpointer
from shared.training.engine import Arrays, FitResult, fit, fit_ensemble
from shared.training.evaluate import make_ensemble_evaluator, make_evaluator
from shared.training.fullbatch import EnsembleRun, train_ensemble
from shared.training.keys import init_key, member_key, member_keys, train_key
from shared.training.losses import correct, cross_entropy, squared_error
from shared.training.metrics import summarize
from shared.training.network import Network, init_ensemble, init_network, network_from_model
from shared.training.optimizers import StepDecayOptimizer, make_optimizer
from shared.training.schedules import constant, cosine, step_decay
from shared.training.step import (
    EpochStats,
    TrainState,
    init_train_state,
    make_epoch_fn,
    make_train_step,
)

__all__ = [
    "Arrays",
    "Checkpointer",
    "EnsembleRun",
    "EpochStats",
    "FitResult",
    "Network",
    "StepDecayOptimizer",
    "TrainState",
    "constant",
    "correct",
    "cosine",
    "cross_entropy",
    "fit",
    "fit_ensemble",
    "init_ensemble",
    "init_key",
    "init_network",
    "init_train_state",
    "make_ensemble_evaluator",
    "make_epoch_fn",
    "make_evaluator",
    "make_optimizer",
    "make_train_step",
    "member_key",
    "member_keys",
    "network_from_model",
    "random_crop_flip",
    "squared_error",
    "step_decay",
    "summarize",
    "train_ensemble",
    "train_key",
]
