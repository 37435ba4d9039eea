"""One compatibility check for every way vectors reach a model, and its override."""

from __future__ import annotations

import pytest
import torch
from conftest import make_model, make_tokenizer

from reptune import cli
from reptune.publish.vector_hub import load_vectors
from reptune.serve import ChatServer
from reptune.steering import SteeredModel
from reptune.training import RepTuneConfig, RepTuneTrainer
from reptune.vectors import SteeringVectors

ROWS = [{"prompt": "Hi", "completion": "Hello there"}] * 2


def _load(folder, model, **kw):
    return SteeringVectors.load(folder, model=model, **kw)


def _from_pretrained(folder, model, **kw):
    return SteeringVectors.from_pretrained(folder, model=model, **kw)


def _load_vectors(folder, model, **kw):
    return load_vectors(folder, model=model, **kw)


def _steered(folder, model, **kw):
    return SteeredModel(model, SteeringVectors.load(folder), coefficient_unit="raw", **kw)


def _server(folder, model, **kw):
    return ChatServer(model, make_tokenizer(), SteeringVectors.load(folder), **kw)


def _trainer(folder, model, allow_mismatch=False, tmp=None):
    args = RepTuneConfig(
        output_dir=str(folder.parent / "never"),
        rep_layers=[1],
        rep_positions="-1",
        allow_vector_mismatch=allow_mismatch,
        report_to=[],
    )
    return RepTuneTrainer(
        model,
        args,
        vectors=SteeringVectors.load(folder),
        train_dataset=ROWS,
        processing_class=make_tokenizer(pad=True),
    )


PATHS = [_load, _from_pretrained, _load_vectors, _steered, _server, _trainer]
# What the vectors record about the model they were made for, against a 4-block llama of width 32.
MISMATCHES = {
    "model_type": {"model_type": "qwen2"},
    "num_layers": {"num_layers": 24},
}


@pytest.fixture(scope="module")
def model():
    return make_model("llama", n_layers=4, hidden=32)


def _save(tmp_path, model, **recorded) -> str:
    meta = {**SteeringVectors.describe_model(model), "model_name": "elsewhere", **recorded}
    vecs = SteeringVectors({1: torch.ones(32), 2: torch.ones(32)}, meta)
    vecs = vecs.with_residual_norms({1: 1.0, 2: 1.0})
    vecs.save(tmp_path / "v")
    return tmp_path / "v"


@pytest.mark.parametrize("path", PATHS, ids=lambda f: f.__name__.strip("_"))
@pytest.mark.parametrize("field", MISMATCHES)
def test_every_path_refuses_the_same_mismatch_and_the_flag_overrides_it(
    path, field, model, tmp_path
):
    folder = _save(tmp_path, model, **MISMATCHES[field])
    with pytest.raises(ValueError, match=f"made for another model.*{field}.*allow_mismatch"):
        path(folder, model)
    path(folder, model, allow_mismatch=True)


@pytest.mark.parametrize("path", PATHS, ids=lambda f: f.__name__.strip("_"))
def test_every_path_accepts_matching_vectors(path, model, tmp_path):
    path(_save(tmp_path, model), model)


def test_width_and_missing_layers_are_refused_even_with_the_flag(model, tmp_path):
    wide = make_model("llama", n_layers=4, hidden=48)
    shallow = make_model("llama", n_layers=2, hidden=32)
    folder = _save(tmp_path, model)
    with pytest.raises(ValueError, match="hidden size 32.*no flag"):
        SteeringVectors.load(folder, model=wide, allow_mismatch=True)
    with pytest.raises(ValueError, match=r"layers \[2\].*only 2 decoder blocks"):
        SteeringVectors.load(folder, model=shallow, allow_mismatch=True)


def test_an_accepted_mismatch_travels_with_the_vectors(model, tmp_path):
    vecs = SteeringVectors.load(_save(tmp_path, model, model_type="qwen2"))
    with pytest.raises(ValueError, match="model_type"):
        vecs.check_compatible(model)
    vecs.check_compatible(model, allow_mismatch=True)
    vecs.check_compatible(model)  # the steering built on them now accepts the model
    other = make_model("gpt2", n_layers=4, hidden=32)
    with pytest.raises(ValueError, match="model_type"):
        vecs.check_compatible(other)  # acceptance is for that model only


def test_the_cli_refuses_then_accepts_with_the_flag(model, tmp_path, capsys):
    model.save_pretrained(tmp_path / "model")
    make_tokenizer().save_pretrained(tmp_path / "model")
    folder = _save(tmp_path, model, model_type="qwen2")
    argv = ["steer", "--model", str(tmp_path / "model"), "--vectors", str(folder)]
    argv += ["--prompt", "Hi", "--coefficient_unit", "raw", "--max_new_tokens", "2"]
    assert cli.main(argv) == 2
    assert "allow_vector_mismatch" in capsys.readouterr().err
    assert cli.main([*argv, "--allow_vector_mismatch"]) == 0
