"""Model-free reading of an open answer against a known key answer: does it state the key,
contradict it, or neither?

Each alias of the key and of the wrong answers is looked for case-insensitively as a whole word
(``"7"`` does not match in ``"17"`` or ``"7:30"``; ``"seven"`` not in ``"seventeen"``); where two
matches overlap, the longer one counts. A match is *negated* when a negation (``not``, ``n't``,
``never``, ``no``, ``nor``, ``instead of``, ``rather than``...) stands within a few words before
it in the same clause, or when ``not``/``n't`` follows it at once ("she did not"). Then:

- a hedge joining the key and a wrong answer with "or" ("the drawer or the basket") is neither;
- otherwise the first asserting mention decides: the key stated (not negated) is ``"states"``;
  the key negated ("not in the drawer") or a wrong answer stated is ``"contradicts"``;
- a wrong answer that is only negated ("not the basket") asserts nothing; with no asserting
  mention the answer is ``"neither"``.

Yes/no keys (``polar=True``) read the first ``yes``/``no`` of the answer (``no`` as a determiner,
"no idea", does not count); without one, a negated first clause ("She did not lock it") reads as
no, and anything else is neither.

Example:
    >>> classify_answer("The keys are not in the drawer.", ["drawer"], [["basket"]])
    'contradicts'
    >>> classify_answer("In the drawer, next to the basket.", ["drawer"], [["basket"]])
    'states'
"""

from __future__ import annotations

import re
from collections.abc import Sequence

__all__ = ["VERDICTS", "NEGATION_WINDOW", "find_mentions", "classify_answer", "classify_letter"]

VERDICTS = ("states", "contradicts", "neither")
#: How many words before a match a negation still reaches (inside the same clause).
NEGATION_WINDOW = 5

_CLAUSE_BREAK = re.compile(r"[.!?;,:\n]|\bbut\b|\bhowever\b", re.IGNORECASE)
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
_NEGATORS = frozenset("not never no nor neither cannot nothing".split())
_NEGATING_PHRASES = re.compile(r"\b(?:instead\s+of|rather\s+than|other\s+than|except)\s*$")
_NEGATED_AFTER = re.compile(r"\s*(?:not\b|n't\b)")
_POLAR = re.compile(r"\b(yes|no)\b")
# "no" is a determiner when a noun-like word follows: "no idea", "no one"; not "no, ..." or "no it".
_POLAR_FOLLOWERS = frozenset("it i she he they we you the that this he's she's it's not".split())


def _normalise(text: str) -> str:
    return text.replace("\u2019", "'").lower()


def _alias_pattern(alias: str) -> re.Pattern:
    # Whole word: no letter or digit on either side, and no digit joined by ":", "." or ","
    # (so "7" is not found in "7:30", "1,000" or "3.5").
    return re.compile(rf"(?<![\w])(?<![\d][:.,]){re.escape(alias.lower())}(?![\w])(?![:.,]\d)")


def _negated(text: str, start: int, end: int, window: int) -> bool:
    before = _CLAUSE_BREAK.split(text[:start])[-1]
    if _NEGATING_PHRASES.search(before):
        return True
    words = _WORD.findall(before)[-window:] if window > 0 else []
    if any(w in _NEGATORS or w.endswith("n't") for w in words):
        return True
    return bool(_NEGATED_AFTER.match(text[end:]))


def find_mentions(
    text: str,
    answer: Sequence[str],
    wrong: Sequence[Sequence[str]] = (),
    negation_window: int = NEGATION_WINDOW,
) -> list[tuple[str, bool, int, int]]:
    """Every mention of the key (``"key"``) or a wrong answer (``"wrong"``) in ``text``, in order:
    ``(which, negated, start, end)``; overlapping matches keep the longest.

    Example:
        >>> find_mentions("not seven but eight", ["7", "seven"], [["8", "eight"]])
        [('key', True, 4, 9), ('wrong', False, 14, 19)]
    """
    text = _normalise(text)
    candidates = []
    for which, aliases in [("key", answer)] + [("wrong", w) for w in wrong]:
        for alias in aliases:
            if alias.strip():
                for m in _alias_pattern(alias.strip()).finditer(text):
                    candidates.append((m.start(), m.end(), which))
    candidates.sort(key=lambda c: (-(c[1] - c[0]), c[0]))
    kept: list[tuple[int, int, str]] = []
    for start, end, which in candidates:
        if all(end <= s or start >= e for s, e, _ in kept):
            kept.append((start, end, which))
    kept.sort()
    return [(which, _negated(text, s, e, negation_window), s, e) for s, e, which in kept]


def _hedged(text: str, mentions) -> bool:
    """A key and a wrong mention joined by "or" within a few words: "drawer or the basket"."""
    for (w1, _, _, e1), (w2, _, s2, _) in zip(mentions, mentions[1:]):
        between = text[e1:s2]
        if w1 != w2 and re.search(r"\bor\b", between) and len(_WORD.findall(between)) <= 3:
            return True
    return False


def _classify_polar(text: str, key: str) -> str:
    text = _normalise(text)
    for m in _POLAR.finditer(text):
        following = re.match(r"[ \t]+([a-z][a-z']*)", text[m.end() :])
        if m.group(1) == "no" and following and following.group(1) not in _POLAR_FOLLOWERS:
            continue
        return "states" if m.group(1) == key else "contradicts"
    first_clause = _CLAUSE_BREAK.split(text.strip())[0]
    words = _WORD.findall(first_clause)
    if any(w in ("not", "never", "cannot") or w.endswith("n't") for w in words):
        return "states" if key == "no" else "contradicts"
    return "neither"


def classify_answer(
    text: str,
    answer: Sequence[str],
    wrong: Sequence[Sequence[str]] = (),
    *,
    polar: bool = False,
    negation_window: int = NEGATION_WINDOW,
) -> str:
    """``"states"``, ``"contradicts"`` or ``"neither"``: how ``text`` answers a question whose key
    answer has the aliases ``answer`` and whose wrong answers have the alias lists ``wrong``.

    ``polar=True`` reads a yes/no question (``answer`` is ``["yes"]`` or ``["no"]``).

    Example:
        >>> classify_answer("It isn't seven.", ["7", "seven"], [["8", "eight"]])
        'contradicts'
        >>> classify_answer("No, she did not.", ["no"], polar=True)
        'states'
    """
    if isinstance(answer, str) or any(isinstance(w, str) for w in wrong):
        raise TypeError(
            "answer must be a list of aliases and wrong a list of alias lists, e.g. "
            "answer=['7', 'seven'], wrong=[['8', 'eight']]"
        )
    if not any(a.strip() for a in answer):
        raise ValueError("the key answer needs at least one non-empty alias")
    if polar:
        key = answer[0].strip().lower()
        if key not in ("yes", "no"):
            raise ValueError(f"a polar question's key must be 'yes' or 'no', got {answer[0]!r}")
        return _classify_polar(text, key)
    mentions = find_mentions(text, answer, wrong, negation_window)
    if _hedged(_normalise(text), mentions):
        return "neither"
    for which, negated, _, _ in mentions:
        if which == "key":
            return "contradicts" if negated else "states"
        if not negated:
            return "contradicts"
    return "neither"


def classify_letter(letter: str | None, target: str, letters: Sequence[str] = ("A", "B")) -> str:
    """The verdict of a parsed A/B letter: the target states, another letter contradicts, none
    is neither.

    Example:
        >>> classify_letter("B", "A")
        'contradicts'
    """
    if target not in letters:
        raise ValueError(f"target {target!r} is not one of the letters {tuple(letters)}")
    if letter is None:
        return "neither"
    return "states" if letter == target else "contradicts"
