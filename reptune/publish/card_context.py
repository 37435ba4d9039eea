"""What a model card says about a run, as plain data for the Jinja template.

Kept apart from the rendering so the facts (base model, settings, metrics) can be tested without
parsing Markdown, and so a custom template gets exactly the same variables.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from ..reporting.report_view import read_report
from ..workflow.layout import CONFIG_FILE, REPORT_DIR, RunFolder

__all__ = [
    "KNOWN_BASE_MODELS",
    "TUNING_LABELS",
    "base_model_of",
    "datasets_of",
    "hub_id",
    "is_secret_key",
    "card_context",
    "format_number",
    "setting_text",
]

#: reptune model specs that are local copies of a Hub model -> that model's Hub id.
KNOWN_BASE_MODELS = {"embedded:smollm2-135m": "HuggingFaceTB/SmolLM2-135M-Instruct"}

#: Settings shown in "what was tuned", in this order, when the run's config has them.
TUNING_LABELS: dict[str, str] = {
    "rep_layers": "Layers the representation loss acts on",
    "rep_positions": "Token positions of the representation loss",
    "rep_target": "Target for the activations (toward / away from / orthogonal to the vector, "
    "the steered model's, or the prompted model's)",
    "steer_coefficient": "Coefficient of the steering imitated",
    "target_instruction": "Instruction the prompted target saw in context",
    "target_instruction_mode": "Where the instruction stood (system prompt, prefix or template)",
    "target_examples": "Example exchanges the prompted target saw before the prompt",
    "rep_weight": "Weight of the representation (cosine) loss",
    "lm_weight": "Weight of the token (causal-LM) loss",
    "retain_weight": "Weight of the retain loss",
    "trainable_layers": "Layers whose weights were trained",
    "learning_rate": "Learning rate",
    "learning_rates": "Learning rates",
    "num_train_epochs": "Epochs",
    "epochs": "Epochs",
    "per_device_train_batch_size": "Batch size per device",
    "gradient_accumulation_steps": "Gradient accumulation steps",
    "seed": "Seed",
}

_DATASET_KEYS = ("dataset", "datasets", "dataset_name", "dataset_names")
_BASE_MODEL_KEYS = ("base_model", "model", "model_name_or_path", "model_name")
# Keys whose values must never reach a card (TrainingArguments has ``hub_token``). Anchored at
# the end so ``max_new_tokens`` or ``pad_token_id`` stay visible.
_SECRET = re.compile(
    r"(?:^|_)(?:token|secret|password|passwd|api_?key|credentials?)$", re.IGNORECASE
)
# "owner/name": the Hub moved its few unprefixed legacy ids (gpt2) under owners, and a bare word
# is more likely a class or folder name than a repository.
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95}$")
_FILE_SUFFIXES = (".json", ".jsonl", ".csv", ".tsv", ".parquet", ".txt", ".gguf", ".yaml", ".yml")


def is_secret_key(key: str) -> bool:
    """True for setting names that may hold credentials (``hub_token``, ``api_key``...).

    Example:
        >>> is_secret_key("hub_token"), is_secret_key("max_new_tokens")
        (True, False)
    """
    return bool(_SECRET.search(str(key)))


def hub_id(value: Any) -> str | None:
    """``value`` if it reads as a Hub repository id (``owner/name``), else ``None``.

    Card metadata (``base_model``, ``datasets``) must name Hub repositories for the Hub to link
    them, so local paths and file names stay in the card's text only.

    Example:
        >>> hub_id("meta-llama/Llama-2-13b-chat-hf"), hub_id("/tmp/model"), hub_id("pairs.jsonl")
        ('meta-llama/Llama-2-13b-chat-hf', None, None)
    """
    if not isinstance(value, str):
        return None
    value = KNOWN_BASE_MODELS.get(value, value)
    if not _HUB_ID.match(value) or ".." in value or value.lower().endswith(_FILE_SUFFIXES):
        return None
    return value


def base_model_of(run: RunFolder, base_model: str | None = None) -> str | None:
    """The base model's name as the run recorded it (an explicit ``base_model`` wins).

    Looks in ``reptune_config.json``, then the adapter config, then the vectors' metadata.

    Example:
        >>> base_model_of(load_run("runs/honesty"))
        'embedded:smollm2-135m'
    """
    if base_model:
        return base_model
    for key in _BASE_MODEL_KEYS:
        if isinstance(run.config.get(key), str) and run.config[key]:
            return run.config[key]
    from_adapter = (run.adapter_config or {}).get("base_model_name_or_path")
    if isinstance(from_adapter, str) and from_adapter:
        return from_adapter
    name = run.vectors.metadata.get("model_name")
    return name if isinstance(name, str) and name else None


def datasets_of(run: RunFolder) -> list[str]:
    """Dataset names from the run's config: ``dataset(s)`` and any ``*_dataset(s)`` setting.

    Example:
        >>> datasets_of(load_run("runs/honesty"))
        ['reptune/honesty-claims', 'data/claims.jsonl']
    """
    names: list[str] = []
    for key, value in run.config.items():
        if key not in _DATASET_KEYS and not key.endswith(("_dataset", "_datasets")):
            continue
        for name in value if isinstance(value, list | tuple) else [value]:
            if isinstance(name, str) and name and name not in names:
                names.append(name)
    return names


def setting_text(value: Any) -> str:
    """A setting's value on one line: lists comma-separated, dicts as JSON.

    Example:
        >>> setting_text([11, 12, 13]), setting_text(0.01)
        ('11, 12, 13', '0.01')
    """
    if isinstance(value, list | tuple):
        return ", ".join(setting_text(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True, default=str)
    return format_number(value)


def format_number(value: Any) -> str:
    """Numbers exactly as JSON writes them (shortest round-trip form), so the card's figures
    are the report's figures; ``None`` as an empty string; anything else through ``str``.

    Example:
        >>> format_number(0.875), format_number(200), format_number("n/a")
        ('0.875', '200', 'n/a')
    """
    if value is None:
        return ""
    if isinstance(value, float) and math.isfinite(value):
        return repr(value)
    return str(value)


def _files(run: RunFolder) -> list[tuple[str, str]]:
    vectors = f"{run.relative(run.vectors_path)}/"
    files = [(vectors, "steering vectors (safetensors) and their metadata (JSON)")]
    if run.has_adapter:
        where = run.relative(run.adapter_path)
        what = (
            "the tuned model's full weights (`from_pretrained`)"
            if run.adapter_config.get("full_model")
            else "the PEFT adapter (`PeftModel.from_pretrained`)"
        )
        files.append(("./" if where == "." else f"{where}/", what))
    if (run.path / CONFIG_FILE).is_file():
        files.append((CONFIG_FILE, "the tuning settings"))
    if run.report is not None:
        files.append((f"{REPORT_DIR}/", "the evaluation report (JSON, Markdown, plots)"))
    for gguf in sorted(run.path.glob("*.gguf")):
        files.append((gguf.name, "the vectors as a llama.cpp control vector"))
    return files


def _default_limitations(run: RunFolder, base_spec: str | None) -> list[str]:
    items = [
        "The results above hold for the evaluation data and prompts in the report; behaviour on "
        "other prompts, languages or tasks was not measured.",
        "The steering vectors belong to the base model (its hidden size, layers and weights); "
        "they are meaningless for any other model.",
        "Steering and representation tuning shift a behaviour; they do not guarantee it. "
        "Adversarial prompts or steering in the opposite direction may still elicit it.",
    ]
    if run.has_adapter:
        items.append(
            "Capabilities beyond those in the report (for example standard benchmarks) may have "
            "changed with tuning."
        )
    if base_spec in KNOWN_BASE_MODELS:
        items.append(
            f"Tuned on a dequantised copy of a quantised GGUF release of "
            f"{KNOWN_BASE_MODELS[base_spec]}; weights loaded from the original checkpoint differ "
            "slightly."
        )
    return items


def card_context(
    run: RunFolder,
    *,
    base_model: str | None = None,
    repo_id: str | None = None,
    limitations: list[str] | None = None,
) -> dict[str, Any]:
    """Everything the card template needs, as plain data.

    Example:
        >>> ctx = card_context(load_run("runs/honesty"), repo_id="me/honesty")
        >>> ctx["base_model"], [m["name"] for m in ctx["metrics"]]
    """
    base_spec = base_model_of(run, base_model)
    meta = run.vectors.metadata
    config = {k: v for k, v in run.config.items() if not is_secret_key(k)}
    adapter = run.adapter_config or {}
    # The usage example steers at a tuned layer that has a vector, else at a middle vector layer.
    tuned = config.get("rep_layers")
    layers = (
        [x for x in tuned if isinstance(x, int) and x in run.vectors]
        if isinstance(tuned, list)
        else []
    )
    layers = layers or run.vectors.layers
    view = read_report(run.report, run.report_dir)
    return {
        "model_name": (repo_id or run.path.resolve().name).split("/")[-1],
        "repo_id": repo_id,
        "base_model": hub_id(base_spec),
        "base_model_spec": base_spec,
        "has_adapter": run.has_adapter,
        "adapter": {
            k: adapter[k]
            for k in ("peft_type", "r", "lora_alpha", "target_modules", "layers_to_transform")
            if adapter.get(k) is not None
        },
        "vectors": {
            "layers": run.vectors.layers,
            "hidden_size": run.vectors.hidden_size,
            **{
                k: meta.get(k)
                for k in (
                    "model_name",
                    "num_layers",
                    "method",
                    "position",
                    "data_fingerprint",
                    "reptune_version",
                )
            },
        },
        "example_layer": layers[len(layers) // 2],
        "adapter_subdir": run.relative(run.adapter_path),
        "full_model": bool((run.adapter_config or {}).get("full_model")),
        "vectors_subdir": run.relative(run.vectors_path),
        "tuning": [(label, config[key]) for key, label in TUNING_LABELS.items() if key in config],
        "settings": list(config.items()),
        "datasets": datasets_of(run),
        "metrics": view["metrics"],
        "report_title": view["title"],
        "report_dataset": view["dataset"],
        "report_model": [(str(k), v) for k, v in view["model"] if not is_secret_key(k)],
        "sections": view["sections"],
        "limitations": list(limitations or []) + _default_limitations(run, base_spec),
        "files": _files(run),
        "gguf_files": [p.name for p in sorted(run.path.glob("*.gguf"))],
    }
