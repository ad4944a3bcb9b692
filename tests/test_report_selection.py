"""The report says what a study selected on and shows the method's diagnostics."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from ablate.cli import cli
from tests.studykit import study_tracker, write_study_json


def _write_study(root: Path, name: str, select_on_test: bool) -> str:
    from ablate.study.identity import TrialIdentity

    uri = f"sqlite:///{root / 'mlflow.db'}"
    tracker = study_tracker(uri, name, f"hash-{name}")
    tracker.start_study({"spec_hash": f"hash-{name}", "design": "grid", "trials": 4})
    planned = []
    for i, (variant, seed) in enumerate([(v, s) for v in ("full", "clav=none") for s in (0, 1)]):
        key = f"{variant}/seed{seed}"
        planned.append({"key": key, "variant": variant, "seed": seed})
        run_id = tracker.child(TrialIdentity(key, variant, seed, f"config{i}"), f"t{i}",
                               {"model": {"variant": variant}, "seed": seed})
        row = {"epoch": 1, "auc": 0.8 - 0.1 * i, "ap": 0.5, "val_auc": 0.9 - 0.1 * i,
               "val_ap": 0.9, "loss": 0.5}
        if variant == "full":
            row |= {"gate_abnormal": 0.6 + 0.1 * seed, "gate_normal": 0.2,
                    "como.context_motion.entropy": 0.9, "como.context_motion.temperature": 2.0}
        tracker.log_epochs(run_id, [row])
        tracker.finish(run_id, [])
    tracker.end_study("FINISHED")
    write_study_json(str(root / "runs"), name, {
        "name": name, "spec_hash": f"hash-{name}", "dataset": str(root / "nodata"),
        "spec": {"base_name": "full", "metric": "auc" if select_on_test else "val_auc",
                 "mode": "max", "search": None, "seeds": [0, 1], "design": "grid",
                 "select_on_test": select_on_test},
        "trials": planned})
    return uri


def _report(root: Path, name: str, uri: str) -> str:
    out = root / "out" / name
    result = CliRunner().invoke(cli, ["report", name, "--tracking-uri", uri, "--storage",
                                      str(root / "runs"), "--out", str(out)])
    assert result.exit_code == 0, result.output
    return (out / "ablation.md").read_text()


def test_report_marks_a_test_tuned_study_and_not_a_validated_one(tmp_path: Path) -> None:
    tuned = _report(tmp_path, "tuned", _write_study(tmp_path, "tuned", select_on_test=True))
    assert "TEST-TUNED: this study selected on the test metric auc" in tuned
    honest = _report(tmp_path, "honest", _write_study(tmp_path, "honest", select_on_test=False))
    assert "TEST-TUNED" not in honest


def test_report_tabulates_the_gate_and_attention_diagnostics(tmp_path: Path) -> None:
    text = _report(tmp_path, "diag", _write_study(tmp_path, "diag", select_on_test=False))
    section = text.split("## Diagnostics (final epoch, mean over seeds)")[1]
    full = next(line for line in section.splitlines() if line.startswith("| full"))
    cells = [c.strip() for c in full.strip("|").split("|")]
    assert cells[:6] == ["full", "2", "0.650", "0.200", "0.900", "2.000"]
    assert "| clav=none" not in section  # no diagnostics logged: no row
