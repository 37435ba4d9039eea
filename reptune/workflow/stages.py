"""Resumable stages: each stage writes its outputs under the run folder and a marker with its
result; a rerun with the same settings skips finished stages.

A stage's settings include its upstream stages' settings, so a change reruns exactly what depends
on it. Before a stage runs again its old marker is removed: a crash half-way through then leaves
no marker claiming the stage finished, and every output it writes goes through
:mod:`reptune.io`, so each output folder or file is either the old complete one or the new one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from accelerate import PartialState

from ..io import read_json, write_json

__all__ = ["StageRunner", "settings_fingerprint"]

logger = logging.getLogger(__name__)


def settings_fingerprint(settings: Any) -> str:
    """Short stable hash of JSON-able settings."""
    text = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class StageRunner:
    """Run named stages once; skip a stage whose marker matches its settings.

    ``main_process_only`` stages run on the main process while the others wait, and every process
    gets the result (read back from the marker). Training stages run on all processes.

    Example:
        >>> stages = StageRunner("runs/honesty")
        >>> vectors_info = stages.run("vectors", extract_fn, settings={"layers": [10, 11]})
    """

    def __init__(self, run_dir: str | Path, state: PartialState | None = None):
        from .layout import RunLayout

        self.run_dir = Path(run_dir)
        self.layout = RunLayout(self.run_dir)
        self.state = state or PartialState()
        self.marker_dir = self.layout.stages_dir
        self.timings: dict[str, float] = {}
        self.skipped: list[str] = []

    def marker(self, name: str) -> Path:
        return self.marker_dir / f"{name}.json"

    def done(self, name: str, settings: Any = None) -> dict | None:
        """The saved result of ``name`` if it finished with these settings, else None."""
        path = self.marker(name)
        if not path.is_file():
            return None
        saved = read_json(path, f"marker of stage {name!r} (delete it to rerun the stage)")
        if not isinstance(saved, dict) or saved.get("fingerprint") != settings_fingerprint(
            settings
        ):
            return None
        return saved

    def run(
        self,
        name: str,
        fn: Callable[[], Any],
        settings: Any = None,
        main_process_only: bool = True,
    ) -> Any:
        """Run ``fn`` unless ``name`` already finished with ``settings``; return its result."""
        saved = self.done(name, settings)
        if saved is not None:
            logger.info("stage %s: already complete, skipped", name)
            self.skipped.append(name)
            self.timings[name] = saved.get("seconds", 0.0)
            return saved["result"]
        start = time.perf_counter()
        result = None
        if self.state.is_main_process and self.marker(name).exists():
            self.marker(name).unlink()  # no stale marker may outlive a crash of the rerun
        if not main_process_only or self.state.is_main_process:
            result = fn()
            seconds = time.perf_counter() - start
            if self.state.is_main_process:
                record = {
                    "stage": name,
                    "fingerprint": settings_fingerprint(settings),
                    "seconds": round(seconds, 2),
                    "result": result,
                }
                write_json(self.marker(name), record)
        self.state.wait_for_everyone()
        if main_process_only and not self.state.is_main_process:
            result = read_json(self.marker(name), f"marker of stage {name!r}")["result"]
        self.timings[name] = round(time.perf_counter() - start, 2)
        return result

    def close(self) -> None:
        """Wait for every process, then end the process group of a multi-process launch (gloo
        can abort when the interpreter exits with the group alive)."""
        import torch

        self.state.wait_for_everyone()
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
