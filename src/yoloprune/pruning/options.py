"""`PruneOptions`: the one request type of a prune. Every option that decides which channels go is
one field here, declared once with its default, help text and check (`yoloprune.declare`); the API
takes it, a recipe holds it, a plan records it (`to_json` / `from_json`), and the command line
generates its flags from it. Importable without torch: the command line's help reads these fields.

Errors name fields (`OptionError`), never command-line flags; the CLI translates.
"""

from __future__ import annotations

import dataclasses
import re
from enum import Enum
from typing import Any, Literal

from yoloprune.channel_blocks import channel_multiple
from yoloprune.choices import Aggregation, criterion_names
from yoloprune.declare import check, option, refuse_unknown, to_json
from yoloprune.errors import OptionError
from yoloprune.runtimes import Runtime, settings

AUTO = "auto"  # `round_to="auto"`: this machine's channel block; `ratio="auto"`: the criterion decides
DEFAULT_RATIO = 0.5  # what `ratio` is when neither it nor a target is given
AMOUNT = ("ratio", "target_flops", "target_params", "target_latency")  # how much to prune: one of them
_LATENCY = re.compile(r"\s*([0-9.eE+-]+)\s*(x|ms)?\s*")


def resolve_round_to(value: int | str) -> int:
    """`round_to` as the integer a plan records: a positive integer as given, or "auto", the channel
    block of this machine's inference runtime (16 with AVX-512F, else 8; see `yoloprune.channel_blocks`).

    Example:
        >>> resolve_round_to(8), resolve_round_to("auto") in (8, 16)
        (8, True)
    """
    return PruneOptions(round_to=value).round_to


class Allocation(str, Enum):
    """How channels are spread over groups."""

    LOCAL = "local"  # the same fraction of every group
    GLOBAL = "global"  # one threshold on mean-normalised scores across all selected groups


class Metric(str, Enum):
    """What a target counts (`target_params`, `target_flops`, `target_latency`)."""

    PARAMS = "params"
    FLOPS = "flops"
    LATENCY = "latency"


@dataclasses.dataclass(frozen=True)
class LatencyGoal:
    """`target_latency` read: `value` milliseconds, or with `relative` a fraction of the original's
    measured latency."""

    value: float
    relative: bool

    def ms(self, original_ms: float) -> float:
        """The target in milliseconds, given the original's measured latency."""
        return self.value * original_ms if self.relative else self.value

    def __str__(self) -> str:
        return f"{self.value:g}x" if self.relative else f"{self.value:g} ms"


def latency_goal(value: float | str) -> LatencyGoal:
    """`target_latency` as a `LatencyGoal`: a number or "12ms" is milliseconds, "0.5x" a fraction of
    the original's measured latency, in (0, 1].

    Example:
        >>> latency_goal("0.5x")
        LatencyGoal(value=0.5, relative=True)
        >>> latency_goal("12ms") == latency_goal(12) == LatencyGoal(12.0, relative=False)
        True
    """
    m = _LATENCY.fullmatch(value) if isinstance(value, str) else None
    try:
        number = float(m[1] if m else value) if m or not isinstance(value, str) else float("nan")
    except ValueError:
        number = float("nan")
    relative = bool(m and m[2] == "x")
    if not number > 0 or number == float("inf") or (relative and number > 1):
        raise OptionError(
            f"`target_latency={value!r}` must be milliseconds, more than 0 (12 or '12ms'), or a fraction "
            "of the original's measured latency in (0, 1] ('0.5x' halves it)."
        )
    return LatencyGoal(number, relative)


@dataclasses.dataclass(frozen=True, kw_only=True)
class PruneOptions:
    """How to choose channels; checked when made, so an instance is always valid.

    How much: `ratio`, or one of `target_flops` and `target_params` (a fraction of the original to
    keep, met within 2%), or `target_latency` (milliseconds, or "0.5x" of the original's, measured on
    `runtime` with `threads` and `int8` and met within 5%); with none of them the ratio is 0.5. What:
    `blocks` and `layers` select (module paths; neither: every prunable group), `exclude` pins layers.
    `round_to="auto"` is resolved here, once, to the channel block of `runtime` (ONNX Runtime when
    none) on this machine, so the options and the plan hold the number. Strings are accepted for the
    enums, and lists for the tuples, as read back from JSON.

    Example:
        >>> PruneOptions(target_flops=0.5, allocation="global").allocation
        <Allocation.GLOBAL: 'global'>
        >>> PruneOptions(0.3, blocks=[1, 2]).blocks
        (1, 2)
        >>> PruneOptions(max_ratio=2)
        Traceback (most recent call last):
        ...
        yoloprune.errors.OptionError: max_ratio=2 is outside (0, 1]: it is the most any group may lose, ...
    """

    ratio: float | Literal["auto"] | None = option(
        None,
        kw_only=False,
        help="fraction of each group's channels (global allocation: of all) to remove, e.g. 0.5; auto: "
        "the act-* criteria choose each group's width",
        within="[0, 1)",
        why="it is the fraction of each group's channels to remove, so 0.5 removes half. Pass a value "
        "such as 0.3",
        kind="a fraction such as 0.5, or auto",
        metavar="R|auto",
    )
    target_flops: float | None = option(
        None,
        help="keep this fraction of the original's FLOPs, e.g. 0.5 (met within 2%)",
        within="(0, 1]",
        why="it is the fraction of the original to keep, so 0.5 halves it",
        metavar="F",
    )
    target_params: float | None = option(
        None,
        help="keep this fraction of the original's params, e.g. 0.5 (met within 2%)",
        within="(0, 1]",
        why="it is the fraction of the original to keep, so 0.5 halves it",
        metavar="F",
    )
    target_latency: float | str | None = option(
        None,
        help="reach this latency measured on the runtime: milliseconds (12 or 12ms) or a fraction of "
        "the original's (0.5x), met within 5%",
        kind="milliseconds such as 12, or a fraction of the original's such as 0.5x",
        metavar="MS|Fx",
    )
    runtime: Runtime | None = option(
        None,
        help="the runtime target_latency is measured on, whose block round_to auto takes; default ort",
    )
    threads: int | None = option(
        None,
        help="CPU threads target_latency is measured with (default: all)",
        within="[1, inf)",
        metavar="N",
    )
    int8: bool = option(
        False, help="target_latency of the INT8 model (OpenVINO, calibrated on the dataset given as data)"
    )
    importance: str = option("l1", help="channel ranking", choices=criterion_names)
    aggregation: Aggregation = option(
        Aggregation.MEAN,
        help="combine a channel's values over the group's layers: mean of per-layer normalised or sum "
        "of raw values",
    )
    allocation: Allocation = option(
        Allocation.LOCAL,
        help="global: rank channels across groups on mean-normalised scores instead of the same ratio "
        "per group",
    )
    max_ratio: float = option(
        0.9,
        help="most any group loses",
        within="(0, 1]",
        why="it is the most any group may lose, e.g. 0.9",
        metavar="R",
    )
    min_channels: int = option(1, help="fewest any group keeps", within="[1, inf)", metavar="N")
    round_to: int | Literal["auto"] = option(
        1,
        help="keep a multiple of N channels per group; auto: the runtime's channel block (CPU: 16 with "
        "AVX-512, else 8)",
        within="[1, inf)",
        kind="a whole number such as 8, or auto",
        metavar="N|auto",
    )
    seed: int = option(0, help="seed of every random choice", within="[0, 4294967295]", metavar="N")
    blocks: tuple[int, ...] | None = option(
        None, help="block indices (model.model[I])", within="[0, inf)", why="blocks count from 0", metavar="I"
    )
    layers: tuple[str, ...] | None = option(None, help="layer paths, e.g. model.2.cv1.conv", metavar="PATH")
    exclude: tuple[str, ...] = option((), help="layers never to prune", metavar="PATH")
    depth: float | Literal["auto"] = option(
        0.0,
        help="fraction of the removable repeated blocks (C2f/C3k2/C3 bottlenecks, ...) to remove whole, "
        "those that change their input least, before channels; 0: channels only; auto: with a target, "
        "the count whose result's predictions differ least from the original's",
        within="[0, 1]",
        why="it is the fraction of the removable blocks to remove, e.g. 0.5",
        kind="a fraction such as 0.3, or auto",
        metavar="F|auto",
    )
    calib_images: int = option(
        64, help="calibration images for taylor and act-*", within="[1, inf)", metavar="N"
    )
    calib_imgsz: int | None = option(
        None,
        help="calibration image size (default: the model's training size)",
        within="[1, inf)",
        metavar="N",
    )

    def __post_init__(self) -> None:
        check(self)
        self._check_runtime()
        if self.round_to == AUTO:
            object.__setattr__(self, "round_to", channel_multiple(self.runtime or Runtime.ORT, self.int8))
        self._check_amount()

    def _check_runtime(self) -> None:
        settings(self.runtime or Runtime.ORT, self.int8, self.threads)  # refuses INT8 on ONNX Runtime, ...
        if self.target_latency is not None:
            goal = latency_goal(self.target_latency)
            object.__setattr__(
                self, "target_latency", str(goal).replace(" ", "") if goal.relative else goal.value
            )
            if self.runtime is Runtime.TENSORRT:
                raise OptionError(
                    "`target_latency` is measured on the CPU runtimes (`runtime='ort'` or "
                    "`runtime='openvino'`); TensorRT is not supported for it yet."
                )
        elif self.threads is not None or self.int8:
            raise OptionError(
                "`threads` and `int8` say how `target_latency` is measured; give `target_latency` too, "
                "or leave them out."
            )

    def _check_amount(self) -> None:
        targets = [name for name in AMOUNT[1:] if getattr(self, name) is not None]
        if len(targets) + (self.ratio is not None) > 1:
            given = ["ratio"] * (self.ratio is not None) + targets
            raise OptionError(
                f"give one of `ratio`, `target_flops`, `target_params` and `target_latency`, not "
                f"{' and '.join(given)} "
                f"({', '.join(f'`{name}={getattr(self, name)!r}`' for name in given)})."
            )
        if self.depth == AUTO and not targets:
            raise OptionError(
                "`depth='auto'` chooses how many blocks to remove on the way to a target: give "
                "`target_flops`, `target_params` or `target_latency`"
                + (f" (not `ratio={self.ratio!r}`)" if self.ratio is not None else "")
                + ", or a fraction such as `depth=0.3`."
            )
        if self.ratio is None and not targets:
            object.__setattr__(self, "ratio", DEFAULT_RATIO)
        if self.ratio == AUTO:
            if self.allocation is Allocation.GLOBAL:
                raise OptionError(
                    "`ratio='auto'` lets the criterion choose each group's width; it cannot be combined "
                    "with `allocation='global'`. Pass a number such as `ratio=0.5`, or drop "
                    "`allocation='global'`."
                )
        elif self.ratio is not None and self.allocation is Allocation.LOCAL and self.ratio > self.max_ratio:
            raise OptionError(
                f"`ratio={self.ratio!r}` removes more of each group than `max_ratio={self.max_ratio!r}` "
                f"allows; pass `max_ratio={self.ratio!r}` as well if you mean it."
            )

    @property
    def latency(self) -> LatencyGoal | None:
        """The latency target, if one is set."""
        return None if self.target_latency is None else latency_goal(self.target_latency)

    @property
    def target(self) -> tuple[Metric, float] | None:
        """The params or FLOPs target, if one is set (the latency target is `latency`)."""
        if self.target_flops is not None:
            return Metric.FLOPS, self.target_flops
        return None if self.target_params is None else (Metric.PARAMS, self.target_params)

    def to_json(self) -> dict[str, Any]:
        """The options as plain JSON data (enums as their values, tuples as lists); `from_json` reads
        them back equal.

        Example:
            >>> o = PruneOptions(target_flops=0.5, blocks=(1, 2), round_to=8)
            >>> o.to_json()["blocks"], PruneOptions.from_json(o.to_json()) == o
            ([1, 2], True)
        """
        return to_json(self)

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> PruneOptions:
        """Options from `to_json`'s data; a missing key takes its default, an unknown one is refused."""
        refuse_unknown(doc, (f.name for f in dataclasses.fields(cls)), "option keys")
        return cls(**doc)
