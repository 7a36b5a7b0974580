"""Progress of long work on stderr: what is running, k of N, time spent and time left.

Shared by every command that loops over slow steps (`bench`, `sensitivity`, `run`). One line per
step, so logs stay readable when stderr is not a terminal. Time left is the mean time of the
finished steps times the steps to go.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TextIO, TypeVar

T = TypeVar("T")


def format_duration(seconds: float) -> str:
    """`75.4` -> "1:15"; `3725` -> "1:02:05"."""
    m, s = divmod(round(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class Progress:
    """Report the steps of one job: `start(what)` before each, `done()` at the end.

    Example:
        >>> p = Progress(2, "bench", stream=sys.stdout, clock=iter(range(0, 100, 10)).__next__)
        >>> p.start("model a")
        bench [1/2] model a (elapsed 0:10)
        >>> p.start("model b")
        bench [2/2] model b (elapsed 0:20, about 0:20 left)
        >>> p.done()
        bench: 2 steps in 0:30
    """

    def __init__(
        self,
        total: int,
        title: str,
        stream: TextIO | None = None,
        clock: Callable[[], float] = time.monotonic,
        enabled: bool = True,
    ) -> None:
        self.total, self.title, self.enabled = total, title, enabled
        self.stream, self.clock = stream, clock
        self.started = clock()
        self.step = 0

    def start(self, what: str) -> None:
        """Step `step + 1` of `total` begins: print which, the time so far and an estimate of the rest."""
        elapsed = self.clock() - self.started
        eta = (
            f", about {format_duration(elapsed / self.step * (self.total - self.step))} left"
            if self.step
            else ""
        )
        self.step += 1
        self._print(
            f"{self.title} [{self.step}/{self.total}] {what} (elapsed {format_duration(elapsed)}{eta})"
        )

    def done(self) -> None:
        self._print(f"{self.title}: {self.step} steps in {format_duration(self.clock() - self.started)}")

    def _print(self, line: str) -> None:
        if self.enabled:
            print(line, file=self.stream or sys.stderr, flush=True)


def track(
    items: Iterable[T],
    title: str,
    label: Callable[[T], str] = str,
    total: int | None = None,
    enabled: bool = True,
) -> Iterator[T]:
    """Yield `items`, reporting each as a step of `Progress` (`total` defaults to `len(items)`).

    Example:
        >>> for path in track(["a.pt", "b.pt"], "bench", enabled=False):
        ...     pass
    """
    items = list(items) if total is None else items
    progress = Progress(len(items) if total is None else total, title, enabled=enabled)
    for item in items:
        progress.start(label(item))
        yield item
    progress.done()
