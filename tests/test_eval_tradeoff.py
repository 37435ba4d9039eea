"""Trade-off curve fits recover planted parameters; the study runs on a tiny model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_model, make_tokenizer

from reptune.evaluation.ab.datasets import load_items
from reptune.evaluation.studies.tradeoff import (
    fit_behaviour,
    fit_curve,
    fit_helpfulness,
    inverse_quadratic,
    restricted_inverse_quadratic,
    tanh_curve,
    tradeoff_study,
)
from reptune.reporting.plots import plot_tradeoff
from reptune.vectors import SteeringVectors

FIXTURES = Path(__file__).parent / "fixtures" / "eval"
GRID = np.arange(-10, 10.25, 0.25)  # the published grid


@pytest.mark.parametrize("a,b", [(0.3, -0.2), (0.08, 0.5), (1.5, 0.0)])
def test_tanh_fit_recovers_planted_parameters(a, b):
    rng = np.random.default_rng(0)
    y = tanh_curve(GRID, a, b) + rng.normal(scale=0.01, size=len(GRID))
    fit = fit_behaviour(GRID, y)
    assert fit.params["a"] == pytest.approx(a, rel=0.05)
    assert fit.params["b"] == pytest.approx(b, abs=0.05 * max(abs(b), 0.2))
    assert fit.r2 > 0.99 and fit.n == len(GRID)
    assert 0 < fit.stderr["a"] < 0.05 * a
    np.testing.assert_allclose(fit.predict([0.0]), [np.tanh(fit.params["b"])])


@pytest.mark.parametrize("a,b,p0", [(0.8, 0.35, 1.0), (2.0, 0.2, 1.0), (0.5, 0.6, 0.9)])
def test_inverse_quadratic_fit_recovers_planted_parameters(a, b, p0):
    rng = np.random.default_rng(1)
    p = inverse_quadratic(GRID, a, b, p0) + rng.normal(scale=0.002, size=len(GRID))
    fit = fit_helpfulness(GRID, p, p0=p0)
    assert fit.params["a"] == pytest.approx(a, rel=0.05)
    assert fit.params["b"] == pytest.approx(b, rel=0.05)
    assert fit.fixed == {"p0": p0} and fit.r2 > 0.99
    assert fit.formula == "p0 / (1 + a + a*(b^2/2)*c^2)"


@pytest.mark.parametrize("a,b", [(0.4, 0.5), (0.1, 1.0), (1.0, 0.3)])
def test_restricted_fit_recovers_planted_parameters(a, b):
    rng = np.random.default_rng(2)
    p = restricted_inverse_quadratic(GRID, a, b) + rng.normal(scale=0.002, size=len(GRID))
    fit = fit_helpfulness(GRID, p, restricted=True)
    assert fit.params["a"] == pytest.approx(a, rel=0.05)
    assert fit.params["b"] == pytest.approx(b, rel=0.05)
    assert fit.r2 > 0.99
    # b only enters squared; the fit reports it as non-negative.
    flipped = fit_helpfulness(GRID, restricted_inverse_quadratic(GRID, a, -b), restricted=True)
    assert flipped.params["b"] == pytest.approx(b, rel=1e-3)


def test_fit_errors():
    with pytest.raises(ValueError, match="cannot determine"):
        fit_curve("tanh", [0.0, 1.0], [0.0, 0.5], [0.1, 0.0])


def test_tradeoff_study_on_a_tiny_model(tmp_path):
    model, tok = make_model("llama"), make_tokenizer()
    torch.manual_seed(0)
    vecs = SteeringVectors({1: torch.randn(32) * 3})
    coefficients = [-4.0, -2.0, -1.0, 0.0, 1.0, 2.0, 4.0]
    mmlu = load_items(FIXTURES / "mmlu.jsonl")
    behaviour = load_items(FIXTURES / "caa_qa.json")
    res = tradeoff_study(
        model,
        tok,
        vecs,
        1,
        coefficients,
        helpfulness_items=mmlu,
        behaviour_items=behaviour,
        progress=False,
        coefficient_unit="raw",
    )
    assert [r["coefficient"] for r in res.rows] == coefficients
    for row in res.rows:
        assert -1.0 <= row["behaviour"] <= 1.0 and row["behaviour_n"] == 2
        assert 0.0 < row["p_correct"] < row["p_correct_restricted"] < 1.0
        assert row["helpfulness_n"] == len(mmlu)
    assert set(res.fits) == {"behaviour", "helpfulness", "helpfulness_restricted"}
    assert len(res.fit_rows()) == 3
    # Behaviour from generated text and a scorer instead of A/B letters.
    texts = []
    gen = tradeoff_study(
        model,
        tok,
        vecs,
        1,
        [0.0, 2.0, 4.0],
        helpfulness_items=mmlu[:2],
        behaviour_prompts=["Tell me a joke.", "Hi"],
        max_new_tokens=2,
        behaviour_scorer=lambda t: texts.append(t) or 1,
        progress=False,
        coefficient_unit="raw",
    )
    assert len(texts) == 6 and all(r["behaviour"] == 1.0 for r in gen.rows)
    assert plot_tradeoff(res.rows, res.fits, tmp_path / "t.png").is_file()
    with pytest.raises(ValueError, match="exactly one"):
        tradeoff_study(model, tok, vecs, 1, [0.0], helpfulness_items=mmlu, coefficient_unit="raw")
    with pytest.raises(ValueError, match="need a behaviour_scorer"):
        tradeoff_study(model, tok, vecs, 1, [0.0], helpfulness_items=mmlu, behaviour_prompts=["Hi"])
