"""distinct-n and the repeated n-gram share, by hand and on the labelled fluency set."""

import json
import math

import pytest

from reptune.evaluation.scorers import DistinctN, RepeatedNgramRate, validate_scorer, words
from reptune.io import data_path


def _fluency_rows():
    with open(data_path("fluency_labelled.jsonl")) as f:
        return [json.loads(line) for line in f]


def test_words_ignore_case_and_punctuation():
    assert words("Good, good... GOOD! It's") == ["good", "good", "good", "it's"]


def test_distinct_n_by_hand():
    # "the cat saw the dog": 5 words, 4 distinct; bigrams all 4 distinct.
    d1, d2 = DistinctN(1), DistinctN(2)
    answers = ["the cat saw the dog", "good good good good", "one", ""]
    assert d1.score(["q"] * 4, answers)[:3] == [0.8, 0.25, 1.0]
    two = d2.score(["q"] * 4, answers)
    assert two[:2] == [1.0, 1 / 3]
    assert math.isnan(two[2]) and math.isnan(d1.score(["q"], [""])[0])


def test_repeated_ngram_share_by_hand():
    rep = RepeatedNgramRate(3)
    got = rep.score(["q"] * 3, ["a b c a b c d", "a b c d e f", "x y x y x y"])
    # "x y x y x y": trigrams xyx (x2) and yxy (x2) cover all 6 words.
    assert got == [6 / 7, 0.0, 1.0]
    assert rep.higher_is_better is False and rep.to_unit([0.25]) == [0.75]
    with pytest.raises(ValueError, match="positive integer"):
        RepeatedNgramRate(0)


def test_labelled_fluency_set_and_agreement():
    rows = _fluency_rows()
    assert len(rows) >= 40 and {r["label"] for r in rows} == {0, 1}
    prompts, answers = [r["prompt"] for r in rows], [r["answer"] for r in rows]
    labels = [r["label"] for r in rows]
    for scorer in (DistinctN(2), RepeatedNgramRate(3)):
        result = validate_scorer(scorer, prompts, answers, labels)
        assert result.passes, (scorer.name, str(result))
