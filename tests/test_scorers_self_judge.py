"""The self-judge adapter carries the existing positivity score, labelled as the model under
test."""

from functools import partial

import pytest
from conftest import make_model, make_tokenizer

from reptune.behaviours.sentiment import positivity
from reptune.evaluation.scorers import SELF_JUDGE_NAME, SelfJudge


def test_self_judge_equals_positivity():
    model, tok = make_model("llama"), make_tokenizer(pad=True)
    texts = ["I love this wonderful day.", "I hate this terrible day."]
    scorer = SelfJudge(partial(positivity, model, tok))
    assert scorer.score(["q", "q"], texts) == pytest.approx(positivity(model, tok, texts))
    assert scorer.name == SELF_JUDGE_NAME == "self-judge (model under test)"
    assert scorer.to_unit([0.3]) == [0.3]
    assert SelfJudge(lambda t: [0.0] * len(t), score_range=(-1.0, 1.0)).to_unit([0.0]) == [0.5]


def test_a_score_function_of_the_wrong_length_is_named():
    with pytest.raises(ValueError, match="gave 1 scores for 2 answers"):
        SelfJudge(lambda texts: [1.0]).score(["q", "q"], ["a", "b"])
