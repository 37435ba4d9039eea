"""``reptune extract``: contrastive pairs -> steering vectors + layer diagnostics."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..workflow.args import ModelLoadArguments
from . import parse

HELP = "extract steering vectors (and layer diagnostics) from contrastive pairs"


@dataclass(kw_only=True)
class ExtractArguments(ModelLoadArguments):
    """Options of ``reptune extract``."""

    pairs: str = field(
        metadata={"help": "pairs file: JSONL (positive/negative), CAA A/B JSON, or claims CSV"}
    )
    output: str = field(
        metadata={"help": "folder for the vectors (with their diagnostics) and plots/"}
    )
    layers: list[int] | None = field(
        default=None, metadata={"help": "layer indices (output of block i); default: all"}
    )
    method: str = field(default="mean_diff", metadata={"help": "mean_diff, pca_diff or pca_center"})
    position: list[int] = field(
        default_factory=lambda: [-1],
        metadata={"help": "token offsets from the end of each text (-1 = last token)"},
    )
    claims_mode: str = field(
        default="persona_answer",
        metadata={"help": "for a claims table: persona_answer, answer or persona"},
    )
    filter_known: bool = field(
        default=False,
        metadata={"help": "for a claims table: keep only claims the model answers correctly"},
    )
    batch_size: int = field(default=8, metadata={"help": "pairs per forward batch"})
    plot_layer: int | None = field(
        default=None, metadata={"help": "layer of the PCA scatter plot (default: best layer)"}
    )


def _is_claims_file(p: Path) -> bool:
    return p.suffix == ".csv" or (p.suffix == ".jsonl" and '"statement"' in p.read_text()[:2000])


def load_pairs_file(
    path: str,
    tokenizer,
    claims_mode: str = "persona_answer",
    model=None,
    filter_known: bool = False,
):
    """Read pairs from JSONL, CAA A/B JSON or a claims CSV/JSONL, by content.

    With ``tokenizer=None`` (and no filtering) it only reads and checks the file, so a malformed
    file fails before any model is loaded.

    Example:
        >>> pairs = load_pairs_file("pairs.jsonl", tokenizer)
    """
    from ..behaviours.honesty import claims_to_pairs, filter_known_claims, load_claims
    from ..pairs import load_caa_pairs, load_jsonl_pairs

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"pairs file {path} does not exist")
    if _is_claims_file(p):
        claims = load_claims(p)
        if filter_known:
            claims = filter_known_claims(model, tokenizer, claims)
        return claims_to_pairs(claims, tokenizer, mode=claims_mode)
    if filter_known:
        raise ValueError(f"--filter_known applies to a claims table; {path} holds pairs")
    if p.suffix == ".jsonl":
        return load_jsonl_pairs(p)
    return load_caa_pairs(p, tokenizer)


def _check(args: ExtractArguments):
    """Every option and the pairs file, checked before the model loads; the position."""
    from ..extract import METHODS, check_text_positions
    from ..models import check_model_options
    from ..pairs import validate_pairs
    from . import check_at_least, check_output_folder

    if args.method not in METHODS:
        raise ValueError(f"unknown --method {args.method!r}: use one of {list(METHODS)}")
    modes = ("persona_answer", "answer", "persona")
    if args.claims_mode not in modes:
        raise ValueError(f"unknown --claims_mode {args.claims_mode!r}: use one of {list(modes)}")
    check_at_least("batch_size", args.batch_size)
    if not args.position:
        raise ValueError("--position is empty: give at least one offset (-1 = last token)")
    position = args.position[0] if len(args.position) == 1 else list(args.position)
    check_text_positions(position, [])
    if args.layers is not None and not args.layers:
        raise ValueError("--layers is empty: give layer indices or leave it out for all layers")
    if args.plot_layer is not None and args.layers and args.plot_layer not in args.layers:
        raise ValueError(f"--plot_layer {args.plot_layer} is not one of --layers {args.layers}")
    check_output_folder(args.output)
    # Read and check the file now (without a tokenizer); it is read again once the model's
    # tokenizer is there, for the chat template.
    pairs = load_pairs_file(args.pairs, None, args.claims_mode, filter_known=False)
    if args.filter_known and not _is_claims_file(Path(args.pairs)):
        raise ValueError(f"--filter_known applies to a claims table; {args.pairs} holds pairs")
    validate_pairs(pairs)
    if args.method == "pca_diff" and len(pairs) < 2:
        raise ValueError(f"--method pca_diff needs at least 2 pairs; {args.pairs} has 1")
    check_model_options(args.model, args.dtype)
    return position


def main(argv) -> int:
    (args,) = parse((ExtractArguments,), argv, "reptune extract")
    position = _check(args)
    from ..analysis.diagnostics import plot_layer_accuracy, plot_pca_scatter
    from ..extract import extract_vectors
    from ..io import atomic_folder
    from ..layers import check_layers, num_layers
    from ..models import load_model

    model, tok = load_model(args.model, dtype=args.dtype, trust_remote_code=args.trust_remote_code)
    if args.plot_layer is not None:  # before the extraction, which may take long
        check_layers([args.plot_layer], num_layers(model))
    pairs = load_pairs_file(args.pairs, tok, args.claims_mode, model, args.filter_known)
    vecs = extract_vectors(
        model, tok, pairs, args.layers, args.method, position, batch_size=args.batch_size
    )
    diag = vecs.metadata["diagnostics"]
    layer = (
        args.plot_layer
        if args.plot_layer is not None
        else max(diag, key=lambda k: (diag[k]["accuracy"], diag[k]["explained_variance"]))
    )
    out = Path(args.output)
    # The vectors and their plots form one folder: a crash leaves the previous one whole. The
    # plots live in plots/, replaced whole, so no plot of an earlier run stays behind.
    with atomic_folder(out) as tmp:
        vecs.write_files(tmp)
        plot_layer_accuracy(vecs, tmp / "plots" / "layer_accuracy.png")
        plot_pca_scatter(
            model, tok, pairs, layer, position, tmp / "plots" / f"pca_layer{layer}.png"
        )
    print(f"vectors for {len(vecs.layers)} layers written to {out}")
    for k in vecs.layers:
        print(
            f"  layer {k:3d}  accuracy {diag[k]['accuracy']:.3f}  "
            f"explained variance {diag[k]['explained_variance']:.3f}"
        )
    return 0
