"""The honesty pipeline: claims -> pairs -> vectors -> layers and coefficient chosen on dev
claims -> representation tuning (honest / dishonest, steps chosen on dev) and token-only
baselines (truth / lie) -> A/B evaluation on test claims, robustness, perplexity, trade-off.

The claims split three ways: train (vectors and tuning), dev (every choice: layers, the
steering coefficient, the training step) and test (every reported number). Each step is a
function of :mod:`reptune.workflow.honesty_steps`.

Example:
    >>> results = run_honesty(HonestyArguments(), ModelArguments(), targs, stages)
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from ..behaviours.honesty import PAIRING_MODES, claim_prompt
from ..behaviours.honesty.context import FACT_KINDS
from ..extract import METHODS
from ..io import resolve_data
from . import honesty_measure as measure
from . import honesty_steps as steps
from .honesty_context import CONTEXT_VARIANTS
from .honesty_measure import DEFAULT_EVAL_LIMIT, DEFAULT_TRADEOFF_LIMIT
from .stages import StageRunner

__all__ = ["HonestyArguments", "PARADIGMS", "VARIANT_NAMES", "run_honesty"]

VARIANT_NAMES = steps.VARIANT_NAMES
PARADIGMS = ("claims", "context")


@dataclass
class HonestyArguments:
    """What the honesty pipeline does (the model and training settings are separate)."""

    paradigm: str = field(
        default="claims",
        metadata={
            "help": "'claims' (true/false claims as A/B, for models that know them) or "
            "'context' (facts given in context, open questions; small models)"
        },
    )
    context_facts: str | None = field(
        default=None, metadata={"help": "context facts JSONL (default: the shipped 180 facts)"}
    )
    context_kinds: list[str] = field(
        default_factory=lambda: ["place", "number", "name", "colour", "time"],
        metadata={"help": "fact kinds used (yesno is at chance on small models)"},
    )
    context_dev_size: int = field(default=30, metadata={"help": "dev facts (every choice)"})
    context_test_size: int = field(default=60, metadata={"help": "test facts (every number)"})
    context_new_tokens: int = field(default=16, metadata={"help": "answer length (tokens)"})
    context_variants: list[str] = field(
        default_factory=lambda: ["honest", "dishonest", "dishonest_steer", "truth", "lie"],
        metadata={"help": "tuned models of the context paradigm"},
    )
    robustness_all: bool = field(
        default=True,
        metadata={"help": "context: also steer the dishonesty-tuned models toward honesty"},
    )
    claims: str = field(
        default="reptune:honesty_claims.jsonl",
        metadata={"help": "true/false claims (statement,label); reptune:<file> = shipped data"},
    )
    claims_limit: int | None = field(default=None, metadata={"help": "use the first N claims"})
    pairing_mode: str = field(
        default="persona_answer", metadata={"help": f"one of {list(PAIRING_MODES)}"}
    )
    filter_known: bool = field(
        default=False, metadata={"help": "keep only claims the untuned model answers correctly"}
    )
    test_fraction: float = field(default=0.2, metadata={"help": "share of claims for test"})
    dev_fraction: float = field(
        default=0.2, metadata={"help": "share of the other claims kept for every choice (dev)"}
    )
    extract_layers: list[int] | None = field(default=None, metadata={"help": "layers to extract"})
    extract_method: str = field(default="mean_diff", metadata={"help": f"one of {list(METHODS)}"})
    extract_position: list[int] = field(
        default_factory=lambda: [-1], metadata={"help": "offsets from the end of each text"}
    )
    steer_layers: list[int] | None = field(
        default=None, metadata={"help": "layers to steer (default: best dev separation)"}
    )
    num_rep_layers: int = field(
        default=7, metadata={"help": "when rep_layers is unset: this many layers around the best"}
    )
    sweep_coefficients: list[float] = field(
        default_factory=lambda: [-0.5, -0.25, 0.0, 0.25, 0.5],
        metadata={"help": "coefficients of the dev sweep, in the training coefficient_unit"},
    )
    sweep_max_repeated: float = field(
        default=0.1,
        metadata={
            "help": "context paradigm: the dishonesty coefficient is chosen among pushes whose dev "
            "answers repeat at most this share of their words (in repeated 3-grams)"
        },
    )
    sweep_ablate: bool = field(
        default=True, metadata={"help": "add the ablated direction to the dev sweep"}
    )
    tune_targets: list[str] = field(
        default_factory=lambda: ["toward", "away"],
        metadata={"help": "toward = honest model, away = dishonest model"},
    )
    token_baselines: bool = field(
        default=True, metadata={"help": "also train truth/lie-tuned (token loss only) models"}
    )
    scorer: str = field(default="letter", metadata={"help": "letter or generate"})
    eval_sets: list[str] = field(
        default_factory=list, metadata={"help": "extra A/B files evaluated on every model"}
    )
    eval_limit: int | None = field(
        default=None,
        metadata={
            "help": "items per extra evaluation set: exactly this many (refused if a set holds "
            f"fewer; 0 = all); default: up to {DEFAULT_EVAL_LIMIT}"
        },
    )
    robustness_coefficients: list[float] = field(
        default_factory=lambda: [0.25, 0.5],
        metadata={"help": "dishonesty-steering strengths applied to the tuned models"},
    )
    perplexity_text: str | None = field(
        default="reptune:heldout_text.txt", metadata={"help": "held-out text for perplexity"}
    )
    dev_text: str = field(
        default="reptune:dev_text.txt", metadata={"help": "dev text for the perplexity check"}
    )
    max_perplexity_increase: float = field(
        default=0.10,
        metadata={"help": "a tuning step counts only if dev perplexity stays within this of base"},
    )
    select_every: int = field(default=2, metadata={"help": "steps between dev checkpoints"})
    perplexity_window: int = field(default=128, metadata={"help": "perplexity window (tokens)"})
    perplexity_stride: int = field(default=64, metadata={"help": "perplexity stride (tokens)"})
    tradeoff_items: str | None = field(
        default=None, metadata={"help": "MMLU-style A-D file for the trade-off curves"}
    )
    tradeoff_coefficients: list[float] = field(
        default_factory=lambda: [-0.5, -0.25, -0.1, 0.0, 0.1, 0.25, 0.5],
        metadata={"help": "coefficients of the trade-off sweep"},
    )
    tradeoff_limit: int | None = field(
        default=None,
        metadata={
            "help": "helpfulness items used: exactly this many (0 = all); default: up to "
            f"{DEFAULT_TRADEOFF_LIMIT}"
        },
    )
    behaviour_section: dict | None = field(
        default=None,
        metadata={
            "help": "a second section on a behaviour the model represents: BehaviourArguments as "
            "a YAML mapping, e.g. {behaviour: sentiment, steer_layers: [10]}"
        },
    )

    def __post_init__(self):
        if self.paradigm not in PARADIGMS:
            raise ValueError(f"paradigm must be one of {PARADIGMS}, not {self.paradigm!r}")
        bad = set(self.context_variants) - set(CONTEXT_VARIANTS)
        if bad:
            raise ValueError(
                f"unknown context_variants {sorted(bad)}: use {list(CONTEXT_VARIANTS)}"
            )
        bad = set(self.context_kinds) - set(FACT_KINDS)
        if bad or not self.context_kinds:
            raise ValueError(f"context_kinds must be a non-empty subset of {list(FACT_KINDS)}")
        if self.pairing_mode not in PAIRING_MODES:
            raise ValueError(f"pairing_mode must be one of {PAIRING_MODES}")
        if self.extract_method not in METHODS:
            raise ValueError(f"extract_method must be one of {METHODS}")
        if self.scorer not in ("letter", "generate"):
            raise ValueError(f"scorer must be 'letter' or 'generate', not {self.scorer!r}")
        unknown = set(self.tune_targets) - set(VARIANT_NAMES)
        if unknown:
            raise ValueError(f"unknown tune_targets {sorted(unknown)}: use {list(VARIANT_NAMES)}")
        self.behaviour_arguments()  # a bad section fails here, before any model loads
        for name in ("test_fraction", "dev_fraction"):
            if not 0 < getattr(self, name) < 1:
                raise ValueError(f"{name} must lie in (0, 1)")

    def behaviour_arguments(self):
        """The second section's :class:`~reptune.workflow.behaviour.BehaviourArguments`, if any."""
        if not self.behaviour_section:
            return None
        from .behaviour import BehaviourArguments

        if not isinstance(self.behaviour_section, dict):
            raise TypeError("behaviour_section must be a mapping of BehaviourArguments fields")
        try:
            return BehaviourArguments(**self.behaviour_section)
        except TypeError as err:
            raise TypeError(f"behaviour_section: {err}") from err

    def check_counts(self, seed: int = 0) -> None:
        """Raise, before any model loads, if a set holds fewer items than a limit asks for.

        Example:
            >>> HonestyArguments(eval_sets=["facts.csv"], eval_limit=500).check_counts()
        """
        from ..evaluation.ab.datasets import load_items

        if self.eval_limit:
            for path in self.eval_sets:
                load_items(resolve_data(path), limit=self.eval_limit, seed=seed)
        if self.tradeoff_limit and self.tradeoff_items:
            load_items(
                resolve_data(self.tradeoff_items), n_choices=4, limit=self.tradeoff_limit, seed=seed
            )
        behaviour = self.behaviour_arguments()
        if behaviour is not None:
            from .behaviour_steps import section_prompts

            section_prompts(behaviour.spec(), behaviour.dev_prompts, behaviour.test_prompts)

    def input_files(self) -> list[str]:
        """Every named input file, resolved (checked before any model runs)."""
        files = [
            self.claims,
            self.context_facts,
            self.perplexity_text,
            self.dev_text,
            self.tradeoff_items,
        ]
        return [resolve_data(f) for f in [*files, *self.eval_sets] if f]


def stage_settings(hargs: HonestyArguments, margs, targs) -> dict[str, dict]:
    """Each stage's settings; they include the upstream stages', so a change reruns what
    depends on it (the tuning and evaluation settings are completed by the steps).

    Example:
        >>> stage_settings(HonestyArguments(), ModelArguments(), targs)["vectors"]["pairing_mode"]
        'persona_answer'
    """
    h = asdict(hargs)

    def pick(*names):
        return {n: h[n] for n in names}

    pairs = {"model": asdict(margs), "seed": targs.seed} | pick(
        "paradigm", "claims", "claims_limit", "filter_known", "test_fraction", "dev_fraction"
    )
    if hargs.paradigm == "context":
        pairs |= pick("context_facts", "context_kinds", "context_dev_size", "context_test_size")
    vectors = pairs | pick("pairing_mode", "extract_layers", "extract_method", "extract_position")
    layers = vectors | pick("steer_layers", "num_rep_layers") | {"rep_layers": targs.rep_layers}
    sweep = layers | pick("sweep_coefficients", "sweep_ablate") | {"unit": targs.coefficient_unit}
    if hargs.paradigm == "context":
        sweep |= pick("context_new_tokens", "sweep_max_repeated")
    train = layers | {
        "train": targs.to_dict(),
        "dev": pick("dev_text", "max_perplexity_increase", "select_every"),
    }
    return {
        "pairs": pairs,
        "vectors": vectors,
        "layers": layers,
        "sweep": sweep,
        "train": train,
        "tradeoff": sweep | pick("tradeoff_items", "tradeoff_coefficients", "tradeoff_limit"),
    }


def run_honesty(hargs: HonestyArguments, margs, targs, stages: StageRunner) -> dict:
    """Run every honesty stage under the run folder; return what the report needs.

    Example:
        >>> results = run_honesty(HonestyArguments(claims_limit=40), margs, targs, stages)
    """
    settings = stage_settings(hargs, margs, targs)
    if hargs.paradigm == "context":
        from .honesty_context_measure import run_context_honesty

        return run_context_honesty(hargs, margs, targs, stages, settings)
    model, tok = margs.load()
    run = steps.HonestyRun(hargs, margs, targs, stages, model, tok, settings)
    data = steps.split_claims(run)
    steps.extract_claim_vectors(run)
    layer_info = steps.choose_layers(run)
    sweep_info = steps.sweep_coefficients(run)
    base_dev_ppl = steps.tune_variants(run)
    eval_info = measure.evaluate_variants(run)
    robust = measure.robustness(run) if hargs.robustness_coefficients else None
    ppl_info = measure.heldout_perplexity(run) if hargs.perplexity_text else None
    trade = measure.tradeoff(run) if hargs.tradeoff_items else None
    return {
        "data": data,
        "layers": layer_info,
        "sweep": sweep_info,
        "trained": run.trained,
        "evaluate": eval_info,
        "robustness": robust,
        "perplexity": ppl_info,
        "tradeoff": trade,
        "dev_perplexity": base_dev_ppl if math.isfinite(base_dev_ppl) else None,
        "prompt_example": claim_prompt(tok, run.test[0]),
        "coefficient_unit": targs.coefficient_unit,
    }
