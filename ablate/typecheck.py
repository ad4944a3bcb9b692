"""The one type checker of user input: a value against a Python annotation.

Every option a user writes is declared once, as an annotation: a component's options as its
constructor's parameters, the training options and the parts of a study spec as dataclass fields.
:func:`check` reads those annotations, so a type means the same everywhere and every error is one
line of the same shape, naming the dotted key path::

    train.epochs: expected int, got str ('ten')
    ablation.design: expected one of grid, leave_one_out, add_one_in, got 'factorial'

Supported annotations:

- ``int`` (not a bool), ``bool``, ``str``;
- ``float``: an int is accepted and converted; only finite values; a YAML 1.1 string in
  scientific notation (``1e-3``) is read as the float it means (:func:`yaml_float`);
- ``Literal[...]``: one of the listed values;
- unions (``X | None``, ``int | Literal["auto"]``): the first alternative the value's type
  fits;
- ``list[X]``, ``Sequence[X]`` (returned as a list) and ``tuple[X, ...]`` (as a tuple); a list of
  a ``Literal`` is a non-empty subset of its choices, returned in declared order so that two
  spellings of one subset compare equal;
- a dataclass: a mapping of its fields (:func:`check_fields`), returned as an instance.

Values come back in canonical form (``numpy.int64(3)`` -> ``3``, ``2`` -> ``2.0`` for a float),
so checked configs serialise and compare as plain Python.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any

from ablate.errors import ConfigError, key_path, reject_unknown, short, type_error

_NONE = type(None)


class _WrongType(ConfigError):
    """A value of the wrong type (not a bad value of the right one): ``X | None`` rewords it."""


def yaml_float(value: Any) -> Any:
    """Read a YAML 1.1 scalar in scientific notation as the float it means.

    PyYAML (YAML 1.1) reads ``1e-3`` as a string: its floats need a dot and a signed exponent.
    A string with an exponent that Python parses as a float becomes that float; every other value
    is returned unchanged (a quoted ``"0.1"`` stays a string, and so do ``inf`` and ``nan``).
    """
    if isinstance(value, str) and any(c in value for c in "eE"):
        try:
            return float(value)  # 1e999 too: inf, for the finiteness check to refuse
        except ValueError:
            pass
    return value


def describe(annotation: Any) -> str:
    """An annotation the way errors name it: ``int``, ``one of a, b``, ``list of int``."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Literal:
        return "one of " + ", ".join(str(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " or ".join("null" if a is _NONE else describe(a) for a in args)
    if origin in (list, tuple, Sequence):
        return f"list of {describe(args[0])}"
    if dataclasses.is_dataclass(annotation):
        return "a mapping"
    return getattr(annotation, "__name__", str(annotation))


def check(annotation: Any, value: Any, path: str) -> Any:
    """Check ``value`` against ``annotation``; return it in canonical form.

    Args:
        annotation: A supported annotation (see the module docstring).
        value: The value as the user gave it (parsed YAML, a ``--set`` value).
        path: Its dotted key path, the prefix of the error message.

    Raises:
        ConfigError: The value does not fit the annotation.
        TypeError: The annotation is not supported (a programming error, not a user's).
    """
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None and _NONE in args:
            return None
        for alternative in (a for a in args if a is not _NONE):
            try:  # the first alternative the value's type fits; a bad value of it is an error
                return check(alternative, value, path)
            except _WrongType:
                continue
        raise _WrongType(str(type_error(path, describe(annotation), value)))
    if origin is typing.Literal:
        # Compare types too: True == 1, but a bool is not the choice 1.
        if any(value == a and type(value) is type(a) for a in args):
            return value
        raise _WrongType(f"{path}: expected {describe(annotation)}, got {short(value)}")
    if origin in (list, tuple, Sequence):
        return _check_sequence(annotation, value, path)
    if dataclasses.is_dataclass(annotation) and isinstance(annotation, type):
        return annotation(**check_fields(annotation, value, path))
    if annotation is bool:
        if isinstance(value, bool):
            return value
    elif annotation is int:
        if isinstance(value, numbers.Integral) and not isinstance(value, bool):
            return int(value)
    elif annotation is float:
        value = yaml_float(value)
        if isinstance(value, numbers.Real) and not isinstance(value, bool):
            if not math.isfinite(value):
                raise ConfigError(f"{path}: expected a finite number, got {float(value)!r}")
            return float(value)
    elif annotation is str:
        if isinstance(value, str):
            return value
    else:
        raise TypeError(f"{path}: unsupported annotation {annotation!r}")
    raise _WrongType(str(type_error(path, describe(annotation), value)))


def check_fields(cls: type, raw: Any, path: str, what: str = "key") -> dict[str, Any]:
    """Check a mapping against a dataclass's field annotations.

    Args:
        cls: The dataclass.
        raw: The mapping the user gave; keys it leaves out are not returned (the dataclass's
            defaults fill them in).
        path: Dotted key path of the mapping, the prefix of error messages.
        what: What a key is called in the unknown-key error (``key``, ``option``).

    Returns:
        The given keys with checked, canonical values: ``cls(**check_fields(cls, raw, path))``.

    Raises:
        ConfigError: Not a mapping, an unknown key (naming the closest field), or a wrong value.
    """
    raw = mapping(raw, path)
    hints = typing.get_type_hints(cls)
    names = sorted(f.name for f in dataclasses.fields(cls) if f.init)
    reject_unknown(raw, names, path, what)
    return {key: check(hints[key], value, key_path(path, key)) for key, value in raw.items()}


def mapping(value: Any, path: str) -> dict[str, Any]:
    """``value`` as a dict; None (an empty YAML section) is an empty one.

    Raises:
        ConfigError: ``value`` is not a mapping.
    """
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise _WrongType(str(type_error(path, "a mapping", value)))
    return dict(value)


def _check_sequence(annotation: Any, value: Any, path: str) -> list[Any] | tuple[Any, ...]:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is tuple and (len(args) != 2 or args[1] is not Ellipsis):
        raise TypeError(f"{path}: unsupported annotation {annotation!r}; use tuple[X, ...]")
    item = args[0]
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
        raise _WrongType(str(type_error(path, describe(annotation), value)))
    if typing.get_origin(item) is typing.Literal:
        items: list[Any] = _subset(typing.get_args(item), value, path)
    else:
        items = [check(item, v, f"{path}[{i}]") for i, v in enumerate(value)]
    return tuple(items) if origin is tuple else items


def _subset(choices: tuple[Any, ...], value: Sequence[Any], path: str) -> list[Any]:
    """A non-empty subset of ``choices``, in declared order; items are named after the key
    (``relations`` -> ``relation``)."""
    key = path.rsplit(".", 1)[-1]
    noun = key[:-1] if key.endswith("s") else key
    allowed = ", ".join(str(c) for c in choices)
    if not value:
        raise ConfigError(f"{path}: expected at least one {noun}; allowed: {allowed}")
    seen: set[Any] = set()
    for v in value:
        if not any(v == c and type(v) is type(c) for c in choices):
            raise ConfigError(f"{path}: unknown {noun} {short(v)}; allowed: {allowed}")
        if v in seen:
            raise ConfigError(f"{path}: {noun} '{v}' is listed twice")
        seen.add(v)
    return [c for c in choices if c in seen]
