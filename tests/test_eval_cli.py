"""``reptune eval`` and ``reptune sweep`` end to end on a tiny local model folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import make_model, make_tokenizer

from reptune import cli
from reptune.commands import evaluate, sweep
from reptune.vectors import SteeringVectors

FIXTURES = Path(__file__).parent / "fixtures" / "eval"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A saved tiny model, steering vectors and a LoRA adapter."""
    from peft import LoraConfig, get_peft_model

    root = tmp_path_factory.mktemp("cli")
    model = make_model("llama")
    model.config.max_position_embeddings = 512  # persona prompts are longer than 128 tokens
    model.save_pretrained(root / "model")
    make_tokenizer(pad=True).save_pretrained(root / "model")
    torch.manual_seed(0)
    SteeringVectors(
        {1: torch.randn(32), 2: torch.randn(32)}, SteeringVectors.describe_model(model)
    ).save(root / "vectors")
    base = make_model("llama")
    base.config.max_position_embeddings = 512
    lora = LoraConfig(r=2, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    get_peft_model(base, lora).save_pretrained(root / "adapter")
    return root


@pytest.mark.parametrize("module,option", [(evaluate, "--perplexity"), (sweep, "--coefficients")])
def test_help(module, option, capsys):
    with pytest.raises(SystemExit) as exit_info:
        module.main(["--help"])
    assert exit_info.value.code == 0
    assert option in capsys.readouterr().out
    assert module.HELP and "\n" not in module.HELP


def test_eval_end_to_end(run, tmp_path):
    out = tmp_path / "eval"
    code = evaluate.main(
        [
            "--model",
            str(run / "model"),
            "--adapter",
            str(run / "adapter"),
            "--vectors",
            str(run / "vectors"),
            "--layers",
            "1",
            "--coefficient_unit",
            "raw",
            "--coefficient",
            "2",
            "--data",
            str(FIXTURES / "claims.csv"),
            str(FIXTURES / "caa_behaviour.json"),
            "--limit",
            "3",
            "--scorer",
            "letter",
            "generate",
            "--max_new_tokens",
            "3",
            "--perplexity",
            str(FIXTURES / "text.txt"),
            "--window",
            "16",
            "--stride",
            "8",
            "--bootstrap_resamples",
            "199",
            "--output",
            str(out),
        ]
    )
    assert code == 0
    doc = json.loads((out / "report.json").read_text())
    assert doc["model"]["adapter"] == str(run / "adapter") and doc["model"]["layers"] == [1]
    assert "target_rate/claims/dishonest/generate" in doc["metrics"]
    assert "perplexity_difference" in doc["metrics"]
    ppl = doc["metrics"]["perplexity"]  # the headline number carries its own interval
    assert ppl["ci_low"] <= ppl["value"] <= ppl["ci_high"]
    ab = json.loads((out / "tables" / "ab.json").read_text())
    assert {(r["dataset"], r["condition"], r["scorer"]) for r in ab} == {
        (d, c, s)
        for d in ("claims", "caa_behaviour")
        for c in ("honest", "dishonest")
        for s in ("letter", "generate")
    }
    assert all(r["n"] == 3 for r in ab)  # exactly the --limit asked for, in every set
    for plot in ("ab_letter.png", "ab_generate.png"):
        assert (out / "plots" / plot).read_bytes()[:4] == b"\x89PNG"
    assert "## Perplexity" in (out / "report.md").read_text()


def test_sweep_default_compare_and_tradeoff(run, tmp_path):
    common = [
        "--model",
        str(run / "model"),
        "--vectors",
        str(run / "vectors"),
        "--data",
        str(FIXTURES / "claims.csv"),
        "--limit",
        "4",
    ]
    assert (
        sweep.main(
            common
            + [
                "--coefficient_unit",
                "raw",
                "--coefficients",
                "-2",
                "0",
                "2",
                "--ablate",
                "--conditions",
                "none",
                "honest",
                "--output",
                str(tmp_path / "s"),
            ]
        )
        == 0
    )
    rows = json.loads((tmp_path / "s" / "tables" / "sweep.json").read_text())
    assert len(rows) == 2 * (3 + 1) * 2  # layers x (coefficients + ablation) x conditions
    assert (tmp_path / "s" / "plots" / "sweep_target_rate.png").is_file()

    assert (
        sweep.main(
            common
            + [
                "--layers",
                "2",
                "--coefficient_unit",
                "raw",
                "--coefficients",
                "3",
                "--compare",
                f"tuned={run / 'adapter'}",
                f"full={run / 'model'}",
                "--output",
                str(tmp_path / "r"),
            ]
        )
        == 0
    )
    rows = json.loads((tmp_path / "r" / "tables" / "robustness.json").read_text())
    assert [(r["model"], r["coefficient"]) for r in rows] == [
        (m, c) for m in ("base", "tuned", "full") for c in (-3.0, 0.0)
    ]
    assert rows[0]["target_rate"] == rows[4]["target_rate"]  # "full" is the base model again

    assert (
        sweep.main(
            common
            + [
                "--layers",
                "1",
                "--tradeoff",
                "--coefficient_unit",
                "raw",
                "--coefficients",
                "-2",
                "-1",
                "0",
                "1",
                "2",
                "--helpfulness",
                str(FIXTURES / "mmlu.jsonl"),
                "--output",
                str(tmp_path / "t"),
            ]
        )
        == 0
    )
    fits = json.loads((tmp_path / "t" / "tables" / "tradeoff_fits.json").read_text())
    assert [f["fit"] for f in fits] == ["behaviour", "helpfulness", "helpfulness_restricted"]
    assert (tmp_path / "t" / "plots" / "tradeoff_1.png").is_file()


def test_bad_input_fails_before_loading_a_model(tmp_path, capsys):
    missing = str(tmp_path / "missing.csv")
    with pytest.raises(FileNotFoundError, match="missing.csv"):
        evaluate.main(["--model", "/no/such/model", "--data", missing, "--output", "o"])
    with pytest.raises(ValueError, match="nothing to evaluate"):
        evaluate.main(["--output", "o"])
    with pytest.raises(ValueError, match="unknown scorer"):
        evaluate.main(["--data", missing, "--scorer", "vibes", "--output", "o"])
    with pytest.raises(ValueError, match="--helpfulness"):
        sweep.main(["--vectors", "v", "--data", missing, "--tradeoff", "--output", "o"])
    with pytest.raises(ValueError, match="NAME=PATH"):
        sweep.main(
            [
                "--vectors",
                "v",
                "--data",
                str(FIXTURES / "claims.csv"),
                "--compare",
                "oops",
                "--output",
                "o",
            ]
        )
    # Through the console script: one line on stderr and exit status 2.
    assert cli.main(["eval", "--output", "o"]) == 2
    assert capsys.readouterr().err.startswith("reptune eval: error: nothing to evaluate")


def test_config_file_with_overrides(run, tmp_path):
    config = tmp_path / "eval.yaml"
    config.write_text(
        f"model: {run / 'model'}\n"
        f"perplexity: {FIXTURES / 'text.txt'}\n"
        "window: 16\nstride: 8\n"
        f"output: {tmp_path / 'from_yaml'}\n"
    )
    # The command line overrides the file.
    assert evaluate.main(["--config", str(config), "--output", str(tmp_path / "cli")]) == 0
    doc = json.loads((tmp_path / "cli" / "report.json").read_text())
    assert "perplexity" in doc["metrics"] and "perplexity_difference" not in doc["metrics"]
    assert not (tmp_path / "from_yaml").exists()


def test_a_missing_optional_dependency_names_its_extra(monkeypatch, capsys):
    def needs_lm_eval(argv):
        import lm_eval.evaluator  # noqa: F401  (None in sys.modules: not installed)

    monkeypatch.setitem(__import__("sys").modules, "lm_eval", None)
    monkeypatch.setattr(evaluate, "main", needs_lm_eval)
    assert cli.main(["eval", "--capabilities", "arc_easy"]) == 2
    err = capsys.readouterr().err
    assert "lm_eval is not installed" in err and "pip install 'reptune[eval]'" in err


def test_a_missing_reptune_module_is_a_bug_not_bad_input(monkeypatch):
    def broken(argv):
        raise ModuleNotFoundError("No module named 'reptune.nowhere'", name="reptune.nowhere")

    monkeypatch.setattr(evaluate, "main", broken)
    with pytest.raises(ModuleNotFoundError):
        cli.main(["eval"])
