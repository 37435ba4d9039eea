"""The self-judge adapter is the existing positivity score, labelled as the model under test."""

import pytest
from conftest import make_model, make_tokenizer

from reptune.behaviours.sentiment import positivity
from reptune.evaluation.scorers import SELF_JUDGE_NAME, SelfJudgePositivity


def test_self_judge_equals_positivity():
    model, tok = make_model("llama"), make_tokenizer(pad=True)
    texts = ["I love this wonderful day.", "I hate this terrible day."]
    scorer = SelfJudgePositivity(model, tok)
    assert scorer.score(["q", "q"], texts) == pytest.approx(positivity(model, tok, texts))
    assert scorer.name == SELF_JUDGE_NAME == "self-judge (model under test)"
    assert scorer.to_unit([0.3]) == [0.3]
