"""Sampling A/B items: a seeded, letter-balanced sample of a set, and the load options of a
limit setting (an exact count, or a cap).

Example:
    >>> subset = sample_items(items, 200, seed=0)
"""

from __future__ import annotations

import random
from collections.abc import Sequence

__all__ = ["limit_options", "sample_items"]


def sample_items(items: Sequence, n: int | None, seed: int = 0) -> list:
    """A seeded sample of ``n`` A/B items (anything with a ``target``), as balanced over target
    letters as the data allow.

    The sample keeps the items' original order.

    Example:
        >>> subset = sample_items(items, 200, seed=0)
    """
    if n is None or n == len(items):
        return list(items)
    if n <= 0:
        raise ValueError(f"sample size must be positive, got {n}")
    if n > len(items):
        raise ValueError(f"asked for a sample of {n} items but only {len(items)} exist")
    rng = random.Random(seed)
    groups: dict[str, list[int]] = {}
    for i, item in enumerate(items):
        groups.setdefault(item.target, []).append(i)
    for idx in groups.values():
        rng.shuffle(idx)
    chosen: list[int] = []
    # Round-robin over letters so every letter contributes equally until one runs out.
    queues = [groups[k] for k in sorted(groups)]
    while len(chosen) < n:
        for queue in queues:
            if queue and len(chosen) < n:
                chosen.append(queue.pop())
    return [items[i] for i in sorted(chosen)]


def limit_options(limit: int | None, default: int) -> dict:
    """:func:`load_items` options for a limit setting: a given number is exact (0 = all), an
    absent one caps at ``default``.

    Example:
        >>> limit_options(None, 50), limit_options(20, 50), limit_options(0, 50)
        ({'at_most': 50}, {'limit': 20}, {})
    """
    if limit is None:
        return {"at_most": default}
    return {"limit": limit} if limit else {}
