"""The ``ablate`` command group.

Each sub-command lives in its own module and is registered here. Expected errors
(:class:`ablate.errors.AblateError`) are printed as one plain line on stderr with exit
status 1; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import sys

import click

from ablate import __version__
from ablate.errors import AblateError


class _AblateGroup(click.Group):
    def invoke(self, ctx: click.Context):  # type: ignore[override]
        try:
            return super().invoke(ctx)
        except AblateError as exc:
            if ctx.params.get("debug"):
                raise
            click.echo(f"error: {exc}", err=True)
            sys.exit(1)


@click.group(cls=_AblateGroup)
@click.version_option(__version__, prog_name="ablate")
@click.option("--debug", is_flag=True, help="Show tracebacks for expected errors.")
def cli(debug: bool) -> None:
    """Ablation studies and hyper-parameter searches on Ray Tune, tracked in MLflow."""
    import logging

    # MLflow and alembic announce schema migrations at INFO on every new SQLite store.
    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.DEBUG if debug else logging.WARNING)


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
    cli(prog_name="ablate")
