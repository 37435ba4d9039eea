"""Any behaviour from a pairs file: pairs -> vectors -> layers -> steering sweep -> tuning ->
evaluation -> report -> card. Shows reptune is not honesty-only.

    # CAA sycophancy (A/B pairs; scored by letter probability on the CAA test items)
    python recipes/behaviour.py --config recipes/behaviour/sycophancy.yaml
    # sentiment (shipped pairs; generations scored by a lexicon, no network)
    python recipes/behaviour.py --pairs sentiment --run_dir runs/sentiment

The honesty recipe runs the same stages as its second section (``behaviour: sentiment``).
"""

from __future__ import annotations

import dataclasses
import logging
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    ModelArguments,
    add_section,
    finish_run,
    load_base,
    load_tuned,
    perplexity_rows,
    resolve_data,
    target_cosines,
    train_adapter,
)

from reptune.pipeline import StageRunner  # noqa: E402
from reptune.training import RepTuneConfig, check_precision  # noqa: E402

logger = logging.getLogger("reptune.recipe")


@dataclass
class BehaviourArguments:
    """The behaviour and how to measure it."""

    pairs: str = field(
        default="sentiment",
        metadata={
            "help": "'sentiment' (shipped pairs) or a pairs file: CAA A/B JSON or JSONL "
            "with positive/negative"
        },
    )
    eval_items: str | None = field(
        default=None, metadata={"help": "A/B test items (CAA format) scored by letter probability"}
    )
    test_fraction: float = field(default=0.2, metadata={"help": "held-out share of the pairs"})
    layers: list[int] | None = field(default=None, metadata={"help": "layers to extract"})
    steer_layer: int | None = field(
        default=None, metadata={"help": "layer to steer (default: best held-out separation)"}
    )
    coefficients: list[float] = field(
        default_factory=lambda: [-0.24, -0.16, -0.08, 0.0, 0.08, 0.16, 0.24],
        metadata={"help": "steering coefficients as fractions of the layer's median residual norm"},
    )
    eval_prompts: int = field(default=16, metadata={"help": "prompts for generation scoring"})
    eval_prompt_start: int = field(
        default=16,
        metadata={
            "help": "first evaluation prompt used: the shipped sentiment settings (layer 10, "
            "coefficient range) were chosen on prompts 0-15, so those are skipped"
        },
    )
    new_tokens: int = field(default=24, metadata={"help": "tokens generated per prompt"})
    eval_limit: int = field(default=100, metadata={"help": "A/B test items used"})
    num_rep_layers: int = field(default=3, metadata={"help": "tuned layers around the best one"})
    tune_positions: str = field(
        default="all", metadata={"help": "positions of the cosine loss for this behaviour"}
    )
    tune_epochs: float = field(default=2.0, metadata={"help": "training epochs for this section"})
    tune_learning_rate: float = field(
        default=2e-3, metadata={"help": "learning rate of this section's tuning"}
    )
    tune_lm_weight: float = field(
        default=0.1,
        metadata={
            "help": "token-loss weight of this section's rep-tuning: more than the "
            "honesty default, because the cosine loss at every position otherwise "
            "pulls the residual far past the range where steering stays fluent"
        },
    )
    perplexity_window: int = field(default=256, metadata={"help": "perplexity window"})
    perplexity_stride: int = field(default=128, metadata={"help": "perplexity stride"})


def _mean_ci(values) -> dict:
    """Mean with a 95% bootstrap interval (scipy)."""
    import numpy as np
    from scipy.stats import bootstrap

    arr = np.asarray(values, dtype=float)
    if len(arr) < 2 or np.all(arr == arr[0]):
        return {"mean": float(arr.mean()), "low": float(arr.mean()), "high": float(arr.mean())}
    ci = bootstrap((arr,), np.mean, n_resamples=2000, random_state=0).confidence_interval
    return {"mean": float(arr.mean()), "low": float(ci.low), "high": float(ci.high)}


def _load_pairs(bargs: BehaviourArguments, tok, seed: int = 0):
    """(train pairs, test pairs, training rows {prompt, completion}) of the behaviour."""
    if bargs.pairs == "sentiment":
        from reptune.behaviours import load_sentiment_pairs, load_sentiment_rows

        rows = [
            {"prompt": r["prompt"], "completion": r["positive"]}
            for r in load_sentiment_rows("train")
        ]
        return (load_sentiment_pairs(tok, "train"), load_sentiment_pairs(tok, "test"), rows)
    from reptune.pairs import load_caa_pairs, load_jsonl_pairs, split_pairs

    path = resolve_data(bargs.pairs)
    if path.endswith(".jsonl"):
        pairs = load_jsonl_pairs(path)
        rows = [
            {"prompt": p.meta["prompt"], "completion": p.meta["completion"]}
            for p in pairs
            if "prompt" in p.meta and "completion" in p.meta
        ]
    else:
        import json

        pairs = load_caa_pairs(path, tok)
        raw = json.loads(Path(path).read_text())
        rows = [{"prompt": r["question"], "completion": r["answer_matching_behavior"]} for r in raw]
    train, test = split_pairs(pairs, bargs.test_fraction, seed)
    keep = {p.meta.get("index") for p in train}
    rows = [r for i, r in enumerate(rows) if i in keep] if keep != {None} else rows
    return train, test, rows


def generation_scores(model, tok, prompts, coefficients, steer=None, new_tokens=24, judge=None):
    """Sentiment of greedy generations: ``{coefficient: [score per prompt]}`` and the texts.

    The score is the judge model's own positive/negative reading (``judge``: the untuned base
    model, so the judge never changes with the intervention); ``lexicon`` scores come along.
    """
    from reptune.behaviours import model_sentiment_score, sentiment_score
    from reptune.tokenization import encode_batch

    rows = [(p, c) for c in coefficients for p in prompts]
    texts = []
    for start in range(0, len(rows), 32):
        part = rows[start : start + 32]
        batch = encode_batch(tok, [p for p, _ in part])
        runner = steer if steer is not None else model
        kwargs = {"coefficient": torch.tensor([c for _, c in part])} if steer is not None else {}
        out = runner.generate(**batch, max_new_tokens=new_tokens, do_sample=False, **kwargs)
        texts += tok.batch_decode(out[:, batch["input_ids"].shape[1] :], skip_special_tokens=True)
    judged = model_sentiment_score(judge or model, tok, texts)
    lexicon = sentiment_score(texts)
    by_coef, by_coef_lexicon = {}, {}
    for (_, c), s, lex in zip(rows, judged, lexicon):
        by_coef.setdefault(c, []).append(s)
        by_coef_lexicon.setdefault(c, []).append(lex)
    return by_coef, texts, by_coef_lexicon


def run_behaviour_section(
    bargs: BehaviourArguments | str,
    margs: ModelArguments,
    targs: RepTuneConfig,
    stages: StageRunner,
    run_dir: Path,
) -> dict:
    """Run the behaviour's stages under ``run_dir/behaviour``; return a report section."""
    if isinstance(bargs, str):
        bargs = BehaviourArguments(pairs=bargs)
    out_dir = run_dir / "behaviour"
    settings = {"model": asdict(margs), "behaviour": asdict(bargs)}
    from reptune.extract import extract_vectors, read_activations
    from reptune.steering import SteeredModel
    from reptune.vectors import SteeringVectors

    model, tok = load_base(margs)
    train, test, rows = _load_pairs(bargs, tok, targs.seed)

    def vectors():
        vecs = extract_vectors(model, tok, train, bargs.layers, "mean_diff", -1)
        vecs.save(out_dir / "vectors")
        texts = [p.positive for p in test] + [p.negative for p in test]
        acts = read_activations(model, tok, texts, vecs.layers, -1)
        n = len(test)
        heldout = {
            k: float((((a[:n] - a[n:]) @ vecs[k].to(a)) > 0).float().mean())
            for k, a in acts.items()
        }
        diag = vecs.metadata["diagnostics"]
        best = (
            bargs.steer_layer
            if bargs.steer_layer is not None
            else max(heldout, key=lambda k: (heldout[k], diag[k]["explained_variance"]))
        )
        # Median: a few attention-sink tokens have norms many times the typical one.
        norm = float(
            read_activations(model, tok, texts[:16], [best], "all")[best].norm(dim=-1).median()
        )
        return {"heldout": heldout, "best_layer": best, "unit": norm}

    info = stages.run("behaviour_vectors", vectors, settings)
    vecs = SteeringVectors.load(out_dir / "vectors", model=model)
    best, unit = info["best_layer"], info["unit"]
    coefs = [c * unit for c in bargs.coefficients]
    heldout = {int(k): v for k, v in info["heldout"].items()}

    generative = bargs.eval_items is None
    if generative:
        from reptune.behaviours import load_eval_prompts

        start = bargs.eval_prompt_start
        prompts = load_eval_prompts(tok)[start : start + bargs.eval_prompts]
    else:
        from reptune.evaluation import load_items

        items = load_items(resolve_data(bargs.eval_items), limit=bargs.eval_limit)

    def sweep():
        from scipy.stats import spearmanr

        steer = SteeredModel(model, vecs, layers=[best], coefficient_unit="raw")
        if generative:
            by_coef, texts, lexicon = generation_scores(
                model, tok, prompts, coefs, steer, bargs.new_tokens
            )
            table = [
                {
                    "coefficient": round(c / unit, 3),
                    **_mean_ci(v),
                    "lexicon": round(sum(lexicon[c]) / len(lexicon[c]), 4),
                }
                for c, v in by_coef.items()
            ]
            examples = {round(c / unit, 3): texts[i * len(prompts)] for i, c in enumerate(coefs)}
        else:
            from reptune.evaluation import steering_sweep

            res = steering_sweep(
                model,
                tok,
                vecs,
                items,
                [best],
                coefs,
                scorer="letter",
                progress=True,
                coefficient_unit="raw",
            )
            table = [
                {
                    "coefficient": round(r["coefficient"] / unit, 3),
                    "mean": r["behaviour"],
                    "low": r["target_low"] * 2 - 1,
                    "high": r["target_high"] * 2 - 1,
                }
                for r in res.rows
            ]
            examples = {}
        means = [r["mean"] for r in table]
        # Undefined (None) when every score is the same.
        rho = (
            float(spearmanr([r["coefficient"] for r in table], means).statistic)
            if len(set(means)) > 1
            else None
        )
        return {"rows": table, "spearman": rho, "examples": examples}

    sweep_info = stages.run("behaviour_sweep", sweep, settings)
    _plot_sweep(sweep_info["rows"], out_dir / "sweep.png", best)

    half = bargs.num_rep_layers // 2
    lo = max(0, min(best - half, max(vecs.layers) - bargs.num_rep_layers + 1))
    rep_layers = [k for k in range(lo, lo + bargs.num_rep_layers) if k in vecs.layers]
    btargs = dataclasses.replace(
        targs,
        rep_layers=rep_layers,
        rep_positions=bargs.tune_positions,
        num_train_epochs=bargs.tune_epochs,
        vectors=str(out_dir / "vectors"),
        learning_rate=bargs.tune_learning_rate,
        lm_weight=bargs.tune_lm_weight,
    )
    trained = {}
    for name, token_only in (("rep-tuned", False), ("token-tuned", True)):
        trained[name] = stages.run(
            f"behaviour_tune_{name}",
            lambda name=name, token_only=token_only: train_adapter(
                margs, btargs, vecs, rows, out_dir / "models" / name, token_only=token_only
            ),
            settings | {"train": btargs.to_dict()},
            main_process_only=False,
        )

    def evaluate():
        from reptune.evaluation import evaluate_ab

        results, cosines, models = [], {}, {}
        judge = model  # the untuned model judges every model's text
        for name in ("base", "rep-tuned", "token-tuned"):
            m, t = load_tuned(margs, None if name == "base" else out_dir / "models" / name)
            models[name] = (m, t)
            probe = rows[:32] if generative else [{"prompt": i.question} for i in items[:32]]
            cosines[name] = target_cosines(m, t, vecs, probe, rep_layers, "all")
            if generative:
                by_coef, _, lexicon = generation_scores(
                    m, t, prompts, [0.0], None, bargs.new_tokens, judge=judge
                )
                stat = _mean_ci(by_coef[0.0]) | {
                    "lexicon": round(sum(lexicon[0.0]) / len(lexicon[0.0]), 4)
                }
            else:
                res = evaluate_ab(m, t, items, "letter")
                stat = {
                    "mean": res.behaviour,
                    "low": res.target.low * 2 - 1,
                    "high": res.target.high * 2 - 1,
                }
            results.append(
                {
                    "model": name,
                    **stat,
                    **{f"cos_layer_{k}": round(v, 4) for k, v in cosines[name].items()},
                }
            )
        from reptune.behaviours import load_heldout_text

        ppl = perplexity_rows(
            models, load_heldout_text(), bargs.perplexity_window, bargs.perplexity_stride
        )
        return {"rows": results, "perplexity": ppl}

    eval_info = stages.run("behaviour_evaluate", evaluate, settings | {"t": trained})
    return _section(bargs, info, heldout, sweep_info, eval_info, trained, rep_layers, out_dir)


def _plot_sweep(rows, path: Path, layer: int) -> None:
    from matplotlib.figure import Figure

    from reptune.evaluation.plots import save_figure

    fig = Figure(figsize=(5, 3.5))
    ax = fig.subplots()
    xs = [r["coefficient"] for r in rows]
    ax.errorbar(
        xs,
        [r["mean"] for r in rows],
        yerr=[[r["mean"] - r["low"] for r in rows], [r["high"] - r["mean"] for r in rows]],
        marker="o",
        capsize=3,
    )
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_xlabel("coefficient (fraction of the median residual norm)")
    ax.set_ylabel("behaviour score")
    ax.set_title(f"steering at layer {layer}")
    save_figure(fig, path)


def _section(bargs, info, heldout, sweep_info, eval_info, trained, rep_layers, out_dir) -> dict:
    name = "Sentiment" if bargs.pairs == "sentiment" else Path(bargs.pairs).stem
    rows = sweep_info["rows"]
    rho = sweep_info["spearman"]
    first, last = rows[0], rows[-1]
    monotone = all(a["mean"] <= b["mean"] for a, b in zip(rows, rows[1:]))
    base = next(r for r in eval_info["rows"] if r["model"] == "base")
    tuned = next(r for r in eval_info["rows"] if r["model"] == "rep-tuned")
    moved = tuned["low"] > base["high"] or tuned["high"] < base["low"]
    scorer = (
        "the untuned model's own positive/negative judgement of greedy generations "
        "(2 sigmoid(log P(positive) - log P(negative) - threshold) - 1; the threshold was "
        "fixed on the training replies; neutral text scores about -0.5), with a word-list "
        "score alongside"
        if bargs.eval_items is None
        else "+1/-1 letter choice on the A/B test items"
    )
    text = (
        f"A behaviour this model does represent: {name.lower()}. Vectors from "
        f"{len(heldout)} layers; best held-out "
        f"separation at layer {info['best_layer']} ({heldout[info['best_layer']]:.0%} of the "
        f"test pairs). Score: {scorer}, on held-out prompts.\n\n"
        f"Steering: the score goes from {first['mean']:+.2f} at coefficient "
        f"{first['coefficient']:g} to {last['mean']:+.2f} at {last['coefficient']:g} "
        f"(Spearman rho {'undefined' if rho is None else f'{rho:.2f}'}; "
        f"{'monotonic' if monotone else 'not strictly monotonic'} "
        f"across the grid).\n\n"
        f"Rep-tuning layers {rep_layers}: the mean cosine with the vector and the score change "
        f"as in the table; the rep-tuned model's score is {tuned['mean']:+.2f} "
        f"[{tuned['low']:+.2f}, {tuned['high']:+.2f}] vs base {base['mean']:+.2f} "
        f"[{base['low']:+.2f}, {base['high']:+.2f}]"
        f"{' (beyond the intervals)' if moved else ' (within the intervals)'}."
    )
    ex = sweep_info.get("examples") or {}
    tables = [
        {
            "name": "behaviour_layers",
            "rows": [{"layer": k, "heldout_accuracy": v} for k, v in sorted(heldout.items())],
        },
        {
            "name": "behaviour_sweep",
            "rows": rows,
            "description": "mean score with a 95% bootstrap interval per coefficient",
        },
        {
            "name": "behaviour_models",
            "rows": eval_info["rows"],
            "description": "score at coefficient 0 and mean cosine at the tuned layers",
        },
        {"name": "behaviour_perplexity", "rows": eval_info["perplexity"]},
        {"name": "behaviour_training", "rows": [{"model": k, **v} for k, v in trained.items()]},
    ]
    if ex:
        tables.append(
            {
                "name": "behaviour_examples",
                "rows": [{"coefficient": c, "text": t} for c, t in ex.items()],
            }
        )
    metrics = {
        f"{name.lower()}/steering_spearman": {
            "value": None if rho is None else round(rho, 4),
            "n": len(rows),
        },
    }
    for r in eval_info["rows"]:
        metrics[f"{name.lower()}/score/{r['model']}"] = {
            "value": round(r["mean"], 4),
            "ci_low": round(r["low"], 4),
            "ci_high": round(r["high"], 4),
        }
    for r in eval_info["perplexity"]:
        metrics[f"{name.lower()}/perplexity/{r['model']}"] = {
            "value": r["perplexity"],
            "ci_low": r.get("ci_low"),
            "ci_high": r.get("ci_high"),
        }
    return {
        "title": f"Second behaviour: {name.lower()}",
        "text": text,
        "tables": tables,
        "plots": [str(out_dir / "sweep.png")],
        "metrics": metrics,
    }


def main(argv=None) -> int:
    from reptune.commands import parse
    from reptune.evaluation import Report

    margs, bargs, targs = parse(
        (ModelArguments, BehaviourArguments, RepTuneConfig),
        sys.argv[1:] if argv is None else argv,
        "behaviour.py",
    )
    check_precision(targs, argv, margs.dtype, full_weights=not margs.use_lora)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    run_dir = Path(margs.run_dir)
    stages = StageRunner(run_dir)
    section = run_behaviour_section(bargs, margs, targs, stages, run_dir)
    if stages.state.is_main_process:
        report = Report(section["title"], model={"spec": margs.model}, dataset=bargs.pairs)
        add_section(report, section)
        report.write(run_dir / "report")
        if not (run_dir / "adapter").exists():
            _link_adapter(run_dir)
    finish_run(margs, run_dir, stages)
    print(f"report: {run_dir / 'report/report.md'}")
    return 0


def _link_adapter(run_dir: Path) -> None:
    """The published adapter of a behaviour run is its rep-tuned model."""
    import shutil

    src = run_dir / "behaviour/models/rep-tuned"
    if src.is_dir():
        shutil.copytree(src, run_dir / "adapter")


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (ValueError, FileNotFoundError) as err:
        # Bad input: one line with the reason.
        sys.exit(f"{Path(__file__).name}: error: {err}")
