"""The HuggingFace classifier scorer with a tiny classifier built from a config."""

import pytest
import torch
import transformers
from conftest import make_tokenizer

from reptune.evaluation.scorers import ClassifierScorer

LABELS = {0: "negative", 1: "neutral", 2: "positive"}


def _classifier():
    config = transformers.BertConfig(
        vocab_size=320,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=64,
        id2label=LABELS,
        label2id={v: k for k, v in LABELS.items()},
    )
    torch.manual_seed(0)
    model = transformers.BertForSequenceClassification(config).eval()
    with torch.no_grad():
        # Logits independent of the text: softmax(log [1, 2, 5]) = [1/8, 2/8, 5/8].
        model.classifier.weight.zero_()
        model.classifier.bias.copy_(torch.tensor([1.0, 2.0, 5.0]).log())
    return model


def test_expected_label_value_by_hand():
    scorer = ClassifierScorer(
        _classifier(), {"negative": -1.0, "positive": 1.0}, make_tokenizer(pad=True), name="tiny"
    )
    scores = scorer.score(["q", "q"], ["I love this", "the quick brown fox jumps over the dog"])
    # -1 * 1/8 + 0 * 2/8 + 1 * 5/8 = 0.5
    assert scores == pytest.approx([0.5, 0.5])
    assert scorer.score_range == (-1.0, 1.0) and scorer.to_unit([0.5]) == [0.75]
    assert scorer.name == "classifier tiny" and scorer.axis == "behaviour"


def test_scores_follow_the_text_for_a_trained_head():
    model, tok = _classifier(), make_tokenizer(pad=True)
    torch.nn.init.normal_(model.classifier.weight)
    scorer = ClassifierScorer(model, {"positive": 1.0}, tok, batch_size=1)
    texts = ["I love this", "I hate this terrible sad day"]
    batched = ClassifierScorer(model, {"positive": 1.0}, tok, batch_size=2).score(["q"] * 2, texts)
    alone = scorer.score(["q"] * 2, texts)
    assert batched == pytest.approx(alone, abs=1e-5)
    with torch.no_grad():
        probs = model(**tok(texts[:1], return_tensors="pt")).logits.softmax(-1)[0]
    assert alone[0] == pytest.approx(float(probs[2]), abs=1e-6)


def test_loads_a_saved_folder_without_remote_code(tmp_path):
    model, tok = _classifier(), make_tokenizer(pad=True)
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    scorer = ClassifierScorer(str(tmp_path), {"negative": -1.0, "positive": 1.0})
    assert scorer.score(["q"], ["I love this"]) == pytest.approx([0.5])


def test_bad_label_maps_are_named():
    model, tok = _classifier(), make_tokenizer(pad=True)
    with pytest.raises(ValueError, match=r"\['POSITIVE'\] are not in the classifier's labels"):
        ClassifierScorer(model, {"POSITIVE": 1.0}, tok)
    with pytest.raises(ValueError, match="same number"):
        ClassifierScorer(model, {"positive": 0.0}, tok)
    with pytest.raises(ValueError, match="give the tokenizer"):
        ClassifierScorer(model, {"positive": 1.0})
