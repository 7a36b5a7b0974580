"""The names some options accept, importable without torch: `yoloprune --help` lists them, and the
command line parses its arguments, before anything heavy is loaded.

The criteria themselves register in `importance.CRITERIA` (which imports torch); a test keeps
`CRITERIA_NAMES` equal to that registry's names.
"""

from __future__ import annotations

from enum import Enum

CRITERIA_NAMES = (
    "act-maxgamma", "act-maxweight", "act-medoid", "bn", "fpgm", "gamma", "l1", "l2", "random", "taylor",
)  # fmt: skip


class Aggregation(str, Enum):
    """How a criterion combines a channel's per-member values into one score (`--aggregation`)."""

    MEAN = "mean"  # mean of each member's values divided by that member's mean: every layer counts alike
    SUM = "sum"  # sum of raw values: members with larger values (wide or 3x3 layers) weigh more
