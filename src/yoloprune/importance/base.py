"""What every importance criterion receives, and the registry that names them.

A criterion scores the channel classes of one group (higher = more important); it never slices
modules. Criteria register under a name with `@register("name")`; `CRITERIA` maps names to them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from torch import nn

from yoloprune.graph.groups import ChannelGraph, Group


@dataclass(frozen=True)
class Context:
    """The model being scored, its graph, and a seeded random generator."""

    model: nn.Module
    graph: ChannelGraph
    rng: np.random.Generator = field(default_factory=lambda: np.random.default_rng(0))
    modules: dict[str, nn.Module] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "modules", dict(self.model.named_modules()))


Criterion = Callable[[Context, Group], np.ndarray]
CRITERIA: dict[str, Criterion] = {}


def register(name: str) -> Callable[[Criterion], Criterion]:
    """Register a criterion under `name` (the value of `--importance`)."""

    def add(fn: Criterion) -> Criterion:
        CRITERIA[name] = fn
        return fn

    return add
