"""Checks shared by the commands' options."""

from __future__ import annotations

import click


def study_name(value: str, param_hint: str) -> str:
    """``value`` if it is a valid study name, else click's usage error naming the option."""
    from ablate.study.spec import NAME_PATTERN

    if not NAME_PATTERN.fullmatch(value):
        raise click.BadParameter(f"expected letters, digits, '_', '.', '-', got {value!r}",
                                 param_hint=param_hint)
    return value
