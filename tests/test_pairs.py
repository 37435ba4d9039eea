import json
from pathlib import Path

import pytest
from conftest import make_tokenizer

from reptune.pairs import (
    ContrastivePair,
    fingerprint,
    format_chat,
    load_caa_pairs,
    load_jsonl_pairs,
    split_pairs,
    validate_pairs,
)

FIXTURES = Path(__file__).parent / "fixtures"


def test_caa_pairs_use_the_chat_template_and_end_on_the_letter():
    tok = make_tokenizer()
    pairs = load_caa_pairs(FIXTURES / "caa_small.json", tok)
    assert len(pairs) == 2
    assert pairs[0].positive.startswith("<|user|>We think")
    assert pairs[0].positive.endswith("<|assistant|>(A") and pairs[0].negative.endswith("(B")
    assert pairs[1].positive.endswith("(B") and pairs[1].negative.endswith("(A")


def test_caa_rows_missing_fields_are_named(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"question": "q", "answer_matching_behavior": "(A)"}]))
    with pytest.raises(ValueError, match="answer_not_matching_behavior"):
        load_caa_pairs(bad)


def test_jsonl_pairs_and_errors(tmp_path):
    good = tmp_path / "p.jsonl"
    good.write_text('{"positive": "I love it", "negative": "I hate it", "topic": "x"}\n\n')
    pairs = load_jsonl_pairs(good)
    assert pairs[0].meta == {"topic": "x"}
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"positive": "only one side"}\n')
    with pytest.raises(ValueError, match="line 1"):
        load_jsonl_pairs(bad)


def test_validation_and_helpers():
    with pytest.raises(ValueError, match="no contrastive pairs"):
        validate_pairs([])
    with pytest.raises(ValueError, match="identical"):
        validate_pairs([ContrastivePair("a", "a")])
    a = [ContrastivePair("a", "b")]
    assert fingerprint(a) != fingerprint([ContrastivePair("a", "c")])
    train, test = split_pairs(list(range(10)), 0.2, seed=1)
    assert len(test) == 2 and sorted(train + test) == list(range(10))
    assert split_pairs(list(range(10)), 0.2, seed=1) == (train, test)
    assert format_chat(None or make_tokenizer(chat_template=False), "hi", "(A", "sys") == (
        "sys\n\nhi\n(A"
    )
