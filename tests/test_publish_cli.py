"""``reptune card`` / ``push`` / ``export-gguf`` through ``reptune.cli.main``."""

from __future__ import annotations

import pytest
from gguf import GGUFReader
from huggingface_hub import HfApi, ModelCard
from test_workflow_layout import make_run

from reptune.cli import main

COMMANDS = ("card", "push", "export-gguf")


@pytest.mark.parametrize("command", COMMANDS)
def test_help_exits_zero_and_documents_the_positional_folder(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    assert "first argument" in " ".join(capsys.readouterr().out.split())  # argparse wraps lines


@pytest.mark.parametrize("command", COMMANDS)
def test_bad_run_folder_exits_2_with_one_line(command, tmp_path, capsys):
    argv = [command, str(tmp_path / "missing")]
    if command == "push":
        argv += ["--repo_id", "someone/x", "--dry_run"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert err.startswith(f"reptune {command}: error:") and "missing" in err


def test_missing_folder_argument_exits_2(capsys):
    assert main(["card"]) == 2
    assert "no run folder given" in capsys.readouterr().err


def test_card_writes_readme(tmp_path, capsys):
    run = make_run(tmp_path)
    assert main(["card", str(run), "--repo_id", "someone/tiny", "--limitations", "Toy."]) == 0
    card = ModelCard.load(run / "README.md")
    assert card.data.model_name == "tiny" and "- Toy." in card.text
    assert capsys.readouterr().out.strip() == str(run / "README.md")


def test_run_dir_option_works_like_the_positional(tmp_path):
    run = make_run(tmp_path)
    assert main(["card", "--run_dir", str(run)]) == 0
    assert (run / "README.md").is_file()


def test_push_dry_run_lists_files_and_needs_no_token(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)

    def refuse(*args, **kwargs):
        raise AssertionError("a dry run must not call the Hub")

    monkeypatch.setattr(HfApi, "create_repo", refuse)
    monkeypatch.setattr(HfApi, "upload_folder", refuse)
    run = make_run(tmp_path)
    assert main(["push", str(run), "--repo-id", "someone/tiny", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "would upload 9 files" in out and "vectors/steering_vectors.safetensors" in out
    assert not (run / "README.md").exists()


def test_push_without_repo_id_exits_2(tmp_path, capsys):
    assert main(["push", str(make_run(tmp_path))]) == 2
    assert "--repo_id is required" in capsys.readouterr().err


def test_export_gguf_from_a_run_folder(tmp_path, capsys):
    run = make_run(tmp_path)
    out = tmp_path / "honesty.gguf"
    argv = ["export-gguf", str(run), "--output", str(out), "--model_hint", "llama"]
    assert main([*argv, "--coefficient_unit", "raw"]) == 0
    assert f"--control-vector-scaled {out}:4" in capsys.readouterr().out
    names = sorted(t.name for t in GGUFReader(out).tensors)
    assert names == ["direction.1", "direction.2"]
    # The default unit needs the residual norms, which these vectors lack: a clear error.
    assert main(argv) == 2
    assert "coefficient_unit='raw'" in capsys.readouterr().err
    assert (
        main(["export-gguf", str(run / "vectors"), "--layers", "2", "--coefficient_unit", "raw"])
        == 0
    )
    reader = GGUFReader(run / "vectors" / "control_vector.gguf")
    assert [t.name for t in reader.tensors] == ["direction.2"]


def test_export_gguf_refuses_layer_zero(tmp_path, capsys):
    run = make_run(tmp_path, layers=(0, 1))
    assert main(["export-gguf", str(run), "--output", str(tmp_path / "x.gguf")]) == 2
    assert "layer 0" in capsys.readouterr().err
