"""Result tables: CSV + JSON files and Markdown rendering."""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..io import atomic_write, jsonable, write_json

__all__ = ["columns_of", "write_table", "markdown_table"]


def columns_of(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """Every key of ``rows``, in order of first appearance.

    Example:
        >>> columns_of([{"a": 1}, {"a": 2, "b": 3}])
        ['a', 'b']
    """
    return list(dict.fromkeys(key for row in rows for key in row))


def write_table(
    rows: Sequence[Mapping[str, Any]], stem: str | Path, columns: Sequence[str] | None = None
) -> tuple[Path, Path]:
    """Write ``rows`` to ``<stem>.csv`` and ``<stem>.json``; returns both paths.

    Example:
        >>> write_table(sweep.rows, "runs/eval/tables/sweep")
    """
    stem = Path(stem)
    columns = list(columns or columns_of(rows))
    csv_path, json_path = stem.with_suffix(".csv"), stem.with_suffix(".json")

    def write_csv(tmp):
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
            writer.writeheader()
            for row in rows:
                writer.writerow({k: "" if v is None else v for k, v in jsonable(row).items()})

    atomic_write(csv_path, write_csv)
    write_json(json_path, [{k: row.get(k) for k in columns} for row in rows])
    return csv_path, json_path


def _cell(value: Any, digits: int) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def markdown_table(
    rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None, digits: int = 4
) -> str:
    """A GitHub-flavoured Markdown table of ``rows`` (floats to ``digits`` significant digits).

    Example:
        >>> print(markdown_table([{"layer": 14, "target_rate": 0.8125}]))
        | layer | target_rate |
        |---|---|
        | 14 | 0.8125 |
    """
    columns = list(columns or columns_of(rows))
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(_cell(row.get(c), digits) for c in columns) + " |")
    return "\n".join(lines)
