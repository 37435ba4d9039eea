"""``reptune sweep``: layers x coefficients steering sweeps, robustness and trade-off curves.

Three studies share the options:

- default: steer ``--model`` at each of ``--layers`` with each of ``--coefficients`` (plus
  ``--ablate``) and score ``--data``;
- ``--compare NAME=PATH ...``: robustness; the base model and each tuned model (PEFT adapter
  folder or full model folder) are steered with negative multiples of ``--coefficients``;
- ``--tradeoff``: behaviour (``--data`` A/B items, or ``--behaviour`` prompts scored by keyword
  refusal) and helpfulness (``--helpfulness`` A-D items) against the coefficient, with fits.

Writes ``report.md``, ``report.json``, ``tables/`` and ``plots/`` into ``--output``.

Example:
    $ reptune sweep --vectors runs/honesty/vectors --data facts.csv --layers 12 14 16 \\
        --coefficients -8 -4 0 4 8 --ablate --output runs/honesty/sweep
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from ..workflow.args import TunedModelArguments
from . import allow_vector_mismatch_field, coefficient_unit_field, limit_options, parse

__all__ = ["HELP", "SweepArguments", "main"]

HELP = "steering sweeps over layers x coefficients; robustness and trade-off studies"


#: Items per set when ``--limit`` is not given (a cap: every item of a smaller set).
DEFAULT_LIMIT = 50
DEFAULT_HELPFULNESS_LIMIT = 96


@dataclass(kw_only=True)
class SweepArguments(TunedModelArguments):
    """Options of ``reptune sweep``."""

    vectors: str = field(metadata={"help": "steering vectors folder (from `reptune extract`)"})
    output: str = field(metadata={"help": "folder for report.md, report.json, tables/, plots/"})
    data: list[str] = field(
        default_factory=list, metadata={"help": "A/B item sources (files or HF dataset names)"}
    )
    schema: str = field(default="auto", metadata={"help": "row schema of --data (auto-detected)"})
    dataset_config: str | None = field(default=None, metadata={"help": "HF dataset config"})
    split: str = field(default="validation", metadata={"help": "HF dataset split"})
    limit: int | None = field(
        default=None,
        metadata={
            "help": "items per set: exactly this many (refused if a set holds fewer; 0 = all); "
            f"default: up to {DEFAULT_LIMIT}"
        },
    )
    n_choices: int = field(default=2, metadata={"help": "options per TruthfulQA question"})
    seed: int = field(default=0, metadata={"help": "seed for sampling and shuffling"})
    layers: list[int] | None = field(
        default=None, metadata={"help": "layers to sweep (default: all layers of --vectors)"}
    )
    coefficients: list[float] = field(
        default_factory=lambda: [-0.2, -0.1, 0.0, 0.1, 0.2],
        metadata={"help": "steering coefficients, in --coefficient_unit"},
    )
    coefficient_unit: str = coefficient_unit_field()
    normalize: bool = field(default=False, metadata={"help": "unit-normalise the vectors first"})
    ablate: bool = field(default=False, metadata={"help": "add the ablation condition"})
    scorer: str = field(default="letter", metadata={"help": "letter or generate"})
    conditions: list[str] = field(
        default_factory=lambda: ["none"],
        metadata={"help": "system personas: none, honest, dishonest"},
    )
    positions: str = field(default="all", metadata={"help": "all, prompt or generated"})
    max_new_tokens: int = field(default=30, metadata={"help": "tokens generated per answer"})
    batch_size: int = field(default=16, metadata={"help": "rows per forward pass"})
    compare: list[str] = field(
        default_factory=list,
        metadata={"help": "robustness: NAME=PATH tuned models (adapter or model folder)"},
    )
    tradeoff: bool = field(default=False, metadata={"help": "run the trade-off study"})
    helpfulness: str | None = field(
        default=None, metadata={"help": "trade-off: A-D multiple-choice items (MMLU-style)"}
    )
    helpfulness_limit: int | None = field(
        default=None,
        metadata={
            "help": "trade-off: helpfulness questions, exactly this many (0 = all); default: up "
            f"to {DEFAULT_HELPFULNESS_LIMIT} (as published)"
        },
    )
    behaviour: str | None = field(
        default=None,
        metadata={
            "help": "trade-off: prompts (.txt one per line, or JSON list) whose sampled "
            "answers are scored by keyword refusal; default: --data letter scores"
        },
    )
    p0: float = field(default=1.0, metadata={"help": "trade-off: fixed p0 of the full fit"})
    title: str | None = field(default=None, metadata={"help": "report title"})
    allow_vector_mismatch: bool = allow_vector_mismatch_field()


def _check(args: SweepArguments) -> None:
    from ..behaviours import resolve_conditions
    from ..evaluation.ab.scoring import SCORERS
    from ..positions import validate_positions
    from . import check_at_least, check_finite, check_output_folder

    if args.scorer not in SCORERS:
        raise ValueError(f"unknown scorer {args.scorer!r}: use {list(SCORERS)}")
    resolve_conditions(args.conditions)
    validate_positions(args.positions)
    if not args.coefficients and not args.ablate:
        raise ValueError("--coefficients is empty: give the coefficients to sweep (or --ablate)")
    check_finite("coefficients", args.coefficients)
    check_finite("p0", args.p0)
    for name in ("batch_size", "max_new_tokens", "n_choices"):
        check_at_least(name, getattr(args, name))
    for name in ("limit", "helpfulness_limit"):
        check_at_least(name, getattr(args, name), 0)
    check_output_folder(args.output)
    if args.tradeoff:
        if args.compare:
            raise ValueError("--tradeoff and --compare are separate studies: run them one by one")
        if not args.helpfulness:
            raise ValueError("--tradeoff needs --helpfulness (A-D multiple-choice items)")
        if not (args.data or args.behaviour):
            raise ValueError("--tradeoff needs --data (A/B behaviour items) or --behaviour")
    elif not args.data:
        raise ValueError("give --data (A/B items to score)")


def _read_prompts(path: str) -> list[str]:
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    if file.suffix.lower() == ".json":
        prompts = json.loads(file.read_text(encoding="utf-8"))
        if not isinstance(prompts, list) or not all(isinstance(p, str) for p in prompts):
            raise ValueError(f"{path} must hold a JSON list of prompt strings")
        return prompts
    return [line.strip() for line in file.read_text(encoding="utf-8").splitlines() if line.strip()]


def main(argv) -> int:
    (args,) = parse((SweepArguments,), argv, "reptune sweep")
    _check(args)
    from ..behaviours import resolve_conditions
    from ..evaluation.ab.datasets import load_items
    from ..evaluation.studies.sweep import check_sweep
    from ..models import check_model_options
    from ..reporting.report import Report
    from . import load_vectors_option
    from .loading import (
        check_model_folder,
        is_adapter_folder,
        load_for_evaluation,
        parse_named_specs,
    )

    compare = parse_named_specs(args.compare)
    for _, path in compare:
        check_model_folder(path)
    load = dict(
        schema=args.schema,
        n_choices=args.n_choices,
        seed=args.seed,
        dataset_config=args.dataset_config,
        split=args.split,
    )
    items = []
    for src in args.data:
        items.extend(load_items(src, **limit_options(args.limit, DEFAULT_LIMIT), **load))
    helpful = limit_options(args.helpfulness_limit, DEFAULT_HELPFULNESS_LIMIT)
    helpfulness = load_items(args.helpfulness, **helpful, **load) if args.tradeoff else None
    prompts = _read_prompts(args.behaviour) if args.tradeoff and args.behaviour else None
    vecs = load_vectors_option(
        args.vectors,
        args.layers,
        mode="add" if args.coefficients else "ablate",
        coefficient_unit=args.coefficient_unit,
        normalize=args.normalize,
    )
    depth = vecs.metadata.get("num_layers")
    layers = [x + int(depth) if x < 0 else x for x in args.layers] if args.layers else vecs.layers
    check_sweep(vecs, layers, args.coefficients, args.ablate, args.coefficient_unit)
    if args.adapter is not None and not is_adapter_folder(args.adapter):
        check_model_folder(args.adapter, adapter=True)
    check_model_options(args.model, args.dtype)

    model, tok = load_for_evaluation(args.model, args.adapter, args.dtype, args.trust_remote_code)
    vecs.check_compatible(model, allow_mismatch=args.allow_vector_mismatch)
    out = Path(args.output)
    report = Report(
        args.title or "reptune steering sweep",
        model={
            "spec": args.model,
            "adapter": args.adapter,
            "vectors": args.vectors,
            "normalized": args.normalize,
        },
        dataset=", ".join(args.data) or None,
    )
    common = dict(
        scorer=args.scorer,
        conditions=resolve_conditions(args.conditions),
        positions=args.positions,
        coefficient_unit=args.coefficient_unit,
        batch_size=args.batch_size,
        max_new_tokens=args.max_new_tokens,
    )

    if args.tradeoff:
        _tradeoff(args, model, tok, vecs, layers, items, helpfulness, prompts, report, out)
    elif compare:
        from ..evaluation.studies.robustness import negative_multiples, robustness_sweep
        from ..reporting.plots import plot_robustness

        def loader(path):
            # An adapter goes onto a fresh copy of --model; a full folder is loaded as it is.
            adapter = is_adapter_folder(path)
            return lambda: load_for_evaluation(
                args.model if adapter else path,
                path if adapter else None,
                args.dtype,
                args.trust_remote_code,
            )[0]

        entries = [("base", model)] + [(name, loader(path)) for name, path in compare]
        result = robustness_sweep(
            entries, tok, vecs, items, layers, args.coefficients, ablate=args.ablate, **common
        )
        sec = report.section(
            "Robustness",
            "Each model steered with negative multiples "
            f"{negative_multiples(args.coefficients)} of the vector (against the behaviour); "
            "target rate with Wilson 95% intervals. A robust model keeps its target rate.",
        )
        sec.add_table("robustness", result.rows, "Robustness to steering")
        sec.add_plot(
            plot_robustness(result.rows, report.plot_path("robustness.png")),
            "Target rate against the coefficient, per model and layer",
        )
    else:
        from ..evaluation.studies.sweep import steering_sweep
        from ..reporting.plots import plot_sweep

        result = steering_sweep(
            model, tok, vecs, items, layers, args.coefficients, ablate=args.ablate, **common
        )
        sec = report.section(
            "Steering sweep",
            f"{len(items)} items scored with the {args.scorer} scorer at each layer and "
            "coefficient (dashed: the direction ablated). Target rate with Wilson 95% intervals; "
            "behaviour = mean of +1 (target) / -1 (other) / 0 (no answer).",
        )
        sec.add_table("sweep", result.rows, "Sweep")
        sec.add_plot(
            plot_sweep(result.rows, report.plot_path("sweep_target_rate.png")),
            "Target rate against the coefficient",
        )
        sec.add_plot(
            plot_sweep(result.rows, report.plot_path("sweep_behaviour.png"), metric="behaviour"),
            "Behaviour expectation",
        )
        if args.scorer == "letter":
            sec.add_plot(
                plot_sweep(
                    result.rows,
                    report.plot_path("sweep_target_prob.png"),
                    metric="mean_target_prob",
                ),
                "Mean P(target letter)",
            )
    paths = report.write(out)
    print(f"report: {paths['markdown']}")
    return 0


def _tradeoff(args, model, tok, vecs, layers, items, helpfulness, prompts, report, out) -> None:
    from ..behaviours.refusal import keyword_refusal_score
    from ..evaluation.studies.tradeoff import tradeoff_study
    from ..reporting.plots import plot_tradeoff

    sec = report.section(
        "Alignment/helpfulness trade-off",
        "Behaviour expectation (mean of +1 aligned / -1 misaligned) fitted with tanh(a*c + b); "
        "probability of the correct letter fitted with p0 / (1 + a + a*(b^2/2)*c^2) over the "
        "full vocabulary (p0 fixed) and 0.5 / (1 + a + a*(b^2/2)*c^2) + 0.25 restricted to the "
        "choices. Least-squares fits; standard errors from the covariance.",
    )
    rows, fit_rows = [], []
    for layer in layers:
        res = tradeoff_study(
            model,
            tok,
            vecs,
            layer,
            args.coefficients,
            helpfulness_items=helpfulness,
            behaviour_items=None if prompts else items,
            behaviour_prompts=prompts,
            behaviour_scorer=keyword_refusal_score if prompts else None,
            positions=args.positions,
            coefficient_unit=args.coefficient_unit,
            batch_size=args.batch_size,
            seed=args.seed,
            p0=args.p0,
        )
        rows.extend(res.rows)
        fit_rows.extend(res.fit_rows())
        sec.add_plot(
            plot_tradeoff(
                res.rows,
                res.fits,
                report.plot_path(f"tradeoff_{layer}.png"),
                title=f"layer {layer}",
            ),
            f"Trade-off at layer {layer}",
        )
        for name, fit in res.fits.items():
            if fit is not None:
                report.add_metric(f"{name}_r2/layer{layer}", fit.r2, n=fit.n)
    sec.add_table("tradeoff", rows, "Behaviour and helpfulness by coefficient")
    sec.add_table("tradeoff_fits", fit_rows, "Fitted parameters (stderr) and R²")
