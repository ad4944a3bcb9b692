"""``ablate status``: a study's trials from its files, without starting Ray."""

from __future__ import annotations

from ablate.errors import AblateError
from ablate.study.storage import StudyDir


def study_status(study: str, storage: str) -> list[str]:
    """Lines describing the study: its record, then one line per trial."""
    from ray.tune import ExperimentAnalysis, Tuner

    directory = StudyDir.at(storage, study)
    record = directory.read_record()
    if record is None:
        raise AblateError(f"no study '{study}' under {storage} (looked for "
                          f"{directory.root}/study.json)")
    lines = [f"study '{study}' at {directory.root} (spec {record['spec_hash']}, "
             f"{len(record.get('trials') or [])} planned trials; dataset {record['dataset']})"]
    if not Tuner.can_restore(directory.tune_path):
        return lines + ["no trial has started yet"]
    analysis = ExperimentAnalysis(directory.tune_path)
    counts: dict[str, int] = {}
    rows = []
    for trial in analysis.trials:
        result = trial.last_result or {}
        config = trial.config or {}
        name = config.get("trial_key") or f"search/{trial.trial_id}"
        counts[trial.status] = counts.get(trial.status, 0) + 1
        auc = f"{result['auc']:.4f}" if "auc" in result else "-"
        ap = f"{result['ap']:.4f}" if "ap" in result else "-"
        rows.append(f"  {name:<40} {trial.status:<10} epoch {result.get('epoch', 0):>3}  "
                    f"auc {auc}  ap {ap}")
    lines += sorted(rows)
    summary = ", ".join(f"{n} {s.lower()}" for s, n in sorted(counts.items()))
    lines.append(f"trials: {summary}")
    return lines
