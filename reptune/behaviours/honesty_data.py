"""Easy true/false claims shipped with the package, for honesty runs without external data."""

from __future__ import annotations

from ..io import data_path, read_jsonl
from ..pairs import Claim

__all__ = ["load_honesty_claims"]


def load_honesty_claims() -> list[Claim]:
    """100 short everyday claims (50 true, 50 false; each false claim alters a true one).

    Example:
        >>> claims = load_honesty_claims()
        >>> pairs = claims_to_pairs(claims, tok)
    """
    claims = []
    for i, row in enumerate(read_jsonl(data_path("honesty_claims.jsonl"))):
        if row.get("label") not in (0, 1) or not isinstance(row.get("statement"), str):
            raise ValueError(f"honesty_claims.jsonl row {i}: need a statement and a 0/1 label")
        claims.append(Claim(row["statement"].strip(), bool(row["label"])))
    return claims
