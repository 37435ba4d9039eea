"""The pipeline as library code: the run-folder layout, resumable stages, choices made on dev
data, training and loading tuned variants, measurements and the report. The recipes in
``recipes/`` are configuration plus calls into this package, so every stage also runs from
Python after ``pip install reptune``.

Example:
    >>> from reptune.workflow import HonestyArguments, ModelArguments, StageRunner, run_honesty
    >>> stages = StageRunner("runs/honesty")
    >>> results = run_honesty(HonestyArguments(), ModelArguments(), RepTuneConfig("runs/t"), stages)
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "args": ("FINETUNE_MODES", "ModelArguments", "RunArguments"),
    "behaviour": ("BEHAVIOURS", "VARIANTS", "BehaviourArguments", "run_behaviour"),
    "honesty": ("VARIANT_NAMES", "HonestyArguments", "run_honesty"),
    "layout": ("RunFolder", "RunLayout", "find_vectors_dir", "load_run"),
    "measure": ("generate_condition", "perplexity_rows", "quality_rows", "target_cosines"),
    "report": ("add_behaviour_section", "add_timings", "honesty_report"),
    "select": ("best_layer", "choose_best", "heldout_separation", "layer_window", "split_dev_test"),
    "stages": ("StageRunner", "settings_fingerprint"),
    "variants": ("DevSelection", "load_variant", "prompted_rows", "steered_rows", "train_variant"),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = sorted(_WHERE)


def __getattr__(name: str):
    # Loaded on first use: the layout is read by the card and CLI, which need no trainer.
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
