"""The split between depth and width: how many whole blocks to remove before channels, when a target
(FLOPs, params, latency) could be met by either.

`depth="auto"` makes this one search over both axes with one currency: for a number `k` of blocks
(the first `k` of one ranking, so the candidates are nested), the blocks go and the channels meet
the rest of the target as usual; the candidate's cost is the *output distortion* of the result
against the original, measured image by image on the same images (`distortion`, a mean with its
standard error, `Measured`). Distortion is the common currency because block and channel scores are
not on one scale (a block's change and a channel's L1 norm are different quantities), while what
either removal does to the model's predictions is.

The search evaluates a coarse grid of `k` and then halves the bracket around the least (between
its evaluated neighbours) until the neighbours are adjacent: for 10 removable blocks, 5 to 9
candidates, each a full channel allocation. It keeps the fewest blocks whose distortion is within
one standard error of the least. A candidate that cannot meet the target (depth alone already below
it; channels alone cannot get down to it) is infeasible, and the reason is kept.

Framework-free: the caller supplies the ranking and the evaluation.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from yoloprune.errors import OptionError


@dataclass(frozen=True)
class Measured:
    """A distortion measured image by image: the `mean`, and its standard `error` (0 from one image)."""

    mean: float
    error: float = 0.0

    @classmethod
    def of(cls, values: Sequence[float]) -> Measured:
        """
        Example:
            >>> Measured.of([0.2, 0.4])
            Measured(mean=0.30000000000000004, error=0.1)
        """
        v = np.asarray(values, dtype=float)
        return cls(float(v.mean()), float(v.std(ddof=1) / np.sqrt(len(v))) if len(v) > 1 else 0.0)


@dataclass(frozen=True)
class Split:
    """One candidate of the search: `blocks` removed, then channels to the target; `distortion` of
    the result's predictions against the original's, the mean over the images, and its standard
    `error` (None: infeasible, and `reason` says why)."""

    blocks: int
    distortion: float | None
    error: float | None = None
    reason: str = ""

    def as_json(self) -> dict:
        out: dict = {"blocks": self.blocks, "distortion": self.distortion, "error": self.error}
        if self.reason:
            out["reason"] = self.reason
        return out


def grid(count: int, points: int = 5) -> list[int]:
    """`points` block counts spread evenly over 0..`count`, without repeats.

    Example:
        >>> grid(10), grid(3), grid(0)
        ([0, 2, 5, 8, 10], [0, 1, 2, 3], [0])
    """
    return sorted({round(i * count / max(points - 1, 1)) for i in range(points)})


def search_split(
    count: int, evaluate: Callable[[int], Measured], points: int = 5
) -> tuple[int, tuple[Split, ...]]:
    """The number of blocks in 0..`count` to remove, by `evaluate` (the distortion of that split,
    measured image by image; raising `OptionError` when the split cannot meet the target), and every
    candidate tried, in order of `blocks`. The search closes in on the least mean distortion; the
    choice is the fewest blocks whose mean is within one standard error of that least (the
    one-standard-error rule: a difference the images cannot tell apart does not justify removing
    more). Raises an `OptionError` quoting the channel-only split's when none is feasible.

    Example:
        >>> best, tried = search_split(10, lambda k: Measured((k - 6) ** 2, 1.5))
        >>> best, [s.blocks for s in tried]
        (5, [0, 2, 3, 4, 5, 6, 7, 8, 10])
    """
    tried: dict[int, Split] = {}
    errors: dict[int, OptionError] = {}

    def run(k: int) -> None:
        if k in tried or not 0 <= k <= count:
            return
        try:
            measured = evaluate(k)
        except OptionError as e:
            errors[k] = e
            tried[k] = Split(k, None, None, str(e))
        else:
            tried[k] = Split(k, measured.mean, measured.error)

    for k in grid(count, points):
        run(k)
    while (best := _best(tried)) is not None:  # halve the bracket around the best until it is tight
        lo = max((k for k in tried if k < best), default=best)
        hi = min((k for k in tried if k > best), default=best)
        fresh = [k for k in ((lo + best) // 2, (best + hi + 1) // 2) if k not in tried]
        if not fresh:
            break
        for k in fresh:
            run(k)
    best = _best(tried)
    if best is not None:
        bar = tried[best].distortion + tried[best].error
        best = min(s.blocks for s in tried.values() if s.distortion is not None and s.distortion <= bar)
    else:
        first = errors.get(0) or next(iter(errors.values()))
        raise OptionError(
            f"`depth='auto'` tried removing 0 to {count} whole blocks before the channels, and no split "
            f"meets the target. {'Without blocks' if 0 in errors else 'The first'}: {first}"
        ) from first
    return best, tuple(tried[k] for k in sorted(tried))


def _best(tried: dict[int, Split]) -> int | None:
    feasible = [s for s in tried.values() if s.distortion is not None]
    return min(feasible, key=lambda s: (s.distortion, s.blocks)).blocks if feasible else None


def distortion(outputs: Sequence[torch.Tensor], reference: Sequence[torch.Tensor]) -> float:
    """How far `outputs` are from `reference`: the relative RMS error ||x - y|| / ||y|| of every
    channel (dim 1) of every tensor, averaged, so that class scores count as much as pixel-scale
    boxes. 0 when they are equal; about 1 when the outputs are unrelated to the reference.

    Example:
        >>> y = torch.tensor([[[1.0, -1.0], [100.0, 300.0]]])  # (B, C, N)
        >>> distortion([y], [y]), round(distortion([y * 1.1], [y]), 3)
        (0.0, 0.1)
    """
    if len(outputs) != len(reference) or any(
        x.shape != y.shape for x, y in zip(outputs, reference, strict=False)
    ):
        raise ValueError("distortion: the outputs do not have the reference's shapes")
    per_channel = []
    for x, y in zip(outputs, reference, strict=True):
        x, y = (
            t.double().reshape(1, -1) if t.ndim < 2 else t.double().transpose(0, 1).flatten(1) for t in (x, y)
        )
        norm = y.norm(dim=1)  # (C,)
        floor = 1e-3 * norm.max().clamp_min(1e-12)  # a channel ~0 everywhere: measured absolutely
        per_channel.append((x - y).norm(dim=1) / torch.maximum(norm, floor))
    return torch.cat(per_channel).mean().item() if per_channel else 0.0
