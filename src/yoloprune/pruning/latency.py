"""The latency model: a model's milliseconds on a runtime as a function of its kept channels, and the
search for a measured latency target (`target_latency`).

Scope: engine code; no runtime is imported here. Whatever times things is a `LatencyTimer`, given by
the caller (`yoloprune.yolo.latency` times ONNX Runtime and OpenVINO). Every conv and linear layer is
a `Layer`: its widths, kernel, stride and input size. The timer gives the milliseconds of a model made
of that one layer at chosen widths, and `LatencyModel` tabulates them per layer on a coarse grid of
widths (`grid`: 1/8, 1/4, 1/2, 3/4 and all of each width, rounded up to the runtime's channel block),
interpolated bilinearly between grid points. Everything else (activations, concatenations, resizes,
the runtime's own overhead) is one constant: the whole original model's measured latency minus the
table's sum at full width.

`meet_latency` bisects the allocation's knob on that estimate (`Allocator.search`), has the chosen
model timed for real against the original, and corrects the aim by the measured miss
(`allocate.converge`) until the measured latency is within 5% of the target, or says why it cannot.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Protocol

import numpy as np
import torch
from torch import nn

from yoloprune.errors import OptionError
from yoloprune.graph.groups import ChannelGraph
from yoloprune.graph.trace import Member
from yoloprune.pruning.allocate import Allocator, Budget, CostModel, converge, lost_table
from yoloprune.pruning.copies import meta_copy
from yoloprune.pruning.options import LatencyGoal, Metric

TOLERANCE = 0.05  # a latency target is met when the measured latency is within 5% of it
ROUNDS = 6  # measured checks before giving up (a check is an export and a few seconds of timing)
FRACTIONS = (0.125, 0.25, 0.5, 0.75, 1.0)  # of each width: the table's grid, before rounding to the block


@dataclass(frozen=True)
class Layer:
    """One conv or linear layer at some widths, as a runtime runs it: `size` is its input's spatial
    size (H, W) for a conv, the number of rows it multiplies for a linear. A depthwise conv
    (`depthwise`: one group per channel) has `cin == cout`, moving together."""

    kind: str  # "conv" or "linear"
    cin: int
    cout: int
    size: tuple[int, ...]
    kernel: tuple[int, int] = (1, 1)
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    dilation: tuple[int, int] = (1, 1)
    depthwise: bool = False
    bias: bool = True

    def at(self, cin: int, cout: int) -> Layer:
        """This layer with `cin` inputs and `cout` outputs."""
        return replace(self, cin=cin, cout=cout)

    @property
    def key(self) -> str:
        """A stable name for a timing cache: "conv 16x32 k3x3 s2x2 p1x1 d1x1 @64x64"."""
        if self.kind == "linear":
            return f"linear {self.cin}x{self.cout} rows{self.size[0]}{'' if self.bias else ' nobias'}"
        pairs = (self.kernel, self.stride, self.padding, self.dilation)
        k, s, p, d = ("x".join(map(str, t)) for t in pairs)
        dw = " dw" if self.depthwise else ""
        return (
            f"conv {self.cin}x{self.cout} k{k} s{s} p{p} d{d}{dw}{'' if self.bias else ' nobias'} @"
            + "x".join(map(str, self.size))
        )


class LatencyTimer(Protocol):
    """Times on one runtime setting, in milliseconds (median of interleaved runs)."""

    setting: str  # the setting in words, e.g. "ORT CPU 1 thread"

    def layers(self, layers: Sequence[Layer]) -> list[float]:
        """The latency of a model made of each layer alone."""
        ...

    def model(self, removed: frozenset[int]) -> tuple[float, float]:
        """(latency of the model without the channel classes `removed`, latency of the original),
        timed in turn in one loop; nothing removed: the original alone, twice the same number."""
        ...


def layer_of(module: nn.Module, shape: Sequence[int]) -> Layer | None:
    """The `Layer` of a conv or linear `module` whose input has `shape`; None for a layer the table
    leaves to the constant (grouped but not depthwise convs, non-2D convs, string padding)."""
    bias = getattr(module, "bias", None) is not None
    if isinstance(module, nn.Linear):
        return Layer("linear", module.in_features, module.out_features, (math.prod(shape[:-1]),), bias=bias)
    if not isinstance(module, nn.Conv2d):
        return None
    depthwise = module.groups == module.in_channels == module.out_channels and module.groups > 1
    if (
        (module.groups > 1 and not depthwise)
        or isinstance(module.padding, str)
        or module.padding_mode != "zeros"
    ):
        return None
    return Layer(
        "conv",
        module.in_channels,
        module.out_channels,
        tuple(shape[-2:]),
        tuple(module.kernel_size),
        tuple(module.stride),
        tuple(module.padding),
        tuple(module.dilation),
        depthwise,
        bias,
    )


def _recorder(shapes: dict[str, tuple[int, ...]], path: str) -> Callable[..., None]:
    """A forward pre-hook writing the shape of a module's first input (the first time) under `path`."""

    def record(module: nn.Module, args: tuple) -> None:
        shapes.setdefault(path, tuple(args[0].shape))

    return record


def layers_of(model: nn.Module, inputs: tuple[torch.Tensor, ...]) -> dict[str, Layer]:
    """Every conv and linear layer of `model` that the table covers, by `named_modules()` path, with
    the input size it runs at on `inputs` (found on a shape-only copy when the model allows it)."""
    for device in ("meta", None):
        m = meta_copy(model) if device else model
        shapes: dict[str, tuple[int, ...]] = {}
        hooks = [
            module.register_forward_pre_hook(_recorder(shapes, path))
            for path, module in m.named_modules()
            if isinstance(module, (nn.Conv2d, nn.Linear))
        ]
        was = m.training
        m.eval()
        try:
            with torch.no_grad():
                m(*(x.to(device) if device else x for x in inputs))
            break
        except (RuntimeError, NotImplementedError):
            if not device:
                raise
        finally:
            m.train(was)
            for h in hooks:
                h.remove()
    modules = dict(model.named_modules())
    found = {path: layer_of(modules[path], shape) for path, shape in shapes.items()}
    return {path: layer for path, layer in found.items() if layer is not None}


def grid(width: int, block: int) -> np.ndarray:
    """The widths a layer is timed at: `FRACTIONS` of `width`, each rounded up to a multiple of
    `block` (at least one block), never above `width`.

    Example:
        >>> grid(256, 16).tolist(), grid(24, 16).tolist(), grid(3, 16).tolist()
        ([32, 64, 128, 192, 256], [16, 24], [3])
    """
    points = {min(width, max(block, -(-math.ceil(width * f) // block) * block)) for f in FRACTIONS}
    return np.array(sorted(points | {width}))


def _between(points: np.ndarray, value: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each of `value`: the grid indices on either side and the weight of the upper one (values
    outside the grid take its nearest end)."""
    value = np.clip(value, points[0], points[-1])
    hi = np.clip(np.searchsorted(points, value), 1, max(len(points) - 1, 1))
    lo = hi - 1
    if len(points) == 1:
        return np.zeros_like(hi), np.zeros_like(hi), np.zeros(len(value))
    return lo, hi, (value - points[lo]) / (points[hi] - points[lo])


@dataclass(frozen=True)
class LatencyModel:
    """Milliseconds of a model as a function of each layer's kept widths: per layer a table over a
    grid of (inputs, outputs), interpolated, plus a `constant` for everything the layers leave out."""

    paths: tuple[str, ...]
    layers: tuple[Layer, ...]
    grids: tuple[tuple[np.ndarray, np.ndarray], ...]  # per layer: (input widths, output widths)
    tables: tuple[np.ndarray, ...]  # per layer: (len(inputs), len(outputs)) ms; a depthwise conv: (1, n)
    block: int = 1  # the runtime's channel block: a width runs padded up to a multiple of it
    constant: float = 0.0

    @staticmethod
    def build(layers: dict[str, Layer], time: LatencyTimer, block: int) -> LatencyModel:
        """Time every layer of `layers` on its grid (`grid` with `block`) with `time.layers`, once
        per distinct layer and widths."""
        grids, wanted = [], {}
        for layer in layers.values():
            outs = grid(layer.cout, block)
            ins = outs[:1] if layer.depthwise else grid(layer.cin, block)
            grids.append((ins, outs))
            for i in ins.tolist():
                for o in outs.tolist():
                    point = layer.at(o if layer.depthwise else i, o)
                    wanted.setdefault(point.key, point)
        ms = dict(zip(wanted, time.layers(list(wanted.values())), strict=True))
        tables = []
        for layer, (ins, outs) in zip(layers.values(), grids, strict=True):
            rows = [
                [ms[layer.at(o if layer.depthwise else i, o).key] for o in outs.tolist()]
                for i in ins.tolist()
            ]
            tables.append(np.array(rows, dtype=float))
        return LatencyModel(tuple(layers), tuple(layers.values()), tuple(grids), tuple(tables), block)

    def layers_ms(self, cin: np.ndarray, cout: np.ndarray) -> float:
        """The tables' sum with layer i at `cin[i]` inputs and `cout[i]` outputs (a depthwise conv's
        inputs are its outputs), each width first padded up to the block, as the runtime runs it
        (the grid's points are multiples of the block, so only what lies between them is interpolated)."""
        full_in, full_out = self.full
        cin = np.minimum(full_in, -(-np.asarray(cin) // self.block) * self.block)
        cout = np.minimum(full_out, -(-np.asarray(cout) // self.block) * self.block)
        total = 0.0
        for k, ((ins, outs), table) in enumerate(zip(self.grids, self.tables, strict=True)):
            o0, o1, t = _between(outs, np.array([cout[k]]))
            if self.layers[k].depthwise:
                i0, i1, s = np.zeros(1, int), np.zeros(1, int), np.zeros(1)
            else:
                i0, i1, s = _between(ins, np.array([cin[k]]))
            low = table[i0, o0] * (1 - t) + table[i0, o1] * t
            high = table[i1, o0] * (1 - t) + table[i1, o1] * t
            total += float((low * (1 - s) + high * s)[0])
        return total

    @property
    def full(self) -> tuple[np.ndarray, np.ndarray]:
        """Every layer's own widths: (inputs, outputs)."""
        return np.array([x.cin for x in self.layers]), np.array([x.cout for x in self.layers])

    def calibrated(self, measured_ms: float) -> LatencyModel:
        """This model with the constant that makes the full widths estimate `measured_ms`."""
        return replace(self, constant=measured_ms - self.layers_ms(*self.full))

    def estimate(self, cin: np.ndarray, cout: np.ndarray) -> float:
        """Milliseconds with layer i at `cin[i]` inputs and `cout[i]` outputs."""
        return self.constant + self.layers_ms(cin, cout)

    def widths(self, members: Sequence[Member]) -> tuple[np.ndarray, np.ndarray]:
        """Matrices from the channel positions each of `members` loses to each layer's lost inputs
        and outputs: `lost @ m_in`, `lost @ m_out` (a member no layer is sliced by adds nothing)."""
        index = {(m.module, m.axis): i for i, m in enumerate(members)}
        m_in, m_out = np.zeros((len(members), len(self.layers))), np.zeros((len(members), len(self.layers)))
        for k, path in enumerate(self.paths):
            if (path, "out") in index:
                m_out[index[path, "out"], k] = 1
            if (path, "in") in index and not self.layers[k].depthwise:
                m_in[index[path, "in"], k] = 1
        return m_in, m_out


@dataclass(frozen=True)
class LatencyBudget(Budget):
    """A latency target and what was reached, as fractions of the original's measured latency
    (`original`, ms), measured in `setting`."""

    setting: str = ""
    tolerance: float = TOLERANCE

    def as_json(self) -> dict:
        ms = {k: round(getattr(self, k) * self.original, 4) for k in ("target", "estimate", "reached")}
        return {
            **super().as_json(),
            "original": round(self.original, 4),
            **{f"{k}_ms": v for k, v in ms.items()},
            "setting": self.setting,
            "tolerance": self.tolerance,
        }


def meet_latency(
    alloc: Allocator,
    graph: ChannelGraph,
    cost: CostModel,
    layers: dict[str, Layer],
    goal: LatencyGoal,
    timer: LatencyTimer,
    block: int,
    rounds: int = ROUNDS,
) -> tuple[np.ndarray, LatencyBudget]:
    """Kept counts per group whose latency, measured by `timer`, is within 5% of `goal`, and the report.

    The table of `layers` (`LatencyModel.build`, grid by `block`) is calibrated on the original's
    measured latency; a relative goal ("0.5x") is a fraction of it, and each check is the pruned
    model's latency over the original's timed in the same loop, times that latency (so a change in
    the machine's load between checks does not move the target). `cost` gives the members whose lost
    channel positions become each layer's widths.
    """
    original, _ = timer.model(frozenset())
    table = LatencyModel.build(layers, timer, block).calibrated(original)
    lost = lost_table(alloc, graph, cost)
    m_in, m_out = table.widths(cost.members)
    cin, cout = table.full
    goal_ms = goal.ms(original)
    seen: list[float] = []  # the original's latency in each check, timed in turn with the pruned model

    def value(kept: np.ndarray) -> float:
        gone = lost(kept)
        return table.estimate(cin - gone @ m_in, cout - gone @ m_out)

    def check(kept: np.ndarray) -> float:
        pruned, base = timer.model(alloc.removed(kept))
        seen.append(base)
        return pruned / base * original if goal.relative else pruned

    def report(estimate: float, reached: float) -> LatencyBudget:
        fraction = goal_ms / original
        return LatencyBudget(
            Metric.LATENCY, fraction, estimate / original, reached / original, original, timer.setting
        )

    asked = (
        f"`target_latency={goal.value:g}{'x' if goal.relative else ''}` ({goal_ms:.3g} ms on {timer.setting})"
    )
    most = alloc.kept(alloc.span[1])
    if value(most) > goal_ms * (1 + TOLERANCE) and (floor := check(most)) > goal_ms * (1 + TOLERANCE):
        limits = alloc.limits
        raise OptionError(
            f"{asked} cannot be reached: removing every prunable channel the limits allow (`max_ratio="
            f"{limits.max_ratio:g}`, `min_channels={limits.min_channels}`, `round_to={limits.round_to}`) "
            f"measures {floor:.3g} ms, {floor / original:.2f} of the original's {original:.3g} ms. Ask for "
            "that or more, raise `max_ratio`, or select more of the model (`blocks`, `layers`)."
        )
    kept, estimate, reached, met = converge(alloc, value, goal_ms, check, TOLERANCE, rounds)
    if not met:
        spread = (max(seen) - min(seen)) / min(seen) if seen else 0.0
        why = (
            f"the original itself measured {min(seen):.3g} to {max(seen):.3g} ms across the checks "
            f"({spread:.0%} apart): the machine's load varies more than the tolerance; measure on a quieter "
            "machine or with fewer `threads`"
            if spread > TOLERANCE
            else "the steps between allocations are too coarse here; lower `round_to` or select more "
            "of the model"
        )
        raise OptionError(
            f"{asked}: the closest of {rounds} measured allocations runs {reached:.3g} ms, not within "
            f"{TOLERANCE:.0%}; {why}."
        )
    return kept, report(estimate, reached)
