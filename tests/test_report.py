"""``ablate report`` and ``ablate ui`` on real SQLite MLflow stores.

The studies here are written with the same tracker ``ablate run`` uses
(:class:`ablate.tracking.study.StudyTracker`) and a ``study.json`` like the one it writes, with
chosen metrics, so the report's numbers can be checked by hand and the tests stay fast. The
end-to-end run of ``search_spaces/smoke.yaml`` is in ``test_report_smoke.py`` (slow).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner
from scipy import stats as scipy_stats

from ablate.cli import cli
from tests.studykit import study_tracker, write_study_json

TEST_VIDEOS = {"test_000": 5, "test_001": 32, "test_002": 70}  # snippets per test video
NOISE = [0.004, -0.003, 0.002, -0.001, 0.003]
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"]


@dataclass
class Trial:
    key: str
    variant: str
    seed: int
    auc: float
    ap: float
    status: str = "FINISHED"
    params: dict[str, Any] = field(default_factory=dict)
    epochs: int = 3


@dataclass
class Env:
    root: Path
    uri: str
    storage: Path
    dataset: Path


def _tiny_store(path: Path) -> None:
    from ablate.data import StoreWriter

    rng = np.random.default_rng(0)
    with StoreWriter(path, crops=1, dim=4, name="tiny", source={"kind": "test"}) as writer:
        for i in range(4):
            writer.add_video(f"train_{i}", "train", int(i < 2), "Abuse" if i < 2 else "Normal",
                             rng.standard_normal((1, 8, 4)).astype(np.float32))
        for i, (video, snippets) in enumerate(TEST_VIDEOS.items()):
            frames = np.zeros(16 * snippets, dtype=np.uint8)
            if i != 1:
                frames[16 * (snippets // 3): 16 * (snippets // 3 + 2)] = 1
            writer.add_video(video, "test", int(frames.any()), "Abuse" if frames.any() else
                             "Normal", rng.standard_normal((1, snippets, 4)).astype(np.float32),
                             frames)


def _scores_file(directory: Path, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "scores.npz"
    np.savez(path, **{v: rng.random(t).astype(np.float32) for v, t in TEST_VIDEOS.items()})
    return path


def write_study(env: Env, name: str, trials: list[Trial], *,
                planned: list[tuple[str, int]] | None = None,
                search: dict[str, Any] | None = None, record: bool = True,
                base_name: str = "full") -> None:
    """A study as ``ablate run`` leaves it: parent run, child runs, study.json.

    ``planned``: the (variant, seed) of every planned trial; by default those of ``trials``.
    """
    from ablate.study.identity import TrialIdentity

    spec_hash = f"hash-{name}"
    tracker = study_tracker(env.uri, name, spec_hash)
    tracker.start_study({"spec_hash": spec_hash, "design": "grid", "dataset": str(env.dataset),
                         "seeds": sorted({t.seed for t in trials}), "source": "",
                         "trials": len(planned) if planned else len(trials)})
    scratch = env.root / "scratch"
    scratch.mkdir(exist_ok=True)
    for i, t in enumerate(trials):
        run_id = tracker.child(TrialIdentity(t.key, t.variant, t.seed, f"config{i}"),
                               f"{name}_{i:05d}",
                               {**(t.params or {"model": {"variant": t.variant}}),
                                "seed": t.seed})
        # Rising curves that end at the chosen final values.
        tracker.log_epochs(run_id, [
            {"epoch": e, "auc": t.auc - 0.02 * (t.epochs - e), "ap": t.ap - 0.02 * (t.epochs - e),
             "auc_abnormal": t.auc - 0.1 - 0.02 * (t.epochs - e), "loss": 1.0 / e,
             # Validation still climbs for "worse" (2 points an epoch), flat for the others.
             "val_auc": t.auc + 0.05 - (0.02 if t.variant == "worse" else 0.001) * (t.epochs - e)}
            for e in range(1, t.epochs + 1)])
        if t.status == "FINISHED":
            longest = max(u.epochs for u in trials)  # a scheduler stopped the shorter ones
            tracker.finish(run_id, [("scores", _scores_file(scratch / run_id, t.seed))],
                           tags={"ablate.final_epoch": str(t.epochs),
                                 "ablate.stopped_early": str(t.epochs < longest).lower()})
        elif t.status == "FAILED":
            tracker.stop(run_id, "FAILED")
    tracker.end_study("FINISHED")
    if record:
        write_study_json(str(env.storage), name, {
            "name": name, "spec_hash": spec_hash, "dataset": str(env.dataset),
            "spec": {"base_name": base_name, "metric": "auc", "mode": "max", "search": search,
                     "seeds": sorted({t.seed for t in trials}), "design": "grid"},
            "trials": [{"key": f"{v}/seed{s}", "variant": v, "seed": s} for v, s in planned]
            if planned is not None else
            [{"key": t.key, "variant": t.variant, "seed": t.seed} for t in trials]})


def _ablation_trials() -> list[Trial]:
    """full; ``same`` = full on every seed; ``worse`` = full - 0.1 + small noise; 5 seeds."""
    trials = []
    for s in range(5):
        auc, ap = 0.80 + 0.01 * s, 0.50 + 0.01 * s
        trials.append(Trial(f"full/seed{s}", "full", s, auc, ap))
        trials.append(Trial(f"same/seed{s}", "same", s, auc, ap))
        trials.append(Trial(f"worse/seed{s}", "worse", s, auc - 0.1 + NOISE[s],
                            ap - 0.2 + NOISE[s]))
    return trials


SEARCH_SPACE = {"train.lr": ["loguniform", [1e-4, 3e-3]],
                "model.embed.dropout": ["values", [0.1, 0.3, 0.5]],
                "model.como.context_window": ["values", [1, 3, 5, 9]],
                "model.como.relations": ["values", [["motion"], ["context", "motion"]]]}


def _search_trials() -> list[Trial]:
    """Four configurations × two seeds; the final AUC grows with the learning rate."""
    configs = [(3e-4, 0.1, 1, ["motion"]), (1e-3, 0.3, 5, ["context", "motion"]),
               (2e-3, 0.5, 9, ["motion"]), (1.5e-4, 0.3, 3, ["context", "motion"])]
    trials = []
    for c, (lr, dropout, window, relations) in enumerate(configs):
        for s in (0, 1):
            params = {"train": {"lr": lr}, "model": {"embed": {"dropout": dropout},
                                                     "como": {"context_window": window,
                                                              "relations": relations}}}
            auc = 0.7 + 50 * lr + 0.005 * s
            trials.append(Trial(f"search/c{c}s{s}", "search", s, auc, auc - 0.3, params=params))
    return trials


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> Env:
    """One SQLite store with four studies: ``abl`` (complete), ``part`` (unfinished), ``srch``
    (a search) and ``norec`` (no study.json)."""
    root = tmp_path_factory.mktemp("report")
    e = Env(root, f"sqlite:///{root / 'mlflow.db'}", root / "runs", root / "data")
    _tiny_store(e.dataset)
    write_study(e, "abl", _ablation_trials())
    planned = [(v, s) for v in ("full", "clav=none", "como=none") for s in (0, 1, 2)]
    part = [Trial(f"full/seed{s}", "full", s, 0.8 + 0.01 * s, 0.5) for s in (0, 1, 2)]
    part += [Trial("clav=none/seed0", "clav=none", 0, 0.75, 0.45),
             Trial("clav=none/seed1", "clav=none", 1, 0.70, 0.40, status="FAILED"),
             Trial("como=none/seed0", "como=none", 0, 0.60, 0.30, status="RUNNING")]
    write_study(e, "part", part, planned=planned)
    write_study(e, "srch", _search_trials(), search={"algorithm": "optuna", "num_samples": 4,
                                                     "space": SEARCH_SPACE})
    write_study(e, "norec", [t for t in _ablation_trials() if t.seed < 2], record=False)
    return e


def report(env: Env, study: str, out: Path, *extra: str):
    result = CliRunner().invoke(cli, ["report", study, "--tracking-uri", env.uri, "--storage",
                                      str(env.storage), "--out", str(out),
                                      *extra])
    return result


@pytest.fixture(scope="module")
def abl(env: Env) -> Path:
    out = env.root / "dash" / "abl"
    result = report(env, "abl", out)
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("study 'abl' (ablation): 15/15 trials finished\n")
    return out


def _by_variant(out: Path) -> dict[str, dict[str, Any]]:
    return {row["variant"]: row for row in json.loads((out / "ablation.json").read_text())}


def test_report_flags_the_variant_whose_validation_still_rises(abl: Path):
    md = (abl / "ablation.md").read_text()
    diagnostics = md.split("## Diagnostics")[1].split("\n\n")[1].splitlines()
    assert diagnostics[0].endswith("| val AUC gain, last ¼ (points) | converged |")
    rows = {line.split(" | ")[0].strip("| "): line for line in diagnostics[2:]}
    assert rows["worse"].endswith("| +2.00 | NO |")
    assert rows["full"].endswith("| +0.10 | yes |") and rows["same"].endswith("| +0.10 | yes |")
    assert ("- not converged: worse still gained 2.00 points or more of validation AUC over the "
            "last quarter of their epochs") in md
    # Validation is the test AUC plus five points here: the two rank the variants alike.
    assert ("Validation and test rank the 3 variants with Kendall's tau = +1.00 (p = "
            in md)
    assert 'id="agreement"' in (abl / "index.html").read_text()


def test_report_files(abl: Path):
    names = {p.relative_to(abl).as_posix() for p in abl.rglob("*") if p.is_file()}
    assert names == {"index.html", "ablation.md", "ablation.tex", "ablation.json",
                     "plots/seeds.png", "plots/learning_curves.png", "plots/roc_pr.png"}


def test_report_json(abl: Path):
    rows = json.loads((abl / "ablation.json").read_text())
    assert [r["variant"] for r in rows] == ["full", "same", "worse"]  # ranked; a tie keeps plan
    keys = {"variant", "n", "auc_mean", "auc_std", "ap_mean", "ap_std", "delta_auc",
            "delta_auc_ci", "delta_ap", "delta_ap_ci", "comparison", "seeds"}
    assert all(keys <= set(r) for r in rows)
    full, same, worse = rows
    aucs = [0.80 + 0.01 * s for s in range(5)]
    assert full["n"] == 5 and full["seeds"] == [0, 1, 2, 3, 4]
    assert full["auc_mean"] == pytest.approx(np.mean(aucs))
    assert full["auc_std"] == pytest.approx(np.std(aucs, ddof=1))
    assert full["comparison"] is None and full["delta_auc"] is None  # the base
    assert same["delta_auc"] == 0.0 and same["delta_auc_ci"] == [0.0, 0.0]
    # Identical on every seed: equivalent within delta (TOST), not better or worse.
    assert same["comparison"]["decision"] == "equivalent" and same["comparison"]["p"] == 1.0
    diffs = [-0.1 + e for e in NOISE]
    assert worse["delta_auc"] == pytest.approx(np.mean(diffs))
    low, high = worse["delta_auc_ci"]
    half = scipy_stats.t.ppf(0.975, 4) * np.std(diffs, ddof=1) / np.sqrt(5)
    assert (low, high) == pytest.approx((np.mean(diffs) - half, np.mean(diffs) + half))
    c = worse["comparison"]
    # Five negative differences: the sign-flip p is 2 / 2**5 whatever their size, and Holm
    # over the table's two comparisons doubles it; 5 seeds cannot decide a difference.
    assert c["p"] == 0.0625 and c["p_holm"] == 0.125 and c["wins"] == 0.0
    assert c["decision"] == "undecided" and c["seeds_needed"] == 7
    assert c["why"] == ("5 seeds cannot reach Holm's threshold for 2 comparisons (the sign-flip "
                        "p is at least 0.0625 > 0.025); 7 can")
    assert c["d_z"] == pytest.approx(np.mean(diffs) / np.std(diffs, ddof=1))
    assert c["d_z_ci"][0] < c["d_z"] < c["d_z_ci"][1] < 0
    assert worse["delta_ap"] == pytest.approx(-0.2 + np.mean(NOISE))


def test_report_markdown_and_latex(abl: Path):
    md = (abl / "ablation.md").read_text()
    assert ("| # | variant | n | AUC (%) | ΔAUC [95% CI] | p | p (Holm) | d_z [CI] | wins | "
            "decision | AUC_A (%) | ΔAUC_A [95% CI] | AP (%) | ΔAP [95% CI] |") in md
    assert ("| 1 | full | 5 | 82.00 ± 1.58 | (base) | – | – | – | – | – | 72.00 ± 1.58 | "
            "(base) | 52.00 ± 1.58 | (base) |") in md
    assert "| 3 | worse | 5 | 72.10 ± 1.61 | -9.90 [-10.26, -9.54] | 0.062 | 0.125 |" in md
    assert "| 0/5 | undecided (~7 seeds) |" in md
    assert ("5 seeds cannot reach Holm's threshold for 2 comparisons (the sign-flip p is at least "
            "0.0625 > 0.025); 7 can") in md
    tex = (abl / "ablation.tex").read_text()
    for needle in (r"\begin{tabular}", r"\toprule", r"\midrule", r"\bottomrule",
                   r"\label{tab:abl}", r"$p_\mathrm{Holm}$",
                   r"\texttt{worse} & 5 & 72.10 $\pm$ 1.61 & $-$9.90 [$-$10.26, $-$9.54] & 0.062"):
        assert needle in tex


def test_report_logged_on_parent_run(env: Env, abl: Path):
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=env.uri)
    experiment = client.get_experiment_by_name("abl")
    parent, = client.search_runs([experiment.experiment_id], "tags.`ablate.role` = 'study'")
    listed = {a.path for a in client.list_artifacts(parent.info.run_id, "report")}
    assert {"report/index.html", "report/ablation.md", "report/ablation.tex",
            "report/ablation.json", "report/plots"} <= listed
    plots = {a.path for a in client.list_artifacts(parent.info.run_id, "report/plots")}
    assert "report/plots/roc_pr.png" in plots


def test_report_is_reproducible(env: Env, abl: Path, tmp_path: Path):
    result = report(env, "abl", tmp_path / "again")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "again" / "ablation.json").read_text() == \
        (abl / "ablation.json").read_text()


def test_report_html_is_self_contained(abl: Path):
    page = (abl / "index.html").read_text()
    assert "http://" not in page and "https://" not in page and "<script" not in page
    assert page.count('src="data:image/png;base64,') == 3
    for variant in ("full", "same", "worse"):
        assert f'data-key="{variant}"' in page


def test_unfinished_study(env: Env, tmp_path: Path):
    result = report(env, "part", tmp_path / "part")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("study 'part' (ablation): 4/9 trials finished\n")
    assert ("missing 5 trial(s):\n"
            "  clav=none/seed1                          failed\n"
            "  clav=none/seed2                          not started\n"
            "  como=none/seed0                          running\n"
            "  como=none/seed1                          not started\n"
            "  como=none/seed2                          not started\n") in result.stderr
    rows = _by_variant(tmp_path / "part")
    assert list(rows) == ["full", "clav=none", "como=none"]
    clav = rows["clav=none"]
    assert (clav["n"], clav["auc_std"], clav["delta_auc_ci"]) == (1, None, None)
    assert clav["delta_auc"] == pytest.approx(-0.05)
    assert (clav["comparison"]["p"], clav["comparison"]["decision"]) == (1.0, "undecided")
    como = rows["como=none"]
    assert (como["n"], como["auc_mean"], como["delta_auc"]) == (0, None, None)
    md = (tmp_path / "part" / "ablation.md").read_text()
    assert md.splitlines()[2] == (
        "4/9 trials finished; missing 5: clav=none/seed1 (failed), clav=none/seed2 (not "
        "started), como=none/seed0 (running), como=none/seed1 (not started), como=none/seed2 "
        "(not started)")
    assert ("| 2 | clav=none | 1 | 75.00 | -5.00 | 1.000 | 1.000 | – | 0/1 | undecided | 65.00 "
            "| -5.00 | 45.00 | -5.00 |") in md
    assert "| – | como=none | 0 | – | – | – | – | – | – | – | – | – | – | – |" in md
    page = (tmp_path / "part" / "index.html").read_text()
    assert 'id="missing"' in page and 'class="status partial"' in page


def test_search_study(env: Env, tmp_path: Path):
    result = report(env, "srch", tmp_path / "srch")
    assert result.exit_code == 0, result.output
    assert "study 'srch' (search): 8/8 trials finished" in result.stdout
    body = json.loads((tmp_path / "srch" / "search.json").read_text())
    assert body["params"] == sorted(SEARCH_SPACE)  # study.json keeps keys sorted
    configs = body["configs"]
    assert [c["params"]["train.lr"] for c in configs] == ["0.002", "0.001", "0.0003", "0.00015"]
    best = configs[0]
    assert best["n"] == 2 and best["seeds"] == [0, 1]
    assert best["params"]["model.como.relations"] == "['motion']"
    assert best["auc_mean"] == pytest.approx(0.8 + 0.0025)
    assert best["auc_std"] == pytest.approx(np.std([0.8, 0.805], ddof=1))
    importances = body["importances"]
    assert set(importances) == set(SEARCH_SPACE)
    assert sum(importances.values()) == pytest.approx(1.0)
    names = {p.name for p in (tmp_path / "srch" / "plots").iterdir()}
    assert names == {"seeds.png", "learning_curves.png", "importances.png", "roc_pr.png"}
    md = (tmp_path / "srch" / "ablation.md").read_text()
    assert "## Best configurations (by mean auc)" in md and "## Parameter importances" in md


def test_search_with_one_trial(env: Env, tmp_path: Path):
    write_study(env, "srch1", _search_trials()[:1],
                search={"algorithm": "random", "num_samples": 1, "space": SEARCH_SPACE})
    result = report(env, "srch1", tmp_path / "one")
    assert result.exit_code == 0, result.output
    assert ("note: parameter importances need at least 2 finished trials with auc; have 1"
            in result.stderr)
    body = json.loads((tmp_path / "one" / "search.json").read_text())
    assert len(body["configs"]) == 1 and body["configs"][0]["auc_std"] is None
    assert body["importances"] == {}


def _asha_trials() -> list[Trial]:
    """Eight configurations, one seed, as ASHA leaves them: the dropout-0.5 ones stopped at
    epoch 3, the others trained to 12. At epoch 3 the AUC depends on the learning rate only;
    the final AUC mostly on how long a trial ran, i.e. on its dropout."""
    lrs = [1e-4, 2e-4, 4e-4, 8e-4, 1.5e-4, 3e-4, 6e-4, 1.2e-3]
    dropouts = [0.1, 0.5, 0.1, 0.5, 0.5, 0.1, 0.5, 0.1]
    trials = []
    for c, (lr, dropout) in enumerate(zip(lrs, dropouts, strict=True)):
        epochs = 12 if dropout == 0.1 else 3
        at_budget = 0.6 + 100 * lr
        final = at_budget + 0.02 * (epochs - 3)  # write_study's curves rise 0.02 per epoch
        params = {"train": {"lr": lr}, "model": {"embed": {"dropout": dropout}}}
        trials.append(Trial(f"cfg-{c:08x}/seed0", f"cfg-{c:08x}", 0, final, final - 0.3,
                            params=params, epochs=epochs))
    return trials


ASHA_SPACE = {"train.lr": ["loguniform", [1e-4, 3e-3]],
              "model.embed.dropout": ["values", [0.1, 0.3, 0.5]]}


def test_search_importances_compare_trials_at_a_common_budget(env: Env, tmp_path: Path):
    write_study(env, "asha", _asha_trials(), search={"algorithm": "optuna", "num_samples": 8,
                                                     "space": ASHA_SPACE})
    result = report(env, "asha", tmp_path / "asha")
    assert result.exit_code == 0, result.output
    body = json.loads((tmp_path / "asha" / "search.json").read_text())
    assert body["importance_epoch"] == 3
    assert body["importances"]["train.lr"] > 0.8, body["importances"]
    page = (tmp_path / "asha" / "index.html").read_text()
    assert ("fANOVA importance of each search parameter for auc at epoch 3, the last epoch "
            "every one of the 8 finished trials reached (4 were stopped early by the "
            "scheduler;") in page
    # Every trial is listed with its own parameters and epochs, not one "search" row.
    trials = page.split('<table id="trials">')[1].split("</table>")[0]
    assert trials.count("<tr data-key=") == 8
    assert trials.count("3 (stopped)") == 4 and trials.count("<td>12</td>") == 4
    assert "cfg-00000007/seed0" in trials


def test_ablation_table_fits_a_1400px_window(env: Env, tmp_path: Path):
    chromium = _chromium()
    long = "clav.distance=cosine,como.relations=temporal+context+motion"
    trials = [Trial(f"{v}/seed{s}", v, s, 0.8 - 0.01 * i + NOISE[s], 0.5 - 0.01 * i)
              for i, v in enumerate(["full", long, "como=none", "clav=none"])
              for s in range(3)]
    write_study(env, "wide", trials)
    out = tmp_path / "wide"
    assert report(env, "wide", out).exit_code == 0
    probe = tmp_path / "probe.html"
    probe.write_text((out / "index.html").read_text().replace(
        "</body>", "<script>window.addEventListener('load', () => {const s = document."
                   "querySelector('#ablation').parentElement; document.body.dataset.overflow "
                   "= s.scrollWidth - s.clientWidth;});</script></body>"))
    dom = subprocess.run([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}",
                          "--window-size=1400,900", "--virtual-time-budget=5000", "--dump-dom",
                          probe.as_uri()], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    overflow = int(dom.stdout.split('data-overflow="')[1].split('"')[0])
    assert overflow <= 0, f"the table scrolls sideways by {overflow}px"


def test_without_study_record(env: Env, tmp_path: Path):
    result = report(env, "norec", tmp_path / "norec")
    assert result.exit_code == 0, result.output
    assert f"note: no study.json at {env.storage}/norec/study.json" in result.stderr
    rows = _by_variant(tmp_path / "norec")
    assert rows["full"]["comparison"] is None and rows["full"]["delta_auc"] is None  # the base
    assert rows["worse"]["n"] == 2 and rows["worse"]["delta_auc_ci"] is not None
    assert rows["worse"]["comparison"]["decision"] == "undecided"


def test_record_of_another_spec_or_without_base(env: Env, tmp_path: Path):

    other = {"name": "norec", "dataset": str(env.dataset), "trials": [],
             "spec": {"base_name": "ref", "metric": "auc", "mode": "max", "search": None}}
    write_study_json(str(tmp_path / "a"), "norec", {**other, "spec_hash": "changed"})
    result = report(env, "norec", tmp_path / "out-a", "--storage", str(tmp_path / "a"))
    assert result.exit_code == 0, result.output
    assert (f"note: {tmp_path}/a/norec/study.json belongs to another spec (hash changed, MLflow "
            f"has hash-norec); ignored: planned trials are unknown\n") in result.stderr
    rows = _by_variant(tmp_path / "out-a")
    assert rows["full"]["comparison"] is None and rows["worse"]["comparison"]  # the default base

    write_study_json(str(tmp_path / "b"), "norec", {**other, "spec_hash": "hash-norec"})
    result = report(env, "norec", tmp_path / "out-b", "--storage", str(tmp_path / "b"))
    assert result.exit_code == 0, result.output
    assert ("note: no base variant 'ref' among the finished runs; deltas are left out (the "
            "spec's base_name names it)\n") in result.stderr
    rows = _by_variant(tmp_path / "out-b")
    assert all(r["delta_auc"] is None and r["comparison"] is None for r in rows.values())


def test_variants_come_from_the_record_and_the_run_tags_not_the_trial_keys(env: Env,
                                                                            tmp_path: Path):

    # Keys without "variant/seed" in them: only the record and the tags say what they are.
    trials = [Trial(f"run-{s}", "full", s, 0.8 + 0.01 * s, 0.5) for s in (0, 1)]
    write_study(env, "keys", trials, record=False)
    record = {"name": "keys", "spec_hash": "hash-keys", "dataset": str(env.dataset),
              "spec": {"base_name": "full", "metric": "auc", "mode": "max", "search": None},
              "trials": [*({"key": t.key, "variant": t.variant, "seed": t.seed} for t in trials),
                         {"key": "planned-only", "variant": "clav=none", "seed": 0}]}
    write_study_json(str(tmp_path / "new"), "keys", record)
    result = report(env, "keys", tmp_path / "out", "--storage", str(tmp_path / "new"))
    assert result.exit_code == 0, result.output
    assert "missing 1 trial(s):\n  planned-only " in result.stderr
    rows = _by_variant(tmp_path / "out")
    assert list(rows) == ["full", "clav=none"]
    assert rows["full"]["seeds"] == [0, 1] and rows["clav=none"]["n"] == 0

    # A record that lists trials as bare keys (an older ablate) is refused, not parsed.
    write_study_json(str(tmp_path / "old"), "keys", {**record, "trials": [t.key for t in trials]})
    result = report(env, "keys", tmp_path / "out-old", "--storage", str(tmp_path / "old"))
    assert result.exit_code == 1
    assert result.stderr.startswith(
        f"error: {tmp_path}/old/keys/study.json: trials[0] is 'run-0', not an object with a "
        f"string key and variant and an integer seed")


def test_a_trial_run_without_its_identity_tags_is_left_out(env: Env, tmp_path: Path):
    from mlflow import MlflowClient

    write_study(env, "untagged", [Trial("full/seed0", "full", 0, 0.8, 0.5)])
    client = MlflowClient(tracking_uri=env.uri)
    experiment = client.get_experiment_by_name("untagged")
    stray = client.create_run(experiment.experiment_id, tags={
        "ablate.role": "trial", "ablate.study": "untagged", "ablate.trial_key": "other/seed0",
        "ablate.seed": "zero"}).info.run_id
    client.set_terminated(stray)
    result = report(env, "untagged", tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert (f"note: run {stray} is tagged as a trial of 'untagged' but has no valid "
            f"ablate.variant, ablate.seed; left out") in result.stderr
    assert list(_by_variant(tmp_path / "out")) == ["full"]


def test_search_latex_has_a_column_per_cell_when_selecting_on_validation():
    from ablate.report.model import Report
    from ablate.report.render.latex import latex
    from ablate.report.search import ConfigRow
    from ablate.report.table import Stat

    stats = {m: Stat(2, 0.8, 0.01) for m in ("val_auc", "auc", "auc_abnormal", "ap")}
    config = ConfigRow(rank=1, params={"train.lr": "0.001"}, seeds=(0, 1), stats=stats,
                       run_ids={0: "a", 1: "b"}, keys=("k0", "k1"))
    search = Report(study="s", tracking_uri="sqlite:///x.db", parent_run_id="p", spec_hash=None,
                    design=None, dataset=None, metric="val_auc", mode="max", base=None,
                    is_search=True, rows=(), planned=2, finished=2, missing=(), best=None,
                    seed=0, configs=(config,), search_params=("train.lr",))
    tex = latex(search)
    cols = tex.split(r"\begin{tabular}{")[1].split("}")[0]
    head, body = [line for line in tex.splitlines() if line.endswith(r"\\")]
    assert len(cols) == head.count("&") + 1 == body.count("&") + 1 == 7
    assert head.endswith(r"val AUC (\%) & AUC (\%) & AUC$_A$ (\%) & AP (\%) \\")


def test_unknown_study(env: Env, tmp_path: Path):
    result = report(env, "nope", tmp_path / "nope")
    assert result.exit_code == 1
    assert result.stderr == (
        f"error: no MLflow experiment 'nope' in {env.uri}; run `ablate run SPEC` first, or "
        f"pass --tracking-uri (or MLFLOW_TRACKING_URI) of the store the study was run with\n")
    assert not (tmp_path / "nope").exists()
    missing = tmp_path / "none.db"
    result = CliRunner().invoke(cli, ["report", "abl", "--tracking-uri", f"sqlite:///{missing}"])
    assert result.exit_code == 1
    assert result.stderr == (f"error: no tracking store at {missing}; run a study first (ablate "
                             f"run SPEC) or pass --tracking-uri (or set MLFLOW_TRACKING_URI)\n")
    assert not missing.exists()


def test_default_out_dir(env: Env, tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["report", "abl", "--tracking-uri", env.uri, "--storage",
                                      str(env.storage)])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "dashboards" / "abl" / "index.html").is_file()
    assert "  open:      dashboards/abl/index.html" in result.stdout


# -- headless browser --------------------------------------------------------------------------

def _chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    if os.environ.get("CI"):
        pytest.fail("chromium is required under CI (apt-get install -y chromium)")
    pytest.skip("chromium is not installed (apt-get install -y chromium); CI runs this test")


def _png_pixels(path: Path) -> np.ndarray:
    from PIL import Image  # a matplotlib dependency

    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"), dtype=np.int32)


def test_index_html_renders_in_chromium(abl: Path, tmp_path: Path):
    chromium = _chromium()
    # A copy with a probe that records each image's decoded width once the page has loaded;
    # the report itself has no script.
    probe = tmp_path / "probe.html"
    probe.write_text((abl / "index.html").read_text().replace(
        "</body>", "<script>window.addEventListener('load', () => {document.body.dataset.imgs ="
                   " [...document.images].map(i => i.complete ? i.naturalWidth : -1).join(',');"
                   "});</script></body>"))
    flags = [*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run([chromium, *flags, "--virtual-time-budget=5000", "--dump-dom",
                          probe.as_uri()], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    html = dom.stdout
    assert '<table id="ablation">' in html
    for variant in ("full", "same", "worse"):
        assert f'data-key="{variant}"><td>' in html
    widths = [int(w) for w in html.split('data-imgs="')[1].split('"')[0].split(",")]
    assert len(widths) == 3 and all(w > 100 for w in widths), widths

    shot = tmp_path / "shot.png"
    run = subprocess.run([chromium, *flags, f"--screenshot={shot}", "--window-size=1200,1600",
                          (abl / "index.html").as_uri()], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0 and shot.is_file(), run.stderr[-2000:]
    pixels = _png_pixels(shot)
    assert pixels.shape[:2] == (1600, 1200)
    colours = np.unique(pixels[::4, ::4].reshape(-1, 3), axis=0)
    assert len(colours) > 50  # text, table rules, plot lines: not a blank page
    dark = (pixels.sum(axis=2) < 200).mean()
    assert 0.001 < dark < 0.5


# -- ablate ui ---------------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _listening(port: int) -> set[str]:
    """Local addresses listening on TCP ``port`` (from /proc/net/tcp and tcp6)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not os.path.exists(table):
            continue
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.split(":")
            if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                if len(address) == 8:
                    found.add(socket.inet_ntoa(struct.pack("<I", int(address, 16))))
                else:
                    found.add(address)
    return found


@pytest.mark.slow  # the MLflow server takes 5-30 s to start
def test_ui_serves_the_store_on_loopback(env: Env, ablate_exe: str):
    port = _free_port()
    proc = subprocess.Popen([ablate_exe, "ui", "--port", str(port), "--tracking-uri", env.uri],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        deadline, body = time.monotonic() + 90, None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(
                        f"http://127.0.0.1:{port}/api/2.0/mlflow/experiments/get-by-name"
                        f"?experiment_name=abl", timeout=2) as response:
                    body = json.loads(response.read())
                    break
            except OSError:
                time.sleep(0.5)
        assert body is not None, proc.stdout.read() if proc.poll() is not None else "no answer"
        assert body["experiment"]["name"] == "abl"
        if sys.platform.startswith("linux"):
            assert _listening(port) == {"127.0.0.1"}
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)  # the UI's own server processes too
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    first = proc.stdout.readline()
    assert first == f"MLflow UI for {env.uri} at http://127.0.0.1:{port} (Ctrl-C stops it)\n"


@contextlib.contextmanager
def mlflow_ui(ablate_exe: str, uri: str, lines: int) -> Iterator[tuple[int, list[str]]]:
    """``ablate ui`` on ``uri`` in a session of its own, answering: its port and the first
    ``lines`` lines it printed; stopped (the whole session) at the end."""
    port = _free_port()
    proc = subprocess.Popen([ablate_exe, "ui", "--port", str(port), "--tracking-uri", uri],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        printed = [proc.stdout.readline().strip() for _ in range(lines)]
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
                break
            except OSError:
                time.sleep(0.5)
        yield port, printed
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.mark.slow  # an MLflow server and a browser
def test_ui_opens_a_study_on_its_trials_with_their_metrics(tmp_path: Path, ablate_exe: str):
    """The MLflow UI itself, in Chromium: the link `ablate ui` prints opens the study on its
    training runs (not MLflow's GenAI overview), with run names and the auc/ap columns."""
    from mlflow import MlflowClient

    from ablate.study.identity import TrialIdentity
    from ablate.tracking.study import EXPERIMENT_KIND
    from ablate.tracking.view import view_state

    chromium = _chromium()
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    tracker = study_tracker(uri, "uiview", "hash")
    tracker.start_study({"design": "grid"}, view=view_state("auc", "max"))
    for i, (variant, auc) in enumerate([("full", 0.8123), ("como=none", 0.7456)]):
        run_id = tracker.child(TrialIdentity(f"{variant}/seed0", variant, 0, f"h{i}"), f"t{i}",
                               {"seed": 0})
        tracker.log_epochs(run_id, [{"epoch": 1, "auc": auc, "ap": auc - 0.3, "loss": 0.5}])
        tracker.finish(run_id, [], tags={"ablate.final_epoch": "1"})
    tracker.end_study("FINISHED")
    experiment = client.get_experiment_by_name("uiview")
    assert experiment.tags[EXPERIMENT_KIND[0]] == "custom_model_development"

    with mlflow_ui(ablate_exe, uri, lines=2) as (port, lines):
        assert lines[0].startswith(f"MLflow UI for {uri} at ")
        link = lines[1]
        assert link == (f"uiview: http://127.0.0.1:{port}/#/experiments/"
                        f"{experiment.experiment_id}/runs?workflowType=machine_learning&"
                        f"viewStateShareKey=ablate")
        dom = subprocess.run([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'p'}",
                              "--window-size=1600,900", "--virtual-time-budget=30000",
                              "--dump-dom", link.split(": ", 1)[1]],
                             capture_output=True, text=True, timeout=180)
    page = dom.stdout
    for text in ("full/seed0", "como=none/seed0", ">auc<", ">ap<", "ablate.variant", "0.8123",
                 "Model training"):
        assert text in page, text


@pytest.mark.slow  # an MLflow server and a browser
def test_ui_shows_the_ablation_table_as_summary_runs(env: Env, abl: Path, tmp_path: Path,
                                                     ablate_exe: str):
    """``ablate report`` writes one summary run per variant; `ablate ui` links the study's view
    of them, which opens on the variants with their means, adjusted p and decisions."""
    from mlflow import MlflowClient

    chromium = _chromium()
    client = MlflowClient(env.uri)
    experiment = client.get_experiment_by_name("abl")
    summaries = client.search_runs([experiment.experiment_id], "tags.`ablate.role` = 'summary'")
    assert sorted(r.data.tags["ablate.variant"] for r in summaries) == ["full", "same", "worse"]
    worse, = (r for r in summaries if r.data.tags["ablate.variant"] == "worse")
    assert worse.data.tags["ablate.decision"] == "undecided"
    assert worse.data.metrics["p_holm"] == 0.125 and worse.data.metrics["n"] == 5
    with mlflow_ui(ablate_exe, env.uri, lines=2) as (port, lines):
        link = (f"abl (summaries): http://127.0.0.1:{port}/#/experiments/"
                f"{experiment.experiment_id}/runs?workflowType=machine_learning&"
                f"viewStateShareKey=ablate-summaries")
        assert lines[1] == link, lines  # the test's studies have no trial views
        # Wide enough that the grid renders every column of the view (it renders those seen).
        flags = [*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'p'}", "--window-size=2400,900",
                 "--virtual-time-budget=30000"]
        dom = subprocess.run([chromium, *flags, "--dump-dom", link.split(": ", 1)[1]],
                             capture_output=True, text=True, timeout=180)
        shot = tmp_path / "summaries.png"
        subprocess.run([chromium, *flags, f"--screenshot={shot}", link.split(": ", 1)[1]],
                       capture_output=True, text=True, timeout=180)
    page = dom.stdout
    for text in ("worse: undecided", "same: equivalent", "full: base", ">auc_mean<",
                 ">delta_auc<", ">p_holm<"):
        assert text in page, text
    assert shot.stat().st_size > 10_000  # a rendered page, not a blank one


def test_ui_refuses_missing_store_and_busy_port(tmp_path: Path, env: Env):
    missing = tmp_path / "none.db"
    result = CliRunner().invoke(cli, ["ui", "--tracking-uri", f"sqlite:///{missing}"])
    assert result.exit_code == 1
    assert result.stderr == (f"error: no tracking store at {missing}; run a study first (ablate "
                             f"run SPEC) or pass --tracking-uri (or set MLFLOW_TRACKING_URI)\n")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = CliRunner().invoke(cli, ["ui", "--port", str(port), "--tracking-uri", env.uri])
    assert result.exit_code == 1
    assert result.stderr == (f"error: port {port} on 127.0.0.1 is in use; pass --port N (or "
                             f"stop what holds it)\n")
