"""Resumable stages: each stage writes its outputs under the run folder and a marker with its
result; a rerun with the same settings skips finished stages.

A stage's settings include its upstream stages' settings, so a change reruns exactly what depends
on it. Before a stage runs again its old marker is removed: a crash half-way through then leaves
no marker claiming the stage finished, and every output it writes goes through
:mod:`reptune.io`, so each output folder or file is either the old complete one or the new one.

Under a multi-process launch the collectives pair by construction: each ``run`` call makes the
same two collectives on every rank, in the same order (the main process broadcasts whether the
stage is done, then its result or its error), no rank reads a marker another wrote, and a stage
that runs on the main process alone may not call a collective (one raises at once instead of
pairing with another rank's).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from accelerate import PartialState

from ..io import read_json, write_json

__all__ = ["StageRunner", "settings_fingerprint", "no_collectives"]

logger = logging.getLogger(__name__)

# torch.distributed calls that must pair across ranks (accelerate, DeepSpeed and FSDP call these).
COLLECTIVES = (
    "barrier",
    "monitored_barrier",
    "broadcast",
    "broadcast_object_list",
    "all_reduce",
    "reduce",
    "all_gather",
    "all_gather_object",
    "all_gather_into_tensor",
    "gather",
    "gather_object",
    "scatter",
    "reduce_scatter",
    "reduce_scatter_tensor",
    "all_to_all",
    "all_to_all_single",
)


@contextmanager
def no_collectives(stage: str) -> Iterator[None]:
    """Inside the block, a torch.distributed collective raises instead of running.

    A stage that runs on the main process alone must not call one: the other ranks would pair it
    with an unrelated collective of theirs and run on with the wrong data.

    Example:
        >>> with no_collectives("vectors"):
        ...     torch.distributed.barrier()
        Traceback (most recent call last):
        RuntimeError: stage 'vectors' runs on the main process alone ...
    """
    import torch.distributed as dist

    def refuse(name):
        def collective(*args, **kwargs):
            raise RuntimeError(
                f"stage {stage!r} runs on the main process alone but called the collective "
                f"torch.distributed.{name}: the other processes are not in it. Run the stage "
                "with main_process_only=False, or keep collectives out of it"
            )

        return collective

    saved = {name: getattr(dist, name) for name in COLLECTIVES if hasattr(dist, name)}
    for name in saved:
        setattr(dist, name, refuse(name))
    try:
        yield
    finally:
        for name, function in saved.items():
            setattr(dist, name, function)


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
        """Run ``fn`` unless ``name`` already finished with ``settings``; return its result.

        The main process decides whether the stage is done and every process follows it; a
        ``main_process_only`` stage's result (or error) reaches the others by broadcast.

        Example:
            >>> info = stages.run("vectors", extract_fn, settings={"layers": [10, 11]})
        """
        saved = self._share(self.done(name, settings) if self.state.is_main_process else None)
        if saved is not None:
            logger.info("stage %s: already complete, skipped", name)
            self.skipped.append(name)
            self.timings[name] = saved.get("seconds", 0.0)
            return saved["result"]
        start = time.perf_counter()
        if self.state.is_main_process and self.marker(name).exists():
            self.marker(name).unlink()  # no stale marker may outlive a crash of the rerun
        if main_process_only:
            outcome = self._run_on_main(name, fn, settings, start)
            if "error" in outcome:
                raise RuntimeError(f"stage {name!r} failed on the main process: {outcome['error']}")
            result = outcome["result"]
        else:
            result = fn()
            if self.state.is_main_process:
                self._write_marker(name, settings, result, start)
            self._share(None)  # every rank has finished the stage
        self.timings[name] = round(time.perf_counter() - start, 2)
        return result

    def _run_on_main(self, name: str, fn, settings, start) -> dict:
        outcome: dict = {}
        if self.state.is_main_process:
            try:
                if self.state.num_processes > 1:
                    with no_collectives(name):
                        result = fn()
                else:
                    result = fn()
                self._write_marker(name, settings, result, start)
                outcome = {"result": result}
            except Exception as err:
                if self.state.num_processes == 1:
                    raise
                self._share({"error": f"{type(err).__name__}: {err}"})  # release the others
                raise
        shared = self._share(outcome if self.state.is_main_process else None)
        return outcome if self.state.is_main_process else shared

    def _write_marker(self, name: str, settings, result, start) -> None:
        record = {
            "stage": name,
            "fingerprint": settings_fingerprint(settings),
            "seconds": round(time.perf_counter() - start, 2),
            "result": result,
        }
        write_json(self.marker(name), record)

    def _share(self, value: Any) -> Any:
        """``value`` of the main process, on every process (one broadcast on each rank)."""
        if self.state.num_processes == 1:
            return value
        from accelerate.utils import broadcast_object_list

        box = [value]
        broadcast_object_list(box, from_process=0)
        return box[0]

    def close(self) -> None:
        """Wait for every process, then end the process group of a multi-process launch (gloo
        can abort when the interpreter exits with the group alive)."""
        import torch

        self.state.wait_for_everyone()
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
