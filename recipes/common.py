"""Pieces shared by the recipes: argument dataclasses, training one adapter, loading it back,
perplexity comparisons. Every stage writes under the run folder (see reptune.pipeline).
"""

from __future__ import annotations

import dataclasses
import gc
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch

from reptune.io import (
    atomic_write,
    resolve_data,  # noqa: F401  (the recipes import it from here)
)
from reptune.models import load_model
from reptune.training.launch import whole_model_loading
from reptune.vectors import SteeringVectors

logger = logging.getLogger("reptune.recipe")


@dataclass
class ModelArguments:
    """The model and how to load it."""

    model: str = field(
        default="embedded:smollm2-135m",
        metadata={"help": "model spec: Hub id, local folder, .gguf file or embedded:<name>"},
    )
    dtype: str = field(default="float32", metadata={"help": "float32, bfloat16, float16 or auto"})
    run_dir: str = field(default="runs/honesty", metadata={"help": "folder for every output"})
    use_lora: bool = field(default=True, metadata={"help": "LoRA (else selected-layer full FT)"})
    lora_r: int = field(default=8, metadata={"help": "LoRA rank"})
    lora_alpha: int = field(default=16, metadata={"help": "LoRA alpha"})
    lora_dropout: float = field(default=0.0, metadata={"help": "LoRA dropout"})
    lora_up_to_rep_layers: bool = field(
        default=True,
        metadata={
            "help": "LoRA only on blocks up to the deepest rep layer: later blocks cannot "
            "move the target activations, and left trainable they can learn to "
            "undo the shift"
        },
    )
    lora_target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"],
        metadata={"help": "module names LoRA wraps (or 'all-linear')"},
    )
    push_to_hub_repo: str | None = field(
        default=None, metadata={"help": "Hub repo id to push the run to (token from env/login)"}
    )
    push_private: bool = field(default=False, metadata={"help": "create the Hub repo private"})


def load_base(args: ModelArguments):
    with whole_model_loading():  # the stages run it outside the Trainer, also under ZeRO-3
        model, tok = load_model(args.model, dtype=args.dtype)
    return model, tok


def prepare_for_training(model, args: ModelArguments, train_args):
    """Wrap in LoRA, or keep the model for selected-layer full fine-tuning."""
    if not args.use_lora:
        return model
    from peft import LoraConfig, get_peft_model

    targets = args.lora_target_modules
    rep_layers = train_args.rep_layers or []
    upto = list(range(max(rep_layers) + 1)) if args.lora_up_to_rep_layers and rep_layers else None
    config = LoraConfig(
        layers_to_transform=upto,
        r=args.lora_r,
        lora_alpha=args.lora_alpha,
        lora_dropout=args.lora_dropout,
        target_modules="all-linear" if targets == ["all-linear"] else targets,
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, config)


def train_adapter(
    args: ModelArguments,
    train_args,
    vectors: SteeringVectors,
    rows: list[dict],
    output_dir: Path,
    *,
    target: str = "toward",
    token_only: bool = False,
) -> dict:
    """Train one model (rep-tuned, or token-only when ``token_only``) and save it.

    Returns the final logged metrics. The base model is loaded fresh for each run so runs never
    see each other's weights.
    """
    from datasets import Dataset

    from reptune.training import RepTuneTrainer

    overrides = {"output_dir": str(output_dir), "rep_target": target}
    if token_only:
        overrides.update(rep_weight=0.0, lm_weight=1.0)
    targs = dataclasses.replace(train_args, **overrides)
    model, tok = load_base(args)
    model = prepare_for_training(model, args, targs)
    trainer = RepTuneTrainer(
        model,
        targs,
        vectors=vectors,
        train_dataset=Dataset.from_list(rows),
        processing_class=tok,
    )
    result = trainer.train()
    trainer.save_model(str(output_dir))
    history = [h for h in trainer.state.log_history if "loss" in h or "rep_loss" in h]
    metrics = {"train_loss": result.training_loss, "steps": trainer.state.global_step}
    if history:
        metrics.update({k: v for k, v in history[-1].items() if isinstance(v, (int, float))})
    del trainer, model
    gc.collect()
    return metrics


def load_tuned(args: ModelArguments, adapter_dir: Path | None):
    """Base model, with the saved adapter (or full checkpoint) on top when given."""
    if adapter_dir is None:
        return load_base(args)
    adapter_dir = Path(adapter_dir)
    if (adapter_dir / "adapter_config.json").is_file():
        from peft import PeftModel

        base, tok = load_base(args)
        return PeftModel.from_pretrained(base, str(adapter_dir)).eval(), tok
    with whole_model_loading():
        return load_model(str(adapter_dir), dtype=args.dtype)


def target_cosines(model, tok, vectors: SteeringVectors, rows, layers, positions) -> dict:
    """Mean cosine between block outputs and the vector at ``layers``, over ``rows``' prompts."""
    from reptune.hooks import intervene, recording
    from reptune.pairs import format_chat
    from reptune.tokenization import encode_batch

    texts = [format_chat(tok, r["prompt"], "", r.get("system")) for r in rows]
    sums = {layer: [] for layer in layers}
    for start in range(0, len(texts), 16):
        batch = encode_batch(tok, texts[start : start + 16], position_ids=True)
        rec, fns = recording(layers)
        with torch.no_grad(), intervene(model, fns, positions):
            model(**batch, use_cache=False)
        for layer in layers:
            h = rec.hidden(layer)[rec.mask(layer)].float()
            v = vectors[layer].float().to(h.device)
            sums[layer].append(torch.nn.functional.cosine_similarity(h, v.expand_as(h), dim=-1))
    return {layer: float(torch.cat(vals).mean()) for layer, vals in sums.items()}


def perplexity_rows(models: dict[str, tuple], text: str, window: int, stride: int) -> list[dict]:
    """Perplexity of each model on ``text`` and the paired-bootstrap difference to the first."""
    from reptune.evaluation.perplexity import compare_perplexity, perplexity

    results = {}
    for name, (model, tok) in models.items():
        results[name] = perplexity(model, tok, text, window=window, stride=stride)
    names = list(results)
    base = results[names[0]]
    rows = []
    for name in names:
        row = {
            "model": name,
            "perplexity": round(results[name].perplexity, 4),
            "windows": len(results[name].nll),
        }
        if name != names[0]:
            cmp = compare_perplexity(base, results[name])
            diff = cmp["perplexity_difference"]
            row.update(
                difference=round(diff.estimate, 4),
                ci_low=round(diff.low, 4),
                ci_high=round(diff.high, 4),
            )
        rows.append(row)
    return rows


def add_section(report, section: dict) -> None:
    """Add a recipe section (title, text, tables, plots, metrics) to a Report."""
    sec = report.section(section["title"], section["text"])
    for table in section["tables"]:
        sec.add_table(table["name"], table["rows"], description=table.get("description"))
    for plot in section["plots"]:
        sec.add_plot(Path(plot))
    for name, metric in section["metrics"].items():
        report.add_metric(name, **metric)


def write_json(path: Path, data) -> None:
    atomic_write(path, lambda p: Path(p).write_text(json.dumps(data, indent=2, default=str)))


def finish_run(args: ModelArguments, run_dir: Path, stages) -> None:
    """Model card, and the Hub push when asked."""
    from reptune.publish import push_run, write_model_card

    card = write_model_card(run_dir) if stages.state.is_main_process else None
    stages.state.wait_for_everyone()
    print(f"model card: {card or run_dir / 'README.md'}")
    if args.push_to_hub_repo:
        files = stages.run(
            "push",
            lambda: push_run(run_dir, args.push_to_hub_repo, private=args.push_private),
            settings={"repo": args.push_to_hub_repo},
        )
        print(f"pushed {len(files)} files to {args.push_to_hub_repo}")
    stages.state.wait_for_everyone()
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        # An explicit teardown: gloo can abort when the interpreter exits with the group alive.
        torch.distributed.destroy_process_group()
