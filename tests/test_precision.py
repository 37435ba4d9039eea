"""One place decides precision (the training config), and the launch checks."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from reptune.training import RepTuneConfig, check_precision
from reptune.training.launch import check_launch

ROOT = Path(__file__).resolve().parents[1]
ACCELERATE = sorted((ROOT / "recipes/accelerate").glob("*.yaml"))
RECIPES = sorted((ROOT / "recipes").glob("[hb]*/*.yaml"))


@pytest.fixture(autouse=True)
def no_launcher(monkeypatch):
    for key in (
        "ACCELERATE_MIXED_PRECISION",
        "ACCELERATE_USE_DEEPSPEED",
        "ACCELERATE_USE_FSDP",
        "ACCELERATE_DEEPSPEED_CONFIG_FILE",
        "WORLD_SIZE",
    ):
        monkeypatch.delenv(key, raising=False)


def args(bf16=False, fp16=False):
    return SimpleNamespace(bf16=bf16, fp16=fp16)


def test_training_config_decides_when_the_launch_leaves_it():
    assert check_precision(args()) == "no"
    assert check_precision(args(bf16=True)) == "bf16"
    assert check_precision(args(fp16=True), "run.yaml") == "fp16"


def test_launch_precision_that_the_config_does_not_ask_for_is_refused(monkeypatch):
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf16")
    assert check_precision(args(bf16=True)) == "bf16"  # they agree
    for cfg in (args(), args(fp16=True)):
        with pytest.raises(ValueError) as err:
            check_precision(cfg, ["--config", "recipes/x.yaml", "--seed", "1"])
        message = str(err.value)
        assert "\n" not in message
        assert "mixed_precision: bf16" in message and "recipes/x.yaml" in message
        assert 'mixed_precision: "no"' in message and "bf16: true" in message


def test_deepspeed_file_precision_must_be_auto_or_agree(monkeypatch, tmp_path):
    ds = tmp_path / "ds.json"
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    monkeypatch.setenv("ACCELERATE_DEEPSPEED_CONFIG_FILE", str(ds))
    ds.write_text(json.dumps({"bf16": {"enabled": "auto"}, "fp16": {"enabled": "auto"}}))
    assert check_precision(args(fp16=True)) == "fp16"
    ds.write_text(json.dumps({"bf16": {"enabled": True}}))
    assert check_precision(args(bf16=True)) == "bf16"
    with pytest.raises(ValueError, match=r"ds\.json sets bf16\.enabled: true.*\"auto\""):
        check_precision(args())


def test_fp16_on_float16_weights_needs_deepspeed(monkeypatch):
    with pytest.raises(ValueError, match="deepspeed_zero2.yaml"):
        check_precision(args(fp16=True), None, "float16", full_weights=True)
    check_precision(args(fp16=True), None, "float16", full_weights=False)  # LoRA: fp32 adapters
    check_precision(args(fp16=True), None, "float32", full_weights=True)
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    check_precision(args(fp16=True), None, "float16", full_weights=True)


def test_reptune_config_checks_before_transformers_reads_the_launch(monkeypatch, tmp_path):
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "fp16")
    with pytest.raises(ValueError, match="mixed_precision: fp16"):
        RepTuneConfig(output_dir=str(tmp_path), use_cpu=True)


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_shipped_recipe_config_works_under_every_shipped_file(recipe, monkeypatch):
    """The shipped combinations: fine, or refused up front (fp16 full fine-tuning of float16
    weights needs a DeepSpeed file)."""
    cfg = yaml.safe_load(recipe.read_text())
    train = args(bf16=cfg.get("bf16", False), fp16=cfg.get("fp16", False))
    full = cfg.get("finetune", "lora") != "lora"
    for launch in ACCELERATE:
        file = yaml.safe_load(launch.read_text())
        assert file["mixed_precision"] == "no", launch.name  # the recipe config decides
        deepspeed = file["distributed_type"] == "DEEPSPEED"
        monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", file["mixed_precision"])
        monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", str(deepspeed).lower())
        refused = train.fp16 and full and cfg.get("dtype") == "float16" and not deepspeed
        if refused:
            with pytest.raises(ValueError, match=recipe.name):
                check_precision(train, recipe, cfg.get("dtype"), full)
        else:
            check_precision(train, recipe, cfg.get("dtype"), full)


def test_process_count_mismatch_is_refused():
    ok = SimpleNamespace(world_size=2, use_cpu=True, deepspeed=None)
    check_launch(ok, False, {"WORLD_SIZE": "2"})
    alone = SimpleNamespace(world_size=1, use_cpu=False, deepspeed={"zero_optimization": {}})
    with pytest.raises(ValueError, match="2 processes were launched.*see 1") as err:
        check_launch(alone, False, {"WORLD_SIZE": "2"})
    assert "accelerate launch --config_file recipes/accelerate/deepspeed_zero2.yaml" in str(
        err.value
    )


def test_fsdp_launch_without_fsdp_is_refused():
    plain = SimpleNamespace(world_size=2, use_cpu=True, deepspeed=None)
    with pytest.raises(ValueError, match="not FSDP|did not turn it on"):
        check_launch(plain, False, {"WORLD_SIZE": "2", "ACCELERATE_USE_FSDP": "true"})
    check_launch(plain, True, {"WORLD_SIZE": "2", "ACCELERATE_USE_FSDP": "true"})


def test_whole_model_loading_lifts_zero3_loading_and_restores_it():
    from transformers.integrations import (
        HfDeepSpeedConfig,
        is_deepspeed_zero3_enabled,
        unset_hf_deepspeed_config,
    )

    from reptune.training.launch import whole_model_loading

    keep = HfDeepSpeedConfig({"zero_optimization": {"stage": 3}})  # what a ZeRO-3 launch sets
    try:
        assert is_deepspeed_zero3_enabled()
        with whole_model_loading():
            assert not is_deepspeed_zero3_enabled()  # from_pretrained loads whole here
        assert is_deepspeed_zero3_enabled()
        with pytest.raises(RuntimeError), whole_model_loading():
            raise RuntimeError("a failing load")
        assert is_deepspeed_zero3_enabled()  # restored on error too
    finally:
        unset_hf_deepspeed_config()
        del keep


def test_single_cpu_process_from_accelerate_gets_every_core(monkeypatch):
    import os

    import torch

    from reptune.training.launch import use_all_cores

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    before = torch.get_num_threads()
    try:
        launched = {"OMP_NUM_THREADS": "1", "ACCELERATE_DYNAMO_BACKEND": "NO"}
        cores = len(os.sched_getaffinity(0))
        assert use_all_cores(launched) == cores
        assert torch.get_num_threads() == cores
        # Launches that chose their threads, or several processes, are left as asked.
        assert use_all_cores({"OMP_NUM_THREADS": "1"}) is None
        assert use_all_cores({**launched, "WORLD_SIZE": "2"}) is None
        assert use_all_cores({**launched, "OMP_NUM_THREADS": "3"}) is None
        assert use_all_cores({"REPTUNE_NUM_THREADS": "1"}) == 1
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
