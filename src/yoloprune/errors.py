"""The one exception type yoloprune raises for problems a user can fix."""

from __future__ import annotations


class YoloPruneError(Exception):
    """A problem the user can act on; the message says what was wrong, where, and what to do.

    The message is one paragraph that names the file or layer involved. Internal bugs are not
    wrapped in this type, so a traceback of another type means a bug in yoloprune.

    Example:
        >>> raise YoloPruneError("Checkpoint best.pt not found; pass a path to your own checkpoint.")
        Traceback (most recent call last):
        ...
        yoloprune.errors.YoloPruneError: Checkpoint best.pt not found; pass a path to your own checkpoint.
    """
