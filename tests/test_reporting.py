"""The report: Markdown + JSON with every table and plot, in the layout the model card reads."""

from __future__ import annotations

import csv
import json

import pytest

from reptune.evaluation.stats import rate
from reptune.io import jsonable
from reptune.reporting.report import Report
from reptune.reporting.tables import markdown_table, write_table

ROWS = [
    {
        "dataset": "facts",
        "condition": "honest",
        "target_rate": 0.81,
        "target_low": 0.75,
        "target_high": 0.8583,
        "note": None,
    },
    {"dataset": "facts", "condition": "dishonest", "target_rate": float("nan"), "extra": "a|b"},
]


def test_tables(tmp_path):
    csv_path, json_path = write_table(ROWS, tmp_path / "t" / "rates")
    with csv_path.open() as f:
        rows = list(csv.DictReader(f))
    assert rows[0]["target_rate"] == "0.81" and rows[0]["note"] == ""
    assert rows[1]["extra"] == "a|b" and rows[1]["target_rate"] == ""
    data = json.loads(json_path.read_text())
    assert data[1]["target_rate"] is None and data[0]["extra"] is None
    md = markdown_table(ROWS)
    assert md.splitlines()[0].startswith("| dataset | condition |")
    assert "a\\|b" in md
    assert jsonable({"r": rate(1, 2), "t": (1, float("inf"))})["t"] == [1, None]


def test_report_files_and_schema(tmp_path):
    report = Report("Honesty", model={"spec": "tiny", "adapter": "runs/a"}, dataset="facts")
    plot = tmp_path / "plots" / "rates.png"
    plot.parent.mkdir()
    plot.write_bytes(b"\x89PNG")
    sec = report.section("Honest answers", "Rates with Wilson 95% intervals.")
    sec.add_table("rates", ROWS, "Rates by condition", "One row per condition.")
    sec.add_plot(plot, "Honest rate")
    assert report.section("Honest answers") is sec
    report.section("Perplexity").add_table("ppl", [{"model": "base", "perplexity": 12.5}])
    report.add_rate("honest_rate/facts", rate(162, 200), dataset="facts")
    report.add_metric("perplexity", 12.5, n=1000)
    paths = report.write(tmp_path)

    doc = json.loads(paths["json"].read_text())
    assert doc["title"] == "Honesty" and doc["model"]["adapter"] == "runs/a"
    assert doc["dataset"] == "facts"
    first = doc["sections"][0]
    assert first["title"] == "Honest answers" and first["text"].startswith("Rates")
    table = first["tables"][0]
    assert table["columns"] == [
        "dataset",
        "condition",
        "target_rate",
        "target_low",
        "target_high",
        "note",
        "extra",
    ]
    assert table["rows"][0][:3] == ["facts", "honest", 0.81]
    assert table["rows"][1][2] is None  # NaN is not valid JSON
    assert first["plots"] == ["plots/rates.png"] and first["captions"] == ["Honest rate"]
    assert (tmp_path / table["csv"]).is_file() and (tmp_path / table["json"]).is_file()
    metric = doc["metrics"]["honest_rate/facts"]
    assert metric == {
        "value": 0.81,
        "ci_low": pytest.approx(0.74999, abs=1e-4),
        "ci_high": pytest.approx(0.85833, abs=1e-4),
        "n": 200,
        "dataset": "facts",
    }

    md = paths["markdown"].read_text()
    assert md.startswith("# Honesty")
    assert "![Honest rate](plots/rates.png)" in md
    assert "| honest_rate/facts | 0.81 |" in md
    assert "## Perplexity" in md and "[tables/rates.csv](tables/rates.csv)" in md


def test_report_table_names_are_unique(tmp_path):
    report = Report("x")
    report.section("a").add_table("t", [{"x": 1}])
    report.section("b").add_table("t", [{"x": 2}])
    with pytest.raises(ValueError, match="unique"):
        report.write(tmp_path)


def test_package_exports_resolve():
    import reptune.evaluation as evaluation

    for name in evaluation.__all__:
        assert getattr(evaluation, name) is not None
    with pytest.raises(AttributeError):
        evaluation.no_such_name  # noqa: B018
