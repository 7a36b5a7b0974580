"""Atomic file writes: a reader sees the old file or the complete new one, never a partial one."""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from pathlib import Path

from yoloprune.errors import YoloPruneError


def atomic_write(path: str | os.PathLike[str], write_fn: Callable[[Path], object]) -> Path:
    """Call `write_fn(tmp)` on a temporary path beside `path`, then rename it onto `path`.

    On any error the temporary file is deleted, `path` is left as it was, and the error is
    raised as a YoloPruneError naming `path` (a YoloPruneError from `write_fn` passes through).
    The parent directory must exist: it is not created.

    Example:
        >>> atomic_write("plan.json", lambda tmp: tmp.write_text("{}"))
        PosixPath('plan.json')
    """
    path = Path(path)
    if not path.parent.is_dir():
        raise YoloPruneError(
            f"Cannot write {path}: directory {path.parent} does not exist; create it first or choose "
            "another path."
        )
    # A hidden name in the same directory, so the final os.replace is a same-filesystem rename.
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        write_fn(tmp)
        os.replace(tmp, path)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        if isinstance(e, YoloPruneError) or not isinstance(e, Exception):
            raise
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise YoloPruneError(
            f"Could not write {path}: {type(e).__name__}: {reason}. Nothing was written; check that "
            f"{path.parent} is writable and has free space, and that {path} is not a directory."
        ) from e
    return path
