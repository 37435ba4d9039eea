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

from ..training.config import RepTuneConfig
from ..workflow.args import ModelArguments

__all__ = ["HELP", "TuneArguments", "main", "load_rows"]

HELP = "fine-tune a model so it behaves as if steered (token + cosine loss, LoRA by default)"

logger = logging.getLogger(__name__)


@dataclass
class TuneArguments:
    """What to tune on; the model and its fine-tuning mode are :class:`ModelArguments`, the
    training itself :class:`RepTuneConfig`.

    Example:
        >>> tune, margs, args = parse((TuneArguments, ModelArguments, RepTuneConfig),
        ...                           ["--data", "train.jsonl"], "tune")
    """

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


def main(argv) -> int:
    from ..models import load_model
    from ..training.trainer import RepTuneTrainer
    from ..vectors import SteeringVectors
    from . import parse

    tune, margs, args = parse((TuneArguments, ModelArguments, RepTuneConfig), argv, "reptune tune")
    if tune.data is None:
        raise ValueError('--data is required: a JSONL file of {"prompt", "completion"} rows')
    # Everything checkable is checked before the model loads.
    train_rows = load_rows(tune.data, tune.system)
    eval_rows = load_rows(tune.eval_data, tune.system) if tune.eval_data else None
    # The prompt objective needs vectors only for its combined target (--steer_coefficient).
    prompt_alone = args.rep_target == "prompt" and args.steer_coefficient is None
    if (
        args.vectors is None
        and not prompt_alone
        and (args.rep_weight > 0 or args.rep_target == "steer")
    ):
        raise ValueError(
            "rep_weight > 0 needs steering vectors: pass --vectors FOLDER (from `reptune "
            "extract`), or --rep_weight 0 --lm_weight 1 for token-only tuning"
        )
    vectors = SteeringVectors.load(args.vectors) if args.vectors is not None else None
    peft_config = margs.peft_config(args)
    model, tokenizer = load_model(
        margs.model, dtype=margs.dtype, trust_remote_code=margs.trust_remote_code
    )
    if vectors is not None:
        vectors.check_compatible(model, allow_mismatch=args.allow_vector_mismatch)
    trainer = RepTuneTrainer(
        model,
        args,
        vectors=vectors,
        train_dataset=train_rows,
        eval_dataset=eval_rows,
        processing_class=tokenizer,
        peft_config=peft_config,
    )
    trainer.base_model_spec = margs.model
    trainer.train(resume_from_checkpoint=args.resume_from_checkpoint)
    trainer.save_model(args.output_dir)
    if eval_rows is not None:
        metrics = trainer.evaluate()
        trainer.save_metrics("eval", metrics)
    logger.info("saved the tuned model, vectors and reptune config to %s", args.output_dir)
    print(f"reptune tune: saved to {args.output_dir}")
    return 0
