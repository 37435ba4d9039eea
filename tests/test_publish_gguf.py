"""llama.cpp control-vector export, read back with gguf.GGUFReader."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType, GGUFReader

from reptune.publish.gguf_export import export_control_vector, load_control_vector
from reptune.vectors import SteeringVectors


def _vectors(layers=(3, 5, 6), model_type="llama", hidden=24):
    gen = torch.Generator().manual_seed(1)
    vecs = {layer: torch.randn(hidden, generator=gen) for layer in layers}
    return SteeringVectors(vecs, {"model_type": model_type, "num_layers": 8})


def _field(reader, name):
    field = reader.get_field(name)
    assert field is not None, name
    return field.contents()


def test_round_trip_with_gguf_reader(tmp_path):
    vecs = _vectors()
    path = export_control_vector(vecs, tmp_path / "cv.gguf")
    reader = GGUFReader(path)
    assert _field(reader, "general.architecture") == "controlvector"
    assert _field(reader, "controlvector.model_hint") == "llama"
    assert _field(reader, "controlvector.layer_count") == 3
    # direction.N is reptune's layer N: llama.cpp adds it to the output of block N (0-based).
    assert sorted(t.name for t in reader.tensors) == ["direction.3", "direction.5", "direction.6"]
    for tensor in reader.tensors:
        assert tensor.tensor_type == GGMLQuantizationType.F32
        assert list(tensor.shape) == [24]
        layer = int(tensor.name.split(".")[1])
        np.testing.assert_array_equal(np.asarray(tensor.data), vecs[layer].numpy())


def test_load_control_vector_inverts_export(tmp_path):
    vecs = _vectors()
    back = load_control_vector(export_control_vector(vecs, tmp_path / "cv.gguf"))
    assert back.layers == vecs.layers and back.metadata["model_type"] == "llama"
    for layer in vecs.layers:
        assert torch.equal(back[layer], vecs[layer])


def test_half_precision_vectors_are_written_as_f32(tmp_path):
    vecs = _vectors().to(dtype=torch.bfloat16)
    reader = GGUFReader(export_control_vector(vecs, tmp_path / "cv.gguf"))
    assert {t.tensor_type for t in reader.tensors} == {GGMLQuantizationType.F32}


def test_layer_zero_is_refused_and_can_be_left_out(tmp_path):
    vecs = _vectors(layers=(0, 2))
    with pytest.raises(ValueError, match="layer 0"):
        export_control_vector(vecs, tmp_path / "cv.gguf")
    assert not (tmp_path / "cv.gguf").exists()
    reader = GGUFReader(export_control_vector(vecs, tmp_path / "cv.gguf", layers=[2]))
    assert [t.name for t in reader.tensors] == ["direction.2"]


def test_model_hint_uses_llama_cpp_names(tmp_path):
    reader = GGUFReader(export_control_vector(_vectors(model_type="gpt_neox"), tmp_path / "a.gguf"))
    assert _field(reader, "controlvector.model_hint") == "gptneox"
    path = export_control_vector(_vectors(), tmp_path / "b.gguf", model_hint="qwen2")
    assert _field(GGUFReader(path), "controlvector.model_hint") == "qwen2"
    bare = SteeringVectors({1: torch.ones(4)})
    with pytest.raises(ValueError, match="model_hint"):
        export_control_vector(bare, tmp_path / "c.gguf")


def test_layers_beyond_the_model_are_refused(tmp_path):
    with pytest.raises(ValueError, match="decoder blocks"):
        export_control_vector(_vectors(layers=(3, 8)), tmp_path / "cv.gguf")


def test_export_is_atomic(tmp_path):
    export_control_vector(_vectors(), tmp_path / "cv.gguf")
    assert [p.name for p in tmp_path.iterdir()] == ["cv.gguf"]
