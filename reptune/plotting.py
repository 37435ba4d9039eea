"""The one figure-saving helper: every plot in reptune is a ``matplotlib.figure.Figure`` drawn
with the object API and rendered on the Agg canvas here, so plotting never touches matplotlib's
global state (no ``pyplot``, no backend switch) and needs no display.

Example:
    >>> from matplotlib.figure import Figure
    >>> fig = Figure(figsize=(4, 3))
    >>> fig.subplots().plot([0, 1], [1, 0])
    >>> save_figure(fig, "runs/x/line.png")
"""

from __future__ import annotations

from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from .io import atomic_write

__all__ = ["save_figure"]


def save_figure(fig: Figure, path: str | Path, dpi: int = 120) -> Path:
    """Render ``fig`` to a PNG at ``path`` (written atomically) and return the path.

    Example:
        >>> save_figure(fig, "runs/eval/plots/sweep.png")
    """
    FigureCanvasAgg(fig)
    atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=dpi, bbox_inches="tight"))
    return Path(path)
