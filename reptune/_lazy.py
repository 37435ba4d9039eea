"""One helper for packages that export names from their modules on first use.

A package lists ``{module: names}``; the names appear in its ``__all__`` and ``dir()``, and the
module is imported only when one of its names is first read (so ``import reptune`` stays fast and
does not pull in the trainer, scipy or matplotlib).

Example:
    >>> __all__, __getattr__, __dir__ = lazy_exports(__name__, {".stats": ("rate",)}, globals())
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Mapping, MutableMapping

__all__ = ["lazy_exports"]


def lazy_exports(
    package: str,
    exports: Mapping[str, Iterable[str]],
    namespace: MutableMapping[str, object],
    eager: Iterable[str] = (),
) -> tuple[list[str], Callable[[str], object], Callable[[], list[str]]]:
    """``(__all__, __getattr__, __dir__)`` for ``package``.

    ``exports`` maps a module (``".sub.module"`` relative to ``package``, or absolute) to the
    names read from it on first use; ``namespace`` is the package's ``globals()`` (a loaded name
    is cached there); ``eager`` names, already imported, join ``__all__``.

    Example:
        >>> __all__, __getattr__, __dir__ = lazy_exports(
        ...     __name__, {".training": ("RepTuneConfig",)}, globals(), eager=["load_model"]
        ... )
    """
    where = {name: module for module, names in exports.items() for name in names}
    public = sorted(set(where) | set(eager))

    def __getattr__(name: str):
        if name not in where:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(where[name], package), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(public))

    return public, __getattr__, __dir__
