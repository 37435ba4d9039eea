"""DeepSpeed ZeRO-2/3 and FSDP2, 2 processes against 1, launched with the shipped accelerate files.

Each launch uses ``recipes/accelerate/<file>.yaml`` as shipped, overriding only the process count
(2 processes x 2 rows against 1 process x 4 rows: the same global batch). On a machine without
GPUs the processes run on CPU over gloo (DeepSpeed picks its CPU accelerator itself); FSDP2 needs
:mod:`cpu_fsdp` there, which the worker applies. Checked per test:

- every logged value of every step (loss, grad_norm, lm/rep/retain loss, each cos_layer) equals
  the 1-process run: relative 1e-4, absolute 1e-6 (float32 all-reduce order is the only
  difference);
- the saved adapter or weights equal the 1-process ones (relative and absolute 1e-4, against
  moves of up to 1e-2) and load back with ``from_pretrained``;
- the engine really shards (ZeRO-3: partitioned parameters with an empty local tensor; ZeRO-2: each
  rank holds part of the fp32 master weights; FSDP2: DTensor parameters, not DDP);
- resuming from a ZeRO-3 or FSDP2 checkpoint repeats the original run's later steps exactly.

The ZeRO-3 LoRA run also turns ``zero3_save_16bit_model`` off: the adapter must still be complete.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

pytestmark = pytest.mark.slow

# The workers live in tests/dist/ (pytest does not collect folders named dist).
DIST = Path(__file__).resolve().parent / "dist"
ROOT = DIST.parents[1]
ACCELERATE = ROOT / "recipes" / "accelerate"
WORKER = DIST / "engine_train.py"
LOG_KEYS = ("loss", "grad_norm", "lm_loss", "rep_loss", "retain_loss", "cos_layer_1", "cos_layer_2")
# DeepSpeed keeps parameters under 1e5 elements whole on every rank (its persistence threshold):
# hidden 320 gives matrices above it, so ZeRO-3 has something to partition.
HIDDEN = 320
GPU = torch.cuda.device_count() >= 2


def _env() -> dict:
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "PYTHONPATH": os.pathsep.join(
            [str(DIST), str(DIST.parent), str(ROOT), os.environ.get("PYTHONPATH", "")]
        ),
    }
    for key in list(env):  # a launcher's variables from an outer run must not leak in
        if key.startswith("ACCELERATE_") or key in (
            "RANK",
            "WORLD_SIZE",
            "LOCAL_RANK",
            "MASTER_ADDR",
            "MASTER_PORT",
        ):
            env.pop(key)
    if not GPU:
        env["CUDA_VISIBLE_DEVICES"] = ""
    return env


def _run(cmd, cwd) -> None:
    proc = subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]


def train(
    out: Path,
    model_dir: Path,
    variant: str,
    accelerate_file: str | None = None,
    steps: int = 3,
    resume: int = 0,
    flags: tuple[str, ...] = (),
) -> dict:
    """One process x 4 rows (``accelerate_file`` None) or 2 processes x 2 rows under the file
    (``flags``: more ``accelerate launch`` options)."""
    opts = [str(out), "--model", str(model_dir), "--variant", variant, "--steps", str(steps)]
    if resume:
        opts += ["--save_steps", str(resume), "--resume", str(resume)]
    if accelerate_file is None:
        cmd = [sys.executable, str(WORKER), *opts, "--batch", "4"]
    else:
        cmd = [
            sys.executable,
            "-m",
            "accelerate.commands.launch",
            "--config_file",
            str(ACCELERATE / accelerate_file),
            "--num_processes",
            "2",
            *flags,
            str(WORKER),
            *opts,
            "--batch",
            "2",
        ]
    _run(cmd, out.parent)
    return json.loads((out / "result.json").read_text())


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    from dist.rt_common import save_tiny_model

    return save_tiny_model(tmp_path_factory.mktemp("engines") / "tiny", hidden=HIDDEN)


@pytest.fixture(scope="module")
def reference(model_dir):
    """The 1-process runs, computed once per variant."""
    cache: dict = {}

    def get(variant: str, steps: int = 3, resume: int = 0) -> tuple[dict, Path]:
        key = (variant, steps, resume)
        if key not in cache:
            out = model_dir.parent / f"one-{variant}-{steps}-{resume}"
            cache[key] = (train(out, model_dir, variant, None, steps, resume), out)
        return cache[key]

    return get


def assert_same_steps(ref: list[dict], got: list[dict], after: int = 0) -> None:
    ref = [h for h in ref if h["step"] > after]
    got = [h for h in got if h["step"] > after]
    assert [h["step"] for h in got] == [h["step"] for h in ref] and ref
    for a, b in zip(ref, got):
        for key in LOG_KEYS:
            assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-6), (key, a["step"], a, b)


def assert_same_weights(ref_file: Path, got_file: Path, start_file: Path) -> None:
    """Same tensors as the reference, which training moved away from ``start_file``."""
    ref, got, start = (load_file(str(f)) for f in (ref_file, got_file, start_file))
    assert ref.keys() == got.keys() and ref
    moved = max((ref[n] - start[n]).abs().max().item() for n in ref if n in start)
    assert moved > 1e-3  # the comparison is not between two copies of the start
    for name in ref:
        assert got[name].shape == ref[name].shape, name
        # Adam turns a near-zero gradient element into a full step, so all-reduce rounding can
        # move an element by ~1% of the learning rate (5e-3): 1e-4 absolute.
        torch.testing.assert_close(got[name], ref[name], rtol=1e-4, atol=1e-4)


def assert_adapter_loads(model_dir: Path, adapter: Path, ref_adapter: Path) -> None:
    """The saved adapter loads onto the base model and gives the reference's logits."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    batch = {"input_ids": torch.tensor([[5, 17, 42, 99, 7]])}
    logits = []
    for folder in (adapter, ref_adapter):
        base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
        with torch.no_grad():
            logits.append(PeftModel.from_pretrained(base, folder).eval()(**batch).logits)
    torch.testing.assert_close(logits[0], logits[1], rtol=1e-4, atol=1e-5)


def test_zero2_selected_layers_with_retain_match_one_process(model_dir, reference, tmp_path):
    from transformers import AutoModelForCausalLM

    ref, ref_out = reference("layers")
    run = train(tmp_path / "z2", model_dir, "layers", "deepspeed_zero2.yaml")
    facts = run["facts"]
    assert (facts["world_size"], facts["zero_stage"]) == (2, 2)
    # ZeRO-2 partitions the optimizer: each rank keeps about half the fp32 master weights.
    assert facts["zero2_local_numel"] <= facts["trainable_numel"] // 2 + 2
    assert_same_steps(ref["logs"], run["logs"])
    assert_same_weights(
        ref_out / "final/model.safetensors",
        tmp_path / "z2/final/model.safetensors",
        model_dir / "model.safetensors",
    )
    AutoModelForCausalLM.from_pretrained(tmp_path / "z2/final")


def test_zero3_selected_layers_with_retain_match_one_process(model_dir, reference, tmp_path):
    from transformers import AutoModelForCausalLM

    ref, ref_out = reference("layers")
    run = train(tmp_path / "z3", model_dir, "layers", "deepspeed_zero3.yaml")
    facts = run["facts"]
    assert (facts["world_size"], facts["zero_stage"]) == (2, 3)
    assert facts["n_ds_partitioned"] > 0, facts  # local tensors of shape (0,)
    assert_same_steps(ref["logs"], run["logs"])
    saved = tmp_path / "z3/final"
    assert_same_weights(
        ref_out / "final/model.safetensors",
        saved / "model.safetensors",
        model_dir / "model.safetensors",
    )
    AutoModelForCausalLM.from_pretrained(saved)  # a complete checkpoint, not empty shards


def test_zero3_lora_matches_one_process_and_resumes(model_dir, reference, tmp_path):
    ref, ref_out = reference("lora", steps=4, resume=2)
    # Without the 16-bit gather: the Trainer still saves the complete adapter.
    off = ("--zero3_save_16bit_model", "false")
    run = train(tmp_path / "z3", model_dir, "lora", "deepspeed_zero3.yaml", 4, 2, off)
    facts = run["facts"]
    assert (facts["world_size"], facts["zero_stage"]) == (2, 3)
    assert facts["n_ds_partitioned"] > 0, facts
    assert facts["gather_16bit_on_save"] is False
    assert_same_steps(ref["logs"], run["logs"])
    assert_same_steps(run["logs"], run["resumed"], after=2)  # steps 3-4 again, from checkpoint-2
    for name in ("final", "resumed"):
        adapter = tmp_path / "z3" / name
        assert_same_weights(
            ref_out / "final/adapter_model.safetensors",
            adapter / "adapter_model.safetensors",
            model_dir / "adapter/adapter_model.safetensors",
        )
    assert_adapter_loads(model_dir, tmp_path / "z3/final", ref_out / "final")


def test_fsdp2_lora_matches_one_process_and_resumes(model_dir, reference, tmp_path):
    ref, ref_out = reference("lora", steps=4, resume=2)
    run = train(tmp_path / "f2", model_dir, "lora", "fsdp2.yaml", steps=4, resume=2)
    facts = run["facts"]
    # Really FSDP2: every parameter a DTensor, not a DDP replica.
    assert facts["is_fsdp_enabled"] and facts["distributed_type"] == "DistributedType.FSDP"
    assert facts["wrapper"] != "DistributedDataParallel"
    assert facts["n_dtensor"] == facts["n_params"] > 0, facts
    assert_same_steps(ref["logs"], run["logs"])
    assert_same_steps(run["logs"], run["resumed"], after=2)
    for name in ("final", "resumed"):
        adapter = tmp_path / "f2" / name
        assert_same_weights(
            ref_out / "final/adapter_model.safetensors",
            adapter / "adapter_model.safetensors",
            model_dir / "adapter/adapter_model.safetensors",
        )
    assert_adapter_loads(model_dir, tmp_path / "f2/final", ref_out / "final")


def test_trainingarguments_deepspeed_under_torchrun_on_cpu_needs_use_cpu(
    model_dir, reference, tmp_path
):
    """transformers' own route, ``TrainingArguments(deepspeed=ds.json)`` under torchrun: ZeRO-2
    matches 1 process, on CPU processes with ``use_cpu`` (the worker sets it there). Without it
    each CPU process would take itself for the only one: test_precision.py covers that refusal."""
    ds = tmp_path / "ds.json"
    zero = {"stage": 2}
    ds.write_text(
        json.dumps(
            {
                "zero_optimization": zero,
                "train_micro_batch_size_per_gpu": "auto",
                "train_batch_size": "auto",
                "gradient_accumulation_steps": "auto",
                "gradient_clipping": "auto",
            }
        )
    )
    ref, ref_out = reference("layers")
    out = tmp_path / "ta"
    opts = ["--model", str(model_dir), "--variant", "layers", "--steps", "3", "--batch", "2"]
    _run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            "2",
            str(WORKER),
            str(out),
            *opts,
            "--deepspeed_json",
            str(ds),
        ],
        tmp_path,
    )
    run = json.loads((out / "result.json").read_text())
    assert (run["facts"]["world_size"], run["facts"]["zero_stage"]) == (2, 2)
    assert_same_steps(ref["logs"], run["logs"])
