"""Horizon-weighted DMD fine-tuning (DESIGN.md §2.6): `adastate train`."""

from .config import TrainConfig, TrainConfigError, derive_seed
from .data import PromptData, load_embeddings, read_prompt_file, save_embeddings
from .dmd import dmd_gradient, dmd_loss, horizon_weights
from .rollout import Rollout, rollout, sample_noise_fn
from .trainer import NonFiniteLossError, Trainer, World, make_trainable

__all__ = [
    "NonFiniteLossError",
    "PromptData",
    "Rollout",
    "TrainConfig",
    "TrainConfigError",
    "Trainer",
    "World",
    "derive_seed",
    "dmd_gradient",
    "dmd_loss",
    "horizon_weights",
    "load_embeddings",
    "make_trainable",
    "read_prompt_file",
    "rollout",
    "sample_noise_fn",
    "save_embeddings",
]
