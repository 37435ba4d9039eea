"""An evaluation report: one Markdown file and one JSON file holding every table and plot.

``report.json`` is the input of the model card (:mod:`reptune.publish`)::

    {
      "title": str, "created": ISO time, "reptune_version": str,
      "model": {...},                       # what was evaluated (spec, adapter, steering...)
      "dataset": str (optional),            # the main evaluation set, when there is one
      "sections": [{"title", "text",
                    "tables": [{"name", "title", "description", "columns", "rows": [[...]],
                                "csv", "json"}],
                    "plots": ["plots/sweep.png", ...],      # relative to the report folder
                    "captions": ["...", ...]}],
      "metrics": {name: {"value", "ci_low", "ci_high", "n", "dataset"}}
    }

Every table is also written as ``tables/<name>.csv`` and ``tables/<name>.json`` (rows as objects).
The folder is written whole (:func:`reptune.io.atomic_folder`): a crash at any point leaves the
previous report, never new tables beside an old ``report.json``. Draw plots at
:meth:`Report.plot_path` so they arrive with the rest.
"""

from __future__ import annotations

import datetime as _dt
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..evaluation.stats import Rate
from ..io import atomic_folder, jsonable, write_json
from ..version import __version__
from .tables import columns_of, markdown_table, write_table

__all__ = ["REPORT_MD", "REPORT_JSON", "Section", "Report"]

REPORT_MD = "report.md"
REPORT_JSON = "report.json"


@dataclass
class Section:
    """A titled part of a report: prose, tables (lists of row dicts) and plots.

    Example:
        >>> sec = report.section("Honesty", "Honest-answer rates with Wilson 95% intervals.")
        >>> sec.add_table("honesty", rows)
        >>> sec.add_plot("plots/honesty.png", "Honest rate by condition")
    """

    title: str
    text: str = ""
    tables: list[dict[str, Any]] = field(default_factory=list)
    plots: list[tuple[Path, str]] = field(default_factory=list)

    def add_table(
        self,
        name: str,
        rows: Sequence[Mapping[str, Any]],
        title: str | None = None,
        description: str | None = None,
        columns: Sequence[str] | None = None,
    ) -> None:
        """A table; ``name`` (unique in the report) is the stem of its CSV/JSON files."""
        self.tables.append(
            {
                "name": name,
                "title": title or name,
                "description": description,
                "columns": list(columns or columns_of(rows)),
                "rows": [dict(r) for r in rows],
            }
        )

    def add_plot(self, path: str | Path, caption: str | None = None) -> None:
        """A PNG already written, preferably inside the report folder."""
        self.plots.append((Path(path), caption or Path(path).stem))


@dataclass
class Report:
    """Collect sections and headline metrics; :meth:`write` saves Markdown + JSON.

    Example:
        >>> report = Report("Honesty evaluation", model={"spec": "embedded:smollm2-135m"})
        >>> report.section("Honesty").add_table("honesty", [r.row() for r in results.values()])
        >>> report.add_rate("honest_rate/facts", results["honest"].target, dataset="facts")
        >>> report.write("runs/eval/report")
    """

    title: str
    model: dict[str, Any] = field(default_factory=dict)
    dataset: str | None = None
    sections: list[Section] = field(default_factory=list)
    metrics: dict[str, dict[str, Any]] = field(default_factory=dict)
    _staging: Any = field(default=None, init=False, repr=False, compare=False)

    def plot_path(self, name: str) -> Path:
        """A path to draw a plot at; :meth:`write` moves it to ``plots/<name>`` of the report.

        The plot reaches the report folder together with the tables and ``report.json``, so a
        crash never leaves new plots beside an old report.

        Example:
            >>> sec.add_plot(plot_sweep(rows, report.plot_path("sweep.png")), "Target rate")
        """
        if not name or Path(name).name != name:
            raise ValueError(f"plot name {name!r} must be a plain file name such as 'sweep.png'")
        if self._staging is None:
            self._staging = tempfile.TemporaryDirectory(prefix="reptune-report-")
        folder = Path(self._staging.name) / "plots"
        folder.mkdir(exist_ok=True)
        return folder / name

    def section(self, title: str, text: str = "") -> Section:
        """The section called ``title`` (created, with ``text``, on first use)."""
        for sec in self.sections:
            if sec.title == title:
                if text:
                    sec.text = f"{sec.text}\n\n{text}".strip()
                return sec
        sec = Section(title, text)
        self.sections.append(sec)
        return sec

    def add_metric(
        self,
        name: str,
        value: float,
        *,
        ci_low: float | None = None,
        ci_high: float | None = None,
        n: int | None = None,
        dataset: str | None = None,
    ) -> None:
        """A headline number (shown in the card), with its interval and sample size if known."""
        self.metrics[name] = {
            "value": value,
            "ci_low": ci_low,
            "ci_high": ci_high,
            "n": n,
            "dataset": dataset,
        }

    def add_row_metric(
        self, name: str, row: dict, key: str, *, n: int | None, dataset: str | None = None
    ) -> None:
        """A headline number from a table row holding ``key`` and its ``{key}_low`` and
        ``{key}_high`` interval.

        Example:
            >>> report.add_row_metric("perplexity/base", row, "perplexity", n=row["windows"])
        """
        low, high = row[f"{key}_low"], row[f"{key}_high"]
        self.add_metric(name, row[key], ci_low=low, ci_high=high, n=n, dataset=dataset)

    def add_rate(self, name: str, r: Rate, dataset: str | None = None) -> None:
        """A rate with its Wilson interval as a headline metric."""
        self.add_metric(name, r.value, ci_low=r.low, ci_high=r.high, n=r.n, dataset=dataset)

    def _check_names(self) -> None:
        names = [t["name"] for s in self.sections for t in s.tables]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"table names must be unique in a report: {dupes}")

    def _placed(self, directory: Path) -> dict[Path, Path]:
        """Where each plot ends up: staged plots under ``plots/``, others where they are."""
        staging = Path(self._staging.name) if self._staging is not None else None
        out = {}
        for sec in self.sections:
            for path, _ in sec.plots:
                if staging is not None and path.is_relative_to(staging):
                    out[path] = directory / path.relative_to(staging)
        return out

    def to_dict(self, directory: str | Path) -> dict[str, Any]:
        """The JSON document, plot paths relative to ``directory``."""
        directory = Path(directory)
        placed = self._placed(directory)

        def rel(path: Path) -> str:
            path = placed.get(path, path)
            try:
                return Path(os.path.relpath(path.resolve(), directory.resolve())).as_posix()
            except ValueError:  # another drive
                return str(path)

        sections = []
        for sec in self.sections:
            tables = [
                {
                    **{k: t[k] for k in ("name", "title", "description", "columns")},
                    "rows": [[row.get(c) for c in t["columns"]] for row in t["rows"]],
                    "csv": f"tables/{t['name']}.csv",
                    "json": f"tables/{t['name']}.json",
                }
                for t in sec.tables
            ]
            sections.append(
                {
                    "title": sec.title,
                    "text": sec.text,
                    "tables": tables,
                    "plots": [rel(p) for p, _ in sec.plots],
                    "captions": [c for _, c in sec.plots],
                }
            )
        doc = {
            "title": self.title,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "reptune_version": __version__,
            "model": self.model,
            "sections": sections,
            "metrics": self.metrics,
        }
        if self.dataset:
            doc["dataset"] = self.dataset
        return jsonable(doc)

    def to_markdown(self, directory: str | Path) -> str:
        """The Markdown document, plots linked relative to ``directory``."""
        doc = self.to_dict(directory)
        lines = [f"# {self.title}", ""]
        lines += [f"- **{k}**: {v}" for k, v in doc["model"].items()]
        if doc.get("dataset"):
            lines.append(f"- **dataset**: {doc['dataset']}")
        lines.append("")
        if doc["metrics"]:
            rows = [
                {"metric": name, **{k: v for k, v in m.items()}}
                for name, m in doc["metrics"].items()
            ]
            lines += ["## Summary", "", markdown_table(rows), ""]
        for sec in doc["sections"]:
            lines += [f"## {sec['title']}", ""]
            if sec["text"]:
                lines += [sec["text"], ""]
            for t in sec["tables"]:
                lines += [f"### {t['title']}", ""]
                if t["description"]:
                    lines += [t["description"], ""]
                rows = [dict(zip(t["columns"], row)) for row in t["rows"]]
                lines += [
                    markdown_table(rows, t["columns"]),
                    "",
                    f"Files: [{t['csv']}]({t['csv']}), [{t['json']}]({t['json']})",
                    "",
                ]
            for path, caption in zip(sec["plots"], sec["captions"]):
                lines += [f"![{caption}]({path})", "", f"*{caption}*", ""]
        return "\n".join(lines).rstrip() + "\n"

    def write(self, directory: str | Path) -> dict[str, Path]:
        """Write ``report.md``, ``report.json``, ``tables/`` and staged plots into ``directory``.

        The report's entries are swapped in together; other files of the folder are kept.

        Example:
            >>> paths = report.write("runs/eval/report")
            >>> paths["json"]
        """
        self._check_names()
        directory = Path(directory)
        md, doc = self.to_markdown(directory), self.to_dict(directory)
        with atomic_folder(directory) as tmp:
            for sec in self.sections:
                for t in sec.tables:
                    write_table(t["rows"], tmp / "tables" / t["name"], t["columns"])
            self._place_plots(directory, tmp)
            (tmp / REPORT_MD).write_text(md, encoding="utf-8")
            write_json(tmp / REPORT_JSON, doc)
        if self._staging is not None:
            self._staging.cleanup()
            self._staging = None
        return {"markdown": directory / REPORT_MD, "json": directory / REPORT_JSON}

    def _place_plots(self, directory: Path, tmp: Path) -> None:
        # Staged plots move in; plots already inside the folder are carried into the new
        # version (their subfolder is replaced whole); plots elsewhere stay where they are.
        staged = self._placed(directory)
        for sec in self.sections:
            for path, _ in sec.plots:
                final = staged.get(path)
                if final is None:
                    try:
                        final = directory / path.resolve().relative_to(directory.resolve())
                    except ValueError:
                        continue
                target = tmp / final.relative_to(directory)
                if path.is_file() and not target.exists():
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(path, target)
