"""A behaviour section: scorers validated on labels -> vectors -> dev choices of layer and
coefficient and of the prompting wording -> self-generated rows -> tuned variants (placement,
learning rate and checkpoint chosen on dev; the chosen one trained with every seed) -> every
condition answered and scored on test prompts -> paired comparisons.

The protocol follows the field's steering benchmark (AxBench): every free choice of every
condition is made on dev prompts by one criterion, the dev harmonic mean of behaviour, fluency
and relevance under judges that are not the model under test; every reported number comes from
test prompts (greedy plus seeded sampled answers, every training seed) and every comparison is
paired, against base and against steering, Holm-corrected over the declared family.

Example:
    >>> section = run_behaviour(BehaviourArguments(), margs, targs, stages)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from ..behaviours import BehaviourSpec, behaviour_names, get_behaviour, required_options
from . import behaviour_objectives as objectives
from . import behaviour_steps as steps
from .behaviour_tuning import PLACEMENTS
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
    max_pairs: int | None = field(
        default=None,
        metadata={"help": "caa, refusal: pair questions used (a seeded sample; default: all)"},
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
    prompt_steps: int = field(
        default=40, metadata={"help": "training steps of rep-prompt and rep-prompt+steer"}
    )
    prompt_layer: int | None = field(
        default=None,
        metadata={
            "help": "layer rep-prompt matches to the prompted model (adapters on blocks up to "
            "it; default: the steered layer). rep-prompt+steer needs it among layers."
        },
    )
    prompt_criterion: str = field(
        default="fidelity",
        metadata={
            "help": "dev criterion of rep-prompt's placement, learning rate and checkpoint: "
            "'fidelity' (lowest next-token KL to the prompted model along its dev answers) or "
            "'harmonic' (the dev harmonic mean, as for the other variants)"
        },
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
            "help": "steps between checkpoints; the one with the best dev harmonic mean is kept"
        },
    )
    judge_model: str = field(
        default="embedded:gemma3-270m",
        metadata={"help": "judge LM of fluency and relevance (another family than the model)"},
    )
    judge_dtype: str = field(default="bfloat16", metadata={"help": "the judge LM's dtype"})
    judge_answer_tokens: int = field(
        default=32, metadata={"help": "answer tokens the judge LM reads per answer"}
    )
    relevance_others: int = field(
        default=2,
        metadata={
            "help": "other prompts each answer's own prompt is ranked among (plus its hard "
            "negatives)"
        },
    )
    seeds: list[int] = field(
        default_factory=lambda: [0],
        metadata={"help": "training seeds of each tuned variant (the first is the dev choice's)"},
    )
    samples: int = field(
        default=0, metadata={"help": "seeded sampled answers per test prompt besides greedy"}
    )
    lora_placements: list[str] = field(
        default_factory=lambda: ["attention"],
        metadata={
            "help": f"LoRA placements every variant chooses among on dev: {list(PLACEMENTS)}"
        },
    )
    learning_rates: list[float] | None = field(
        default=None,
        metadata={"help": "learning-rate grid of every variant (default: tune_learning_rate)"},
    )
    instructions: list[str] | None = field(
        default=None,
        metadata={"help": "prompting wordings chosen among on dev (default: all the behaviour's)"},
    )
    bootstrap_resamples: int = field(
        default=9999, metadata={"help": "bootstrap resamples of every paired comparison"}
    )
    diagnostic_prompts: int = field(
        default=4,
        metadata={
            "help": "test prompts of the generation-time projections and the PCA view (0 = off)"
        },
    )
    eval_batch_size: int = field(
        default=64, metadata={"help": "test prompts generated at once (greedy and sampled)"}
    )
    reference_prompts: int | None = field(
        default=None,
        metadata={
            "help": "test prompts of the KL-to-steered and target-cosine references (None = all, "
            "0 = skip them; perplexity always runs)"
        },
    )
    self_judge: bool = field(
        default=True,
        metadata={"help": "score the untuned model's own judgement as an extra column"},
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
        if self.learning_rates is None:
            self.learning_rates = [self.tune_learning_rate]
        bad = [p for p in self.lora_placements if p not in PLACEMENTS]
        if bad or not self.lora_placements:
            raise ValueError(f"unknown lora_placements {bad}: use some of {list(PLACEMENTS)}")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must be distinct and non-empty, got {self.seeds}")
        if self.samples < 0:
            raise ValueError(f"samples must be >= 0, got {self.samples}")
        if not self.coefficients:
            raise ValueError("coefficients is empty: give the dev grid of steering coefficients")
        if self.prompt_criterion not in ("fidelity", "harmonic"):
            raise ValueError(
                f"prompt_criterion must be 'fidelity' or 'harmonic', got {self.prompt_criterion!r}"
            )
        if self.prompt_layer is not None and (
            "rep-prompt+steer" in self.variants and self.prompt_layer not in (self.layers or [])
        ):
            raise ValueError(
                f"rep-prompt+steer adds the vector at prompt_layer {self.prompt_layer}, which is "
                f"not among the extracted layers {self.layers}: add it to layers"
            )
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
    dev, test = steps.section_prompts(spec, bargs.dev_prompts, bargs.test_prompts)
    base, tok = margs.load()
    run = steps.BehaviourRun(
        bargs, margs, targs, stages, name, spec, base, tok, settings, dev, test
    )
    validation = steps.validate_scorers(run)
    info = steps.extract_behaviour_vectors(run)
    chosen = steps.choose_steering(run, info["best_layer"])
    prompting = steps.choose_prompting(run)
    steps.write_steered_rows(run)
    if set(bargs.variants) & set(objectives.PROMPT_VARIANTS):
        objectives.write_prompted_rows(run)
    steps.tune_behaviour_variants(run)
    learned_choices = objectives.learned_step(run)
    evaluated = steps.evaluate_conditions(run)
    matched = steps.matched_fluency(run, evaluated, learned_choices)
    robust = steps.robustness_study(run, info["heldout"])
    diagnosed = steps.diagnose(run) if bargs.diagnostic_prompts else None
    return {
        "diagnostics": diagnosed,
        "name": spec.name,
        "layout": run.layout,
        "vectors": info,
        "chosen": chosen,
        "prompting": prompting,
        "validation": validation,
        "trained": run.trained,
        "evaluated": evaluated,
        "learned_choices": learned_choices,
        "learned_matched": matched,
        "robustness": robust,
        "dev": len(run.dev),
        "test": len(run.test),
        "rows": len(run.train_rows),
    }
