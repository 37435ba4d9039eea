"""CAA A/B behaviours: vectors from an A/B pairs file, open answers to the questions of an A/B
items file, scored 1 when the answer picks the behaviour-matching letter.

Any file of the CAA format (``question``, ``answer_matching_behavior``,
``answer_not_matching_behavior``) is a behaviour: ``behaviour: caa`` with ``pairs``,
``eval_items`` and ``instruction`` in the recipe.

The rows are split by their question text, in an order fixed by a seeded hash (the same split
whatever the file's row order): the eval prompts come first (the whole ``eval_items`` file, or,
when it is the pairs file itself, ``dev_prompts + test_prompts`` of its questions), then the
pair rows (as many (A)- as (B)-matching questions: all a balance allows, or ``max_pairs``), of
which ``heldout_fraction`` of each letter are held out. Vectors come from the training pairs
only; the held-out separation is measured on the held-out pairs only. No question is on two
sides. The balance matters: the pairs differ in their last token, the letter, so an unbalanced
mean difference carries the letter's own direction, and an unbalanced held-out set scores it.

Example:
    >>> from reptune.behaviours import get_behaviour
    >>> spec = get_behaviour("caa", BehaviourArguments(behaviour="caa", pairs="caa/...", ...))
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..evaluation.ab.parsing import parse_answer
from ..io import read_records, resolve_data
from ..pairs import load_caa_pairs
from .registry import BehaviourOptions, BehaviourSpec, register_behaviour

__all__ = ["CaaSplit", "caa_spec", "matching_letter_score", "split_caa_rows"]

logger = logging.getLogger(__name__)

#: The answer letters of a CAA A/B question.
LETTERS = ("A", "B")


@dataclass(frozen=True)
class CaaSplit:
    """Row indices of each side: ``train`` and ``held_out`` index the pairs file, ``eval``
    indexes the eval file. No question text is on two sides."""

    train: list[int]
    held_out: list[int]
    eval: list[int]


def _rank(seed: int, question: str) -> str:
    return hashlib.sha256(f"{seed}\0{question}".encode()).hexdigest()


def _keyed_order(rows: Sequence[dict], seed: int) -> list[str]:
    """The distinct questions of ``rows`` in seeded-hash order (independent of row order)."""
    return sorted({r["question"] for r in rows}, key=lambda q: _rank(seed, q))


def split_caa_rows(
    pair_rows: Sequence[dict],
    eval_rows: Sequence[dict] | None = None,
    *,
    n_eval: int | None = None,
    max_pairs: int | None = None,
    heldout_fraction: float = 0.2,
    seed: int = 0,
) -> CaaSplit:
    """Split CAA rows by question text into training pairs, held-out pairs and eval prompts.

    ``eval_rows=None`` means the eval prompts come from ``pair_rows`` too: the first ``n_eval``
    questions in seeded-hash order. Pair questions that are also eval questions are dropped from
    the pairs (with a warning). Training and held-out pairs each hold as many (A)- as
    (B)-matching questions. Rows sharing a question stay on one side. A side left empty, or
    a count the rows cannot fill, is an error naming the fix; nothing shrinks silently.

    Example:
        >>> split = split_caa_rows(pairs_rows, eval_rows, heldout_fraction=0.2, seed=0)
        >>> set(split.train).isdisjoint(split.held_out)
        True
    """
    if not 0 < heldout_fraction < 1:
        raise ValueError(f"heldout_fraction must be in (0, 1), got {heldout_fraction}")
    order = _keyed_order(pair_rows, seed)
    if eval_rows is None:
        if not n_eval or n_eval < 1 or n_eval >= len(order):
            raise ValueError(
                f"the pairs file is also the eval file: n_eval={n_eval} of its {len(order)} "
                "questions must be >= 1 and leave pairs (set dev_prompts and test_prompts, or "
                "give a separate eval_items file)"
            )
        eval_questions, order = set(order[:n_eval]), order[n_eval:]
        eval_index = [i for i, r in enumerate(pair_rows) if r["question"] in eval_questions]
    else:
        eval_questions = {r["question"] for r in eval_rows}
        eval_index = list(range(len(eval_rows)))
        overlap = [q for q in order if q in eval_questions]
        if overlap:
            logger.warning(
                "%d pair questions are also eval questions; they are left out of the pairs",
                len(overlap),
            )
            order = [q for q in order if q not in eval_questions]
    held, kept = _balanced_sides(pair_rows, order, max_pairs, heldout_fraction)
    return CaaSplit(
        train=[i for i, r in enumerate(pair_rows) if r["question"] in kept - held],
        held_out=[i for i, r in enumerate(pair_rows) if r["question"] in held],
        eval=eval_index,
    )


def _balanced_sides(
    pair_rows: Sequence[dict], order: list[str], max_pairs: int | None, fraction: float
) -> tuple[set[str], set[str]]:
    """(held-out questions, kept questions), each with as many A-matching as B-matching
    questions, taken in ``order``: a mean difference at the letter then cancels the letter's
    own direction, and a vector of the letter alone separates held-out pairs at exactly 0.5."""
    letter: dict[str, str] = {}
    for i, row in enumerate(pair_rows):
        found = row["answer_matching_behavior"].strip(" ()")
        if found not in LETTERS:
            raise ValueError(f"pairs row {i}: answer_matching_behavior {found!r} is not (A) or (B)")
        letter.setdefault(row["question"], found)
    groups = [[q for q in order if letter[q] == x] for x in LETTERS]
    n_each = min(len(g) for g in groups)
    if max_pairs is not None:
        if max_pairs % 2 or max_pairs // 2 > n_each:
            raise ValueError(
                f"max_pairs={max_pairs} must be even and at most {2 * n_each} (the questions "
                "left after the eval prompts, as many matching (A) as (B)): change max_pairs"
            )
        n_each = max_pairs // 2
    n_held = int(round(n_each * fraction))
    if n_held == 0 or n_held == n_each:
        side = "held-out" if n_held == 0 else "training"
        raise ValueError(
            f"{n_each} pair questions per letter with heldout_fraction={fraction} leave no "
            f"{side} pair: add pairs, raise max_pairs or change the fraction"
        )
    if any(len(g) > n_each for g in groups) and max_pairs is None:
        logger.warning(
            "%d pair questions are left out so that as many match (A) as (B)",
            sum(len(g) - n_each for g in groups),
        )
    held = {q for g in groups for q in g[:n_held]}
    return held, {q for g in groups for q in g[:n_each]}


def matching_letter_score(wanted: dict[str, str]):
    """A scorer: 1 when an answer picks its prompt's behaviour-matching letter (letters only:
    "yes"/"no" are not read as A/B), else 0. A prompt without a letter in ``wanted`` is an error.

    Example:
        >>> score = matching_letter_score({"Agree? (A) Yes (B) No": "A"})
        >>> score(None, None, ["(A) Yes, I agree."], ["Agree? (A) Yes (B) No"])
        [1.0]
    """

    def score(judge, tok, texts, prompts) -> list[float]:
        unknown = [p for p in prompts if p not in wanted]
        if unknown:
            raise ValueError(f"no behaviour-matching letter for prompt {unknown[0][:80]!r}")
        return [
            float(parse_answer(t, LETTERS, aliases=None) == wanted[p])
            for t, p in zip(texts, prompts)
        ]

    return score


def _rows(path: str) -> list[dict]:
    """The rows of a CAA file, checked (fields and string types) before any model loads."""
    load_caa_pairs(path)  # names a missing field or a wrong type with the row
    return read_records(path)


def _wanted_letters(rows: Sequence[dict], path: str) -> dict[str, str]:
    wanted: dict[str, str] = {}
    for i, row in enumerate(rows):
        letter = row["answer_matching_behavior"].strip(" ()")
        if letter not in LETTERS:
            raise ValueError(
                f"{path} row {i}: answer_matching_behavior {row['answer_matching_behavior']!r} "
                "is not (A) or (B)"
            )
        if wanted.setdefault(row["question"], letter) != letter:
            raise ValueError(f"{path} row {i}: the question appears with both letters")
    return wanted


def caa_spec(
    options: BehaviourOptions, heldout_fraction: float = 0.2, seed: int = 0
) -> BehaviourSpec:
    """A CAA A/B behaviour from ``options.pairs`` (training pairs, held-out pairs, training
    prompts) and ``options.eval_items`` (dev and test prompts), split by :func:`split_caa_rows`
    with ``options.max_pairs`` when set; answers are scored by :func:`matching_letter_score`.

    Example:
        >>> options = BehaviourArguments(behaviour="caa", pairs=p, eval_items=e, instruction=i)
        >>> spec = caa_spec(options)
    """
    pairs_path, eval_path = resolve_data(options.pairs), resolve_data(options.eval_items)
    pair_rows = _rows(pairs_path)
    same_file = Path(pairs_path).resolve() == Path(eval_path).resolve()
    eval_rows = None if same_file else _rows(eval_path)
    n_eval = getattr(options, "dev_prompts", 0) + (getattr(options, "test_prompts", 0) or 0)
    split = split_caa_rows(
        pair_rows,
        eval_rows,
        n_eval=n_eval,
        max_pairs=getattr(options, "max_pairs", None),
        heldout_fraction=heldout_fraction,
        seed=seed,
    )
    eval_rows = [(pair_rows if same_file else eval_rows)[i] for i in split.eval]
    sides = {"train": split.train, "test": split.held_out}

    def pairs(tok, side):
        every = load_caa_pairs(pairs_path, tok)
        if len(every) != len(pair_rows):
            raise ValueError(f"{pairs_path} changed during the run: rerun from the start")
        return [every[i] for i in sides[side]]

    return BehaviourSpec(
        Path(options.pairs).stem,
        pairs,
        lambda: [pair_rows[i]["question"] for i in split.train],
        lambda: [r["question"] for r in eval_rows],
        matching_letter_score(_wanted_letters(eval_rows, eval_path)),
        options.instruction,
    )


register_behaviour(caa_spec, name="caa", requires=("pairs", "eval_items", "instruction"))
