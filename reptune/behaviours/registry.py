"""The behaviour registry: what a behaviour brings (:class:`BehaviourSpec`) and where the
pipeline finds it by name.

A behaviour module declares its spec and registers it when it is imported, as peft's methods
do from their own packages. A shipped behaviour is one module in ``reptune/behaviours/``, its data
in ``reptune/data/`` and one recipe YAML; a behaviour of your own is one module that calls
:func:`register_behaviour` before the run starts.

Example:
    >>> from reptune.behaviours import BehaviourSpec, register_behaviour, get_behaviour
    >>> register_behaviour(BehaviourSpec("cheerful", pairs, train, prompts, score, "Be cheerful."))
    >>> get_behaviour("cheerful").instruction
    'Be cheerful.'
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import NamedTuple, Protocol

from ..pairs import ContrastivePair

__all__ = [
    "BehaviourBuilder",
    "BehaviourOptions",
    "BehaviourSpec",
    "EvalPrompt",
    "EvalPromptsLoader",
    "GenerationLabels",
    "InstructionWording",
    "LabelledGenerations",
    "LabelledSet",
    "PairsLoader",
    "PromptsLoader",
    "TextScorer",
    "behaviour_names",
    "get_behaviour",
    "register_behaviour",
    "required_options",
]

#: ``(tokenizer, split) -> pairs``; ``split`` is ``"train"`` or ``"test"``.
PairsLoader = Callable[[object, str], list[ContrastivePair]]
#: ``() -> prompts`` (plain user messages; the pipeline applies the chat template).
PromptsLoader = Callable[[], list[str]]


class EvalPrompt(NamedTuple):
    """A dev or test prompt and its hard negatives (same topic, another instruction)."""

    prompt: str
    hard_negatives: tuple[str, ...] = ()


#: ``(split, limit) -> prompts``; ``split`` is ``"dev"`` or ``"test"`` (disjoint).
EvalPromptsLoader = Callable[[str, int], list[EvalPrompt]]
#: ``() -> (prompts, answers, labels)``: labelled answers a behaviour scorer must agree with.
LabelledSet = Callable[[], tuple[list[str], list[str], list[float]]]


class LabelledGenerations(NamedTuple):
    """Answers the evaluated conditions really generated, labelled by hand: ``answers[i]`` to
    ``prompts[i]``, made by condition ``conditions[i]``, has behaviour label ``behaviour[i]`` and
    fluency label ``fluent[i]`` (1 fluent, 0 degenerate)."""

    prompts: list[str]
    answers: list[str]
    behaviour: list[float]
    fluent: list[float]
    conditions: list[str]


#: ``() -> LabelledGenerations``: real answers of each condition the scorers must agree with.
GenerationLabels = Callable[[], LabelledGenerations]


class InstructionWording(Protocol):
    """One wording of the prompting baseline: ``format(tokenizer, prompt)`` is the generation
    text (chat template applied), ``name`` names it in reports."""

    name: str

    def format(self, tokenizer, prompt: str) -> str: ...


class TextScorer(Protocol):
    """Scores answers in [0, 1] (1 = the behaviour is fully there).

    ``judge`` and ``tokenizer`` are the frozen base model and its tokenizer (a scorer may use them
    as a yardstick, or ignore them); ``texts[i]`` answers ``prompts[i]``.
    """

    def __call__(
        self, judge, tokenizer, texts: Sequence[str], prompts: Sequence[str]
    ) -> list[float]: ...


class BehaviourOptions(Protocol):
    """The run options a behaviour may be built from (``BehaviourArguments`` has them all)."""

    pairs: str | None
    eval_items: str | None
    instruction: str | None


@dataclass(frozen=True)
class BehaviourSpec:
    """What a behaviour brings: pairs, prompts, a scorer in [0, 1] and a prompting baseline.

    Args:
        name: the behaviour's name (the run-folder section and report heading).
        pairs: contrastive pairs for the vectors, per split (:data:`PairsLoader`).
        train_prompts: prompts the steered model answers to make training rows.
        eval_prompts: prompts split into dev (every choice) and test (every reported number).
        score: the behaviour axis of each answer (:class:`TextScorer`).
        instruction: the prompting baseline's system prompt.
        behaviour_scorer: ``() -> Scorer`` (:mod:`reptune.evaluation.scorers`), the behaviour
            judge independent of the model under test; None: :attr:`score` under the untuned
            model stands in, labelled as the model's own judgement.
        behaviour_labels: labelled answers the behaviour scorer is validated on
            (:data:`LabelledSet`); None: the scorer is reported as not validated.
        split_prompts: topic-disjoint dev and test prompts with hard negatives
            (:data:`EvalPromptsLoader`); None: :attr:`eval_prompts` split in order.
        instruction_candidates: ``() -> {name: wording}`` (:class:`InstructionWording`), the
            prompting wordings chosen among on dev; None: :attr:`instruction` alone.
        generation_labels: hand-labelled answers of the evaluated conditions
            (:data:`GenerationLabels`); the behaviour, fluency and degeneracy scorers are
            validated on them too, per condition; None: only on the labelled sets above.

    Example:
        >>> spec = BehaviourSpec("cheerful", pairs, lambda: train, lambda: held, score, "Be glad.")
    """

    name: str
    pairs: PairsLoader
    train_prompts: PromptsLoader
    eval_prompts: PromptsLoader
    score: TextScorer
    instruction: str
    behaviour_scorer: Callable[[], object] | None = None
    behaviour_labels: LabelledSet | None = None
    split_prompts: EvalPromptsLoader | None = None
    instruction_candidates: Callable[[], Mapping[str, InstructionWording]] | None = None
    generation_labels: GenerationLabels | None = None


#: ``options -> spec``: a behaviour whose data comes from run options (file paths, a prompt).
BehaviourBuilder = Callable[[BehaviourOptions], BehaviourSpec]

_REGISTRY: dict[str, tuple[BehaviourSpec | BehaviourBuilder, tuple[str, ...]]] = {}


def register_behaviour(
    spec: BehaviourSpec | BehaviourBuilder,
    *,
    name: str | None = None,
    requires: Sequence[str] = (),
) -> None:
    """Make a behaviour available by name (``behaviour: <name>`` in a recipe).

    ``spec`` is a :class:`BehaviourSpec`, or a builder ``options -> BehaviourSpec`` (then give
    ``name``, and the ``requires`` option names the builder reads, checked before any model
    loads). Registering a name again replaces it.

    Example:
        >>> register_behaviour(my_spec)
        >>> register_behaviour(build_from_files, name="mine", requires=("pairs", "eval_items"))
    """
    if isinstance(spec, BehaviourSpec):
        name = name or spec.name
    elif not callable(spec):
        raise TypeError(f"register a BehaviourSpec or a builder, not {type(spec).__name__}")
    if not name:
        raise ValueError("a behaviour builder needs name=: register_behaviour(build, name='...')")
    _REGISTRY[name] = (spec, tuple(requires))


def behaviour_names() -> list[str]:
    """The registered behaviours, sorted.

    Example:
        >>> "sentiment" in behaviour_names()
        True
    """
    return sorted(_REGISTRY)


def required_options(name: str) -> tuple[str, ...]:
    """The run options behaviour ``name`` is built from (empty for a fixed spec).

    Example:
        >>> required_options("caa")
        ('pairs', 'eval_items', 'instruction')
    """
    return _entry(name)[1]


def get_behaviour(name: str, options: BehaviourOptions | None = None) -> BehaviourSpec:
    """The spec of behaviour ``name``, built from ``options`` when it needs them; a non-empty
    ``options.instruction`` replaces the spec's prompting baseline.

    Example:
        >>> get_behaviour("sentiment").name
        'sentiment'
    """
    build, requires = _entry(name)
    missing = [o for o in requires if options is None or not getattr(options, o, None)]
    if missing:
        raise ValueError(f"behaviour {name!r} needs the options {missing}: set them in the recipe")
    spec = build if isinstance(build, BehaviourSpec) else build(options)
    instruction = getattr(options, "instruction", None)
    if instruction and instruction != spec.instruction:
        spec = replace(spec, instruction=instruction)
    return spec


def _entry(name: str):
    if name not in _REGISTRY:
        raise ValueError(
            f"unknown behaviour {name!r}: use one of {behaviour_names()}, or register it with "
            "reptune.behaviours.register_behaviour before the run"
        )
    return _REGISTRY[name]
