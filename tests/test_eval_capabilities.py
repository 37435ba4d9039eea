"""The lm-eval bridge: result rows, a clear error without lm-eval, and a local offline task."""

from __future__ import annotations

import importlib.util
import json
import sys

import pytest
import torch
from conftest import make_model, make_tokenizer

from reptune.evaluation.lm.capabilities import (
    capability_rows,
    evaluate_capabilities,
    require_lm_eval,
)
from reptune.steering import SteeredModel
from reptune.vectors import SteeringVectors

HAS_LM_EVAL = importlib.util.find_spec("lm_eval") is not None


def test_capability_rows():
    results = {
        "arc_easy": {
            "alias": "arc_easy",
            "acc,none": 0.6,
            "acc_stderr,none": 0.05,
            "acc_norm,none": 0.55,
            "acc_norm_stderr,none": "N/A",
            "sample_len": 3,
        },
        "wikitext": {"word_perplexity,none": 30.1},
    }
    assert capability_rows(results) == [
        {"task": "arc_easy", "metric": "acc", "filter": "none", "value": 0.6, "stderr": 0.05},
        {"task": "arc_easy", "metric": "acc_norm", "filter": "none", "value": 0.55, "stderr": None},
        {
            "task": "wikitext",
            "metric": "word_perplexity",
            "filter": "none",
            "value": 30.1,
            "stderr": None,
        },
    ]


def test_missing_lm_eval_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "lm_eval", None)  # import lm_eval now fails
    with pytest.raises(ImportError, match="pip install"):
        require_lm_eval()
    with pytest.raises(ImportError, match="lm-evaluation-harness"):
        evaluate_capabilities(make_model(), make_tokenizer(), ["arc_easy"])


def test_no_tasks_is_an_error():
    with pytest.raises(ValueError, match="at least one"):
        evaluate_capabilities(None, None, [])


@pytest.mark.slow
@pytest.mark.skipif(not HAS_LM_EVAL, reason="lm_eval (the 'eval' extra) is not installed")
def test_local_task_runs_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    data = tmp_path / "data.jsonl"
    data.write_text(
        "\n".join(
            json.dumps(r)
            for r in [
                {"text": "the quick brown", "target": " fox"},
                {"text": "the lazy", "target": " dog"},
            ]
        )
    )
    (tmp_path / "task.yaml").write_text(
        "task: reptune_local_ll\n"
        "dataset_path: json\n"
        f"dataset_kwargs:\n  data_files:\n    test: {data}\n"
        "test_split: test\n"
        "output_type: loglikelihood\n"
        "doc_to_text: '{{text}}'\n"
        "doc_to_target: '{{target}}'\n"
        "metric_list:\n  - metric: perplexity\n    aggregation: perplexity\n"
        "    higher_is_better: false\n"
    )
    model, tok = make_model(), make_tokenizer(pad=True)
    base = evaluate_capabilities(
        model, tok, ["reptune_local_ll"], include_path=tmp_path, bootstrap_iters=0
    )
    ppl = base["reptune_local_ll"]["perplexity,none"]
    assert ppl > 1.0
    vecs = SteeringVectors({1: torch.randn(32) * 10})
    steered = evaluate_capabilities(
        SteeredModel(model, vecs, layers=[1], coefficient=5.0, coefficient_unit="raw"),
        tok,
        ["reptune_local_ll"],
        include_path=tmp_path,
        bootstrap_iters=0,
    )
    assert steered["reptune_local_ll"]["perplexity,none"] != pytest.approx(ppl)
    # The steering hooks are gone after the run.
    again = evaluate_capabilities(
        model, tok, ["reptune_local_ll"], include_path=tmp_path, bootstrap_iters=0
    )
    assert again["reptune_local_ll"]["perplexity,none"] == pytest.approx(ppl)
    rows = capability_rows(base)
    assert rows[0]["task"] == "reptune_local_ll" and rows[0]["metric"] == "perplexity"
