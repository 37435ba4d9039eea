"""Judge base vs steered answers of the embedded model, served by ``reptune serve``.

1. Extract sentiment vectors (shipped training pairs) at one layer of SmolLM2-135M-Instruct.
2. Start ``reptune serve`` on a free loopback port with those vectors.
3. Generate base and steered answers to the shipped evaluation prompts through the server
   (steering per request).
4. Judge them pairwise, both orders, with the served model itself as the (weak) judge, under two
   criteria (tone, and overall quality); score them with the lexicon and, when a local embedding
   model is installed, by embedding similarity to the pairs' positive vs negative replies.

Writes ``judge_<criterion>.json`` and ``summary.json`` into ``--output``; the summary prints last.

    python scripts/judge_embedded.py [--prompts 8 --layer 10 --coefficient 0.15]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

from reptune.behaviours import (
    load_eval_prompts,
    load_sentiment_pairs,
    load_sentiment_rows,
    sentiment_score,
)
from reptune.evaluation.open_ended.embedding import EmbeddingModelUnavailable, ExemplarScorer
from reptune.evaluation.open_ended.endpoint import ChatEndpoint
from reptune.evaluation.open_ended.judge import DEFAULT_CRITERION, judge_pairwise, judge_report
from reptune.evaluation.stats import paired_bootstrap
from reptune.extract import extract_vectors
from reptune.io import write_json
from reptune.models import DEFAULT_MODEL, load_model

CRITERIA = {"tone": "Which answer is more positive in tone?", "quality": DEFAULT_CRITERION}


def start_server(model: str, vectors: Path) -> tuple[subprocess.Popen, str]:
    cmd = [sys.executable, "-m", "reptune.cli", "serve", "--model", model]
    cmd += ["--vectors", str(vectors), "--port", "0", "--served_model_name", "judge"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    timer = threading.Timer(300, proc.kill)
    timer.start()
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if "listening on " in line:
            timer.cancel()
            # Keep reading so the server never blocks on a full pipe.
            threading.Thread(target=proc.stdout.read, daemon=True).start()
            return proc, line.split("listening on ")[1].strip()
    raise RuntimeError("reptune serve did not start:\n" + "".join(lines))


def compare(answers: dict, score) -> dict:
    """Mean score of each system, and steered minus base per prompt (paired bootstrap 95%)."""
    base, steered = score(answers["base"]), score(answers["steered"])
    diff = paired_bootstrap((base, steered), lambda a, b, axis=-1: (b - a).mean(axis=axis))
    return {
        "base": sum(base) / len(base),
        "steered": sum(steered) / len(steered),
        "steered_minus_base": [diff.estimate, diff.low, diff.high],
        "steered_higher": f"{sum(s > b for b, s in zip(base, steered))} of {len(base)}",
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--output", default="runs/judge-smollm2-135m")
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--layer", type=int, default=10)
    parser.add_argument("--coefficient", type=float, default=0.15)
    parser.add_argument("--max-tokens", type=int, default=48)
    args = parser.parse_args()
    out = Path(args.output)
    times = {}

    start = time.perf_counter()
    model, tok = load_model(args.model)
    pairs = load_sentiment_pairs(tok, "train")
    vecs = extract_vectors(model, tok, pairs, layers=[args.layer], progress=False)
    vecs.save(out / "vectors")
    del model
    times["extract_s"] = time.perf_counter() - start

    start = time.perf_counter()
    proc, url = start_server(args.model, out / "vectors")
    times["server_start_s"] = time.perf_counter() - start
    try:
        served = ChatEndpoint(url, "judge", timeout=600)
        prompts = load_eval_prompts(limit=args.prompts, chat=False)
        steering = {"layers": [args.layer], "coefficient": args.coefficient}
        start = time.perf_counter()
        answers = {"base": [], "steered": []}
        for prompt in prompts:
            messages = [{"role": "user", "content": prompt}]
            answers["base"].append(served.complete(messages, max_tokens=args.max_tokens))
            answers["steered"].append(
                served.complete(messages, max_tokens=args.max_tokens, reptune=steering)
            )
        times["generate_s"] = time.perf_counter() - start
        judged = {}
        for name, criterion in CRITERIA.items():
            start = time.perf_counter()
            result = judge_pairwise(
                prompts, answers["base"], answers["steered"], served,
                names=("base", "steered"), criterion=criterion, max_tokens=8,
            )  # fmt: skip
            times[f"judge_{name}_s"] = time.perf_counter() - start
            result.save(out / f"judge_{name}.json")
            write_json(out / f"judge_{name}_report.json", judge_report(result, f"Judge: {name}"))
            s = result.summary()
            judged[name] = {
                "steered_wins": str(s["win_rate"]["steered"]),
                "base_wins": str(s["win_rate"]["base"]),
                "ties": str(s["tie_rate"]),
                "judged_prompts": s["judged_prompts"],
                "position_bias": str(s["position_bias"]),
                "parse_failures": str(s["parse_failures"]),
                "verdict_counts": s["verdict_counts"],
                "replies": sorted({r.reply for r in result.rounds})[:8],
            }
    finally:
        proc.terminate()
        proc.wait(timeout=60)

    summary = {"answers": answers, "judge": judged}
    summary["lexicon_sentiment"] = compare(answers, sentiment_score)
    try:
        rows = load_sentiment_rows("train")
        scorer = ExemplarScorer([r["positive"] for r in rows], [r["negative"] for r in rows])
        summary["embedding_score"] = compare(answers, scorer)
    except EmbeddingModelUnavailable as err:
        summary["embedding_score"] = str(err)
    summary["seconds"] = {k: round(v, 1) for k, v in times.items()}
    summary["settings"] = vars(args)
    write_json(out / "summary.json", summary)
    print(json.dumps({k: v for k, v in summary.items() if k != "answers"}))


if __name__ == "__main__":
    main()
