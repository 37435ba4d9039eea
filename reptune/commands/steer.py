"""``reptune steer``: generate text with a steering vector applied."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..workflow.args import ModelLoadArguments
from . import allow_vector_mismatch_field, coefficient_unit_field, parse

HELP = "generate text with a steering vector at one or more coefficients"


@dataclass(kw_only=True)
class SteerArguments(ModelLoadArguments):
    """Options of ``reptune steer``."""

    vectors: str = field(metadata={"help": "folder written by `reptune extract`"})
    prompt: list[str] = field(metadata={"help": "one or more user prompts"})
    layers: list[int] | None = field(
        default=None, metadata={"help": "layers to steer (default: all layers in the vectors)"}
    )
    coefficients: list[float] = field(
        default_factory=lambda: [0.0, 0.1], metadata={"help": "coefficients to compare"}
    )
    coefficient_unit: str = coefficient_unit_field()
    mode: str = field(default="add", metadata={"help": "add or ablate"})
    positions: str = field(default="all", metadata={"help": "all, prompt or generated"})
    max_new_tokens: int = field(default=40, metadata={"help": "tokens to generate"})
    allow_vector_mismatch: bool = allow_vector_mismatch_field()


def _check(args: SteerArguments):
    """Every option and the vectors, checked before the model loads; the vectors."""
    from ..models import check_model_options
    from ..positions import validate_positions
    from ..steering import MODES
    from . import check_at_least, check_finite, load_vectors_option

    if args.mode not in MODES:
        raise ValueError(f"unknown --mode {args.mode!r}: use one of {list(MODES)}")
    validate_positions(args.positions)
    if not args.prompt or not all(p.strip() for p in args.prompt):
        raise ValueError("--prompt is empty: give one or more non-empty prompts")
    if not args.coefficients:
        raise ValueError("--coefficients is empty: give the coefficients to compare")
    check_finite("coefficients", args.coefficients)
    check_at_least("max_new_tokens", args.max_new_tokens)
    vecs = load_vectors_option(
        args.vectors, args.layers, mode=args.mode, coefficient_unit=args.coefficient_unit
    )
    check_model_options(args.model, args.dtype)
    return vecs


def main(argv) -> int:
    (args,) = parse((SteerArguments,), argv, "reptune steer")
    vecs = _check(args)
    import torch

    from ..models import load_model
    from ..pairs import format_chat
    from ..steering import SteeredModel
    from ..tokenization import encode_batch

    model, tok = load_model(args.model, dtype=args.dtype, trust_remote_code=args.trust_remote_code)
    vecs.check_compatible(model, allow_mismatch=args.allow_vector_mismatch)
    steered = SteeredModel(
        model,
        vecs,
        layers=args.layers,
        mode=args.mode,
        positions=args.positions,
        coefficient_unit=args.coefficient_unit,
    )
    texts = [format_chat(tok, p) for p in args.prompt]
    rows = [(t, c) for t in texts for c in args.coefficients]
    batch = encode_batch(tok, [t for t, _ in rows])
    coef = torch.tensor([c for _, c in rows])
    out = steered.generate(
        **batch, coefficient=coef, max_new_tokens=args.max_new_tokens, do_sample=False
    )
    new = out[:, batch["input_ids"].shape[1] :]
    labels = [(p, c) for p in args.prompt for c in args.coefficients]
    for (prompt, c), tokens in zip(labels, new):
        print(f"--- prompt {prompt!r}  coefficient {c:+g}")
        print(tok.decode(tokens, skip_special_tokens=True).strip())
    return 0
