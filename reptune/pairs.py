"""Contrastive pairs: the data type, generic sources, the chat layout, checks and splits.

A :class:`ContrastivePair` holds two full texts that differ only in the behaviour of interest.
Generic sources: CAA-style A/B JSON and JSONL with ``positive``/``negative`` texts. Behaviour-
specific sources (honesty claims, sentiment replies) live in :mod:`reptune.behaviours`.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "ContrastivePair",
    "format_chat",
    "load_caa_pairs",
    "load_jsonl_pairs",
    "validate_pairs",
    "fingerprint",
    "split_pairs",
]


@dataclass
class ContrastivePair:
    """Two texts that differ only in the behaviour: ``positive`` shows it, ``negative`` not.

    Example:
        >>> ContrastivePair("I love this film", "I hate this film")
    """

    positive: str
    negative: str
    meta: dict[str, Any] = field(default_factory=dict)


def format_chat(
    tokenizer,
    user: str,
    answer: str = "",
    system: str | None = None,
    history: Sequence[Sequence[str]] = (),
) -> str:
    """The text of a chat turn: the template's prompt for ``user`` followed by ``answer``.

    ``history`` holds earlier ``(user, assistant)`` exchanges (few-shot examples), placed after
    the system prompt. The answer is appended after the generation prompt without an end-of-turn
    token, so the last token of the text is the last token of the answer. Without a chat
    template, a plain ``"{system}\\n\\n{user}\\n{assistant}\\n\\n...{user}\\n"`` layout is used.

    Example:
        >>> format_chat(tok, "Is the sky green?", "(B")
    """
    if getattr(tokenizer, "chat_template", None):
        messages = [{"role": "system", "content": system}] if system else []
        for shown_user, shown_answer in history:
            messages += [
                {"role": "user", "content": shown_user},
                {"role": "assistant", "content": shown_answer},
            ]
        messages.append({"role": "user", "content": user})
        prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    else:
        shown = "".join(f"{u}\n{a}\n\n" for u, a in history)
        prompt = (f"{system}\n\n" if system else "") + shown + f"{user}\n"
    return prompt + answer


def _require_file(path: str | Path, what: str) -> Path:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} does not exist")
    return path


def _read_json_list(path: Path) -> list:
    _require_file(path, "pairs file")
    try:
        data = json.loads(Path(path).read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from err
    if not isinstance(data, list):
        raise ValueError(f"{path} must hold a JSON array of objects")
    return data


def load_caa_pairs(
    path: str | Path, tokenizer=None, system: str | None = None, limit: int | None = None
) -> list[ContrastivePair]:
    """CAA A/B JSON (``question``, ``answer_matching_behavior``, ``answer_not_matching_behavior``).

    The positive text answers with the matching letter, the negative with the other; the answer is
    written as ``"(A"`` so the last token is the letter, as in CAA.

    Example:
        >>> pairs = load_caa_pairs("caa/generate_sycophancy_ab.json", tokenizer)
    """
    rows = _read_json_list(Path(path))
    if limit and limit > len(rows):
        raise ValueError(
            f"{path} holds {len(rows)} rows, fewer than limit={limit}: lower the limit or pass "
            "None for all of them"
        )
    pairs = []
    for i, row in enumerate(rows[:limit] if limit else rows):
        try:
            question = row["question"]
            pos, neg = row["answer_matching_behavior"], row["answer_not_matching_behavior"]
        except (KeyError, TypeError) as err:
            raise ValueError(
                f"{path} row {i} lacks {err}: CAA rows need question, answer_matching_behavior and "
                "answer_not_matching_behavior"
            ) from err
        if not all(isinstance(x, str) for x in (question, pos, neg)):
            raise ValueError(
                f"{path} row {i}: question and answers must be strings, got "
                f"{type(question).__name__}, {type(pos).__name__}, {type(neg).__name__}"
            )
        pos, neg = pos.strip().rstrip(")"), neg.strip().rstrip(")")
        texts = [format_chat(tokenizer, question, answer, system) for answer in (pos, neg)]
        pairs.append(ContrastivePair(*texts, {"source": str(path), "index": i}))
    return pairs


def load_jsonl_pairs(path: str | Path) -> list[ContrastivePair]:
    """JSONL with one ``{"positive": ..., "negative": ...}`` object per line.

    Example:
        >>> pairs = load_jsonl_pairs("my_pairs.jsonl")
    """
    pairs = []
    text = _require_file(path, "pairs file").read_text(encoding="utf-8-sig")
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            pos, neg = row["positive"], row["negative"]
            meta = {k: v for k, v in row.items() if k not in ("positive", "negative")}
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as err:
            raise ValueError(
                f"{path} line {n}: expected a JSON object with 'positive' and 'negative' ({err})"
            ) from err
        if not (isinstance(pos, str) and isinstance(neg, str) and pos and neg):
            raise ValueError(
                f"{path} line {n}: 'positive' and 'negative' must be non-empty strings, got "
                f"{pos!r:.40} and {neg!r:.40}"
            )
        pairs.append(ContrastivePair(pos, neg, meta))
    if not pairs:
        raise ValueError(f"{path} holds no pairs: write one JSON object per line")
    return pairs


def validate_pairs(pairs: Sequence[ContrastivePair]) -> None:
    """Raise a clear error for empty data, unpaired or identical texts."""
    if isinstance(pairs, ContrastivePair):
        raise TypeError("pass a list of ContrastivePair, not a single pair: [pair]")
    if isinstance(pairs, (str, bytes, Path, dict)) or not hasattr(pairs, "__len__"):
        hint = (
            " (read a file with reptune.pairs.load_pairs)" if isinstance(pairs, (str, Path)) else ""
        )
        raise TypeError(
            f"pairs must be a list of ContrastivePair, got {type(pairs).__name__}{hint}"
        )
    if not pairs:
        raise ValueError("no contrastive pairs given: pass at least one (positive, negative) pair")
    for i, pair in enumerate(pairs):
        if not isinstance(pair, ContrastivePair):
            raise TypeError(
                f"pair {i} is a {type(pair).__name__}, not a ContrastivePair: pairs must be a "
                "list of ContrastivePair(positive=..., negative=...)"
            )
        for side in ("positive", "negative"):
            if not isinstance(getattr(pair, side), str):
                raise TypeError(
                    f"pair {i} has a {type(getattr(pair, side)).__name__} as its {side} text, "
                    "not a string"
                )
        if not pair.positive or not pair.negative:
            raise ValueError(f"pair {i} has an empty positive or negative text (unpaired data?)")
        if pair.positive == pair.negative:
            raise ValueError(
                f"pair {i} has identical positive and negative texts, so its difference is zero: "
                f"{pair.positive[:80]!r}"
            )


def fingerprint(pairs: Sequence[ContrastivePair]) -> str:
    """A short hash of the pair texts, stored with vectors to trace the data they came from."""
    h = hashlib.sha256()
    for pair in pairs:
        h.update(pair.positive.encode())
        h.update(b"\x00")
        h.update(pair.negative.encode())
        h.update(b"\x01")
    return h.hexdigest()[:16]


def split_pairs(items: Sequence, test_fraction: float = 0.2, seed: int = 0) -> tuple[list, list]:
    """Deterministic shuffled train/test split; ``round(len * test_fraction)`` items to test.

    A positive fraction that leaves the test (or the train) side empty is refused: the split
    would silently hold nothing.

    Example:
        >>> train, test = split_pairs(pairs, test_fraction=0.2, seed=0)
    """
    if not 0 <= test_fraction < 1:
        raise ValueError("test_fraction must be in [0, 1)")
    order = list(range(len(items)))
    random.Random(seed).shuffle(order)
    n_test = int(round(len(items) * test_fraction))
    if test_fraction > 0 and (n_test == 0 or n_test == len(items)):
        raise ValueError(
            f"test_fraction={test_fraction} of {len(items)} items leaves "
            f"{'no test item' if n_test == 0 else 'no training item'}: add data or change the "
            "fraction"
        )
    test = [items[i] for i in sorted(order[:n_test])]
    train = [items[i] for i in sorted(order[n_test:])]
    return train, test
