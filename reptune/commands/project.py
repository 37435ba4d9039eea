"""``reptune project``: every layer x token projection onto the vectors during generation.

Writes ``projections.safetensors`` + ``projections.json``, ``tables/`` (long-format values and
per-layer means, CSV + JSON) and ``plots/prompt<i>.png`` heatmaps into ``--output``; with
``--pca_pairs``, also the PCA view of ``--pca_layer`` (components, top-loading tokens, a plot).

Example:
    $ reptune project --vectors runs/v --prompt "Describe your morning." --layers 6 10 14 \\
        --steer_layers 10 --coefficient 0.15 --output runs/v/projections
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from ..io import exists_as_file
from ..workflow.args import TunedModelArguments
from . import allow_vector_mismatch_field, coefficient_unit_field, parse

__all__ = ["HELP", "ProjectArguments", "main"]

HELP = "record layer x token projections onto vectors during generation (+ the PCA view)"


@dataclass(kw_only=True)
class ProjectArguments(TunedModelArguments):
    """Options of ``reptune project``."""

    vectors: str = field(metadata={"help": "folder written by `reptune extract`"})
    output: str = field(metadata={"help": "folder for the projections, tables/ and plots/"})
    prompt: list[str] = field(default_factory=list, metadata={"help": "one or more prompts"})
    prompts_file: str | None = field(
        default=None,
        metadata={"help": "more prompts: .txt (one per line) or JSON/JSONL/CSV with 'prompt'"},
    )
    chat: bool = field(
        default=True, metadata={"help": "format each prompt as a user turn of the chat template"}
    )
    layers: list[int] | None = field(
        default=None, metadata={"help": "layers to record (default: every layer of --vectors)"}
    )
    steer_layers: list[int] | None = field(
        default=None, metadata={"help": "steer at these layers while generating (default: none)"}
    )
    coefficient: float = field(default=0.0, metadata={"help": "steering coefficient"})
    coefficient_unit: str = coefficient_unit_field()
    positions: str = field(default="all", metadata={"help": "steer at: all, prompt or generated"})
    max_new_tokens: int = field(default=30, metadata={"help": "tokens to generate"})
    use_cache: bool = field(default=True, metadata={"help": "generate with the KV cache"})
    batch_size: int = field(default=8, metadata={"help": "prompts per generate batch"})
    kind: str = field(default="projection", metadata={"help": "heatmap of: projection or cosine"})
    prompt_tokens: int | None = field(
        default=None, metadata={"help": "show only this many prompt tokens in the heatmaps"}
    )
    pca_pairs: str | None = field(
        default=None, metadata={"help": "pairs file for the PCA view (as `reptune extract`)"}
    )
    pca_layer: int | None = field(
        default=None, metadata={"help": "layer of the PCA view (default: first recorded layer)"}
    )
    pca_texts: list[str] = field(
        default_factory=list,
        metadata={"help": "example texts for the PCA token loadings (default: 2 pairs' texts)"},
    )
    allow_vector_mismatch: bool = allow_vector_mismatch_field()


def _read_prompts(args: ProjectArguments) -> list[str]:
    prompts = list(args.prompt)
    if args.prompts_file:
        path = Path(args.prompts_file)
        if not path.is_file():
            raise FileNotFoundError(f"prompts file {path} does not exist")
        if path.suffix.lower() == ".txt":
            prompts += [line for line in path.read_text(encoding="utf-8").splitlines() if line]
        else:
            from ..io import read_records

            rows = read_records(path)
            missing = [i for i, row in enumerate(rows) if not row.get("prompt")]
            if missing:
                raise ValueError(f"{path}: rows {missing[:5]} have no 'prompt' field")
            prompts += [row["prompt"] for row in rows]
    if not prompts:
        raise ValueError("no prompts: give --prompt TEXT ... and/or --prompts_file FILE")
    return prompts


def _check(args: ProjectArguments, vecs) -> None:
    """Everything that can be checked before the model is loaded."""
    from ..analysis.projections import KINDS
    from ..hooks import validate_positions

    if args.kind not in KINDS:
        raise ValueError(f"--kind must be one of {list(KINDS)}, got {args.kind!r}")
    if args.max_new_tokens < 1 or args.batch_size < 1:
        raise ValueError("--max_new_tokens and --batch_size must be positive")
    validate_positions(args.positions)
    recorded = args.layers if args.layers is not None else vecs.layers
    missing = sorted(set(recorded) - set(vecs.layers))
    if missing:
        raise ValueError(f"no vector for --layers {missing}; {args.vectors} has {vecs.layers}")
    if not math.isfinite(args.coefficient):
        raise ValueError("--coefficient must be a finite number")
    if args.steer_layers:
        missing = sorted(set(args.steer_layers) - set(vecs.layers))
        if missing:
            raise ValueError(f"no vector for --steer_layers {missing}; available {vecs.layers}")
        vecs.check_unit(args.coefficient_unit, args.steer_layers)
    elif args.coefficient != 0:
        raise ValueError("--coefficient needs --steer_layers (the layers to steer at)")
    if args.adapter is not None:
        from .loading import is_adapter_folder

        if not is_adapter_folder(args.adapter):
            raise FileNotFoundError(f"{args.adapter} is not a PEFT adapter folder")
    if args.pca_pairs is not None and not Path(args.pca_pairs).is_file():
        raise FileNotFoundError(f"pairs file {args.pca_pairs} does not exist")
    n_layers = vecs.metadata.get("num_layers")
    if args.pca_layer is not None and n_layers and not 0 <= args.pca_layer < int(n_layers):
        raise ValueError(f"--pca_layer {args.pca_layer} is out of range: the model has {n_layers}")
    if exists_as_file(args.output):
        raise ValueError(f"--output {args.output} exists and is not a folder")


def main(argv) -> int:
    (args,) = parse((ProjectArguments,), argv, "reptune project")
    from ..vectors import SteeringVectors

    prompts = _read_prompts(args)
    vecs = SteeringVectors.load(args.vectors)  # small files: checked before the model loads
    _check(args, vecs)

    from ..analysis.projection_plots import plot_projections
    from ..analysis.projections import record_projections
    from ..pairs import format_chat
    from ..reporting.tables import write_table
    from ..steering import SteeredModel
    from .loading import load_for_evaluation

    model, tok = load_for_evaluation(args.model, args.adapter, args.dtype, args.trust_remote_code)
    vecs.check_compatible(model, allow_mismatch=args.allow_vector_mismatch)
    if args.chat:
        prompts = [format_chat(tok, p) for p in prompts]
    runner = model
    if args.steer_layers:
        runner = SteeredModel(
            model,
            vecs,
            layers=args.steer_layers,
            coefficient=args.coefficient,
            positions=args.positions,
            coefficient_unit=args.coefficient_unit,
        )
    res = record_projections(
        runner,
        tok,
        prompts,
        vecs,
        args.layers,
        max_new_tokens=args.max_new_tokens,
        use_cache=args.use_cache,
        batch_size=args.batch_size,
    )
    out = Path(args.output)
    res.save(out)
    write_table(res.rows(), out / "tables" / "projections")
    write_table(res.summary_rows(), out / "tables" / "projection_summary")
    for i in range(len(res)):
        plot_projections(
            res, out / "plots" / f"prompt{i}.png", i, args.kind, prompt_tokens=args.prompt_tokens
        )
        print(f"--- prompt {i}: {res.completion(i, tok).strip()!r}")
    if args.pca_pairs:
        from ..analysis.token_pca import plot_token_pca, token_pca
        from .extract import load_pairs_file

        layer = args.pca_layer if args.pca_layer is not None else res.layers[0]
        pairs = load_pairs_file(args.pca_pairs, tok)
        view = token_pca(model, tok, pairs, layer, args.pca_texts or None)
        write_table(view.component_rows(), out / "tables" / f"pca_components_layer{layer}")
        tops = [
            {"component": k + 1, **r}
            for k in range(view.n_components)
            for r in view.top_tokens(k, 10)
        ]
        write_table(tops, out / "tables" / f"pca_top_tokens_layer{layer}")
        write_table(view.rows(), out / "tables" / f"pca_tokens_layer{layer}")
        plot_token_pca(view, out / "plots" / f"pca_tokens_layer{layer}.png")
    print(f"projections of {len(res)} prompts at layers {res.layers} written to {out}")
    return 0
