"""Steering vectors as a Hub artefact: a vector card, upload, and loading by repo id or folder.

A vectors repository holds what :meth:`SteeringVectors.save` writes
(``steering_vectors.safetensors`` + ``steering_vectors.json``), a ``README.md`` vector card and,
optionally, llama.cpp control vectors (``*.gguf``). The card records the model the vectors were
made for (name, revision, architecture), the layers, positions, method, coefficient unit and
norms, the per-layer diagnostics, the data fingerprint and how to steer with them in reptune and
in llama.cpp. Loading with ``model=`` refuses vectors made for another model.

This module depends only on :mod:`reptune.vectors` and :mod:`reptune.io`, so any code that has
vectors can publish them. The token is never handled here: ``token=None`` lets
``huggingface_hub`` use ``HF_TOKEN`` or the saved login.

Example:
    >>> vecs.push_to_hub("me/smollm2-sentiment-vectors")
    >>> vecs = SteeringVectors.from_pretrained("me/smollm2-sentiment-vectors", model=model)
"""

from __future__ import annotations

import glob
import logging
import re
import tempfile
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2
from huggingface_hub import HfApi, ModelCard, ModelCardData, snapshot_download

from .io import atomic_write
from .vectors import (
    DEFAULT_COEFFICIENT_UNIT,
    METADATA_FILE,
    VECTORS_FILE,
    SteeringVectors,
    describe_unit,
)
from .version import __version__

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
CARD_FILE = "README.md"
TEMPLATE_NAME = "vector_card.md.j2"
# Where ``reptune push`` puts the vectors of a run folder; loading looks there too.
RUN_VECTORS_SUBFOLDER = "vectors"

# "owner/name" (the Hub links base_model only to repositories); local paths stay in the text.
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95}$")
_MODEL_FIELDS = ("model_type", "num_layers", "hidden_size")


def _hub_id(value: Any) -> str | None:
    if isinstance(value, str) and _HUB_ID.match(value) and ".." not in value:
        return value
    return None


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
        base_model=_hub_id(name),
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


def load_vectors(
    repo_id_or_folder: str | Path,
    *,
    revision: str | None = None,
    model=None,
    subfolder: str | None = None,
    token: str | None = None,
    cache_dir: str | Path | None = None,
    device=None,
) -> SteeringVectors:
    """Vectors from a local folder or a Hub repo (at ``revision``); with ``model``, checked.

    A Hub repo is fetched with ``snapshot_download`` (only the vector files and the card). The
    vectors are looked for at the repo's root, then in ``vectors/`` (a run pushed by
    ``reptune push``), or in ``subfolder``. With ``model``, vectors made for a model with another
    ``model_type``, number of decoder blocks or hidden size are refused
    (:func:`check_vectors_fit`).

    Example:
        >>> vecs = load_vectors("me/smollm2-sentiment-vectors", revision="v1", model=model)
    """
    local = Path(repo_id_or_folder).expanduser()
    if local.exists():
        if not local.is_dir():
            raise ValueError(f"{local} is a file; pass the folder that holds {VECTORS_FILE}")
        root = local
    elif _hub_id(str(repo_id_or_folder)):
        pattern_dirs = [subfolder] if subfolder else ["", RUN_VECTORS_SUBFOLDER]
        patterns = [
            f"{d}/{name}" if d else name
            for d in pattern_dirs
            for name in (VECTORS_FILE, METADATA_FILE)
        ]
        try:
            root = Path(
                snapshot_download(
                    str(repo_id_or_folder),
                    revision=revision,
                    repo_type="model",
                    allow_patterns=[*patterns, CARD_FILE],
                    token=token,
                    cache_dir=cache_dir,
                )
            )
        except Exception as err:  # huggingface_hub raises HTTP, offline and not-found errors
            raise FileNotFoundError(
                f"{repo_id_or_folder!r} is not a local folder, and fetching it from the Hub "
                f"(revision {revision or 'main'}) failed: {err}"
            ) from err
    else:
        raise FileNotFoundError(
            f"{repo_id_or_folder!r} is neither a local folder nor a Hub repo id (owner/name)"
        )
    vectors = SteeringVectors.load(_vectors_in(root, subfolder), device=device)
    if model is not None:
        check_vectors_fit(vectors, model)
    return vectors


def check_vectors_fit(vectors: SteeringVectors, model) -> None:
    """Raise if ``vectors`` were made for a model unlike ``model``.

    Compares the recorded ``model_type``, number of decoder blocks and hidden size with the
    model's (fields the vectors do not record are not compared), then checks the layers exist.

    Example:
        >>> check_vectors_fit(vecs, model)
    """
    made_for = vectors.metadata
    actual = SteeringVectors.describe_model(model)
    differ = [
        f"{key} {made_for[key]!r} vs {actual[key]!r}"
        for key in _MODEL_FIELDS
        if made_for.get(key) is not None
        and actual.get(key) is not None
        and made_for[key] != actual[key]
    ]
    if differ:
        raise ValueError(
            f"these vectors were made for another model ({made_for.get('model_name', 'unknown')}"
            f", not {actual['model_name']}): {'; '.join(differ)}. Use vectors extracted from "
            "this model, or extract new ones with reptune.extract_vectors"
        )
    vectors.check_compatible(model)
