"""Ultralytics without its chatter: `quiet()` hides its info logging (model summaries, dataset scans)
for a block and keeps its warnings. The one place yoloprune turns Ultralytics' logger down."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

from ultralytics.utils import LOGGER


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Hide Ultralytics' info logging inside the block, keep its warnings; the level is restored after.

    Example:
        >>> with quiet():
        ...     LOGGER.info("a model summary nobody asked for")
    """
    level = LOGGER.level
    LOGGER.setLevel(logging.WARNING)
    try:
        yield
    finally:
        LOGGER.setLevel(level)
