"""Merge a tuned model into plain weights: a transformers folder that any engine can serve.

A representation-tuned model needs no hooks, so once a LoRA adapter is merged into the base
weights it is an ordinary checkpoint: ``AutoModelForCausalLM.from_pretrained`` loads it without
reptune or PEFT, and vLLM, TGI or llama.cpp's ``convert_hf_to_gguf.py`` take it as they take the
base model. :func:`export_merged` accepts

* an adapter folder (``adapter_config.json``, as ``RepTuneTrainer.save_model`` writes it, with
  ``reptune_config.json`` and ``reptune_vectors/`` beside it);
* a run folder (its ``adapter/``);
* a selected-layer (or full) fine-tuning output: a plain transformers folder with the reptune
  files, which is re-saved with its card.

The output holds the merged weights (safetensors), config, generation config, tokenizer, a
``README.md`` card saying how it was made, ``reptune_merge.json`` (the same facts as JSON), and
the reptune settings and vectors for reference. It is written as a whole
(:func:`reptune.io.atomic_folder`): a crash leaves the previous folder as it was.

Example:
    >>> export_merged("runs/honesty", "runs/honesty/merged")
    PosixPath('runs/honesty/merged')
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2
import torch
from huggingface_hub import ModelCard, ModelCardData

from ..io import atomic_folder, atomic_write, exists_as_file, read_json, recover_folder, write_json
from ..models import _looks_like_hub_id, load_model
from ..vectors import METADATA_FILE, SteeringVectors
from ..version import __version__
from ..workflow.layout import ADAPTER_DIR, CONFIG_FILE, TUNED_VECTORS_DIR, VECTORS_DIR
from .card_context import hub_id

__all__ = ["MERGE_INFO_FILE", "TunedModel", "find_tuned_model", "export_merged"]

logger = logging.getLogger(__name__)

#: What the merged folder records about how it was made.
MERGE_INFO_FILE = "reptune_merge.json"
#: The trainer's files beside a saved model (kept in step with reptune.training.trainer).

TEMPLATE_NAME = "merged_card.md.j2"
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
# Text the merged model and the adapter model are compared on before anything is written.
PROBE_TEXT = "The quick brown fox jumps over the lazy dog. Tell me about your day."
# Settings shown in the card, in this order, when the trainer recorded them.
_SETTINGS = (
    "rep_target",
    "resolved_rep_layers",
    "rep_positions",
    "rep_weight",
    "lm_weight",
    "retain_weight",
    "train_layers",
    "train_modules",
    "reptune_version",
)


@dataclass
class TunedModel:
    """What :func:`find_tuned_model` found, checked before any weight is loaded.

    ``kind`` is ``"adapter"`` (a PEFT adapter to merge into ``base_model``) or ``"model"`` (a
    plain transformers folder, already merged).
    """

    kind: str
    folder: Path
    base_model: str | None = None
    adapter_config: dict[str, Any] | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    vectors_dir: Path | None = None


def _usable(spec: str | None) -> bool:
    if not spec:
        return False
    if spec.startswith("embedded:") or Path(spec).expanduser().exists():
        return True
    return not Path(spec).is_absolute() and _looks_like_hub_id(spec)


def _pick_base(explicit: str | None, candidates: list[str | None], folder: Path) -> str:
    if explicit:
        if not _usable(explicit):
            raise FileNotFoundError(
                f"--base_model {explicit!r} does not exist: pass a local folder, a .gguf file, "
                "embedded:<name> or a Hub id"
            )
        return explicit
    for spec in candidates:
        if _usable(spec):
            return spec
    named = [c for c in candidates if c]
    raise FileNotFoundError(
        f"the base model of {folder} ({named[0] if named else 'not recorded'}) is not found "
        "here: pass --base_model (a Hub id, a local folder, a .gguf file or embedded:<name>)"
    )


def _vectors_dir(*folders: Path) -> Path | None:
    for folder in folders:
        if (folder / METADATA_FILE).is_file():
            return folder
    return None


def _holds_model(folder: Path) -> bool:
    return (folder / ADAPTER_CONFIG).is_file() or (folder / "config.json").is_file()


def find_tuned_model(source: str | Path, base_model: str | None = None) -> TunedModel:
    """Identify ``source`` (adapter, run or model folder) and check it can be merged.

    Reads only JSON files, so bad input fails before any weight is loaded.

    Example:
        >>> find_tuned_model("runs/honesty").kind
        'adapter'
    """
    source = Path(source)
    if not source.is_dir():
        raise FileNotFoundError(f"{source} is not a folder: pass an adapter, run or model folder")
    run_config: dict[str, Any] = {}
    # A run folder keeps its tuned model in adapter/ (a model folder with full fine-tuning).
    folder = next((f for f in (source, source / ADAPTER_DIR) if _holds_model(f)), source)
    if folder != source and (source / CONFIG_FILE).is_file():
        run_config = read_json(source / CONFIG_FILE, "run settings")
    settings = {}
    if (folder / CONFIG_FILE).is_file():
        settings = read_json(folder / CONFIG_FILE, "reptune settings")
    vectors_dir = _vectors_dir(
        recover_folder(folder / TUNED_VECTORS_DIR), recover_folder(source / VECTORS_DIR)
    )

    if (folder / ADAPTER_CONFIG).is_file():
        config = read_json(folder / ADAPTER_CONFIG, "adapter config")
        if not (folder / ADAPTER_WEIGHTS).is_file():
            raise FileNotFoundError(
                f"{folder / ADAPTER_WEIGHTS} is missing: only safetensors adapters are merged "
                "(pickled .bin weights are never loaded); save the adapter with save_pretrained"
            )
        from peft import PeftConfig

        if PeftConfig.from_pretrained(str(folder)).is_prompt_learning:
            raise ValueError(
                f"{folder} is a {config.get('peft_type')} adapter: prompt-learning adapters add "
                "virtual tokens and cannot be merged into weights"
            )
        base = _pick_base(
            base_model,
            [config.get("base_model_name_or_path"), run_config.get("base_model")],
            folder,
        )
        return TunedModel("adapter", folder, base, config, settings, vectors_dir)

    if (folder / "config.json").is_file():
        if not any(folder.glob("*.safetensors")):
            raise FileNotFoundError(
                f"{folder} has a config.json but no *.safetensors weights (pickled weights are "
                "never loaded)"
            )
        if base_model:
            raise ValueError(f"{folder} is a full model folder: it has no base model to override")
        if not (folder / "tokenizer_config.json").is_file():
            raise FileNotFoundError(
                f"{folder} has no tokenizer: save the model with its tokenizer (the trainer does "
                "when given processing_class=tokenizer)"
            )
        base = settings.get("base_model") or run_config.get("base_model")
        return TunedModel("model", folder, base, None, settings, vectors_dir)
    raise FileNotFoundError(
        f"{source} holds neither {ADAPTER_CONFIG} (a PEFT adapter), {ADAPTER_DIR}/{ADAPTER_CONFIG}"
        " (a run folder) nor config.json with safetensors weights (a fine-tuned model folder)"
    )


def _check_output(output: Path, tuned: TunedModel, source: Path) -> None:
    out = output.resolve()
    protected = [source.resolve(), tuned.folder.resolve()]
    if tuned.vectors_dir is not None:
        protected.append(tuned.vectors_dir.resolve())
    if tuned.base_model and Path(tuned.base_model).expanduser().exists():
        protected.append(Path(tuned.base_model).expanduser().resolve())
    for folder in protected:
        if out == folder or out in folder.parents:
            raise ValueError(
                f"--output {output} would replace {folder}, which the export reads; write the "
                "merged model to another folder (e.g. <run>/merged)"
            )
    if exists_as_file(output):
        raise NotADirectoryError(f"--output {output} exists and is not a folder")


def _probe_logits(model, tokenizer) -> torch.Tensor:
    batch = tokenizer(PROBE_TEXT, return_tensors="pt").to(model.device)
    with torch.no_grad():
        return model(**batch).logits.float().cpu()


def _load_tokenizer(tuned: TunedModel, base_tokenizer):
    # The trainer saves the tokenizer it trained with next to the model: prefer it.
    if (tuned.folder / "tokenizer_config.json").is_file():
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(str(tuned.folder))
    return base_tokenizer


def _merge(tuned: TunedModel, dtype, trust_remote_code: bool):
    """The merged model, its tokenizer and the largest logit change the merge made."""
    if tuned.kind == "model":
        model, tokenizer = load_model(
            str(tuned.folder), dtype=dtype, trust_remote_code=trust_remote_code
        )
        return model, _load_tokenizer(tuned, tokenizer), 0.0
    from peft import PeftModel

    base, tokenizer = load_model(tuned.base_model, dtype=dtype, trust_remote_code=trust_remote_code)
    tokenizer = _load_tokenizer(tuned, tokenizer)
    if tuned.vectors_dir is not None:
        # Vectors made for another model mean the adapter was too: stop before merging.
        SteeringVectors.load(tuned.vectors_dir).check_compatible(base)
    peft_model = PeftModel.from_pretrained(base, str(tuned.folder))
    peft_model.eval()
    before = _probe_logits(peft_model, tokenizer)
    try:
        merged = peft_model.merge_and_unload()
    except (AttributeError, ValueError, NotImplementedError) as err:
        raise ValueError(
            f"PEFT cannot merge the {tuned.adapter_config.get('peft_type')} adapter in "
            f"{tuned.folder}: {err}"
        ) from err
    diff = float((_probe_logits(merged, tokenizer) - before).abs().max())
    return merged, tokenizer, diff


def _present(values: dict[str, Any]) -> dict[str, Any]:
    # Recorded settings only; module names sorted (PEFT keeps target_modules as a set, so its
    # saved order changes from run to run).
    out = {}
    for key, value in values.items():
        if value is None:
            continue
        names = isinstance(value, list) and all(isinstance(v, str) for v in value)
        out[key] = sorted(value) if names or isinstance(value, (set, frozenset)) else value
    return out


def _merge_info(tuned: TunedModel, model, diff: float, vectors) -> dict[str, Any]:
    import peft
    import transformers

    adapter = tuned.adapter_config or {}
    return {
        "kind": tuned.kind,
        "source": str(tuned.folder),
        "base_model": tuned.base_model,
        "base_model_hub_id": hub_id(tuned.base_model),
        "dtype": str(model.dtype).replace("torch.", ""),
        "adapter": _present(
            {key: adapter.get(key) for key in ("peft_type", "r", "lora_alpha", "target_modules")}
            | {"layers": adapter.get("layers_to_transform")}
        ),
        "settings": _present({key: tuned.settings.get(key) for key in _SETTINGS}),
        "vectors": None
        if vectors is None
        else _present(
            {
                "dir": TUNED_VECTORS_DIR,
                "layers": vectors.layers,
                "method": vectors.metadata.get("method"),
                "data_fingerprint": vectors.metadata.get("data_fingerprint"),
            }
        ),
        "max_abs_logit_diff": diff,
        "probe_text": PROBE_TEXT,
        "versions": {
            "reptune": __version__,
            "peft": peft.__version__,
            "transformers": transformers.__version__,
        },
    }


def _card(info: dict[str, Any], model) -> ModelCard:
    kind = "merged-lora" if info["kind"] == "adapter" else "selected-layer-fine-tuning"
    data = ModelCardData(
        base_model=info["base_model_hub_id"],
        base_model_relation="finetune" if info["base_model_hub_id"] else None,
        library_name="transformers",
        pipeline_tag="text-generation",
        tags=["reptune", "representation-tuning", kind],
    )
    source = (resources.files("reptune") / "templates" / TEMPLATE_NAME).read_text("utf-8")
    env = jinja2.Environment(trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    text = env.from_string(source).render(
        card_data=data.to_yaml(),
        info=info,
        architecture=(model.config.architectures or [type(model).__name__])[0],
        num_parameters=sum(p.numel() for p in model.parameters()),
    )
    return ModelCard(text)


def export_merged(
    source: str | Path,
    output: str | Path,
    *,
    base_model: str | None = None,
    dtype: str | torch.dtype = "auto",
    trust_remote_code: bool = False,
) -> Path:
    """Write the tuned model at ``source`` as a plain transformers folder ``output``.

    ``source``: an adapter folder, a run folder or a fine-tuned model folder (see the module
    docstring). ``base_model`` overrides the adapter's recorded base model (a model spec, as
    :func:`reptune.models.load_model` takes). ``dtype``: the weights' dtype for the merge and
    the output; ``"auto"`` keeps the base checkpoint's. The folder replaces ``output`` whole,
    atomically; it needs no reptune to load.

    Example:
        >>> export_merged("runs/honesty/adapter", "merged", base_model="embedded:smollm2-135m")
        PosixPath('merged')
        >>> AutoModelForCausalLM.from_pretrained("merged")  # plain transformers, no hooks
    """
    output = Path(output)
    tuned = find_tuned_model(source, base_model)
    _check_output(output, tuned, Path(source))
    model, tokenizer, diff = _merge(tuned, dtype, trust_remote_code)
    vectors = SteeringVectors.load(tuned.vectors_dir) if tuned.vectors_dir else None
    info = _merge_info(tuned, model, diff, vectors)
    if model.dtype == torch.float32 and diff > 1e-3:
        logger.warning("the merged model's logits differ from the adapter's by %.3g", diff)
    with atomic_folder(output, keep_other_files=False) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if vectors is not None:
            vectors.save(tmp / TUNED_VECTORS_DIR)
        if tuned.settings:
            write_json(tmp / CONFIG_FILE, tuned.settings)
        write_json(tmp / MERGE_INFO_FILE, info)
        _write_card(tmp, info, model)
    logger.info("wrote the merged model to %s (max |logit diff| %.3g)", output, diff)
    return output


def _write_card(folder: Path, info: dict[str, Any], model) -> Path:
    text = str(_card(info, model))
    return atomic_write(folder / "README.md", lambda p: Path(p).write_text(text, "utf-8"))
