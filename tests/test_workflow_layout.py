"""Reading run folders: only the vectors are required; broken optional parts are errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from reptune.vectors import SteeringVectors
from reptune.workflow.layout import find_vectors_dir, load_run

REPORT = {
    "title": "Honesty after representation tuning",
    "model": {"name": "tiny-llama", "variant": "rep-tuned"},
    "sections": [
        {
            "title": "Honest answers",
            "text": "Rates of honest answers with Wilson 95% intervals.",
            "tables": [
                {
                    "title": "Honest rate by condition",
                    "columns": ["set", "untuned", "rep-tuned"],
                    "rows": [["gpt4 facts", 0.81, 0.87], ["truthfulqa | subset", 0.51, 0.625]],
                }
            ],
            "plots": ["honest_rate.png", "not_there.png"],
        },
        {"title": "Perplexity", "text": "WikiText-2 test windows.", "tables": [], "plots": []},
    ],
    "metrics": {
        "honest_rate/gpt4_facts": {"value": 0.87, "ci_low": 0.8164, "ci_high": 0.9087, "n": 200},
        "dishonest_rate/gpt4_facts": {"value": 0.88, "ci_low": 0.8274, "ci_high": 0.9181, "n": 200},
        "perplexity_ratio": {"value": 1.0123456789, "ci_low": 0.99, "ci_high": 1.03, "n": 64},
    },
}

CONFIG = {
    "base_model": "HuggingFaceTB/SmolLM2-135M-Instruct",
    "rep_layers": [1, 2],
    "rep_positions": [-3],
    "rep_target": "toward",
    "rep_weight": 1.0,
    "lm_weight": 0.01,
    "retain_weight": 0.5,
    "learning_rate": 1e-05,
    "num_train_epochs": 3,
    "dataset": "reptune/honesty-claims",
    "eval_datasets": ["truthfulqa/truthful_qa", "data/local_facts.jsonl"],
    "hub_token": "<HUB_TOKEN>",
}


def make_run(
    root: Path,
    *,
    adapter: bool = True,
    config: bool = True,
    report: bool = True,
    layers=(1, 2),
) -> Path:
    """A run folder like the recipe writes, with fake adapter weights (nothing loads them)."""
    run = root / "run"
    gen = torch.Generator().manual_seed(0)
    vectors = {layer: torch.randn(16, generator=gen) for layer in layers}
    meta = {"model_name": "tiny-llama", "model_type": "llama", "num_layers": 4, "method": "mean"}
    SteeringVectors(vectors, meta).save(run / "vectors")
    if adapter:
        (run / "adapter").mkdir(parents=True)
        adapter_config = {"peft_type": "LORA", "r": 4, "lora_alpha": 8, "target_modules": ["v"]}
        (run / "adapter" / "adapter_config.json").write_text(json.dumps(adapter_config))
        (run / "adapter" / "adapter_model.safetensors").write_bytes(b"weights")
    if config:
        (run / "reptune_config.json").write_text(json.dumps(CONFIG))
    if report:
        (run / "report").mkdir(parents=True)
        (run / "report" / "report.json").write_text(json.dumps(REPORT))
        (run / "report" / "report.md").write_text("# report\n")
        (run / "report" / "honest_rate.png").write_bytes(b"\x89PNG")
    return run


def test_full_run_is_parsed(tmp_path):
    run = load_run(make_run(tmp_path))
    assert run.vectors.layers == [1, 2]
    assert run.has_adapter and run.adapter_config["r"] == 4
    assert run.config["rep_weight"] == 1.0
    assert run.report["title"] == REPORT["title"]


def test_only_vectors_are_required(tmp_path):
    run = load_run(make_run(tmp_path, adapter=False, config=False, report=False))
    assert not run.has_adapter and run.config == {} and run.report is None


def test_bare_vectors_folder_is_a_run(tmp_path):
    run_dir = make_run(tmp_path, adapter=False, config=False, report=False)
    assert find_vectors_dir(run_dir / "vectors") == run_dir / "vectors"
    assert load_run(run_dir / "vectors").vectors.layers == [1, 2]


def test_missing_vectors_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a reptune run folder"):
        load_run(tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_run(tmp_path / "nowhere")


def test_broken_optional_part_is_an_error(tmp_path):
    run_dir = make_run(tmp_path)
    (run_dir / "report" / "report.json").write_text("{not json")
    with pytest.raises(ValueError, match="report.json is not valid JSON"):
        load_run(run_dir)
