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

from dataclasses import asdict, dataclass, field

from ..behaviours import BehaviourSpec, behaviour_names, get_behaviour, required_options
from . import behaviour_objectives as objectives
from . import behaviour_robustness as robustness
from . import behaviour_steps as steps
from .select import split_dev_test
from .stages import StageRunner

__all__ = ["BehaviourArguments", "VARIANTS", "run_behaviour"]

#: The tuned variants and what each changes in the training settings.
VARIANTS = steps.VARIANTS


@dataclass
class BehaviourArguments:
    """What the behaviour section does (model and training settings are separate)."""

    behaviour: str = field(
        default="sentiment",
        metadata={
            "help": "a registered behaviour: 'sentiment', 'honesty', 'refusal' (shipped data) or "
            "'caa' (A/B files: pairs, eval_items)"
        },
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
        default_factory=lambda: ["token-sft", "rep-cosine", "rep-steer"],
        metadata={"help": f"tuned variants to train: {list(VARIANTS)}"},
    )
    sft_steps: int = field(default=40, metadata={"help": "training steps of token-sft"})
    cosine_steps: int = field(default=40, metadata={"help": "training steps of rep-cosine"})
    steer_steps: int = field(default=40, metadata={"help": "training steps of rep-steer"})
    prompt_steps: int = field(
        default=40, metadata={"help": "training steps of rep-prompt and rep-prompt+steer"}
    )
    learned_objectives: list[str] = field(
        default_factory=list,
        metadata={"help": "learned vectors at the steered layer: 'lm', 'preference' ([] = off)"},
    )
    learned_steps: int = field(default=40, metadata={"help": "steps of each learned vector"})
    learned_learning_rate: float = field(
        default=1e-2, metadata={"help": "learning rate of the learned vectors"}
    )
    robustness_multiples: list[float] = field(
        default_factory=list,
        metadata={
            "help": "attack strengths as multiples of the chosen coefficient; every condition "
            "is steered against its behaviour at each ([] = off)"
        },
    )
    robustness_prompts: int | None = field(
        default=None, metadata={"help": "test prompts of the robustness study (None = all)"}
    )
    robustness_second_layer: bool = field(
        default=True,
        metadata={"help": "the stronger attack: the vector at the next best layer as well"},
    )
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
        if self.behaviour not in behaviour_names():
            raise ValueError(
                f"unknown behaviour {self.behaviour!r}: use one of {behaviour_names()}, or "
                "register it with reptune.behaviours.register_behaviour"
            )
        unknown = [v for v in self.variants if v not in VARIANTS]
        if unknown:
            raise ValueError(f"unknown variants {unknown}: use {list(VARIANTS)}")
        bad = [o for o in self.learned_objectives if o not in objectives.LEARNED.values()]
        if bad:
            raise ValueError(f"unknown learned_objectives {bad}: use 'lm' and/or 'preference'")
        if any(m <= 0 for m in self.robustness_multiples):
            raise ValueError(
                f"robustness_multiples must be positive, got {self.robustness_multiples}"
            )
        if not self.coefficients:
            raise ValueError("coefficients is empty: give the dev grid of steering coefficients")
        missing = [n for n in required_options(self.behaviour) if not getattr(self, n)]
        if missing:
            raise ValueError(
                f"behaviour {self.behaviour!r} needs {missing}: set them in the recipe"
            )

    def spec(self) -> BehaviourSpec:
        """The behaviour's data, scorer and prompting baseline (from the registry)."""
        return get_behaviour(self.behaviour, self)


def run_behaviour(bargs: BehaviourArguments, margs, targs, stages: StageRunner, name="behaviour"):
    """Run the behaviour's stages under ``<run>/<name>/``; return the report material.

    Example:
        >>> material = run_behaviour(BehaviourArguments(), ModelArguments(), targs, stages)
    """
    spec = bargs.spec()
    settings = {"model": asdict(margs), "behaviour": asdict(bargs), "seed": targs.seed}
    # The prompts are split before the model loads.
    dev, test = split_dev_test(spec.eval_prompts(), bargs.dev_prompts, bargs.test_prompts)
    base, tok = margs.load()
    run = steps.BehaviourRun(bargs, margs, targs, stages, name, spec, base, tok, settings)
    run.dev, run.test = dev, test
    info = steps.extract_behaviour_vectors(run)
    chosen = steps.choose_steering(run, info["best_layer"])
    dev_answers = steps.write_steered_rows(run)
    if set(bargs.variants) & set(objectives.PROMPT_VARIANTS):
        objectives.write_prompted_rows(run)
    steps.tune_behaviour_variants(run, dev_answers)
    learned, choices, matched = {}, {}, None
    if bargs.learned_objectives:
        learned = objectives.learn_behaviour_vectors(run)
        choices = objectives.choose_learned_coefficients(run, learned)
        run.settings = run.settings | {"learned_choices": choices}
    extra = objectives.learned_conditions(run, learned, choices)
    evaluated = steps.evaluate_conditions(run, extra)
    if learned:  # test prompts: after every dev choice
        matched = objectives.compare_at_matched_fluency(run, learned, choices)
    robust = None
    if bargs.robustness_multiples:
        score = lambda p, a: spec.score(base, tok, a, p)  # noqa: E731 - the behaviour axis
        chosen_learned = {n: (v, choices[n]["coefficient"]) for n, v in learned.items()}
        robust = robustness.run_robustness(run, score, chosen_learned, info["heldout"])
    diagnosed = steps.diagnose(run) if bargs.diagnostic_prompts else None
    return {
        "diagnostics": diagnosed,
        "name": spec.name,
        "layout": run.layout,
        "vectors": info,
        "chosen": chosen,
        "trained": run.trained,
        "evaluated": evaluated,
        "learned_choices": choices,
        "learned_matched": matched,
        "robustness": robust,
        "dev": len(run.dev),
        "test": len(run.test),
        "rows": len(run.train_rows),
    }
