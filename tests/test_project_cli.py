"""``reptune project`` end to end on a tiny local model folder."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import make_model, make_tokenizer

from reptune import cli
from reptune.analysis.projections import ProjectionResult
from reptune.commands import project
from reptune.vectors import SteeringVectors


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("project")
    model = make_model("llama")
    model.save_pretrained(root / "model")
    make_tokenizer(pad=True).save_pretrained(root / "model")
    torch.manual_seed(0)
    vecs = SteeringVectors(
        {1: torch.randn(32), 2: torch.randn(32)}, SteeringVectors.describe_model(model)
    )
    vecs.with_residual_norms({1: 2.0, 2: 2.0}).save(root / "vectors")
    pairs = [
        {"positive": "I love this happy day", "negative": "I hate this sad day"},
        {"positive": "the happy fox", "negative": "the sad fox"},
        {"positive": "yes, wonderful", "negative": "no, terrible"},
    ]
    (root / "pairs.jsonl").write_text("".join(json.dumps(p) + "\n" for p in pairs))
    (root / "prompts.txt").write_text("the quick brown fox\nI love\n")
    return root


def test_help(capsys):
    with pytest.raises(SystemExit) as exit_info:
        project.main(["--help"])
    assert exit_info.value.code == 0
    assert "--steer_layers" in capsys.readouterr().out
    assert "project" in cli.COMMANDS


def test_project_end_to_end_with_steering_and_pca(run, tmp_path):
    out = tmp_path / "proj"
    config = tmp_path / "project.yaml"
    config.write_text(f"model: {run / 'model'}\nvectors: {run / 'vectors'}\nmax_new_tokens: 3\n")
    code = cli.main(
        [
            "project",
            "--config",
            str(config),
            "--output",
            str(out),
            "--prompt",
            "Question: is it true?",
            "--prompts_file",
            str(run / "prompts.txt"),
            "--steer_layers",
            "1",
            "--coefficient",
            "0.5",
            "--pca_pairs",
            str(run / "pairs.jsonl"),
            "--pca_layer",
            "2",
        ]
    )
    assert code == 0
    res = ProjectionResult.load(out)
    assert len(res) == 3 and res.layers == [1, 2]
    assert len(res.token_ids[0]) == res.prompt_lengths[0] + 3
    assert res.metadata["steering"]["layers"] == [1]
    assert res.metadata["steering"]["coefficient_unit"] == "residual_norm"
    for name in ("projections", "projection_summary", "pca_components_layer2"):
        assert (out / "tables" / f"{name}.csv").is_file()
    assert sorted(p.name for p in (out / "plots").iterdir()) == [
        "pca_tokens_layer2.png",
        "prompt0.png",
        "prompt1.png",
        "prompt2.png",
    ]


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--layers", "3"], "no vector for --layers"),
        (["--steer_layers", "3", "--coefficient", "1"], "no vector for --steer_layers"),
        (["--coefficient", "1"], "needs --steer_layers"),
        (["--kind", "norm"], "--kind"),
        (["--pca_pairs", "missing.jsonl"], "does not exist"),
        (["--adapter", "nowhere"], "not a PEFT adapter folder"),
    ],
)
def test_bad_options_fail_before_the_model_loads(run, tmp_path, capsys, extra, message):
    # The model spec does not exist: the error must come from the options, checked first.
    argv = ["project", "--model", str(tmp_path / "no-model"), "--vectors", str(run / "vectors")]
    argv += ["--output", str(tmp_path / "o"), "--prompt", "hi", *extra]
    assert cli.main(argv) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_no_prompts(run, tmp_path, capsys):
    argv = ["project", "--vectors", str(run / "vectors"), "--output", str(tmp_path / "o")]
    assert cli.main(argv) == 2
    assert "no prompts" in capsys.readouterr().err
