"""The steps of a behaviour section, in order; each runs one resumable stage (or one per tuned
variant) and records what later steps need on the shared :class:`BehaviourRun`.

Every choice (steering layer and coefficient, the prompting wording, each variant's LoRA
placement, learning rate and checkpoint) is made on dev prompts by one criterion: the dev
harmonic mean of the section's independent scorers, the number the report headlines.

Example:
    >>> run = BehaviourRun(bargs, margs, targs, stages, "behaviour", spec, base, tok, settings)
    >>> validate_scorers(run); extract_behaviour_vectors(run); choose_steering(run)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from ..behaviours import BehaviourSpec
from ..behaviours.registry import EvalPrompt
from ..evaluation.ab.scoring import generate_texts
from ..evaluation.stats import mean_interval
from ..extract import extract_vectors
from ..io import read_jsonl, write_jsonl
from ..pairs import format_chat
from ..steering import SteeredModel
from ..vectors import SteeringVectors
from .behaviour_evaluate import (
    answer_and_score,
    compare_conditions,
    reference_measures,
    section_conditions,
    summary_rows,
)
from .behaviour_objectives import compare_at_matched_fluency
from .behaviour_robustness import run_robustness
from .behaviour_scoring import SectionScorers, headline_axes, load_judge, validate_section
from .behaviour_tuning import STEPS, VARIANTS, tune_variants
from .select import best_layer, choose_best, heldout_separation, split_dev_test
from .stages import StageRunner
from .variants import load_variant, steered_rows

__all__ = [
    "STEPS",
    "VARIANTS",
    "BehaviourRun",
    "SystemWording",
    "section_prompts",
    "validate_scorers",
    "choose_steering",
    "choose_prompting",
    "diagnose",
    "evaluate_conditions",
    "extract_behaviour_vectors",
    "tune_behaviour_variants",
    "write_steered_rows",
    "matched_fluency",
    "robustness_study",
]


@dataclass(frozen=True)
class SystemWording:
    """A prompting wording that is one system prompt (a behaviour's fixed ``instruction``).

    Example:
        >>> SystemWording("configured", "Be warm.").format(tok, "Describe a bus.")
    """

    name: str
    system: str

    def format(self, tokenizer, prompt: str) -> str:
        return format_chat(tokenizer, prompt, "", self.system)


def section_prompts(spec: BehaviourSpec, dev_size: int, test_size: int):
    """``(dev, test)`` :class:`EvalPrompt` lists: the behaviour's topic-disjoint splits when it
    has them, else its evaluation prompts split in order (no hard negatives)."""
    if spec.split_prompts is not None:
        return spec.split_prompts("dev", dev_size), spec.split_prompts("test", test_size)
    dev, test = split_dev_test(spec.eval_prompts(), dev_size, test_size)
    return [EvalPrompt(p) for p in dev], [EvalPrompt(p) for p in test]


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
    dev_items: list[EvalPrompt] = field(default_factory=list)
    test_items: list[EvalPrompt] = field(default_factory=list)
    vecs: SteeringVectors | None = None
    layer: int | None = None
    coefficient: float | None = None
    train_rows: list[dict] = field(default_factory=list)
    prompted_rows: list[dict] = field(default_factory=list)
    learned: dict[str, tuple] = field(default_factory=dict)
    trained: dict[str, dict] = field(default_factory=dict)
    wording: object = None
    scorers: SectionScorers | None = None
    fidelity: object = None  # the dev prompt-fidelity score, built once (prompt_fidelity)

    def __post_init__(self):
        self.layout = self.stages.layout.section(self.name)
        self.dev = [p.prompt for p in self.dev_items]
        self.test = [p.prompt for p in self.test_items]
        judge = load_judge(self.bargs.judge_model, self.base.config, self.bargs.judge_dtype)
        hard = {p.prompt: list(p.hard_negatives) for p in self.dev_items + self.test_items}
        self.scorers = SectionScorers.build(
            self.spec,
            self.base,
            self.tok,
            judge,
            hard,
            n_other_prompts=self.bargs.relevance_others,
            answer_tokens=self.bargs.judge_answer_tokens,
            self_judge=self.bargs.self_judge,
        )

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


def validate_scorers(run: BehaviourRun) -> list[dict]:
    """Each scorer's agreement with its labelled set (a cheap stage, once per run); the axes
    whose scorer agrees make the headline harmonic mean from here on."""
    generations = run.spec.generation_labels
    labelled = len(generations().answers) if generations else 0  # new labels: validate again
    rows = run.stages.run(
        f"{run.name}_scorers",
        lambda: validate_section(run.scorers, run.spec),
        run.settings | {"scorers": run.scorers.names(), "labelled_generations": labelled},
    )
    run.scorers.headline = headline_axes(rows)
    run.settings = run.settings | {"headline": list(run.scorers.headline)}
    return rows


def _dev_axes(run: BehaviourRun, answers: list[str], repeats: int) -> list[dict]:
    """Per block of ``len(run.dev)`` answers, each headline column's dev mean with its interval."""
    columns = run.scorers.score(run.dev * repeats, answers)
    n, rows = len(run.dev), []
    for i in range(repeats):
        row = {}
        for axis in (*run.scorers.headline, "harmonic"):
            m = mean_interval(columns[axis][i * n : (i + 1) * n])
            row.update({axis: m.value, f"{axis}_low": m.low, f"{axis}_high": m.high})
        rows.append(row)
    return rows


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
        for c, axes in zip(coefs, _dev_axes(run, texts, len(coefs))):
            rows.append({"layer": layer, "coefficient": c, "coefficient_unit": "residual_norm"})
            rows[-1].update(axes)
    return rows


def choose_steering(run: BehaviourRun, best_layer_found: int) -> dict:
    """Layer and coefficient with the best dev harmonic mean (dev only); without
    ``steer_layers`` the layer is the best held-out separation's, fixed before the sweep."""
    candidates = run.bargs.steer_layers or [best_layer_found]

    def choose():
        rows = _dev_sweep(run, candidates)
        best = choose_best(rows, lambda r: r["harmonic"], lambda r: abs(r["coefficient"]))
        return {
            "rows": rows,
            "layer": best["layer"],
            "coefficient": best["coefficient"],
            "layers": list(candidates),
            "layer_source": "dev" if run.bargs.steer_layers else "held-out separation",
            "coefficients": [float(c) for c in run.bargs.coefficients],
            "dev_prompts": len(run.dev),
        }

    chosen = run.stages.run(f"{run.name}_select", choose, run.settings | {"candidates": candidates})
    run.layer, run.coefficient = chosen["layer"], chosen["coefficient"]
    run.settings = run.settings | {"chosen": chosen}
    return chosen


def _wordings(run: BehaviourRun) -> dict:
    """The prompting wordings to choose among: the configured instruction alone when the recipe
    sets one, else the behaviour's candidates (or its single instruction)."""
    spec, wanted = run.spec, run.bargs.instructions
    if run.bargs.instruction or spec.instruction_candidates is None:
        return {"configured": SystemWording("configured", spec.instruction)}
    candidates = dict(spec.instruction_candidates())
    unknown = sorted(set(wanted or []) - set(candidates))
    if unknown:
        raise ValueError(f"unknown instructions {unknown}: use some of {sorted(candidates)}")
    return {k: v for k, v in candidates.items() if not wanted or k in wanted}


def choose_prompting(run: BehaviourRun) -> dict:
    """The prompting wording with the best dev harmonic mean (dev only)."""
    wordings = _wordings(run)

    def choose():
        rows = []
        for name, wording in wordings.items():
            texts = [wording.format(run.tok, p) for p in run.dev]
            answers = generate_texts(
                run.base, run.tok, texts, max_new_tokens=run.bargs.new_tokens, batch_size=32
            )
            rows.append({"wording": name, **_dev_axes(run, answers, 1)[0]})
        best = choose_best(rows, lambda r: r["harmonic"], lambda r: 0.0)
        return {"rows": rows, "chosen": best["wording"], "dev_prompts": len(run.dev)}

    chosen = run.stages.run(
        f"{run.name}_prompting", choose, run.settings | {"wordings": list(wordings)}
    )
    run.wording = wordings[chosen["chosen"]]
    return chosen


def write_steered_rows(run: BehaviourRun) -> None:
    """The steered model's answers to training prompts: the tuned variants' training rows."""
    rows_file = run.layout.data_file("steered_rows.jsonl")
    steered, coef, bargs = run.steered(), run.coefficient, run.bargs

    def rows():
        prompts = run.spec.train_prompts()[: bargs.train_prompts]
        written = steered_rows(
            run.base, run.tok, prompts, steered, coef, max_new_tokens=bargs.row_tokens
        )
        write_jsonl(rows_file, written)
        return {"rows": len(written), "prompts": len(prompts)}

    run.stages.run(f"{run.name}_rows", rows, run.settings)
    run.train_rows = read_jsonl(rows_file)


def tune_behaviour_variants(run: BehaviourRun) -> dict:
    """Every variant's grid on dev, then its other seeds (see :mod:`.behaviour_tuning`)."""
    return tune_variants(run)


def evaluate_conditions(run: BehaviourRun) -> dict:
    """Every condition on the test prompts (test only): score tables of every column, the
    per-condition summary, the declared paired comparisons, KL to the steered model, perplexity,
    target cosines and one example answer each."""

    def evaluate():
        conditions = section_conditions(run)
        names = list(conditions)
        tables = answer_and_score(run, conditions)
        metrics = ["harmonic", *run.scorers.headline]
        stats = compare_conditions(
            tables["scores"], names, metrics, n_resamples=run.bargs.bootstrap_resamples
        )
        tuned = {
            v: load_variant(run.margs, run.layout.model_dir(v), merge=True)[0]
            for v in run.bargs.variants
        }
        examples = [
            {"condition": c, "prompt": run.test[0], "text": a[0][0][0]}
            for c, a in tables["answers"].items()
        ]
        return {
            "summary": summary_rows(tables["scores"], names),
            **stats,
            **reference_measures(run, tuned, [a[0][0] for a in tables["answers"]["steered"]]),
            **tables,
            "examples": examples,
            "scorers": run.scorers.names(),
            "headline": list(run.scorers.headline),
            "independent_behaviour": run.scorers.independent_behaviour,
            "conditions": {
                c: {"kind": k.kind, "seeds": list(k.seeds)} for c, k in conditions.items()
            },
        }

    run.settings = run.settings | {"trained": run.trained, "test": run.test}
    return run.stages.run(f"{run.name}_evaluate", evaluate, run.settings)


def matched_fluency(run: BehaviourRun, evaluated: dict, choices: dict) -> dict | None:
    """The learned vectors at matched fluency against the steered model's greedy test answers
    of the evaluation (after every dev choice); None when no vector was learned."""
    if not run.learned:
        return None
    steered = [a[0][0] for a in evaluated["answers"]["steered"]]
    learned = {n: vecs for n, (vecs, _) in run.learned.items()}
    return compare_at_matched_fluency(run, learned, choices, steered)


def robustness_study(run: BehaviourRun, heldout: dict) -> dict | None:
    """Every condition steered against its behaviour (:mod:`.behaviour_robustness`), scored by
    the section's behaviour scorer (the independent one where the behaviour has it); None
    when ``robustness_multiples`` is empty."""
    if not run.bargs.robustness_multiples:
        return None
    scorer = run.scorers.behaviour

    def score(prompts, answers):
        return scorer.to_unit(scorer.score(list(prompts), list(answers)))

    return run_robustness(run, score, run.learned, heldout)


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
