"""Ultralytics without its chatter: `quiet()` hides its info logging (model summaries, dataset scans)
for a block and keeps its warnings. The one place yoloprune turns Ultralytics' logger down (and any
other library's logger it names, e.g. NNCF's)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

from ultralytics.utils import LOGGER


@contextlib.contextmanager
def quiet(logger: logging.Logger = LOGGER) -> Iterator[None]:
    """Hide `logger`'s info logging (Ultralytics' by default) inside the block, keep its warnings; the
    level is restored after.

    Example:
        >>> with quiet():
        ...     LOGGER.info("a model summary nobody asked for")
    """
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)
