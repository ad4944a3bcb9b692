"""How ``ablate list`` shows a component's options: name, type, default and description."""

from __future__ import annotations

import types
import typing
from typing import Any, NamedTuple


class Option(NamedTuple):
    """One option of a component, as ``ablate list`` shows it."""

    name: str
    type: str
    default: Any
    description: str


def type_name(annotation: Any) -> str:
    """Render an annotation the way users write values: ``int``, ``a|b``, ``list[a|b]``."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Literal:
        return "|".join(str(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return "|".join("null" if a is type(None) else type_name(a) for a in args)
    if origin is not None and args:  # list[X], tuple[X, ...], Sequence[X]
        return f"list[{type_name(args[0])}]"
    return getattr(annotation, "__name__", str(annotation))


def format_value(value: Any) -> str:
    """Render a default the way it would be written in a YAML spec."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(format_value(v) for v in value) + "]"
    return str(value)
