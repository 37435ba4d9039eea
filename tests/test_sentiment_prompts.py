"""Topic-split sentiment prompts, hard negatives and prompting-baseline candidates."""

from __future__ import annotations

import pytest

from reptune.behaviours import load_eval_prompts, load_sentiment_rows, sentiment_score
from reptune.behaviours.sentiment_prompts import (
    PROMPT_SPLITS,
    load_instruction_candidates,
    load_topic_prompts,
    relevance_candidates,
)

# What the module docstring states: (prompts, topics) per split.
DOCUMENTED = {"train": (90, 30), "dev": (45, 15), "test": (126, 42)}


@pytest.fixture(scope="module")
def splits():
    return {split: load_topic_prompts(split) for split in PROMPT_SPLITS}


def test_counts_are_as_documented(splits):
    for split, (n_prompts, n_topics) in DOCUMENTED.items():
        assert len(splits[split]) == n_prompts
        assert len({p.topic for p in splits[split]}) == n_topics
        assert all(p.split == split for p in splits[split])
    assert len(splits["test"]) >= 120 and len(splits["dev"]) >= 40 and len(splits["train"]) >= 80


def test_splits_are_disjoint_by_topic(splits):
    topics = {split: {p.topic for p in rows} for split, rows in splits.items()}
    assert not topics["train"] & topics["dev"]
    assert not topics["train"] & topics["test"]
    assert not topics["dev"] & topics["test"]


def test_texts_are_unique_and_new(splits):
    rows = [p for rows in splits.values() for p in rows]
    texts = [p.prompt for p in rows] + [p.hard_negative for p in rows if p.hard_negative]
    assert len(set(texts)) == len(texts)
    assert len({p.id for p in rows}) == len(rows)
    earlier = {r["prompt"] for r in load_sentiment_rows("all")}
    earlier |= set(load_eval_prompts(chat=False))
    assert not set(texts) & earlier


def test_every_dev_and_test_prompt_has_a_hard_negative(splits):
    prompts = {p.prompt for rows in splits.values() for p in rows}
    for split in ("dev", "test"):
        for p in splits[split]:
            assert p.hard_negative and p.hard_negative != p.prompt
            assert p.hard_negative not in prompts
    assert all(p.hard_negative is None for p in splits["train"])


def test_prompts_ask_for_no_tone(splits):
    # Neutral: no word of the sentiment lexicon in any prompt or hard negative.
    texts = [t for rows in splits.values() for p in rows for t in (p.prompt, p.hard_negative) if t]
    assert [t for t, s in zip(texts, sentiment_score(texts)) if s != 0] == []


def test_limit_spreads_over_topics_and_refuses_too_many():
    first = load_topic_prompts("test", limit=42)
    assert len({p.topic for p in first}) == 42
    assert first == load_topic_prompts("test")[:42]
    with pytest.raises(ValueError, match="dev split has 45 prompts, 46 were requested"):
        load_topic_prompts("dev", limit=46)
    with pytest.raises(ValueError, match="positive"):
        load_topic_prompts("dev", limit=0)
    with pytest.raises(ValueError, match="unknown prompt split"):
        load_topic_prompts("validation")


def test_relevance_candidates_hold_prompts_then_hard_negatives(splits):
    dev = splits["dev"]
    candidates = relevance_candidates(dev)
    assert candidates[: len(dev)] == [p.prompt for p in dev]
    assert candidates[len(dev) :] == [p.hard_negative for p in dev]


def test_instruction_candidates(splits):
    candidates = load_instruction_candidates()
    assert len(candidates) >= 4
    few_shot = [c for c in candidates.values() if len(c.examples) >= 2]
    assert few_shot, "at least one few-shot candidate"
    # Few-shot examples come from training prompts only, never dev or test.
    train = {p.prompt for p in splits["train"]}
    for candidate in few_shot:
        assert {user for user, _ in candidate.examples} <= train
    messages = few_shot[0].messages("Describe a harbour at low tide.")
    roles = [m["role"] for m in messages]
    assert roles == ["system"] + ["user", "assistant"] * len(few_shot[0].examples) + ["user"]
    assert messages[-1]["content"] == "Describe a harbour at low tide."
    in_turn = candidates["in-turn"]
    assert in_turn.messages("Describe fog.") == [
        {"role": "user", "content": "Describe fog. Answer in a happy, positive way."}
    ]


class _TemplateTokenizer:
    chat_template = "any"

    def apply_chat_template(self, messages, tokenize, add_generation_prompt):
        assert not tokenize and add_generation_prompt
        return "|".join(f"{m['role']}:{m['content']}" for m in messages) + "|assistant:"


def test_instruction_format_with_and_without_a_template():
    warm = load_instruction_candidates()["warm-tone"]
    assert warm.format(_TemplateTokenizer(), "Describe fog.") == (
        f"system:{warm.system}|user:Describe fog.|assistant:"
    )
    assert warm.format(None, "Describe fog.") == f"{warm.system}\n\nDescribe fog.\n"


def test_raw_rows_have_exactly_the_documented_fields():
    from reptune.io import data_path, read_jsonl

    for row in read_jsonl(data_path("sentiment_prompts_v2.jsonl")):
        expected = {"id", "split", "topic", "prompt"}
        if row["split"] != "train":
            expected.add("hard_negative")
        assert set(row) == expected, row
        assert all(isinstance(v, int) or v.strip() for v in row.values())
