"""Merged export: a plain transformers folder equal to the PEFT model, loadable without reptune."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
import torch
from conftest import make_model, make_tokenizer
from dist.rt_common import make_args, make_rows, random_vectors
from huggingface_hub import ModelCard
from peft import LoraConfig, PeftModel, PromptTuningConfig, get_peft_model
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

import reptune.publish.merged as merged_mod
from reptune.cli import main
from reptune.publish.merged import MERGE_INFO_FILE, export_merged, find_tuned_model
from reptune.training import RepTuneTrainer, freeze_except_layers
from reptune.vectors import SteeringVectors

HELD_OUT = ["a happy day is a good day", "Is the sea green? (A) True", "0123 the lazy fox"]
LORA_TARGETS = {"llama": ["q_proj", "v_proj", "down_proj"], "gpt2": ["c_attn", "c_proj"]}


def _save_base(folder, name="llama"):
    model = make_model(name, n_layers=4, hidden=32)
    model.save_pretrained(folder)
    make_tokenizer().save_pretrained(folder)
    return folder


def _load(folder):
    return AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32).eval()


def _logits(model, tok, texts=HELD_OUT):
    with torch.no_grad():
        return [model(**tok(t, return_tensors="pt")).logits for t in texts]


def _max_diff(a, b):
    return max(float((x - y).abs().max()) for x, y in zip(a, b))


def _adapter(tmp_path, name="llama", seed=3):
    """A LoRA adapter with random (non-zero) weights and the reptune files beside it."""
    base_dir = _save_base(tmp_path / f"base-{name}", name)
    torch.manual_seed(seed)
    config = LoraConfig(r=4, target_modules=LORA_TARGETS[name], init_lora_weights=False)
    peft_model = get_peft_model(_load(base_dir), config)
    folder = tmp_path / f"adapter-{name}"
    peft_model.save_pretrained(folder)
    vectors = SteeringVectors(
        random_vectors(32, [1, 2]).vectors,
        SteeringVectors.describe_model(peft_model) | {"method": "mean_diff"},
    )
    vectors.save(folder / "reptune_vectors")
    (folder / "reptune_config.json").write_text(json.dumps({"rep_target": "toward"}))
    return base_dir, folder


@pytest.mark.parametrize("name", ["llama", "gpt2"])
def test_merged_logits_equal_the_peft_model(tmp_path, name):
    base_dir, adapter = _adapter(tmp_path, name)
    out = export_merged(adapter, tmp_path / "merged")
    tok = make_tokenizer()
    peft_logits = _logits(PeftModel.from_pretrained(_load(base_dir), str(adapter)).eval(), tok)
    merged_logits = _logits(_load(out), tok)
    assert _max_diff(merged_logits, peft_logits) < 1e-5
    # The adapter matters: the comparison above could fail.
    assert _max_diff(_logits(_load(base_dir), tok), peft_logits) > 1e-3
    info = json.loads((out / MERGE_INFO_FILE).read_text())
    assert info["kind"] == "adapter" and info["max_abs_logit_diff"] < 1e-5


def test_merged_folder_is_plain_transformers(tmp_path):
    base_dir, adapter = _adapter(tmp_path)
    out = export_merged(adapter, tmp_path / "merged")
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "generation_config.json"} <= names
    assert {"tokenizer.json", "tokenizer_config.json", "README.md", MERGE_INFO_FILE} <= names
    assert not names & {"adapter_config.json", "adapter_model.safetensors", "training_args.bin"}
    assert not any(
        k.startswith("base_model.") or "lora" in k for k in load_file(out / "model.safetensors")
    )
    config = json.loads((out / "config.json").read_text())
    assert "auto_map" not in config and config["architectures"] == ["LlamaForCausalLM"]
    assert SteeringVectors.load(out / "reptune_vectors").layers == [1, 2]


def test_merged_model_costs_what_the_base_costs(tmp_path):
    """No hooks anywhere, and the same modules and parameters as the base model."""
    base_dir, adapter = _adapter(tmp_path)
    merged, base = _load(export_merged(adapter, tmp_path / "merged")), _load(base_dir)
    assert [(n, type(m)) for n, m in merged.named_modules()] == [
        (n, type(m)) for n, m in base.named_modules()
    ]
    assert [(n, p.shape) for n, p in merged.named_parameters()] == [
        (n, p.shape) for n, p in base.named_parameters()
    ]
    for module in merged.modules():
        assert not module._forward_hooks and not module._forward_pre_hooks
        assert not module._backward_hooks
    from torch.nn.modules import module as torch_module

    assert not torch_module._global_forward_hooks and not torch_module._global_forward_pre_hooks


def test_merged_model_loads_where_reptune_is_not_importable(tmp_path):
    base_dir, adapter = _adapter(tmp_path)
    out = export_merged(adapter, tmp_path / "merged")
    expected = _logits(
        PeftModel.from_pretrained(_load(base_dir), str(adapter)).eval(),
        make_tokenizer(),
        HELD_OUT[:1],
    )[0]
    child = textwrap.dedent(
        f"""
        import importlib.abc, sys

        class NoReptune(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name == "reptune" or name.startswith("reptune."):
                    raise ModuleNotFoundError("reptune is not installed here")

        sys.meta_path.insert(0, NoReptune())
        try:
            import reptune  # noqa: F401
        except ModuleNotFoundError:
            pass
        else:
            raise SystemExit("reptune was importable")
        import torch
        from safetensors.torch import save_file
        from transformers import AutoModelForCausalLM, AutoTokenizer

        model = AutoModelForCausalLM.from_pretrained({str(out)!r}, dtype=torch.float32).eval()
        tok = AutoTokenizer.from_pretrained({str(out)!r})
        with torch.no_grad():
            logits = model(**tok({HELD_OUT[0]!r}, return_tensors="pt")).logits
        assert not any(m.startswith("reptune") for m in sys.modules)
        save_file({{"logits": logits.contiguous()}}, {str(tmp_path / "child.safetensors")!r})
        """
    )
    env = {"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1", "HOME": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-I", "-c", child], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-2000:]
    got = load_file(tmp_path / "child.safetensors")["logits"]
    assert float((got - expected).abs().max()) < 1e-5


def test_trainer_run_folder_and_card(tmp_path):
    """The layout a run leaves: <run>/adapter from RepTuneTrainer.save_model, run settings."""
    base_dir = _save_base(tmp_path / "base")
    tok = make_tokenizer()
    model = get_peft_model(_load(base_dir), LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    run = tmp_path / "run"
    trainer = RepTuneTrainer(
        model,
        make_args(run / "adapter", rep_layers=[1, 2]),
        vectors=random_vectors(32, [1, 2]),
        train_dataset=make_rows(8),
        processing_class=tok,
    )
    trainer.train()
    trainer.save_model(str(run / "adapter"))
    (run / "reptune_config.json").write_text(json.dumps({"base_model": str(base_dir)}))
    assert find_tuned_model(run).folder == run / "adapter"

    out = export_merged(run, tmp_path / "merged")
    expected = _logits(PeftModel.from_pretrained(_load(base_dir), str(run / "adapter")), tok)
    assert _max_diff(_logits(_load(out), tok), expected) < 1e-5
    card = ModelCard.load(out / "README.md")
    assert card.data.library_name == "transformers" and card.data.pipeline_tag == "text-generation"
    assert {"reptune", "representation-tuning", "merged-lora"} <= set(card.data.tags)
    assert f"`{base_dir}`" in card.text and "`[1, 2]`" in card.text  # base, resolved_rep_layers
    assert "merge_and_unload" in card.text and "reptune_vectors/" in card.text


def test_selected_layer_fine_tuning_folder(tmp_path):
    tok = make_tokenizer()
    model = make_model("llama", n_layers=4, hidden=32)
    freeze_except_layers(model, [2])
    folder = tmp_path / "run" / "adapter"  # where a run keeps its fine-tuned model
    trainer = RepTuneTrainer(
        model,
        make_args(folder, rep_layers=[2], train_layers=[2]),
        vectors=random_vectors(32, [2]),
        train_dataset=make_rows(8),
        processing_class=tok,
    )
    trainer.train()
    trainer.save_model(str(folder))
    found = find_tuned_model(tmp_path / "run")
    assert found.kind == "model" and found.folder == folder
    out = export_merged(tmp_path / "run", tmp_path / "merged")
    assert _max_diff(_logits(_load(out), tok), _logits(model.eval(), tok)) < 1e-6
    assert "selected-layer-fine-tuning" in ModelCard.load(out / "README.md").data.tags
    assert not (out / "training_args.bin").exists()
    assert json.loads((out / "reptune_config.json").read_text())["train_layers"] == [2]


def test_export_is_atomic_and_replaces_the_folder_whole(tmp_path, monkeypatch):
    _, adapter = _adapter(tmp_path)
    out = export_merged(adapter, tmp_path / "merged")
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}

    def crash(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(merged_mod, "_write_card", crash)
    with pytest.raises(RuntimeError, match="disk full"):
        export_merged(adapter, out)
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []

    monkeypatch.undo()
    (out / "model-00002-of-00002.safetensors").write_bytes(b"stale shard")
    export_merged(adapter, out)
    assert not (out / "model-00002-of-00002.safetensors").exists()


def test_bad_input_fails_before_any_model_is_loaded(tmp_path, monkeypatch):
    def no_load(*args, **kwargs):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(merged_mod, "load_model", no_load)
    base_dir, adapter = _adapter(tmp_path)
    with pytest.raises(FileNotFoundError, match="neither"):
        export_merged(tmp_path / "base-llama" / "..", tmp_path / "out")
    with pytest.raises(FileNotFoundError, match="not a folder"):
        export_merged(tmp_path / "missing", tmp_path / "out")
    with pytest.raises(ValueError, match="would replace"):
        export_merged(adapter, adapter)
    with pytest.raises(ValueError, match="would replace"):
        export_merged(adapter, tmp_path)  # an ancestor of the adapter
    with pytest.raises(ValueError, match="would replace"):
        export_merged(adapter, adapter / "reptune_vectors")
    with pytest.raises(FileNotFoundError, match="--base_model"):
        export_merged(adapter, tmp_path / "out", base_model=str(tmp_path / "nowhere"))
    config = json.loads((adapter / "adapter_config.json").read_text())
    (adapter / "adapter_config.json").write_text(
        json.dumps(config | {"base_model_name_or_path": "/gone/model"})
    )
    with pytest.raises(FileNotFoundError, match="--base_model"):
        export_merged(adapter, tmp_path / "out")
    (adapter / "adapter_model.safetensors").rename(adapter / "adapter_model.bin")
    with pytest.raises(FileNotFoundError, match="safetensors"):
        export_merged(adapter, tmp_path / "out", base_model=str(base_dir))

    prompt = get_peft_model(
        _load(base_dir), PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=2)
    )
    prompt.save_pretrained(tmp_path / "prompt")
    with pytest.raises(ValueError, match="cannot be merged"):
        export_merged(tmp_path / "prompt", tmp_path / "out", base_model=str(base_dir))
    assert not (tmp_path / "out").exists()


def test_vectors_for_another_model_stop_the_merge(tmp_path):
    _, adapter = _adapter(tmp_path)
    SteeringVectors({1: torch.ones(48)}).save(adapter / "reptune_vectors")
    with pytest.raises(ValueError, match="hidden size"):
        export_merged(adapter, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_cli(tmp_path, capsys):
    base_dir, adapter = _adapter(tmp_path)
    out = tmp_path / "merged"
    assert (
        main(
            [
                "export-merged",
                str(adapter),
                "--output",
                str(out),
                "--base_model",
                str(base_dir),
                "--dtype",
                "float32",
            ]
        )
        == 0
    )
    assert capsys.readouterr().out.strip() == str(out)
    assert (out / "model.safetensors").is_file()
    assert main(["export-merged", str(adapter)]) == 2
    assert "--output is required" in capsys.readouterr().err
