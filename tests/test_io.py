"""Atomic files and folders, JSON readers and the shipped-data resolver."""

import os

import pytest

from reptune import io


def _write_version(path, version: str) -> None:
    with io.atomic_folder(path) as tmp:
        (tmp / "a.txt").write_text(version)
        (tmp / "b.txt").write_text(version)


def _read_version(path) -> str:
    io.recover_folder(path)
    a, b = (path / "a.txt").read_text(), (path / "b.txt").read_text()
    assert a == b, "the folder mixes two saves"
    return a


def test_atomic_folder_replaces_written_files_and_keeps_the_rest(tmp_path):
    target = tmp_path / "v"
    _write_version(target, "1")
    (target / "README.md").write_text("card")
    _write_version(target, "2")
    assert _read_version(target) == "2"
    assert (target / "README.md").read_text() == "card"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v"]  # nothing left behind


def test_an_error_inside_the_block_leaves_the_old_folder(tmp_path):
    target = tmp_path / "v"
    _write_version(target, "1")
    with pytest.raises(RuntimeError), io.atomic_folder(target) as tmp:
        (tmp / "a.txt").write_text("2")
        raise RuntimeError("crash half-way")
    assert _read_version(target) == "1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v"]


@pytest.mark.parametrize("failing_call", [1, 2, 3])
def test_a_crash_at_any_rename_leaves_a_loadable_folder(tmp_path, monkeypatch, failing_call):
    target = tmp_path / "v"
    _write_version(target, "1")
    (target / "README.md").write_text("card")
    real, calls = os.replace, []

    def flaky(src, dst):
        calls.append((src, dst))
        if len(calls) == failing_call:
            raise OSError("power cut")
        return real(src, dst)

    monkeypatch.setattr(os, "replace", flaky)
    with pytest.raises(OSError):
        _write_version(target, "2")
    monkeypatch.setattr(os, "replace", real)
    assert _read_version(target) in ("1", "2")
    assert (target / "README.md").read_text() == "card"


def _replace_whole(path, version: str) -> None:
    with io.atomic_folder(path, keep_other_files=False) as tmp:
        (tmp / "a.txt").write_text(version)
        (tmp / "b.txt").write_text(version)


def test_keep_other_files_false_replaces_the_folder_whole(tmp_path):
    target = tmp_path / "m"
    _replace_whole(target, "1")
    (target / "model-00002-of-00002.safetensors").write_text("stale shard")
    _replace_whole(target, "2")
    assert _read_version(target) == "2"
    assert sorted(p.name for p in target.iterdir()) == ["a.txt", "b.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


@pytest.mark.parametrize("failing_call", [1, 2])
def test_a_crash_during_a_whole_replace_never_mixes_folders(tmp_path, monkeypatch, failing_call):
    target = tmp_path / "m"
    _replace_whole(target, "1")
    (target / "stale.txt").write_text("old")
    real, calls = os.replace, []

    def flaky(src, dst):
        calls.append((src, dst))
        if len(calls) == failing_call:
            raise OSError("power cut")
        return real(src, dst)

    monkeypatch.setattr(os, "replace", flaky)
    with pytest.raises(OSError):
        _replace_whole(target, "2")
    monkeypatch.setattr(os, "replace", real)
    # The old folder comes back whole, with its own files.
    assert _read_version(target) == "1" and (target / "stale.txt").is_file()


def test_a_crash_after_a_whole_replace_drops_the_parked_folder(tmp_path):
    target = tmp_path / "m"
    _replace_whole(target, "2")
    parked = tmp_path / ".m.replaced"  # what a crash before the clean-up leaves
    parked.mkdir()
    (parked / "stale.txt").write_text("old")
    assert _read_version(target) == "2"
    assert not parked.exists() and not (target / "stale.txt").exists()


def test_json_readers_name_the_file(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{nope")
    with pytest.raises(ValueError, match="bad.json is not valid JSON"):
        io.read_json(bad, "settings")
    with pytest.raises(FileNotFoundError, match="missing.json"):
        io.read_json(tmp_path / "missing.json")
    lines = tmp_path / "rows.jsonl"
    io.write_jsonl(lines, [{"a": 1}, {"a": float("nan")}])
    assert io.read_jsonl(lines) == [{"a": 1}, {"a": None}]
    lines.write_text('{"a": 1}\n\n{oops\n')
    with pytest.raises(ValueError, match="line 3"):
        io.read_jsonl(lines)


def test_shipped_data_resolver():
    assert io.resolve_data("reptune:honesty_claims.jsonl").endswith("honesty_claims.jsonl")
    assert io.resolve_data("data/x.csv") == "data/x.csv"
    with pytest.raises(FileNotFoundError, match="ships no data file"):
        io.resolve_data("reptune:nothing.jsonl")
