"""Agreement of the independent scorers with the shipped hand-labelled sets, and judge timings.

Writes ``<output>/scorer_validation.json`` and prints one line per scorer:

    python scripts/validate_scorers.py --output runs/scorer-validation [--relevance-answers 20]

Sentiment: VADER on ``sentiment_labelled.jsonl`` (Spearman over -1/0/+1, sign accuracy on the
polar sentences) and on ``sentiment_scorer_check.jsonl`` (AUROC). Fluency: the Gemma judge's
per-token NLL, distinct-1/2 and the repeated 3-gram share on ``fluency_labelled.jsonl`` (AUROC,
fluent = 1), all answers and without the repetitive ones. Timing: first and cached load of the
judge, and the relevance scorer on ``--relevance-answers`` answers x ``--candidates``
candidate prompts, extrapolated to 1,000 answers.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from reptune.evaluation.scorers import (
    DistinctN,
    JudgeLM,
    JudgeNLL,
    PromptRankRelevance,
    RepeatedNgramRate,
    VaderSentiment,
    agreement,
    validate_scorer,
)
from reptune.io import data_path, read_jsonl


def _sentiment(results: list[dict]) -> None:
    vader = VaderSentiment()
    rows = read_jsonl(data_path("sentiment_labelled.jsonl"))
    scores = vader.score([""] * len(rows), [r["text"] for r in rows])
    labels = [r["label"] for r in rows]
    polar = [(s, y) for s, y in zip(scores, labels) if y != 0]
    checks = {
        "sentiment_labelled (-1/0/+1)": agreement(scores, labels, scorer=vader.name),
        "sentiment_labelled, polar sign": agreement(
            [s for s, _ in polar],
            [y for _, y in polar],
            metric="accuracy",
            threshold=0.0,
            scorer=vader.name,
        ),
    }
    old = read_jsonl(data_path("sentiment_scorer_check.jsonl"))
    checks["sentiment_scorer_check (+1/-1)"] = validate_scorer(
        vader, [""] * len(old), [r["text"] for r in old], [r["label"] for r in old]
    )
    results += [{"set": k, **v.as_dict()} for k, v in checks.items()]


def _fluency(results: list[dict], judge: JudgeLM) -> None:
    rows = read_jsonl(data_path("fluency_labelled.jsonl"))
    scorers = [JudgeNLL(judge), DistinctN(1), DistinctN(2), RepeatedNgramRate(3)]
    for subset, keep in (
        ("all", rows),
        ("fluent vs garbled", [r for r in rows if r["kind"] != "repetitive"]),
    ):
        prompts, answers = [r["prompt"] for r in keep], [r["answer"] for r in keep]
        labels = [r["label"] for r in keep]
        for scorer in scorers:
            result = validate_scorer(scorer, prompts, answers, labels)
            results.append({"set": f"fluency_labelled, {subset}", **result.as_dict()})


def _relevance_timing(judge: JudgeLM, n_answers: int, n_candidates: int) -> dict:
    rows = [r for r in read_jsonl(data_path("fluency_labelled.jsonl")) if r["label"] == 1]
    prompts = [r["prompt"] for r in rows]
    # Two fluent answers joined: about 45 tokens, near the 48 the scorer reads by default.
    answers = [
        rows[i]["answer"] + " " + rows[(i + 1) % len(rows)]["answer"] for i in range(len(rows))
    ]
    prompts, answers = (prompts * 4)[:n_answers], (answers * 4)[:n_answers]
    scorer = PromptRankRelevance(judge, n_other_prompts=n_candidates - 1)
    start = time.perf_counter()
    scores = scorer.score(prompts, answers)
    seconds = time.perf_counter() - start
    pairs = sum(scorer.n_candidates)
    return {
        "answers": n_answers,
        "pairs": pairs,
        "seconds": seconds,
        "seconds_per_pair": seconds / pairs,
        "extrapolated_1000_answers_x_10_candidates_min": seconds / pairs * 10_000 / 60,
        "mean_posterior_on_real_answers": sum(scores) / len(scores),
        "threads": torch.get_num_threads(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--relevance-answers", type=int, default=20)
    parser.add_argument("--candidates", type=int, default=10)
    args = parser.parse_args()
    results: list[dict] = []
    _sentiment(results)
    start = time.perf_counter()
    judge = JudgeLM.load(model_under_test="llama")
    load_seconds = time.perf_counter() - start
    _fluency(results, judge)
    timing = _relevance_timing(judge, args.relevance_answers, args.candidates)
    timing["judge_load_seconds"] = load_seconds
    args.output.mkdir(parents=True, exist_ok=True)
    out = {"agreement": results, "timing": timing}
    (args.output / "scorer_validation.json").write_text(json.dumps(out, indent=2) + "\n")
    for r in results:
        print(
            f"{r['set']:38s} {r['scorer'][:44]:44s} {r['metric']} {r['value']:.3f} "
            f"[{r['low']:.3f}, {r['high']:.3f}] n={r['n']} passes={r['passes']}"
        )
    print(json.dumps(timing, indent=2))


if __name__ == "__main__":
    main()
