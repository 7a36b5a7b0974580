"""The names some options accept, importable without torch: `yoloprune --help` lists them, and the
command line parses its arguments, before anything heavy is loaded.

The criteria themselves register in `importance.CRITERIA` (which imports torch); a test keeps
`CRITERIA_NAMES` equal to that registry's names.
"""

from __future__ import annotations

import sys
from enum import Enum

CRITERIA_NAMES = (
    "act-maxgamma", "act-maxweight", "act-medoid", "bn", "fpgm", "gamma", "l1", "l2", "random", "taylor",
)  # fmt: skip


def criterion_names() -> tuple[str, ...]:
    """The names `importance` accepts: the built-in criteria, and any registered since (with
    `importance.register`, which needs the registry imported; until then these are the built-in ones).

    Example:
        >>> "l1" in criterion_names()
        True
    """
    base = sys.modules.get("yoloprune.importance.base")
    return tuple(sorted(base.CRITERIA)) if base is not None else CRITERIA_NAMES


class Aggregation(str, Enum):
    """How a criterion combines a channel's per-member values into one score (`--aggregation`)."""

    MEAN = "mean"  # mean of each member's values divided by that member's mean: every layer counts alike
    SUM = "sum"  # sum of raw values: members with larger values (wide or 3x3 layers) weigh more
