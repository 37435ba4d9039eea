"""Agreement with labels: hand-computed metrics, intervals and the headline rule."""

import math

import numpy as np
import pytest
from scipy.stats import spearmanr

from reptune.evaluation.scorers import (
    DistinctN,
    agreement,
    agreement_by_group,
    auroc,
    headline_scorers,
    require_agreement,
    validate_scorer,
)
from reptune.evaluation.stats import wilson_interval


def test_auroc_by_hand():
    # Pairs (high, low): (3,1) win, (3,2) win, (2,1) win, (2,2) tie -> 3.5 / 4.
    assert float(auroc([3.0, 2.0], [1.0, 2.0])) == 0.875


def test_binary_labels_give_auroc_with_an_interval():
    scores = [0.9, 0.8, 0.4, 0.6, 0.3, 0.1] * 5
    labels = [1, 1, 1, 0, 0, 0] * 5
    result = agreement(scores, labels, scorer="toy")
    assert result.metric == "auroc" and result.bar == 0.5
    # Per copy of 3 vs 3: 8 of 9 pairs won; copies repeat the same values.
    expected = float(auroc(np.array(scores)[np.array(labels) == 1], [0.6, 0.3, 0.1] * 5))
    assert result.value == pytest.approx(expected)
    assert result.low <= result.value <= result.high and result.passes
    assert "agrees" in str(result) and result.as_dict()["passes"]


def test_lower_is_better_flips_the_scores():
    result = agreement([0.1, 0.2, 0.8, 0.9] * 5, [1, 1, 0, 0] * 5, higher_is_better=False)
    assert result.value == 1.0


def test_ordinal_labels_give_spearman():
    rng = np.random.default_rng(0)
    labels = [-1, 0, 1] * 20
    scores = [y + rng.normal(0, 0.8) for y in labels]
    result = agreement(scores, labels)
    assert result.metric == "spearman" and result.bar == 0.0
    assert result.value == pytest.approx(spearmanr(scores, labels).statistic)
    assert result.low < result.value < result.high


def test_accuracy_uses_wilson_and_the_majority_bar():
    scores = [1.0] * 7 + [-1.0] * 3
    labels = [1, 1, 1, 1, 1, 1, -1, -1, -1, 1]
    result = agreement(scores, labels, metric="accuracy", threshold=0.0)
    # Right: items 0-5 (positive, said positive) and 7-8 (negative, said negative) = 8 of 10.
    assert result.value == 0.8
    assert (result.low, result.high) == pytest.approx(wilson_interval(8, 10))
    assert result.bar == 0.7  # always saying "positive" is right 7 times in 10
    with pytest.raises(ValueError, match="threshold"):
        agreement(scores, labels, metric="accuracy")


def test_a_random_scorer_is_kept_out_of_headlines():
    rng = np.random.default_rng(1)
    labels = [0, 1] * 30
    noise = agreement(rng.normal(size=60).tolist(), labels, scorer="noise")
    assert not noise.passes and "does NOT agree" in str(noise)
    with pytest.raises(ValueError, match="noise does not agree"):
        require_agreement(noise)
    good = agreement([float(y) for y in labels], labels)
    require_agreement(good)
    assert headline_scorers(["noise", "good"], [noise, good]) == ["good"]


def test_nan_scores_are_dropped_and_counted():
    result = agreement([1.0, math.nan, 0.0] * 10, [1, 1, 0] * 10)
    assert (result.n, result.n_dropped) == (20, 10)


def test_validate_scorer_runs_the_scorer():
    answers = ["a b c d e", "a a a a a"] * 10
    result = validate_scorer(DistinctN(1), ["q"] * 20, answers, [1, 0] * 10)
    assert result.value == 1.0 and result.scorer == "distinct-1 (words)"


def test_bad_labels_are_named():
    with pytest.raises(ValueError, match="two different values"):
        agreement([0.1, 0.2], [1, 1])
    with pytest.raises(ValueError, match="3 scores but 2 labels"):
        agreement([0.1, 0.2, 0.3], [1, 0])


def test_agreement_by_group_by_hand():
    scores = [0.9, 0.4, 0.6, 0.2, 0.7, 0.3] + [0.8, 0.1] + [0.5, 0.5, 0.1, math.nan]
    labels = [1, 1, 1, 0, 0, 0] + [1, 1] + [1, 0, 0, 0]
    groups = ["a"] * 6 + ["b"] * 2 + ["c"] * 4
    a, b, c = agreement_by_group(scores, labels, groups, metric="auroc")
    # a: 0.9 wins 3 pairs, 0.4 and 0.6 win 2 each (both lose to 0.7) -> 7 / 9, with the interval
    # agreement() gives the group alone
    alone = agreement(scores[:6], labels[:6])
    assert (a["group"], a["n"], a["metric"]) == ("a", 6, "auroc")
    assert a["value"] == pytest.approx(7 / 9) and a["note"] == ""
    assert (a["low"], a["high"]) == (alone.low, alone.high)
    # b: every label is 1, no AUROC: skipped and said so
    assert b["value"] is None and b["low"] is None
    assert b["note"] == "every label is 1: auroc undefined, skipped"
    # c: the nan score is dropped; 0.5 vs (0.5, 0.1) = (0.5 + 1) / 2, one item labelled 1
    assert c["n"] == 3 and c["value"] == pytest.approx(0.75)
    assert c["low"] is None and "one item" in c["note"]


def test_spearman_by_group_by_hand():
    # ranks 1..4 against tied label ranks 1.5, 1.5, 3.5, 3.5: 4 / (sqrt(5) * 2)
    rows = agreement_by_group([1, 2, 3, 4], [0, 0, 1, 1], ["g"] * 4, metric="spearman")
    assert rows[0]["value"] == pytest.approx(2 / math.sqrt(5))
    flipped = agreement_by_group(
        [1, 2, 3, 4], [0, 0, 1, 1], ["g"] * 4, metric="spearman", higher_is_better=False
    )
    assert flipped[0]["value"] == pytest.approx(-2 / math.sqrt(5))
    # a resample with one label value has no Spearman: the value stands without an interval
    assert rows[0]["low"] is None and "no interval" in rows[0]["note"]
    constant = agreement_by_group([1, 1, 1, 1], [0, 0, 1, 1], ["g"] * 4, metric="spearman")
    assert constant[0]["value"] is None and "constant scores" in constant[0]["note"]
    many = agreement_by_group(
        [0.1, 0.5, 0.9, 0.3] * 10, [-1, 0, 1, 0] * 10, "a" * 40, metric="spearman"
    )
    assert many[0]["low"] <= many[0]["value"] <= many[0]["high"]


def test_agreement_by_group_names_bad_input():
    with pytest.raises(ValueError, match="'auroc' or 'spearman'"):
        agreement_by_group([0.1, 0.2], [1, 0], "ab", metric="accuracy")
    with pytest.raises(ValueError, match="2 scores but 3 groups"):
        agreement_by_group([0.1, 0.2], [1, 0], "abc", metric="auroc")
