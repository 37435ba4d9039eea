"""Crash injection: make the Nth file write, rename or removal fail, and every one after it.

A writer is run once under :func:`crash_at` with ``n=None`` to count its operations; then once
per operation with ``n`` set. From the Nth operation on, every write, rename and removal raises
:class:`Crash`, as if the process had died there: the clean-up code in ``finally`` blocks cannot
tidy up either, so what is left on disk is what a real crash would leave.

Patched: ``open``/``Path.open`` in a writing mode, ``os.open`` with ``O_CREAT``, ``os.mkdir``,
``os.replace``, ``os.rename``, ``os.remove``, ``os.unlink``, ``shutil.rmtree`` and
``safetensors.torch.save_file`` (also where a module imported it by name).

Example:
    >>> with crash_at(None) as log:
    ...     vecs.save(folder)
    >>> for n in range(1, len(log.ops) + 1):
    ...     with pytest.raises(Crash), crash_at(n):
    ...         vecs.save(folder)
"""

from __future__ import annotations

import builtins
import os
import pathlib
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import safetensors.torch

__all__ = ["Crash", "CrashLog", "crash_at", "count_operations"]


class Crash(BaseException):
    """The injected failure. Not an ``Exception``: no handler of the code under test (``except
    OSError``, ``rmtree(ignore_errors=True)``) may swallow it, as none runs when a process dies."""


@dataclass
class CrashLog:
    """The operations seen, in order, as ``(kind, target)``; ``crashed`` once the crash fired."""

    n: int | None
    ops: list[tuple[str, str]] = field(default_factory=list)
    crashed: bool = False

    def hit(self, kind: str, target) -> None:
        self.ops.append((kind, str(target)))
        if self.crashed or (self.n is not None and len(self.ops) >= self.n):
            self.crashed = True
            raise Crash(f"injected crash at operation {len(self.ops)}: {kind} {target}")


def _writing(mode) -> bool:
    return any(c in str(mode) for c in "wax+")


@contextmanager
def crash_at(n: int | None) -> Iterator[CrashLog]:
    """Fail the ``n``-th write/rename/removal and all later ones (``None``: only count)."""
    log = CrashLog(n)
    real = {
        "open": builtins.open,
        "path_open": pathlib.Path.open,
        "os_open": os.open,
        "mkdir": os.mkdir,
        "replace": os.replace,
        "rename": os.rename,
        "remove": os.remove,
        "unlink": os.unlink,
        "rmtree": shutil.rmtree,
        "save_file": safetensors.torch.save_file,
    }

    def open_(file, mode="r", *args, **kwargs):
        if _writing(mode):
            log.hit("write", file)
        return real["open"](file, mode, *args, **kwargs)

    def path_open(self, mode="r", *args, **kwargs):
        if _writing(mode):
            log.hit("write", self)
        return real["path_open"](self, mode, *args, **kwargs)

    def os_open(path, flags, *args, **kwargs):
        if flags & (os.O_CREAT | os.O_WRONLY | os.O_RDWR):
            log.hit("write", path)
        return real["os_open"](path, flags, *args, **kwargs)

    def wrap(name, kind):
        def call(target, *args, **kwargs):
            log.hit(kind, target)
            return real[name](target, *args, **kwargs)

        return call

    def save_file(tensors, filename, *args, **kwargs):
        log.hit("write", filename)
        return real["save_file"](tensors, filename, *args, **kwargs)

    patches = [
        (builtins, "open", open_),
        (pathlib.Path, "open", path_open),
        (os, "open", os_open),
        (os, "mkdir", wrap("mkdir", "write")),
        (os, "replace", wrap("replace", "rename")),
        (os, "rename", wrap("rename", "rename")),
        (os, "remove", wrap("remove", "remove")),
        (os, "unlink", wrap("unlink", "remove")),
        (shutil, "rmtree", wrap("rmtree", "remove")),
    ]
    # Modules that did `from safetensors.torch import save_file` hold their own reference.
    for module in list(sys.modules.values()):
        if getattr(module, "save_file", None) is real["save_file"]:
            patches.append((module, "save_file", save_file))
    saved = [(obj, name, getattr(obj, name)) for obj, name, _ in patches]
    try:
        for obj, name, value in patches:
            setattr(obj, name, value)
        yield log
    finally:
        for obj, name, value in saved:
            setattr(obj, name, value)


def count_operations(write) -> int:
    """How many operations ``write()`` makes (it runs for real once)."""
    with crash_at(None) as log:
        write()
    return len(log.ops)
