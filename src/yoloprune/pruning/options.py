"""`PruneOptions`: how `choose` picks channels, validated up front with errors that name the flag."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import Enum
from numbers import Integral

from yoloprune._hardware import channel_multiple
from yoloprune.errors import YoloPruneError
from yoloprune.importance import CRITERIA, Aggregation
from yoloprune.pruning.allocate import Limits, Metric

AUTO = "auto"  # `--round-to auto`: this machine's channel block


def resolve_round_to(value: int | str) -> int:
    """`--round-to` as the integer a plan records: a positive integer as given, or "auto", the channel
    block of this machine's inference runtime (16 with AVX-512F, else 8; see `yoloprune._hardware`).

    Example:
        >>> resolve_round_to(8), resolve_round_to("auto") in (8, 16)
        (8, True)
    """
    if value == AUTO:
        return channel_multiple()
    if isinstance(value, bool) or not isinstance(value, Integral) or value < 1:
        raise YoloPruneError(
            f"--round-to must be a positive integer or auto, got {value!r}; e.g. 8, or auto for this "
            "machine's channel block."
        )
    return int(value)


class Allocation(str, Enum):
    """How channels are spread over groups (`--global` picks global)."""

    LOCAL = "local"  # the same fraction of every group
    GLOBAL = "global"  # one threshold on mean-normalised scores across all selected groups


@dataclass(frozen=True)
class PruneOptions:
    """How to choose channels. `scope` holds module paths; None means every prunable group.

    Exactly one of `ratio`, `target_flops` and `target_params` says how much to remove. The ratio is
    each group's fraction (local) or the fraction of all selected channels (global); a target is the
    fraction of the original FLOPs or params to keep, met within 2%. Strings are accepted for the
    enums, as read back from a plan's JSON. `round_to="auto"` is resolved here, once, to this
    machine's channel block (`resolve_round_to`), so the options and the plan hold the number.

    Example:
        >>> PruneOptions(ratio=None, target_flops=0.5, allocation="global").allocation
        <Allocation.GLOBAL: 'global'>
    """

    ratio: float | str | None = 0.5  # or "auto": the criterion decides (see `Ranking.keep`)
    importance: str = "l1"
    round_to: int | str = 1  # or "auto"; always an int after construction
    seed: int = 0
    scope: tuple[str, ...] | None = None
    exclude: tuple[str, ...] = ()
    allocation: Allocation = Allocation.LOCAL
    max_ratio: float = 0.9
    min_channels: int = 1
    target_flops: float | None = None
    target_params: float | None = None
    aggregation: Aggregation = Aggregation.MEAN

    def __post_init__(self) -> None:
        for name, kind in (("allocation", Allocation), ("aggregation", Aggregation)):
            try:
                object.__setattr__(self, name, kind(getattr(self, name)))
            except ValueError:
                raise YoloPruneError(
                    f"unknown {name} {getattr(self, name)!r}; choose one of "
                    f"{', '.join(k.value for k in kind)}."
                ) from None
        if self.importance not in CRITERIA:
            raise YoloPruneError(
                f"unknown importance {self.importance!r}; choose one of {', '.join(sorted(CRITERIA))}."
            )
        object.__setattr__(self, "round_to", resolve_round_to(self.round_to))
        if not 0.0 < self.max_ratio <= 1.0:
            raise YoloPruneError(
                f"--max-ratio {self.max_ratio} is outside (0, 1]: it is the most any group may lose, "
                "e.g. 0.9."
            )
        if self.min_channels < 1:
            raise YoloPruneError(f"--min-channels must be at least 1, got {self.min_channels}.")
        self._check_amount()

    def _check_amount(self) -> None:
        given = ((Metric.FLOPS, self.target_flops), (Metric.PARAMS, self.target_params))
        targets = [(f"--target-{m.value}", t) for m, t in given if t is not None]
        if len(targets) + (self.ratio is not None) != 1:
            names = [name for name, _ in targets] + (["--ratio"] * (self.ratio is not None))
            raise YoloPruneError(
                f"give exactly one of --ratio, --target-flops and --target-params (got "
                f"{', '.join(names) or 'none'})."
            )
        for name, t in targets:
            if not (isinstance(t, (int, float)) and 0.0 < t <= 1.0):
                raise YoloPruneError(
                    f"{name} {t} is outside (0, 1]: it is the fraction of the original to keep, so 0.5 "
                    "halves it."
                )
        if self.ratio is None:
            return
        if self.ratio == "auto":
            if self.allocation is Allocation.GLOBAL:
                raise YoloPruneError(
                    "--ratio auto lets the criterion choose each group's width; it cannot be combined "
                    "with --global. Pass a number such as --ratio 0.5, or drop --global."
                )
        elif not (isinstance(self.ratio, (int, float)) and 0.0 <= self.ratio < 1.0):
            raise YoloPruneError(
                f"--ratio {self.ratio} is outside [0, 1): it is the fraction of each group's channels to "
                "remove, so 0.5 removes half. Pass a value such as 0.3."
            )
        elif self.allocation is Allocation.LOCAL and self.ratio > self.max_ratio:
            raise YoloPruneError(
                f"--ratio {self.ratio} removes more of each group than --max-ratio {self.max_ratio} "
                f"allows; pass --max-ratio {self.ratio} as well if you mean it."
            )

    @property
    def target(self) -> tuple[Metric, float] | None:
        """The params or FLOPs target, if one is set."""
        if self.target_flops is not None:
            return Metric.FLOPS, self.target_flops
        return None if self.target_params is None else (Metric.PARAMS, self.target_params)

    @property
    def limits(self) -> Limits:
        return Limits(self.max_ratio, self.min_channels, self.round_to)

    def as_json(self) -> dict:
        """The options as plain JSON data (enums as their values)."""
        doc = asdict(self)
        doc.update(allocation=self.allocation.value, aggregation=self.aggregation.value)
        return doc
