"""What every importance criterion receives, and the registry that names them.

A criterion scores the channel classes of one group (higher = more important); it never slices
modules. It returns the scores, or a `Ranking` when it also decides how many channels to keep
(`ratio="auto"`). Criteria register under a name with `@register("name")`; `CRITERIA` maps names
to them. Criteria that need data read `Context.evidence`, measured by the yolo layer.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np
from torch import nn

from yoloprune.choices import Aggregation
from yoloprune.graph.groups import ChannelGraph, Group


@dataclass(frozen=True)
class Evidence:
    """Per-channel statistics measured on calibration data, keyed by conv path."""

    taylor: Mapping[str, np.ndarray] = field(default_factory=dict)  # (C_out,) mean |activation x grad|
    samples: Mapping[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    # conv path -> ((N, C_out) activations sampled at ground-truth box centres, (N,) class ids)


@dataclass(frozen=True)
class Ranking:
    """Scores plus the number of channels the criterion itself would keep."""

    scores: np.ndarray
    keep: int | None = None


@dataclass(frozen=True)
class Context:
    """The model being scored, its graph, a seeded random generator, optional evidence and how to
    aggregate over a group's members."""

    model: nn.Module
    graph: ChannelGraph
    rng: np.random.Generator = field(default_factory=lambda: np.random.default_rng(0))
    evidence: Evidence | None = None
    aggregation: Aggregation = Aggregation.MEAN
    modules: dict[str, nn.Module] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "modules", dict(self.model.named_modules()))


Criterion = Callable[[Context, Group], "np.ndarray | Ranking"]
CRITERIA: dict[str, Criterion] = {}
NEEDS: dict[str, frozenset[str]] = {}  # criterion name -> the `Evidence` fields it reads


def register(name: str, needs: frozenset[str] = frozenset()) -> Callable[[Criterion], Criterion]:
    """Register a criterion under `name` (the value of the `importance` option); `needs` names the
    `Evidence` fields ("taylor", "samples") it reads, which the caller must measure first."""

    def add(fn: Criterion) -> Criterion:
        CRITERIA[name] = fn
        NEEDS[name] = frozenset(needs)
        return fn

    return add
