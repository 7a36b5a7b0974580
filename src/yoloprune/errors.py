"""The exception types yoloprune raises for problems a user can fix."""

from __future__ import annotations

import ast
import re
from collections.abc import Callable


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


def first_line(error: BaseException) -> str:
    r"""A caught error in one line, to quote inside a message that goes on to say what to do: its
    type and the first line of its message (just the type when the message is empty).

    Example:
        >>> first_line(ValueError("shapes differ\n  (a long explanation)")), first_line(KeyError())
        ('ValueError: shapes differ', 'KeyError')
    """
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__


_FIELD = re.compile(r"`([a-z][a-z0-9_]*)(?:=([^`]*))?`")  # `name` or `name=VALUE` (VALUE as repr writes it)


class OptionError(YoloPruneError):
    """An option that does not work: a field of a request (`PruneOptions`, a recipe) or an argument of a
    library function (`criteria`, `data`, `resume`) of the wrong type, out of range, in a combination
    that does not work, or naming a file that cannot be used.

    Its text marks every field it names as `name` or `name=VALUE` (VALUE as Python's repr writes it).
    `str(e)` shows them as a Python caller writes them (`max_ratio=2`); `worded(render)` shows them in
    other words: the command line as flags (`--max-ratio 2`), a recipe file as keys (`max_ratio: 2`).
    `fields` lists the names, in order.

    Example:
        >>> e = OptionError("`max_ratio=2` is outside (0, 1]; lower `max_ratio`.")
        >>> str(e), e.fields
        ('max_ratio=2 is outside (0, 1]; lower max_ratio.', ('max_ratio',))
        >>> e.worded(lambda name, value: f"{name}:" if value is None else f"{name}: {plain(value)}")
        'max_ratio: 2 is outside (0, 1]; lower max_ratio:.'
    """

    def __init__(self, text: str) -> None:
        self.text = text
        self.fields = tuple(dict.fromkeys(m[1] for m in _FIELD.finditer(text)))
        super().__init__(self.worded(lambda name, value: name if value is None else f"{name}={value}"))

    def worded(self, render: Callable[[str, str | None], str]) -> str:
        """The message with each marked field as `render(name, VALUE)` (VALUE None for a bare name)."""
        return _FIELD.sub(lambda m: render(m[1], m[2]), self.text)


def prefixed(prefix: str, error: YoloPruneError) -> YoloPruneError:
    """`error`'s message after `prefix` (which marks no field), of the same kind: an `OptionError` keeps
    its fields, so every caller still words them its own way.

    Example:
        >>> e = prefixed("step 2: ", OptionError("`max_ratio=2` is too high."))
        >>> str(e), e.fields
        ('step 2: max_ratio=2 is too high.', ('max_ratio',))
    """
    if isinstance(error, OptionError):
        return OptionError(prefix + error.text)
    return YoloPruneError(prefix + str(error))


def unmarked(text: str) -> str:
    """Text from elsewhere (a path, another library's message) made safe to quote in an `OptionError`:
    its backticks become quotes, so none of it reads as a field.

    Example:
        >>> str(OptionError(f"`data`: {unmarked('see `x`')}"))
        "data: see 'x'"
    """
    return text.replace("`", "'")


def plain(value: str) -> str:
    """A marked VALUE as a person types it outside Python: `'auto'` as auto, `(1, 2)` as 1 2.

    Example:
        >>> plain("'auto'"), plain("[1, 2]"), plain("0.5"), plain("None")
        ('auto', '1 2', '0.5', 'None')
    """
    try:
        obj = ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return value
    if isinstance(obj, (list, tuple)):
        return " ".join(map(str, obj))
    return str(obj)
