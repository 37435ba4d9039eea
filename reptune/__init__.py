"""reptune: find behaviour vectors, steer with them, and tune them into a model's weights.

The front door holds the names to find (:func:`load_model`, :data:`DEFAULT_MODEL`, the pair
loaders, :func:`extract_vectors`), steer (:class:`SteeredModel`, :class:`SteeringVectors`), tune
(:class:`RepTuneConfig`, :class:`RepTuneTrainer`) and publish (:func:`write_model_card`,
:func:`push_run`). Everything else is reachable from its package: ``reptune.hooks``,
``reptune.behaviours``, ``reptune.evaluation``, ``reptune.analysis``, ``reptune.reporting``,
``reptune.workflow``, ``reptune.publish``.

Example:
    >>> from reptune import DEFAULT_MODEL, load_model, load_jsonl_pairs, extract_vectors
    >>> from reptune import SteeredModel
    >>> model, tok = load_model(DEFAULT_MODEL)  # "embedded:smollm2-135m"
    >>> pairs = load_jsonl_pairs("pairs.jsonl", tok)
    >>> vecs = extract_vectors(model, tok, pairs, layers=range(6, 20))
    >>> steered = SteeredModel(model, vecs, layers=[12], coefficient=0.15)
    >>> reptune.__version__
"""

from ._lazy import lazy_exports
from .extract import extract_vectors
from .models import DEFAULT_MODEL, load_model
from .pairs import ContrastivePair, load_caa_pairs, load_jsonl_pairs
from .steering import SteeredModel
from .vectors import SteeringVectors
from .version import __version__

__all__ = [
    "__version__",
    "DEFAULT_MODEL",
    "ContrastivePair",
    "RepTuneConfig",
    "RepTuneTrainer",
    "SteeredModel",
    "SteeringVectors",
    "extract_vectors",
    "learn_vectors",
    "load_caa_pairs",
    "load_jsonl_pairs",
    "load_model",
    "push_run",
    "write_model_card",
]

# Loaded on first use: the trainer pulls in transformers.Trainer (seconds to import), publishing
# the card and Hub code.
_, __getattr__, __dir__ = lazy_exports(
    __name__,
    {
        ".training": ("RepTuneConfig", "RepTuneTrainer", "learn_vectors"),
        ".publish": ("push_run", "write_model_card"),
    },
    globals(),
    eager=__all__,
)
