"""Fields declared once: a frozen dataclass's field carries its help text and its check in its
metadata (`option`), and `check` validates an instance against its annotations and those checks, with
errors that name the field (`OptionError`). `PruneOptions` and `Recipe` are declared so, and the
command line builds its flags from the same metadata. Importable without torch.

Types understood: int, float (an int is taken as a float), str, bool, None, Literal values (e.g.
"auto"), Enum subclasses (by value), tuple[T, ...] (from a list or tuple), dict, Any, and unions of
these. A range is an interval: "(0, 1]", "[1, inf)".

Example:
    >>> from dataclasses import dataclass
    >>> @dataclass(frozen=True)
    ... class Request:
    ...     keep: float = option(0.5, help="fraction to keep", within="(0, 1]")
    ...     def __post_init__(self) -> None:
    ...         check(self)
    >>> Request(1).keep
    1.0
    >>> Request(2)
    Traceback (most recent call last):
    ...
    yoloprune.errors.OptionError: keep=2 is outside (0, 1].
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import math
import re
import types
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from enum import Enum
from numbers import Integral, Real
from typing import Any, Literal

from yoloprune.errors import OptionError, YoloPruneError

_INTERVAL = re.compile(r"([\[(])\s*(\S+)\s*,\s*(\S+)\s*([\])])")


@dataclasses.dataclass(frozen=True)
class Spec:
    """What a field declares besides its type and default (see `option`)."""

    help: str
    within: str | None = None
    why: str = ""
    kind: str | None = None
    choices: Callable[[], Sequence[str]] | None = None
    metavar: str | None = None

    def contains(self, value: object) -> bool:
        """Whether a number lies in `within` (NaN never does); True without a range or for a non-number."""
        if self.within is None or isinstance(value, bool) or not isinstance(value, Real):
            return True
        m = _INTERVAL.fullmatch(self.within)
        low, high = float(m[2]), float(m[3])
        above = value > low if m[1] == "(" else value >= low
        below = value < high if m[4] == ")" else value <= high
        return above and below

    def bounds(self) -> str:
        """`within` in words: "is outside (0, 1]", or "must be 1 or more" for a range without an end."""
        m = _INTERVAL.fullmatch(self.within or "")
        if m and math.isinf(float(m[3])):
            return f"must be {m[2]} or more" if m[1] == "[" else f"must be more than {m[2]}"
        return f"is outside {self.within}"


def option(
    default: Any = dataclasses.MISSING,
    *,
    help: str,
    within: str | None = None,
    why: str = "",
    kind: str | None = None,
    choices: Callable[[], Sequence[str]] | None = None,
    metavar: str | None = None,
    **field: Any,
) -> Any:
    """A dataclass field that declares its `help` text and its check: `within` an interval, `why`
    (said when a value is outside it), `kind` (how to describe a right value, when the type's own
    words are not enough), `choices` (a function giving the allowed strings); `metavar` shows the value's
    shape (PATH, N). The other keywords (`default_factory`, `kw_only`, ...) go to `dataclasses.field`."""
    spec = Spec(help, within, why, kind, choices, metavar)
    if within is not None and not _INTERVAL.fullmatch(within):
        raise ValueError(f"within={within!r} is not an interval such as '(0, 1]'")
    return dataclasses.field(default=default, metadata={"spec": spec}, **field)


def spec_of(f: dataclasses.Field) -> Spec:
    """A field's `Spec` (a bare one for a field declared without `option`)."""
    return f.metadata.get("spec") or Spec(help="")


@functools.cache
def hints(cls: type) -> dict[str, Any]:
    """The evaluated annotations of a dataclass's fields."""
    return typing.get_type_hints(cls)


class _Mismatch(Exception):
    pass


def check(obj: object) -> None:
    """Validate every field of the frozen dataclass `obj`, in order, and store each value in its
    declared type (a list as a tuple, an Enum's value as the Enum, an int as a float); raise
    OptionError naming the first field that is wrong. Call it first in `__post_init__`."""
    for f in dataclasses.fields(obj):
        value, spec, hint = getattr(obj, f.name), spec_of(f), hints(type(obj))[f.name]
        object.__setattr__(obj, f.name, checked(f.name, value, hint, spec))


def checked(name: str, value: object, hint: Any, spec: Spec) -> Any:
    """`value` as the type `hint` wants it, checked against `spec`."""
    given = value
    try:
        value = _coerce(value, hint)
    except _Mismatch:
        enum = enum_of(hint)
        if enum is not None and isinstance(value, str):
            raise OptionError(
                f"unknown `{name}={value!r}`; choose one of {', '.join(e.value for e in enum)}."
            ) from None
        raise OptionError(f"`{name}={value!r}` must be {spec.kind or describe(hint)}.") from None
    if spec.choices is not None and isinstance(value, str):
        names = spec.choices()
        if value not in names:
            raise OptionError(f"unknown `{name}={value!r}`; choose one of {', '.join(names)}.")
    items = zip(value, given, strict=True) if isinstance(value, tuple) else ((value, given),)
    for v, shown in items:  # a range holds for every item; the message shows the value as given
        if not spec.contains(v):
            why = f": {spec.why}" if spec.why else ""
            raise OptionError(f"`{name}={shown!r}` {spec.bounds()}{why}.")
    return value


def _coerce(value: object, hint: Any) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        for arm in args:
            try:
                return _coerce(value, arm)
            except _Mismatch:
                pass
        raise _Mismatch
    if origin is Literal:
        if any(type(value) is type(a) and value == a for a in args):
            return value
        raise _Mismatch
    if hint is Any:
        return value
    if hint is type(None) and value is None:
        return None
    if hint is bool and isinstance(value, bool):
        return value
    if isinstance(value, bool):  # True is no number
        raise _Mismatch
    if hint is int and isinstance(value, Integral):
        return int(value)
    if hint is float and isinstance(value, Real):
        try:
            return float(value)
        except OverflowError:
            raise _Mismatch from None
    if hint is str and isinstance(value, str):
        return value
    if isinstance(hint, type) and issubclass(hint, Enum):
        try:
            return hint(value)
        except ValueError:
            raise _Mismatch from None
    if origin is tuple and isinstance(value, (list, tuple)):
        return tuple(_coerce(v, args[0]) for v in value)
    if (hint is dict or origin is dict) and isinstance(value, dict):
        return dict(value)
    if isinstance(hint, type) and isinstance(value, hint):  # e.g. a dataclass, checked when it was made
        return value
    raise _Mismatch


def arms(hint: Any) -> tuple[Any, ...]:
    """The types a union allows (`float | None`: float, None), or the type itself."""
    return typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)


def enum_of(hint: Any) -> type[Enum] | None:
    """The Enum a field's type allows, if any."""
    return next((a for a in arms(hint) if isinstance(a, type) and issubclass(a, Enum)), None)


def describe(hint: Any) -> str:
    """A type in words: "a number or auto", "a list of whole numbers" (None is left out).

    Example:
        >>> describe(float | Literal["auto"] | None), describe(tuple[int, ...])
        ('a number or auto', 'a list of whole numbers')
    """
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        words = [describe(a) for a in args if a is not type(None)]
        return " or ".join(words) if len(words) < 3 else ", ".join(words[:-1]) + f" or {words[-1]}"
    if origin is Literal:
        return " or ".join(map(str, args))
    if origin is tuple:
        return "a list of " + _plural(describe(args[0]))
    if isinstance(hint, type) and issubclass(hint, Enum):
        return "one of " + ", ".join(e.value for e in hint)
    names = {
        int: "a whole number",
        float: "a number",
        str: "a string",
        bool: "true or false",
        dict: "a mapping",
    }
    return names.get(hint if origin is None else origin, getattr(hint, "__name__", str(hint)))


def _plural(words: str) -> str:
    return words.removeprefix("a ") + "s" if words.startswith("a ") else words


def to_json(obj: object) -> dict[str, Any]:
    """The fields of the dataclass `obj` as plain JSON data: Enums as their values, tuples as lists."""

    def plain(value: object) -> object:
        if isinstance(value, Enum):
            return value.value
        if isinstance(value, tuple):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value

    return {f.name: plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}


def refuse_unknown(doc: Mapping[str, object], names: Iterable[str], what: str) -> None:
    """Refuse keys of `doc` that are not `names`, suggesting the closest one.

    Example:
        >>> refuse_unknown({"epoch": 3}, ["epochs", "steps"], "recipe keys")
        Traceback (most recent call last):
        ...
        yoloprune.errors.YoloPruneError: unknown recipe keys 'epoch' (did you mean 'epochs'?); the keys ...
    """
    names = sorted(names)
    unknown = [k for k in doc if k not in names]
    if unknown:
        hints = [f"{k!r}" + _close(str(k), names) for k in unknown]
        raise YoloPruneError(f"unknown {what} {', '.join(hints)}; the keys are {', '.join(names)}.")


def _close(name: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(name, choices, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""
