"""The hand-labelled answers of the evaluated sentiment conditions: the shipped file's shape and
the loader the sentiment behaviour validates its scorers with."""

from collections import Counter

from reptune.behaviours import LabelledGenerations, get_behaviour
from reptune.behaviours.sentiment import load_labelled_generations
from reptune.io import data_path, read_jsonl

CONDITIONS = {
    "base",
    "prompting",
    "steered",
    "token-sft",
    "learned-lm",
    "rep-steer",
    "rep-prompt",
    "rep-cosine",
}


def test_the_file_has_one_labelled_answer_per_line_from_every_condition():
    rows = read_jsonl(data_path("sentiment_generations_labelled.jsonl"))
    assert len(rows) == 128
    assert all(set(r) == {"prompt", "answer", "sentiment", "fluent", "condition"} for r in rows)
    assert all(isinstance(r["prompt"], str) and r["prompt"].strip() for r in rows)
    assert all(isinstance(r["answer"], str) and r["answer"].strip() for r in rows)
    assert Counter(r["condition"] for r in rows) == {c: 16 for c in CONDITIONS}
    assert {r["sentiment"] for r in rows} <= {-1, 0, 1}
    assert {r["fluent"] for r in rows} <= {0, 1}
    # both labels vary, so agreement is measurable on the whole set
    assert len({r["sentiment"] for r in rows}) >= 2 and len({r["fluent"] for r in rows}) == 2


def test_the_loader_returns_the_file_aligned_and_the_spec_provides_it():
    rows = read_jsonl(data_path("sentiment_generations_labelled.jsonl"))
    gens = load_labelled_generations()
    assert isinstance(gens, LabelledGenerations)
    assert gens.prompts == [r["prompt"] for r in rows]
    assert gens.answers == [r["answer"] for r in rows]
    assert gens.behaviour == [float(r["sentiment"]) for r in rows]
    assert gens.fluent == [float(r["fluent"]) for r in rows]
    assert gens.conditions == [r["condition"] for r in rows]
    assert all(isinstance(x, float) for x in gens.behaviour + gens.fluent)
    assert get_behaviour("sentiment").generation_labels() == gens
