"""Atomic file writes: a reader sees the old file or the complete new one, never a partial one."""

from __future__ import annotations

import os
import secrets
import shutil
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
    tmp = _temporary(path, "tmp")
    try:
        write_fn(tmp)
        os.replace(tmp, path)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        if isinstance(e, YoloPruneError) or not isinstance(e, Exception):
            raise
        raise _failed(path, e) from e
    return path


def atomic_write_dir(
    path: str | os.PathLike[str],
    write_fn: Callable[[Path], object],
    replaceable: Callable[[Path], bool],
    what: str,
) -> Path:
    """Fill a new temporary folder beside `path` with `write_fn(tmp)`, then rename it onto `path`.

    An existing `path` is replaced only when `replaceable(path)` says it is `what` (e.g. an older
    folder of the same kind): it is moved aside, the new folder renamed in, then the old one deleted,
    so a reader sees the old folder, no folder, or the complete new one. On any error the temporary
    folder is deleted and `path` is left as it was; errors are raised as in `atomic_write`.

    Example:
        >>> atomic_write_dir("out.d", lambda tmp: (tmp / "a.txt").write_text("a"), lambda p: True, "a folder")
        PosixPath('out.d')
    """
    path = Path(path)
    if path.exists() and not replaceable(path):
        raise YoloPruneError(
            f"Cannot write {path}: it already exists and is not {what}, so it is not replaced. Choose "
            "another path or remove it first."
        )
    tmp, old = _temporary(path, "tmp"), _temporary(path, "old")
    try:
        tmp.mkdir()
        write_fn(tmp)
        if path.exists():
            os.replace(path, old)
        try:
            os.replace(tmp, path)
        except BaseException:
            if old.exists():
                os.replace(old, path)
            raise
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, YoloPruneError) or not isinstance(e, Exception):
            raise
        raise _failed(path, e) from e
    shutil.rmtree(old, ignore_errors=True)
    return path


def _temporary(path: Path, kind: str) -> Path:
    """A hidden name beside `path`, so the final os.replace is a same-filesystem rename."""
    if not path.parent.is_dir():
        raise YoloPruneError(
            f"Cannot write {path}: directory {path.parent} does not exist; create it first or choose "
            "another path."
        )
    return path.with_name(f".{path.name}.{secrets.token_hex(4)}.{kind}")


def _failed(path: Path, e: Exception) -> YoloPruneError:
    """A failed write, explained."""
    reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
    return YoloPruneError(
        f"Could not write {path}: {type(e).__name__}: {reason}. Nothing was written; check that "
        f"{path.parent} is writable and has free space, and that {path} is not a directory."
    )
