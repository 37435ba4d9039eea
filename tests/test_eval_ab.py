"""A/B scoring on a tiny model: letter probabilities, generation parsing, per-row coefficients."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import make_model, make_tokenizer

from reptune.behaviours.honesty import DISHONEST_PERSONA, HONEST_PERSONA, evaluate_honesty
from reptune.evaluation.ab.datasets import item_prompt, load_items
from reptune.evaluation.ab.letters import letter_probabilities
from reptune.evaluation.ab.scoring import (
    ItemResult,
    evaluate_ab,
    generate_texts,
    score_items,
    score_letters,
    summarize,
    with_coefficient,
)
from reptune.steering import SteeredModel
from reptune.vectors import SteeringVectors

FIXTURES = Path(__file__).parent / "fixtures" / "eval"


@pytest.fixture(scope="module")
def setup():
    model = make_model("llama")
    model.config.max_position_embeddings = 512  # persona prompts are longer than 128 tokens
    tok = make_tokenizer()
    torch.manual_seed(0)
    vecs = SteeringVectors({1: torch.randn(32) * 2, 2: torch.randn(32) * 2})
    items = load_items(FIXTURES / "claims.csv")
    return model, tok, vecs, items


def test_letter_scores_match_letter_probabilities(setup):
    model, tok, _, items = setup
    prompts = [item_prompt(tok, it, HONEST_PERSONA, "(") for it in items]
    probs = score_letters(model, tok, prompts, [it.letters for it in items], batch_size=4)
    ref = letter_probabilities(model, tok, prompts, ("A", "B"), renormalize=False)
    got = torch.tensor([[p["A"], p["B"]] for p in probs])
    torch.testing.assert_close(got, ref, atol=1e-6, rtol=1e-5)


def test_evaluate_ab_letter(setup):
    model, tok, _, items = setup
    res = evaluate_ab(model, tok, items, "letter", system=HONEST_PERSONA, condition="honest")
    assert res.n == len(items) and res.unparsed.k == 0
    assert res.target.k + res.other.k == len(items)
    for record in res.records:
        assert record.answer == max(record.probs, key=record.probs.get)
        assert 0.0 <= record.target_prob <= 1.0
    row = res.row()
    assert row["condition"] == "honest" and row["target_low"] <= row["target_rate"]
    assert row["behaviour"] == pytest.approx((res.target.k - res.other.k) / res.n)


def test_evaluate_honesty_generate(setup):
    model, tok, _, items = setup
    results = evaluate_honesty(model, tok, items[:3], "generate", max_new_tokens=3)
    assert set(results) == {"honest", "dishonest"}
    for res in results.values():
        assert res.n == 3 and all(r.text is not None for r in res.records)
        assert res.target.k + res.other.k + res.unparsed.k == 3
    with pytest.raises(ValueError, match="unknown conditions"):
        evaluate_honesty(model, tok, items, conditions=["sneaky"])
    with pytest.raises(ValueError, match="unknown scorer"):
        evaluate_ab(model, tok, items, "vibes")


def test_per_row_coefficients_equal_scalar_runs(setup):
    model, tok, vecs, items = setup
    steered = SteeredModel(model, vecs, layers=[1], coefficient_unit="raw")
    coefs = [-3.0, 0.0, 5.0]
    rows = [it for it in items[:2] for _ in coefs]
    per_row = score_items(
        steered, tok, rows, "letter", coefficients=torch.tensor(coefs * 2), batch_size=4
    )
    for i, it in enumerate(items[:2]):
        for j, c in enumerate(coefs):
            (single,) = score_items(
                SteeredModel(model, vecs, layers=[1], coefficient=c, coefficient_unit="raw"),
                tok,
                [it],
                "letter",
            )
            got = per_row[i * len(coefs) + j].probs
            assert got == pytest.approx(single.probs, rel=1e-4, abs=1e-7)
    # Steering changes the answer distribution.
    assert per_row[0].probs != pytest.approx(per_row[2].probs, rel=1e-3)


def test_generation_with_per_row_coefficients(setup):
    model, tok, vecs, items = setup
    steered = SteeredModel(model, vecs, layers=[2], coefficient_unit="raw")
    prompts = [item_prompt(tok, items[0], None)] * 2
    texts = generate_texts(steered, tok, prompts, coefficients=[0.0, 40.0], max_new_tokens=4)
    plain = generate_texts(model, tok, prompts[:1], max_new_tokens=4)
    assert texts[0] == plain[0]
    assert len(texts) == 2


def test_with_coefficient_needs_a_steered_model(setup):
    model, *_ = setup
    assert with_coefficient(model, None) is model
    with pytest.raises(TypeError, match="SteeredModel"):
        with_coefficient(model, torch.tensor([1.0]))


def test_summarize_scores():
    records = [
        ItemResult(0, "A", "A"),
        ItemResult(1, "A", "B"),
        ItemResult(2, "B", None),
        ItemResult(3, "B", "B", probs={"A": 0.1, "B": 0.3}),
    ]
    res = summarize(records, "generate", "dishonest")
    assert (res.target.k, res.other.k, res.unparsed.k) == (2, 1, 1)
    assert res.behaviour == pytest.approx(0.25)
    assert res.mean_target_prob == pytest.approx(0.75)
    assert [r.score for r in records] == [1, -1, 0, 1]


def test_persona_changes_the_prompt(setup):
    _, tok, _, items = setup
    honest = item_prompt(tok, items[0], HONEST_PERSONA)
    dishonest = item_prompt(tok, items[0], DISHONEST_PERSONA)
    assert HONEST_PERSONA in honest and DISHONEST_PERSONA in dishonest
