"""Depth: remove whole blocks from a model's lists of repeated blocks, exactly, and prove it.

A *block* is one entry `container[index]` of an `nn.Sequential` or `nn.ModuleList` whose output has
its input's shape. Removing it is proved against a *masked original*: the unpruned model with that
block replaced by identity (for a residual block, exactly its residual branch zeroed). Where the
container passes its input straight on (a chain whose last output alone is used), taking the block
out of the list is all there is to do. Where a *consumer* conv reads every entry of the chain
concatenated (`Concat`: C2f-like modules), the masked original's entry for that block is a copy of
the entry before it, so the consumer's weights for the two slices add up: the block's slice is folded
into its input's slice and cut from the consumer's input. Either way the pruned model computes
exactly what the masked original computes, and `remove_and_compare` measures that it does with
`verify.compare_outputs`, as for channels.

Framework-free: which containers hold repeated blocks, and where a chain's consumer reads them,
is the model family's knowledge (`yoloprune.yolo.depth` for Ultralytics).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from yoloprune.errors import YoloPruneError
from yoloprune.graph.adapter import PLAIN, ModelAdapter
from yoloprune.pruning.copies import shallow_copy
from yoloprune.pruning.layers import input_weight, slice_member
from yoloprune.pruning.verify import Equivalence, compare_outputs


@dataclass(frozen=True)
class Concat:
    """Where a chain's `consumer` (a conv or linear layer) reads a block: channels `out` of its input
    are the block's output, `into` the block's input (the chain's previous entry), `[start, stop)`."""

    consumer: str
    out: tuple[int, int]
    into: tuple[int, int]


@dataclass(frozen=True)
class Block:
    """One removable block, by its `named_modules()` path (`model.4.m.1`: entry 1 of `model.4.m`);
    `concat` when a consumer reads its output besides the next block."""

    path: str
    concat: Concat | None = None

    @property
    def container(self) -> str:
        return self.path.rpartition(".")[0]

    @property
    def index(self) -> int:
        return int(self.path.rpartition(".")[2])


@dataclass(frozen=True)
class Passage:
    """What forward passes show of a block: its input and output shapes without the batch dim (None:
    not run exactly once per pass), and `change`, how much it changes its input, ||output - input|| /
    ||output|| over every image (1 for a block whose output has another shape)."""

    shape_in: tuple[int, ...] | None
    shape_out: tuple[int, ...] | None
    change: float

    @property
    def keeps_shape(self) -> bool:
        return self.shape_in is not None and self.shape_in == self.shape_out


def observe(
    model: nn.Module, paths: Iterable[str], batches: Iterable[tuple[torch.Tensor, ...]]
) -> dict[str, Passage]:
    """Run `model` in eval mode on each input tuple of `batches` and record what each block at
    `paths` does (sums only, so any number of images fits in memory).

    Example:
        >>> seq = nn.Sequential(nn.Conv2d(3, 3, 1), nn.Conv2d(3, 4, 1))
        >>> seen = observe(seq, ["0", "1"], [(torch.rand(1, 3, 8, 8),)])
        >>> seen["0"].keeps_shape, seen["1"].keeps_shape, seen["1"].change
        (True, False, 1.0)
    """
    modules = dict(model.named_modules())
    paths = list(paths)
    shapes: dict[str, set] = {p: set() for p in paths}
    sums = {p: torch.zeros(2, dtype=torch.float64) for p in paths}  # ||y - x||^2, ||y||^2
    calls = dict.fromkeys(paths, 0)

    def record(path: str, args: tuple, out: object) -> None:
        calls[path] += 1
        x = args[0] if args and isinstance(args[0], torch.Tensor) else None
        if x is None or not isinstance(out, torch.Tensor):
            shapes[path].add(None)
            return
        shapes[path].add((tuple(x.shape[1:]), tuple(out.shape[1:])))
        if x.shape == out.shape:
            y = out.detach().double()
            sums[path] += torch.stack([(y - x.detach().double()).square().sum(), y.square().sum()])

    hooks = [modules[p].register_forward_hook(lambda _m, a, out, p=p: record(p, a, out)) for p in paths]
    was, runs = model.training, 0
    try:
        model.eval()
        with torch.no_grad():
            for inputs in batches:
                model(*inputs)
                runs += 1
    finally:
        model.train(was)
        for h in hooks:
            h.remove()
    seen = {}
    for p in paths:
        if calls[p] != runs or len(shapes[p]) != 1 or None in shapes[p] or not runs:
            seen[p] = Passage(None, None, 1.0)
            continue
        ((shape_in, shape_out),) = shapes[p]
        change = (sums[p][0] / sums[p][1].clamp_min(1e-24)).sqrt().item() if shape_in == shape_out else 1.0
        seen[p] = Passage(shape_in, shape_out, change)
    return seen


def renamed(paths: Iterable[str], blocks: Iterable[Block]) -> tuple[str, ...]:
    """`paths` of the original model as they are named once `blocks` are removed (entries after a
    removed one move up); a path inside a removed block is dropped.

    Example:
        >>> renamed(["model.4.m.2.cv1", "model.4.m.1", "model.5"], [Block("model.4.m.1")])
        ('model.4.m.1.cv1', 'model.5')
    """
    gone = [(b.container, b.index) for b in blocks]
    out = []
    for path in paths:
        parts = path.split(".")
        dropped = False
        for depth in range(len(parts) - 1, 0, -1):  # deepest container first: indices of outer ones stay
            container, index = ".".join(parts[:depth]), parts[depth]
            if not index.isdigit():
                continue
            if (container, int(index)) in gone:
                dropped = True
                break
            parts[depth] = str(int(index) - sum(c == container and i < int(index) for c, i in gone))
        if not dropped:
            out.append(".".join(parts))
    return tuple(out)


def identity_masked(model: nn.Module, blocks: Iterable[Block]) -> nn.Module:
    """The masked original: a copy of `model` (sharing its tensors) with every block replaced by
    `nn.Identity`."""
    masked = shallow_copy(model)
    for block in blocks:
        masked.get_submodule(block.container)[block.index] = nn.Identity()
    return masked


def remove_blocks(model: nn.Module, blocks: Sequence[Block]) -> None:
    """Take `blocks` out of their containers in `model`, in place, folding each concat slice into
    its input's slice of the consumer first. Never writes into a tensor it did not copy, so `model`
    may be a `shallow_copy` of another.

    Example:
        >>> seq = nn.Sequential(nn.Conv2d(3, 3, 1), nn.Identity(), nn.Conv2d(3, 3, 1))
        >>> remove_blocks(seq, [Block("1")])
        >>> len(seq)
        2
    """
    paths = [b.path for b in blocks]
    if len(set(paths)) != len(paths):
        raise YoloPruneError(f"a block is listed twice among {paths}; list each block once.")
    concats = sorted((b.concat for b in blocks if b.concat), key=lambda c: (c.consumer, -c.out[0]))
    for c in concats:  # the highest slices first: a lower one's offsets stay valid
        _fold(model.get_submodule(c.consumer), c)
    for block in sorted(blocks, key=lambda b: (b.container, -b.index)):
        container = model.get_submodule(block.container)
        if not isinstance(container, (nn.Sequential, nn.ModuleList)) or block.index >= len(container):
            raise YoloPruneError(
                f"{block.path} is not an entry of a module list in this model; remove only the blocks "
                "that yoloprune lists as removable."
            )
        del container[block.index]  # both renumber the entries after it


def _fold(consumer: nn.Module, c: Concat) -> None:
    """Add the consumer's weights that read `c.out` to those that read `c.into`, then drop `c.out`."""
    found = input_weight(consumer, "in")
    (a, b), (s, e) = c.out, c.into
    if found is None or getattr(consumer, "groups", 1) != 1 or b - a != e - s:
        raise YoloPruneError(
            f"cannot fold channels {a}:{b} into {s}:{e} of {type(consumer).__name__} "
            f"{c.consumer}: it needs a linear layer without groups and two slices of one width."
        )
    weight, dim = found
    folded = weight.data.clone()  # (C_out, C_in, kH, kW): the columns that read each slice add up
    folded.narrow(dim, s, e - s).add_(weight.data.narrow(dim, a, b - a))
    weight.data = folded
    n = weight.shape[dim]
    keep = torch.cat([torch.arange(0, a), torch.arange(b, n)])
    slice_member(consumer, "in", keep)


def remove_and_compare(
    model: nn.Module,
    blocks: Sequence[Block],
    inputs: tuple[torch.Tensor, ...],
    adapter: ModelAdapter = PLAIN,
    measure_signal: bool = False,
    own: bool = False,
) -> tuple[nn.Module, Equivalence]:
    """Remove `blocks` from a copy of `model` and compare it with the masked original (every block
    replaced by identity): (shallower model, result). The copy shares untouched tensors with `model`
    unless `own` asks for a full copy (do so for a model handed to a user)."""
    shallower = copy.deepcopy(model) if own else shallow_copy(model)
    remove_blocks(shallower, blocks)
    adapter.fix_attributes(shallower)
    masked = identity_masked(model, blocks)
    return shallower, compare_outputs(shallower, masked, inputs, adapter, measure_signal)
