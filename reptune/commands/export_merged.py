"""``reptune export-merged SOURCE --output FOLDER``: the tuned model as plain transformers weights.

``SOURCE`` is an adapter folder, a run folder (its ``adapter/``) or a selected-layer fine-tuning
output. The output loads with ``AutoModelForCausalLM.from_pretrained`` without reptune, and
serves in vLLM, TGI or (after ``convert_hf_to_gguf.py``) llama.cpp at the base model's speed.

Example:
    $ reptune export-merged runs/honesty --output runs/honesty/merged
    $ reptune export-merged runs/tuned --output merged --base_model HuggingFaceTB/SmolLM2-135M
"""

from __future__ import annotations

from dataclasses import dataclass, field

from . import parse
from .card import positional_as_option

__all__ = ["HELP", "ExportMergedArguments", "main"]

HELP = "merge a tuned adapter into the weights: a plain transformers model folder"


@dataclass
class ExportMergedArguments:
    """Options of ``reptune export-merged``."""

    source: str | None = field(
        default=None,
        metadata={
            "help": "Adapter, run or fine-tuned model folder. May also be given as the first "
            "argument: `reptune export-merged SOURCE --output FOLDER`."
        },
    )
    output: str | None = field(
        default=None, metadata={"help": "Folder to write (replaced whole, atomically)."}
    )
    base_model: str | None = field(
        default=None,
        metadata={
            "help": "Base model of the adapter (Hub id, folder, .gguf or embedded:<name>); "
            "the adapter's base_model_name_or_path when omitted."
        },
    )
    dtype: str = field(
        default="auto",
        metadata={
            "help": "Weights dtype of the merge and the output: auto (the base checkpoint's), "
            "float32, bfloat16 or float16.",
            "choices": ["auto", "float32", "bfloat16", "float16"],
        },
    )
    trust_remote_code: bool = field(
        default=False, metadata={"help": "Allow model code from the base model's repository."}
    )


def main(argv: list[str]) -> int:
    from ..publish.merged import export_merged

    (args,) = parse(
        (ExportMergedArguments,),
        positional_as_option(argv, "--source"),
        "reptune export-merged SOURCE --output FOLDER",
    )
    if not args.source:
        raise ValueError("no source given: use `reptune export-merged SOURCE --output FOLDER`")
    if not args.output:
        raise ValueError("--output is required: the folder to write the merged model to")
    path = export_merged(
        args.source,
        args.output,
        base_model=args.base_model,
        dtype=args.dtype,
        trust_remote_code=args.trust_remote_code,
    )
    print(path)
    return 0
