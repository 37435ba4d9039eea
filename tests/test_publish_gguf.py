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
    norms = {layer: 10.0 + layer for layer in layers}
    meta = {"model_type": model_type, "num_layers": 8, "residual_norms": norms}
    return SteeringVectors(vecs, meta)


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
    assert _field(reader, "controlvector.coefficient_unit") == "residual_norm"
    for tensor in reader.tensors:
        assert tensor.tensor_type == GGMLQuantizationType.F32
        assert list(tensor.shape) == [24]
        layer = int(tensor.name.split(".")[1])
        # What coefficient 1 adds: the vector rescaled to the layer's median residual norm.
        expected = vecs[layer] * (10.0 + layer) / vecs[layer].norm()
        np.testing.assert_allclose(np.asarray(tensor.data), expected.numpy(), rtol=1e-6)
        assert np.linalg.norm(np.asarray(tensor.data)) == pytest.approx(10.0 + layer, rel=1e-6)


def test_raw_unit_writes_the_stored_vectors(tmp_path):
    vecs = _vectors()
    reader = GGUFReader(export_control_vector(vecs, tmp_path / "cv.gguf", coefficient_unit="raw"))
    assert _field(reader, "controlvector.coefficient_unit") == "raw"
    for tensor in reader.tensors:
        layer = int(tensor.name.split(".")[1])
        np.testing.assert_array_equal(np.asarray(tensor.data), vecs[layer].numpy())


def test_vectors_without_residual_norms_need_the_raw_unit(tmp_path):
    bare = SteeringVectors({1: torch.ones(4)}, {"model_type": "llama"})
    with pytest.raises(ValueError, match="coefficient_unit='raw'"):
        export_control_vector(bare, tmp_path / "cv.gguf")
    assert not (tmp_path / "cv.gguf").exists()
    with pytest.raises(ValueError, match="unknown coefficient_unit"):
        export_control_vector(_vectors(), tmp_path / "cv.gguf", coefficient_unit="norm")


def test_load_control_vector_inverts_export(tmp_path):
    vecs = _vectors()
    back = load_control_vector(export_control_vector(vecs, tmp_path / "cv.gguf"))
    assert back.layers == vecs.layers and back.metadata["model_type"] == "llama"
    for layer in vecs.layers:
        torch.testing.assert_close(back.direction(layer), vecs.direction(layer))
    raw = load_control_vector(
        export_control_vector(vecs, tmp_path / "raw.gguf", coefficient_unit="raw")
    )
    assert raw.residual_norms == {}
    for layer in vecs.layers:
        assert torch.equal(raw[layer], vecs[layer])


def test_llama_cpp_scale_equals_the_steered_model_coefficient(tmp_path):
    """What SteeredModel(coefficient=c) adds to block N's output is c * direction.N, the shift
    llama.cpp applies for `--control-vector-scaled FILE:c` (checked against llama.cpp itself by
    scripts/check_llamacpp.sh)."""
    from conftest import make_model

    from reptune.steering import SteeredModel

    model = make_model("llama", n_layers=4, hidden=24)
    vecs = _vectors(layers=(2,))
    vecs.metadata["num_layers"] = 4
    reader = GGUFReader(export_control_vector(vecs, tmp_path / "cv.gguf"))
    direction = torch.from_numpy(np.array(reader.tensors[0].data, dtype=np.float32))
    outputs = []

    def record(module, args, kwargs):
        # Block 3's input is block 2's output after every hook on block 2 (steering's too).
        outputs.append(kwargs["hidden_states"] if "hidden_states" in kwargs else args[0])

    handle = model.model.layers[3].register_forward_pre_hook(record, with_kwargs=True)
    try:
        ids = torch.tensor([[5, 9, 17, 33, 2]])
        with torch.no_grad():
            model(input_ids=ids)
            SteeredModel(model, vecs, layers=[2], coefficient=0.3)(input_ids=ids)
    finally:
        handle.remove()
    plain, steered = outputs
    torch.testing.assert_close(
        steered - plain, (0.3 * direction).expand_as(plain), atol=1e-5, rtol=0
    )


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
