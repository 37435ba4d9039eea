"""Joining a GGUF file split over chunk packages: order, checksum, reuse."""

import hashlib

import pytest

from reptune import chunked_gguf
from reptune.chunked_gguf import ChunkedGGUF, chunked_gguf_file


def _spec(tmp_path, parts, digest):
    files = []
    for i, data in enumerate(parts):
        path = tmp_path / f"part{i}"
        path.write_bytes(data)
        files.append(path)
    spec = ChunkedGGUF("m.gguf", (), digest, "pip install m", "test")
    return spec, files


def test_chunks_are_joined_in_order_and_reused(tmp_path, monkeypatch):
    parts = [b"GGUF", b"-abc", b"-def"]
    spec, files = _spec(tmp_path, parts, hashlib.sha256(b"".join(parts)).hexdigest())
    monkeypatch.setattr(chunked_gguf, "chunk_paths", lambda s: files)
    path = chunked_gguf_file(spec, tmp_path / "cache")
    assert path.read_bytes() == b"GGUF-abc-def"
    mtime = path.stat().st_mtime_ns
    assert chunked_gguf_file(spec, tmp_path / "cache").stat().st_mtime_ns == mtime
    assert [p.name for p in path.parent.iterdir()] == ["m.gguf"]  # no temp file left


def test_a_wrong_checksum_leaves_nothing(tmp_path, monkeypatch):
    spec, files = _spec(tmp_path, [b"a", b"b"], "0" * 64)
    monkeypatch.setattr(chunked_gguf, "chunk_paths", lambda s: files)
    with pytest.raises(ValueError, match="reinstall with: pip install m"):
        chunked_gguf_file(spec, tmp_path / "cache")
    assert list((tmp_path / "cache" / "gguf-src").iterdir()) == []


def test_a_missing_chunk_package_names_the_install():
    spec = ChunkedGGUF("m.gguf", (("no-such-dist-xyz", "x/m.part0"),), "0", "pip install m", "")
    with pytest.raises(ImportError, match="pip install m"):
        chunked_gguf.chunk_paths(spec)
