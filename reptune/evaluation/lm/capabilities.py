"""Capability benchmarks through lm-evaluation-harness, on a model already in memory.

The model (plain, PEFT-tuned, or a :class:`~reptune.steering.SteeredModel`, which steers the
wrapped model for the whole run) goes to ``lm_eval.models.huggingface.HFLM(pretrained=<model>)``
and then to ``lm_eval.simple_evaluate``. lm-eval is the optional ``eval`` extra
(``pip install reptune[eval]``); its standard tasks download their data when they run.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ...steering import SteeredModel

__all__ = ["require_lm_eval", "evaluate_capabilities", "capability_rows"]

# Bookkeeping fields lm-eval puts next to the metrics.
_NOT_METRICS = frozenset({"alias", "name", "sample_len", "sample_count", "samples"})
_INSTALL = "pip install 'reptune[eval]'  (or: pip install lm_eval>=0.4.13)"


def require_lm_eval():
    """Import ``lm_eval`` or raise an ImportError that says how to install it.

    Example:
        >>> lm_eval = require_lm_eval()
    """
    try:
        import lm_eval
    except ImportError as err:
        raise ImportError(f"capability evaluation needs lm-evaluation-harness: {_INSTALL}") from err
    return lm_eval


def evaluate_capabilities(
    model,
    tokenizer,
    tasks: Sequence[str],
    *,
    num_fewshot: int | None = None,
    limit: int | float | None = None,
    batch_size: int = 1,
    include_path: str | Path | Sequence[str | Path] | None = None,
    **kwargs: Any,
) -> dict[str, dict[str, Any]]:
    """Run lm-eval ``tasks`` on ``model`` in this process; returns ``{task: {metric: value}}``.

    ``include_path`` adds folders of task YAML files (local tasks); other keywords go to
    ``lm_eval.simple_evaluate`` (``apply_chat_template``, ``gen_kwargs``...).

    Example:
        >>> evaluate_capabilities(steered, tok, ["arc_easy"], limit=100)  # downloads the task
        {'arc_easy': {'acc,none': 0.61, 'acc_stderr,none': 0.049, ...}}
    """
    if not tasks:
        raise ValueError("name at least one lm-eval task")
    require_lm_eval()
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    # A SteeredModel steers the wrapped model in place for the run, so lm-eval sees a plain
    # transformers model and every forward/generate call it makes is steered.
    steering = model if isinstance(model, SteeredModel) else contextlib.nullcontext()
    inner = model.model if isinstance(model, SteeredModel) else model
    paths = None
    if include_path is not None:
        paths = [
            str(p)
            for p in ([include_path] if isinstance(include_path, (str, Path)) else include_path)
        ]
    with steering:
        lm = HFLM(pretrained=inner, tokenizer=tokenizer, batch_size=batch_size)
        out = simple_evaluate(
            model=lm,
            tasks=list(tasks),
            num_fewshot=num_fewshot,
            limit=limit,
            task_manager=TaskManager(include_path=paths),
            **kwargs,
        )
    if out is None:  # non-zero ranks in distributed runs
        return {}
    return {task: _plain(metrics) for task, metrics in out["results"].items()}


def _plain(metrics: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float, str)) or v is None}


def capability_rows(results: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One table row per (task, metric, filter) with its standard error.

    Example:
        >>> capability_rows({"arc_easy": {"acc,none": 0.6, "acc_stderr,none": 0.05}})
        [{'task': 'arc_easy', 'metric': 'acc', 'filter': 'none', 'value': 0.6, 'stderr': 0.05}]
    """
    rows = []
    for task, metrics in results.items():
        for key, value in metrics.items():
            name, _, filt = key.partition(",")
            if name.endswith("_stderr") or not isinstance(value, (int, float)):
                continue
            if isinstance(value, bool) or name in _NOT_METRICS:
                continue
            stderr = metrics.get(f"{name}_stderr,{filt}" if filt else f"{name}_stderr")
            if not isinstance(stderr, (int, float)) or (
                isinstance(stderr, float) and math.isnan(stderr)
            ):
                stderr = None
            rows.append(
                {
                    "task": task,
                    "metric": name,
                    "filter": filt or None,
                    "value": value,
                    "stderr": stderr,
                }
            )
    return rows
