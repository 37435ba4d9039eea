"""Loaders of A/B items: fixture files of every schema, balanced shuffling, real data (optional)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from conftest import make_tokenizer

from reptune.behaviours.honesty import CLAIM_QUESTION, HONEST_PERSONA, claim_prompt, load_claims
from reptune.evaluation.ab.datasets import (
    ABItem,
    balanced_positions,
    detect_schema,
    format_choices,
    item_prompt,
    load_items,
    read_records,
    records_to_items,
    sample_items,
)

FIXTURES = Path(__file__).parent / "fixtures" / "eval"


def test_caa_behaviour_items():
    items = load_items(FIXTURES / "caa_behaviour.json")
    assert [it.target for it in items] == ["A", "B", "A"]
    assert all(it.letters == ("A", "B") for it in items)
    # "(A) Yes / (B) No" choices make the words answers for the parser.
    assert items[0].aliases == {"yes": "A", "no": "B"}
    assert items[1].aliases == {}
    assert items[0].other == ["B"]


def test_caa_qa_items():
    items = load_items(FIXTURES / "caa_qa.json")
    assert [it.target for it in items] == ["B", "A"]
    assert items[0].meta["category"] == "Nature"
    assert items[0].question.startswith("What colour is snow?")


@pytest.mark.parametrize("name", ["claims.csv", "claims.jsonl"])
def test_claim_items_use_the_claim_question(name):
    items = load_items(FIXTURES / name)
    claims = load_claims(FIXTURES / name)
    assert [it.target == "A" for it in items] == [c.label for c in claims]
    tok = make_tokenizer()
    for it, claim in zip(items, claims):
        assert it.question == CLAIM_QUESTION.format(claim=claim.statement)
        # The item prompt is exactly the published claim prompt of reptune.behaviours.honesty.
        assert item_prompt(tok, it, HONEST_PERSONA, "(") == claim_prompt(
            tok, claim, HONEST_PERSONA, "("
        )
        assert it.aliases["true"] == "A" and it.aliases["no"] == "B"


@pytest.mark.parametrize("name", ["truthfulqa_v1.csv", "truthfulqa_2025.csv"])
def test_truthfulqa_csv(name):
    items = load_items(FIXTURES / name, seed=3)
    rows = read_records(FIXTURES / name)
    assert "Type" in rows[0]  # the byte-order mark is not part of the first column name
    for it, row in zip(items, rows):
        options = dict(
            line[1:].split(") ", 1) for line in it.question.splitlines() if line.startswith("(")
        )
        assert options[it.target] == row["Best Answer"]
        assert row["Question"] in it.question
    if name == "truthfulqa_2025.csv":  # the named best incorrect answer is the distractor
        assert "You grow a plant" in items[0].question
    # Deterministic for a seed, and A/B balanced.
    again = load_items(FIXTURES / name, seed=3)
    assert [it.question for it in again] == [it.question for it in items]
    counts = Counter(it.target for it in items)
    assert abs(counts["A"] - counts["B"]) <= 1


def test_truthfulqa_mc_json_balanced_over_four_choices():
    items = load_items(FIXTURES / "mc_task.json", n_choices=4, seed=0)
    assert all(it.letters == ("A", "B", "C", "D") for it in items)
    assert sorted(it.target for it in items) == ["A", "B", "C", "D"]
    for it in items:
        line = next(x for x in it.question.splitlines() if x.startswith(f"({it.target})"))
        assert line.split(") ", 1)[1] in ("Nothing happens.", "No, it is round.", "No.")
    two = load_items(FIXTURES / "mc_task.json", seed=0)
    assert Counter(it.target for it in two) == {"A": 2, "B": 2}


def test_truthfulqa_mc_hf_layout():
    row = {"question": "Q?", "mc1_targets": {"choices": ["right", "wrong"], "labels": [1, 0]}}
    (item,) = records_to_items([row], seed=1)
    assert "right" in item.question and "wrong" in item.question


def test_truthfulqa_questions_with_too_few_wrong_answers_are_left_out(caplog):
    rows = [
        {"question": "Q1?", "mc1_targets": {"right": 1, "w1": 0, "w2": 0}},
        {"question": "Q2?", "mc1_targets": {"right": 1, "w1": 0}},
        {"question": "Q3?", "mc1_targets": {"right": 1, "w1": 0, "w2": 0, "w3": 0}},
    ]
    with caplog.at_level("WARNING"):
        items = records_to_items(rows, n_choices=3, source="mc")
    assert [it.meta["index"] for it in items] == [0, 2]
    assert "1 of 3 questions" in caplog.text
    with pytest.raises(ValueError, match="no question has 3 wrong answers"):
        records_to_items(rows[1:2], n_choices=4)


def test_mmlu_style_items():
    items = load_items(FIXTURES / "mmlu.jsonl")
    assert [it.target for it in items] == ["B", "A", "A", "B", "C", "D"]
    assert items[0].letters == ("A", "B", "C", "D")
    assert items[0].question == format_choices("2 + 2 = ?", ["3", "4", "5", "6"])
    assert items[0].meta["subject"] == "math"


def test_detect_schema_and_errors(tmp_path):
    assert detect_schema({"statement": "x", "label": 1}) == "claims"
    assert detect_schema({"question": "q", "choices": [], "answer": 0}) == "mc"
    with pytest.raises(ValueError, match="cannot tell the format"):
        detect_schema({"foo": 1})
    with pytest.raises(ValueError, match="label must be"):
        records_to_items([{"statement": "x", "label": "maybe"}])
    with pytest.raises(ValueError, match="answer letter"):
        records_to_items([{"prompt": "p", "correct": "yes", "incorrect": "(B)"}])
    with pytest.raises(ValueError, match="lacks the field"):
        records_to_items([{"statement": "x", "label": 1}, {"statement": "y"}])
    with pytest.raises(ValueError, match="no rows"):
        records_to_items([])
    with pytest.raises(FileNotFoundError):
        load_items(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_items(bad)
    (tmp_path / "x.parquet").write_text("")
    with pytest.raises(ValueError, match="unsupported file type"):
        read_records(tmp_path / "x.parquet")
    with pytest.raises(ValueError, match="not one of the letters"):
        ABItem("q", "C")


def test_balanced_positions_and_sampling():
    pos = balanced_positions(101, 4, seed=2)
    assert sorted(Counter(pos).values()) == [25, 25, 25, 26]
    assert pos == balanced_positions(101, 4, seed=2) != balanced_positions(101, 4, seed=3)
    items = [ABItem(f"q{i}", "A" if i < 80 else "B") for i in range(100)]
    sample = sample_items(items, 30, seed=0)
    assert Counter(it.target for it in sample) == {"A": 15, "B": 15}
    assert [int(it.question[1:]) for it in sample] == sorted(int(it.question[1:]) for it in sample)
    assert len(sample_items(items, 100)) == 100
    with pytest.raises(ValueError, match="sample of 500 items but only 100 exist"):
        sample_items(items, 500)  # never fewer than asked, silently
    assert len(load_items(FIXTURES / "claims.csv", at_most=500)) == 6  # a cap, by name
    skewed = sample_items(items, 60, seed=0)  # only 20 "B" exist
    assert Counter(it.target for it in skewed) == {"A": 40, "B": 20}
    limited = load_items(FIXTURES / "claims.csv", limit=2)
    assert Counter(it.target for it in limited) == {"A": 1, "B": 1}


def test_json_object_with_data_list(tmp_path):
    path = tmp_path / "wrapped.json"
    path.write_text(json.dumps({"data": [{"statement": "x", "label": 1}]}))
    assert load_items(path)[0].target == "A"


# -- the real data sets (skipped when ../shared/data is absent) -----------------------------


@pytest.mark.parametrize(
    "name,count",
    [
        ("caa/test_truthfulqa_ab.json", 817),
        ("caa/test_mmlu_ab.json", 570),
        ("caa/test_sycophancy_ab.json", 50),
        ("caa/test_refusal_ab.json", 50),
        ("caa/test_hallucination_ab.json", 50),
        ("repe/facts_true_false.csv", 612),
        ("truthfulqa/TruthfulQA_v1_2021.csv", 817),
        ("truthfulqa/TruthfulQA.csv", 790),
        ("truthfulqa/mc_task_v1_2021.json", 817),
        ("truthfulqa/mc_task.json", 790),
    ],
)
def test_real_files_load(shared_data, name, count):
    items = load_items(shared_data / name)
    assert len(items) == count
    counts = Counter(it.target for it in items)
    assert set(counts) == {"A", "B"}
    if name.startswith("truthfulqa/"):  # shuffled by us: balanced exactly
        assert abs(counts["A"] - counts["B"]) <= 1


def test_real_truthfulqa_four_choices(shared_data):
    items = load_items(shared_data / "truthfulqa/mc_task_v1_2021.json", n_choices=4)
    assert len(items) == 817 - 127  # 127 questions have fewer than three wrong answers
    assert set(Counter(it.target for it in items).values()) <= {172, 173}


def test_real_claims_sample_is_balanced(shared_data):
    items = load_items(shared_data / "repe/facts_true_false.csv", limit=200, seed=0)
    assert Counter(it.target for it in items) == {"A": 100, "B": 100}
