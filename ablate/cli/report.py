"""``ablate report`` and ``ablate ui``."""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import click

from ablate.cli.run import DEFAULT_STORAGE
from ablate.errors import AblateError

DEFAULT_DASHBOARDS = "dashboards"
DEFAULT_PORT = 5000
LOOPBACK = ("127.0.0.1", "localhost", "::1")
PORT_IN_USE = "port {port} on {host} is in use; pass --port N (or stop what holds it)"
NO_STORE = ("no tracking store at {path}; run a study first (ablate run SPEC) or pass "
            "--tracking-uri (or set MLFLOW_TRACKING_URI)")
CANNOT_WRITE = "cannot write the report to {path}: {problem}; pass --out DIR"
EXPOSED = ("warning: --host {host} makes the MLflow UI reachable from other machines, with no "
           "authentication; keep it on 127.0.0.1 and use an SSH tunnel where you can")


def _check_store(uri: str) -> None:
    """A SQLite store must exist: MLflow would create an empty one, leaving a stray file."""
    from ablate.tracking.check import check_backend_store
    from ablate.tracking.uri import sqlite_path

    db = sqlite_path(uri)
    if db is not None and not db.is_file() and not db.is_dir():
        raise AblateError(NO_STORE.format(path=db))
    check_backend_store(uri)


@click.command("report")
@click.argument("study")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Directory for the report [default: dashboards/STUDY].")
@click.option("--tracking-uri", default=None,
              help="MLflow tracking URI [default: MLFLOW_TRACKING_URI, else "
                   "sqlite:///mlflow.db].")
@click.option("--storage", default=DEFAULT_STORAGE, show_default=True,
              help="Where the study keeps study.json (for planned trials and the search space).")
@click.option("--seed", type=int, default=0, show_default=True,
              help="RNG seed of the parameter importances' forest (searches).")
def report(study: str, out: Path | None, tracking_uri: str | None, storage: str,
           seed: int) -> None:
    """Write the ablation table and plots of STUDY (finished or not) and log them to MLflow."""
    from ablate.cli.options import study_name
    from ablate.report.build import build_report
    from ablate.report.collect import collect, metric_histories
    from ablate.report.convergence import CRITERION_METRIC
    from ablate.report.publish import ARTIFACT_PATH, log_report, write_report
    from ablate.report.render.terminal import summary, warnings
    from ablate.report.scores import read_best_scores
    from ablate.report.summaries import publish_summaries
    from ablate.tracking.connect import connect
    from ablate.tracking.uri import resolve_tracking_uri

    study_name(study, "STUDY")
    uri = resolve_tracking_uri(tracking_uri)
    _check_store(uri)
    tracker = connect(uri)
    runs = collect(tracker, study, storage)
    best_scores, score_notes = read_best_scores(tracker, runs)
    histories = metric_histories(tracker, runs.finished, runs.metric)
    validation = (histories if runs.metric == CRITERION_METRIC
                  else metric_histories(tracker, runs.finished, CRITERION_METRIC))
    result = build_report(runs, histories, best_scores, score_notes, seed=seed,
                          validation=validation)
    target = out if out is not None else Path(DEFAULT_DASHBOARDS) / study
    try:
        files = write_report(result, target)
    except OSError as exc:
        raise AblateError(CANNOT_WRITE.format(path=target, problem=exc.strerror or exc)) from None
    log_report(tracker, result, target, files)
    summaries = publish_summaries(tracker, result)

    for line in summary(result):
        click.echo(line)
    for line in warnings(result):
        click.echo(line, err=True)
    plots = sum(1 for f in files if f.suffix == ".png")
    names = ", ".join(f.name for f in files if f.suffix != ".png")
    click.echo(f"wrote {target}/: {names}, {plots} plot(s)")
    click.echo(f"logged to MLflow run {result.parent_run_id} under {ARTIFACT_PATH}/, with "
               f"{len(summaries)} summary run(s)")
    click.echo(f"  open:      {target / 'index.html'}")
    click.echo(f"  MLflow UI: ablate ui --tracking-uri {uri}")


def study_links(uri: str, base: str) -> list[tuple[str, str]]:
    """``(label, link)`` of every prepared view in the store: each study's trials with their
    metric columns, and its summaries (the ablation table, once reported); a store that cannot
    be read lists none, the UI will say why."""
    from ablate.tracking.connect import connect
    from ablate.tracking.runs import STUDY
    from ablate.tracking.view import (
        SUMMARY_VIEW_KEY,
        SUMMARY_VIEW_TAG,
        VIEW_KEY,
        VIEW_TAG,
        view_url,
    )

    try:
        experiments = connect(uri).experiments(STUDY)
    except Exception:  # a store it cannot read: the UI says why
        return []
    links = []
    for e in sorted(experiments, key=lambda e: e.name):
        if VIEW_TAG in e.tags:
            links.append((e.name, view_url(base, e.experiment_id, VIEW_KEY)))
        if SUMMARY_VIEW_TAG in e.tags:
            links.append((f"{e.name} (summaries)",
                          view_url(base, e.experiment_id, SUMMARY_VIEW_KEY)))
    return links


def _port_free(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


@click.command("ui")
@click.option("--port", type=click.IntRange(1, 65535), default=DEFAULT_PORT, show_default=True)
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Interface to bind; the default keeps the UI on this machine.")
@click.option("--tracking-uri", default=None,
              help="MLflow tracking URI [default: MLFLOW_TRACKING_URI, else "
                   "sqlite:///mlflow.db].")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Server worker processes (one is plenty for a single user).")
def ui(port: int, host: str, tracking_uri: str | None, workers: int) -> None:
    """Start the MLflow UI on the study tracking store (Ctrl-C stops it)."""
    from ablate.tracking.uri import resolve_tracking_uri

    uri = resolve_tracking_uri(tracking_uri)
    _check_store(uri)  # else an empty store and a UI with nothing in it
    if not _port_free(host, port):
        raise AblateError(PORT_IN_USE.format(port=port, host=host))
    if host not in LOOPBACK:
        click.echo(EXPOSED.format(host=host), err=True)
    shown = f"[{host}]" if ":" in host else host
    base = f"http://{shown}:{port}"
    click.echo(f"MLflow UI for {uri} at {base} (Ctrl-C stops it)")
    for study, link in study_links(uri, base):
        click.echo(f"  {study}: {link}")
    argv = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri,
            "--host", host, "--port", str(port), "--workers", str(workers)]
    # MLflow's server also starts a job runner (GenAI evaluation jobs, periodic tasks) that
    # writes to the store: not needed to browse runs, and a second writer on a SQLite store
    # a study may be writing to. MLFLOW_SERVER_ENABLE_JOB_EXECUTION=true brings it back.
    os.environ.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    sys.stdout.flush()
    sys.stderr.flush()
    # exec, not a child: Ctrl-C and a supervisor's signals reach the server directly.
    os.execvp(argv[0], argv)
