"""Steering sweeps: the batched sweep equals running each cell on its own; robustness merge."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import make_model, make_tokenizer

from reptune.behaviours import resolve_conditions as resolve_named_conditions
from reptune.behaviours.honesty import HONEST_PERSONA
from reptune.evaluation.ab.datasets import load_items
from reptune.evaluation.ab.scoring import evaluate_ab
from reptune.evaluation.studies.robustness import negative_multiples, robustness_sweep
from reptune.evaluation.studies.sweep import resolve_conditions, steering_sweep
from reptune.reporting.plots import plot_robustness, plot_sweep, save_sweep
from reptune.reporting.tables import write_table
from reptune.steering import SteeredModel
from reptune.vectors import SteeringVectors

FIXTURES = Path(__file__).parent / "fixtures" / "eval"


def _model(seed=0):
    model = make_model("llama", seed=seed)
    model.config.max_position_embeddings = 512  # persona prompts are longer than 128 tokens
    return model


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(1)
    vecs = SteeringVectors({1: torch.randn(32) * 2, 2: torch.randn(32) * 2})
    return _model(), make_tokenizer(), vecs, load_items(FIXTURES / "claims.csv")


def test_batched_sweep_equals_sequential(setup):
    model, tok, vecs, items = setup
    coefficients = [-4.0, 0.0, 3.0]
    res = steering_sweep(
        model,
        tok,
        vecs,
        items,
        [1, 2],
        coefficients,
        ablate=True,
        conditions=resolve_named_conditions(["none", "honest"]),
        batch_size=5,
        progress=False,
        coefficient_unit="raw",
    )
    assert len(res.rows) == 2 * (3 + 1) * 2
    for (layer, mode, coef, cond), batched in res.results.items():
        system = {"none": None, "honest": HONEST_PERSONA}[cond]
        if mode == "add":
            single = SteeredModel(
                model, vecs, layers=[layer], coefficient=coef, coefficient_unit="raw"
            )
        else:
            single = SteeredModel(
                model, vecs, layers=[layer], mode="ablate", coefficient_unit="raw"
            )
        ref = evaluate_ab(single, tok, items, "letter", system=system, batch_size=len(items))
        assert [r.index for r in batched.records] == list(range(len(items)))
        for got, want in zip(batched.records, ref.records):
            assert got.answer == want.answer
            for letter in ("A", "B"):
                assert got.probs[letter] == pytest.approx(want.probs[letter], abs=1e-5)
        assert batched.target == ref.target


def test_batched_generation_sweep_equals_sequential(setup):
    model, tok, vecs, items = setup
    res = steering_sweep(
        model,
        tok,
        vecs,
        items[:2],
        [2],
        [0.0, 30.0],
        scorer="generate",
        max_new_tokens=3,
        batch_size=4,
        progress=False,
        coefficient_unit="raw",
    )
    for (layer, _, coef, _), batched in res.results.items():
        single = SteeredModel(model, vecs, layers=[layer], coefficient=coef, coefficient_unit="raw")
        ref = evaluate_ab(single, tok, items[:2], "generate", max_new_tokens=3)
        assert [r.text for r in batched.records] == [r.text for r in ref.records]


def test_sweep_rows_tables_and_plots(setup, tmp_path):
    model, tok, vecs, items = setup
    res = steering_sweep(
        model,
        tok,
        vecs,
        items[:2],
        [1],
        [-2.0, 2.0],
        ablate=True,
        progress=False,
        coefficient_unit="raw",
    )
    row = res.rows[0]
    assert {
        "layer",
        "mode",
        "coefficient",
        "condition",
        "target_rate",
        "target_low",
        "target_high",
        "behaviour",
        "mean_target_prob",
        "n",
    } <= set(row)
    assert [r["mode"] for r in res.rows] == ["add", "add", "ablate"]
    assert res.rows[-1]["coefficient"] is None
    csv_path, json_path = write_table(res.rows, tmp_path / "sweep")
    assert csv_path.read_text().startswith("layer,mode,coefficient")
    png = plot_sweep(res.rows, tmp_path / "plots" / "sweep.png")
    assert png.read_bytes()[:4] == b"\x89PNG"
    saved = save_sweep(res, tmp_path / "saved")
    assert sorted(p.name for p in saved.values()) == ["sweep.csv", "sweep.json", "sweep.png"]
    with pytest.raises(ValueError, match="at least one layer"):
        steering_sweep(model, tok, vecs, items, [], [1.0], coefficient_unit="raw")


def test_robustness_runs_every_model_on_the_negative_grid(setup, tmp_path):
    _, tok, vecs, items = setup
    assert negative_multiples([4, 8, -8]) == [-8.0, -4.0, 0.0]
    assert negative_multiples([4], include_zero=False) == [-4.0]
    loaded = []

    def load_tuned():
        loaded.append(True)
        return _model(seed=3)

    res = robustness_sweep(
        [("base", _model()), ("tuned", load_tuned)],
        tok,
        vecs,
        items[:2],
        [1],
        [4.0],
        progress=False,
        coefficient_unit="raw",
    )
    assert loaded == [True]
    assert [(r["model"], r["coefficient"]) for r in res.rows] == [
        ("base", -4.0),
        ("base", 0.0),
        ("tuned", -4.0),
        ("tuned", 0.0),
    ]
    assert ("tuned", 1, "add", -4.0, "none") in res.results
    assert plot_robustness(res.rows, tmp_path / "robust.png").is_file()


def test_resolve_conditions():
    assert resolve_conditions(None) == {"none": None}
    assert resolve_named_conditions(["honest"]) == {"honest": HONEST_PERSONA}
    assert resolve_conditions({"custom": "Be brief."}) == {"custom": "Be brief."}
    with pytest.raises(ValueError, match="unknown conditions"):
        resolve_conditions(["evil"])
    with pytest.raises(ValueError, match="unknown conditions"):
        resolve_named_conditions(["evil"])
