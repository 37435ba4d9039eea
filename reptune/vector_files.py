"""Where steering vectors live on disk or on the Hub: file names, the tensors' checksum, and
finding the folder that holds them.

This module knows files, not models: :mod:`reptune.vectors` reads what it finds, and
:mod:`reptune.publish.vector_hub` writes cards and uploads.

Example:
    >>> folder = locate_vectors("me/smollm2-sentiment-vectors", revision="v1")
    >>> (folder / VECTORS_FILE).is_file()
    True
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import snapshot_download

__all__ = [
    "VECTORS_FILE",
    "METADATA_FILE",
    "CARD_FILE",
    "RUN_VECTORS_SUBFOLDER",
    "tensors_digest",
    "hub_id",
    "locate_vectors",
]

VECTORS_FILE = "steering_vectors.safetensors"
METADATA_FILE = "steering_vectors.json"
CARD_FILE = "README.md"
#: Where ``reptune push`` puts the vectors of a run folder; loading looks there too.
RUN_VECTORS_SUBFOLDER = "vectors"

# "owner/name" (the Hub links base_model only to repositories); local paths stay in the text.
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95}$")


def tensors_digest(vectors: dict[int, torch.Tensor]) -> str:
    """SHA-256 of the layer indices and the tensors' raw bytes, for any dtype.

    The bytes are read through a ``uint8`` view, so dtypes numpy lacks (bfloat16, float8) hash
    as they are stored.

    Example:
        >>> len(tensors_digest({1: torch.ones(4, dtype=torch.bfloat16)}))
        64
    """
    h = hashlib.sha256()
    for layer in sorted(vectors):
        h.update(str(layer).encode())
        flat = vectors[layer].detach().cpu().contiguous().reshape(-1)
        h.update(flat.view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def hub_id(value: Any) -> str | None:
    """``value`` if it looks like a Hub repo id (``owner/name``), else None.

    Example:
        >>> hub_id("me/vectors"), hub_id("./runs/v")
        ('me/vectors', None)
    """
    if isinstance(value, str) and _HUB_ID.match(value) and ".." not in value:
        return value
    return None


def _vectors_in(root: Path, subfolder: str | None) -> Path:
    candidates = [root / subfolder] if subfolder else [root, root / RUN_VECTORS_SUBFOLDER]
    for folder in candidates:
        if (folder / VECTORS_FILE).is_file() and (folder / METADATA_FILE).is_file():
            return folder
    where = " or ".join(str(c) for c in candidates)
    raise FileNotFoundError(
        f"no steering vectors in {where}: expected {VECTORS_FILE} and {METADATA_FILE} "
        "(pass subfolder= if they are elsewhere)"
    )


def locate_vectors(
    repo_id_or_folder: str | Path,
    *,
    revision: str | None = None,
    subfolder: str | None = None,
    token: str | None = None,
    cache_dir: str | Path | None = None,
) -> Path:
    """The local folder holding the vector files of a folder or a Hub repo (at ``revision``).

    A Hub repo is fetched with ``snapshot_download`` (only the vector files and the card). The
    files are looked for at the root, then in ``vectors/`` (a run pushed by ``reptune push``),
    or in ``subfolder``.

    Example:
        >>> locate_vectors("runs/sentiment")  # a run folder: its vectors/ subfolder
        PosixPath('runs/sentiment/vectors')
    """
    local = Path(repo_id_or_folder).expanduser()
    if local.exists():
        if not local.is_dir():
            raise ValueError(f"{local} is a file; pass the folder that holds {VECTORS_FILE}")
        return _vectors_in(local, subfolder)
    if not hub_id(str(repo_id_or_folder)):
        raise FileNotFoundError(
            f"{repo_id_or_folder!r} is neither a local folder nor a Hub repo id (owner/name)"
        )
    dirs = [subfolder] if subfolder else ["", RUN_VECTORS_SUBFOLDER]
    patterns = [f"{d}/{n}" if d else n for d in dirs for n in (VECTORS_FILE, METADATA_FILE)]
    try:
        root = snapshot_download(
            str(repo_id_or_folder),
            revision=revision,
            repo_type="model",
            allow_patterns=[*patterns, CARD_FILE],
            token=token,
            cache_dir=cache_dir,
        )
    except Exception as err:  # huggingface_hub raises HTTP, offline and not-found errors
        raise FileNotFoundError(
            f"{repo_id_or_folder!r} is not a local folder, and fetching it from the Hub "
            f"(revision {revision or 'main'}) failed: {err}"
        ) from err
    return _vectors_in(Path(root), subfolder)
