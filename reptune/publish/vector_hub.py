"""Steering vectors as a Hub artefact: a vector card, upload, and loading by repo id or folder.

A vectors repository holds what :meth:`SteeringVectors.save` writes
(``steering_vectors.safetensors`` + ``steering_vectors.json``), a ``README.md`` vector card and,
optionally, llama.cpp control vectors (``*.gguf``). The card records the model the vectors were
made for (name, revision, architecture), the layers, positions, method, coefficient unit and
norms, the per-layer diagnostics, the data fingerprint and how to steer with them in reptune and
in llama.cpp. Loading with ``model=`` refuses vectors made for another model
(:meth:`SteeringVectors.check_compatible`, the one check every loading path applies).

This module depends only on :mod:`reptune.vectors`, :mod:`reptune.vector_files` and
:mod:`reptune.io`, and nothing below it imports it back, so any code that has vectors can
publish them. The token is never handled here: ``token=None`` lets
``huggingface_hub`` use ``HF_TOKEN`` or the saved login.

Example:
    >>> push_vectors_to_hub(vecs, "me/smollm2-sentiment-vectors")
    >>> vecs = SteeringVectors.from_pretrained("me/smollm2-sentiment-vectors", model=model)
"""

from __future__ import annotations

import glob
import logging
import tempfile
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2
from huggingface_hub import HfApi, ModelCard, ModelCardData

from ..io import atomic_write
from ..vector_files import CARD_FILE, METADATA_FILE, VECTORS_FILE, hub_id
from ..vectors import DEFAULT_COEFFICIENT_UNIT, SteeringVectors, describe_unit
from ..version import __version__

__all__ = [
    "VECTOR_CARD_TAGS",
    "CARD_FILE",
    "build_vector_card",
    "write_vector_card",
    "vector_folder_files",
    "push_vectors_folder",
    "push_vectors_to_hub",
    "load_vectors",
    "check_vectors_fit",
]

logger = logging.getLogger(__name__)

#: Tags every vector card carries.
VECTOR_CARD_TAGS = ("reptune", "steering-vectors", "control-vector")
TEMPLATE_NAME = "vector_card.md.j2"


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _rows(vectors: SteeringVectors) -> list[dict[str, str]]:
    diagnostics = vectors.metadata.get("diagnostics") or {}
    norms = vectors.residual_norms
    rows = []
    for layer in vectors.layers:
        diag = diagnostics.get(layer) or diagnostics.get(str(layer)) or {}
        rows.append(
            {
                "layer": str(layer),
                "norm": _fmt(float(vectors[layer].float().norm())),
                "residual_norm": _fmt(norms.get(layer)),
                **{
                    key: _fmt(diag.get(key))
                    for key in ("accuracy", "explained_variance", "projection_gap", "pairs_used")
                },
            }
        )
    return rows


def _example_layer(vectors: SteeringVectors) -> int:
    # The best-separating layer that llama.cpp can steer (it never steers layer 0).
    diagnostics = vectors.metadata.get("diagnostics") or {}
    usable = [layer for layer in vectors.layers if layer > 0] or vectors.layers
    return max(usable, key=lambda k: (diagnostics.get(k) or {}).get("accuracy", 0.0))


def build_vector_card(
    vectors: SteeringVectors, repo_id: str | None = None, gguf_files=()
) -> ModelCard:
    """The vector card (``README.md``) for ``vectors``; nothing is written.

    Example:
        >>> card = build_vector_card(vecs, repo_id="me/smollm2-sentiment-vectors")
        >>> card.data.tags
        ['reptune', 'steering-vectors', 'control-vector']
    """
    meta = vectors.metadata
    name = str(meta.get("model_name") or "unknown")
    unit = DEFAULT_COEFFICIENT_UNIT if vectors.residual_norms else "raw"
    data = ModelCardData(
        base_model=hub_id(name),
        library_name="reptune",
        tags=list(VECTOR_CARD_TAGS),
        # Extra fields: machine-readable in the card's YAML block.
        base_model_revision=meta.get("model_revision"),
        steering_layers=vectors.layers,
        coefficient_unit=unit,
    )
    context = {
        "card_data": data.to_yaml(),
        "title": repo_id.split("/")[-1] if repo_id else f"Steering vectors for {name}",
        "repo_id": repo_id,
        "model": {
            "name": name,
            "revision": meta.get("model_revision"),
            "architecture": meta.get("architecture"),
            "model_type": meta.get("model_type"),
            "num_layers": meta.get("num_layers"),
            "hidden_size": vectors.hidden_size,
        },
        "layers": vectors.layers,
        "position": meta.get("position", "not recorded"),
        "method": meta.get("method", "not recorded"),
        "normalized": meta.get("normalized"),
        "num_pairs": meta.get("num_pairs"),
        # Learned vectors (reptune.training.learned_vectors) record how they were trained.
        "training": {
            k: meta.get(k)
            for k in ("objective", "steps", "learning_rate", "coefficients", "num_rows")
        }
        if meta.get("method") == "learned"
        else None,
        "data_fingerprint": meta.get("data_fingerprint"),
        "unit": unit,
        "unit_text": describe_unit(unit),
        "reptune_version": meta.get("reptune_version", __version__),
        "rows": _rows(vectors),
        "example_layer": _example_layer(vectors),
        "example_coefficient": 0.1 if unit == DEFAULT_COEFFICIENT_UNIT else 4.0,
        "gguf_files": list(gguf_files),
    }
    source = (resources.files("reptune") / "templates" / TEMPLATE_NAME).read_text("utf-8")
    env = jinja2.Environment(trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    return ModelCard(env.from_string(source).render(**context))


def write_vector_card(vectors: SteeringVectors, folder: str | Path, repo_id: str | None = None):
    """Write ``<folder>/README.md`` for ``vectors`` (atomically) and return its path.

    Example:
        >>> write_vector_card(vecs, "runs/sentiment/vectors", repo_id="me/sentiment-vectors")
        PosixPath('runs/sentiment/vectors/README.md')
    """
    folder = Path(folder)
    gguf_files = sorted(p.name for p in folder.glob("*.gguf") if p.is_file())
    card = build_vector_card(vectors, repo_id=repo_id, gguf_files=gguf_files)
    path = folder / CARD_FILE
    atomic_write(path, lambda tmp: Path(tmp).write_text(str(card), encoding="utf-8"))
    return path


def vector_folder_files(folder: str | Path) -> list[str]:
    """What a vectors folder publishes: the two vector files, the card and any ``*.gguf``.

    Example:
        >>> vector_folder_files("runs/sentiment/vectors")
        ['README.md', 'control_vector.gguf', 'steering_vectors.json', ...]
    """
    folder = Path(folder)
    names = [VECTORS_FILE, METADATA_FILE, CARD_FILE]
    names += [p.name for p in folder.glob("*.gguf")]
    return sorted(n for n in set(names) if (folder / n).is_file())


def _upload(folder: Path, files: list[str], repo_id: str, *, private, token, **kwargs):
    api = HfApi(token=token)
    api.create_repo(repo_id, private=private or None, exist_ok=True, repo_type="model")
    return api.upload_folder(
        repo_id=repo_id,
        folder_path=str(folder),
        repo_type="model",
        # Exact names (escaped: "[" is a glob character): nothing else in the folder leaves.
        allow_patterns=[glob.escape(f) for f in files],
        **kwargs,
    )


def push_vectors_folder(
    folder: str | Path,
    repo_id: str,
    *,
    private: bool = False,
    dry_run: bool = False,
    commit_message: str | None = None,
    token: str | None = None,
    revision: str | None = None,
) -> list[str]:
    """Upload a folder that :meth:`SteeringVectors.save` wrote; return the uploaded files.

    The vectors are loaded (checksum checked) before anything leaves the machine. The vector card
    is written first when ``README.md`` is missing. With ``dry_run`` nothing is written or
    uploaded: the list is what would be.

    Example:
        >>> push_vectors_folder("runs/sentiment/vectors", "me/sentiment-vectors", dry_run=True)
        ['README.md', 'steering_vectors.json', 'steering_vectors.safetensors']
    """
    if not repo_id or not isinstance(repo_id, str):
        raise ValueError("repo_id is required, e.g. 'your-name/sentiment-vectors'")
    folder = Path(folder)
    vectors = SteeringVectors.load(folder)
    if dry_run:
        return sorted({*vector_folder_files(folder), CARD_FILE})
    if not (folder / CARD_FILE).is_file():
        write_vector_card(vectors, folder, repo_id=repo_id)
    files = vector_folder_files(folder)
    message = commit_message or "Upload reptune steering vectors"
    info = _upload(
        folder,
        files,
        repo_id,
        private=private,
        token=token,
        commit_message=message,
        revision=revision,
    )
    logger.info("uploaded %d files to %s", len(files), getattr(info, "commit_url", repo_id))
    return files


def push_vectors_to_hub(
    vectors: SteeringVectors,
    repo_id: str,
    *,
    private: bool = False,
    commit_message: str | None = None,
    token: str | None = None,
    revision: str | None = None,
) -> str:
    """Save ``vectors`` with a fresh vector card and upload them to ``repo_id``.

    Creates the repo if needed (``private=True`` makes a new one private; an existing repo keeps
    its visibility). Returns the commit URL.

    Example:
        >>> push_vectors_to_hub(vecs, "me/smollm2-sentiment-vectors", private=True)
        'https://huggingface.co/me/smollm2-sentiment-vectors/commit/...'
    """
    if not repo_id or not isinstance(repo_id, str):
        raise ValueError("repo_id is required, e.g. 'your-name/sentiment-vectors'")
    with tempfile.TemporaryDirectory(prefix="reptune-vectors-") as tmp:
        folder = Path(tmp) / "vectors"
        vectors.save(folder)
        write_vector_card(vectors, folder, repo_id=repo_id)
        info = _upload(
            folder,
            vector_folder_files(folder),
            repo_id,
            private=private,
            token=token,
            commit_message=commit_message or "Upload reptune steering vectors",
            revision=revision,
        )
    return str(getattr(info, "commit_url", info))


def load_vectors(
    repo_id_or_folder: str | Path, *, model=None, allow_mismatch: bool = False, **kwargs
) -> SteeringVectors:
    """Vectors from a local folder or a Hub repo; with ``model``, checked.

    The same as :meth:`SteeringVectors.from_pretrained` (``revision``, ``subfolder``, ``token``,
    ``cache_dir``, ``device``), with the same check (:meth:`SteeringVectors.check_compatible`).

    Example:
        >>> vecs = load_vectors("me/smollm2-sentiment-vectors", revision="v1", model=model)
    """
    return SteeringVectors.from_pretrained(
        repo_id_or_folder, model=model, allow_mismatch=allow_mismatch, **kwargs
    )


def check_vectors_fit(vectors: SteeringVectors, model, *, allow_mismatch: bool = False) -> None:
    """Raise if ``vectors`` were made for a model unlike ``model``: the one check,
    :meth:`SteeringVectors.check_compatible`.

    Example:
        >>> check_vectors_fit(vecs, model)
    """
    vectors.check_compatible(model, allow_mismatch=allow_mismatch)
