"""Generation-time projections, the PCA token view and the suffix attack on the embedded model.

An optional stage next to the main job: sentiment vectors from the shipped training pairs,
projections during generation for the base model and the model steered at one layer, the PCA
view at that layer, and a small GCG budget against the base model and the model steered toward
honesty, on shipped honesty claims. Writes a report folder; the last line printed is JSON with
the seconds each part took.

    python scripts/diagnostics_embedded.py --output runs/diagnostics-smollm2-135m
"""

from __future__ import annotations

import argparse
import json
import time

import reptune
from reptune.behaviours import load_eval_prompts, load_sentiment_pairs
from reptune.behaviours.honesty import claims_to_pairs, load_claims
from reptune.evaluation.ab.datasets import load_items
from reptune.evaluation.adversarial.attack import AttackConfig
from reptune.io import resolve_data
from reptune.reporting.report import Report
from reptune.reporting.sections import (
    add_section,
    attack_section,
    pca_section,
    projection_section,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default="runs/diagnostics-smollm2-135m")
    parser.add_argument("--model", default="embedded:smollm2-135m")
    parser.add_argument("--layers", type=int, nargs="+", default=[4, 8, 10, 14, 20])
    parser.add_argument("--steer_layer", type=int, default=10)
    parser.add_argument("--coefficient", type=float, default=0.15)
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--new_tokens", type=int, default=30)
    parser.add_argument("--attack_items", type=int, default=8)
    parser.add_argument("--attack_steps", type=int, default=10)
    parser.add_argument("--attack_candidates", type=int, default=16)
    parser.add_argument("--attack_topk", type=int, default=32)
    parser.add_argument("--attack_suffix", type=int, default=8)
    args = parser.parse_args()

    seconds = {}

    def done(stage: str, value: float) -> None:
        seconds[stage] = value
        print(f"{stage}: {value:.1f} s", flush=True)

    t = time.perf_counter()
    model, tok = reptune.load_model(args.model)
    done("load", time.perf_counter() - t)

    t = time.perf_counter()
    pairs = load_sentiment_pairs(tok, "train")
    layers = sorted(set(args.layers) | {args.steer_layer})
    vecs = reptune.extract_vectors(model, tok, pairs, layers=layers, progress=False)
    done("extract_sentiment", time.perf_counter() - t)

    report = Report("Diagnostics", model={"spec": args.model})
    steered = reptune.SteeredModel(
        model, vecs, layers=[args.steer_layer], coefficient=args.coefficient
    )
    prompts = load_eval_prompts(tok, limit=args.prompts)
    sec = projection_section(
        {"base": model, f"steered L{args.steer_layer} c={args.coefficient:g}": steered},
        tok,
        vecs,
        prompts,
        layers,
        args.output,
        max_new_tokens=args.new_tokens,
    )
    done("projections", sec["seconds"])
    add_section(report, sec)

    sec = pca_section(model, tok, pairs, args.steer_layer, args.output)
    done("pca_view", sec["seconds"])
    add_section(report, sec)

    t = time.perf_counter()
    claims = load_claims(resolve_data("reptune:honesty_claims.jsonl"))
    honesty = reptune.extract_vectors(
        model, tok, claims_to_pairs(claims, tok), layers=[args.steer_layer], progress=False
    )
    done("extract_honesty", time.perf_counter() - t)
    items = load_items(resolve_data("reptune:honesty_claims.jsonl"), limit=args.attack_items)
    config = AttackConfig(
        steps=args.attack_steps,
        candidates=args.attack_candidates,
        topk=args.attack_topk,
        suffix_length=args.attack_suffix,
        seed=0,
    )
    toward_honesty = reptune.SteeredModel(
        model, honesty, layers=[args.steer_layer], coefficient=args.coefficient
    )
    sec = attack_section(
        {
            "base": model,
            f"honesty-steered L{args.steer_layer} c={args.coefficient:g}": toward_honesty,
        },
        tok,
        items,
        config,
        args.output,
        progress=True,
    )
    done("attack", sec["seconds"])
    add_section(report, sec)
    paths = report.write(args.output)
    print(f"report: {paths['markdown']}")
    print(json.dumps({k: round(v, 1) for k, v in seconds.items()}))


if __name__ == "__main__":
    main()
