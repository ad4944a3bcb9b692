"""``ablate status``: a study's trials from its own plain records, without starting anything.

It reads ``study.json`` (the plan) and ``trials.json`` (the driver's progress record), both JSON,
and nothing of Ray's: Tune's experiment state is a pickle, and reading it would run whatever
code someone with write access to the storage put there.
"""

from __future__ import annotations

import time

from ablate.errors import AblateError
from ablate.study.storage import StudyDir

NO_PROGRESS = "no progress recorded yet (ablate run records it in trials.json as trials run)"
DRIVER_STATES = {"running": "running (or stopped without a chance to say so)",
                 "finished": "finished", "failed": "finished with failed trials",
                 "interrupted": "interrupted; run the same command to resume"}


def _planned(record: dict) -> str:
    search = (record.get("spec") or {}).get("search")
    if isinstance(search, dict):
        samples = search.get("num_samples", "?")
        seeds = len((record.get("spec") or {}).get("seeds") or []) or 1
        total = samples * seeds if isinstance(samples, int) else "?"
        return f"search of {samples} samples x {seeds} seed(s) = {total} planned trials"
    return f"{len(record['trials'])} planned trials"


def study_status(study: str, storage: str) -> list[str]:
    """Lines describing the study: its record, then one line per trial."""
    directory = StudyDir.at(storage, study)
    record = directory.read_record()
    if record is None:
        raise AblateError(f"no study '{study}' under {storage} (looked for "
                          f"{directory.root}/study.json)")
    lines = [f"study '{study}' at {directory.root} (spec {record['spec_hash']}, "
             f"{_planned(record)}; dataset {record.get('dataset', '?')})"]
    progress = directory.read_progress()
    if progress is None:
        return lines + [NO_PROGRESS]
    known = {t.get("key"): t for t in progress["trials"] if isinstance(t, dict)}
    keys = [t["key"] for t in record["trials"] if isinstance(t, dict) and "key" in t]
    keys += sorted(k for k in known if isinstance(k, str) and k not in keys)
    counts: dict[str, int] = {}
    for key in keys:
        trial = known.get(key, {})
        state = str(trial.get("state", "not started"))
        counts[state] = counts.get(state, 0) + 1
        auc, ap = (f"{trial[m]:.4f}" if isinstance(trial.get(m), (int, float)) else "-"
                   for m in ("auc", "ap"))
        lines.append(f"  {key:<40} {state:<12} epoch {trial.get('epoch', 0):>3}  "
                     f"auc {auc}  ap {ap}")
    updated = progress.get("updated")
    when = (time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(updated))
            if isinstance(updated, (int, float)) else "?")
    lines.append("trials: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
    driver = DRIVER_STATES.get(str(progress.get("driver")), "unknown")
    lines.append(f"last run: {driver} (recorded {when})")
    return lines
