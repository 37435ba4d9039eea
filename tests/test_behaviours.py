import json

import pytest
from conftest import make_model, make_tokenizer

from reptune.behaviours import (
    fit_judge_threshold,
    load_eval_prompts,
    load_heldout_text,
    load_scorer_check,
    load_sentiment_pairs,
    load_sentiment_rows,
    model_sentiment_logit,
    model_sentiment_score,
    sentiment_score,
)
from reptune.behaviours.sentiment import NEGATIVE_WORDS, POSITIVE_WORDS
from reptune.io import data_path
from reptune.pairs import ContrastivePair, validate_pairs

JSONL_FILES = {
    "sentiment_pairs.jsonl": {"id", "split", "prompt", "positive", "negative"},
    "sentiment_eval_prompts.jsonl": {"id", "prompt"},
    "sentiment_scorer_check.jsonl": {"text", "label"},
    "honesty_claims.jsonl": {"statement", "label"},
}


@pytest.mark.parametrize("name", sorted(JSONL_FILES))
def test_data_files_are_valid_jsonl_with_the_expected_fields(name):
    lines = data_path(name).read_text(encoding="utf-8").splitlines()
    assert lines and all(line.strip() for line in lines)
    for line in lines:
        row = json.loads(line)
        assert set(row) == JSONL_FILES[name]
        assert all(v != "" for v in row.values())


def test_sentiment_rows_are_matched_and_split_by_prompt():
    rows = load_sentiment_rows()
    assert len(rows) >= 120
    assert len({r["id"] for r in rows}) == len(rows)
    for r in rows:
        assert r["positive"] != r["negative"]
        pos, neg = r["positive"].split(), r["negative"].split()
        # Matched wording: most words are shared, only the sentiment words differ.
        shared = len(set(pos) & set(neg))
        assert shared >= 0.4 * max(len(set(pos)), len(set(neg))), r
    train, test = load_sentiment_rows("train"), load_sentiment_rows("test")
    assert len(train) + len(test) == len(rows)
    assert 0.15 <= len(test) / len(rows) <= 0.25
    assert not {r["prompt"] for r in train} & {r["prompt"] for r in test}
    with pytest.raises(ValueError, match="unknown split"):
        load_sentiment_rows("dev")


def test_sentiment_pairs_are_chat_texts_ending_in_the_reply():
    tok = make_tokenizer()
    pairs = load_sentiment_pairs(tok, split="test")
    rows = load_sentiment_rows("test")
    validate_pairs(pairs)
    assert all(isinstance(p, ContrastivePair) for p in pairs)
    for pair, row in zip(pairs, rows):
        assert pair.positive.startswith("<|user|>" + row["prompt"])
        assert pair.positive.endswith("<|assistant|>" + row["positive"])
        assert pair.negative.endswith("<|assistant|>" + row["negative"])
        assert pair.meta == {"id": row["id"], "split": "test", "prompt": row["prompt"]}
    plain = load_sentiment_pairs(None, split="train")[0]
    first = load_sentiment_rows("train")[0]
    assert plain.positive == first["prompt"] + "\n" + first["positive"]


def test_eval_prompts_are_new_and_chat_formatted():
    raw = load_eval_prompts(chat=False)
    assert len(raw) >= 50 and len(set(raw)) == len(raw)
    assert not set(raw) & {r["prompt"] for r in load_sentiment_rows()}
    tok = make_tokenizer()
    chat = load_eval_prompts(tok, limit=4)
    assert len(chat) == 4 and chat[0] == f"<|user|>{raw[0]}<|end|><|assistant|>"


def test_scorer_check_and_heldout_text():
    check = load_scorer_check()
    assert len(check) >= 40
    assert sorted({label for _, label in check}) == [-1, 1]
    assert sum(label for _, label in check) == 0
    text = load_heldout_text()
    assert 3000 <= len(text.encode()) <= 6000
    replies = {r["positive"] for r in load_sentiment_rows()}
    assert not any(reply in text for reply in replies)


def test_lexicon_word_lists_do_not_overlap():
    assert not POSITIVE_WORDS & NEGATIVE_WORDS


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("What a lovely, sunny afternoon.", 1.0),
        ("The service was awful and the food was bland.", -1.0),
        ("The table has four legs.", 0.0),
        ("This is not good.", -1.0),
        ("The film wasn't bad at all.", 1.0),
        ("I don't hate it.", 1.0),
        ("I never enjoyed a single minute.", -1.0),
        ("Not a bad day, but the train was late and dirty.", 0.0),
        ("It was great, but the ending was terrible.", 0.0),
        ("The staff were kind, helpful and patient; the room was dirty.", 0.5),
        ("Not great. Still, the view was beautiful.", 0.0),
        ("WONDERFUL!!! I LOVED IT.", 1.0),
        ("It isn\u2019t perfect.", -1.0),
    ],
)
def test_lexicon_scores_with_negation(text, expected):
    assert sentiment_score(text) == [pytest.approx(expected)]


def test_lexicon_scores_are_bounded_and_batched():
    texts = [t for t, _ in load_scorer_check()]
    scores = sentiment_score(texts)
    assert len(scores) == len(texts)
    assert all(-1.0 <= s <= 1.0 for s in scores)
    assert sentiment_score([]) == []


def test_model_judge_runs_on_a_tiny_model():
    model, tok = make_model("llama"), make_tokenizer()
    texts = ["A lovely day.", "An awful day.", "A table."]
    logits = model_sentiment_logit(model, tok, texts)
    scores = model_sentiment_score(model, tok, texts, batch_size=2)
    assert len(logits) == len(scores) == 3
    assert all(-1.0 <= s <= 1.0 for s in scores)
    # The score is the logit centred on the threshold and squashed into [-1, 1].
    centred = model_sentiment_score(model, tok, texts, threshold=logits[0])
    assert centred[0] == pytest.approx(0.0, abs=1e-6)


def test_judge_threshold_fit_separates_the_training_replies(monkeypatch):
    import reptune.behaviours.sentiment as sentiment

    rows = load_sentiment_rows("train")
    fake = [2.0 + i % 3 for i in range(len(rows))] + [-1.0 - i % 2 for i in range(len(rows))]
    monkeypatch.setattr(sentiment, "model_sentiment_logit", lambda *a, **k: fake)
    cut = fit_judge_threshold(None, None)
    assert -1.0 < cut < 2.0
    assert all((x > cut) == (i < len(rows)) for i, x in enumerate(fake))
