"""``ablate status``: a study's trials from its own plain records, without starting anything.

It reads ``study.json`` (the plan) and ``trials.json`` (the driver's progress record), both JSON,
and nothing of Ray's: Tune's experiment state is a pickle, and reading it would run whatever
code someone with write access to the storage put there.
"""

from __future__ import annotations

import time

from ablate.errors import AblateError
from ablate.metrics import TABLE_METRICS
from ablate.study.record import StageRecord, StudyRecord, TrialRecord
from ablate.study.storage import StudyDir

NO_PROGRESS = "no progress recorded yet (ablate run records it in trials.json as trials run)"
DRIVER_STATES = {"running": "running (or stopped without a chance to say so)",
                 "finished": "finished", "failed": "finished with failed trials",
                 "interrupted": "interrupted; run the same command to resume"}


def _planned(record: StudyRecord, stages: tuple[StageRecord, ...]) -> str:
    search = record.spec.get("search")
    staged = sum(len(s.trials) for s in stages if s.kind != "search")
    if isinstance(search, dict):
        samples = search.get("num_samples", "?")
        seeds = record.spec.get("seeds")
        seeds = len(seeds) if isinstance(seeds, list) and seeds else 1
        total = samples * seeds if type(samples) is int else "?"
        line = f"search of {samples} samples x {seeds} seed(s) = {total} planned trials"
        return line + (f", then {staged} confirming" if staged else "")
    if stages:
        return (f"{staged} trials in {len(stages)} round(s) so far, at most "
                f"{len(record.trials)}")
    return f"{len(record.trials)} planned trials"


def study_status(study: str, storage: str) -> list[str]:
    """Lines describing the study: its record, then one line per trial."""
    directory = StudyDir.at(storage, study)
    record = directory.read_record()
    if record is None:
        raise AblateError(f"no study '{study}' under {storage} (looked for "
                          f"{directory.record_path})")
    stages = directory.read_stages()
    lines = [f"study '{study}' at {directory.root} (spec {record.spec_hash}, "
             f"{_planned(record, stages)}; dataset {record.dataset or '?'})"]
    progress = directory.read_progress()
    if progress is None:
        return lines + [NO_PROGRESS]
    known = {t.key: t for t in progress.trials}
    planned = {t.key: t for t in record.trials}
    scheduled = ([planned.get(k) or known[k] for s in stages for k in s.trials
                  if k in planned or k in known] if stages else list(record.trials))
    trials = [known.get(t.key, t) for t in scheduled]
    trials += sorted((t for t in progress.trials if t.key not in {p.key for p in trials}),
                     key=lambda t: t.key)
    counts: dict[str, int] = {}
    for trial in trials:
        counts[trial.state] = counts.get(trial.state, 0) + 1
        lines.append(_line(trial))
    updated = progress.updated
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(updated)) if updated else "?"
    lines.append("trials: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
    driver = DRIVER_STATES.get(progress.driver, "unknown")
    lines.append(f"last run: {driver} (recorded {when})")
    return lines


def _line(trial: TrialRecord) -> str:
    values = "  ".join(f"{m} {trial.metrics[m]:.4f}" if m in trial.metrics else f"{m} -"
                       for m in TABLE_METRICS)
    return f"  {trial.key:<40} {trial.state:<12} epoch {trial.epoch:>3}  {values}"
