"""The honesty recipe: claims -> pairs -> vectors -> layers -> steering sweep -> representation
tuning (honest / dishonest) -> token-only baselines (truth / lie) -> evaluation (A/B, robustness,
perplexity, trade-off) -> report -> model card -> optional Hub push.

    accelerate launch recipes/honesty.py --config recipes/honesty/smollm2-135m.yaml
    python recipes/honesty.py --config recipes/honesty/llama2-13b-chat.yaml --num_train_epochs 1

Every stage writes under ``run_dir`` and is skipped on a rerun when it already finished with the
same settings. Settings come from the YAML file; any ``--option value`` overrides it.
"""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    ModelArguments,
    finish_run,
    load_base,
    load_tuned,
    perplexity_rows,
    resolve_data,
    target_cosines,
    train_adapter,
    write_json,
)

from reptune.pairs import Claim  # noqa: E402
from reptune.pipeline import StageRunner  # noqa: E402
from reptune.training import RepTuneConfig, check_precision, parse_positions  # noqa: E402


@dataclass
class HonestyArguments:
    """What the honesty recipe does (the model and training settings are separate)."""

    claims: str = field(
        default="reptune:honesty_claims.jsonl",
        metadata={"help": "true/false claims (statement,label); reptune:<file> = shipped data"},
    )
    claims_limit: int | None = field(
        default=None, metadata={"help": "use only the first N claims (quick runs)"}
    )
    pairing_mode: str = field(
        default="persona_answer", metadata={"help": "persona_answer, answer or persona"}
    )
    filter_known: bool = field(
        default=False, metadata={"help": "keep only claims the untuned model answers correctly"}
    )
    test_fraction: float = field(default=0.2, metadata={"help": "held-out share of the claims"})
    extract_layers: list[int] | None = field(
        default=None, metadata={"help": "layers to extract (default: all)"}
    )
    extract_method: str = field(
        default="mean_diff", metadata={"help": "mean_diff, pca_diff or pca_center"}
    )
    extract_position: list[int] = field(
        default_factory=lambda: [-1], metadata={"help": "offsets from the end of each text"}
    )
    steer_layers: list[int] | None = field(
        default=None, metadata={"help": "layers to steer (default: best held-out separation)"}
    )
    num_rep_layers: int = field(
        default=7, metadata={"help": "when rep_layers is unset: this many layers around the best"}
    )
    sweep_coefficients: list[float] = field(
        default_factory=lambda: [-0.5, -0.25, 0.0, 0.25, 0.5],
        metadata={"help": "steering coefficients (see coefficient_scale)"},
    )
    coefficient_scale: str = field(
        default="residual_norm",
        metadata={
            "help": "'residual_norm': coefficients are fractions of the steered layer's "
            "median residual norm; 'none': raw multiples of the unit vector"
        },
    )
    sweep_limit: int = field(default=40, metadata={"help": "training claims used for the sweep"})
    tune_targets: list[str] = field(
        default_factory=lambda: ["toward", "away"],
        metadata={"help": "toward = honest model, away = dishonest model"},
    )
    token_baselines: bool = field(
        default=True, metadata={"help": "also train truth-/lie-tuned (token loss only) models"}
    )
    scorer: str = field(default="letter", metadata={"help": "letter or generate"})
    eval_sets: list[str] = field(
        default_factory=list,
        metadata={"help": "extra A/B files evaluated on every model (claims, TruthfulQA, CAA)"},
    )
    eval_limit: int = field(default=200, metadata={"help": "items per extra evaluation set"})
    robustness_coefficients: list[float] = field(
        default_factory=lambda: [0.25, 0.5],
        metadata={"help": "dishonesty-steering strengths applied to the tuned models"},
    )
    perplexity_text: str | None = field(
        default="reptune:heldout_text.txt", metadata={"help": "text file for perplexity"}
    )
    perplexity_window: int = field(default=256, metadata={"help": "perplexity window (tokens)"})
    perplexity_stride: int = field(default=128, metadata={"help": "perplexity stride (tokens)"})
    tradeoff_items: str | None = field(
        default=None, metadata={"help": "MMLU-style A-D file for the trade-off curves"}
    )
    tradeoff_coefficients: list[float] = field(
        default_factory=lambda: [-0.5, -0.25, -0.1, 0.0, 0.1, 0.25, 0.5],
        metadata={"help": "coefficients of the trade-off sweep"},
    )
    tradeoff_limit: int = field(default=48, metadata={"help": "helpfulness items used"})
    behaviour: str | None = field(
        default=None,
        metadata={"help": "second section on a behaviour the model represents: 'sentiment'"},
    )
    behaviour_layers: list[int] | None = field(
        default=None, metadata={"help": "layers extracted for the second section (default all)"}
    )
    behaviour_steer_layer: int | None = field(
        default=None, metadata={"help": "steered layer of the second section (default: best)"}
    )
    behaviour_eval_prompts: int = field(
        default=16, metadata={"help": "held-out prompts scored in the second section"}
    )
    behaviour_new_tokens: int = field(
        default=24, metadata={"help": "tokens generated per prompt in the second section"}
    )


logger = logging.getLogger("reptune.recipe")


def claim_rows(claims, honest: bool) -> list[dict]:
    """Training rows: each claim under both personas, answered truthfully or with the lie."""
    from reptune.pairs import CLAIM_QUESTION, DISHONEST_PERSONA, HONEST_PERSONA

    rows = []
    for claim in claims:
        truthful = claim.label if honest else not claim.label
        answer = "(A) True" if truthful else "(B) False"
        for persona in (HONEST_PERSONA, DISHONEST_PERSONA):
            rows.append(
                {
                    "prompt": CLAIM_QUESTION.format(claim=claim.statement),
                    "system": persona,
                    "completion": answer,
                }
            )
    return rows


def claim_items(claims):
    from reptune.evaluation import records_to_items

    return records_to_items([{"statement": c.statement, "label": int(c.label)} for c in claims])


def coefficient_unit(model, tok, layer, texts, mode: str) -> float:
    """What coefficient 1 means: 1 (raw) or the median residual norm at ``layer``.

    The median, because a few attention-sink tokens have norms many times the typical one.
    """
    if mode == "none":
        return 1.0
    from reptune.extract import read_activations

    acts = read_activations(model, tok, texts[:16], [layer], "all")[layer]
    return float(acts.norm(dim=-1).median())


def _training_settings(targs: RepTuneConfig) -> dict:
    """Training settings that change the result (not logging, output paths or push options)."""
    ignore = (
        "output_dir",
        "logging_dir",
        "report_to",
        "logging_steps",
        "run_name",
        "hub_",
        "push_to_hub",
        "disable_tqdm",
        "save_",
        "dataloader_num_workers",
    )
    return {k: v for k, v in targs.to_dict().items() if not k.startswith(ignore)}


def check_inputs(hargs: HonestyArguments) -> None:
    """Fail before any model runs when a named input file is missing or a choice is unknown."""
    files = [hargs.claims, hargs.perplexity_text, hargs.tradeoff_items, *hargs.eval_sets]
    for path in filter(None, files):
        if not Path(resolve_data(path)).is_file():
            raise FileNotFoundError(f"input file {path} does not exist (check the config)")
    if hargs.scorer not in ("letter", "generate"):
        raise ValueError(f"scorer must be 'letter' or 'generate', not {hargs.scorer!r}")
    unknown = set(hargs.tune_targets) - {"toward", "away", "orthogonal"}
    if unknown:
        raise ValueError(f"unknown tune_targets {sorted(unknown)}: use toward, away, orthogonal")
    if hargs.behaviour not in (None, "sentiment") and not Path(hargs.behaviour).is_file():
        raise ValueError(f"behaviour must be 'sentiment' or a pairs file, not {hargs.behaviour!r}")


def main(argv=None) -> int:
    from reptune.commands import parse

    margs, hargs, targs = parse(
        (ModelArguments, HonestyArguments, RepTuneConfig),
        sys.argv[1:] if argv is None else argv,
        "honesty.py",
    )
    check_precision(targs, argv, margs.dtype, full_weights=not margs.use_lora)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    check_inputs(hargs)
    run_dir = Path(margs.run_dir)
    stages = StageRunner(run_dir)
    h = asdict(hargs)

    def pick(*names):
        return {n: h[n] for n in names}

    # Each stage's settings include its upstream stages', so a change reruns what depends on it.
    model_settings = {k: v for k, v in asdict(margs).items() if not k.startswith("push")}
    s_pairs = {
        "model": model_settings,
        "seed": targs.seed,
        **pick("claims", "claims_limit", "filter_known", "test_fraction"),
    }
    s_vectors = s_pairs | pick(
        "pairing_mode", "extract_layers", "extract_method", "extract_position"
    )
    s_layers = s_vectors | pick("steer_layers", "num_rep_layers") | {"rep_layers": targs.rep_layers}
    s_sweep = s_layers | pick("sweep_coefficients", "coefficient_scale", "sweep_limit")

    from reptune.extract import extract_vectors, read_activations
    from reptune.pairs import claims_to_pairs, filter_known_claims, load_claims, split_pairs
    from reptune.vectors import SteeringVectors

    # 1. pairs ---------------------------------------------------------------------------
    def build_pairs():
        model, tok = load_base(margs)
        claims = load_claims(resolve_data(hargs.claims))[: hargs.claims_limit]
        known = filter_known_claims(model, tok, claims)
        kept = known if hargs.filter_known else claims
        if len(kept) < 4:
            raise ValueError(f"only {len(kept)} claims left: need at least 4 to split")
        train, test = split_pairs(kept, hargs.test_fraction, targs.seed)
        for name, part in (("train", train), ("test", test)):
            write_json(
                run_dir / f"data/{name}_claims.json",
                [{"statement": c.statement, "label": int(c.label)} for c in part],
            )
        return {
            "claims": len(claims),
            "known": len(known),
            "kept": len(kept),
            "train": len(train),
            "test": len(test),
            "base_claim_accuracy": len(known) / len(claims),
        }

    data_info = stages.run("pairs", build_pairs, s_pairs)

    def read_claims(name):
        rows = json.loads((run_dir / f"data/{name}_claims.json").read_text())
        return [Claim(r["statement"], bool(r["label"])) for r in rows]

    train_claims, test_claims = read_claims("train"), read_claims("test")

    # 2. vectors ---------------------------------------------------------------------------
    def build_vectors():
        from reptune.diagnostics import plot_layer_accuracy

        model, tok = load_base(margs)
        pairs = claims_to_pairs(train_claims, tok, mode=hargs.pairing_mode)
        position = (
            hargs.extract_position[0]
            if len(hargs.extract_position) == 1
            else hargs.extract_position
        )
        vecs = extract_vectors(
            model, tok, pairs, hargs.extract_layers, hargs.extract_method, position
        )
        vecs.save(run_dir / "vectors")
        plot_layer_accuracy(vecs, run_dir / "report/layer_accuracy.png")
        return {"layers": vecs.layers}

    stages.run("vectors", build_vectors, s_vectors)
    model, tok = load_base(margs)
    vecs = SteeringVectors.load(run_dir / "vectors", model=model)

    # 3. layers: held-out separation accuracy ------------------------------------------------
    def choose_layers():
        from reptune.diagnostics import plot_pca_scatter

        pairs = claims_to_pairs(test_claims, tok, mode=hargs.pairing_mode)
        texts = [p.positive for p in pairs] + [p.negative for p in pairs]
        position = (
            hargs.extract_position if len(hargs.extract_position) > 1 else hargs.extract_position[0]
        )
        acts = {layer: [] for layer in vecs.layers}
        for start in range(0, len(texts), 16):
            part = read_activations(model, tok, texts[start : start + 16], vecs.layers, position)
            for layer in vecs.layers:
                acts[layer].append(part[layer])
        n = len(pairs)
        heldout = {}
        for layer in vecs.layers:
            a = torch.cat(acts[layer])
            proj = (a[:n] - a[n:]) @ vecs[layer].to(a)
            heldout[layer] = float((proj > 0).float().mean())
        ranked = sorted(heldout, key=lambda k: (-heldout[k], k))
        steer = hargs.steer_layers or ranked[:1]
        best = steer[0]
        rep = targs.rep_layers
        if not rep:
            half = hargs.num_rep_layers // 2
            lo = max(0, min(best - half, max(vecs.layers) - hargs.num_rep_layers + 1))
            rep = [k for k in range(lo, lo + hargs.num_rep_layers) if k in vecs.layers]
        plot_pca_scatter(model, tok, pairs, best, position, run_dir / "report/pca_scatter.png")
        return {"heldout_accuracy": heldout, "steer_layers": steer, "rep_layers": rep}

    layer_info = stages.run("layers", choose_layers, s_layers)
    heldout = {int(k): v for k, v in layer_info["heldout_accuracy"].items()}
    steer_layers, rep_layers = layer_info["steer_layers"], layer_info["rep_layers"]
    targs.rep_layers = rep_layers
    targs.vectors = str(run_dir / "vectors")

    # 4. steering sweep on (a sample of) the training claims: picks the coefficient ---------
    def sweep():
        from reptune.evaluation import steering_sweep
        from reptune.pairs import claim_prompt

        prompts = [claim_prompt(tok, c) for c in train_claims]
        unit = coefficient_unit(model, tok, steer_layers[0], prompts, hargs.coefficient_scale)
        items = claim_items(train_claims[: hargs.sweep_limit])
        coefs = [c * unit for c in hargs.sweep_coefficients]
        res = steering_sweep(
            model,
            tok,
            vecs,
            items,
            steer_layers,
            coefs,
            ablate=True,
            scorer="letter",
            conditions=["honest", "dishonest"],
            progress=True,
            coefficient_unit="raw",
        )
        res.save(run_dir / "report", "sweep")
        # The "steered" model of the evaluation: the strongest honest push that the sweep on
        # training claims rates best under the dishonest persona.
        cands = [
            r
            for r in res.rows
            if r.get("condition") == "dishonest"
            and r.get("mode", "add") == "add"
            and r["coefficient"] > 0
        ]
        best = max(cands, key=lambda r: (r["target_rate"], -r["coefficient"]))
        return {"unit": unit, "rows": res.rows, "best_coefficient": best["coefficient"]}

    sweep_info = stages.run("sweep", sweep, s_sweep)

    # 5-6. tuning and token-only baselines ---------------------------------------------------
    train_settings = s_layers | {"train": _training_settings(targs)}
    variants = {}
    for target in hargs.tune_targets:
        name = {"toward": "honest", "away": "dishonest", "orthogonal": "orthogonal"}[target]
        variants[name] = dict(target=target, token_only=False, honest=target != "away")
    if hargs.token_baselines:
        variants["truth"] = dict(target="toward", token_only=True, honest=True)
        variants["lie"] = dict(target="toward", token_only=True, honest=False)
    train_metrics = {}
    for name, spec in variants.items():
        out = run_dir / ("adapter" if name == "honest" else f"models/{name}")
        rows = claim_rows(train_claims, spec["honest"])
        train_metrics[name] = stages.run(
            f"tune_{name}",
            lambda out=out, rows=rows, spec=spec: train_adapter(
                margs, targs, vecs, rows, out, target=spec["target"], token_only=spec["token_only"]
            ),
            train_settings | {"variant": spec},
            main_process_only=False,
        )
    write_json(
        run_dir / "reptune_config.json",
        {
            "base_model": margs.model,
            **{
                k: v for k, v in targs.to_dict().items() if k.startswith(("rep_", "lm_", "retain_"))
            },
            "learning_rate": targs.learning_rate,
            "num_train_epochs": targs.num_train_epochs,
            "per_device_train_batch_size": targs.per_device_train_batch_size,
            "use_lora": margs.use_lora,
            "lora_r": margs.lora_r,
            "dataset": hargs.claims,
            "vectors_method": hargs.extract_method,
            "steer_layers": steer_layers,
        },
    )

    def model_dir(name):
        return (
            None
            if name == "base"
            else run_dir / ("adapter" if name == "honest" else f"models/{name}")
        )

    # 7. evaluation ----------------------------------------------------------------------------
    def evaluate():
        from reptune.evaluation import evaluate_honesty, load_items
        from reptune.steering import SteeredModel

        sets = {"held-out claims": claim_items(test_claims)}
        for path in hargs.eval_sets:
            path = resolve_data(path)
            sets[Path(path).stem] = load_items(path, limit=hargs.eval_limit, seed=targs.seed)
        rows, cosines = [], {}
        names = ["base", "steered", *variants]
        for name in names:
            m, t = load_tuned(margs, model_dir(name if name != "steered" else "base"))
            if name == "steered":
                m = SteeredModel(
                    m,
                    vecs,
                    layers=steer_layers,
                    coefficient=sweep_info["best_coefficient"],
                    coefficient_unit="raw",
                )
            for set_name, items in sets.items():
                res = evaluate_honesty(m, t, items, hargs.scorer)
                rows.append(
                    {
                        "model": name,
                        "dataset": set_name,
                        "honest_persona": res["honest"].target.value,
                        "honest_persona_low": res["honest"].target.low,
                        "honest_persona_high": res["honest"].target.high,
                        "dishonest_persona": res["dishonest"].target.value,
                        "dishonest_persona_low": res["dishonest"].target.low,
                        "dishonest_persona_high": res["dishonest"].target.high,
                        "n": res["honest"].n,
                    }
                )
            if name != "steered":
                test_rows = claim_rows(test_claims, True)
                cosines[name] = target_cosines(
                    m, t, vecs, test_rows, rep_layers, parse_positions(targs.rep_positions)
                )
            del m
        return {"rows": rows, "cosines": cosines}

    s_eval = (
        train_settings
        | s_sweep
        | pick("tune_targets", "token_baselines", "scorer", "eval_sets", "eval_limit")
    )
    eval_info = stages.run("evaluate", evaluate, s_eval)

    # 8. robustness: dishonesty steering applied to the tuned models ---------------------------
    def robustness():
        from reptune.evaluation import robustness_sweep

        loaders = [
            (n, (lambda n=n: load_tuned(margs, model_dir(n))[0]))
            for n in ("base", "truth", "honest")
            if n == "base" or n in variants
        ]
        coefs = [c * sweep_info["unit"] for c in hargs.robustness_coefficients]
        res = robustness_sweep(
            loaders,
            tok,
            vecs,
            claim_items(test_claims),
            steer_layers[:1],
            coefs,
            scorer="letter",
            conditions=["honest"],
            progress=True,
            coefficient_unit="raw",
        )
        res.save(run_dir / "report", "robustness")
        return {"rows": res.rows}

    robust_info = stages.run("robustness", robustness, s_eval | pick("robustness_coefficients"))

    # 9. perplexity ---------------------------------------------------------------------------
    def ppl():
        from reptune.evaluation import load_text

        text = load_text(resolve_data(hargs.perplexity_text))
        models = {n: load_tuned(margs, model_dir(n)) for n in ("base", *variants)}
        return {
            "rows": perplexity_rows(models, text, hargs.perplexity_window, hargs.perplexity_stride)
        }

    s_ppl = s_eval | pick("perplexity_text", "perplexity_window", "perplexity_stride")
    ppl_info = stages.run("perplexity", ppl, s_ppl) if hargs.perplexity_text else None

    # 10. trade-off curves (optional) ------------------------------------------------------------
    def tradeoff():
        from reptune.evaluation import load_items, plot_tradeoff, tradeoff_study

        helpful = load_items(
            resolve_data(hargs.tradeoff_items),
            n_choices=4,
            limit=hargs.tradeoff_limit,
            seed=targs.seed,
        )
        coefs = [c * sweep_info["unit"] for c in hargs.tradeoff_coefficients]
        res = tradeoff_study(
            model,
            tok,
            vecs,
            steer_layers[0],
            coefs,
            helpfulness_items=helpful,
            behaviour_items=claim_items(test_claims),
            progress=True,
            coefficient_unit="raw",
        )
        plot_tradeoff(res.rows, res.fits, run_dir / "report/tradeoff.png")
        return {"rows": res.rows, "fits": res.fit_rows(), "layer": res.layer}

    s_trade = s_sweep | pick("tradeoff_items", "tradeoff_coefficients", "tradeoff_limit")
    trade_info = stages.run("tradeoff", tradeoff, s_trade) if hargs.tradeoff_items else None

    # 11. second behaviour ----------------------------------------------------------------------
    behaviour_info = None
    if hargs.behaviour:
        from behaviour import BehaviourArguments, run_behaviour_section

        bargs = BehaviourArguments(
            pairs=hargs.behaviour,
            layers=hargs.behaviour_layers,
            steer_layer=hargs.behaviour_steer_layer,
            eval_prompts=hargs.behaviour_eval_prompts,
            new_tokens=hargs.behaviour_new_tokens,
        )
        behaviour_info = run_behaviour_section(bargs, margs, targs, stages, run_dir)

    # 12. report, card, push ---------------------------------------------------------------------
    from report import write_honesty_report

    # The report and card are cheap: rewritten on every run so they show this run's timings.
    if stages.state.is_main_process:
        write_honesty_report(
            run_dir,
            margs,
            hargs,
            data_info,
            heldout,
            layer_info,
            sweep_info,
            train_metrics,
            eval_info,
            robust_info,
            ppl_info,
            trade_info,
            behaviour_info,
            stages,
        )
    finish_run(margs, run_dir, stages)
    print(f"report: {run_dir / 'report/report.md'}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (ValueError, FileNotFoundError) as err:
        # Bad input: one line with the reason.
        sys.exit(f"{Path(__file__).name}: error: {err}")
