"""Steering vectors as a llama.cpp control vector (GGUF).

The file holds one 1-D float32 tensor ``direction.N`` per layer plus the metadata llama.cpp's own
generator and repeng write: ``general.architecture = "controlvector"``,
``controlvector.model_hint`` (the model architecture, e.g. ``"llama"``) and
``controlvector.layer_count`` (the number of direction tensors).

Layer numbering. llama.cpp's loader (``common_control_vector_load_one`` in ``common/common.cpp``)
parses N from ``direction.N``, rejects N = 0 ("invalid (zero) direction tensor layer index") and
stores tensor N at slot N; the graph builders add slot ``il`` right after the residual add that
ends block ``il`` of their 0-based layer loop (``cur = build_cvec(cur, il); cb(cur, "l_out", il)``).
So ``direction.N`` is added to the output of block N, counted from 0: exactly reptune's layer N.
The names start at 1 only because block 0's output cannot be steered in llama.cpp. repeng writes
the same mapping (``direction.{layer}`` for its 0-based ``model.layers[layer]``). reptune
therefore keeps the index unchanged and refuses layer 0 instead of shifting it.

Scale. ``direction.N`` is ``vectors.direction(N, coefficient_unit)``: what reptune's coefficient 1
adds at layer N. With the default unit (``residual_norm``) the vector is rescaled to the layer's
median residual norm, so ``--control-vector-scaled FILE:0.1`` in llama.cpp adds what
``SteeredModel(model, vectors, coefficient=0.1)`` adds. The unit is recorded as
``controlvector.coefficient_unit``.

llama.cpp ignores the metadata and sums every ``direction.N`` it finds, scaled by the strength
given with ``--control-vector-scaled FILE:STRENGTH``; ``--control-vector-layer-range START END``
restricts the layers.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

from ..io import atomic_write
from ..vectors import DEFAULT_COEFFICIENT_UNIT, SteeringVectors, check_coefficient_unit

__all__ = [
    "ARCH",
    "LLAMA_CPP_ARCH",
    "export_control_vector",
    "load_control_vector",
    "llama_cpp_hint",
]

ARCH = "controlvector"

#: transformers ``model_type`` -> llama.cpp architecture name, where the two differ.
#: llama.cpp converts Mistral checkpoints to its ``llama`` architecture.
LLAMA_CPP_ARCH = {
    "gpt_neox": "gptneox",
    "gemma3_text": "gemma3",
    "qwen2_moe": "qwen2moe",
    "qwen3_moe": "qwen3moe",
    "mistral": "llama",
}


def _model_hint(vectors: SteeringVectors, model_hint: str | None) -> str:
    if model_hint:
        return model_hint
    model_type = vectors.metadata.get("model_type")
    if not model_type:
        raise ValueError(
            "the vectors' metadata names no model_type; pass model_hint (the llama.cpp "
            "architecture, e.g. 'llama')"
        )
    return LLAMA_CPP_ARCH.get(model_type, model_type)


def export_control_vector(
    vectors: SteeringVectors,
    path: str | Path,
    model_hint: str | None = None,
    *,
    layers: list[int] | None = None,
    coefficient_unit: str = DEFAULT_COEFFICIENT_UNIT,
) -> Path:
    """Write ``vectors`` to ``path`` as a llama.cpp control vector and return the path.

    ``direction.N`` holds ``vectors.direction(N, coefficient_unit)`` for reptune's layer N (the
    output of block N, 0-based), which is where llama.cpp adds it, so llama.cpp's scale equals
    reptune's coefficient in that unit. Layer 0 cannot be expressed (llama.cpp rejects
    ``direction.0``): pick other ``layers``. ``model_hint`` defaults to the llama.cpp name of the
    vectors' ``model_type``. The file is written to a temporary name and renamed into place.

    Example:
        >>> vecs = SteeringVectors.load("runs/honesty/vectors")
        >>> export_control_vector(vecs, "honesty.gguf", layers=[12, 13, 14])
        PosixPath('honesty.gguf')

    Then ``llama-completion -m model.gguf --control-vector-scaled honesty.gguf:0.1``, the same as
    ``SteeredModel(model, vecs, layers=[12, 13, 14], coefficient=0.1)``.
    """
    import gguf  # optional at import time: only this export needs it

    check_coefficient_unit(coefficient_unit)
    if layers is not None:
        vectors = vectors.select(layers)
    if 0 in vectors:
        raise ValueError(
            "layer 0 cannot be exported: llama.cpp never steers the output of block 0 and "
            "rejects a direction.0 tensor; choose other layers"
        )
    n_layers = vectors.metadata.get("num_layers")
    if n_layers is not None and max(vectors.layers) >= int(n_layers):
        raise ValueError(
            f"layers {vectors.layers} do not fit a model with {n_layers} decoder blocks"
        )
    hint = _model_hint(vectors, model_hint)
    # Checked (residual norms present, no zero vector) before the file is opened.
    directions = {layer: vectors.direction(layer, coefficient_unit) for layer in vectors.layers}
    path = Path(path)

    def write(tmp: str) -> None:
        writer = gguf.GGUFWriter(tmp, ARCH)
        writer.add_string(f"{ARCH}.model_hint", hint)
        # llama.cpp's generator writes layer_count as int32; its loader does not read it.
        writer.add_int32(f"{ARCH}.layer_count", len(vectors.layers))
        # reptune's own key: what a scale of 1 means (llama.cpp ignores unknown keys).
        writer.add_string(f"{ARCH}.coefficient_unit", coefficient_unit)
        for layer, direction in directions.items():
            data = direction.detach().to(device="cpu", dtype=torch.float32).numpy()
            writer.add_tensor(f"direction.{layer}", np.ascontiguousarray(data))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()

    atomic_write(path, write)
    return path


def llama_cpp_hint(path: str | Path, unit: str, coefficient: float | None = None) -> str:
    """A llama.cpp command line that steers with the control vector at ``path``.

    Example:
        >>> llama_cpp_hint("cv.gguf", "residual_norm")
        'llama-completion -m MODEL.gguf --control-vector-scaled cv.gguf:0.1'
    """
    if coefficient is None:
        coefficient = 0.1 if unit == DEFAULT_COEFFICIENT_UNIT else 4.0
    return f"llama-completion -m MODEL.gguf --control-vector-scaled {path}:{coefficient:g}"


def load_control_vector(path: str | Path) -> SteeringVectors:
    """Read a llama.cpp control vector back as :class:`SteeringVectors` (same layer numbers).

    A file written in the ``residual_norm`` unit comes back with ``residual_norms`` equal to the
    directions' norms, so ``SteeredModel(..., coefficient=c)`` adds what llama.cpp's scale ``c``
    adds.

    Example:
        >>> vecs = load_control_vector("honesty.gguf")
        >>> vecs.layers, vecs.metadata["model_type"]
        ([12, 13, 14], 'llama')
    """
    from gguf import GGUFReader

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"control vector {path} does not exist")
    try:
        reader = GGUFReader(path)
    except Exception as err:  # gguf raises plain ValueError/struct errors on bad files
        raise ValueError(f"{path} is not a GGUF file ({err})") from err
    arch = reader.get_field("general.architecture")
    if arch is None or arch.contents() != ARCH:
        warnings.warn(f"{path} does not declare architecture {ARCH!r}", stacklevel=2)
    hint = reader.get_field(f"{ARCH}.model_hint")
    vectors = {}
    for tensor in reader.tensors:
        prefix, _, index = tensor.name.partition(".")
        if prefix != "direction" or not index.isdigit():
            raise ValueError(f"{path} has a tensor {tensor.name!r} that is not direction.<layer>")
        vectors[int(index)] = torch.from_numpy(np.array(tensor.data, dtype=np.float32)).reshape(-1)
    metadata = {"model_type": hint.contents() if hint is not None else None}
    unit = reader.get_field(f"{ARCH}.coefficient_unit")
    vecs = SteeringVectors(vectors, metadata)
    if unit is not None and unit.contents() == DEFAULT_COEFFICIENT_UNIT:
        vecs = vecs.with_residual_norms({k: float(v.norm()) for k, v in vectors.items()})
    return vecs
