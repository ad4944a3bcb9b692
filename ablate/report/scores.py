"""Reading the best run's test scores and the dataset's frame labels, for the ROC/PR figure.

The run logs its test snippet scores as the ``scores/scores.npz`` artifact (one array per test
video); the frame-level ground truth is in the feature store. Either may be out of reach where
the report runs, which leaves the figure out with a note, never the report.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ablate.report.collect import StudyRuns
from ablate.tracking.runs import TrialRun

if TYPE_CHECKING:
    from ablate.tracking.store import Tracker

SCORES_ARTIFACT = "scores/scores.npz"
NO_DATASET = "ROC/PR curves left out: the dataset {path} cannot be read here ({problem})"
NO_SCORES = "ROC/PR curves left out: run {run_id} has no scores/scores.npz artifact"
SCORES_MISMATCH = ("ROC/PR curves left out: the scores of run {run_id} do not match the "
                   "dataset's test videos ({problem})")


@dataclass(frozen=True)
class BestScores:
    """The best run's test snippet scores, in the dataset's test-list order, and the frame
    labels they are scored against."""

    run: TrialRun
    snippets: tuple[np.ndarray, ...]
    frame_labels: np.ndarray
    frames_per_snippet: int


def trial_scores(tracker: Tracker, run_id: str, scratch: Path) -> dict[str, Any] | None:
    """A run's test snippet scores by video id, or None when the run has no such artifact."""
    path = tracker.fetch_artifact(run_id, SCORES_ARTIFACT, scratch)
    if path is None:
        return None
    with np.load(path) as data:
        return {k: data[k] for k in data.files}


def read_best_scores(tracker: Tracker, runs: StudyRuns) -> tuple[BestScores | None, list[str]]:
    """The best finished run's test scores with the dataset's labels, and notes saying why they
    are left out (none when the study has no best run or no dataset)."""
    from ablate.data import load
    from ablate.errors import AblateError

    best = runs.best
    if best is None or runs.dataset is None:
        return None, []
    try:
        dataset = load(runs.dataset)
    except (AblateError, OSError) as exc:
        return None, [NO_DATASET.format(path=runs.dataset, problem=exc)]
    with tempfile.TemporaryDirectory() as scratch:
        scores = trial_scores(tracker, best.run_id, Path(scratch))
    if scores is None:
        return None, [NO_SCORES.format(run_id=best.run_id)]
    test_ids = dataset.video_ids("test")
    absent = [v for v in test_ids if v not in scores]
    if absent:
        return None, [SCORES_MISMATCH.format(
            run_id=best.run_id, problem=f"{len(absent)} test videos have no scores")]
    return BestScores(best, tuple(np.asarray(scores[v]) for v in test_ids),
                      dataset.test_frame_labels(), dataset.frames_per_snippet), []
