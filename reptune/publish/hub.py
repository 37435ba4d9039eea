"""Upload a run folder to the Hugging Face Hub: adapter, vectors, settings, report and card.

A bare vectors folder (what ``SteeringVectors.save`` wrote) is uploaded as a vectors repository
with its vector card (:func:`reptune.publish.vector_hub.push_vectors_folder`).

Only the parts a user of the model needs are uploaded, and never pickles: training checkpoints,
optimizer states, ``*.pt``/``*.bin`` files, temporary and hidden files stay local. The token is
never handled here: ``token=None`` lets ``huggingface_hub`` use ``HF_TOKEN`` or the saved login.
"""

from __future__ import annotations

import glob
import logging
import re
from fnmatch import fnmatch
from pathlib import Path

from huggingface_hub import HfApi, ModelCard

from ..vectors import METADATA_FILE
from ..workflow.layout import (
    ADAPTER_DIR,
    CARD_FILE,
    CONFIG_FILE,
    REPORT_DIR,
    TUNED_VECTORS_DIR,
    VECTORS_DIR,
    load_run,
)
from .card import write_model_card
from .vector_hub import push_vectors_folder, vector_folder_files

__all__ = ["push_run", "publish_run", "files_to_upload", "EXCLUDED_PATTERNS"]

logger = logging.getLogger(__name__)

# What a run folder publishes: these top-level entries and nothing else, so stray files (notes,
# logs, caches, an .env) never leave the machine by accident.
_TOP_LEVEL_DIRS = (ADAPTER_DIR, VECTORS_DIR, REPORT_DIR)
_TOP_LEVEL_FILES = (CARD_FILE, CONFIG_FILE, "*.gguf")
# The output folder of `reptune tune` is the model itself: its weights, configs and tokenizer
# at the top, the vectors in reptune_vectors/.
_TUNED_DIRS = (TUNED_VECTORS_DIR, REPORT_DIR)
_TUNED_FILES = (
    CARD_FILE,
    "*.json",
    "*.safetensors",
    "*.gguf",
    "*.jinja",
    "tokenizer.model",
    "*.txt",
)

#: Never uploaded, at any depth: checkpoints, optimizer/scheduler/RNG states, pickles, temp files.
EXCLUDED_PATTERNS = (
    "checkpoint-*",
    "optimizer.*",
    "scheduler.*",
    "rng_state*",
    "training_args.bin",
    "*.pt",
    "*.pth",
    "*.bin",
    "*.pkl",
    "*.pickle",
    "*.ckpt",
    "*.tmp",
    "*.temp",
    "*~",
    "*.swp",
    ".*",
    "__pycache__",
)

# A Hugging Face access token ("hf_" + 34 letters/digits) inside a file about to be uploaded.
_TOKEN_RE = re.compile(rb"\bhf_[A-Za-z0-9]{30,}\b")
_TEXT_SUFFIXES = {".json", ".md", ".txt", ".yaml", ".yml", ".csv", ".jsonl"}


def _excluded(rel: Path) -> bool:
    return any(fnmatch(part, pattern) for part in rel.parts for pattern in EXCLUDED_PATTERNS)


def files_to_upload(run_dir: str | Path) -> list[str]:
    """The files of ``run_dir`` that :func:`push_run` uploads, as sorted POSIX relative paths.

    Example:
        >>> files_to_upload("runs/honesty")
        ['README.md', 'adapter/adapter_config.json', 'adapter/adapter_model.safetensors', ...]
    """
    run_dir = Path(run_dir)
    tuned = not (run_dir / VECTORS_DIR).is_dir() and (run_dir / TUNED_VECTORS_DIR).is_dir()
    dirs, files = (_TUNED_DIRS, _TUNED_FILES) if tuned else (_TOP_LEVEL_DIRS, _TOP_LEVEL_FILES)
    found: list[Path] = []
    for name in dirs:
        folder = run_dir / name
        if folder.is_dir():
            found.extend(p for p in folder.rglob("*") if p.is_file())
    for pattern in files:
        found.extend(p for p in run_dir.glob(pattern) if p.is_file())
    rel = {p.relative_to(run_dir) for p in found}
    return sorted(r.as_posix() for r in rel if not _excluded(r))


def _check_no_token(run_dir: Path, files: list[str]) -> None:
    for rel in files:
        path = run_dir / rel
        if path.suffix.lower() in _TEXT_SUFFIXES and _TOKEN_RE.search(path.read_bytes()):
            raise ValueError(
                f"{path} contains what looks like a Hugging Face access token; remove it before "
                "pushing (nothing was uploaded)"
            )


def push_run(
    run_dir: str | Path,
    repo_id: str,
    *,
    private: bool = False,
    dry_run: bool = False,
    commit_message: str | None = None,
    token: str | None = None,
) -> list[str]:
    """Upload the run folder ``run_dir`` to the model repo ``repo_id``; return the files.

    A bare vectors folder goes up as a vectors repository with its vector card.

    Writes the model card first when ``README.md`` is missing. Creates the repo if needed:
    ``private=True`` makes a new repo private, ``False`` leaves the owner's default visibility;
    an existing repo keeps its own. With ``dry_run`` nothing is written or uploaded and
    no token is needed: the returned list is what would be uploaded (``README.md`` included when
    it would be generated). ``token=None`` uses ``HF_TOKEN`` or the saved ``hf auth login``.

    Example:
        >>> push_run("runs/honesty", "me/llama-honesty", private=True)
        ['README.md', 'adapter/adapter_config.json', ..., 'vectors/steering_vectors.json', ...]
    """
    if not repo_id or not isinstance(repo_id, str):
        raise ValueError("repo_id is required, e.g. 'your-name/llama-honesty'")
    run_dir = Path(run_dir)
    if (run_dir / METADATA_FILE).is_file() and not (run_dir / VECTORS_DIR).is_dir():
        _check_no_token(run_dir, vector_folder_files(run_dir))
        return push_vectors_folder(
            run_dir,
            repo_id,
            private=private,
            dry_run=dry_run,
            commit_message=commit_message,
            token=token,
        )
    run = load_run(run_dir)  # validates the vectors before anything leaves the machine
    card = run_dir / CARD_FILE
    files = files_to_upload(run_dir)
    # Checked in a dry run too, so a dry run shows what a real push would refuse or miss.
    _check_no_token(run_dir, files)
    where = run.relative(run.adapter_path)
    weights = "adapter_model.safetensors" if where == "." else f"{where}/adapter_model.safetensors"
    if run.has_adapter and not run.adapter_config.get("full_model") and weights not in files:
        logger.warning(
            "%s has no adapter_model.safetensors; pickled weights (.bin) are never uploaded, so "
            "the repo would hold no adapter weights. Save the adapter again with safetensors.",
            run.adapter_path,
        )
    if card.is_file() and "reptune" not in (_card_tags(card) or []):
        logger.warning(
            "%s was not written by reptune (no 'reptune' tag); it is uploaded as it is. Run "
            "`reptune card %s` to replace it.",
            card,
            run_dir,
        )
    if dry_run:
        files = sorted({*files, CARD_FILE})
        logger.info("dry run: would upload %d files to %s", len(files), repo_id)
        return files

    if not card.is_file():
        write_model_card(run_dir, repo_id=repo_id)
        files = files_to_upload(run_dir)

    api = HfApi(token=token)
    api.create_repo(repo_id, private=private or None, exist_ok=True, repo_type="model")
    info = api.upload_folder(
        repo_id=repo_id,
        folder_path=str(run_dir),
        repo_type="model",
        commit_message=commit_message or "Upload reptune run",
        # Exact paths (escaped: a "[" in a name is a glob character), so what is uploaded is
        # exactly what a dry run lists.
        allow_patterns=[glob.escape(f) for f in files],
    )
    logger.info("uploaded %d files to %s", len(files), getattr(info, "commit_url", repo_id))
    return files


def _card_tags(card: Path) -> list[str] | None:
    try:
        return ModelCard.load(card).data.tags
    except Exception:  # an unparsable card is the user's; upload it untouched
        return None


def publish_run(
    run_dir: str | Path, repo_id: str | None = None, *, private: bool = False, state=None
) -> Path:
    """The last step of a recipe: write the model card, then push the run when ``repo_id`` is
    given. Only the main process writes; every process returns the card's path.

    Example:
        >>> publish_run("runs/honesty")  # the card only
        PosixPath('runs/honesty/README.md')
    """
    from accelerate import PartialState

    state = state or PartialState()
    run_dir = Path(run_dir)
    if state.is_main_process:
        write_model_card(run_dir, repo_id=repo_id)
        if repo_id:
            files = push_run(run_dir, repo_id, private=private)
            logger.info("pushed %d files to %s", len(files), repo_id)
    state.wait_for_everyone()
    return run_dir / CARD_FILE
