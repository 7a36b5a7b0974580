"""yoloprune: safe, explainable, measurable structured channel pruning for Ultralytics YOLO.

Example:
    >>> import yoloprune
    >>> result = yoloprune.prune("yolov8n.yaml", yoloprune.PruneOptions(0.5, blocks=[1, 2, 3]))
    >>> result.equivalence.ok, result.save("pruned.pt")
    (True, PosixPath('pruned.pt'))
"""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["OptionError", "PruneOptions", "YoloPruneError", "analyze", "prune", "verify"]

from yoloprune.errors import OptionError, YoloPruneError
from yoloprune.pruning.options import PruneOptions  # light: no torch


def __getattr__(name: str) -> object:
    # The API imports Ultralytics; load it on first use so `import yoloprune` stays light.
    if name in ("analyze", "prune", "verify"):
        from yoloprune.yolo import api

        return getattr(api, name)
    raise AttributeError(f"module 'yoloprune' has no attribute {name!r}")
