"""Vectors on the Hub, offline: HfApi methods and snapshot_download are patched."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from conftest import make_model
from huggingface_hub import HfApi, ModelCard

import reptune.vector_files as vector_files
from reptune.cli import main
from reptune.publish.hub import push_run
from reptune.publish.vector_hub import (
    build_vector_card,
    check_vectors_fit,
    load_vectors,
    push_vectors_to_hub,
)
from reptune.vectors import SteeringVectors

REPO = "someone/tiny-sentiment-vectors"
VECTOR_FILES = ["README.md", "steering_vectors.json", "steering_vectors.safetensors"]


def _vectors(model=None, layers=(1, 2)) -> SteeringVectors:
    model = model if model is not None else make_model("llama", n_layers=4, hidden=32)
    gen = torch.Generator().manual_seed(0)
    meta = SteeringVectors.describe_model(model)
    meta.update(
        model_name="HuggingFaceTB/SmolLM2-135M-Instruct",
        model_revision="0123abc",
        method="mean_diff",
        position=-1,
        normalized=True,
        num_pairs=24,
        data_fingerprint="f" * 16,
        diagnostics={
            layer: {"accuracy": 0.5 + layer / 10, "explained_variance": 0.25, "pairs_used": 24}
            for layer in layers
        },
        residual_norms={layer: 10.0 * layer for layer in layers},
    )
    return SteeringVectors({k: torch.randn(32, generator=gen) for k in layers}, meta)


@pytest.fixture
def hub(monkeypatch, tmp_path):
    """Patched HfApi: uploads are copied to a fake repo folder that snapshot_download serves."""
    repo_root = tmp_path / "hub"
    calls = {"create_repo": [], "upload_folder": [], "snapshot_download": [], "root": repo_root}

    def create_repo(self, repo_id, **kwargs):
        calls["create_repo"].append({"repo_id": repo_id, "token": self.token, **kwargs})

    def upload_folder(self, *, repo_id, folder_path, allow_patterns, **kwargs):
        from huggingface_hub.utils import filter_repo_objects

        names = [p.name for p in sorted(Path(folder_path).iterdir())]
        sent = sorted(filter_repo_objects(names, allow_patterns=allow_patterns))
        dest = repo_root / repo_id
        dest.mkdir(parents=True, exist_ok=True)
        for name in sent:
            shutil.copy(f"{folder_path}/{name}", dest / name)
        calls["upload_folder"].append({"repo_id": repo_id, "sent": sent, **kwargs})
        return f"https://huggingface.co/{repo_id}/commit/abc"

    def snapshot_download(repo_id, **kwargs):
        calls["snapshot_download"].append({"repo_id": repo_id, **kwargs})
        return str(repo_root / repo_id)

    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    monkeypatch.setattr(vector_files, "snapshot_download", snapshot_download)
    return calls


def test_vector_card_records_what_a_user_needs(tmp_path):
    vecs = _vectors()
    path = tmp_path / "README.md"
    path.write_text(str(build_vector_card(vecs, repo_id=REPO)))
    card = ModelCard.load(path)
    assert card.data.base_model == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert card.data.library_name == "reptune"
    assert card.data.tags == ["reptune", "steering-vectors", "control-vector"]
    assert card.data.base_model_revision == "0123abc"
    assert card.data.steering_layers == [1, 2] and card.data.coefficient_unit == "residual_norm"
    text = card.text
    for needle in (
        "`0123abc`",
        "`LlamaForCausalLM`",
        "`mean_diff`",
        "`" + "f" * 16 + "`",
        "`residual_norm`",
        "| 2 | " + f"{float(vecs[2].norm()):.4g} | 20 | 0.7 | 0.25 |",  # per-layer row
        f'SteeringVectors.from_pretrained("{REPO}", model=model)',
        "--control-vector-scaled control_vector.gguf:0.1",
    ):
        assert needle in text, needle


def test_push_to_hub_uploads_the_vectors_and_their_card(hub):
    vecs = _vectors()
    url = push_vectors_to_hub(vecs, REPO, private=True)
    assert url.endswith("/commit/abc")
    (create,) = hub["create_repo"]
    assert create["repo_id"] == REPO and create["private"] is True and create["token"] is None
    (upload,) = hub["upload_folder"]
    assert upload["sent"] == VECTOR_FILES
    card = ModelCard.load(hub["root"] / REPO / "README.md")
    assert card.data.steering_layers == [1, 2]


def test_from_pretrained_round_trip_and_revision(hub, tmp_path):
    model = make_model("llama", n_layers=4, hidden=32)
    vecs = _vectors(model)
    push_vectors_to_hub(vecs, REPO)
    back = SteeringVectors.from_pretrained(REPO, revision="v1", model=model)
    (call,) = hub["snapshot_download"]
    assert call["repo_id"] == REPO and call["revision"] == "v1"
    assert "steering_vectors.safetensors" in call["allow_patterns"]
    assert not any(p.endswith((".bin", ".pt")) for p in call["allow_patterns"])
    assert back.layers == vecs.layers
    for layer in vecs.layers:
        assert torch.equal(back[layer], vecs[layer])
    assert back.residual_norms == vecs.residual_norms
    assert back.metadata["model_revision"] == "0123abc"


def test_loading_refuses_vectors_made_for_another_model(hub):
    llama = make_model("llama", n_layers=4, hidden=32)
    push_vectors_to_hub(_vectors(llama), REPO)
    others = {
        "model_type": make_model("gpt2", n_layers=4, hidden=32),
        "num_layers": make_model("llama", n_layers=6, hidden=32),
        "hidden_size": make_model("llama", n_layers=4, hidden=48),
    }
    for field, other in others.items():
        with pytest.raises(ValueError, match=f"made for another model.*{field}"):
            SteeringVectors.from_pretrained(REPO, model=other)
    check_vectors_fit(load_vectors(REPO), llama)  # the right model passes


def test_local_folder_and_run_layout(tmp_path):
    vecs = _vectors()
    vecs.save(tmp_path / "run" / "vectors")
    assert SteeringVectors.from_pretrained(tmp_path / "run").layers == [1, 2]
    assert SteeringVectors.from_pretrained(tmp_path / "run", subfolder="vectors").layers == [1, 2]
    with pytest.raises(FileNotFoundError, match="no steering vectors"):
        SteeringVectors.from_pretrained(tmp_path)
    with pytest.raises(FileNotFoundError, match="neither a local folder nor a Hub repo"):
        SteeringVectors.from_pretrained("./no/such/folder")


def test_reptune_push_handles_a_vectors_only_folder(hub, tmp_path, capsys):
    folder = tmp_path / "vecs"
    _vectors().save(folder)
    (folder / "notes.txt").write_text("stays local")
    assert push_run(folder, REPO, dry_run=True) == VECTOR_FILES
    assert not (folder / "README.md").exists() and hub["upload_folder"] == []

    assert main(["push", str(folder), "--repo_id", REPO]) == 0
    assert "uploaded 3 files" in capsys.readouterr().out
    (upload,) = hub["upload_folder"]
    assert upload["sent"] == VECTOR_FILES  # notes.txt stayed local
    card = ModelCard.load(folder / "README.md")
    assert "steering-vectors" in card.data.tags and card.data.library_name == "reptune"
    assert f"{REPO}" in card.text


def test_vectors_folder_push_refuses_a_token(hub, tmp_path, monkeypatch):
    folder = tmp_path / "vecs"
    vecs = _vectors()
    vecs.metadata["hub_token"] = "hf_" + "x" * 34
    vecs.save(folder)
    with pytest.raises(ValueError, match="access token"):
        push_run(folder, REPO)
    assert hub["upload_folder"] == []
    json.loads((folder / "steering_vectors.json").read_text())


def test_a_failed_download_names_the_repo_and_revision(monkeypatch):
    def offline(repo_id, **kwargs):
        raise OSError("no network")

    monkeypatch.setattr(vector_files, "snapshot_download", offline)
    with pytest.raises(FileNotFoundError, match="'runs/v' is not a local folder.*v2.*no network"):
        SteeringVectors.from_pretrained("runs/v", revision="v2")
