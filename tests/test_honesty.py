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


def test_always_a_scores_half_on_every_counterbalanced_split():
    from reptune.behaviours.honesty.claims_splits import split_claims_by_twin

    claims = load_honesty_claims()
    for seed in range(3):
        for part in split_claims_by_twin(claims, 0.2, 0.2, seed):
            items = claim_items(part)
            always_a = sum(item.target == "A" for item in items)
            assert abs(always_a - len(items) / 2) <= 0.5, (seed, always_a, len(items))
            for claim, item in zip(part, items):  # the letter is the honest answer's
                honest = claim.answer(True)
                assert honest.startswith(f"({item.target})")
                assert f"({item.target}) {'True' if claim.label else 'False'}" in item.question


def test_twin_claims_never_cross_a_split():
    from reptune.behaviours.honesty.claims_splits import claim_groups, split_claims_by_twin

    claims = load_honesty_claims()
    statements = [c.statement for c in claims]
    assert any(
        {statements.index("Paris is the capital of France."), statements.index(s)} <= set(g)
        for g in claim_groups(claims)
        for s in ["Berlin is the capital of France."]
    )
    for seed in range(3):
        train, dev, test = split_claims_by_twin(claims, 0.2, 0.2, seed)
        assert len(train) + len(dev) + len(test) == len(claims)
        where = {
            c.statement: name for name, p in (("tr", train), ("dv", dev), ("te", test)) for c in p
        }
        for group in claim_groups(claims):
            assert len({where[statements[i]] for i in group}) == 1
