"""Read a run folder: the vectors (required) and whatever else the recipe left there.

A run folder looks like::

    <run>/vectors/steering_vectors.safetensors + steering_vectors.json   (required)
    <run>/adapter/adapter_config.json + adapter_model.safetensors        (optional)
    <run>/reptune_config.json                                            (optional)
    <run>/report/report.json + report.md + *.png                         (optional)

Every optional part may be missing; a part that is present but unreadable is an error, because
publishing a card built from half a report would misstate the results.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..vectors import METADATA_FILE, VECTORS_FILE, SteeringVectors

__all__ = [
    "RunFolder",
    "find_vectors_dir",
    "load_run",
    "VECTORS_DIR",
    "ADAPTER_DIR",
    "REPORT_DIR",
    "CONFIG_FILE",
    "REPORT_FILE",
    "CARD_FILE",
]

VECTORS_DIR = "vectors"
ADAPTER_DIR = "adapter"
REPORT_DIR = "report"
CONFIG_FILE = "reptune_config.json"
REPORT_FILE = "report.json"
CARD_FILE = "README.md"


@dataclass
class RunFolder:
    """The parts of a run folder that exist, already parsed.

    Example:
        >>> run = load_run("runs/honesty")
        >>> run.vectors.layers, run.has_adapter, sorted(run.report.get("metrics", {}))
    """

    path: Path
    vectors: SteeringVectors
    config: dict[str, Any] = field(default_factory=dict)
    adapter_config: dict[str, Any] | None = None
    report: dict[str, Any] | None = None

    @property
    def has_adapter(self) -> bool:
        return self.adapter_config is not None

    @property
    def report_dir(self) -> Path:
        return self.path / REPORT_DIR


def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON ({err}); rewrite the {what}") from err


def find_vectors_dir(run_dir: str | Path) -> Path:
    """The folder holding the vectors of ``run_dir``: ``<run>/vectors`` or ``run_dir`` itself.

    Example:
        >>> find_vectors_dir("runs/honesty")
        PosixPath('runs/honesty/vectors')
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"folder {run_dir} does not exist")
    for candidate in (run_dir / VECTORS_DIR, run_dir):
        if (candidate / METADATA_FILE).is_file() and (candidate / VECTORS_FILE).is_file():
            return candidate
    raise FileNotFoundError(
        f"{run_dir} is not a reptune run folder: {VECTORS_DIR}/{VECTORS_FILE} and "
        f"{VECTORS_DIR}/{METADATA_FILE} are missing"
    )


def load_run(run_dir: str | Path) -> RunFolder:
    """Parse the run folder ``run_dir``; only the vectors are required.

    A folder that holds the two vector files directly (a bare ``SteeringVectors.save`` folder) is
    accepted as a run with nothing else.

    Example:
        >>> run = load_run("runs/honesty")
    """
    run_dir = Path(run_dir)
    vectors = SteeringVectors.load(find_vectors_dir(run_dir))

    config: dict[str, Any] = {}
    if (run_dir / CONFIG_FILE).is_file():
        config = _read_json(run_dir / CONFIG_FILE, "run settings")
        if not isinstance(config, dict):
            raise ValueError(f"{run_dir / CONFIG_FILE} must hold a JSON object")

    adapter_config = None
    adapter_file = run_dir / ADAPTER_DIR / "adapter_config.json"
    if adapter_file.is_file():
        adapter_config = _read_json(adapter_file, "adapter (save it again with save_pretrained)")

    report = None
    report_file = run_dir / REPORT_DIR / REPORT_FILE
    if report_file.is_file():
        report = _read_json(report_file, "evaluation report")
        if not isinstance(report, dict):
            raise ValueError(f"{report_file} must hold a JSON object")
    return RunFolder(run_dir, vectors, config, adapter_config, report)
