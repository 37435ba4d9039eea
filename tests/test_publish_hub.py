"""Hub upload, offline: HfApi.create_repo / upload_folder are patched and record their calls."""

from __future__ import annotations

import json
import os

import pytest
import torch
from huggingface_hub import HfApi, ModelCard
from huggingface_hub.utils import filter_repo_objects
from test_workflow_layout import CONFIG, make_run

from reptune.publish.hub import files_to_upload, push_run

SENTINEL = "hf_" + "S" * 34  # what HF_TOKEN holds during the tests: must never reach a file

EXPECTED = [
    "README.md",
    "adapter/adapter_config.json",
    "adapter/adapter_model.safetensors",
    "report/honest_rate.png",
    "report/report.json",
    "report/report.md",
    "reptune_config.json",
    "vectors/steering_vectors.json",
    "vectors/steering_vectors.safetensors",
]


@pytest.fixture
def hub(monkeypatch):
    """Patch the two HfApi methods push uses; any other Hub call would fail offline anyway."""
    calls = {"create_repo": [], "upload_folder": []}
    monkeypatch.setenv("HF_TOKEN", SENTINEL)

    def create_repo(self, repo_id, **kwargs):
        calls["create_repo"].append({"repo_id": repo_id, "token": self.token, **kwargs})

    def upload_folder(self, **kwargs):
        # What the real upload_folder would send: its own filter over every file in the folder.
        root = kwargs["folder_path"]
        every = [
            os.path.relpath(os.path.join(d, f), root).replace(os.sep, "/")
            for d, _, names in os.walk(root)
            for f in names
        ]
        kwargs["sent"] = sorted(filter_repo_objects(every, allow_patterns=kwargs["allow_patterns"]))
        calls["upload_folder"].append({"token": self.token, **kwargs})

    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    return calls


@pytest.fixture
def run_dir(tmp_path):
    run = make_run(tmp_path)
    # Things a training run leaves behind that must stay local.
    (run / "adapter" / "checkpoint-10").mkdir()
    (run / "adapter" / "checkpoint-10" / "adapter_model.safetensors").write_bytes(b"old")
    (run / "adapter" / "optimizer.pt").write_bytes(b"pickle")
    (run / "adapter" / "training_args.bin").write_bytes(b"pickle")
    (run / "vectors" / ".steering_vectors.json.x.tmp").write_text("partial")
    (run / "report" / "scratch.tmp").write_text("partial")
    (run / "notes.txt").write_text("not part of the run")
    (run / ".env").write_text("HF_TOKEN=whatever")
    return run


def _scan_for_token(folder) -> list[str]:
    return [
        str(p) for p in folder.rglob("*") if p.is_file() and SENTINEL.encode() in p.read_bytes()
    ]


def test_push_uploads_the_run_and_its_card(hub, run_dir):
    files = push_run(run_dir, "someone/tiny-honesty", private=True)
    assert files == EXPECTED
    (create,) = hub["create_repo"]
    assert create["repo_id"] == "someone/tiny-honesty"
    assert create["exist_ok"] is True and create["private"] is True
    (upload,) = hub["upload_folder"]
    assert upload["repo_id"] == "someone/tiny-honesty" and upload["repo_type"] == "model"
    assert upload["sent"] == EXPECTED
    # The card was written first (README.md was missing) and is reptune's.
    card = ModelCard.load(run_dir / "README.md")
    assert card.data.base_model == CONFIG["base_model"] and card.data.library_name == "peft"
    assert {"reptune", "representation-tuning"} <= set(card.data.tags)
    assert 'snapshot_download("someone/tiny-honesty")' in card.text


def test_token_is_left_to_huggingface_hub_and_never_written(hub, run_dir):
    push_run(run_dir, "someone/tiny-honesty")
    assert hub["create_repo"][0]["token"] is None and hub["upload_folder"][0]["token"] is None
    assert hub["create_repo"][0]["private"] is None  # not private: the owner's default applies
    assert _scan_for_token(run_dir) == []


def test_dry_run_uploads_and_writes_nothing(hub, run_dir, monkeypatch):
    monkeypatch.delenv("HF_TOKEN")
    before = sorted(p.name for p in run_dir.rglob("*"))
    files = push_run(run_dir, "someone/tiny-honesty", dry_run=True)
    assert files == EXPECTED  # README.md included: it would be generated
    assert hub["create_repo"] == [] and hub["upload_folder"] == []
    assert sorted(p.name for p in run_dir.rglob("*")) == before


def test_existing_card_is_kept(hub, run_dir):
    (run_dir / "README.md").write_text("---\ntags:\n- reptune\n---\nhand-edited card\n")
    push_run(run_dir, "someone/tiny-honesty")
    assert "hand-edited card" in (run_dir / "README.md").read_text()


def test_files_with_glob_characters_are_sent_exactly(hub, run_dir):
    (run_dir / "report" / "rate[gpt4].png").write_bytes(b"png")
    (run_dir / "report" / "rate4.png").write_bytes(b"png")
    files = push_run(run_dir, "someone/tiny-honesty")
    assert "report/rate[gpt4].png" in files
    assert hub["upload_folder"][0]["sent"] == files


def test_a_token_in_the_run_blocks_the_upload(hub, run_dir):
    config = dict(CONFIG, hub_token=SENTINEL)
    (run_dir / "reptune_config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="access token"):
        push_run(run_dir, "someone/tiny-honesty")
    assert hub["create_repo"] == [] and hub["upload_folder"] == []


def test_bad_run_folder_uploads_nothing(hub, tmp_path):
    with pytest.raises(FileNotFoundError):
        push_run(tmp_path, "someone/x")
    with pytest.raises(ValueError, match="repo_id"):
        push_run(tmp_path, "")
    assert hub["create_repo"] == [] and hub["upload_folder"] == []


def test_files_to_upload_skips_pickles_checkpoints_and_temp_files(run_dir):
    files = files_to_upload(run_dir)
    assert files == [f for f in EXPECTED if f != "README.md"]


def test_real_peft_adapter_then_card_then_push(hub, tmp_path):
    """The order a recipe uses: save_pretrained, vectors, card last; PEFT's own README stays in
    adapter/ and does not replace the run's card."""
    from conftest import make_model
    from peft import LoraConfig, get_peft_model

    from reptune.publish.card import write_model_card
    from reptune.publish.gguf_export import export_control_vector
    from reptune.vectors import SteeringVectors

    model = make_model("llama", n_layers=4, hidden=32)
    run = tmp_path / "run"
    peft_model = get_peft_model(model, LoraConfig(r=2, target_modules=["v_proj", "o_proj"]))
    peft_model.save_pretrained(run / "adapter")
    meta = SteeringVectors.describe_model(model)
    vectors = SteeringVectors({1: torch.randn(32), 2: torch.randn(32)}, meta)
    vectors.save(run / "vectors")
    export_control_vector(vectors, run / "control_vector.gguf", coefficient_unit="raw")
    write_model_card(run, base_model="someone/tiny-llama-base")

    files = push_run(run, "someone/tiny-rep")
    assert {
        "README.md",
        "adapter/adapter_config.json",
        "adapter/adapter_model.safetensors",
        "control_vector.gguf",
        "vectors/steering_vectors.safetensors",
    } <= set(files)
    assert hub["upload_folder"][0]["sent"] == files
    card = ModelCard.load(run / "README.md")
    assert card.data.base_model == "someone/tiny-llama-base"
    assert card.data.library_name == "peft" and "lora" in card.data.tags
    assert "`control_vector.gguf`" in card.text
    assert _scan_for_token(run) == []


def test_dry_run_also_refuses_a_token(hub, run_dir):
    (run_dir / "reptune_config.json").write_text(json.dumps(dict(CONFIG, hub_token=SENTINEL)))
    with pytest.raises(ValueError, match="access token"):
        push_run(run_dir, "someone/tiny-honesty", dry_run=True)


def test_bare_vectors_folder_is_pushed_as_a_vectors_repo(hub, run_dir):
    # The run's other files never go with it (the full test is in test_vector_hub.py).
    files = push_run(run_dir / "vectors", "someone/x")
    assert files == ["README.md", "steering_vectors.json", "steering_vectors.safetensors"]
    assert hub["upload_folder"][0]["sent"] == files
    assert "steering-vectors" in ModelCard.load(run_dir / "vectors" / "README.md").data.tags
