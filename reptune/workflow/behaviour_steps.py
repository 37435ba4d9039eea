"""The steps of a behaviour section, in order; each runs one resumable stage (or one per tuned
variant) and records what later steps need on the shared :class:`BehaviourRun`.

Example:
    >>> run = BehaviourRun(bargs, margs, targs, stages, "behaviour", spec, base, tok, settings)
    >>> extract_behaviour_vectors(run); choose_steering(run); write_steered_rows(run)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from ..behaviours import BehaviourSpec
from ..behaviours.sentiment import load_heldout_text
from ..evaluation.ab.scoring import generate_texts, with_coefficient
from ..evaluation.open_ended.quality import (
    KLReference,
    QualityScores,
    next_token_kl,
    score_generations,
)
from ..evaluation.stats import mean_interval
from ..extract import extract_vectors
from ..io import read_jsonl, write_jsonl
from ..pairs import format_chat
from ..steering import SteeredModel
from ..vectors import SteeringVectors
from . import behaviour_objectives as objectives
from .measure import generate_condition, perplexity_rows, quality_rows, target_cosines
from .select import best_layer, choose_best, heldout_separation
from .stages import StageRunner
from .variants import DevSelection, load_variant, steered_rows, train_variant

__all__ = [
    "STEPS",
    "VARIANTS",
    "BehaviourRun",
    "QualityScorer",
    "choose_steering",
    "diagnose",
    "evaluate_conditions",
    "extract_behaviour_vectors",
    "tune_behaviour_variants",
    "write_steered_rows",
]

#: The tuned variants and what each changes in the training settings.
VARIANTS: dict[str, dict] = {
    "token-sft": {"rep_weight": 0.0, "lm_weight": 1.0},
    "rep-cosine": {"rep_target": "toward"},
    "rep-steer": {"rep_target": "steer", "lm_weight": 0.0},
    **objectives.PROMPT_VARIANTS,
}

#: The field of BehaviourArguments holding each variant's training steps.
STEPS = {"token-sft": "sft_steps", "rep-cosine": "cosine_steps", "rep-steer": "steer_steps"}
STEPS |= dict.fromkeys(objectives.PROMPT_VARIANTS, "prompt_steps")


class QualityScorer:
    """Scores answers on the three axes with the frozen base model as the yardstick.

    Example:
        >>> scores = QualityScorer(spec, base, tok, distractors=3)(prompts, texts)
    """

    def __init__(self, spec: BehaviourSpec, base, tok, distractors: int):
        self.spec, self.base, self.tok, self.distractors = spec, base, tok, distractors

    def __call__(self, prompts: Sequence[str], texts: Sequence[str]) -> QualityScores:
        chat = [format_chat(self.tok, p) for p in prompts]
        behaviour = self.spec.score(self.base, self.tok, texts, prompts)
        return score_generations(
            self.base, self.tok, chat, texts, behaviour, distractors=self.distractors
        )


@dataclass
class BehaviourRun:
    """What the steps share: the arguments, the behaviour, the base model, the dev and test
    prompts, and what the earlier steps produced (vectors, the choice, rows, tuned variants).

    Example:
        >>> run = BehaviourRun(bargs, margs, targs, stages, "behaviour", spec, base, tok, settings)
    """

    bargs: object
    margs: object
    targs: object
    stages: StageRunner
    name: str
    spec: BehaviourSpec
    base: object
    tok: object
    settings: dict
    dev: list[str] = field(default_factory=list)
    test: list[str] = field(default_factory=list)
    vecs: SteeringVectors | None = None
    layer: int | None = None
    coefficient: float | None = None
    train_rows: list[dict] = field(default_factory=list)
    prompted_rows: list[dict] = field(default_factory=list)
    trained: dict[str, dict] = field(default_factory=dict)

    def __post_init__(self):
        self.layout = self.stages.layout.section(self.name)
        self.score = QualityScorer(self.spec, self.base, self.tok, self.bargs.distractors)

    def steered(self, **kwargs) -> SteeredModel:
        """The base model steered at the chosen layer."""
        return SteeredModel(self.base, self.vecs, layers=[self.layer], **kwargs)


def extract_behaviour_vectors(run: BehaviourRun) -> dict:
    """Vectors from the train pairs; the best layer by held-out separation."""
    base, tok, bargs = run.base, run.tok, run.bargs

    def vectors():
        train, held_out = run.spec.pairs(tok, "train"), run.spec.pairs(tok, "test")
        vecs = extract_vectors(base, tok, train, bargs.layers, "mean_diff", -1, progress=False)
        vecs.save(run.layout.vectors_dir)
        acc = heldout_separation(base, tok, vecs, held_out, -1)
        diag = vecs.metadata["diagnostics"]
        best = best_layer(acc, {k: d["explained_variance"] for k, d in diag.items()})
        return {"heldout": acc, "best_layer": best, "pairs": [len(train), len(held_out)]}

    info = run.stages.run(f"{run.name}_vectors", vectors, run.settings)
    run.vecs = SteeringVectors.load(run.layout.vectors_dir, model=base)
    return info


def _dev_sweep(run: BehaviourRun, layers: Sequence[int]) -> list[dict]:
    """Every coefficient of the grid on the dev prompts, one layer at a time; all coefficients
    of a layer are generated in shared batches (one coefficient per row) and scored together."""
    rows = []
    dev, coefs = run.dev, [float(c) for c in run.bargs.coefficients]
    chat = [format_chat(run.tok, p) for p in dev]
    for layer in layers:
        steered = SteeredModel(run.base, run.vecs, layers=[layer])
        texts = generate_texts(
            steered,
            run.tok,
            chat * len(coefs),
            coefficients=torch.tensor([c for c in coefs for _ in dev]),
            max_new_tokens=run.bargs.new_tokens,
            batch_size=32,
        )
        q = run.score(dev * len(coefs), texts)
        n = len(dev)
        for i, c in enumerate(coefs):
            row = {"layer": layer, "coefficient": c, "coefficient_unit": "residual_norm"}
            for axis in ("behaviour", "fluency", "relevance", "harmonic"):
                m = mean_interval(getattr(q, axis)[i * n : (i + 1) * n])
                row.update({axis: m.value, f"{axis}_low": m.low, f"{axis}_high": m.high})
            rows.append(row)
    return rows


def choose_steering(run: BehaviourRun, best_layer_found: int) -> dict:
    """Layer and coefficient with the best harmonic mean on the dev prompts (dev only)."""
    candidates = run.bargs.steer_layers or [best_layer_found]

    def choose():
        rows = _dev_sweep(run, candidates)
        best = choose_best(rows, lambda r: r["harmonic"], lambda r: abs(r["coefficient"]))
        return {"rows": rows, "layer": best["layer"], "coefficient": best["coefficient"]}

    chosen = run.stages.run(f"{run.name}_select", choose, run.settings | {"candidates": candidates})
    run.layer, run.coefficient = chosen["layer"], chosen["coefficient"]
    run.settings = run.settings | {"chosen": chosen}
    return chosen


def write_steered_rows(run: BehaviourRun) -> list[str]:
    """The steered model's answers: training rows, and its dev answers (the yardstick of the
    checkpoint choice). Returns the dev answers."""
    rows_file = run.layout.data_file("steered_rows.jsonl")
    dev_file = run.layout.data_file("steered_dev_answers.jsonl")
    steered, coef, bargs = run.steered(), run.coefficient, run.bargs

    def rows():
        prompts = run.spec.train_prompts()[: bargs.train_prompts]
        written = steered_rows(
            run.base, run.tok, prompts, steered, coef, max_new_tokens=bargs.row_tokens
        )
        write_jsonl(rows_file, written)
        answers = generate_condition(
            steered, run.tok, run.dev, coefficient=coef, new_tokens=bargs.new_tokens
        )
        write_jsonl(dev_file, [{"prompt": p, "answer": a} for p, a in zip(run.dev, answers)])
        return {"rows": len(written), "prompts": len(prompts)}

    run.stages.run(f"{run.name}_rows", rows, run.settings)
    run.train_rows = read_jsonl(rows_file)
    return [r["answer"] for r in read_jsonl(dev_file)]


def _variant_overrides(run: BehaviourRun, variant: str) -> dict:
    """The training settings variant ``variant`` changes."""
    bargs = run.bargs
    overrides = dict(VARIANTS[variant]) | objectives.objective_overrides(run, variant)
    if variant == "rep-cosine":
        overrides["lm_weight"] = bargs.cosine_lm_weight
    if variant == "rep-steer":
        overrides.update(steer_coefficient=run.coefficient, coefficient_unit="residual_norm")
    overrides.update(
        rep_layers=[run.layer],
        rep_positions="all",
        learning_rate=bargs.tune_learning_rate,
        max_steps=getattr(bargs, STEPS[variant]),
        per_device_train_batch_size=bargs.tune_batch_size,
        num_train_epochs=1.0,
        save_strategy="no",
    )
    return overrides


def tune_behaviour_variants(run: BehaviourRun, dev_answers: list[str]) -> dict:
    """Train every variant on the steered rows; keep the checkpoint closest to the steered
    model on the dev prompts (mean next-token KL along its dev answers)."""
    dev_chat = [format_chat(run.tok, p) for p in run.dev]
    bound = with_coefficient(run.steered(), torch.tensor(float(run.coefficient)))
    reference = []

    def dev_score(model) -> float:
        """Closeness to the steered model on dev prompts (higher is closer)."""
        if not reference:  # the steered model's side, computed once for every snapshot
            reference.append(KLReference(bound, run.tok, dev_chat, dev_answers))
        kl = reference[0].kl(model)
        return -sum(kl) / len(kl)

    for variant in run.bargs.variants:
        overrides = _variant_overrides(run, variant)
        run.trained[variant] = run.stages.run(
            f"{run.name}_tune_{variant}",
            lambda v=variant, o=overrides: train_variant(
                run.margs,
                run.targs,
                run.vecs,
                objectives.variant_rows(run, v),
                run.layout.model_dir(v),
                # the prompt variants imitate the prompted model: their last step is kept
                select=None
                if v in objectives.PROMPT_VARIANTS
                else DevSelection(dev_score, run.bargs.select_every),
                **o,
            ),
            run.settings | {"train": run.targs.to_dict(), "variant": overrides},
            main_process_only=False,
        )
    return run.trained


def _kl_rows(bound, compared: dict, tok, chat, steered_texts) -> dict:
    """Each model's mean next-token KL to the steered model along its test answers."""
    kl = {}
    for cname, values in next_token_kl(bound, compared, tok, chat, steered_texts).items():
        m = mean_interval(values)
        kl[cname] = {"kl_to_steered": m.value, "kl_low": m.low, "kl_high": m.high}
    return kl


def evaluate_conditions(run: BehaviourRun, extra: dict | None = None) -> dict:
    """Every condition on the test prompts (test only): quality axes, KL to the steered model,
    perplexity, target cosines and one example answer each."""
    base, tok, bargs, test = run.base, run.tok, run.bargs, run.test

    def evaluate():
        steered = run.steered()
        conditions = {
            "base": (base, None, None),
            "prompting": (base, None, run.spec.instruction),
            "steered": (steered, run.coefficient, None),
        }
        tuned = {
            v: load_variant(run.margs, run.layout.model_dir(v), merge=True)[0]
            for v in bargs.variants
        }
        conditions |= {v: (m, None, None) for v, m in tuned.items()} | (extra or {})
        texts = {
            cname: generate_condition(
                m, tok, test, coefficient=c, system=sys_prompt, new_tokens=bargs.new_tokens
            )
            for cname, (m, c, sys_prompt) in conditions.items()
        }
        scores = {cname: run.score(test, t) for cname, t in texts.items()}
        bound = with_coefficient(steered, torch.tensor(float(run.coefficient)))
        chat = [format_chat(tok, p) for p in test]
        kl = _kl_rows(bound, {"base": base, **tuned}, tok, chat, texts["steered"])
        ppl_models = {"base": (base, tok), "steered": (bound, tok)}
        ppl_models |= {v: (m, tok) for v, m in tuned.items()}
        ppl = perplexity_rows(
            ppl_models, load_heldout_text(), bargs.perplexity_window, bargs.perplexity_stride
        )
        probe = [{"prompt": p} for p in test]
        cosines = {
            c: target_cosines(m, tok, run.vecs, probe, [run.layer], "all")[run.layer]
            for c, (m, _, _) in conditions.items()
            if c not in ("steered", "prompting", *(extra or {}))
        }
        examples = [{"condition": c, "prompt": test[0], "text": t[0]} for c, t in texts.items()]
        return {
            "quality": quality_rows(scores),
            "per_prompt": {c: s.rows() for c, s in scores.items()},
            "kl": kl,
            "perplexity": ppl,
            "cosines": cosines,
            "examples": examples,
        }

    run.settings = run.settings | {"trained": run.trained, "test": len(test)}
    return run.stages.run(f"{run.name}_evaluate", evaluate, run.settings)


def diagnose(run: BehaviourRun) -> dict:
    """Report material on a few test prompts (nothing is chosen here): generation-time
    projections of the base, steered and rep-steer models, and the PCA token view."""

    def diagnostics():
        from ..reporting.sections import pca_section, projection_section

        models = {"base": run.base, "steered": run.steered(coefficient=run.coefficient)}
        if "rep-steer" in run.bargs.variants:
            folder = run.layout.model_dir("rep-steer")
            models["rep-steer"] = load_variant(run.margs, folder, merge=True)[0]
        chat = [format_chat(run.tok, p) for p in run.test[: run.bargs.diagnostic_prompts]]
        projections = projection_section(
            models,
            run.tok,
            run.vecs,
            chat,
            run.vecs.layers,
            run.layout.report_dir,
            max_new_tokens=run.bargs.new_tokens,
        )
        train = run.spec.pairs(run.tok, "train")
        pca = pca_section(run.base, run.tok, train, run.layer, run.layout.report_dir)
        return {"sections": [projections, pca]}

    return run.stages.run(f"{run.name}_diagnostics", diagnostics, run.settings)
