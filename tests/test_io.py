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


# -- concurrent writers and readers, in real processes -------------------------------------------
ROUNDS = 20
SAVES_PER_ROUND = 4


def _writer(target, who: int, barrier, errors) -> None:
    import torch

    from reptune.vectors import SteeringVectors

    try:
        for round_ in range(ROUNDS):
            value = float(100 * who + round_)
            vecs = SteeringVectors({1: torch.full((64,), value), 2: torch.full((64,), -value)})
            barrier.wait(timeout=30)
            for _ in range(SAVES_PER_ROUND):
                vecs.save(target)
    except BaseException as err:  # reported to the test, whatever it is
        errors.put(f"writer {who}: {type(err).__name__}: {err}")


def _reader(target, barrier, errors, seen) -> None:
    from reptune.vectors import SteeringVectors

    try:
        for _ in range(ROUNDS):
            barrier.wait(timeout=30)
            for _ in range(2 * SAVES_PER_ROUND):
                vecs = SteeringVectors.load(target)
                value = float(vecs[1][0])
                if not (vecs[1] == value).all() or not (vecs[2] == -value).all():
                    errors.put(f"reader: a mixed version {vecs.vectors}")
                seen.put(value)
    except BaseException as err:
        errors.put(f"reader: {type(err).__name__}: {err}")


def test_two_writers_and_a_reader_in_separate_processes_never_fail(tmp_path):
    import multiprocessing

    import torch

    from reptune.vectors import SteeringVectors

    torch.set_num_threads(1)
    target = tmp_path / "v"
    SteeringVectors({1: torch.full((64,), -1.0), 2: torch.full((64,), 1.0)}).save(target)
    ctx = multiprocessing.get_context("fork")
    barrier, errors, seen = ctx.Barrier(3), ctx.Queue(), ctx.Queue()
    procs = [ctx.Process(target=_writer, args=(target, who, barrier, errors)) for who in (1, 2)]
    procs.append(ctx.Process(target=_reader, args=(target, barrier, errors, seen)))
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    problems = []
    while not errors.empty():
        problems.append(errors.get())
    assert not problems, problems
    assert [p.exitcode for p in procs] == [0, 0, 0]
    final = float(SteeringVectors.load(target)[1][0])
    assert final in (100.0 + ROUNDS - 1, 200.0 + ROUNDS - 1)  # the last writer wins
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v"]  # nothing parked or left over
    assert not seen.empty()


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o002])
def test_files_and_folders_get_the_modes_of_a_plain_open_under_the_umask(tmp_path, umask):
    import stat

    import torch

    from reptune.vectors import SteeringVectors

    old = os.umask(umask)
    try:
        (tmp_path / "plain.txt").write_text("x")
        (tmp_path / "plain_dir").mkdir()
        SteeringVectors({1: torch.ones(4)}).save(tmp_path / "v")
        io.write_json(tmp_path / "v" / "extra.json", {"a": 1})
    finally:
        os.umask(old)

    def mode(p):
        return stat.S_IMODE(os.stat(p).st_mode)

    assert mode(tmp_path / "plain.txt") == 0o666 & ~umask
    assert mode(tmp_path / "v") == mode(tmp_path / "plain_dir") == 0o777 & ~umask
    for name in ("steering_vectors.safetensors", "steering_vectors.json", "extra.json"):
        assert mode(tmp_path / "v" / name) == mode(tmp_path / "plain.txt"), name
