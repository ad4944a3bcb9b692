"""``study.json`` as a report reads it: the study's spec, dataset and planned trials.

``ablate run`` writes the record (:class:`ablate.study.storage.StudyDir`); it holds what MLflow
does not: the planned trials (to say which are missing), the base variant's name, the metric and
mode, and a search's space. Each planned trial is an object ``{"key", "variant", "seed"}``, so
nothing here parses a trial key.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ablate.errors import AblateError

OTHER_RECORD = ("{path} belongs to another spec (hash {record}, MLflow has {parent}); ignored: "
                "planned trials are unknown")
NO_RECORD = ("no study.json at {path}; planned trials are unknown (pass --storage DIR of the "
             "study to list missing ones)")
UNREADABLE = "{path}: cannot be read ({problem}); planned trials are unknown"
NOT_A_TRIAL = ("{path}: trials[{index}] is {entry!r}, not an object with a string key and "
               "variant and an integer seed (a record written by an older ablate); report from "
               "MLflow alone with --storage DIR of a directory without this study")


@dataclass(frozen=True)
class PlannedTrial:
    """One trial the study plans, as ``study.json`` lists it."""

    key: str
    variant: str
    seed: int


@dataclass(frozen=True)
class StudyRecord:
    """What a report uses of ``study.json``.

    Attributes:
        spec: The spec's identity (``base_name``, ``metric``, ``mode``, ``search``, ...).
        dataset: The resolved dataset path, if recorded.
        planned: The planned trials, in plan order (empty for a search).
    """

    spec: dict[str, Any]
    dataset: str | None
    planned: tuple[PlannedTrial, ...]


def _planned(entries: list[Any], path: str) -> tuple[PlannedTrial, ...]:
    """The ``trials`` entries of a record.

    Raises:
        AblateError: An entry is not a ``{key, variant, seed}`` object (names the file).
    """
    out = []
    for index, entry in enumerate(entries):
        ok = (isinstance(entry, dict) and isinstance(entry.get("key"), str)
              and isinstance(entry.get("variant"), str) and isinstance(entry.get("seed"), int)
              and not isinstance(entry.get("seed"), bool))
        if not ok:
            raise AblateError(NOT_A_TRIAL.format(path=path, index=index, entry=entry))
        out.append(PlannedTrial(entry["key"], entry["variant"], entry["seed"]))
    return tuple(out)


def read_record(storage: str, study: str, spec_hash: str | None,
                notes: list[str]) -> StudyRecord | None:
    """The study's record under ``storage``; None (with a note why) when it is absent, cannot be
    read or belongs to another spec than the MLflow study run's ``spec_hash``.

    Raises:
        AblateError: The file is not a study record, or a planned trial is not an object.
    """
    from ablate.study.storage import STUDY_FILE, StudyDir

    directory = StudyDir.at(storage, study)
    path = f"{directory.root}/{STUDY_FILE}"
    try:
        record = directory.read_record()
    except (OSError, ValueError) as exc:  # an unreachable remote storage is not fatal here
        notes.append(UNREADABLE.format(path=path, problem=exc))
        return None
    if record is None:
        notes.append(NO_RECORD.format(path=path))
        return None
    if spec_hash and record.get("spec_hash") != spec_hash:
        notes.append(OTHER_RECORD.format(path=path, record=record.get("spec_hash"),
                                         parent=spec_hash))
        return None
    return StudyRecord(spec=record.get("spec") or {}, dataset=record.get("dataset") or None,
                       planned=_planned(record.get("trials") or [], path))
