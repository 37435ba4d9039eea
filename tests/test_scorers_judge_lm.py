"""Batched answer log-probs against a plain forward pass; the judge-family refusal."""

import importlib.metadata

import pytest
import torch
from conftest import make_model, make_tokenizer

from reptune import chunked_gguf
from reptune.evaluation.scorers import (
    JUDGE_INSTALL,
    JudgeLM,
    answer_log_probs,
    check_different_family,
    model_family,
)


def _by_hand(model, tok, prompt, answer):
    head = tok(prompt)["input_ids"]
    tail = tok(answer, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([head + tail])).logits[0]
    logp = logits.log_softmax(-1)
    return torch.stack([logp[len(head) - 1 + j, t] for j, t in enumerate(tail)])


@pytest.mark.parametrize("arch", ["gpt2", "gemma3"])
def test_batched_log_probs_equal_one_forward_per_pair(arch):
    model, tok = make_model(arch), make_tokenizer(pad=True)
    prompts = ["I love this", "the quick brown fox jumps over", "Question:"]
    answers = [" wonderful happy day.", " the lazy dog", " (A) True (B) False Answer: A B C D"]
    got = answer_log_probs(model, tok, prompts, answers, batch_size=2)
    for prompt, answer, lp in zip(prompts, answers, got):
        torch.testing.assert_close(lp, _by_hand(model, tok, prompt, answer), atol=1e-5, rtol=1e-5)


def test_empty_answers_and_truncation():
    model, tok = make_model("gpt2"), make_tokenizer(pad=True)
    full, empty, cut = answer_log_probs(
        model, tok, ["I love", "I love", "I love"], [" this happy day", "", " this happy day"]
    )
    assert empty.numel() == 0
    short = answer_log_probs(model, tok, ["I love"], [" this happy day"], max_answer_tokens=2)[0]
    torch.testing.assert_close(short, full[:2])
    torch.testing.assert_close(cut, full)


def test_judge_applies_its_prompt_template():
    model, tok = make_model("gpt2"), make_tokenizer(pad=True)
    judge = JudgeLM(model, tok, "tiny", prompt_template="Q: {prompt}\nA:")
    got = judge.answer_log_probs(["hi"], [" yes"])[0]
    torch.testing.assert_close(got, _by_hand(model, tok, "Q: hi\nA:", " yes"))
    with pytest.raises(ValueError, match="prompt_template"):
        JudgeLM(model, tok, "tiny", prompt_template="no placeholder")


def test_family_check():
    assert model_family("gemma3_text") == model_family("gemma2") == "gemma"
    assert model_family("qwen2_moe") == "qwen"
    check_different_family(make_model("gpt2"), make_model("llama").config)
    with pytest.raises(ValueError, match="gemma family"):
        check_different_family(make_model("gemma3"), "gemma2")
    with pytest.raises(ValueError, match="llama family"):
        JudgeLM(make_model("llama"), make_tokenizer(pad=True), "x", model_under_test="llama")


def test_embedded_judge_refuses_a_gemma_model_before_loading(monkeypatch, tmp_path):
    monkeypatch.setenv("REPTUNE_CACHE", str(tmp_path))
    monkeypatch.setattr("reptune.models.chunk_paths", lambda spec: [])
    with pytest.raises(ValueError, match="gemma family"):
        JudgeLM.load("embedded:gemma3-270m", model_under_test="gemma3_text")
    assert not any(tmp_path.iterdir())  # nothing joined or converted


def test_missing_judge_package_names_the_install(monkeypatch):
    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(chunked_gguf.importlib.metadata, "distribution", missing)
    with pytest.raises(ImportError, match=JUDGE_INSTALL.replace(".", r"\.")):
        JudgeLM.load("embedded:gemma3-270m", model_under_test="llama")
