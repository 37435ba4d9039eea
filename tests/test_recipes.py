"""The recipes: config files, an end-to-end run on a tiny model, a rerun that skips."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import make_model, make_tokenizer

from reptune.training import RepTuneConfig
from reptune.workflow import BehaviourArguments, HonestyArguments, ModelArguments, RunArguments

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / "recipes"


def _fields(*classes) -> set[str]:
    return {f.name for cls in classes for f in dataclasses.fields(cls)}


@pytest.mark.parametrize(
    "path", sorted(RECIPES.glob("[hb]*/*.yaml")), ids=lambda p: f"{p.parent.name}/{p.name}"
)
def test_recipe_configs_name_only_existing_options(path):
    arguments = HonestyArguments if path.parent.name == "honesty" else BehaviourArguments
    config = yaml.safe_load(path.read_text())
    unknown = set(config) - _fields(ModelArguments, RunArguments, arguments, RepTuneConfig)
    assert not unknown, f"{path.name} names unknown options {sorted(unknown)}"
    section = set(config.get("behaviour_section") or {}) - _fields(BehaviourArguments)
    assert not section, f"{path.name}: behaviour_section names unknown options {sorted(section)}"


def test_the_main_job_config_asks_for_counts_the_data_hold():
    """The counts the main job asks for are delivered: its pre-load check passes."""
    config = yaml.safe_load((RECIPES / "honesty/smollm2-135m.yaml").read_text())
    hargs = HonestyArguments(**{k: v for k, v in config.items() if k in _fields(HonestyArguments)})
    hargs.check_counts()


@pytest.mark.parametrize(
    "path", sorted((RECIPES / "accelerate").glob("*.yaml")), ids=lambda p: p.name
)
def test_accelerate_configs_parse(path):
    from accelerate.commands.config.config_args import ClusterConfig
    from accelerate.commands.launch import launch_command_parser

    config = ClusterConfig.from_yaml_file(str(path))  # rejects unknown top-level keys
    flags = {
        opt.lstrip("-")
        for action in launch_command_parser()._actions
        for opt in action.option_strings
    }
    nested = {**(config.deepspeed_config or {}), **(config.fsdp_config or {})}
    unknown = [key for key in nested if key not in flags]
    assert not unknown, f"{path.name}: accelerate knows no options {unknown}"


#: A sentiment section small enough for a tiny model: every stage runs, in seconds.
TINY_SECTION = {
    "behaviour": "sentiment",
    "layers": [1, 2],
    "steer_layers": [1],
    "coefficients": [0.5, 1.0],
    "dev_prompts": 3,
    "test_prompts": 3,
    "new_tokens": 4,
    "train_prompts": 8,
    "row_tokens": 6,
    "sft_steps": 2,
    "cosine_steps": 2,
    "steer_steps": 2,
    "prompt_steps": 2,
    "variants": ["token-sft", "rep-cosine", "rep-steer", "rep-prompt"],
    "select_every": 1,
    "perplexity_window": 32,
    "perplexity_stride": 16,
    "instructions": ["warm-tone", "explicit-sentiment"],
    "judge_dtype": "float32",
    "judge_answer_tokens": 8,
    "bootstrap_resamples": 200,
}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A tiny Llama saved to disk and a config that runs every stage of the honesty recipe."""
    root = tmp_path_factory.mktemp("recipe")
    model = make_model("llama", n_layers=4, hidden=32, context=512)
    tok = make_tokenizer(pad=True)
    model.save_pretrained(root / "tiny")
    tok.save_pretrained(root / "tiny")
    # the section's judge LM: a tiny model of another family
    make_model("gpt2", n_layers=2, hidden=32, context=1024).save_pretrained(root / "judge")
    tok.save_pretrained(root / "judge")
    config = {
        "model": str(root / "tiny"),
        "run_dir": str(root / "run"),
        "num_rep_layers": 2,
        "sweep_coefficients": [-1, 0, 1],
        "robustness_coefficients": [1],
        "perplexity_window": 64,
        "perplexity_stride": 32,
        "select_every": 1,
        "tradeoff_items": str(ROOT / "tests/fixtures/eval/mmlu.jsonl"),
        "tradeoff_coefficients": [-1, 0, 1],
        "behaviour_section": dict(TINY_SECTION, judge_model=str(root / "judge")),
        "lora_target_modules": ["q_proj", "v_proj"],
        "rep_positions": "-3",
        "learning_rate": 0.01,
        "max_steps": 3,
        "per_device_train_batch_size": 4,
        "logging_steps": 1,
        "save_strategy": "no",
        "report_to": [],
        "output_dir": str(root / "run/trainer"),
    }
    path = root / "tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    return root, path


def _run(args, timeout=600):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc


@pytest.mark.slow
def test_honesty_recipe_end_to_end_then_rerun_skips(tiny_run):
    root, config = tiny_run
    run = root / "run"
    _run([sys.executable, "recipes/honesty.py", "--config", str(config)])
    # artefacts a user needs
    for rel in (
        "vectors/steering_vectors.safetensors",
        "adapter/adapter_model.safetensors",
        "report/report.md",
        "report/report.json",
        "report/sweep.png",
        "report/layer_accuracy.png",
        "report/robustness.png",
        "report/tradeoff.png",
        "behaviour/report/pareto.png",
        "behaviour/models/rep-steer/adapter_model.safetensors",
        "behaviour/data/steered_rows.jsonl",
        "README.md",
        "reptune_config.json",
    ):
        assert (run / rel).is_file(), rel
    # the card's numbers are the report's
    report = json.loads((run / "report/report.json").read_text())
    card = (run / "README.md").read_text()
    from huggingface_hub import ModelCard

    data = ModelCard.load(run / "README.md").data
    assert "reptune" in data.tags and data.library_name == "peft"
    for name, metric in report["metrics"].items():
        if metric["value"] is not None:
            assert json.dumps(metric["value"]) in card, name
    # vectors load back onto the model; the adapter changes the base model's outputs
    from peft import PeftModel

    from reptune.models import load_model
    from reptune.vectors import SteeringVectors

    base, tok = load_model(str(root / "tiny"))
    SteeringVectors.load(run / "vectors", model=base)
    batch = tok(["Is the sky green?"], return_tensors="pt")
    with torch.no_grad():
        before = base(**batch).logits
        tuned = PeftModel.from_pretrained(base, str(run / "adapter")).eval()
        after = tuned(**batch).logits
    assert not torch.allclose(before, after)

    markers = {p.name: p.read_text() for p in (run / "stages").glob("*.json")}
    proc = _run([sys.executable, "recipes/honesty.py", "--config", str(config)])
    assert proc.stdout.count("already complete") + proc.stderr.count("already complete") == len(
        markers
    )
    assert {p.name: p.read_text() for p in (run / "stages").glob("*.json")} == markers


def test_missing_input_fails_before_any_model_runs(tiny_run, tmp_path):
    root, config = tiny_run
    proc = subprocess.run(
        [
            sys.executable,
            "recipes/honesty.py",
            "--config",
            str(config),
            "--claims",
            str(tmp_path / "nope.csv"),
            "--run_dir",
            str(tmp_path / "run"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0
    assert "nope.csv does not exist" in proc.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_honesty_recipe_with_two_processes(tiny_run, tmp_path):
    """torchrun with 2 CPU processes (gloo): training runs data-parallel, the rest on rank 0."""
    root, config = tiny_run
    run = tmp_path / "run2"
    _run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            "2",
            "recipes/honesty.py",
            "--config",
            str(config),
            "--run_dir",
            str(run),
            "--output_dir",
            str(run / "trainer"),
            "--tune_targets",
            "toward",
            "--token_baselines",
            "false",
            "--tradeoff_items",
            str(ROOT / "tests/fixtures/eval/mmlu.jsonl"),
            # without it each CPU process takes itself for the only one (RepTuneTrainer refuses)
            "--use_cpu",
            "true",
        ]
    )
    assert (run / "adapter/adapter_model.safetensors").is_file()
    assert (run / "report/report.json").is_file() and (run / "README.md").is_file()
    marker = json.loads((run / "stages/tune_honest.json").read_text())
    assert marker["result"]["steps"] == 3


@pytest.mark.slow
def test_main_job_reduced_on_the_embedded_model(tmp_path):
    """The README's main job, cut down, on the real SmolLM2-135M-Instruct."""
    pytest.importorskip("gguf")
    try:
        from reptune.models import embedded_model_file

        embedded_model_file("smollm2-135m")
    except (ImportError, FileNotFoundError, ValueError) as err:
        pytest.skip(f"embedded model not installed: {err}")
    run = tmp_path / "run"
    config = yaml.safe_load((RECIPES / "honesty/smollm2-135m.yaml").read_text())
    config.update(
        run_dir=str(run),
        output_dir=str(run / "trainer"),
        context_dev_size=6,
        context_test_size=6,
        context_new_tokens=6,
        context_variants=["honest"],
        extract_layers=[8, 10],
        sweep_coefficients=[-0.25, 0.25],
        robustness_coefficients=[],
        max_steps=2,
    )
    config["behaviour_section"].update(
        layers=[10],
        coefficients=[0.2],
        dev_prompts=2,
        test_prompts=3,
        new_tokens=6,
        train_prompts=8,
        row_tokens=8,
        sft_steps=2,
        cosine_steps=2,
        steer_steps=2,
        prompt_steps=2,
        learned_steps=2,
        robustness_prompts=2,
        select_every=1,
    )
    reduced = tmp_path / "reduced.yaml"
    reduced.write_text(yaml.safe_dump(config))
    _run([sys.executable, "recipes/honesty.py", "--config", str(reduced)], timeout=900)
    report = json.loads((run / "report/report.json").read_text())
    card = (run / "README.md").read_text()
    for name, metric in report["metrics"].items():
        if metric["value"] is not None:
            assert json.dumps(metric["value"]) in card, name
    assert "context_honest_rate/base/none" in report["metrics"]
    for name, metric in report["metrics"].items():  # every headline number has its interval
        assert metric["ci_low"] <= metric["value"] <= metric["ci_high"], name
    assert any(name.startswith("sentiment/") for name in report["metrics"])
    from peft import PeftModel

    from reptune.models import load_model
    from reptune.vectors import SteeringVectors

    base, tok = load_model("embedded:smollm2-135m")
    vecs = SteeringVectors.load(run / "vectors", model=base)
    assert vecs.layers == [8, 10]
    batch = tok(["Is the sky green?"], return_tensors="pt")
    with torch.no_grad():
        before = base(**batch).logits
        after = PeftModel.from_pretrained(base, str(run / "adapter")).eval()(**batch).logits
    assert not torch.allclose(before, after)
