"""``ablate data``: create, import, inspect and validate feature stores."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import TracebackType
from typing import Any

import click

DTYPE_CHOICE = click.Choice(["float16", "float32"])


class _Progress:
    """A ``progress(done, total)`` callback drawing a bar on stderr, only on a terminal (so
    logs and captured output stay clean)."""

    def __init__(self, label: str) -> None:
        self._label = label
        self._bar: Any = None
        self._done = 0
        self._enabled = sys.stderr.isatty()

    def __call__(self, done: int, total: int) -> None:
        if not self._enabled:
            return
        if self._bar is None:
            self._bar = click.progressbar(length=total, label=self._label, file=sys.stderr)
            self._bar.__enter__()
        self._bar.update(done - self._done)
        self._done = done

    def __enter__(self) -> _Progress:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._bar is not None:
            self._bar.__exit__(exc_type, exc, tb)


def _next_steps(store: Path) -> str:
    return f"next: set 'dataset: {store}' in a study file under search_spaces/ and 'ablate run' it"


@click.group()
def data() -> None:
    """Create, import, inspect and validate feature stores."""


@data.command()
@click.argument("store", type=click.Path(path_type=Path))
def validate(store: Path) -> None:
    """Check every file and row of the store at STORE.

    Checks the manifest, each file's size and SHA-256, NaN/Inf features, the feature dimension,
    missing or extra videos, snippet counts and frame-label lengths. Exits 1 with one line
    naming the file, the video and the problem on the first failure.
    """
    from ablate.data.validate import validate_store

    with _Progress("checking features") as progress:
        report = validate_store(store, progress=progress)
    click.echo(report.summary())


@data.command()
@click.argument("store", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print JSON (sizes in bytes).")
def info(store: Path, as_json: bool) -> None:
    """Summarise the store at STORE: videos per split and label, shapes, sizes."""
    from ablate.data.info import format_info, store_info

    summary = store_info(store)
    click.echo(json.dumps(summary, indent=2) if as_json else format_info(summary))


@data.command()
@click.option("--out", "out", required=True, type=click.Path(path_type=Path),
              help="Store directory to write.")
@click.option("--scale", type=click.Choice(["small", "ucf"]), default="small", show_default=True,
              help="small: a study runs in minutes on a laptop; ucf: UCF-Crime sized.")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed; the same seed gives identical files.")
@click.option("--overwrite", is_flag=True, help="Replace an existing store at --out.")
def synth(out: Path, scale: str, seed: int, overwrite: bool) -> None:
    """Generate the synthetic context-motion benchmark as a store."""
    from ablate.data.synth import generate

    path = generate(out, scale=scale, seed=seed, overwrite=overwrite,
                    progress=sys.stderr.isatty())
    click.echo(f"wrote the synthetic benchmark ({scale}, seed {seed}) to {path}; "
               f"{_next_steps(path)}")


@data.group(name="import")
def import_() -> None:
    """Import a public I3D feature release (RTFM or Wu et al. layout)."""


def _import_options(func):  # type: ignore[no-untyped-def]
    options = [
        click.option("--train-list", required=True, type=click.Path(path_type=Path),
                     help="List file of the train videos (e.g. ucf-i3d.list)."),
        click.option("--test-list", required=True, type=click.Path(path_type=Path),
                     help="List file of the test videos (e.g. ucf-i3d-test.list)."),
        click.option("--gt", required=True, type=click.Path(path_type=Path),
                     help="Frame-level ground truth .npy over the test list, in list order."),
        click.option("--out", required=True, type=click.Path(path_type=Path),
                     help="Store directory to write."),
        click.option("--feature-root", type=click.Path(path_type=Path),
                     help="Find each listed file by its base name under this directory "
                          "(lists hold the authors' absolute paths)."),
        click.option("--num-abnormal", type=int,
                     help="The first N train videos are abnormal, the rest normal "
                          "(ShanghaiTech: 63). Default: labels from the names."),
        click.option("--dtype", type=DTYPE_CHOICE, default="float16", show_default=True,
                     help="Storage dtype."),
        click.option("--name", help="Store name (default: the --out directory name)."),
        click.option("--overwrite", is_flag=True, help="Replace an existing store at --out."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _run_import(layout: str, **kwargs: object) -> None:
    from ablate.data.importers import import_features

    out = kwargs.pop("out")
    with _Progress(f"importing ({layout} layout)") as progress:
        path = import_features(layout, out=out, progress=progress, **kwargs)  # type: ignore[arg-type]
    from ablate.data.info import store_info

    summary = store_info(path)
    click.echo(f"imported {summary['videos']['total']} videos (train "
               f"{summary['videos']['train']['videos']}, test "
               f"{summary['videos']['test']['videos']}; {summary['crops']} crops × "
               f"{summary['dim']} {summary['dtype']}) to {path}; {_next_steps(path)}")


@import_.command()
@_import_options
def rtfm(**kwargs: object) -> None:
    """RTFM layout: one .npy per video, shape [T, crops, D] (e.g. 01_0015_i3d.npy).

    The video id is the base name without .npy and a trailing _i3d.
    """
    _run_import("rtfm", **kwargs)


@import_.command()
@_import_options
def wu(**kwargs: object) -> None:
    """Wu et al. layout: one .npy per crop, shape [T, D] (Abuse001_x264__0.npy ... __9;
    XD-Violence: __0 ... __4). Lists may name each crop file or each video once."""
    _run_import("wu", **kwargs)
