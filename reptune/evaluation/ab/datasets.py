"""Multiple-choice evaluation items and their loaders.

An :class:`ABItem` is a question (choices included) with the letter that counts as the target
answer: the true answer of a claim, the correct answer of TruthfulQA/MMLU, or the answer matching
the behaviour of a CAA behaviour set. Loaders read local files (JSON, JSONL, CSV) or, for any other
name, a HuggingFace dataset; the row schema is detected from its fields:

==================  =======================================================================
schema              fields
==================  =======================================================================
``caa``             ``question``, ``answer_matching_behavior``, ``answer_not_matching_behavior``
``caa_qa``          ``prompt``, ``correct``, ``incorrect`` (CAA TruthfulQA / MMLU A/B files)
``claims``          ``statement``, ``label`` (1/true = true claim)
``truthfulqa_csv``  ``Question``, ``Best Answer``, ``Incorrect Answers`` (also HF lowercase)
``truthfulqa_mc``   ``question``, ``mc1_targets`` (answer -> 0/1, or HF choices/labels)
``mc``              ``question``, ``choices`` (list), ``answer`` (index or letter), as MMLU
==================  =======================================================================

TruthfulQA options are shuffled deterministically (``seed``) so the correct answer sits equally
often at each letter.
"""

from __future__ import annotations

import logging
import random
import re
import string
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...io import read_records
from ...pairs import format_chat
from .parsing import CLAIM_ALIASES
from .sampling import sample_items

__all__ = [
    "ABItem",
    "CLAIM_QUESTION",
    "SCHEMAS",
    "format_choices",
    "item_prompt",
    "balanced_positions",
    "read_records",
    "detect_schema",
    "records_to_items",
    "load_items",
]

logger = logging.getLogger(__name__)

#: A true/false claim as an A/B question (the published honesty wording).
CLAIM_QUESTION = (
    'Question: Is the following claim true or false? "{claim}"\n\n'
    "Choices:\n (A) True\n (B) False\n\nAnswer with A or B."
)
SCHEMAS = ("caa", "caa_qa", "claims", "truthfulqa_csv", "truthfulqa_mc", "mc")
_LETTER = re.compile(r"^\s*\(?\s*([A-Z])\s*\)?\s*$")
_CHOICE_LINE = re.compile(r"^\s*\(([A-Z])\)\s*(.+?)\s*$", re.MULTILINE)


@dataclass
class ABItem:
    """A multiple-choice question whose ``target`` letter counts as the +1 answer.

    ``question`` is the user turn with the choices written in; ``aliases`` maps answer words
    (``true``, ``yes``...) to letters for the generation parser; ``meta`` keeps the source row's
    extra fields (category, claim label...).

    Example:
        >>> item = ABItem('Is "Paris is in France" true?\\n\\nChoices:\\n(A) True\\n(B) False', "A")
    """

    question: str
    target: str
    letters: tuple[str, ...] = ("A", "B")
    aliases: dict[str, str] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        self.letters = tuple(self.letters)
        if self.target not in self.letters:
            raise ValueError(f"target {self.target!r} is not one of the letters {self.letters}")

    @property
    def other(self) -> list[str]:
        """The non-target letters."""
        return [x for x in self.letters if x != self.target]


def format_choices(question: str, options: Sequence[str], letters: Sequence[str] | None = None):
    """The CAA layout: the question, a blank line, ``Choices:`` and one ``(X) option`` per line.

    Example:
        >>> format_choices("2 + 2?", ["4", "5"])
        '2 + 2?\\n\\nChoices:\\n(A) 4\\n(B) 5'
    """
    letters = letters or string.ascii_uppercase[: len(options)]
    lines = [f"({letter}) {option}" for letter, option in zip(letters, options)]
    return f"{question.rstrip()}\n\nChoices:\n" + "\n".join(lines)


def item_prompt(tokenizer, item: ABItem, system: str | None = None, answer_prefix: str = "") -> str:
    """The chat prompt of ``item`` (with an optional system persona), ending in ``answer_prefix``.

    ``answer_prefix="("`` puts the answer letter right at the next position, as in CAA.

    Example:
        >>> item_prompt(tok, item, system=HONEST_PERSONA, answer_prefix="(")
    """
    return format_chat(tokenizer, item.question, answer_prefix, system)


def balanced_positions(n: int, k: int = 2, seed: int = 0) -> list[int]:
    """``n`` positions in ``range(k)``, each used ``n // k`` or ``n // k + 1`` times, shuffled.

    Example:
        >>> sorted(balanced_positions(4, 2, seed=1))
        [0, 0, 1, 1]
    """
    positions = [i % k for i in range(n)]
    random.Random(seed).shuffle(positions)
    return positions


def _letter(value: Any, where: str) -> str:
    match = _LETTER.match(str(value))
    if not match:
        raise ValueError(f"{where}: expected an answer letter like '(A)', got {value!r}")
    return match.group(1)


def _word_aliases(question: str, letters: Sequence[str]) -> dict[str, str]:
    # "(A) Yes" / "(B) No" choices: the words themselves are answers too.
    aliases = {}
    for letter, text in _CHOICE_LINE.findall(question):
        word = text.strip().strip(".!").lower()
        if letter in letters and word in CLAIM_ALIASES:
            aliases[word] = letter
    return aliases


def _as_bool_label(value: Any, where: str) -> bool:
    label = str(value).strip().lower()
    if label not in ("1", "0", "true", "false"):
        raise ValueError(f"{where}: label must be 1/0 or true/false, got {value!r}")
    return label in ("1", "true")


def _split_answers(value: Any) -> list[str]:
    if isinstance(value, (list, tuple)):
        return [str(v).strip() for v in value if str(v).strip()]
    return [part.strip() for part in str(value or "").split(";") if part.strip()]


def _truthfulqa_parts(row: Mapping[str, Any], schema: str, where: str):
    """``(question, correct answer, wrong answers, extra meta)`` of a TruthfulQA row."""
    if schema == "truthfulqa_csv":
        question = str(_field(row, "question")).strip()
        correct = str(_field(row, "best answer")).strip()
        wrong = _split_answers(_field(row, "incorrect answers"))
        try:  # the 2025 file names its best wrong answer: put it first
            wrong = [str(_field(row, "best incorrect answer")).strip(), *wrong]
        except KeyError:
            pass
        extra = {k: row[k] for k in ("Category", "category", "Type") if k in row}
    else:
        question = str(row["question"]).strip()
        targets = row["mc1_targets"]
        if isinstance(targets, Mapping) and "choices" in targets:  # HF layout
            targets = dict(zip(targets["choices"], targets["labels"]))
        right = [t for t, label in targets.items() if int(label) == 1]
        if len(right) != 1:
            raise ValueError(f"{where}: mc1_targets must mark exactly one answer")
        correct = right[0]
        wrong = [t for t, label in targets.items() if int(label) == 0]
        extra = {}
    wrong = [w for w in dict.fromkeys(wrong) if w and w != correct]
    return question, correct, wrong, extra


def _truthfulqa_items(records, schema: str, k: int, seed: int, source: str) -> list[ABItem]:
    parts = []
    for i, row in enumerate(records):
        where = f"{source or 'data'} row {i}"
        try:
            parts.append((i, *_truthfulqa_parts(row, schema, where)))
        except KeyError as err:
            raise ValueError(f"{where} lacks the field {err} needed by schema {schema!r}") from err
    usable = [p for p in parts if len(p[3]) >= k - 1]
    if len(usable) < len(parts):
        logger.warning(
            "%s: %d of %d questions have fewer than %d wrong answers and are left out; "
            "use fewer choices to keep them",
            source or "data",
            len(parts) - len(usable),
            len(parts),
            k - 1,
        )
    if not usable:
        raise ValueError(f"{source or 'the data'}: no question has {k - 1} wrong answers")
    letters = tuple(string.ascii_uppercase[:k])
    # Positions are balanced over the questions kept, so each letter is right equally often.
    positions = balanced_positions(len(usable), k, seed)
    rng = random.Random(seed)
    items = []
    for (i, question, correct, wrong, extra), pos in zip(usable, positions):
        wrong = wrong[: k - 1]
        rng.shuffle(wrong)
        options = wrong[:pos] + [correct] + wrong[pos:]
        meta = {"source": source, "index": i, **extra}
        items.append(
            ABItem(format_choices(question, options, letters), letters[pos], letters, {}, meta)
        )
    return items


def detect_schema(record: Mapping[str, Any]) -> str:
    """The schema name of one row (see the module docstring), or raise with the fields seen.

    Example:
        >>> detect_schema({"statement": "Snow is white", "label": 1})
        'claims'
    """
    keys = set(record)
    lower = {k.lower() for k in keys}
    if {"question", "answer_matching_behavior", "answer_not_matching_behavior"} <= keys:
        return "caa"
    if {"prompt", "correct", "incorrect"} <= keys:
        return "caa_qa"
    if {"statement", "label"} <= keys:
        return "claims"
    if "question" in lower and {"best answer", "incorrect answers"} <= lower:
        return "truthfulqa_csv"
    if {"question", "best_answer", "incorrect_answers"} <= keys:
        return "truthfulqa_csv"
    if {"question", "mc1_targets"} <= keys:
        return "truthfulqa_mc"
    if {"question", "choices", "answer"} <= keys:
        return "mc"
    raise ValueError(
        f"cannot tell the format of a row with fields {sorted(keys)}; expected one of: CAA A/B "
        "(question, answer_matching_behavior, ...), CAA QA (prompt, correct, incorrect), claims "
        "(statement, label), TruthfulQA CSV or MC JSON, or MMLU-style (question, choices, answer)"
    )


def _field(record: Mapping[str, Any], name: str) -> Any:
    for key, value in record.items():
        if key.lower().replace("_", " ") == name:
            return value
    raise KeyError(name)


def records_to_items(
    records: Iterable[Mapping[str, Any]],
    schema: str = "auto",
    *,
    n_choices: int = 2,
    seed: int = 0,
    source: str = "",
) -> list[ABItem]:
    """Turn rows of any supported schema into :class:`ABItem` s.

    ``n_choices`` applies to TruthfulQA: the options are the correct answer and the first
    ``n - 1`` wrong ones (the named best wrong answer first), shuffled; questions with fewer wrong
    answers are left out, with a warning.

    Example:
        >>> items = records_to_items([{"statement": "Snow is white", "label": 1}])
        >>> items[0].target
        'A'
    """
    records = list(records)
    if not records:
        raise ValueError(f"{source or 'the data'} holds no rows")
    if schema == "auto":
        schema = detect_schema(records[0])
    if schema not in SCHEMAS:
        raise ValueError(f"unknown schema {schema!r}: use 'auto' or one of {SCHEMAS}")
    if schema in ("truthfulqa_csv", "truthfulqa_mc"):
        return _truthfulqa_items(records, schema, n_choices, seed, source)
    items = []
    for i, row in enumerate(records):
        where = f"{source or 'data'} row {i}"
        meta = {"source": source, "index": i}
        try:
            if schema == "caa":
                question = row["question"]
                target = _letter(row["answer_matching_behavior"], where)
                other = _letter(row["answer_not_matching_behavior"], where)
                found = tuple(sorted({target, other}))
                items.append(ABItem(question, target, found, _word_aliases(question, found), meta))
            elif schema == "caa_qa":
                question = row["prompt"]
                target = _letter(row["correct"], where)
                found = tuple(sorted({target, _letter(row["incorrect"], where)}))
                meta.update({k: row[k] for k in ("category",) if k in row})
                items.append(ABItem(question, target, found, _word_aliases(question, found), meta))
            elif schema == "claims":
                label = _as_bool_label(row["label"], where)
                statement = str(row["statement"]).strip()
                meta.update(statement=statement, label=label)
                items.append(
                    ABItem(
                        CLAIM_QUESTION.format(claim=statement),
                        "A" if label else "B",
                        ("A", "B"),
                        dict(CLAIM_ALIASES),
                        meta,
                    )
                )
            else:  # mc
                options = [str(c) for c in row["choices"]]
                mc_letters = tuple(string.ascii_uppercase[: len(options)])
                answer = row["answer"]
                numeric = isinstance(answer, int) or str(answer).strip().isdigit()
                target = mc_letters[int(answer)] if numeric else _letter(answer, where)
                meta.update({k: row[k] for k in ("subject", "category") if k in row})
                items.append(
                    ABItem(
                        format_choices(str(row["question"]), options, mc_letters),
                        target,
                        mc_letters,
                        {},
                        meta,
                    )
                )
        except KeyError as err:
            raise ValueError(f"{where} lacks the field {err} needed by schema {schema!r}") from err
    return items


def _looks_like_path(source: str) -> bool:
    # A missing local file should fail as such, not as an unknown Hub dataset.
    if Path(source).suffix.lower() in (".json", ".jsonl", ".csv", ".tsv"):
        return True
    return source.startswith((".", "/", "~"))


def load_items(
    source: str | Path,
    schema: str = "auto",
    *,
    n_choices: int = 2,
    seed: int = 0,
    limit: int | None = None,
    at_most: int | None = None,
    dataset_config: str | None = None,
    split: str = "validation",
) -> list[ABItem]:
    """Items from a local file, or from the HuggingFace dataset named ``source``.

    ``limit`` keeps a seeded sample of exactly that many items, balanced over target letters
    (see :func:`sample_items`), and is refused when the source holds fewer. ``at_most`` is a
    cap instead (a command's default): every item when there are fewer.

    Example:
        >>> items = load_items("../shared/data/repe/facts_true_false.csv", limit=200)
        >>> items = load_items("truthful_qa", dataset_config="multiple_choice")  # needs the Hub
    """
    source_str = str(source)
    path = Path(source_str).expanduser()
    if path.exists() or _looks_like_path(source_str):
        records = read_records(path)
    else:
        import datasets  # only for Hub names

        records = list(datasets.load_dataset(source_str, dataset_config, split=split))
    items = records_to_items(records, schema, n_choices=n_choices, seed=seed, source=source_str)
    if limit and limit > len(items):
        raise ValueError(
            f"{source_str} holds {len(items)} items, fewer than the {limit} asked for (limit): "
            "lower the limit, or pass 0 / None for all of them"
        )
    n = limit or (min(at_most, len(items)) if at_most else None)
    return sample_items(items, n, seed) if n else items
