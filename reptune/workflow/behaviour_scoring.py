"""The behaviour section's scorers: every answer scored by judges that are not the model under
test, the scorers validated on labelled sets once per run, and the headline harmonic mean built
only from scorers that agree with the labels.

Columns of one answer (:meth:`SectionScorers.score`): ``behaviour`` (the behaviour's own
independent scorer, mapped onto [0, 1]), ``fluency`` (``exp(-NLL)`` under a judge LM of another
family, discounted by the share of repeated bigrams: the judge alone finds repetition fluent),
``judge_probability`` (``exp(-NLL)`` alone), ``relevance`` (posterior of the own prompt
among hard negatives and other prompts), ``distinct_2`` and ``repeated_3gram`` (degeneracy),
``self_judge`` (the untuned model's own judgement, an extra labelled column) and ``harmonic``
(AxBench's harmonic mean of the headline axes).

Example:
    >>> scorers = SectionScorers.build(spec, base, tok, judge, hard_negatives, n_other_prompts=2)
    >>> scorers.headline = headline_axes(validate_section(scorers))
    >>> columns = scorers.score(prompts, answers)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from operator import itemgetter

import torch

from ..evaluation.open_ended.quality import harmonic_mean
from ..evaluation.scorers import (
    SELF_JUDGE_NAME,
    DistinctN,
    JudgeLM,
    JudgeNLL,
    PromptRankRelevance,
    RepeatedNgramRate,
    Scorer,
    agreement,
    agreement_by_group,
    check_pairs,
    validate_scorer,
)
from ..io import data_path, read_jsonl

__all__ = [
    "AXES",
    "COLUMNS",
    "OwnScore",
    "DiscountedFluency",
    "SectionScorers",
    "CachedJudge",
    "load_judge",
    "validate_section",
    "headline_axes",
]

#: The axes of the harmonic mean (AxBench).
AXES = ("behaviour", "fluency", "relevance")
#: Every per-answer column, in report order.
COLUMNS = (*AXES, "judge_probability", "distinct_2", "repeated_3gram", "self_judge", "harmonic")
#: Fluent answers of the fluency set used to check relevance (own prompt vs another's).
RELEVANCE_CHECK_ANSWERS = 12


class CachedJudge:
    """A :class:`JudgeLM` that remembers each (prompt, answer, max tokens) it scored: the own
    prompt's pass of relevance is fluency's pass, and an answer met again costs nothing.

    Example:
        >>> judge = CachedJudge(JudgeLM.load(model_under_test=base.config))  # doctest: +SKIP
    """

    def __init__(self, judge: JudgeLM):
        self.judge, self.name = judge, judge.name
        self.memory: dict[tuple, torch.Tensor] = {}

    def answer_log_probs(self, prompts, answers, max_answer_tokens=None) -> list[torch.Tensor]:
        keys = [(p, a, max_answer_tokens) for p, a in zip(prompts, answers)]
        missing = list(dict.fromkeys(k for k in keys if k not in self.memory))
        if missing:
            found = self.judge.answer_log_probs(
                [k[0] for k in missing], [k[1] for k in missing], max_answer_tokens
            )
            self.memory.update(zip(missing, found))
        return [self.memory[k] for k in keys]


class DiscountedFluency(Scorer):
    """The fluency axis: the judge's geometric-mean token probability of the answer,
    ``exp(-NLL)``, times its share of distinct word bigrams (a judge LM finds repetition likely,
    so repetition is discounted by the degeneracy measure); in ``[0, 1]``, 1 = fluent. An answer
    of fewer than two words keeps ``exp(-NLL)``; an empty answer scores 0.

    Example:
        >>> DiscountedFluency(JudgeNLL(judge)).score(["Q"], ["good good good good"])
    """

    axis = "fluency"

    def __init__(self, nll: JudgeNLL, distinct: DistinctN | None = None):
        self.nll, self.distinct = nll, distinct or DistinctN(2)
        self.name = f"exp(-{nll.name}) x {self.distinct.name}"

    def score(self, prompts: Sequence[str], answers: Sequence[str]) -> list[float]:
        units = self.nll.to_unit(self.nll.score(prompts, answers))
        shares = self.distinct.score(prompts, answers)
        return [
            0.0 if math.isnan(u) else u * (1.0 if math.isnan(d) else d)
            for u, d in zip(units, shares)
        ]


def load_judge(spec: str, model_under_test, dtype: str = "bfloat16") -> CachedJudge:
    """The judge LM (another family than ``model_under_test``, checked before loading).

    Example:
        >>> judge = load_judge("embedded:gemma3-270m", base.config)  # doctest: +SKIP
    """
    return CachedJudge(JudgeLM.load(spec, model_under_test=model_under_test, dtype=dtype))


class OwnScore(Scorer):
    """A behaviour's own score function (:class:`~reptune.behaviours.registry.TextScorer`)
    under the untuned model under test, in ``[0, 1]``: the self-judge column, or the stand-in
    behaviour scorer of a behaviour without an independent one (named as such).

    Example:
        >>> OwnScore(spec, base, tok).score(["Describe a bus."], ["A lovely bus."])
    """

    axis = "behaviour"

    def __init__(self, spec, base, tok, name: str = SELF_JUDGE_NAME):
        self.spec, self.base, self.tok, self.name = spec, base, tok, name

    def score(self, prompts: Sequence[str], answers: Sequence[str]) -> list[float]:
        check_pairs(prompts, answers)
        return [float(x) for x in self.spec.score(self.base, self.tok, list(answers), prompts)]


@dataclass
class SectionScorers:
    """The scorers of one section and which axes enter the headline harmonic mean.

    Example:
        >>> SectionScorers.build(spec, base, tok, judge, {}, n_other_prompts=2).names()
    """

    behaviour: Scorer
    fluency: Scorer
    nll: Scorer
    relevance: Scorer
    distinct: Scorer
    repeated: Scorer
    self_judge: Scorer | None
    independent_behaviour: bool
    headline: tuple[str, ...] = AXES
    labels: dict = field(default_factory=dict)

    @classmethod
    def build(
        cls,
        spec,
        base,
        tok,
        judge: JudgeLM,
        hard_negatives: Mapping[str, Sequence[str]],
        *,
        n_other_prompts: int = 2,
        answer_tokens: int | None = 32,
        self_judge: bool = True,
    ) -> SectionScorers:
        """Scorers for behaviour ``spec``; without an independent behaviour scorer the spec's
        own score function under the untuned model stands in (labelled as such). With
        ``self_judge`` that own score is one more column beside an independent scorer."""
        own = OwnScore(spec, base, tok)
        independent = spec.behaviour_scorer is not None
        behaviour = (
            spec.behaviour_scorer()
            if independent
            else OwnScore(spec, base, tok, f"{spec.name} score function under the model under test")
        )
        relevance = PromptRankRelevance(
            judge,
            hard_negatives,
            n_other_prompts=n_other_prompts,
            max_answer_tokens=answer_tokens,
        )
        return cls(
            behaviour=behaviour,
            fluency=DiscountedFluency(JudgeNLL(judge, max_answer_tokens=answer_tokens)),
            nll=JudgeNLL(judge, max_answer_tokens=answer_tokens),
            relevance=relevance,
            distinct=DistinctN(2),
            repeated=RepeatedNgramRate(3),
            self_judge=own if independent and self_judge else None,
            independent_behaviour=independent,
        )

    def names(self) -> dict[str, str]:
        """Column -> the judge that fills it (for report headers)."""
        named = {
            "behaviour": self.behaviour.name,
            "fluency": self.fluency.name,
            "judge_probability": f"exp(-{self.nll.name})",
            "relevance": self.relevance.name,
            "distinct_2": self.distinct.name,
            "repeated_3gram": self.repeated.name,
        }
        if self.self_judge is not None:
            named["self_judge"] = self.self_judge.name
        named["harmonic"] = "harmonic mean of " + ", ".join(self.headline)
        return named

    def score(self, prompts: Sequence[str], answers: Sequence[str]) -> dict[str, list[float]]:
        """Every column for ``answers[i]`` given to ``prompts[i]`` (axes on [0, 1])."""
        prompts, answers = list(prompts), list(answers)
        probability = self.nll.to_unit(self.nll.score(prompts, answers))
        columns = {
            "behaviour": self.behaviour.to_unit(self.behaviour.score(prompts, answers)),
            "fluency": self.fluency.score(prompts, answers),
            # an empty answer has no tokens: no fluency at all
            "judge_probability": [0.0 if math.isnan(u) else u for u in probability],
            "relevance": self.relevance.score(prompts, answers),
            "distinct_2": self.distinct.score(prompts, answers),
            "repeated_3gram": self.repeated.score(prompts, answers),
        }
        if self.self_judge is not None:
            columns["self_judge"] = self.self_judge.score(prompts, answers)
        axes = [columns[a] for a in self.headline]
        columns["harmonic"] = [harmonic_mean(*values) for values in zip(*axes)]
        return columns

    def dev_harmonic(self, prompts: Sequence[str], answers: Sequence[str]) -> float:
        """The mean headline harmonic mean (the criterion of every dev choice)."""
        values = self.score(prompts, answers)["harmonic"]
        return sum(values) / len(values)


def _relevance_check() -> tuple[list[str], list[str], list[float]]:
    """Fluent answers with their own prompt (label 1) and with the next answer's prompt
    (label 0): a relevance scorer must rank the matched pairs higher."""
    rows = [r for r in read_jsonl(data_path("fluency_labelled.jsonl")) if r["label"] == 1]
    rows = rows[:RELEVANCE_CHECK_ANSWERS]
    prompts = [r["prompt"] for r in rows]
    answers = [r["answer"] for r in rows]
    shifted = prompts[1:] + prompts[:1]
    return prompts + shifted, answers + answers, [1.0] * len(rows) + [0.0] * len(rows)


def _checkable(relevance: PromptRankRelevance) -> PromptRankRelevance:
    """The relevance scorer as configured, ranking at least one other prompt (the check set has
    no hard negatives)."""
    return PromptRankRelevance(
        relevance.judge,
        relevance.hard_negatives,
        n_other_prompts=max(1, relevance.n_other_prompts or 0),
        output=relevance.output,
        reference_tokens=relevance.reference_tokens,
        max_answer_tokens=relevance.max_answer_tokens,
        seed=relevance.seed,
    )


def _load_generations(spec):
    """``spec.generation_labels()`` (None without), checked before any scorer runs."""
    if spec.generation_labels is None:
        return None
    gens = spec.generation_labels()
    for what, labels in (("behaviour", gens.behaviour), ("fluent", gens.fluent)):
        if len(set(labels)) < 2:
            raise ValueError(
                f"{spec.name}'s generation_labels have a single {what} label value: agreement "
                "needs two or more; label more varied answers or leave generation_labels unset"
            )
    return gens


def _generation_rows(scorers: SectionScorers, name: str, gens) -> list[dict]:
    """Rows for labelled generations (set ``"<behaviour> generations"``): the behaviour scorer
    and the self-judge against the behaviour labels, fluency and degeneracy against the fluent
    labels; each row with its metric per condition (``by_condition``, sorted by name)."""
    checks = [("behaviour", scorers.behaviour, gens.behaviour)]
    if scorers.self_judge is not None:
        checks.append(("self_judge", scorers.self_judge, gens.behaviour))
    for column, scorer in (
        ("fluency", scorers.fluency),
        ("judge_probability", scorers.nll),
        ("distinct_2", scorers.distinct),
        ("repeated_3gram", scorers.repeated),
    ):
        checks.append((column, scorer, gens.fluent))
    rows = []
    for column, scorer, labels in checks:
        scores, better = scorer.score(gens.prompts, gens.answers), scorer.higher_is_better
        result = agreement(scores, labels, higher_is_better=better, scorer=scorer.name)
        groups = agreement_by_group(
            scores, labels, gens.conditions, metric=result.metric, higher_is_better=better
        )
        by_condition = [
            {"condition": g.pop("group"), **g} for g in sorted(groups, key=itemgetter("group"))
        ]
        set_name = f"{name} generations"
        rows.append(
            {"column": column, "set": set_name, **result.as_dict(), "by_condition": by_condition}
        )
    return rows


def validate_section(scorers: SectionScorers, spec) -> list[dict]:
    """Each scorer's agreement with labels (one row each, with its 95% interval): the behaviour
    scorer (and the self-judge) on the behaviour's labelled set, fluency and degeneracy on the
    shipped fluency set, relevance on matched vs swapped prompts of fluent answers; with
    ``spec.generation_labels``, also the behaviour, fluency and degeneracy scorers on real
    answers of the evaluated conditions, per condition too.

    Example:
        >>> rows = validate_section(scorers, spec)
    """
    generations = _load_generations(spec)
    fluency = read_jsonl(data_path("fluency_labelled.jsonl"))
    fl_sets = ([r["prompt"] for r in fluency], [r["answer"] for r in fluency])
    fl_labels = [float(r["label"]) for r in fluency]
    checks = [
        ("fluency", scorers.fluency, (*fl_sets, fl_labels), "fluency_labelled"),
        ("judge_probability", scorers.nll, (*fl_sets, fl_labels), "fluency_labelled"),
        ("distinct_2", scorers.distinct, (*fl_sets, fl_labels), "fluency_labelled"),
        ("repeated_3gram", scorers.repeated, (*fl_sets, fl_labels), "fluency_labelled"),
        ("relevance", _checkable(scorers.relevance), _relevance_check(), "own vs swapped prompt"),
    ]
    if spec.behaviour_labels is not None:
        labelled = spec.behaviour_labels()
        checks.insert(0, ("behaviour", scorers.behaviour, labelled, f"{spec.name} labelled"))
        if scorers.self_judge is not None:
            checks.append(("self_judge", scorers.self_judge, labelled, f"{spec.name} labelled"))
    rows = []
    for column, scorer, (prompts, answers, labels), labelled_set in checks:
        result = validate_scorer(scorer, prompts, answers, labels)
        rows.append({"column": column, "set": labelled_set, **result.as_dict()})
    if spec.behaviour_labels is None:
        rows.insert(0, {"column": "behaviour", "set": None, "scorer": scorers.behaviour.name})
    if generations is not None:
        rows += _generation_rows(scorers, spec.name, generations)
    return rows


def headline_axes(validation: Sequence[Mapping]) -> tuple[str, ...]:
    """The axes whose scorer agrees with its labels on every labelled set it has (a scorer
    without a labelled set stays in, reported as not validated); raises when no axis is left.

    Example:
        >>> headline_axes([{"column": "fluency", "passes": False}, ...])
        ('behaviour', 'relevance')
    """
    failed = {r["column"] for r in validation if r.get("set") is not None and not r["passes"]}
    kept = tuple(a for a in AXES if a not in failed)
    if not kept:
        raise ValueError(
            "no scorer agrees with its labels: the section has no headline; check the judge "
            "(judge_model) and the behaviour's scorer"
        )
    return kept
