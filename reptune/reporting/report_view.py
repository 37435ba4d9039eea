"""An evaluation report (``report/report.json``) reduced to what a model card shows.

The layout is the one :class:`reptune.reporting.report.Report` writes::

    {"title", "model": {...}, "dataset": str (optional),
     "sections": [{"title", "text",
                   "tables": [{"title", "description", "columns", "rows": [[...]]}],
                   "plots": ["plots/x.png"], "captions": ["..."]}],
     "metrics": {name: {"value", "ci_low", "ci_high", "n", "dataset"}}}

Every part is optional. Whatever is malformed is skipped, never guessed: the card shows the
report's own numbers only.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["read_report"]


def _number(value: Any) -> float | int | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return value


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _metrics(report: Mapping[str, Any]) -> list[dict[str, Any]]:
    metrics = report.get("metrics")
    out = []
    for name, entry in metrics.items() if isinstance(metrics, Mapping) else ():
        entry = entry if isinstance(entry, Mapping) else {"value": entry}  # a bare number
        if _number(entry.get("value")) is None:
            continue  # NaN is written as null: nothing to show
        out.append(
            {
                "name": str(name),
                "value": entry["value"],
                "ci_low": _number(entry.get("ci_low")),
                "ci_high": _number(entry.get("ci_high")),
                "n": _number(entry.get("n")),
                "dataset": _text(entry.get("dataset")),
            }
        )
    return out


def _table(table: Any) -> dict[str, Any] | None:
    if not isinstance(table, Mapping) or not isinstance(table.get("columns"), list):
        return None
    rows = [row for row in table.get("rows") or [] if isinstance(row, list)]
    return {
        "title": _text(table.get("title")),
        "description": _text(table.get("description")),
        "columns": table["columns"],
        "rows": rows,
    }


def _plot(report_dir: Path, path: Any, caption: Any) -> dict[str, Any] | None:
    # Only files inside the report folder: anything else is not uploaded and would be a broken
    # image on the Hub.
    if not isinstance(path, str):
        return None
    file = report_dir / path
    if not file.is_file() or not file.resolve().is_relative_to(report_dir.resolve()):
        return None
    return {"path": Path(report_dir.name, path).as_posix(), "caption": _text(caption)}


def _section(section: Mapping[str, Any], report_dir: Path) -> dict[str, Any]:
    plots = section.get("plots") or []
    captions = section.get("captions") or []
    captions = list(captions) + [None] * (len(plots) - len(captions))
    return {
        "title": _text(section.get("title")),
        "text": _text(section.get("text")),
        "tables": [t for t in map(_table, section.get("tables") or []) if t],
        "plots": [p for p in map(_plot, [report_dir] * len(plots), plots, captions) if p],
    }


def read_report(report: Mapping[str, Any] | None, report_dir: str | Path) -> dict[str, Any]:
    """``{"title", "model", "dataset", "sections", "metrics"}`` of a parsed ``report.json``.

    ``model`` is a list of ``(key, value)``; sections are ``{"title", "text", "tables",
    "plots": [{"path", "caption"}]}`` with plot paths relative to the run folder; metrics are
    ``{"name", "value", "ci_low", "ci_high", "n", "dataset"}``.

    Example:
        >>> report = json.loads(Path("runs/x/report/report.json").read_text())
        >>> [(m["name"], m["value"]) for m in read_report(report, "runs/x/report")["metrics"]]
        [('honest_rate/facts', 0.87)]
    """
    report = report or {}
    report_dir = Path(report_dir)
    model = report.get("model")
    sections = report.get("sections")
    return {
        "title": _text(report.get("title")),
        "model": list(model.items()) if isinstance(model, Mapping) else [],
        "dataset": _text(report.get("dataset")),
        "sections": [
            _section(s, report_dir)
            for s in (sections if isinstance(sections, list) else [])
            if isinstance(s, Mapping)
        ],
        "metrics": _metrics(report),
    }
