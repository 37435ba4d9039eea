import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from dist.rt_common import (
    GradCapture,
    make_args,
    make_rows,
    make_tokenizer,
    random_vectors,
    tiny_model,
)
from safetensors.torch import load_file

from reptune.training import RepTuneTrainer

DIST = Path(__file__).parent / "dist"


def _one_step_grads(tmp_path, **ckpt):
    """Gradients of one step of the cosine loss alone (lm_weight 0)."""
    args = make_args(
        tmp_path,
        rep_layers=[1, 2],
        rep_positions="completion",
        lm_weight=0.0,
        retain_weight=0.5,
        retain_layers=[2],
        learning_rate=0.0,
        max_steps=1,
        **ckpt,
    )
    trainer = RepTuneTrainer(
        tiny_model(init_lora_weights=False),
        args,
        vectors=random_vectors(32, [1, 2]),
        train_dataset=make_rows(4),
        processing_class=make_tokenizer(),
    )
    capture = GradCapture()
    trainer.add_callback(capture)
    trainer.train()
    return capture.grads[0], trainer


@pytest.mark.parametrize("reentrant", [False, True])
def test_gradient_checkpointing_keeps_gradients_of_captured_activations(tmp_path, reentrant):
    plain, _ = _one_step_grads(tmp_path / "plain")
    ckpt, trainer = _one_step_grads(
        tmp_path / "ckpt",
        gradient_checkpointing=True,
        gradient_checkpointing_kwargs={"use_reentrant": reentrant},
    )
    blocks = trainer.model.base_model.model.model.layers
    assert all(block.gradient_checkpointing for block in blocks)  # it really was on
    # layers 0-2 feed the cosine/retain terms: their adapters must get those gradients
    reached = [n for n, g in ckpt.items() if g.abs().sum() > 0]
    assert any(".layers.0." in n for n in reached) and any(".layers.2." in n for n in reached)
    assert plain.keys() == ckpt.keys()
    for name in plain:
        torch.testing.assert_close(ckpt[name], plain[name], rtol=1e-5, atol=1e-6, msg=name)


def test_routing_refuses_reentrant_checkpointing(tmp_path):
    args = make_args(
        tmp_path,
        rep_layers=[1],
        train_layers=[1],
        rep_params="v_proj",
        gradient_checkpointing=True,
        gradient_checkpointing_kwargs={"use_reentrant": True},
    )
    with pytest.raises(ValueError, match="reentrant"):
        RepTuneTrainer(
            tiny_model(lora=False),
            args,
            vectors=random_vectors(32, [1]),
            train_dataset=make_rows(4),
            processing_class=make_tokenizer(),
        )


def test_vectors_stay_plain_tensors_outside_the_model(tmp_path):
    model = tiny_model()
    n_params = sum(1 for _ in model.parameters())
    n_buffers = sum(1 for _ in model.buffers())
    trainer = RepTuneTrainer(
        model,
        make_args(tmp_path, rep_layers=[1]),
        vectors=random_vectors(32, [1]),
        train_dataset=make_rows(4),
        processing_class=make_tokenizer(),
    )
    assert sum(1 for _ in model.parameters()) == n_params
    assert sum(1 for _ in model.buffers()) == n_buffers
    vec = trainer._vectors[1]
    assert type(vec) is torch.Tensor and not isinstance(vec, torch.nn.Parameter)
    assert not vec.requires_grad
    assert not any("vector" in k for k in model.state_dict())


def test_zero3_save_guard_refuses_only_full_models_without_16bit_gather():
    from reptune.training.trainer import RepTuneLossMixin

    def fake(model, config):
        plugin = SimpleNamespace(hf_ds_config=SimpleNamespace(config=config))
        state = SimpleNamespace(deepspeed_plugin=plugin)
        return SimpleNamespace(accelerator=SimpleNamespace(state=state), model=model)

    check = RepTuneLossMixin._check_zero3_save
    full, adapters = tiny_model(lora=False), tiny_model()
    stage3 = {"zero_optimization": {"stage": 3}}
    gathered = {
        "zero_optimization": {"stage": 3, "stage3_gather_16bit_weights_on_model_save": True}
    }
    with pytest.raises(ValueError, match="zero3_save_16bit_model"):
        check(fake(full, stage3))
    check(fake(full, gathered))
    # The Trainer gathers a PEFT model's adapter weights itself: a complete adapter either way
    # (tests/test_trainer_engines.py saves one under ZeRO-3 without the gather).
    check(fake(adapters, stage3))
    check(fake(full, {"zero_optimization": {"stage": 2}}))


def _run(cmd, cwd):
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "PYTHONPATH": os.pathsep.join(
            [str(DIST), str(DIST.parent), os.environ.get("PYTHONPATH", "")]
        ),
    }
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]


@pytest.mark.slow
@pytest.mark.parametrize(
    "objective, metrics",
    [
        ("cosine", ("rep_loss", "retain_loss", "cos_layer_1", "cos_layer_2")),
        ("steer", ("rep_loss", "steer_distance_layer_1", "steer_distance_layer_2")),
        ("prompt", ("rep_loss", "prompt_distance_layer_1", "prompt_distance_layer_2")),
        ("prompt+steer", ("rep_loss", "prompt_distance_layer_1", "prompt_distance_layer_2")),
    ],
)
def test_torchrun_two_processes_match_one_process(tmp_path, objective, metrics):
    """gloo DDP, 2 processes x 2 rows == 1 process x 4 rows, step by step."""
    script = str(DIST / "ddp_train.py")
    _run([sys.executable, script, str(tmp_path / "one"), "4", objective], tmp_path)
    _run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            "2",
            script,
            str(tmp_path / "two"),
            "2",
            objective,
        ],
        tmp_path,
    )
    one = json.loads((tmp_path / "one" / "logs.json").read_text())
    two = json.loads((tmp_path / "two" / "logs.json").read_text())
    assert (one["world_size"], two["world_size"]) == (1, 2)
    assert len(one["logs"]) == len(two["logs"]) == 3
    for a, b in zip(one["logs"], two["logs"]):
        for key in ("loss", "lm_loss", "grad_norm", *metrics):
            assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-6), (key, a, b)
    w1 = load_file(str(tmp_path / "one" / "adapter.safetensors"))
    w2 = load_file(str(tmp_path / "two" / "adapter.safetensors"))
    assert w1.keys() == w2.keys()
    for name in w1:
        torch.testing.assert_close(w2[name], w1[name], rtol=1e-4, atol=1e-5, msg=name)
