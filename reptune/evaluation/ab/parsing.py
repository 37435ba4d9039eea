"""Parse the chosen option out of a generated answer.

The published rule: the first whole-word match of a letter or of True/False/yes/no is the answer,
and a match preceded by "not" within six words is discarded (the scan goes on). On top of it:

- the negation window stays inside the clause (it stops at ``. ! ? ; , :``, line breaks and
  "but"/"instead"/"rather"), and ``n't`` / ``cannot`` count as "not";
- a capital ``A`` used as the article ("A claim like this...") and ``no`` used as a determiner
  ("I have no idea") are not answers: such a word followed by another word is skipped, unless
  the next word continues an answer (``because``, ``it``...) or, for ``A``, it is introduced as
  an answer (``Answer:``, ``is``, ``pick``...);
- a letter counts only when it stands alone: ``(A)``, ``A)``, ``A.``, ``**B**``, ``Answer: B``,
  but not ``U.S.A.`` or ``B-movie``; lowercase letters count only in brackets (``(b)``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

__all__ = ["CLAIM_ALIASES", "parse_answer", "find_answer"]

#: Answer words of the claim question "(A) True (B) False".
CLAIM_ALIASES: dict[str, str] = {"true": "A", "yes": "A", "false": "B", "no": "B"}

_WORDS = ("true", "false", "yes", "no")
_NEGATION_WINDOW = 6
# Words after which a bare "A" is an answer, not the article.
_CUES = re.compile(
    r"(?:\banswer|\boption|\bchoice|\bchoose|\bchose|\bpick|\bpicked|\bselect|\bselected"
    r"|\bis|\bwas|\bbe|[:(\[=])\W*$",
    re.IGNORECASE,
)
# Words that may follow an answer ("A because...", "No it is not").
_FOLLOWERS = frozenset(
    "because since as and but or so it i this that the its it's i'm is was would seems not "
    "either".split()
)
# Where a negation's scope ends: sentence and clause punctuation, and a contrasting "but".
_CLAUSE_BREAK = re.compile(r"[.!?;,:\n]|\bbut\b|\binstead\b|\brather\b", re.IGNORECASE)
_TOKEN = re.compile(r"[A-Za-z]+(?:'[A-Za-z]+)?")


def _pattern(letters: Sequence[str]) -> re.Pattern:
    upper = "|".join(re.escape(x) for x in letters)
    lower = "|".join(re.escape(x.lower()) for x in letters)
    return re.compile(
        rf"(?<![\w.'-])(?P<letter>{upper})(?![\w'-])"
        rf"|(?<=[(\[])(?P<lower>{lower})(?=[)\]])"
        rf"|\b(?P<word>(?i:{'|'.join(_WORDS)}))\b"
    )


def _negated(text: str, start: int, window: int) -> bool:
    if window <= 0:
        return False
    clause = _CLAUSE_BREAK.split(text[:start])[-1]
    words = [w.lower() for w in _TOKEN.findall(clause)][-window:]
    return any(w in ("not", "cannot") or w.endswith("n't") for w in words)


def _is_determiner(text: str, start: int, end: int, cues: bool) -> bool:
    """True when the word at ``start:end`` reads as an article/determiner, not as an answer.

    It is one when a word follows that does not continue an answer ("A dog", "no idea"), unless
    it is bracketed or, with ``cues``, introduced as an answer ("Answer: A", "I pick A over B").
    """
    following = re.match(r"[ \t]+([A-Za-z][A-Za-z'-]+)", text[end:])
    if following is None:
        return False
    word = following.group(1).lower()
    if word in _FOLLOWERS or word in _WORDS:
        return False
    if text[start - 1 : start] in ("(", "[") or text[end : end + 1] in (")", "]"):
        return False
    return not (cues and _CUES.search(text[:start]))


def find_answer(
    text: str,
    letters: Sequence[str] = ("A", "B"),
    aliases: Mapping[str, str] | None = CLAIM_ALIASES,
    negation_window: int = _NEGATION_WINDOW,
) -> tuple[str, int, int] | None:
    """Like :func:`parse_answer`, but also return where the answer was found ``(letter, s, e)``.

    Example:
        >>> find_answer("Answer: (B) False")
        ('B', 9, 10)
    """
    text = text.replace("\u2019", "'")
    aliases = {k.lower(): v for k, v in (aliases or {}).items()}
    for match in _pattern(letters).finditer(text):
        start, end = match.span()
        if match.group("word") is not None:
            answer = aliases.get(match.group("word").lower())
            if answer is None or answer not in letters:
                continue
            if match.group("word").lower() == "no" and _is_determiner(text, start, end, False):
                continue
        elif match.group("lower") is not None:
            answer = match.group("lower").upper()
        else:
            answer = match.group("letter")
            if answer == "A" and _is_determiner(text, start, end, True):
                continue
        if _negated(text, start, negation_window):
            continue
        return answer, start, end
    return None


def parse_answer(
    text: str,
    letters: Sequence[str] = ("A", "B"),
    aliases: Mapping[str, str] | None = CLAIM_ALIASES,
    negation_window: int = _NEGATION_WINDOW,
) -> str | None:
    """The option chosen in ``text`` (one of ``letters``), or None when there is no answer.

    ``aliases`` maps answer words (``true``/``false``/``yes``/``no``) to letters; the default
    fits the claim question "(A) True (B) False". Pass ``{}`` to read letters only.

    Example:
        >>> parse_answer("I would not say it is true. It is false.")
        'B'
        >>> parse_answer("(A) is my answer")
        'A'
    """
    found = find_answer(text, letters, aliases, negation_window)
    return found[0] if found else None
