"""The scorer interface: input checks, the map onto [0, 1], descriptions."""

import math

import pytest

from reptune.evaluation.scorers import Scorer, check_pairs, linear_unit


class Length(Scorer):
    name, axis, higher_is_better, score_range = "length", "fluency", False, (0.0, 10.0)

    def score(self, prompts, answers):
        check_pairs(prompts, answers)
        return [float(len(a)) for a in answers]


def test_linear_unit_maps_clips_and_flips():
    assert linear_unit(0.0, -1.0, 1.0) == 0.5
    assert linear_unit(3.0, -1.0, 1.0) == 1.0
    assert linear_unit(-0.5, -1.0, 1.0, higher_is_better=False) == 0.75
    assert math.isnan(linear_unit(math.nan, 0.0, 1.0))


def test_to_unit_of_a_lower_is_better_scorer():
    scorer = Length()
    assert scorer.score(["q", "q"], ["ab", "abcdefghij"]) == [2.0, 10.0]
    assert scorer.to_unit([2.0, 10.0]) == [0.8, 0.0]
    assert scorer.describe() == {
        "name": "length",
        "axis": "fluency",
        "higher_is_better": False,
        "score_range": [0.0, 10.0],
    }


@pytest.mark.parametrize(
    "prompts, answers, message",
    [
        (["a"], ["b", "c"], "1 prompts but 2 answers"),
        ("a", ["b"], "not single strings"),
        (["a"], [None], "answer 0 is NoneType"),
    ],
)
def test_check_pairs_names_the_problem(prompts, answers, message):
    with pytest.raises(ValueError, match=message):
        check_pairs(prompts, answers)
