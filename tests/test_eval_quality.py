"""Generations scored on behaviour, fluency and relevance; the KL between two models."""

import math

import pytest
import torch
from conftest import make_model, make_tokenizer

from reptune.evaluation.open_ended.quality import (
    KLReference,
    QualityScores,
    continuation_log_probs,
    harmonic_mean,
    next_token_kl,
    score_generations,
    summarize_quality,
)
from reptune.evaluation.stats import mean_interval

PROMPTS = [
    "<|user|>the quick brown fox<|end|><|assistant|>",
    "<|user|>a happy day<|end|><|assistant|>",
    "<|user|>Is the claim true?<|end|><|assistant|>",
]
ANSWERS = [" jumps over the lazy dog", " I love this wonderful day", " (A) True"]


@pytest.fixture(scope="module")
def setup():
    return make_model("llama", n_layers=2, hidden=32), make_tokenizer()


def _by_hand(model, tok, prompt, answer):
    """One pair alone, full logits, no padding."""
    ids = tok(prompt)["input_ids"]
    more = tok(answer, add_special_tokens=False)["input_ids"]
    seq = torch.tensor([ids + more])
    with torch.no_grad():
        logp = model(input_ids=seq).logits[0].log_softmax(-1)
    return torch.stack([logp[len(ids) - 1 + i, t] for i, t in enumerate(more)])


def test_continuation_log_probs_equal_one_pair_at_a_time(setup):
    model, tok = setup
    batched = continuation_log_probs(model, tok, PROMPTS, ANSWERS, batch_size=3)
    for prompt, answer, got in zip(PROMPTS, ANSWERS, batched):
        torch.testing.assert_close(got, _by_hand(model, tok, prompt, answer), atol=1e-5, rtol=1e-5)
    # One prompt, answers of different lengths, continuing from one shared prompt cache.
    shared = [PROMPTS[0]] * 3 + [PROMPTS[1]]
    answers = [ANSWERS[0], " a", ANSWERS[2], ANSWERS[1]]
    for prompt, answer, got in zip(
        shared, answers, continuation_log_probs(model, tok, shared, answers, batch_size=2)
    ):
        torch.testing.assert_close(got, _by_hand(model, tok, prompt, answer), atol=1e-5, rtol=1e-5)


def test_harmonic_mean_by_hand():
    assert harmonic_mean(1.0, 0.5, 0.5) == pytest.approx(0.6)
    assert harmonic_mean(0.2, 0.2, 0.2) == pytest.approx(0.2)
    assert harmonic_mean(1.0, 0.0, 1.0) == 0.0


def test_score_generations_by_hand(setup):
    model, tok = setup
    answers = [*ANSWERS[:2], "   "]  # an empty answer scores 0 on every axis but behaviour
    scores = score_generations(model, tok, PROMPTS, answers, [0.9, 0.5, 1.0], distractors=2)
    for i in range(2):
        own = _by_hand(model, tok, PROMPTS[i], answers[i])
        assert scores.fluency[i] == pytest.approx(math.exp(float(own.mean())), rel=1e-5)
        totals = [float(_by_hand(model, tok, p, answers[i]).sum()) for p in PROMPTS]
        # the two distractors are the other two prompts: the posterior of the own prompt
        posterior = math.exp(totals[i]) / sum(math.exp(t) for t in totals)
        assert scores.relevance[i] == pytest.approx(posterior, rel=1e-4)
        expected = harmonic_mean(scores.behaviour[i], scores.fluency[i], scores.relevance[i])
        assert scores.harmonic[i] == pytest.approx(expected)
    assert scores.fluency[2] == scores.relevance[2] == scores.harmonic[2] == 0.0
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        score_generations(model, tok, PROMPTS, answers, [1.5, 0.5, 0.5])
    summary = summarize_quality(scores)
    for axis in ("behaviour", "fluency", "relevance", "harmonic"):
        assert summary[axis].value == pytest.approx(sum(getattr(scores, axis)) / 3)
        assert summary[axis].low <= summary[axis].value <= summary[axis].high


def test_next_token_kl_by_hand(setup):
    model, tok = setup
    other = make_model("llama", n_layers=2, hidden=32, seed=3)
    assert next_token_kl(model, model, tok, PROMPTS, ANSWERS) == pytest.approx([0.0] * 3, abs=1e-6)
    got = next_token_kl(model, other, tok, PROMPTS, ANSWERS, batch_size=2)
    for prompt, answer, value in zip(PROMPTS, ANSWERS, got):
        ids = tok(prompt)["input_ids"]
        more = tok(answer, add_special_tokens=False)["input_ids"]
        seq = torch.tensor([ids + more])
        with torch.no_grad():
            p = model(input_ids=seq).logits[0].log_softmax(-1)
            q = other(input_ids=seq).logits[0].log_softmax(-1)
        span = slice(len(ids) - 1, len(ids) - 1 + len(more))
        kl = (p.exp() * (p - q)).sum(-1)[span].mean()
        assert value == pytest.approx(float(kl), rel=1e-4)
    assert min(got) > 0


def test_kl_when_q_reads_other_prompts_by_hand(setup):
    """P reads an instruction before each prompt, Q the plain prompt; the continuation is the
    same, so KL compares the positions that predict it (prompts of different lengths, padded
    together)."""
    model, tok = setup
    other = make_model("llama", n_layers=2, hidden=32, seed=3)
    instructed = [
        f"<|system|>be {w}<|end|>{p}" for w, p in zip(("glad", "very very glad", "x"), PROMPTS)
    ]
    got = KLReference(model, tok, instructed, ANSWERS, batch_size=2).kl(other, prompts=PROMPTS)
    for p_prompt, q_prompt, answer, value in zip(instructed, PROMPTS, ANSWERS, got):
        more = tok(answer, add_special_tokens=False)["input_ids"]
        logs = []
        for m, prompt in ((model, p_prompt), (other, q_prompt)):
            ids = tok(prompt)["input_ids"]
            with torch.no_grad():
                logits = m(input_ids=torch.tensor([ids + more])).logits[0].log_softmax(-1)
            logs.append(logits[len(ids) - 1 : len(ids) - 1 + len(more)])
        p, q = logs
        assert value == pytest.approx(float((p.exp() * (p - q)).sum(-1).mean()), rel=1e-4)
    # The same model reading the prompt it was given is at 0; without it, above.
    same = KLReference(model, tok, instructed, ANSWERS)
    assert same.kl(model) == pytest.approx([0.0] * 3, abs=1e-6)
    assert min(same.kl(model, prompts=PROMPTS)) > 0
    with pytest.raises(ValueError, match="one prompt per continuation"):
        same.kl(model, prompts=PROMPTS[:2])


def test_mean_interval_and_rows():
    m = mean_interval([0.2, 0.4, 0.6, 0.8])
    assert m.value == pytest.approx(0.5) and m.low < 0.5 < m.high
    assert mean_interval([0.3, 0.3]).low == mean_interval([0.3, 0.3]).high == 0.3
    rows = QualityScores([1.0], [0.5], [0.25], [0.4]).rows()
    assert rows == [{"behaviour": 1.0, "fluency": 0.5, "relevance": 0.25, "harmonic": 0.4}]
