"""Result tables: CSV + JSON files and Markdown rendering."""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..vectors import atomic_write

__all__ = ["columns_of", "jsonable", "write_json", "write_table", "markdown_table"]


def columns_of(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """Every key of ``rows``, in order of first appearance.

    Example:
        >>> columns_of([{"a": 1}, {"a": 2, "b": 3}])
        ['a', 'b']
    """
    return list(dict.fromkeys(key for row in rows for key in row))


def jsonable(value: Any) -> Any:
    """``value`` with NaN/inf turned into None, tuples into lists and results into dicts.

    Example:
        >>> jsonable({"x": float("nan"), "y": (1, 2)})
        {'x': None, 'y': [1, 2]}
    """
    if hasattr(value, "as_dict"):
        value = value.as_dict()
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):  # numpy / torch scalars
        return jsonable(value.item())
    if isinstance(value, Path):
        return str(value)
    return value


def write_json(data: Any, path: str | Path) -> Path:
    """Write ``jsonable(data)`` to ``path`` atomically (strict JSON: no NaN).

    Example:
        >>> write_json({"rate": 0.81}, "out/result.json")
    """
    text = json.dumps(jsonable(data), indent=2, allow_nan=False)
    atomic_write(path, lambda p: Path(p).write_text(text + "\n", encoding="utf-8"))
    return Path(path)


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
    write_json([{k: row.get(k) for k in columns} for row in rows], json_path)
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
