import json

import torch
from conftest import make_model, make_tokenizer

from reptune.analysis.projections import ProjectionResult
from reptune.evaluation.ab.datasets import ABItem
from reptune.evaluation.adversarial.attack import AttackConfig
from reptune.pairs import ContrastivePair
from reptune.reporting.report import Report
from reptune.reporting.sections import add_section, attack_section, pca_section, projection_section
from reptune.steering import SteeredModel
from reptune.vectors import SteeringVectors

PAIRS = [
    ContrastivePair("I love this happy day", "I hate this sad day"),
    ContrastivePair("the happy fox", "the sad fox"),
    ContrastivePair("yes, wonderful", "no, terrible"),
]


def test_sections_build_a_report(tmp_path):
    model, tok = make_model(), make_tokenizer()
    g = torch.Generator().manual_seed(0)
    vecs = SteeringVectors({1: torch.randn(32, generator=g), 2: torch.randn(32, generator=g)})
    vecs = vecs.with_residual_norms({1: 2.0, 2: 2.0})
    models = {"base": model, "steered": SteeredModel(model, vecs, layers=[1], coefficient=0.5)}
    prompts = ["the quick brown fox", "I love"]
    proj = projection_section(models, tok, vecs, prompts, [1, 2], tmp_path, max_new_tokens=3)
    saved = ProjectionResult.load(tmp_path / "projections" / "steered")
    assert saved.metadata["steering"]["recorded"] == "after the steering addition"
    summary = proj["tables"][0]["rows"]
    assert [(r["model"], r["layer"]) for r in summary] == [
        ("base", 1),
        ("base", 2),
        ("steered", 1),
        ("steered", 2),
    ]
    assert len(proj["tables"][1]["rows"]) == 4 and len(proj["plots"]) == 2
    pca = pca_section(model, tok, PAIRS, 2, tmp_path, top=2)
    assert {r["component"] for r in pca["tables"][1]["rows"]} == {1, 2}
    items = [ABItem("Is the fox brown?\n\nChoices:\n(A) True\n(B) False", "A")] * 2
    cfg = AttackConfig(steps=2, candidates=4, topk=4, suffix_length=2)
    attack = attack_section(models, tok, items, cfg, tmp_path)
    rows = attack["tables"][0]["rows"]
    assert [r["model"] for r in rows] == ["base", "steered"] and rows[0]["n"] == 2
    report = Report("diagnostics")
    for material in (proj, pca, attack):
        assert all(p.is_file() for p in material["plots"])
        add_section(report, material)
    paths = report.write(tmp_path)
    doc = json.loads(paths["json"].read_text())
    assert [s["title"] for s in doc["sections"]] == [
        "Generation-time projections",
        "PCA view, layer 2",
        "Adversarial suffix attack",
    ]
    assert (tmp_path / "tables" / "attack_summary.csv").is_file()
