"""CAA A/B behaviours: vectors from an A/B pairs file, open answers to the questions of an A/B
items file, scored 1 when the answer picks the behaviour-matching letter.

Any file of the CAA format (``question``, ``answer_matching_behavior``,
``answer_not_matching_behavior``) is a behaviour: ``behaviour: caa`` with ``pairs``,
``eval_items`` and ``instruction`` in the recipe.

Example:
    >>> from reptune.behaviours import get_behaviour
    >>> spec = get_behaviour("caa", BehaviourArguments(behaviour="caa", pairs="caa/...", ...))
"""

from __future__ import annotations

from pathlib import Path

from ..evaluation.ab.parsing import parse_answer
from ..io import read_records, resolve_data
from ..pairs import load_caa_pairs, split_pairs
from .registry import BehaviourOptions, BehaviourSpec, register_behaviour

__all__ = ["caa_spec"]


def caa_spec(options: BehaviourOptions) -> BehaviourSpec:
    """A CAA A/B behaviour from ``options.pairs`` (vectors and training prompts, 80/20 split)
    and ``options.eval_items`` (dev and test prompts); answers are parsed as in the A/B
    evaluation.

    Example:
        >>> options = BehaviourArguments(behaviour="caa", pairs=p, eval_items=e, instruction=i)
        >>> spec = caa_spec(options)
    """

    def rows(path):
        return [r for r in read_records(resolve_data(path)) if isinstance(r, dict)]

    train_rows, test_rows = split_pairs(rows(options.pairs), 0.2, 0)
    eval_rows = rows(options.eval_items)
    wanted = {r["question"]: r["answer_matching_behavior"].strip(" ()") for r in eval_rows}

    def pairs(tok, split):
        chosen = {id(r) for r in (train_rows if split == "train" else test_rows)}
        every = load_caa_pairs(resolve_data(options.pairs), tok)
        return [p for p, r in zip(every, rows(options.pairs)) if id(r) in chosen] or every

    def score(judge, tok, texts, prompts):
        return [float(parse_answer(t, ("A", "B")) == wanted.get(p)) for t, p in zip(texts, prompts)]

    return BehaviourSpec(
        Path(options.pairs).stem,
        pairs,
        lambda: [r["question"] for r in train_rows],
        lambda: [r["question"] for r in eval_rows],
        score,
        options.instruction,
    )


register_behaviour(caa_spec, name="caa", requires=("pairs", "eval_items", "instruction"))
