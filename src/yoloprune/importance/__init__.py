"""Importance criteria: each scores the channel classes of a group. Importing this package
registers every built-in criterion in `CRITERIA`."""

from yoloprune.importance import activation, magnitude, taylor
from yoloprune.importance.base import (
    CRITERIA,
    NEEDS,
    Aggregation,
    Context,
    Criterion,
    Evidence,
    Ranking,
    register,
)

__all__ = [
    "CRITERIA",
    "NEEDS",
    "Aggregation",
    "Context",
    "Criterion",
    "Evidence",
    "Ranking",
    "activation",
    "magnitude",
    "register",
    "taylor",
]
