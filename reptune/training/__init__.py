"""Representation tuning: fine-tune with a token loss plus a cosine loss on chosen activations.

Example:
    >>> from reptune.training import RepTuneConfig, RepTuneTrainer
    >>> args = RepTuneConfig(output_dir="runs/honest", rep_layers=[11, 12, 13], rep_positions="-7")
    >>> RepTuneTrainer(model, args, vectors=vectors, train_dataset=rows,
    ...                processing_class=tokenizer).train()
"""

from .collator import RepTuneCollator, parse_positions, position_mask
from .config import RepTuneConfig
from .learned_vectors import VectorLearner, learn_vectors
from .losses import (
    TARGETS,
    cosine_loss,
    cosine_to_vector,
    relative_l2_loss,
    representation_loss,
    reps_preference_loss,
    retain_loss,
    steer_loss,
)
from .precision import check_precision
from .prompt_target import PromptTargetCollator, instructed_chat, instructed_row
from .trainer import (
    REPTUNE_CONFIG_NAME,
    REPTUNE_VECTORS_DIR,
    RepTuneLossMixin,
    RepTuneTrainer,
    freeze_except_layers,
)

__all__ = [
    "REPTUNE_CONFIG_NAME",
    "REPTUNE_VECTORS_DIR",
    "TARGETS",
    "PromptTargetCollator",
    "RepTuneCollator",
    "RepTuneConfig",
    "RepTuneLossMixin",
    "RepTuneTrainer",
    "VectorLearner",
    "check_precision",
    "cosine_loss",
    "cosine_to_vector",
    "freeze_except_layers",
    "instructed_chat",
    "instructed_row",
    "learn_vectors",
    "parse_positions",
    "position_mask",
    "relative_l2_loss",
    "representation_loss",
    "reps_preference_loss",
    "retain_loss",
    "steer_loss",
]
