"""The honesty recipe under every shipped accelerate file that runs on CPU processes.

Each launch is ``accelerate launch --config_file recipes/accelerate/<file> [--num_processes 2]
recipes/honesty.py --config tiny.yaml --use_cpu true``: the shipped file as it is, only the
process count and the CPU overridden on the command line. The tiny config turns the slow stages
off (second behaviour, perplexity, trade-off, token baselines). The recipe config decides
precision (here float32); the files say ``mixed_precision: "no"``.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import make_model, make_tokenizer

ROOT = Path(__file__).resolve().parents[1]
ACCELERATE = ROOT / "recipes" / "accelerate"

# file -> processes; every shipped file is either here or in GPU_ONLY.
LAUNCHES = {
    "single_gpu.yaml": 1,
    "multi_gpu.yaml": 2,
    "deepspeed_zero2.yaml": 2,
    "deepspeed_zero3.yaml": 2,
    "deepspeed_zero3_offload.yaml": 2,
}
GPU_ONLY = {
    # accelerate turns FSDP on only for GPUs; on CPU processes RepTuneTrainer refuses the DDP it
    # would fall back to. tests/test_trainer_engines.py runs FSDP2 on CPU through a test patch.
    "fsdp2.yaml": "FSDP on CPU processes is not FSDP",
}


def test_every_shipped_launch_file_is_covered():
    shipped = {p.name for p in ACCELERATE.glob("*.yaml")}
    assert shipped == set(LAUNCHES) | set(GPU_ONLY)


@pytest.fixture(scope="module")
def tiny_config(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("launch")
    make_model("llama", n_layers=4, hidden=32, context=512).save_pretrained(root / "tiny")
    make_tokenizer(pad=True).save_pretrained(root / "tiny")
    config = {
        "model": str(root / "tiny"),
        "claims_limit": 24,
        "num_rep_layers": 2,
        "sweep_coefficients": [-1, 0, 1],
        "robustness_coefficients": [1],
        "select_every": 2,
        "perplexity_text": None,
        "tune_targets": ["toward"],
        "token_baselines": False,
        "lora_target_modules": ["q_proj", "v_proj"],
        "rep_positions": "-3",
        "learning_rate": 0.01,
        "max_steps": 2,
        "per_device_train_batch_size": 2,
        "logging_steps": 1,
        "save_strategy": "no",
        "report_to": [],
    }
    path = root / "tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _launch(file: str, processes: int, config: Path, run: Path, *extra: str):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    env.update(CUDA_VISIBLE_DEVICES="", DS_ACCELERATOR="cpu")
    for key in [k for k in env if k.startswith("ACCELERATE_")]:
        env.pop(key)
    cmd = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        str(ACCELERATE / file),
        *(["--num_processes", str(processes)] if processes > 1 else []),
        *extra,
        "recipes/honesty.py",
        "--config",
        str(config),
        "--run_dir",
        str(run),
        "--output_dir",
        str(run / "trainer"),
        "--use_cpu",
        "true",
    ]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)


@pytest.mark.slow
@pytest.mark.parametrize("file", sorted(LAUNCHES))
def test_recipe_runs_under_shipped_launch_file(file, tiny_config, tmp_path):
    processes = LAUNCHES[file]
    proc = _launch(file, processes, tiny_config, tmp_path / "run")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    run = tmp_path / "run"
    assert (run / "adapter/adapter_model.safetensors").is_file()
    assert (run / "report/report.json").is_file()
    tuned = json.loads((run / "stages/tune_honest.json").read_text())["result"]
    assert tuned["steps"] == 2
    # The epoch reached tells how many processes shared the batches: 2 rows each.
    train_claims = json.loads((run / "stages/pairs.json").read_text())["result"]["train"]
    steps_per_epoch = math.ceil(2 * train_claims / (2 * processes))
    assert tuned["epoch"] == pytest.approx(2 / steps_per_epoch)


@pytest.mark.slow
def test_conflicting_precision_fails_before_loading_with_both_files_named(tiny_config, tmp_path):
    proc = _launch("single_gpu.yaml", 1, tiny_config, tmp_path / "run", "--mixed_precision", "bf16")
    assert proc.returncode != 0
    lines = [ln for ln in proc.stderr.splitlines() if "error:" in ln]
    assert len(lines) == 1, proc.stderr[-3000:]
    line = lines[0]
    assert "single_gpu.yaml" in line and str(tiny_config) in line, line
    assert "drop --mixed_precision" in line and "bf16: true" in line, line
    assert not (tmp_path / "run").exists()  # nothing ran, no model was loaded
