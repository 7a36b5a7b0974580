"""Progress of long work on stderr: what is running, k of N, time spent and time left.

Two tools. `Progress` reports the steps of a command that loops over slow steps (`bench`,
`sensitivity`, `run`), one line per step. `phase` reports one stretch of library work
(calibration, criteria, probe, target search, checks) to the process-wide reporter: silent unless
`enable`d (the CLI enables it; a Python caller may too, or use `reporting()` for one block), and
even then silent for a phase that ends within `DELAY` seconds. A longer phase says what it is
doing, then at most every `INTERVAL` seconds how far it is, then how long it took; nested phases
are indented. Lines, never carriage returns, so logs stay readable when stderr is not a terminal.
Time left is the mean time of the finished steps times the steps to go.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TextIO, TypeVar

from yoloprune.text import plural

T = TypeVar("T")
DELAY = 2.0  # seconds a phase runs before it says anything
INTERVAL = 5.0  # seconds between a phase's progress lines, at least


def format_duration(seconds: float) -> str:
    """`75.4` -> "1:15"; `3725` -> "1:02:05"."""
    m, s = divmod(round(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def _times(elapsed: float, done: float, total: float | None) -> str:
    """ "elapsed 0:20, about 0:40 left" after `done` of `total` steps (no estimate before the first)."""
    left = elapsed / done * (total - done) if done and total is not None else None
    return f"elapsed {format_duration(elapsed)}" + (f", about {format_duration(left)} left" if left else "")


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
        times = _times(elapsed, self.step, self.total)
        self.step += 1
        self._print(f"{self.title} [{self.step}/{self.total}] {what} ({times})")

    def done(self) -> None:
        took = format_duration(self.clock() - self.started)
        self._print(f"{self.title}: {plural(self.step, 'step')} in {took}")

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


@dataclass
class _Reporter:
    stream: TextIO | None
    delay: float
    interval: float
    clock: Callable[[], float]
    open: list[Phase] = field(default_factory=list)  # the running phases, outermost first
    lock: threading.Lock = field(default_factory=threading.Lock)  # the delay timer prints too

    def write(self, phase: Phase, text: str) -> None:
        print("  " * self.open.index(phase) + text, file=self.stream or sys.stderr, flush=True)


_reporter: _Reporter | None = None


def enable(
    stream: TextIO | None = None,
    *,
    delay: float | None = None,
    interval: float | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """Report every `phase` of this process to `stream` (stderr when None, looked up at each line).

    Example:
        >>> enable()  # yoloprune.prune(...) now says what it does when a step takes long
        >>> disable()
    """
    global _reporter
    _reporter = _Reporter(
        stream, DELAY if delay is None else delay, INTERVAL if interval is None else interval, clock
    )


def disable() -> None:
    """Stop reporting phases (the library's default)."""
    global _reporter
    _reporter = None


@contextlib.contextmanager
def reporting(
    stream: TextIO | None = None,
    *,
    delay: float | None = None,
    interval: float | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> Iterator[None]:
    """`enable` for the duration of the block, then restore whatever was set before.

    Example:
        >>> with reporting(sys.stdout, delay=0), phase("probe"):
        ...     pass
        probe ...
        probe: done in 0:00
    """
    global _reporter
    saved = _reporter
    enable(stream, delay=delay, interval=interval, clock=clock)
    try:
        yield
    finally:
        _reporter = saved


class Phase:
    """One running `phase`: call `advance(n)` as its steps finish."""

    def __init__(self, title: str, total: int | None, unit: str, reporter: _Reporter | None) -> None:
        self.title, self.total, self.unit, self.reporter = title, total, unit, reporter
        self.done, self.announced = 0, False
        self.started = self.last = reporter.clock() if reporter is not None else 0.0  # last: last line

    def advance(self, n: int = 1) -> None:
        """`n` more steps are done; report them if the phase has run long enough and the last line
        is at least `INTERVAL` seconds old."""
        self.done += n
        r = self.reporter
        if r is None:
            return
        with r.lock:
            now = r.clock()
            if not self.announced and now - self.started >= r.delay:
                self._announce()
            elif self.announced and now - self.last >= r.interval:
                of = f"/{self.total}" if self.total is not None else ""
                unit = f" {self.unit}" if self.unit else ""
                times = _times(now - self.started, self.done, self.total)
                r.write(self, f"{self.title}: {self.done}{of}{unit} ({times})")
                self.last = now

    def _announce(self) -> None:
        """Say that this phase (and every phase around it not yet announced) is running; holds the lock."""
        r = self.reporter
        for p in r.open[: r.open.index(self) + 1]:
            if not p.announced:
                p.announced, p.last = True, r.clock()
                size = f" ({p.total} {p.unit})" if p.total is not None and p.unit else ""
                r.write(p, f"{p.title}{size} ...")

    def _announce_if_running(self) -> None:
        r = self.reporter
        with r.lock:
            if self in r.open and not self.announced and r.clock() - self.started >= r.delay:
                self._announce()


@contextlib.contextmanager
def phase(title: str, total: int | None = None, unit: str = "") -> Iterator[Phase]:
    """Report the block as one phase of work to the process-wide reporter (see `enable`); nothing
    is printed when reporting is off or the block ends within `DELAY` seconds.

    Example (a clock that moves 4 s per batch; a line at most every 5 s):
        >>> now = [0.0]
        >>> with reporting(sys.stdout, delay=0, interval=5, clock=lambda: now[0]):
        ...     with phase("calibration", total=64, unit="images") as p:
        ...         for batch in range(4):
        ...             now[0] += 4
        ...             p.advance(16)
        calibration (64 images) ...
        calibration: 32/64 images (elapsed 0:08, about 0:08 left)
        calibration: 64/64 images (elapsed 0:16)
        calibration: done in 0:16
    """
    r = _reporter
    p = Phase(title, total, unit, r)
    if r is None:
        yield p
        return
    with r.lock:
        r.open.append(p)
    timer = None
    if r.delay > 0:
        timer = threading.Timer(r.delay, p._announce_if_running)
        timer.daemon = True
        timer.start()
    else:
        p.advance(0)
    ok = False
    try:
        yield p
        ok = True
    finally:
        if timer is not None:
            timer.cancel()
        with r.lock:
            if ok and p.announced:
                r.write(p, f"{title}: done in {format_duration(r.clock() - p.started)}")
            r.open.remove(p)
