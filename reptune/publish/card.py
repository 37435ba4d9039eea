"""Model cards for run folders: Hub metadata from ``ModelCardData`` plus a Jinja-rendered body.

The card is written to ``<run>/README.md`` after the adapter and vectors were saved, so no
``save_pretrained`` / ``push_to_hub`` call overwrites it afterwards (PEFT writes its own README).
The template ships inside the package (``reptune/templates/reptune_card.md.j2``); pass
``template=`` to use another one, which receives the same variables.
"""

from __future__ import annotations

import math
import re
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2
from huggingface_hub import EvalResult, ModelCard, ModelCardData

from ..io import atomic_write
from ..workflow.layout import CARD_FILE, load_run
from .card_context import card_context, format_number, hub_id, setting_text

__all__ = ["CARD_TAGS", "build_model_card", "write_model_card", "default_template_path"]

#: Tags every reptune card carries.
CARD_TAGS = ("reptune", "representation-tuning", "steering-vectors")

TEMPLATE_NAME = "reptune_card.md.j2"


def default_template_path() -> Path:
    """Path of the card template shipped with reptune.

    Example:
        >>> default_template_path().name
        'reptune_card.md.j2'
    """
    return Path(str(resources.files("reptune") / "templates" / TEMPLATE_NAME))


def _cell(value: Any) -> str:
    # A "|" or newline inside a Markdown table cell would break the table.
    return str(value).replace("|", "\\|").replace("\r", "").replace("\n", "<br>")


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_") or "metric"


def _eval_results(ctx: dict[str, Any]) -> list[EvalResult]:
    # A metric names its dataset when the report knows it; else the report's main evaluation
    # set, else the whole report counts as one evaluation.
    default_name = ctx["report_dataset"] or ctx["report_title"] or "reptune evaluation"
    default_type = ctx["report_dataset"] or "reptune-evaluation"
    results = []
    for metric in ctx["metrics"]:
        # model-index YAML cannot carry NaN or inf in a way the Hub accepts; the table still
        # shows them.
        if not math.isfinite(metric["value"]):
            continue
        results.append(
            EvalResult(
                task_type="text-generation",
                dataset_type=metric["dataset"] or default_type,
                dataset_name=metric["dataset"] or default_name,
                metric_type=_slug(metric["name"]),
                metric_name=metric["name"],
                metric_value=metric["value"],
            )
        )
    return results


def _card_data(ctx: dict[str, Any]) -> ModelCardData:
    tags = list(CARD_TAGS)
    if ctx["has_adapter"]:
        tags.append("peft")
        if str(ctx["adapter"].get("peft_type", "")).lower() == "lora":
            tags.append("lora")
    # The Hub links ``datasets`` entries to dataset repos; local file names stay in the text.
    datasets = [name for name in ctx["datasets"] if hub_id(name) is not None]
    return ModelCardData(
        base_model=ctx["base_model"],
        library_name="peft" if ctx["has_adapter"] else None,
        pipeline_tag="text-generation",
        tags=tags,
        datasets=datasets or None,
        model_name=ctx["model_name"],
        eval_results=_eval_results(ctx) or None,
    )


def _environment() -> jinja2.Environment:
    # Markdown, not HTML: no autoescaping. Report text is passed as data, never as template code.
    env = jinja2.Environment(trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    env.filters.update(num=format_number, setting=setting_text, cell=_cell)
    return env


def build_model_card(
    run_dir: str | Path,
    *,
    base_model: str | None = None,
    repo_id: str | None = None,
    limitations: list[str] | None = None,
    template: str | Path | None = None,
) -> ModelCard:
    """Build the model card for the run folder ``run_dir`` (nothing is written).

    ``base_model`` overrides the base model recorded in the run; ``repo_id`` names the Hub repo in
    the usage example; ``limitations`` come before the standard ones.

    Example:
        >>> card = build_model_card("runs/honesty", repo_id="me/llama-honesty")
        >>> card.data.tags
        ['reptune', 'representation-tuning', 'steering-vectors', 'peft', 'lora']
    """
    run = load_run(run_dir)
    ctx = card_context(run, base_model=base_model, repo_id=repo_id, limitations=limitations)
    card_data = _card_data(ctx)
    template_path = Path(template) if template is not None else default_template_path()
    if not template_path.is_file():
        raise FileNotFoundError(f"card template {template_path} does not exist")
    source = template_path.read_text(encoding="utf-8")
    try:
        text = _environment().from_string(source).render(card_data=card_data.to_yaml(), **ctx)
    except jinja2.TemplateError as err:
        raise ValueError(f"card template {template_path} failed to render: {err}") from err
    return ModelCard(text)


def write_model_card(
    run_dir: str | Path,
    *,
    base_model: str | None = None,
    repo_id: str | None = None,
    limitations: list[str] | None = None,
    template: str | Path | None = None,
) -> Path:
    """Write ``<run_dir>/README.md`` (atomically) and return its path.

    Call it after the adapter and vectors are saved: ``save_pretrained`` would overwrite it.

    Example:
        >>> write_model_card("runs/honesty", repo_id="me/llama-honesty")
        PosixPath('runs/honesty/README.md')
    """
    card = build_model_card(
        run_dir,
        base_model=base_model,
        repo_id=repo_id,
        limitations=limitations,
        template=template,
    )
    path = Path(run_dir) / CARD_FILE
    atomic_write(path, lambda tmp: Path(tmp).write_text(str(card), encoding="utf-8"))
    return path
