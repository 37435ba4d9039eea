"""A behaviour section: vectors -> dev choice of layer and coefficient -> self-generated rows ->
tuned variants (checkpoint chosen on dev) -> every condition measured on test prompts.

The protocol follows the field's steering benchmark (AxBench): layer, coefficient, training steps
and checkpoint are chosen on dev prompts only; every reported number comes from test prompts
and carries an interval; each generation is scored on behaviour, fluency and relevance, with
their harmonic mean; and the conditions a reviewer asks for sit in one table: the base model,
prompting (a system prompt asking for the behaviour), steering (the dev-best coefficient),
token-level SFT on the steered model's own answers, representation tuning with the published
cosine loss, and representation tuning with the steer objective.

Example:
    >>> section = run_behaviour(BehaviourArguments(), margs, targs, stages)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from ..behaviours.sentiment import (
    POSITIVE_INSTRUCTION,
    load_eval_prompts,
    load_heldout_text,
    load_sentiment_pairs,
    load_train_prompts,
    positivity,
)
from ..evaluation.ab import generate_texts, with_coefficient
from ..evaluation.quality import KLReference, QualityScores, next_token_kl, score_generations
from ..evaluation.stats import mean_interval
from ..extract import extract_vectors
from ..io import read_jsonl, write_jsonl
from ..pairs import format_chat
from ..steering import SteeredModel
from ..vectors import SteeringVectors
from .measure import generate_condition, perplexity_rows, quality_rows, target_cosines
from .select import best_layer, choose_best, heldout_separation, split_dev_test
from .stages import StageRunner
from .variants import DevSelection, load_variant, steered_rows, train_variant

__all__ = ["BehaviourArguments", "VARIANTS", "BEHAVIOURS", "run_behaviour"]

#: The tuned variants and what each changes in the training settings.
VARIANTS: dict[str, dict] = {
    "token-sft": {"rep_weight": 0.0, "lm_weight": 1.0},
    "rep-cosine": {"rep_target": "toward"},
    "rep-steer": {"rep_target": "steer", "lm_weight": 0.0},
}


#: The field of BehaviourArguments holding each variant's training steps.
STEPS = {"token-sft": "sft_steps", "rep-cosine": "cosine_steps", "rep-steer": "steer_steps"}


@dataclass
class BehaviourSpec:
    """What a behaviour brings: pairs, prompts, a scorer in [0, 1] and a prompting baseline."""

    name: str
    pairs: object  # callable(tokenizer, split) -> list[ContrastivePair]
    train_prompts: object  # callable() -> list[str]
    eval_prompts: object  # callable() -> list[str]
    score: object  # callable(judge_model, tokenizer, texts, prompts) -> list[float] in [0, 1]
    instruction: str


BEHAVIOURS = {
    "sentiment": BehaviourSpec(
        "sentiment",
        load_sentiment_pairs,
        load_train_prompts,
        lambda: load_eval_prompts(chat=False),
        lambda judge, tok, texts, prompts: positivity(judge, tok, texts),
        POSITIVE_INSTRUCTION,
    ),
    "caa": None,  # built from the files in BehaviourArguments (see _caa_spec)
}


def _caa_spec(bargs) -> BehaviourSpec:
    """A CAA A/B behaviour: vectors from the pairs file, answers scored 1 when the generated
    answer picks the behaviour-matching letter (parsed as in the A/B evaluation), else 0."""
    from ..evaluation.parsing import parse_answer
    from ..io import read_records, resolve_data
    from ..pairs import load_caa_pairs, split_pairs

    def rows(path):
        return [r for r in read_records(resolve_data(path)) if isinstance(r, dict)]

    train_rows, test_rows = split_pairs(rows(bargs.pairs), 0.2, 0)
    eval_rows = rows(bargs.eval_items)
    wanted = {r["question"]: r["answer_matching_behavior"].strip(" ()") for r in eval_rows}

    def pairs(tok, split):
        chosen = {id(r) for r in (train_rows if split == "train" else test_rows)}
        every = load_caa_pairs(resolve_data(bargs.pairs), tok)
        return [p for p, r in zip(every, rows(bargs.pairs)) if id(r) in chosen] or every

    def score(judge, tok, texts, prompts):
        return [float(parse_answer(t, ("A", "B")) == wanted.get(p)) for t, p in zip(texts, prompts)]

    return BehaviourSpec(
        Path(bargs.pairs).stem,
        pairs,
        lambda: [r["question"] for r in train_rows],
        lambda: [r["question"] for r in eval_rows],
        score,
        bargs.instruction,
    )


@dataclass
class BehaviourArguments:
    """What the behaviour section does (model and training settings are separate)."""

    behaviour: str = field(
        default="sentiment",
        metadata={"help": "'sentiment' (shipped data) or 'caa' (A/B files: pairs, eval_items)"},
    )
    pairs: str | None = field(
        default=None, metadata={"help": "caa: the A/B file the vectors and rows come from"}
    )
    eval_items: str | None = field(
        default=None, metadata={"help": "caa: the A/B file of dev and test prompts"}
    )
    instruction: str | None = field(
        default=None,
        metadata={"help": "the prompting baseline's system prompt (default: the behaviour's)"},
    )
    layers: list[int] | None = field(default=None, metadata={"help": "layers to extract"})
    steer_layers: list[int] | None = field(
        default=None,
        metadata={"help": "candidate layers for the dev choice (default: best held-out)"},
    )
    coefficients: list[float] = field(
        default_factory=lambda: [0.05, 0.1, 0.15, 0.2, 0.3],
        metadata={"help": "dev grid of steering coefficients (fractions of the residual norm)"},
    )
    dev_prompts: int = field(default=20, metadata={"help": "prompts used for every choice"})
    test_prompts: int = field(default=40, metadata={"help": "prompts every number comes from"})
    new_tokens: int = field(default=24, metadata={"help": "tokens generated per answer"})
    train_prompts: int | None = field(
        default=None, metadata={"help": "prompts answered by the steered model for training"}
    )
    row_tokens: int = field(default=32, metadata={"help": "tokens of each self-generated row"})
    variants: list[str] = field(
        default_factory=lambda: list(VARIANTS),
        metadata={"help": f"tuned variants to train: {list(VARIANTS)}"},
    )
    sft_steps: int = field(default=40, metadata={"help": "training steps of token-sft"})
    cosine_steps: int = field(default=40, metadata={"help": "training steps of rep-cosine"})
    steer_steps: int = field(default=40, metadata={"help": "training steps of rep-steer"})
    tune_learning_rate: float = field(
        default=2e-3, metadata={"help": "learning rate of the variants"}
    )
    cosine_lm_weight: float = field(
        default=0.1, metadata={"help": "token-loss weight of the cosine variant"}
    )
    tune_batch_size: int = field(default=4, metadata={"help": "training batch size"})
    select_every: int = field(
        default=10,
        metadata={
            "help": "steps between checkpoints; the one closest to the steered model on dev "
            "prompts (mean next-token KL along its answers) is kept"
        },
    )
    distractors: int = field(default=3, metadata={"help": "other prompts for the relevance axis"})
    diagnostic_prompts: int = field(
        default=4,
        metadata={
            "help": "test prompts of the generation-time projections and the PCA view (0 = off)"
        },
    )
    perplexity_window: int = field(default=128, metadata={"help": "perplexity window (tokens)"})
    perplexity_stride: int = field(default=64, metadata={"help": "perplexity stride (tokens)"})

    def __post_init__(self):
        if self.behaviour not in BEHAVIOURS:
            raise ValueError(
                f"unknown behaviour {self.behaviour!r}: use one of {sorted(BEHAVIOURS)}"
            )
        unknown = [v for v in self.variants if v not in VARIANTS]
        if unknown:
            raise ValueError(f"unknown variants {unknown}: use {list(VARIANTS)}")
        if not self.coefficients:
            raise ValueError("coefficients is empty: give the dev grid of steering coefficients")
        if self.behaviour == "caa":
            missing = [n for n in ("pairs", "eval_items", "instruction") if not getattr(self, n)]
            if missing:
                raise ValueError(f"behaviour 'caa' needs {missing} (the A/B files and a prompt)")

    def spec(self) -> BehaviourSpec:
        """The behaviour's data, scorer and prompting baseline."""
        if self.behaviour == "caa":
            return _caa_spec(self)
        spec = BEHAVIOURS[self.behaviour]
        if self.instruction:
            spec = dataclasses.replace(spec, instruction=self.instruction)
        return spec


class _Scorer:
    """Scores answers on the three axes with the frozen base model as the yardstick."""

    def __init__(self, spec: BehaviourSpec, base, tok, distractors: int):
        self.spec, self.base, self.tok, self.distractors = spec, base, tok, distractors

    def __call__(self, prompts: Sequence[str], texts: Sequence[str]) -> QualityScores:
        chat = [format_chat(self.tok, p) for p in prompts]
        behaviour = self.spec.score(self.base, self.tok, texts, prompts)
        return score_generations(
            self.base, self.tok, chat, texts, behaviour, distractors=self.distractors
        )


def _dev_sweep(bargs, vecs, layers, dev, base, tok, score) -> list[dict]:
    """Every coefficient of the grid on the dev prompts, one layer at a time; all coefficients
    of a layer are generated in shared batches (one coefficient per row) and scored together."""
    rows = []
    coefs = [float(c) for c in bargs.coefficients]
    chat = [format_chat(tok, p) for p in dev]
    for layer in layers:
        steered = SteeredModel(base, vecs, layers=[layer])
        texts = generate_texts(
            steered,
            tok,
            chat * len(coefs),
            coefficients=torch.tensor([c for c in coefs for _ in dev]),
            max_new_tokens=bargs.new_tokens,
            batch_size=32,
        )
        q = score(dev * len(coefs), texts)
        n = len(dev)
        for i, c in enumerate(coefs):
            row = {"layer": layer, "coefficient": c, "coefficient_unit": "residual_norm"}
            for axis in ("behaviour", "fluency", "relevance", "harmonic"):
                m = mean_interval(getattr(q, axis)[i * n : (i + 1) * n])
                row.update({axis: m.value, f"{axis}_low": m.low, f"{axis}_high": m.high})
            rows.append(row)
    return rows


def run_behaviour(bargs: BehaviourArguments, margs, targs, stages: StageRunner, name="behaviour"):
    """Run the behaviour's stages under ``<run>/<name>/``; return the report material.

    Example:
        >>> material = run_behaviour(BehaviourArguments(), ModelArguments(), targs, stages)
    """
    spec = bargs.spec()
    layout = stages.layout.section(name)
    settings = {"model": asdict(margs), "behaviour": asdict(bargs), "seed": targs.seed}
    # The prompt counts are checked before anything loads: a split never shrinks.
    dev, test = split_dev_test(spec.eval_prompts(), bargs.dev_prompts, bargs.test_prompts)
    base, tok = margs.load()
    score = _Scorer(spec, base, tok, bargs.distractors)

    def vectors():
        train, held_out = spec.pairs(tok, "train"), spec.pairs(tok, "test")
        vecs = extract_vectors(base, tok, train, bargs.layers, "mean_diff", -1, progress=False)
        vecs.save(layout.vectors_dir)
        acc = heldout_separation(base, tok, vecs, held_out, -1)
        diag = vecs.metadata["diagnostics"]
        best = best_layer(acc, {k: d["explained_variance"] for k, d in diag.items()})
        return {"heldout": acc, "best_layer": best, "pairs": [len(train), len(held_out)]}

    info = stages.run(f"{name}_vectors", vectors, settings)
    vecs = SteeringVectors.load(layout.vectors_dir, model=base)
    candidates = bargs.steer_layers or [info["best_layer"]]

    def choose():  # dev prompts only
        rows = _dev_sweep(bargs, vecs, candidates, dev, base, tok, score)
        best = choose_best(rows, lambda r: r["harmonic"], lambda r: abs(r["coefficient"]))
        return {"rows": rows, "layer": best["layer"], "coefficient": best["coefficient"]}

    chosen = stages.run(f"{name}_select", choose, settings | {"candidates": candidates})
    layer, coef = chosen["layer"], chosen["coefficient"]
    steered = SteeredModel(base, vecs, layers=[layer])
    rows_file = layout.data_file("steered_rows.jsonl")

    dev_file = layout.data_file("steered_dev_answers.jsonl")

    def rows():
        prompts = spec.train_prompts()[: bargs.train_prompts]
        written = steered_rows(base, tok, prompts, steered, coef, max_new_tokens=bargs.row_tokens)
        write_jsonl(rows_file, written)
        # The steered model's dev answers: the yardstick of the checkpoint choice.
        answers = generate_condition(
            steered, tok, dev, coefficient=coef, new_tokens=bargs.new_tokens
        )
        write_jsonl(dev_file, [{"prompt": p, "answer": a} for p, a in zip(dev, answers)])
        return {"rows": len(written), "prompts": len(prompts)}

    s_rows = settings | {"chosen": chosen}
    stages.run(f"{name}_rows", rows, s_rows)
    train_rows = read_jsonl(rows_file)
    dev_answers = [r["answer"] for r in read_jsonl(dev_file)]
    dev_chat = [format_chat(tok, p) for p in dev]
    bound = with_coefficient(steered, torch.tensor(float(coef)))
    dev_reference = None

    def dev_score(model) -> float:
        """Closeness to the steered model on dev prompts (higher is closer)."""
        nonlocal dev_reference
        if dev_reference is None:  # the steered model's side, computed once for every snapshot
            dev_reference = KLReference(bound, tok, dev_chat, dev_answers)
        kl = dev_reference.kl(model)
        return -sum(kl) / len(kl)

    trained = {}
    for variant in bargs.variants:
        overrides = dict(VARIANTS[variant])
        if variant == "rep-cosine":
            overrides["lm_weight"] = bargs.cosine_lm_weight
        if variant == "rep-steer":
            overrides.update(steer_coefficient=coef, coefficient_unit="residual_norm")
        overrides.update(
            rep_layers=[layer],
            rep_positions="all",
            learning_rate=bargs.tune_learning_rate,
            max_steps=getattr(bargs, STEPS[variant]),
            per_device_train_batch_size=bargs.tune_batch_size,
            num_train_epochs=1.0,
            save_strategy="no",
        )
        trained[variant] = stages.run(
            f"{name}_tune_{variant}",
            lambda v=variant, o=overrides: train_variant(
                margs,
                targs,
                vecs,
                train_rows,
                layout.model_dir(v),
                select=DevSelection(dev_score, bargs.select_every),
                **o,
            ),
            s_rows | {"train": targs.to_dict(), "variant": overrides},
            main_process_only=False,
        )

    def evaluate():  # test prompts only
        conditions = {
            "base": (base, None, None),
            "prompting": (base, None, spec.instruction),
            "steered": (steered, coef, None),
        }
        tuned = {v: load_variant(margs, layout.model_dir(v), merge=True)[0] for v in bargs.variants}
        conditions |= {v: (m, None, None) for v, m in tuned.items()}
        texts = {
            cname: generate_condition(
                m, tok, test, coefficient=c, system=sys_prompt, new_tokens=bargs.new_tokens
            )
            for cname, (m, c, sys_prompt) in conditions.items()
        }
        scores = {cname: score(test, t) for cname, t in texts.items()}
        chat = [format_chat(tok, p) for p in test]
        compared = {"base": base, **tuned}
        kl = {}
        for cname, values in next_token_kl(bound, compared, tok, chat, texts["steered"]).items():
            m = mean_interval(values)
            kl[cname] = {"kl_to_steered": m.value, "kl_low": m.low, "kl_high": m.high}
        ppl_models = {"base": (base, tok), "steered": (bound, tok)}
        ppl_models |= {v: (m, tok) for v, m in tuned.items()}
        ppl = perplexity_rows(
            ppl_models, load_heldout_text(), bargs.perplexity_window, bargs.perplexity_stride
        )
        probe = [{"prompt": p} for p in test]
        cosines = {
            c: target_cosines(m, tok, vecs, probe, [layer], "all")[layer]
            for c, (m, _, _) in conditions.items()
            if c not in ("steered", "prompting")
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

    s_eval = s_rows | {"trained": trained, "test": len(test)}
    evaluated = stages.run(f"{name}_evaluate", evaluate, s_eval)

    def diagnostics():  # report material on a few test prompts: nothing is chosen here
        from ..evaluation.sections import pca_section, projection_section

        models = {
            "base": base,
            "steered": SteeredModel(base, vecs, layers=[layer], coefficient=coef),
        }
        if "rep-steer" in bargs.variants:
            models["rep-steer"] = load_variant(margs, layout.model_dir("rep-steer"), merge=True)[0]
        chat = [format_chat(tok, p) for p in test[: bargs.diagnostic_prompts]]
        projections = projection_section(
            models,
            tok,
            vecs,
            chat,
            vecs.layers,
            layout.report_dir,
            max_new_tokens=bargs.new_tokens,
        )
        pca = pca_section(base, tok, spec.pairs(tok, "train"), layer, layout.report_dir)
        return {"sections": [projections, pca]}

    diagnosed = None
    if bargs.diagnostic_prompts:
        diagnosed = stages.run(f"{name}_diagnostics", diagnostics, s_eval)
    return {
        "diagnostics": diagnosed,
        "name": spec.name,
        "layout": layout,
        "vectors": info,
        "chosen": chosen,
        "trained": trained,
        "evaluated": evaluated,
        "dev": len(dev),
        "test": len(test),
        "rows": len(train_rows),
    }
