"""``reptune eval``: honesty/A-B rates, perplexity and benchmarks of one (steered or tuned) model.

Writes ``report.md``, ``report.json``, ``tables/`` and ``plots/`` into ``--output``.

Example:
    $ reptune eval --data ../shared/data/repe/facts_true_false.csv --limit 200 \\
        --adapter runs/honesty/adapter --perplexity wikitext --perplexity_config \\
        wikitext-2-raw-v1 --output runs/honesty/report
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path

from ..workflow.args import TunedModelArguments
from . import allow_vector_mismatch_field, coefficient_unit_field, limit_options, parse

__all__ = ["HELP", "EvalArguments", "main"]

HELP = "evaluate a model: A/B honesty rates, perplexity, lm-eval tasks -> report"


#: Items per set when ``--limit`` is not given (a cap: every item of a smaller set).
DEFAULT_LIMIT = 200


@dataclass(kw_only=True)
class EvalArguments(TunedModelArguments):
    """Options of ``reptune eval``."""

    output: str = field(metadata={"help": "folder for report.md, report.json, tables/, plots/"})
    vectors: str | None = field(
        default=None, metadata={"help": "steering vectors folder: evaluate the model steered"}
    )
    layers: list[int] | None = field(
        default=None, metadata={"help": "layers to steer (default: all layers of --vectors)"}
    )
    coefficient: float = field(
        default=0.1, metadata={"help": "steering coefficient, in --coefficient_unit"}
    )
    coefficient_unit: str = coefficient_unit_field()
    mode: str = field(default="add", metadata={"help": "add or ablate"})
    positions: str = field(default="all", metadata={"help": "all, prompt or generated"})
    data: list[str] = field(
        default_factory=list,
        metadata={
            "help": "A/B item sources: claims CSV, CAA JSON, TruthfulQA CSV/MC JSON, "
            "MMLU-style JSON(L), or HuggingFace dataset names"
        },
    )
    schema: str = field(default="auto", metadata={"help": "row schema of --data (auto-detected)"})
    dataset_config: str | None = field(default=None, metadata={"help": "HF dataset config"})
    split: str = field(default="validation", metadata={"help": "HF dataset split"})
    limit: int | None = field(
        default=None,
        metadata={
            "help": "items per set, seeded and balanced over answers: exactly this many "
            f"(refused if a set holds fewer; 0 = all); default: up to {DEFAULT_LIMIT}"
        },
    )
    n_choices: int = field(default=2, metadata={"help": "options per TruthfulQA question"})
    seed: int = field(default=0, metadata={"help": "seed for sampling and option shuffling"})
    scorer: list[str] = field(
        default_factory=lambda: ["generate"],
        metadata={"help": "generate (greedy, parsed; the published protocol) and/or letter"},
    )
    conditions: list[str] = field(
        default_factory=lambda: ["honest", "dishonest"],
        metadata={"help": "system personas: honest, dishonest, none"},
    )
    max_new_tokens: int = field(default=30, metadata={"help": "tokens generated per answer"})
    batch_size: int = field(default=16, metadata={"help": "prompts per forward pass"})
    perplexity: str | None = field(
        default=None, metadata={"help": "text file or HF dataset name for perplexity"}
    )
    perplexity_config: str | None = field(
        default=None, metadata={"help": "HF config, e.g. wikitext-2-raw-v1"}
    )
    perplexity_split: str = field(default="test", metadata={"help": "HF split for perplexity"})
    window: int = field(default=1024, metadata={"help": "perplexity window (tokens)"})
    stride: int = field(default=512, metadata={"help": "perplexity stride (tokens)"})
    max_tokens: int | None = field(
        default=None, metadata={"help": "score only the first N tokens of the text"}
    )
    reference_model: str | None = field(
        default=None,
        metadata={
            "help": "model to compare perplexity with (default: the same model without "
            "adapter and steering, when either is used)"
        },
    )
    bootstrap_resamples: int = field(default=9999, metadata={"help": "paired bootstrap resamples"})
    tasks: list[str] = field(
        default_factory=list, metadata={"help": "lm-eval task names (needs lm_eval; downloads)"}
    )
    tasks_limit: int | None = field(default=None, metadata={"help": "examples per lm-eval task"})
    title: str | None = field(default=None, metadata={"help": "report title"})
    allow_vector_mismatch: bool = allow_vector_mismatch_field()


def _check(args: EvalArguments) -> None:
    from ..behaviours import NAMED_CONDITIONS
    from ..evaluation.ab.scoring import SCORERS

    if not (args.data or args.perplexity or args.tasks):
        raise ValueError("nothing to evaluate: give --data, --perplexity and/or --tasks")
    bad = [s for s in args.scorer if s not in SCORERS]
    if bad:
        raise ValueError(f"unknown scorer(s) {bad}: use {list(SCORERS)}")
    bad = [c for c in args.conditions if c not in NAMED_CONDITIONS]
    if bad:
        raise ValueError(f"unknown condition(s) {bad}: use {sorted(NAMED_CONDITIONS)}")
    if args.mode not in ("add", "ablate"):
        raise ValueError(f"--mode must be add or ablate, got {args.mode!r}")
    from ..positions import validate_positions
    from . import check_at_least, check_finite, check_output_folder

    validate_positions(args.positions)
    check_finite("coefficient", args.coefficient)
    for name in ("batch_size", "max_new_tokens", "n_choices", "bootstrap_resamples"):
        check_at_least(name, getattr(args, name))
    for name in ("limit", "tasks_limit", "max_tokens"):
        check_at_least(name, getattr(args, name), 0)
    if args.perplexity:
        check_at_least("window", args.window, 2)
        check_at_least("stride", args.stride)
        if args.stride > args.window:
            raise ValueError(f"--stride {args.stride} is larger than --window {args.window}")
    if args.vectors is None and (args.layers or args.mode == "ablate"):
        raise ValueError("--layers and --mode steer with --vectors: give --vectors too")
    check_output_folder(args.output)
    if args.tasks:
        from ..evaluation.lm.capabilities import require_lm_eval

        require_lm_eval()


def set_name(source: str) -> str:
    """A short name for a data source: the file stem, or the dataset name."""
    path = Path(source)
    return path.stem if path.suffix else source


def main(argv) -> int:
    (args,) = parse((EvalArguments,), argv, "reptune eval")
    _check(args)
    from ..behaviours.honesty import evaluate_honesty
    from ..evaluation.ab.datasets import load_items
    from ..evaluation.lm.perplexity import load_text
    from ..models import check_model_options
    from ..reporting.plots import plot_rates
    from ..reporting.report import Report
    from . import load_vectors_option
    from .loading import load_for_evaluation

    # Data and vectors first: a wrong path should fail before a model is loaded.
    sets = {
        set_name(src): load_items(
            src,
            args.schema,
            n_choices=args.n_choices,
            seed=args.seed,
            **limit_options(args.limit, DEFAULT_LIMIT),
            dataset_config=args.dataset_config,
            split=args.split,
        )
        for src in args.data
    }
    text = None
    if args.perplexity:
        text = load_text(
            args.perplexity, dataset_config=args.perplexity_config, split=args.perplexity_split
        )
    vecs = None
    if args.vectors:
        vecs = load_vectors_option(
            args.vectors, args.layers, mode=args.mode, coefficient_unit=args.coefficient_unit
        )
    if args.reference_model:
        check_model_options(args.reference_model, args.dtype)
    check_model_options(args.model, args.dtype)

    model, tok = load_for_evaluation(args.model, args.adapter, args.dtype, args.trust_remote_code)
    evaluated, described = model, {"spec": args.model, "adapter": args.adapter}
    if vecs is not None:
        from ..steering import SteeredModel

        vecs.check_compatible(model, allow_mismatch=args.allow_vector_mismatch)
        evaluated = SteeredModel(
            model,
            vecs,
            layers=args.layers,
            coefficient=args.coefficient,
            mode=args.mode,
            positions=args.positions,
            coefficient_unit=args.coefficient_unit,
        )
        described.update(
            vectors=args.vectors,
            layers=evaluated.layers,
            mode=args.mode,
            coefficient=args.coefficient if args.mode == "add" else None,
            coefficient_unit=args.coefficient_unit if args.mode == "add" else None,
        )
    out = Path(args.output)
    report = Report(
        args.title or "reptune evaluation",
        model={k: v for k, v in described.items() if v is not None},
        dataset=next(iter(sets), None),
    )

    if sets:
        rows = []
        for name, items in sets.items():
            for scorer in args.scorer:
                results = evaluate_honesty(
                    evaluated,
                    tok,
                    items,
                    scorer,
                    conditions=args.conditions,
                    batch_size=args.batch_size,
                    max_new_tokens=args.max_new_tokens,
                    progress=True,
                )
                for cond, res in results.items():
                    rows.append({"dataset": name, **res.row()})
                    report.add_rate(f"target_rate/{name}/{cond}/{scorer}", res.target, name)
        sec = report.section(
            "A/B answers",
            "Target rate: answers that are true (claims, TruthfulQA), correct, or match the "
            "behaviour (CAA sets); other: the other option; unparsed: no answer found. Under the "
            "honesty protocol the target rate is the honest rate, measured under the honest and "
            "the dishonest persona. Intervals: Wilson 95%.",
        )
        sec.add_table("ab", rows, "A/B rates")
        for scorer in args.scorer:
            mine = [r for r in rows if r["scorer"] == scorer]
            sec.add_plot(
                plot_rates(mine, report.plot_path(f"ab_{scorer}.png")),
                f"Target rate by set and condition ({scorer} scorer)",
            )

    if args.perplexity:
        _perplexity(args, model, evaluated, tok, report, text)

    if args.tasks:
        from ..evaluation.lm.capabilities import capability_rows, evaluate_capabilities

        caps = evaluate_capabilities(
            evaluated, tok, args.tasks, limit=args.tasks_limit, batch_size=args.batch_size
        )
        report.section("Capabilities", "lm-evaluation-harness tasks run in process.").add_table(
            "capabilities", capability_rows(caps), "lm-eval results"
        )

    paths = report.write(out)
    for name, metric in report.metrics.items():
        interval = (
            f" [{metric['ci_low']:.4g}, {metric['ci_high']:.4g}]"
            if metric["ci_low"] is not None
            else ""
        )
        print(f"{name}: {metric['value']:.4g}{interval} (n={metric['n']})")
    print(f"report: {paths['markdown']}")
    return 0


def _perplexity(args: EvalArguments, model, evaluated, tok, report, text: str) -> None:
    from ..evaluation.lm.perplexity import compare_perplexity, perplexity, perplexity_interval
    from .loading import load_for_evaluation

    kwargs = dict(window=args.window, stride=args.stride, max_tokens=args.max_tokens, progress=True)
    result = perplexity(evaluated, tok, text, **kwargs)
    low, high = perplexity_interval(result, n_resamples=args.bootstrap_resamples, seed=args.seed)
    rows = [
        {
            "model": "evaluated",
            "perplexity": result.perplexity,
            "perplexity_low": low,
            "perplexity_high": high,
            "mean_nll": result.mean_nll,
            "tokens": result.total_tokens,
            "windows": len(result.nll),
        }
    ]
    sec = report.section(
        "Perplexity",
        f"Sliding windows of {result.window} tokens with stride {result.stride} over "
        f"{set_name(args.perplexity)}; each token scored once. The difference is "
        "evaluated minus reference, with a paired bootstrap (BCa 95%) over windows.",
    )
    report.add_metric(
        "perplexity",
        result.perplexity,
        ci_low=low,
        ci_high=high,
        n=result.total_tokens,
        dataset=set_name(args.perplexity),
    )
    reference = None
    if args.reference_model:
        ref_model, ref_tok = load_for_evaluation(
            args.reference_model, None, args.dtype, args.trust_remote_code
        )
        reference = perplexity(ref_model, ref_tok, text, **kwargs)
    elif args.adapter or args.vectors:
        # The same weights without the adapter and without steering.
        plain = getattr(model, "disable_adapter", None)
        with plain() if plain else contextlib.nullcontext():
            reference = perplexity(model, tok, text, **kwargs)
    if reference is not None:
        ref_low, ref_high = perplexity_interval(
            reference, n_resamples=args.bootstrap_resamples, seed=args.seed
        )
        rows.append(
            {
                "model": "reference",
                "perplexity": reference.perplexity,
                "perplexity_low": ref_low,
                "perplexity_high": ref_high,
                "mean_nll": reference.mean_nll,
                "tokens": reference.total_tokens,
                "windows": len(reference.nll),
            }
        )
        if len(result.nll) >= 2:
            cmp = compare_perplexity(
                reference, result, n_resamples=args.bootstrap_resamples, seed=args.seed
            )
            diff = cmp["perplexity_difference"]
            report.add_metric(
                "perplexity_difference",
                diff.estimate,
                ci_low=diff.low,
                ci_high=diff.high,
                n=diff.n,
                dataset=set_name(args.perplexity),
            )
            sec.add_table(
                "perplexity_difference",
                [
                    {"statistic": "perplexity", **diff.as_dict()},
                    {"statistic": "nll_per_token", **cmp["nll_difference"].as_dict()},
                ],
                "Evaluated minus reference (paired bootstrap over windows)",
            )
        else:
            sec.text += " Only one window: no bootstrap interval."
    sec.add_table("perplexity", rows, "Perplexity")
