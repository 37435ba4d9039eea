"""The honesty behaviour: claims, personas, pairs, training rows and A/B items."""

from pathlib import Path

import pytest
from conftest import make_tokenizer

from reptune.behaviours.honesty import (
    CLAIM_QUESTION,
    DISHONEST_PERSONA,
    HONEST_PERSONA,
    claim_items,
    claim_rows,
    claims_from_json,
    claims_to_json,
    claims_to_pairs,
    load_claims,
    load_honesty_claims,
)

FIXTURES = Path(__file__).parent / "fixtures"


def test_claims_pairing_modes():
    tok = make_tokenizer()
    claims = load_claims(FIXTURES / "claims_small.csv")
    assert [c.label for c in claims] == [True, False, True]
    published = claims_to_pairs(claims, tok, mode="persona_answer")
    assert HONEST_PERSONA in published[0].positive and DISHONEST_PERSONA in published[0].negative
    assert published[0].positive.endswith("(A") and published[0].negative.endswith("(B")
    assert published[1].positive.endswith("(B") and published[1].negative.endswith("(A")
    answer_only = claims_to_pairs(claims, tok, mode="answer")
    assert DISHONEST_PERSONA not in answer_only[1].negative
    persona = claims_to_pairs(claims, tok, mode="persona")
    assert persona[0].positive.endswith("<|assistant|>")
    with pytest.raises(ValueError, match="unknown pairing mode"):
        claims_to_pairs(claims, tok, mode="both")


def test_shared_claims_file_loads(shared_data):
    claims = load_claims(shared_data / "repe/facts_true_false.csv")
    assert len(claims) == 612 and sum(c.label for c in claims) == 306


def test_honesty_claims_are_balanced_and_unique():
    claims = load_honesty_claims()
    assert len(claims) == 100
    assert sum(c.label for c in claims) == 50
    assert len({c.statement for c in claims}) == 100


def test_claim_rows_items_and_json_round_trip():
    claims = load_claims(FIXTURES / "claims_small.csv")
    honest, lies = claim_rows(claims, honest=True), claim_rows(claims, honest=False)
    assert len(honest) == 2 * len(claims)
    assert {r["system"] for r in honest} == {HONEST_PERSONA, DISHONEST_PERSONA}
    assert honest[0]["prompt"] == CLAIM_QUESTION.format(claim=claims[0].statement)
    assert honest[0]["completion"] == "(A) True" and lies[0]["completion"] == "(B) False"
    items = claim_items(claims)
    assert [it.target for it in items] == ["A", "B", "A"]
    assert claims_from_json(claims_to_json(claims)) == claims
