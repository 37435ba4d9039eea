"""Model cards: Hub metadata read back with ModelCard.load, and the report's numbers verbatim."""

from __future__ import annotations

import json

import pytest
from huggingface_hub import ModelCard
from test_workflow_layout import CONFIG, REPORT, make_run

from reptune.publish.card import (
    CARD_TAGS,
    build_model_card,
    default_template_path,
    write_model_card,
)
from reptune.publish.card_context import format_number, hub_id


@pytest.fixture
def run_dir(tmp_path):
    return make_run(tmp_path)


def test_metadata_round_trips_through_model_card_load(run_dir):
    path = write_model_card(run_dir, repo_id="someone/tiny-honesty")
    data = ModelCard.load(path).data
    assert data.base_model == CONFIG["base_model"]
    assert data.library_name == "peft"
    assert {"reptune", "representation-tuning", "peft", "lora"} <= set(data.tags)
    # Hub ids only: a local file name would be a broken dataset link.
    assert data.datasets == ["reptune/honesty-claims", "truthfulqa/truthful_qa"]
    assert data.model_name == "tiny-honesty"
    results = {r.metric_name: r for r in data.eval_results}
    assert set(results) == set(REPORT["metrics"])
    for name, metric in REPORT["metrics"].items():
        assert results[name].metric_value == metric["value"]
        assert results[name].task_type == "text-generation"


def test_every_report_number_appears_verbatim(run_dir):
    text = write_model_card(run_dir).read_text()
    report = json.loads((run_dir / "report" / "report.json").read_text())
    for metric in report["metrics"].values():
        for key in ("value", "ci_low", "ci_high", "n"):
            assert json.dumps(metric[key]) in text, (key, metric[key])
    for section in report["sections"]:
        assert section["title"] in text and section["text"] in text
        for table in section["tables"]:
            for row in table["rows"]:
                for value in row[1:]:
                    assert json.dumps(value) in text


def test_body_describes_tuning_results_usage_and_limitations(run_dir):
    text = str(build_model_card(run_dir, repo_id="someone/tiny-honesty", limitations=["Tiny."]))
    for expected in (
        "## What was tuned and how",
        "**Weight of the token (causal-LM) loss:** 0.01",
        "**Layers the representation loss acts on:** 1, 2",
        "`data/local_facts.jsonl`",
        "## Results",
        "| honest_rate/gpt4_facts | 0.87 | [0.8164, 0.9087] | 200 |",
        "truthfulqa \\| subset",  # a "|" inside a cell must not split the table
        "![Honest answers](report/honest_rate.png)",
        "PeftModel.from_pretrained",
        'snapshot_download("someone/tiny-honesty")',
        "SteeringVectors.load",
        "## Limitations\n\n- Tiny.\n",
    ):
        assert expected in text, expected
    assert "not_there.png" not in text  # a plot missing on disk is not linked


def test_credentials_never_reach_the_card(run_dir):
    config = dict(CONFIG, hub_token="hf_" + "a" * 34, api_key="sk-123", max_new_tokens=30)
    (run_dir / "reptune_config.json").write_text(json.dumps(config))
    text = str(build_model_card(run_dir))
    assert "hub_token" not in text and "hf_aaaa" not in text and "sk-123" not in text
    assert "| `max_new_tokens` | 30 |" in text  # only credential names are hidden


def test_vectors_only_run(tmp_path):
    run_dir = make_run(tmp_path, adapter=False, config=False, report=False)
    card = ModelCard.load(write_model_card(run_dir))
    assert card.data.library_name is None
    assert set(CARD_TAGS) <= set(card.data.tags)
    assert card.data.eval_results is None
    assert "Steering vectors for `tiny-llama`" in card.text
    assert "No evaluation report was included" in card.text
    assert "PeftModel" not in card.text


def test_local_base_model_stays_out_of_metadata(tmp_path):
    run_dir = make_run(tmp_path)
    (run_dir / "reptune_config.json").write_text(json.dumps(dict(CONFIG, base_model="/m/llama")))
    card = build_model_card(run_dir)
    assert card.data.base_model is None and "`/m/llama`" in card.text
    card = build_model_card(run_dir, base_model="meta-llama/Llama-2-13b-chat-hf")
    assert card.data.base_model == "meta-llama/Llama-2-13b-chat-hf"


def test_embedded_model_maps_to_its_hub_id():
    assert hub_id("embedded:smollm2-135m") == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert hub_id("runs/x/model.gguf") is None and hub_id("../model") is None


def test_numbers_print_as_json_does():
    for value in (0.87, 1e-05, 1.0123456789, 200, 0.1 + 0.2):
        assert format_number(value) == json.dumps(value)


def test_write_is_atomic_and_custom_template_gets_the_same_variables(run_dir, tmp_path):
    template = tmp_path / "mine.md.j2"
    template.write_text(
        "---\n{{ card_data }}\n---\n{% for m in metrics %}{{ m.name }}={{ m.value | num }}\n"
        "{% endfor %}"
    )
    path = write_model_card(run_dir, template=template)
    assert "honest_rate/gpt4_facts=0.87" in path.read_text()
    assert ModelCard.load(path).data.library_name == "peft"
    assert sorted(p.name for p in run_dir.iterdir() if p.name.startswith(".")) == []
    with pytest.raises(FileNotFoundError, match="card template"):
        build_model_card(run_dir, template=tmp_path / "absent.j2")


def test_default_template_ships_inside_the_package():
    path = default_template_path()
    assert path.is_file() and "reptune" in str(path.parent.parent)
