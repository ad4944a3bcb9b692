"""What a component's docstring says about it: its summary line and its options.

A component's options are the keyword parameters of its constructor, described in the class's
Google-style ``Args:`` section; reading them from there keeps one description that cannot drift
from a second, hand-written one.
"""

from __future__ import annotations

import inspect
from typing import Any


def docstring_args(obj: Any) -> dict[str, str]:
    """Parse the Google-style ``Args:`` section of ``obj``'s docstring into name -> description."""
    lines = inspect.cleandoc(obj.__doc__ or "").splitlines()
    descriptions: dict[str, str] = {}
    in_args, current = False, None
    for line in lines:
        stripped = line.strip()
        if stripped == "Args:":
            in_args, current = True, None
            continue
        if not in_args:
            continue
        if not line.startswith(" "):  # a dedented line ends the section
            if stripped:
                in_args = False
            continue
        indent = len(line) - len(line.lstrip())
        head, sep, tail = stripped.partition(":")
        name = head.split(" ")[0]
        if sep and indent <= 4 and name.isidentifier():
            current = name
            descriptions[current] = tail.strip()
        elif current is not None and stripped:
            descriptions[current] += " " + stripped
    return descriptions


def summary(obj: Any) -> str:
    """First line of ``obj``'s docstring."""
    doc = inspect.cleandoc(obj.__doc__ or "")
    return doc.splitlines()[0] if doc else ""
