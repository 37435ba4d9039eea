"""``reptune tune``: representation-tune a model with steering vectors (LoRA by default).

Example:
    $ reptune tune --model embedded:smollm2-135m --vectors runs/vectors --data train.jsonl \\
        --rep_layers 11 12 13 --rep_positions -7 --output_dir runs/tuned
    $ reptune tune --config recipes/honesty.yaml --rep_target away
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from ..models import DEFAULT_MODEL
from ..training.config import RepTuneConfig

__all__ = ["HELP", "TuneArguments", "main", "load_rows"]

HELP = "fine-tune a model so it behaves as if steered (token + cosine loss, LoRA by default)"

logger = logging.getLogger(__name__)

FINETUNE_MODES = ("lora", "layers", "full")


@dataclass
class TuneArguments:
    """What to tune and on which data; the training itself is set by :class:`RepTuneConfig`.

    Example:
        >>> tune, args = parse((TuneArguments, RepTuneConfig), ["--data", "train.jsonl"], "tune")
    """

    model: str = field(
        default=DEFAULT_MODEL,
        metadata={"help": "Model spec: embedded:<name>, a .gguf file, a local folder or a Hub id."},
    )
    data: str | None = field(
        default=None,
        metadata={"help": 'JSONL training rows {"prompt", "completion"[, "system"]}.'},
    )
    eval_data: str | None = field(
        default=None, metadata={"help": "JSONL evaluation rows (same format)."}
    )
    system: str | None = field(
        default=None, metadata={"help": "System prompt for rows that have none."}
    )
    dtype: str = field(
        default="float32",
        metadata={"help": "Weights dtype: float32, bfloat16, float16 or auto."},
    )
    trust_remote_code: bool = field(
        default=False, metadata={"help": "Allow model code from the model's repository."}
    )
    finetune: str = field(
        default="lora",
        metadata={
            "help": "'lora' (adapters), 'layers' (full fine-tuning of --train_layers, the "
            "published setting) or 'full' (every weight).",
            "choices": list(FINETUNE_MODES),
        },
    )
    lora_r: int = field(default=8, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=16, metadata={"help": "LoRA alpha."})
    lora_dropout: float = field(default=0.0, metadata={"help": "LoRA dropout."})
    lora_target_modules: str = field(
        default="q_proj,k_proj,v_proj,o_proj",
        metadata={"help": "Comma-separated module names, or 'all-linear'."},
    )
    lora_layers: list[int] | None = field(
        default=None,
        metadata={"help": "Put adapters only on these decoder blocks (default: all)."},
    )


def load_rows(path: str | Path, system: str | None = None) -> list[dict]:
    """Read ``{"prompt", "completion"}`` JSONL rows, with a clear error for a bad line.

    Example:
        >>> rows = load_rows("train.jsonl")
    """
    rows = []
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path} line {n}: not JSON ({err})") from err
        if (
            not isinstance(row, dict)
            or not isinstance(row.get("prompt"), str)
            or not isinstance(row.get("completion"), str)
        ):
            raise ValueError(f'{path} line {n}: expected {{"prompt": str, "completion": str}}')
        if system and not row.get("system"):
            row["system"] = system
        rows.append({k: row[k] for k in ("prompt", "completion", "system") if row.get(k)})
    if not rows:
        raise ValueError(f"{path} holds no rows")
    return rows


def _wrap_model(model, tune: TuneArguments, args: RepTuneConfig):
    if tune.finetune == "lora":
        if args.train_layers is not None:
            raise ValueError("--train_layers is for --finetune layers; use --lora_layers with LoRA")
        from peft import LoraConfig, get_peft_model

        targets = tune.lora_target_modules
        config = LoraConfig(
            r=tune.lora_r,
            lora_alpha=tune.lora_alpha,
            lora_dropout=tune.lora_dropout,
            target_modules=targets if targets == "all-linear" else targets.split(","),
            layers_to_transform=tune.lora_layers,
            task_type="CAUSAL_LM",
        )
        return get_peft_model(model, config)
    if tune.finetune == "layers" and args.train_layers is None:
        raise ValueError("--finetune layers needs --train_layers (published: 11 12 ... 17)")
    if tune.finetune == "full" and args.train_layers is not None:
        raise ValueError("--finetune full trains every weight; drop --train_layers")
    return model


def main(argv) -> int:
    from ..commands import parse
    from ..models import load_model
    from ..training.trainer import RepTuneTrainer
    from ..vectors import SteeringVectors

    tune, args = parse((TuneArguments, RepTuneConfig), argv, "reptune tune")
    if tune.data is None:
        raise ValueError('--data is required: a JSONL file of {"prompt", "completion"} rows')
    train_rows = load_rows(tune.data, tune.system)
    eval_rows = load_rows(tune.eval_data, tune.system) if tune.eval_data else None
    model, tokenizer = load_model(
        tune.model, dtype=tune.dtype, trust_remote_code=tune.trust_remote_code
    )
    vectors = None
    if args.vectors is not None:
        # Checked against the model before any weight is touched.
        vectors = SteeringVectors.load(args.vectors, model=model)
    model = _wrap_model(model, tune, args)
    trainer = RepTuneTrainer(
        model,
        args,
        vectors=vectors,
        train_dataset=train_rows,
        eval_dataset=eval_rows,
        processing_class=tokenizer,
    )
    trainer.train(resume_from_checkpoint=args.resume_from_checkpoint)
    trainer.save_model(args.output_dir)
    if eval_rows is not None:
        metrics = trainer.evaluate()
        trainer.save_metrics("eval", metrics)
    logger.info("saved the tuned model, vectors and reptune config to %s", args.output_dir)
    print(f"reptune tune: saved to {args.output_dir}")
    return 0
