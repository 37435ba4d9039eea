"""The section's scorers validated on labelled real answers of the evaluated conditions: rows for
the set "<behaviour> generations" with a per-condition breakdown, the headline rule over every
labelled set of a column, and the lines the behaviour report prints for them."""

from __future__ import annotations

from dataclasses import replace

import pytest
from conftest import make_model, make_tokenizer

from reptune.behaviours import LabelledGenerations, get_behaviour
from reptune.evaluation.scorers import DistinctN, JudgeLM, agreement, agreement_by_group
from reptune.reporting.behaviour_report import _validation_lines
from reptune.workflow.behaviour_scoring import SectionScorers, headline_axes, validate_section


@pytest.fixture(scope="module")
def validation():
    """validate_section on the sentiment spec: a tiny Llama under test, a tiny GPT-2 judge."""
    spec = get_behaviour("sentiment")
    tok = make_tokenizer(pad=True)
    judge = JudgeLM(
        make_model("gpt2", n_layers=1, hidden=16, context=1024), tok, "g", model_under_test="llama"
    )
    base = make_model("llama", n_layers=2, hidden=16, context=1024)
    scorers = SectionScorers.build(spec, base, tok, judge, {}, n_other_prompts=1, answer_tokens=8)
    return spec, scorers, validate_section(scorers, spec)


def test_the_generations_rows_hold_every_scorer_against_its_labels(validation):
    spec, scorers, rows = validation
    gens = spec.generation_labels()
    generated = [r for r in rows if r["set"] == "sentiment generations"]
    assert [r["column"] for r in generated] == [
        "behaviour",
        "self_judge",
        "fluency",
        "judge_probability",
        "distinct_2",
        "repeated_3gram",
    ]
    assert all(r["n"] == len(gens.answers) == 128 for r in generated)
    # the behaviour row is VADER's agreement with the sentiment labels (-1/0/+1: Spearman)
    vader = scorers.behaviour.score(gens.prompts, gens.answers)
    assert generated[0]["value"] == pytest.approx(agreement(vader, gens.behaviour).value)
    assert generated[0]["metric"] == "spearman" and generated[0]["scorer"] == scorers.behaviour.name
    # degeneracy against the fluent labels (two values: AUROC); lower repetition is better
    repeated = scorers.repeated.score(gens.prompts, gens.answers)
    flipped = agreement(repeated, gens.fluent, higher_is_better=False)
    assert generated[-1]["metric"] == "auroc"
    assert generated[-1]["value"] == pytest.approx(flipped.value)
    # rows of the shipped labelled sets are still there, before these
    assert rows.index(generated[0]) > 0 and rows[0]["set"] == "sentiment labelled"


def test_the_per_condition_breakdown_is_each_conditions_agreement(validation):
    spec, _, rows = validation
    gens = spec.generation_labels()
    row = next(
        r for r in rows if r["set"] == "sentiment generations" and r["column"] == "distinct_2"
    )
    distinct = DistinctN(2).score(gens.prompts, gens.answers)
    expected = agreement_by_group(distinct, gens.fluent, gens.conditions, metric="auroc")
    expected = sorted(expected, key=lambda e: e["group"])
    assert row["by_condition"] == [{"condition": e.pop("group"), **e} for e in expected]
    assert [c["condition"] for c in row["by_condition"]] == sorted(set(gens.conditions))
    for entry in row["by_condition"]:
        labels = {y for y, c in zip(gens.fluent, gens.conditions) if c == entry["condition"]}
        assert entry["n"] == 16
        assert (entry["value"] is None) == (len(labels) == 1)
        if len(labels) == 1:
            assert "skipped" in entry["note"]


def test_generation_labels_of_a_single_value_are_refused_before_scoring():
    one = LabelledGenerations(["q"] * 3, ["a b c"] * 3, [1.0, 0.0, 1.0], [1.0] * 3, ["x"] * 3)
    spec = replace(get_behaviour("sentiment"), generation_labels=lambda: one)
    with pytest.raises(ValueError, match="single fluent label value"):
        validate_section(None, spec)  # refused before any scorer is touched


def test_a_column_failing_only_on_the_generations_leaves_the_headline():
    rows = [
        {"column": "behaviour", "set": "sentiment labelled", "passes": True},
        {"column": "fluency", "set": "fluency_labelled", "passes": True},
        {"column": "relevance", "set": "own vs swapped prompt", "passes": True},
        {"column": "behaviour", "set": "sentiment generations", "passes": True},
        {"column": "fluency", "set": "sentiment generations", "passes": False},
        {"column": "distinct_2", "set": "sentiment generations", "passes": False},
    ]
    assert headline_axes(rows) == ("behaviour", "relevance")
    rows[4]["passes"] = True
    assert headline_axes(rows) == ("behaviour", "fluency", "relevance")


def test_the_report_prints_the_generations_rows_and_their_breakdown():
    by_condition = [
        {"condition": "base", "n": 16, "metric": "auroc", "value": None, "low": None,
         "high": None, "note": "every label is 1: auroc undefined, skipped"},
        {"condition": "steered", "n": 16, "metric": "auroc", "value": 0.8, "low": 0.6,
         "high": 0.95, "note": ""},
        {"condition": "rep-steer", "n": 16, "metric": "auroc", "value": 1.0, "low": None,
         "high": None, "note": "a label value has one item: no interval"},
    ]  # fmt: skip
    row = {"column": "fluency", "set": "sentiment generations", "scorer": "judge",
           "metric": "auroc", "value": 0.7, "low": 0.55, "high": 0.82, "bar": 0.5, "n": 48,
           "passes": True, "by_condition": by_condition}  # fmt: skip
    res = {"evaluated": {"headline": ["fluency"], "independent_behaviour": True}}
    lines = _validation_lines(res | {"validation": [row]})
    assert lines[1] == (
        "- fluency (judge) on sentiment generations: auroc 0.700 [0.550, 0.820] vs chance "
        "0.500, n=48: agrees."
    )
    assert lines[2] == (
        "  - auroc by condition: base: every label is 1: auroc undefined, skipped (n=16); "
        "steered 0.800 [0.600, 0.950] (n=16); rep-steer 1.000 (n=16; a label value has one "
        "item: no interval)."
    )
