"""Plots as files: matplotlib on its file-only backend, loaded only when a plot is drawn, and figures
written atomically. Every plot yoloprune writes goes through here; callers only draw.

Example:
    >>> plt = pyplot()
    >>> fig, ax = plt.subplots()
    >>> _ = ax.plot([1, 2], [3, 4])
    >>> save_figure(fig, "curve.png").name
    'curve.png'
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from yoloprune.atomic import atomic_write
from yoloprune.errors import YoloPruneError


def pyplot() -> Any:
    """matplotlib.pyplot on the file-only Agg backend (no display needed)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise YoloPruneError(
            "plots need matplotlib; install it with `pip install matplotlib` (or `yoloprune[bench]`)."
        ) from e
    return plt


def save_figure(fig: Any, path: str | os.PathLike[str]) -> Path:
    """Write a matplotlib figure atomically in the format its suffix names (.png, .svg, .pdf); close it."""
    path = Path(path)
    fmt = path.suffix.lstrip(".").lower() or "png"
    write: Callable[[Path], object] = lambda tmp: fig.savefig(tmp, format=fmt, dpi=120)  # noqa: E731
    try:
        return atomic_write(path, write)
    finally:
        pyplot().close(fig)
