"""What reptune adds to a saved model or checkpoint: its settings and the steering vectors.

Every folder the trainer saves (checkpoints and the final output) carries
``reptune_config.json`` (the reptune settings, resolved layers and version) and
``reptune_vectors/`` (the vectors it was trained with), so a run can be resumed, evaluated or
published from the folder alone.

Example:
    >>> settings = read_settings("runs/honest")
    >>> vectors = SteeringVectors.load(Path("runs/honest") / REPTUNE_VECTORS_DIR)
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from ..io import read_json, write_json
from ..vectors import SteeringVectors

__all__ = [
    "REPTUNE_CONFIG_NAME",
    "REPTUNE_VECTORS_DIR",
    "as_vectors",
    "write_rep_files",
    "read_settings",
    "check_resume",
]

logger = logging.getLogger(__name__)

#: Files written into every checkpoint and into the final output folder.
REPTUNE_CONFIG_NAME = "reptune_config.json"
REPTUNE_VECTORS_DIR = "reptune_vectors"

# Settings whose change on resume is worth a warning (the rest are bookkeeping).
_RESUME_KEYS = (
    "rep_target",
    "steer_coefficient",
    "target_instruction",
    "target_instruction_mode",
    "target_examples",
    "coefficient_unit",
    "rep_weight",
    "lm_weight",
    "retain_weight",
    "resolved_rep_layers",
    "rep_positions",
)


def as_vectors(vectors) -> SteeringVectors | None:
    """``vectors`` as :class:`SteeringVectors`: an object, a ``{layer: tensor}`` dict or a folder.

    Example:
        >>> as_vectors("runs/honesty/vectors").layers
    """
    if vectors is None or isinstance(vectors, SteeringVectors):
        return vectors
    if isinstance(vectors, (str, Path)):
        return SteeringVectors.load(vectors)
    if isinstance(vectors, dict):
        return SteeringVectors({int(k): torch.as_tensor(v) for k, v in vectors.items()})
    raise TypeError(
        f"vectors must be a SteeringVectors, a {{layer: tensor}} dict or a folder path, "
        f"got {type(vectors).__name__}"
    )


def write_rep_files(folder: Path, settings: dict[str, Any], vectors: SteeringVectors | None):
    """Write the settings and the vectors into ``folder`` (part of a folder being saved)."""
    if vectors is not None:
        vectors.save(folder / REPTUNE_VECTORS_DIR)
    write_json(folder / REPTUNE_CONFIG_NAME, settings, sort_keys=True)


def read_settings(folder: str | Path) -> dict[str, Any]:
    """The reptune settings saved in ``folder`` (empty when it has none).

    Example:
        >>> read_settings("runs/honest")["rep_target"]
        'toward'
    """
    path = Path(folder) / REPTUNE_CONFIG_NAME
    if not path.is_file():
        return {}
    settings = read_json(path, "reptune settings")
    if not isinstance(settings, dict):
        raise ValueError(f"{path} must hold a JSON object of reptune settings")
    return settings


def check_resume(
    checkpoint: Path, vectors: SteeringVectors | None, settings: dict[str, Any]
) -> None:
    """Refuse to resume with other vectors than the checkpoint was trained with; warn when a
    setting that changes the loss differs."""
    saved_dir = checkpoint / REPTUNE_VECTORS_DIR
    if vectors is not None and saved_dir.is_dir():
        saved = SteeringVectors.load(saved_dir)
        same = saved.layers == vectors.layers and all(
            torch.equal(saved[k].float(), vectors[k].detach().cpu().float()) for k in saved.layers
        )
        if not same:
            raise ValueError(
                f"{checkpoint} was trained with other steering vectors than the ones given: "
                f"resume with the vectors in {saved_dir}"
            )
    saved_cfg = read_settings(checkpoint)
    changed = [k for k in _RESUME_KEYS if k in saved_cfg and saved_cfg[k] != settings.get(k)]
    if changed:
        logger.warning("resuming %s with changed reptune settings: %s", checkpoint, changed)
