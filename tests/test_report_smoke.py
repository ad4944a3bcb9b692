"""End to end: ``ablate report smoke`` in a real subprocess on what the session's smoke study
(``ablate run search_spaces/smoke.yaml``) wrote; and the same for a tiny search study."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from ablate.cli import cli
from tests.conftest import SmokeStudy
from tests.studykit import assert_ran, run_in_process

TINY_SEARCH = """\
name: tinysearch
dataset: synthetic
base: full
overrides:
  train.epochs: 2
search:
  algorithm: optuna
  num_samples: 3
  space:
    train.lr: {loguniform: [1.0e-4, 3.0e-3]}
    model.clav.margin: {uniform: [0.25, 2.0]}
    model.embed.dropout: {values: [0.1, 0.3, 0.5]}
    model.como.context_window: {values: [1, 3, 5, 9]}
    loss.rd_weight: {loguniform: [0.01, 1.0]}
seeds: [0]
resources: {cpu: 1, gpu: 0}
max_concurrent: 2
"""

pytestmark = pytest.mark.slow


def _exe() -> str:
    exe = shutil.which("ablate") or str(Path(sys.executable).parent / "ablate")
    assert Path(exe).exists(), "the ablate entry point is not installed (pip install -e .)"
    return exe


@pytest.fixture(scope="module")
def workdir(smoke_study: SmokeStudy) -> tuple[Path, dict[str, str]]:
    """The smoke study's directory, and an environment with the session's data cache and no
    tracking URI."""
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "RAY_ADDRESS")}
    return smoke_study.workdir, env


def _run(args: list[str], work: Path, env: dict[str, str], timeout: int = 900):
    done = subprocess.run([_exe(), *args], cwd=work, env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert done.returncode == 0, f"{args}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


@pytest.fixture(scope="module")
def smoke(workdir) -> Path:
    """The smoke study reported with every default (./mlflow.db, ./runs, ./dashboards/smoke)."""
    work, env = workdir
    done = _run(["report", "smoke"], work, env, timeout=300)
    assert done.stdout.startswith("study 'smoke' (ablation): 6/6 trials finished\n")
    return work


def _client(work: Path):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{work / 'mlflow.db'}")


def test_smoke_report(smoke: Path):
    out = smoke / "dashboards" / "smoke"
    for name in ("index.html", "ablation.md", "ablation.tex", "ablation.json",
                 "plots/seeds.png", "plots/learning_curves.png", "plots/roc_pr.png"):
        assert (out / name).is_file(), name
    rows = {r["variant"]: r for r in json.loads((out / "ablation.json").read_text())}
    assert set(rows) == {"full", "clav=none", "como=none"}
    assert all(r["n"] == 2 and r["seeds"] == [0, 1] for r in rows.values())
    full = rows["full"]
    assert full["is_base"] and full["comparison"] is None and full["delta_auc"] is None
    for name in ("clav=none", "como=none"):
        row = rows[name]
        assert 0.0 < row["auc_mean"] < 1.0 and row["auc_std"] is not None
        assert row["delta_auc_ci"] is not None and row["comparison"]["p"] in (0.5, 1.0)  # 2 pairs
        # 2 seeds, 2 comparisons: no difference can be decided, and the report says so.
        assert row["comparison"]["decision"] == "undecided"
        assert row["comparison"]["why"] == (
            "2 seeds cannot reach Holm's threshold for 2 comparisons (the sign-flip p is at "
            "least 0.5 > 0.025); 7 can")

    client = _client(smoke)
    experiment = client.get_experiment_by_name("smoke")
    parent, = client.search_runs([experiment.experiment_id], "tags.`ablate.role` = 'study'")
    listed = {a.path for a in client.list_artifacts(parent.info.run_id, "report")}
    assert {"report/index.html", "report/ablation.md", "report/ablation.tex",
            "report/ablation.json", "report/plots"} <= listed


def test_smoke_report_with_a_failed_trial(smoke: Path, tmp_path: Path, monkeypatch):
    client = _client(smoke)
    experiment = client.get_experiment_by_name("smoke")
    run, = client.search_runs([experiment.experiment_id],
                              "tags.`ablate.trial_key` = 'clav=none/seed1'")
    client.set_terminated(run.info.run_id, status="FAILED")
    monkeypatch.chdir(smoke)  # the study's default store and storage
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    try:
        result = CliRunner().invoke(cli, ["report", "smoke", "--out", str(tmp_path / "r")])
    finally:
        client.set_terminated(run.info.run_id, status="FINISHED")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("study 'smoke' (ablation): 5/6 trials finished\n")
    assert "missing 1 trial(s):\n  clav=none/seed1" in result.stderr
    assert "failed" in result.stderr.splitlines()[1]
    rows = {r["variant"]: r for r in json.loads((tmp_path / "r" / "ablation.json").read_text())}
    assert rows["clav=none"]["n"] == 1 and rows["clav=none"]["delta_auc_ci"] is None
    assert rows["clav=none"]["comparison"]["decision"] == "undecided"


def test_search_report(smoke: Path, workdir):
    work, env = workdir
    (work / "tinysearch.yaml").write_text(TINY_SEARCH)
    assert_ran(run_in_process(["run", "tinysearch.yaml", "--quiet"], work), "ablate run")
    done = _run(["report", "tinysearch"], work, env, timeout=300)
    assert done.stdout.startswith("study 'tinysearch' (search): 3/3 trials finished\n")
    body = json.loads((work / "dashboards" / "tinysearch" / "search.json").read_text())
    assert len(body["configs"]) == 3
    assert set(body["importances"]) == {"train.lr", "model.clav.margin", "model.embed.dropout",
                                        "model.como.context_window", "loss.rd_weight"}
    assert "off the search space" not in done.stderr and "outside" not in done.stderr
