"""Claim splits that keep twins together, and counterbalanced answer letters.

Twin claims share a subject and differ in one detail ("Paris is the capital of France" /
"Berlin is the capital of France"): a model that saw one in training may answer the other from
memory of the pair, so twins must fall on one side of a split. Inside every split half the claims
have the honest answer at (A) and half at (B), so a model that always says A scores 50%.

Example:
    >>> train, dev, test = split_claims_by_twin(load_honesty_claims(), 0.2, 0.2, seed=0)
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import replace

from .claims import Claim

__all__ = ["claim_groups", "split_claims_by_twin", "counterbalance_claims"]

_WORD = re.compile(r"[a-z0-9]+")


def _words(statement: str) -> set[str]:
    return set(_WORD.findall(statement.lower()))


def _subject(statement: str) -> str:
    words = _WORD.findall(statement.lower())
    while len(words) > 1 and words[0] in ("the", "a", "an"):
        words = words[1:]
    return words[0] if words else ""


def claim_groups(claims: Sequence[Claim], max_changed: int = 2) -> list[list[int]]:
    """Indices of the claims grouped into twins: two claims are twins when they have the same
    subject (first word after an article), or share at least two words and their word sets
    differ by at most ``max_changed`` words in all (one word swapped = 2) or one holds all the
    other's words; groups are the connected sets (a grouping errs toward larger groups).

    Example:
        >>> claim_groups([Claim("Paris is in France.", True), Claim("Rome is in France.", False)])
        [[0, 1]]
    """
    words = [_words(c.statement) for c in claims]
    subjects = [_subject(c.statement) for c in claims]
    parent = list(range(len(claims)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i in range(len(claims)):
        for j in range(i + 1, len(claims)):
            a, b = words[i], words[j]
            close = len(a ^ b) <= max_changed or a <= b or b <= a
            if (close and len(a & b) >= 2) or subjects[i] == subjects[j]:
                parent[root(j)] = root(i)
    groups: dict[int, list[int]] = {}
    for i in range(len(claims)):
        groups.setdefault(root(i), []).append(i)
    return list(groups.values())


def counterbalance_claims(claims: Sequence[Claim], seed: int = 0) -> list[Claim]:
    """The claims with their choice order set so the honest letter alternates A, B, A, ... in a
    seeded order: A is right in exactly half (one more when the count is odd).

    Example:
        >>> [c.right_letter for c in counterbalance_claims(claims)].count("A")
    """
    order = list(range(len(claims)))
    random.Random(seed).shuffle(order)
    out = list(claims)
    for rank, i in enumerate(order):
        want_a = rank % 2 == 0
        out[i] = replace(claims[i], true_first=want_a == claims[i].label)
    return out


def split_claims_by_twin(
    claims: Sequence[Claim], dev_fraction: float, test_fraction: float, seed: int = 0
) -> tuple[list[Claim], list[Claim], list[Claim]]:
    """Train, dev and test claims, whole twin groups to one split (test takes about
    ``test_fraction`` of the claims, dev ``dev_fraction`` of the rest), each split
    counterbalanced.

    Example:
        >>> train, dev, test = split_claims_by_twin(claims, 0.2, 0.2)
    """
    groups = claim_groups(claims)
    random.Random(seed).shuffle(groups)
    n_test = round(len(claims) * test_fraction)
    n_dev = round((len(claims) - n_test) * dev_fraction)
    parts: dict[str, list[Claim]] = {"test": [], "dev": [], "train": []}
    for group in groups:
        name = "test" if len(parts["test"]) < n_test else "dev"
        if name == "dev" and len(parts["dev"]) >= n_dev:
            name = "train"
        parts[name].extend(claims[i] for i in sorted(group))
    return tuple(counterbalance_claims(parts[n], seed) for n in ("train", "dev", "test"))
