"""Files and folders written so that a crash never leaves half a result; JSON, JSONL and CSV
reading with clear errors; the ``reptune:`` resolver for data shipped with the package.

Every writer in reptune goes through :func:`atomic_write` (one file) or :func:`atomic_folder`
(a folder whose files must agree with each other, such as vectors + metadata or an adapter +
its reptune settings). A folder is built next to its target and swapped in with two renames; the
old folder is kept under a hidden name until the new one is in place, and :func:`recover_folder`
(called by every loader and by the next write) puts it back if a crash fell between the renames.
Swaps hold an exclusive lock on the parent folder (``flock``), so concurrent writers take turns
(the last one wins) and :func:`read_folder_whole` reads one whole version under a shared lock.
Files get the permissions a plain ``open()`` gives under the user's umask.

Example:
    >>> with atomic_folder("runs/v") as tmp:
    ...     (tmp / "a.json").write_text("{}")
    >>> write_json("runs/v/b.json", {"rate": 0.5})
"""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import socket
import stat
import tempfile
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:  # Windows: no flock; swaps are then not serialised between processes
    fcntl = None

__all__ = [
    "DATA_PREFIX",
    "atomic_write",
    "atomic_folder",
    "recover_folder",
    "read_folder_whole",
    "jsonable",
    "write_json",
    "read_json",
    "write_jsonl",
    "read_jsonl",
    "read_records",
    "data_path",
    "resolve_data",
]

#: ``reptune:<file>`` names a data file shipped in ``reptune/data``.
DATA_PREFIX = "reptune:"


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def _file_mode() -> int:
    # mkstemp (and safetensors) create files private (0600); give them the permissions a plain
    # open() would.
    return 0o666 & ~_umask()


def _open_permissions(folder: Path) -> None:
    """Give every file under ``folder`` the mode a plain ``open()`` gives (executables keep
    their execute bits, as under ``chmod`` with the umask)."""
    umask = _umask()
    for root, _dirs, files in os.walk(folder):
        for name in files:
            file = Path(root) / name
            if file.is_symlink():
                continue
            executable = file.stat().st_mode & 0o111
            os.chmod(file, (0o777 if executable else 0o666) & ~umask)


@contextmanager
def _parent_lock(path: Path, exclusive: bool) -> Iterator[None]:
    """Hold ``flock`` on the folder that contains ``path`` (shared or exclusive).

    Every swap in reptune holds it exclusively, every whole-folder read shares it, so a reader
    never sees a folder half-swapped and two writers never swap at once. A missing parent needs
    no lock: there is nothing to swap or read.
    """
    if fcntl is None:
        yield
        return
    try:
        fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    except (FileNotFoundError, PermissionError):  # nothing there, or a folder we may not list
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)  # closing releases the lock


_HOST = socket.gethostname()


def _temporary_prefix(path: Path) -> str:
    # Host and process in the name: the next writer can tell a killed writer's leftovers from a
    # live writer's work in progress.
    return f".{path.name}.tmp-{_HOST}-{os.getpid()}-"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _sweep_abandoned(path: Path) -> None:
    """Remove the temporaries a writer on this host left beside ``path`` when it was killed
    mid-write (a model folder left that way can hold gigabytes)."""
    prefix = f".{path.name}.tmp-"
    try:
        entries = [e for e in path.parent.iterdir() if e.name.startswith(prefix)]
    except FileNotFoundError:
        return
    for entry in entries:
        owner = entry.name[len(prefix) :].rpartition("-")[0]  # "{host}-{pid}"
        host, _, pid = owner.rpartition("-")
        if host != _HOST or not pid.isdigit() or _alive(int(pid)):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)


def atomic_write(path: str | Path, write: Callable[[str], Any]) -> Path:
    """Call ``write(tmp_path)`` and move the result onto ``path`` only once it is complete.

    A crash half-way leaves the previous file untouched.

    Example:
        >>> atomic_write("out/a.txt", lambda p: Path(p).write_text("hello"))
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _sweep_abandoned(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=_temporary_prefix(path))
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, _file_mode())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def _previous(path: Path) -> Path:
    return path.parent / f".{path.name}.previous"


def _replaced(path: Path) -> Path:
    # The old folder parked by a whole-folder replace: put back if the new one is missing,
    # otherwise dropped, never merged into the new one.
    return path.parent / f".{path.name}.replaced"


def recover_folder(path: str | Path) -> Path:
    """Finish or undo a folder swap that a crash interrupted; return ``path``.

    If ``path`` is missing but its previous version is still parked, the previous version comes
    back. If both exist, the swap had finished: entries of the previous version that the new one
    lacks are carried over (as :func:`atomic_folder` does) and the parked copy is removed. It
    waits for a swap in progress in another process, never undoing a live writer's work.

    Example:
        >>> vectors_dir = recover_folder("runs/honesty/vectors")
    """
    path = Path(path)
    if not (_replaced(path).is_dir() or _previous(path).is_dir()):
        return path  # nothing parked: no lock needed
    with _parent_lock(path, exclusive=True):
        return _recover_locked(path)


def _recover_locked(path: Path) -> Path:
    replaced = _replaced(path)
    if replaced.is_dir():
        if path.exists():
            shutil.rmtree(replaced, ignore_errors=True)
        else:
            os.replace(replaced, path)
    previous = _previous(path)
    if not previous.is_dir():
        return path
    if not path.exists():
        os.replace(previous, path)
        return path
    for entry in previous.iterdir():
        if not (path / entry.name).exists():
            os.replace(entry, path / entry.name)
    shutil.rmtree(previous, ignore_errors=True)
    return path


def read_folder_whole(path: str | Path, read: Callable[[Path], Any]) -> Any:
    """``read(path)`` while no writer can swap ``path``: one whole version, old or new.

    An interrupted swap is finished first (:func:`recover_folder`); the read then holds a shared
    lock on the parent folder, which every :func:`atomic_folder` swap takes exclusively.

    Example:
        >>> meta = read_folder_whole("runs/v", lambda p: read_json(p / "a.json"))
    """
    path = Path(path)
    while True:
        recover_folder(path)
        with _parent_lock(path, exclusive=False):
            # Parked copies appear only if a writer was killed mid-swap since: recover again.
            if not (_replaced(path).is_dir() or _previous(path).is_dir()):
                return read(path)


def exists_as_file(path: str | Path) -> bool:
    """True if ``path`` exists and is not a folder, from one ``stat`` (a concurrent swap cannot
    split the answer the way ``exists() and not is_dir()`` can).

    Example:
        >>> exists_as_file("runs/v")
        False
    """
    try:
        return not stat.S_ISDIR(os.stat(path).st_mode)
    except FileNotFoundError:
        return False


@contextmanager
def atomic_folder(path: str | Path, *, keep_other_files: bool = True) -> Iterator[Path]:
    """Build a folder in a temporary sibling and swap it onto ``path`` when the block succeeds.

    Files the block writes replace the old ones; every other entry of the old folder (a model
    card, checkpoints) is kept, unless ``keep_other_files=False``: then the new folder replaces
    the old one whole (a model whose shards changed must not keep stale shards). An error inside
    the block leaves the old folder as it was. Writers in several processes may build at once;
    their swaps take turns under a lock on the parent folder, and the last one wins.

    Example:
        >>> with atomic_folder("runs/honesty/vectors") as tmp:
        ...     save_file(tensors, tmp / "steering_vectors.safetensors")
        ...     (tmp / "steering_vectors.json").write_text(meta)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    recover_folder(path)
    if exists_as_file(path):
        raise NotADirectoryError(f"{path} exists and is not a folder")
    _sweep_abandoned(path)
    tmp = path.parent / f"{_temporary_prefix(path)}{uuid.uuid4().hex[:12]}"
    tmp.mkdir()
    try:
        yield tmp
        _open_permissions(tmp)
        with _parent_lock(path, exclusive=True):
            _recover_locked(path)  # a writer killed mid-swap since we started
            if exists_as_file(path):
                raise NotADirectoryError(f"{path} exists and is not a folder")
            if path.exists():
                os.replace(path, _previous(path) if keep_other_files else _replaced(path))
            os.replace(tmp, path)
            _recover_locked(path)  # carries the old folder's other entries over, then drops it
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def jsonable(value: Any) -> Any:
    """``value`` with NaN/inf turned into None, tuples into lists and results into dicts.

    Example:
        >>> jsonable({"x": float("nan"), "y": (1, 2)})
        {'x': None, 'y': [1, 2]}
    """
    if hasattr(value, "as_dict"):
        value = value.as_dict()
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):  # numpy / torch scalars
        return jsonable(value.item())
    if isinstance(value, Path):
        return str(value)
    return value


def write_json(path: str | Path, data: Any, *, sort_keys: bool = False) -> Path:
    """Write ``data`` as indented, strict JSON (NaN becomes null), atomically.

    Example:
        >>> write_json("out/result.json", {"rate": 0.81})
    """
    text = json.dumps(jsonable(data), indent=2, allow_nan=False, sort_keys=sort_keys, default=str)
    return atomic_write(path, lambda p: Path(p).write_text(text + "\n", encoding="utf-8"))


def read_json(path: str | Path, what: str = "file") -> Any:
    """Parse a JSON file; a missing or malformed file raises an error that names it.

    Example:
        >>> settings = read_json("runs/tuned/reptune_config.json", "reptune settings")
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist (expected the {what})")
    try:
        return json.loads(path.read_text(encoding="utf-8-sig"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON ({err}); rewrite the {what}") from err


def write_jsonl(path: str | Path, rows) -> Path:
    """Write one JSON object per line, atomically.

    Example:
        >>> write_jsonl("runs/rows.jsonl", [{"prompt": "Hi", "completion": "Hello!"}])
    """
    text = "".join(json.dumps(jsonable(row), ensure_ascii=False) + "\n" for row in rows)
    return atomic_write(path, lambda p: Path(p).write_text(text, encoding="utf-8"))


def read_jsonl(path: str | Path) -> list[Any]:
    """Rows of a JSONL file (blank lines skipped); a bad line raises with its number.

    Example:
        >>> rows = read_jsonl("runs/rows.jsonl")
    """
    path = Path(str(path))
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise ValueError(f"{path} line {n} is not valid JSON: {err}") from err
    return rows


def read_records(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a local ``.json`` (array), ``.jsonl`` or ``.csv``/``.tsv`` file.

    CSV files may start with a UTF-8 byte-order mark (TruthfulQA v1 does).

    Example:
        >>> rows = read_records("../shared/data/caa/test_refusal_ab.json")
    """
    path = Path(str(path))
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    suffix = path.suffix.lower()
    if suffix in (".csv", ".tsv"):
        with path.open(newline="", encoding="utf-8-sig") as f:
            return list(csv.DictReader(f, delimiter="\t" if suffix == ".tsv" else ","))
    if suffix == ".jsonl":
        return read_jsonl(path)
    if suffix == ".json":
        data = read_json(path, "records")
        if isinstance(data, dict) and isinstance(data.get("data"), list):
            data = data["data"]
        if not isinstance(data, list):
            raise ValueError(f"{path} must hold a JSON array of row objects")
        return data
    raise ValueError(f"{path}: unsupported file type {suffix!r}; use .json, .jsonl, .csv or .tsv")


def data_path(name: str) -> Path:
    """Path of a data file shipped in ``reptune/data``.

    Example:
        >>> data_path("sentiment_pairs.jsonl").name
        'sentiment_pairs.jsonl'
    """
    path = Path(str(resources.files("reptune").joinpath("data", name)))
    if not path.is_file():
        shipped = sorted(p.name for p in path.parent.iterdir() if not p.name.startswith("_"))
        raise FileNotFoundError(f"reptune ships no data file {name!r}; shipped: {shipped}")
    return path


def resolve_data(spec: str | None) -> str | None:
    """``reptune:<file>`` names a data file shipped with reptune; anything else is a path.

    Example:
        >>> Path(resolve_data("reptune:honesty_claims.jsonl")).name
        'honesty_claims.jsonl'
    """
    if spec is None or not str(spec).startswith(DATA_PREFIX):
        return spec
    return str(data_path(str(spec)[len(DATA_PREFIX) :]))
