"""reptune: find behaviour vectors, steer with them, and tune them into a model's weights.

Example:
    >>> from reptune import load_model, extract_vectors, SteeredModel
    >>> model, tok = load_model("embedded:smollm2-135m")
    >>> vecs = extract_vectors(model, tok, pairs, layers=range(6, 20))
    >>> steered = SteeredModel(model, vecs, layers=[12], coefficient=0.15)
"""

from .extract import (
    extract_vectors,
    layer_diagnostics,
    measure_residual_norms,
    read_activations,
)
from .hooks import AblateVector, AddVector, Recorder, forward_until, intervene, recording
from .layers import find_layers, num_layers, unwrap_model
from .models import DEFAULT_MODEL, load_model
from .pairs import ContrastivePair, load_caa_pairs, load_jsonl_pairs
from .steering import SteeredModel
from .vectors import SteeringVectors
from .version import __version__

# Loaded on first use: the trainer pulls in transformers.Trainer (seconds to import), the
# honesty behaviour the evaluation stack (scipy).
_LAZY = {
    "RepTuneConfig": "reptune.training",
    "RepTuneTrainer": "reptune.training",
    "learn_vectors": "reptune.training",
    "Claim": "reptune.behaviours.honesty",
    "claims_to_pairs": "reptune.behaviours.honesty",
    "filter_known_claims": "reptune.behaviours.honesty",
    "load_claims": "reptune.behaviours.honesty",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'reptune' has no attribute {name!r}")


__all__ = [
    "__version__",
    "DEFAULT_MODEL",
    "AblateVector",
    "AddVector",
    "Claim",
    "ContrastivePair",
    "Recorder",
    "RepTuneConfig",
    "RepTuneTrainer",
    "SteeredModel",
    "SteeringVectors",
    "claims_to_pairs",
    "extract_vectors",
    "filter_known_claims",
    "find_layers",
    "forward_until",
    "intervene",
    "layer_diagnostics",
    "learn_vectors",
    "load_model",
    "load_caa_pairs",
    "load_claims",
    "load_jsonl_pairs",
    "measure_residual_norms",
    "num_layers",
    "read_activations",
    "recording",
    "unwrap_model",
]
