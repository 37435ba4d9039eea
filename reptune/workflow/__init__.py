"""The pipeline as library code: the run-folder layout, resumable stages, choices made on dev
data, training and loading tuned variants and measurements (the report is built by
:mod:`reptune.reporting.run_report`). The recipes in
``recipes/`` are configuration plus calls into this package, so every stage also runs from
Python after ``pip install reptune``.

Example:
    >>> from reptune.workflow import HonestyArguments, ModelArguments, StageRunner, run_honesty
    >>> stages = StageRunner("runs/honesty")
    >>> results = run_honesty(HonestyArguments(), ModelArguments(), RepTuneConfig("runs/t"), stages)
"""

from __future__ import annotations

from .._lazy import lazy_exports

# Loaded on first use: the layout is read by the card and CLI, which need no trainer.
__all__, __getattr__, __dir__ = lazy_exports(
    __name__,
    {
        ".args": ("FINETUNE_MODES", "ModelArguments", "RunArguments"),
        ".behaviour": ("VARIANTS", "BehaviourArguments", "run_behaviour"),
        ".honesty": ("VARIANT_NAMES", "HonestyArguments", "run_honesty"),
        ".layout": ("RunFolder", "RunLayout", "find_vectors_dir", "load_run"),
        ".measure": ("generate_condition", "perplexity_rows", "quality_rows", "target_cosines"),
        ".select": (
            "best_layer",
            "choose_best",
            "heldout_separation",
            "layer_window",
            "split_dev_test",
        ),
        ".stages": ("StageRunner", "settings_fingerprint"),
        ".variants": (
            "DevSelection",
            "load_variant",
            "prompted_rows",
            "steered_rows",
            "train_variant",
        ),
    },
    globals(),
)
