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
import json
import re
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import snapshot_download
from safetensors.torch import load_file

__all__ = [
    "VECTORS_FILE",
    "METADATA_FILE",
    "CARD_FILE",
    "RUN_VECTORS_SUBFOLDER",
    "tensors_digest",
    "hub_id",
    "locate_vectors",
    "read_vector_files",
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


def read_vector_files(directory: Path) -> tuple[dict[int, torch.Tensor], dict[str, Any]]:
    """The tensors and metadata of a folder :meth:`SteeringVectors.save` wrote, checked.

    Missing files, bad JSON, a checksum that does not match the tensors and malformed
    per-layer fields raise a ``ValueError`` (or ``FileNotFoundError``) that names the file.

    Example:
        >>> vectors, meta = read_vector_files(Path("runs/honesty/vectors"))
    """
    tensor_path, meta_path = directory / VECTORS_FILE, directory / METADATA_FILE
    for path in (tensor_path, meta_path):
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} is missing: {directory} is not a saved SteeringVectors folder "
                f"(expected {VECTORS_FILE} and {METADATA_FILE})"
            )
    try:
        meta = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{meta_path} is not valid JSON ({err}); re-save the vectors") from err
    if not isinstance(meta, dict):
        raise ValueError(
            f"{meta_path} holds a JSON {type(meta).__name__}, not the object that "
            "SteeringVectors.save writes; re-save the vectors"
        )
    try:
        raw = load_file(str(tensor_path), device="cpu")
    except Exception as err:  # safetensors raises its own error types
        raise ValueError(
            f"{tensor_path} is corrupt or not a safetensors file ({err}); re-save the vectors"
        ) from err
    vectors = {}
    for key, value in raw.items():
        prefix, _, index = key.partition(".")
        if prefix != "layer" or not index.isdigit():
            raise ValueError(f"unexpected tensor {key!r} in {tensor_path}: expected layer.<index>")
        vectors[int(index)] = value
    if not vectors:
        raise ValueError(f"{tensor_path} holds no vectors; re-save them")
    expected = meta.get("tensors_sha256")
    if expected and expected != tensors_digest(vectors):
        raise ValueError(
            f"{tensor_path} does not match the checksum in {meta_path}: the files come from "
            "different saves or were modified; re-save the vectors"
        )
    if "layers" in meta and meta["layers"] != sorted(vectors):
        raise ValueError(
            f"{meta_path} lists layers {meta['layers']} but {tensor_path} holds "
            f"{sorted(vectors)}: the files come from different saves; re-save the vectors"
        )
    for key in ("format_version", "layers", "tensors_sha256"):
        meta.pop(key, None)
    for key in ("diagnostics", "residual_norms"):  # JSON turned the layer keys into strings
        value = meta.get(key)
        if value is None:
            continue
        if not isinstance(value, dict) or not all(str(k).isdigit() for k in value):
            raise ValueError(
                f"{meta_path}: {key!r} must map layer indices to values, got {value!r:.80}; "
                "re-save the vectors"
            )
        meta[key] = {int(k): v for k, v in value.items()}
    norms = meta.get("residual_norms") or {}
    bad = {k: v for k, v in norms.items() if not (isinstance(v, (int, float)) and v > 0)}
    if bad:
        raise ValueError(
            f"{meta_path}: residual_norms must be positive numbers, got {bad}; re-save the "
            "vectors or record the norms again with with_residual_norms"
        )
    return vectors, meta
