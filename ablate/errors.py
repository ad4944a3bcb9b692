"""Errors a user is expected to see: the CLI prints them as one line and exits non-zero.

The helpers at the end format the messages every layer needs: an unknown name (the closest known
name when one is close, then the allowed ones) and a value of the wrong type.
"""

from __future__ import annotations

import difflib
import reprlib
from collections.abc import Iterable, Sequence


class AblateError(Exception):
    """Base class of expected, user-facing errors (bad input, missing data, refused resume)."""


class DataError(AblateError):
    """A feature store or raw feature file is corrupt, inconsistent or missing.

    The message always names the file, then the video where one is involved, then the problem:
    ``features.parquet: video Abuse001_x264: NaN or Inf in features``.
    """

    def __init__(self, file: str, problem: str, video: str | None = None) -> None:
        self.file = file
        self.video = video
        self.problem = problem
        where = f"{file}: video {video}" if video is not None else file
        super().__init__(f"{where}: {problem}")


class ConfigError(AblateError):
    """A model, trial or study configuration is invalid; the message names the key."""


def closest(name: str, candidates: Iterable[str]) -> str | None:
    """Return the candidate closest to a misspelt ``name``, or None when nothing is close."""
    matches = difflib.get_close_matches(name, list(candidates), n=1)
    return matches[0] if matches else None


def unknown_message(what: str, allowed: Sequence[str], suggestion: str | None) -> str:
    """Format the tail of an "unknown X" error: a suggestion when one is close, then the list.

    ``unknown slot; allowed: a, b`` or ``unknown slot; did you mean 'a'? Allowed: a, b``.
    """
    listed = ", ".join(allowed)
    if suggestion is None:
        return f"{what}; allowed: {listed}"
    return f"{what}; did you mean '{suggestion}'? Allowed: {listed}"


def key_path(path: str, key: object) -> str:
    """The dotted path of ``key`` under ``path`` (``train`` + ``lr`` -> ``train.lr``)."""
    return f"{path}.{key}" if path else str(key)


SHORT = 80  # characters of a value an error line shows


def _shortener() -> reprlib.Repr:
    shortener = reprlib.Repr()
    shortener.maxlevel, shortener.maxlist, shortener.maxdict = 3, 6, 4
    shortener.maxstring = shortener.maxother = shortener.maxlong = SHORT - 20
    return shortener


_SHORTENER = _shortener()


def short(value: object) -> str:
    """``repr(value)``, shortened to about :data:`SHORT` characters (``[1, 2, ...]``): what an
    error line shows of a value, however large the value a file expanded to."""
    text = _SHORTENER.repr(value)
    return text if len(text) <= SHORT else f"{text[:SHORT - 3]}..."


def type_error(path: str, expected: str, value: object) -> ConfigError:
    """``path: expected int, got str ('big')``: the one shape of every wrong-type error."""
    return ConfigError(f"{path}: expected {expected}, got {type(value).__name__} ({short(value)})")


def reject_unknown(keys: Iterable[object], allowed: Sequence[str], path: str,
                   what: str = "key") -> None:
    """Raise for the first of ``keys`` not in ``allowed``, suggesting the closest allowed one.

    ``allowed`` is listed in the order given.

    Raises:
        ConfigError: ``path.key: unknown key; did you mean 'a'? Allowed: a, b``.
    """
    for key in keys:
        if key not in allowed:
            tail = unknown_message(f"unknown {what}", allowed, closest(str(key), allowed))
            raise ConfigError(f"{key_path(path, key)}: {tail}")
