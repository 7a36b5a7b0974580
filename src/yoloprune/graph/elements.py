"""What a trace is made of: channel elements bound to members, pins with reasons, traced values,
the op log, and the finished `Trace` (union-find over element ids).

Scope: plain data, and `flat_tensors`, shared by the tracer and its op rules; `trace.py` builds these.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import torch

from yoloprune.graph.ops import OpKind


@dataclass(frozen=True)
class Member:
    """One channel axis of one module, named by its `named_modules()` path."""

    module: str
    axis: str  # "out" | "in" | "param:NAME@DIM"


@dataclass(frozen=True)
class Pin:
    """Why some channels cannot be removed: the member or op site responsible, and the reason."""

    member: str
    reason: str


@dataclass
class Value:
    """A traced tensor: its channel axis and one element id per channel."""

    id: int
    cdim: int
    elems: np.ndarray  # (C,) element ids
    producer: int  # index of the Node that made it, -1 for model inputs


@dataclass
class Node:
    """One op call that touched traced channels."""

    index: int
    kind: OpKind
    op: str  # readable op name, e.g. "torch.cat"
    module: str  # innermost module running when the op was called ("" for the root)
    inputs: tuple[int, ...]  # Value ids read
    outputs: tuple[int, ...]  # Value ids made
    member: Member | None = None  # the layer axis this op reads (conv/linear "in", norm "out")
    detail: dict = field(default_factory=dict)


@dataclass
class Trace:
    """Everything one traced forward pass learned about the model's channels."""

    parent: list[int]  # union-find over element ids
    members: dict[Member, np.ndarray]  # member -> element id per channel position
    pins: list[tuple[np.ndarray, Pin]]
    nodes: list[Node]
    values: dict[int, Value]
    module_io: dict[str, tuple[tuple[int, ...], tuple[int, ...]]]  # module -> (in, out) channel counts
    module_types: dict[str, str]
    notes: tuple[str, ...] = ()  # what the trace could not do, e.g. a failed train-mode pass

    def find(self, e: int) -> int:
        return find_root(self.parent, e)

    def roots(self, elems: np.ndarray) -> np.ndarray:
        return np.fromiter((self.find(int(e)) for e in elems), dtype=np.int64, count=len(elems))


def find_root(parent: list[int], e: int) -> int:
    """Union-find root of element `e`, halving the path on the way."""
    while parent[e] != e:
        parent[e] = parent[parent[e]]
        e = parent[e]
    return e


class TraceError(RuntimeError):
    """The model's forward pass failed while being traced."""


def flat_tensors(obj: object) -> Iterator[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, (list, tuple)):
        for o in obj:
            yield from flat_tensors(o)
    elif isinstance(obj, dict):
        for o in obj.values():
            yield from flat_tensors(o)
