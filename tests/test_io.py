"""Atomic files and folders, JSON readers and the shipped-data resolver."""

import os
import subprocess
import sys

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


KILLED_WRITER = """
import os, sys
from reptune import io
target = sys.argv[1]
with io.atomic_folder(target) as tmp:
    (tmp / "weights.bin").write_bytes(b"x" * 1000)
    os._exit(9)  # killed mid-write: no finally runs
"""

KILLED_FILE_WRITER = """
import os, sys
from reptune import io
io.atomic_write(sys.argv[1], lambda p: (open(p, "w").write("half"), os._exit(9)))
"""


@pytest.mark.parametrize("script", [KILLED_WRITER, KILLED_FILE_WRITER], ids=["folder", "file"])
def test_the_next_write_sweeps_a_killed_writers_leftovers(tmp_path, script):
    target = tmp_path / "model"
    code = subprocess.run([sys.executable, "-c", script, str(target)], check=False).returncode
    assert code == 9
    left = [p for p in tmp_path.iterdir() if p.name.startswith(".model.tmp-")]
    assert len(left) == 1 and not target.exists()
    # Work in progress of a live process, and anything from another host, stay.
    live = tmp_path / f".model.tmp-{io._HOST}-{os.getpid()}-abc"
    other_host = tmp_path / ".model.tmp-elsewhere-1-abc"
    live.mkdir()
    other_host.mkdir()
    if script is KILLED_WRITER:
        with io.atomic_folder(target) as tmp:
            (tmp / "a.json").write_text("{}")
    else:
        io.write_json(target, {})
    names = {p.name for p in tmp_path.iterdir()}
    assert names == {"model", live.name, other_host.name}


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
