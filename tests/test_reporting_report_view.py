"""The report as the card sees it, including what the evaluation package's Report writes."""

from __future__ import annotations

import json

import pytest
from huggingface_hub import ModelCard
from test_workflow_layout import REPORT, make_run

from reptune.publish.card import write_model_card
from reptune.reporting.report_view import read_report


def test_sections_tables_plots_and_metrics(tmp_path):
    report_dir = tmp_path / "report"
    report_dir.mkdir()
    (report_dir / "honest_rate.png").write_bytes(b"png")
    view = read_report(dict(REPORT, dataset="gpt4-facts"), report_dir)
    assert view["title"] == REPORT["title"] and view["dataset"] == "gpt4-facts"
    assert [s["title"] for s in view["sections"]] == ["Honest answers", "Perplexity"]
    assert view["sections"][0]["tables"][0]["rows"] == REPORT["sections"][0]["tables"][0]["rows"]
    assert view["sections"][0]["plots"] == [{"path": "report/honest_rate.png", "caption": None}]
    assert [m["value"] for m in view["metrics"]] == [0.87, 0.88, 1.0123456789]


def test_captions_pair_with_plots(tmp_path):
    (tmp_path / "report" / "plots").mkdir(parents=True)
    (tmp_path / "report" / "plots" / "a.png").write_bytes(b"png")
    report = {"sections": [{"title": "S", "plots": ["plots/a.png"], "captions": ["Rate"]}]}
    plots = read_report(report, tmp_path / "report")["sections"][0]["plots"]
    assert plots == [{"path": "report/plots/a.png", "caption": "Rate"}]


def test_plots_outside_the_report_folder_are_not_linked(tmp_path):
    (tmp_path / "secret.png").write_bytes(b"png")
    (tmp_path / "report").mkdir()
    report = {"sections": [{"title": "x", "plots": ["../secret.png"]}]}
    assert read_report(report, tmp_path / "report")["sections"][0]["plots"] == []


def test_malformed_parts_are_skipped():
    report = {
        "sections": [3, {"title": "t", "tables": [{"rows": [[1]]}, 5]}],
        "metrics": {"a": "n/a", "b": {"value": None}, "c": 0.5},
    }
    view = read_report(report, "report")
    assert view["sections"] == [{"title": "t", "text": None, "tables": [], "plots": []}]
    assert [(m["name"], m["value"]) for m in view["metrics"]] == [("c", 0.5)]


def test_card_from_the_report_writer(tmp_path):
    """What reptune.reporting.report.Report writes reaches the card with the same numbers."""
    report_module = pytest.importorskip("reptune.reporting.report")
    stats = pytest.importorskip("reptune.evaluation.stats")
    run = make_run(tmp_path, report=False)
    report_dir = run / "report"
    (report_dir / "plots").mkdir(parents=True)
    (report_dir / "plots" / "sweep.png").write_bytes(b"png")
    report = report_module.Report("Honesty", model={"spec": "tiny-llama"}, dataset="gpt4-facts")
    section = report.section("Honest answers", "Greedy decoding, 30 new tokens.")
    section.add_table(
        "rates", [{"condition": "tuned", "rate": 0.875, "n": 200}], description="Wilson intervals."
    )
    section.add_plot(report_dir / "plots" / "sweep.png", "Honest rate vs coefficient")
    report.add_rate("honest_rate/tuned", stats.rate(175, 200))
    report.add_metric("perplexity_ratio", 1.0123, ci_low=0.99, ci_high=1.03, n=64, dataset="wt2")
    report.write(report_dir)

    written = json.loads((report_dir / "report.json").read_text())
    card = ModelCard.load(write_model_card(run))
    for metric in written["metrics"].values():
        for key in ("value", "ci_low", "ci_high", "n"):
            assert json.dumps(metric[key]) in card.text, (key, metric[key])
    assert "| tuned | 0.875 | 200 |" in card.text and "Wilson intervals." in card.text
    assert "![Honest rate vs coefficient](report/plots/sweep.png)" in card.text
    results = {r.metric_name: r for r in card.data.eval_results}
    assert (
        results["honest_rate/tuned"].metric_value
        == written["metrics"]["honest_rate/tuned"]["value"]
    )
    assert results["honest_rate/tuned"].dataset_type == "gpt4-facts"
    assert results["perplexity_ratio"].dataset_name == "wt2"
