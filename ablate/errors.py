"""Errors a user is expected to see: the CLI prints them as one line and exits non-zero."""

from __future__ import annotations


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
