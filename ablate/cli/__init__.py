"""The ``ablate`` command group.

Each sub-command lives in its own module and is registered here. Expected errors
(:class:`ablate.errors.AblateError`) are printed as one plain line on stderr with exit
status 1; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import os
import sys

import click

from ablate import __version__
from ablate.errors import AblateError

# How MLflow behaves in these commands: its INFO lines (a new database, every run's "View run"
# link on an HTTP store) and progress bars are noise here; an unreachable tracking server fails
# in seconds, not after minutes of retries. MLflow reads these when imported, after this.
MLFLOW_ENVIRONMENT = {
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
}


class _AblateGroup(click.Group):
    def invoke(self, ctx: click.Context):  # type: ignore[override]
        try:
            return super().invoke(ctx)
        except AblateError as exc:
            if ctx.params.get("debug"):
                raise
            click.echo(f"error: {error_line(exc)}", err=True)
            sys.exit(1)


MAX_ERROR_LINE = 1000  # characters: the messages name values shortened; this is the backstop


def error_line(exc: AblateError) -> str:
    """An expected error as one line of at most :data:`MAX_ERROR_LINE` characters, its start
    (what failed) and its end (the remedy) kept."""
    text = " ".join(str(exc).split("\n"))
    if len(text) <= MAX_ERROR_LINE:
        return text
    half = (MAX_ERROR_LINE - 5) // 2
    return f"{text[:half]} ... {text[-half:]}"


@click.group(cls=_AblateGroup)
@click.version_option(__version__, prog_name="ablate")
@click.option("--debug", is_flag=True, help="Show tracebacks for expected errors.")
def cli(debug: bool) -> None:
    """Ablation studies and hyper-parameter searches on Ray Tune, tracked in MLflow."""
    import logging

    for key, value in MLFLOW_ENVIRONMENT.items():
        os.environ.setdefault(key, value)
    level = os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "DEBUG" if debug else "WARNING")
    # MLflow (if already imported, so the variable above is too late) and alembic announce
    # schema migrations at INFO on every new SQLite store.
    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(level.upper())


def _register() -> None:
    from ablate.cli import data, listing, report, run, train

    cli.add_command(data.data)
    cli.add_command(listing.list_command)
    cli.add_command(train.train)
    cli.add_command(run.run)
    cli.add_command(run.status)
    cli.add_command(report.report)
    cli.add_command(report.ui)


_register()


def main() -> None:
    """The console script. It ends without the interpreter's teardown, which takes about two
    seconds once torch, Ray and MLflow are loaded and writes nothing of ours: by then every
    file is closed, and Ray (its atexit hook's one job) is shut down here."""
    try:
        cli(prog_name="ablate")
    except SystemExit as done:
        code = done.code if isinstance(done.code, int) else 0 if done.code is None else 1
        if isinstance(done.code, str):
            click.echo(done.code, err=True)
        _exit_now(code)


def _exit_now(code: int) -> None:
    import logging

    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        ray.shutdown()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
