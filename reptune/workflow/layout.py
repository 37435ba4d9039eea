"""The run folder: one object that says where every output goes, used to write and to read.

A recipe's run folder::

    <run>/vectors/               steering vectors (safetensors + JSON)            required
    <run>/adapter/               the published tuned model (PEFT adapter or full weights)
    <run>/models/<name>/         the other tuned variants (baselines)
    <run>/data/                  splits and generated training rows
    <run>/report/                report.md, report.json, tables and plots
    <run>/stages/<name>.json     markers of finished stages (see reptune.workflow.stages)
    <run>/<section>/             a section's own folder of the same shape (e.g. behaviour/)
    <run>/reptune_config.json    the settings of the published model (the trainer's schema)
    <run>/README.md              the model card

:func:`load_run` reads such a folder, the output folder of ``reptune tune`` (an adapter or model
with ``reptune_config.json`` and ``reptune_vectors/``), or a bare ``SteeringVectors.save`` folder.
Every optional part may be missing; a part that is present but unreadable is an error, because
publishing a card built from half a report would misstate the results.

Example:
    >>> layout = RunLayout("runs/honesty")
    >>> vecs.save(layout.vectors_dir)
    >>> run = load_run("runs/honesty"); run.vectors.layers, run.has_adapter
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..io import read_json, recover_folder, write_json
from ..vectors import METADATA_FILE, VECTORS_FILE, SteeringVectors

__all__ = [
    "RunLayout",
    "RunFolder",
    "find_vectors_dir",
    "load_run",
    "VECTORS_DIR",
    "ADAPTER_DIR",
    "MODELS_DIR",
    "DATA_DIR",
    "REPORT_DIR",
    "STAGES_DIR",
    "CONFIG_FILE",
    "REPORT_FILE",
    "CARD_FILE",
    "TUNED_VECTORS_DIR",
    "write_run_config",
]

VECTORS_DIR = "vectors"
ADAPTER_DIR = "adapter"
MODELS_DIR = "models"
DATA_DIR = "data"
REPORT_DIR = "report"
STAGES_DIR = "stages"
CONFIG_FILE = "reptune_config.json"
REPORT_FILE = "report.json"
CARD_FILE = "README.md"
#: Where the trainer keeps the vectors inside a saved model (``reptune tune`` output).
TUNED_VECTORS_DIR = "reptune_vectors"


@dataclass(frozen=True)
class RunLayout:
    """The paths of a run folder (nothing is created until something is written there).

    Example:
        >>> layout = RunLayout("runs/honesty")
        >>> layout.model_dir("truth"), layout.section("behaviour").vectors_dir
    """

    root: Path

    def __init__(self, root: str | Path):
        object.__setattr__(self, "root", Path(root))

    @property
    def vectors_dir(self) -> Path:
        return self.root / VECTORS_DIR

    @property
    def adapter_dir(self) -> Path:
        return self.root / ADAPTER_DIR

    def model_dir(self, name: str) -> Path:
        """Where the tuned variant ``name`` is saved."""
        return self.root / MODELS_DIR / name

    def data_file(self, name: str) -> Path:
        return self.root / DATA_DIR / name

    @property
    def report_dir(self) -> Path:
        return self.root / REPORT_DIR

    @property
    def stages_dir(self) -> Path:
        return self.root / STAGES_DIR

    @property
    def config_file(self) -> Path:
        return self.root / CONFIG_FILE

    @property
    def card_file(self) -> Path:
        return self.root / CARD_FILE

    def section(self, name: str) -> RunLayout:
        """The layout of a section folder inside this run (same shape)."""
        return RunLayout(self.root / name)


@dataclass
class RunFolder:
    """The parts of a run folder that exist, already parsed.

    ``adapter_path`` is the folder holding the published tuned model (``<run>/adapter`` of a
    recipe run, or the folder itself for ``reptune tune`` output), None when there is none.

    Example:
        >>> run = load_run("runs/honesty")
        >>> run.vectors.layers, run.has_adapter, sorted(run.report.get("metrics", {}))
    """

    path: Path
    vectors: SteeringVectors
    config: dict[str, Any] = field(default_factory=dict)
    adapter_config: dict[str, Any] | None = None
    report: dict[str, Any] | None = None
    adapter_path: Path | None = None
    vectors_path: Path | None = None

    @property
    def has_adapter(self) -> bool:
        return self.adapter_config is not None

    @property
    def report_dir(self) -> Path:
        return self.path / REPORT_DIR

    @property
    def layout(self) -> RunLayout:
        return RunLayout(self.path)

    def relative(self, path: Path | None) -> str | None:
        """``path`` relative to the run folder (``"."`` for the folder itself)."""
        if path is None:
            return None
        rel = Path(path).relative_to(self.path).as_posix()
        return rel or "."


def find_vectors_dir(run_dir: str | Path) -> Path:
    """The folder holding the vectors of ``run_dir``: ``<run>/vectors``, the trainer's
    ``reptune_vectors/`` or ``run_dir`` itself.

    Example:
        >>> find_vectors_dir("runs/honesty")
        PosixPath('runs/honesty/vectors')
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"folder {run_dir} does not exist")
    for candidate in (run_dir / VECTORS_DIR, run_dir / TUNED_VECTORS_DIR, run_dir):
        recover_folder(candidate)
        if (candidate / METADATA_FILE).is_file() and (candidate / VECTORS_FILE).is_file():
            return candidate
    raise FileNotFoundError(
        f"{run_dir} is not a reptune run folder: {VECTORS_DIR}/{VECTORS_FILE} and "
        f"{VECTORS_DIR}/{METADATA_FILE} are missing (nor is it a `reptune tune` output with "
        f"{TUNED_VECTORS_DIR}/, or a folder written by SteeringVectors.save)"
    )


def _adapter_of(run_dir: Path) -> tuple[Path | None, dict | None]:
    """The published model folder and its PEFT (or model) config."""
    for folder in (run_dir / ADAPTER_DIR, run_dir):
        recover_folder(folder)
        peft = folder / "adapter_config.json"
        if peft.is_file():
            return folder, read_json(peft, "adapter (save it again with save_pretrained)")
        # Selected-layer fine-tuning saves a full model; it counts when reptune trained it.
        full = folder / "config.json"
        if full.is_file() and (folder / CONFIG_FILE).is_file():
            return folder, {"full_model": True, **read_json(full, "model config")}
    return None, None


def load_run(run_dir: str | Path) -> RunFolder:
    """Parse the run folder ``run_dir``; only the vectors are required.

    Example:
        >>> run = load_run("runs/honesty")
    """
    run_dir = recover_folder(Path(run_dir))
    vectors_dir = find_vectors_dir(run_dir)
    vectors = SteeringVectors.load(vectors_dir)
    config: dict[str, Any] = {}
    if (run_dir / CONFIG_FILE).is_file():
        config = read_json(run_dir / CONFIG_FILE, "run settings")
        if not isinstance(config, dict):
            raise ValueError(f"{run_dir / CONFIG_FILE} must hold a JSON object")
    adapter_path, adapter_config = _adapter_of(run_dir)
    report = None
    report_file = run_dir / REPORT_DIR / REPORT_FILE
    if report_file.is_file():
        report = read_json(report_file, "evaluation report")
        if not isinstance(report, dict):
            raise ValueError(f"{report_file} must hold a JSON object")
    return RunFolder(run_dir, vectors, config, adapter_config, report, adapter_path, vectors_dir)


def write_run_config(layout: RunLayout, source: Path | None = None, **extra) -> Path:
    """``<run>/reptune_config.json``: the published model's own settings file (the trainer's
    schema) plus ``extra`` (the dataset, the base model spec), so the card reads one schema
    whether it describes a run folder or a ``reptune tune`` output.

    Example:
        >>> write_run_config(RunLayout("runs/honesty"), dataset="reptune:honesty_claims.jsonl")
    """
    source = source or layout.adapter_dir
    settings = {}
    if (source / CONFIG_FILE).is_file():
        settings = read_json(source / CONFIG_FILE, "reptune settings of the published model")
    return write_json(layout.config_file, {**settings, **extra}, sort_keys=True)
