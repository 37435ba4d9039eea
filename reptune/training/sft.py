"""Representation tuning inside trl's ``SFTTrainer`` (its datasets, packing-free collator, metrics).

Kept apart from :mod:`reptune.training.trainer` so that importing reptune does not import the
SFT machinery.

Example:
    >>> from reptune.training.sft import RepTuneSFTConfig, RepTuneSFTTrainer
    >>> args = RepTuneSFTConfig(output_dir="runs/sft", rep_layers=[3], rep_positions="-1")
    >>> RepTuneSFTTrainer(model=model, args=args, vectors=vectors, train_dataset=rows,
    ...                   processing_class=tokenizer).train()
"""

from __future__ import annotations

from dataclasses import dataclass

from trl import SFTConfig, SFTTrainer

from .config import RepTuneConfig
from .trainer import RepTuneLossMixin

__all__ = ["RepTuneSFTConfig", "RepTuneSFTTrainer"]


@dataclass
class RepTuneSFTConfig(RepTuneConfig, SFTConfig):
    """``SFTConfig`` plus the :class:`RepTuneConfig` fields.

    ``max_length`` is RepTuneConfig's (default None: no truncation). Positions are found from
    the labels SFTTrainer builds: the completion starts at the first labelled token, so
    ``completion_only_loss`` must stay on for prompt-relative positions.

    Example:
        >>> args = RepTuneSFTConfig(output_dir="runs/sft", rep_layers=[3], bf16=False)
    """


class RepTuneSFTTrainer(RepTuneLossMixin, SFTTrainer):
    """``SFTTrainer`` with the representation-tuning loss added to its token loss.

    Padding-free and packed batches are refused (positions need a 2-D attention mask).

    Example:
        >>> trainer = RepTuneSFTTrainer(model=model, args=RepTuneSFTConfig(...), vectors=vectors,
        ...                             train_dataset=rows, processing_class=tokenizer)
    """
