import json

import pytest
import torch
from conftest import make_model

from reptune.vectors import METADATA_FILE, VECTORS_FILE, SteeringVectors


def _vecs():
    return SteeringVectors(
        {1: torch.randn(32), 3: torch.randn(32)},
        {"model_name": "tiny", "method": "mean_diff", "diagnostics": {1: {"accuracy": 0.9}}},
    )


def test_round_trip_is_bit_identical(tmp_path):
    vecs = _vecs()
    vecs.save(tmp_path / "v")
    loaded = SteeringVectors.load(tmp_path / "v", model=make_model())
    assert loaded.layers == [1, 3]
    for layer in vecs.layers:
        assert torch.equal(loaded[layer], vecs[layer])
    assert loaded.metadata["model_name"] == "tiny"
    assert loaded.metadata["diagnostics"][1]["accuracy"] == 0.9
    assert not list((tmp_path / "v").glob("*.tmp"))


def test_wrong_model_is_a_clear_error(tmp_path):
    _vecs().save(tmp_path)
    with pytest.raises(ValueError, match="hidden size 32"):
        SteeringVectors.load(tmp_path, model=make_model(hidden=64))
    with pytest.raises(ValueError, match="only 2 decoder blocks"):
        SteeringVectors.load(tmp_path, model=make_model(n_layers=2))


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(FileNotFoundError, match=VECTORS_FILE):
        SteeringVectors.load(tmp_path)
    _vecs().save(tmp_path)
    (tmp_path / VECTORS_FILE).write_bytes(b"garbage")
    with pytest.raises(ValueError, match="corrupt"):
        SteeringVectors.load(tmp_path)
    _vecs().save(tmp_path)
    SteeringVectors({1: torch.zeros(32) + 1, 3: torch.ones(32)}).save(tmp_path / "other")
    (tmp_path / VECTORS_FILE).write_bytes((tmp_path / "other" / VECTORS_FILE).read_bytes())
    with pytest.raises(ValueError, match="checksum"):
        SteeringVectors.load(tmp_path)
    (tmp_path / METADATA_FILE).write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        SteeringVectors.load(tmp_path)


def test_failed_save_keeps_previous_files(tmp_path, monkeypatch):
    _vecs().save(tmp_path)
    before = (tmp_path / VECTORS_FILE).read_bytes()
    import reptune.vectors as module

    def crash(tensors, path):
        open(path, "wb").write(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(module, "save_file", crash)
    with pytest.raises(OSError):
        _vecs().save(tmp_path)
    assert (tmp_path / VECTORS_FILE).read_bytes() == before
    assert not list(tmp_path.glob(".*.tmp"))
    assert json.loads((tmp_path / METADATA_FILE).read_text())["layers"] == [1, 3]


def test_invalid_vectors():
    with pytest.raises(ValueError, match="NaN or inf"):
        SteeringVectors({0: torch.tensor([1.0, float("nan")])})
    with pytest.raises(ValueError, match="different sizes"):
        SteeringVectors({0: torch.ones(3), 1: torch.ones(4)})
    with pytest.raises(ValueError, match="at least one layer"):
        SteeringVectors({})
    with pytest.raises(ValueError, match="1-D"):
        SteeringVectors({0: torch.ones(2, 2)})


def test_residual_norm_unit_scales_the_unit_vector(tmp_path):
    vecs = _vecs().with_residual_norms({1: 8.0, 3: 2.0})
    direction = vecs.direction(1, "residual_norm")
    assert direction.norm() == pytest.approx(8.0)
    assert torch.allclose(direction / 8.0, vecs[1] / vecs[1].norm())
    assert torch.equal(vecs.direction(3, "raw"), vecs[3])
    vecs.save(tmp_path / "v")
    assert SteeringVectors.load(tmp_path / "v").residual_norms == {1: 8.0, 3: 2.0}


def test_residual_norm_unit_without_norms_is_a_clear_error():
    with pytest.raises(ValueError, match="coefficient_unit='raw'"):
        _vecs().direction(1, "residual_norm")
    with pytest.raises(ValueError, match="unknown coefficient_unit"):
        _vecs().direction(1, "percent")
    with pytest.raises(ValueError, match="positive"):
        _vecs().with_residual_norms({1: 0.0})


# Every floating dtype the constructor accepts, with the values that tell dtypes apart.
SAVED_DTYPES = [
    torch.float16,
    torch.bfloat16,
    torch.float32,
    torch.float64,
    torch.float8_e4m3fn,
    torch.float8_e5m2,
    *[
        getattr(torch, name)
        for name in ("float8_e4m3fnuz", "float8_e5m2fnuz", "float8_e8m0fnu")
        if hasattr(torch, name)
    ],
]


@pytest.mark.parametrize("dtype", SAVED_DTYPES, ids=str)
def test_every_accepted_dtype_round_trips_bit_exactly(dtype, tmp_path):
    g = torch.Generator().manual_seed(3)
    sign = 1.0 if dtype == getattr(torch, "float8_e8m0fnu", None) else -1.0  # e8m0: no sign
    values = torch.rand(16, generator=g) * 3 + 0.1
    vectors = {0: values.to(dtype), 5: (sign * values).to(dtype)}
    vecs = SteeringVectors(vectors, {"num_layers": 6})
    vecs.save(tmp_path / "v")
    back = SteeringVectors.load(tmp_path / "v")
    for layer in (0, 5):
        assert back[layer].dtype == dtype
        assert torch.equal(back[layer].view(torch.uint8), vecs[layer].view(torch.uint8))


def test_the_table_covers_every_floating_dtype_the_constructor_accepts():
    floating = {
        d
        for d in vars(torch).values()
        if isinstance(d, torch.dtype) and d.is_floating_point and not d.is_complex
    }
    accepted = set()
    for dtype in floating:
        try:
            SteeringVectors({0: torch.zeros(4).to(dtype)})
        except (TypeError, RuntimeError, NotImplementedError):
            continue
        accepted.add(dtype)
    assert accepted <= set(SAVED_DTYPES), sorted(map(str, accepted - set(SAVED_DTYPES)))
