"""Importance criteria: each scores the channel classes of a group. Importing this package
registers every built-in criterion in `CRITERIA`."""

from yoloprune.importance import magnitude
from yoloprune.importance.base import CRITERIA, Context, Criterion, Evidence, Ranking, register

__all__ = ["CRITERIA", "Context", "Criterion", "Evidence", "Ranking", "magnitude", "register"]
