"""VADER against the shipped hand-labelled sentences."""

import json

import pytest

from reptune.evaluation.scorers import VaderSentiment, agreement
from reptune.io import data_path

pytest.importorskip("vaderSentiment")


def _labelled():
    with open(data_path("sentiment_labelled.jsonl")) as f:
        return [json.loads(line) for line in f]


def test_labelled_set_is_balanced_and_distinct():
    rows = _labelled()
    assert len(rows) >= 80
    assert {r["label"] for r in rows} == {-1, 0, 1}
    assert len({r["text"] for r in rows}) == len(rows)
    counts = [sum(r["label"] == k for r in rows) for k in (-1, 0, 1)]
    assert min(counts) >= 25


def test_vader_name_range_and_negation():
    scorer = VaderSentiment()
    assert scorer.name == "VADER compound (vaderSentiment 3.3.2)"
    good, not_good, neutral = scorer.score(
        ["q"] * 3, ["The food was good.", "The food was not good.", "The food is on the table."]
    )
    assert good > 0 > not_good
    assert neutral == 0.0
    assert scorer.to_unit([-1.0, 0.0, 1.0]) == [0.0, 0.5, 1.0]


def test_vader_agrees_with_the_hand_labels():
    rows = _labelled()
    scores = VaderSentiment().score([""] * len(rows), [r["text"] for r in rows])
    labels = [r["label"] for r in rows]
    ordinal = agreement(scores, labels)
    assert ordinal.metric == "spearman" and ordinal.passes and ordinal.value > 0.6
    polar = [(s, y) for s, y in zip(scores, labels) if y != 0]
    signs = agreement([s for s, _ in polar], [y for _, y in polar], metric="accuracy", threshold=0)
    # The set holds hard cases (implicit sentiment, negation without "not") VADER misses.
    assert signs.value >= 0.75 and signs.passes
