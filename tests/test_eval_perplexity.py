"""Sliding-window perplexity equals a manual computation; paired bootstrap comparison."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from conftest import make_model, make_tokenizer

from reptune.evaluation.lm.perplexity import (
    compare_perplexity,
    load_text,
    perplexity,
    sliding_windows,
    window_nll,
)
from reptune.steering import SteeredModel
from reptune.vectors import SteeringVectors

FIXTURES = Path(__file__).parent / "fixtures" / "eval"
TEXT = "the quick brown fox jumps over the lazy dog. I love this wonderful happy day. " * 6


@pytest.fixture(scope="module")
def setup():
    return make_model("llama"), make_tokenizer()


@pytest.mark.parametrize(
    "n,window,stride", [(100, 32, 16), (100, 32, 32), (33, 32, 7), (5, 32, 16), (64, 32, 16)]
)
def test_windows_score_every_token_once(n, window, stride):
    spans = sliding_windows(n, window, stride)
    scored = [t for w in spans for t in range(w.target_start, w.end)]
    assert scored == sorted(set(scored))
    assert all(w.end - w.begin <= window and w.target_start > w.begin for w in spans)
    assert spans[-1].end == n
    if stride < window:
        assert scored == list(range(1, n))


def test_window_errors():
    with pytest.raises(ValueError):
        sliding_windows(10, 4, 5)
    with pytest.raises(ValueError):
        sliding_windows(1, 4, 2)


def _manual_nll(model, ids, window, stride):
    """Straight loop: per window, the NLL of each not-yet-scored token from the full logits."""
    total, count, prev_end = 0.0, 0, 0
    for begin in range(0, len(ids), stride):
        end = min(begin + window, len(ids))
        with torch.no_grad():
            logits = model(ids[begin:end].unsqueeze(0)).logits[0]
        logp = torch.log_softmax(logits.double(), dim=-1)
        for t in range(max(prev_end, begin + 1), end):
            total -= logp[t - 1 - begin, ids[t]].item()
            count += 1
        prev_end = end
        if end == len(ids):
            break
    return total, count


@pytest.mark.parametrize(
    "window,stride,batch_size", [(32, 16, 1), (32, 16, 3), (40, 40, 2), (128, 64, 1)]
)
def test_perplexity_equals_manual_computation(setup, window, stride, batch_size):
    model, tok = setup
    ids = tok(TEXT, return_tensors="pt")["input_ids"][0]
    res = window_nll(model, ids, window, stride, batch_size=batch_size)
    total, count = _manual_nll(model, ids, window, stride)
    assert res.total_tokens == count
    assert sum(res.nll) == pytest.approx(total, rel=1e-5)
    assert res.perplexity == pytest.approx(math.exp(total / count), rel=1e-5)
    assert res.as_dict()["n_windows"] == len(res.nll)


def test_perplexity_from_text_and_steering(setup):
    model, tok = setup
    res = perplexity(model, tok, TEXT, window=None, stride=None)  # capped at the context
    assert res.window == 128 and res.stride == 64
    short = perplexity(model, tok, TEXT, 32, 16, max_tokens=50)
    assert short.total_tokens == 49
    vecs = SteeringVectors({1: torch.randn(32) * 5})
    steered = perplexity(
        SteeredModel(model, vecs, layers=[1], coefficient=3.0, coefficient_unit="raw"),
        tok,
        TEXT,
        32,
        16,
    )
    assert steered.perplexity != pytest.approx(perplexity(model, tok, TEXT, 32, 16).perplexity)
    with pytest.raises(ValueError, match="exceeds the model's context"):
        window_nll(model, torch.arange(300) % 300, window=256, stride=128)


def test_compare_perplexity(setup):
    model, tok = setup
    a = perplexity(model, tok, TEXT, 32, 16)
    same = compare_perplexity(a, a, n_resamples=200)
    assert same["perplexity_difference"].estimate == 0.0
    assert not same["perplexity_difference"].significant
    other = perplexity(make_model("llama", seed=1), tok, TEXT, 32, 16)
    cmp = compare_perplexity(a, other, n_resamples=500, seed=0)
    diff = cmp["perplexity_difference"]
    assert diff.estimate == pytest.approx(other.perplexity - a.perplexity)
    assert diff.low <= diff.estimate <= diff.high
    assert cmp["nll_difference"].estimate == pytest.approx(other.mean_nll - a.mean_nll)
    with pytest.raises(ValueError, match="same windows"):
        compare_perplexity(a, perplexity(model, tok, TEXT, 32, 8))


def test_load_text(tmp_path):
    assert load_text(FIXTURES / "text.txt").startswith("the quick brown fox")
    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"text": "one"}\n{"text": "two"}\n')
    assert load_text(rows) == "one\n\ntwo"
    with pytest.raises(ValueError, match="no column"):
        load_text(rows, column="body")
    with pytest.raises(FileNotFoundError):
        load_text(tmp_path / "missing.txt")
