"""``reptune extract``: contrastive pairs -> steering vectors + layer diagnostics."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..models import DEFAULT_MODEL
from . import parse

HELP = "extract steering vectors (and layer diagnostics) from contrastive pairs"


@dataclass
class ExtractArguments:
    """Options of ``reptune extract``."""

    pairs: str = field(
        metadata={"help": "pairs file: JSONL (positive/negative), CAA A/B JSON, or claims CSV"}
    )
    output: str = field(metadata={"help": "folder for the vectors, diagnostics and plots"})
    model: str = field(
        default=DEFAULT_MODEL,
        metadata={"help": "model spec: Hub id, local folder, .gguf file or embedded:<name>"},
    )
    dtype: str = field(default="float32", metadata={"help": "float32, bfloat16, float16 or auto"})
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


def load_pairs_file(
    path: str,
    tokenizer,
    claims_mode: str = "persona_answer",
    model=None,
    filter_known: bool = False,
):
    """Read pairs from JSONL, CAA A/B JSON or a claims CSV/JSONL, by content."""
    from ..behaviours.honesty import claims_to_pairs, filter_known_claims, load_claims
    from ..pairs import load_caa_pairs, load_jsonl_pairs

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"pairs file {path} does not exist")
    if p.suffix == ".csv" or (p.suffix == ".jsonl" and '"statement"' in p.read_text()[:2000]):
        claims = load_claims(p)
        if filter_known:
            claims = filter_known_claims(model, tokenizer, claims)
        return claims_to_pairs(claims, tokenizer, mode=claims_mode)
    if p.suffix == ".jsonl":
        return load_jsonl_pairs(p)
    return load_caa_pairs(p, tokenizer)


def main(argv) -> int:
    (args,) = parse((ExtractArguments,), argv, "reptune extract")
    from ..diagnostics import plot_layer_accuracy, plot_pca_scatter
    from ..extract import extract_vectors
    from ..models import load_model

    if not Path(args.pairs).is_file():  # before loading the model
        raise FileNotFoundError(f"pairs file {args.pairs} does not exist")
    model, tok = load_model(args.model, dtype=args.dtype)
    pairs = load_pairs_file(args.pairs, tok, args.claims_mode, model, args.filter_known)
    position = args.position[0] if len(args.position) == 1 else args.position
    vecs = extract_vectors(
        model, tok, pairs, args.layers, args.method, position, batch_size=args.batch_size
    )
    out = Path(args.output)
    vecs.save(out)
    plot_layer_accuracy(vecs, out / "layer_accuracy.png")
    diag = vecs.metadata["diagnostics"]
    layer = (
        args.plot_layer
        if args.plot_layer is not None
        else max(diag, key=lambda k: (diag[k]["accuracy"], diag[k]["explained_variance"]))
    )
    plot_pca_scatter(model, tok, pairs, layer, position, out / f"pca_layer{layer}.png")
    print(f"vectors for {len(vecs.layers)} layers written to {out}")
    for k in vecs.layers:
        print(
            f"  layer {k:3d}  accuracy {diag[k]['accuracy']:.3f}  "
            f"explained variance {diag[k]['explained_variance']:.3f}"
        )
    return 0
