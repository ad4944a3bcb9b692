"""``ablate run`` and ``ablate status``."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import TYPE_CHECKING

import click

from ablate.errors import AblateError

if TYPE_CHECKING:
    from ablate.engine.runner import StudyOutcome
    from ablate.study.plan import Plan
    from ablate.study.spec import StudySpec

DEFAULT_STORAGE = "runs"
INTERRUPTED = "interrupted: study '{name}' stopped{done}; run the same command to resume"
# How the driver runs Tune: frequent experiment snapshots (a stopped driver loses little),
# Tune's plain progress output (ablate prints its own), and of Tune's per-result loggers only the
# JSON one the runner adds (CSV and TensorBoard files cost the driver CPU the trials need).
RUN_ENVIRONMENT = {"TUNE_GLOBAL_CHECKPOINT_S": "2", "RAY_AIR_NEW_OUTPUT": "0",
                   "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1"}


def use_cluster_token(address: str | None) -> None:
    """Sends Ray's token when the cluster at ``address`` checks one (see
    :func:`ablate.engine.raycluster.token_check`); an explicit ``RAY_AUTH_MODE`` is left alone.

    Raises:
        AblateError: Nothing answers at ``address``, or the cluster checks a token this
            machine does not have.
    """
    from ablate.engine.raycluster import RAY_TOKEN, TokenCheck, check_reachable, token_check

    if not address or address in ("local", "auto"):
        return
    check_reachable(address)  # before `ray status`, which waits 30 s for nothing
    if "RAY_AUTH_MODE" in os.environ:
        return
    check = token_check(address)
    if check is TokenCheck.ACCEPTED:
        os.environ["RAY_AUTH_MODE"] = "token"
    elif check in (TokenCheck.MISSING, TokenCheck.REFUSED):
        which = "none" if check is TokenCheck.MISSING else "another one"
        raise AblateError(RAY_TOKEN.format(address=address, which=which))


def load_plan(spec_file: Path, name: str | None) -> Plan:
    """The study file's plan, resolved once (under ``name`` when given)."""
    from ablate.cli.options import study_name
    from ablate.study.plan import build_plan
    from ablate.study.spec import load_spec

    spec = load_spec(spec_file)
    if name is not None:
        spec = dataclasses.replace(spec, name=study_name(name, "--name"))
    return build_plan(spec)


def print_trial_table(plan: Plan) -> int:
    spec = plan.spec
    if spec.search is not None:
        click.echo(f"study '{spec.name}': search ({spec.search.algorithm}) over "
                   f"{', '.join(spec.search.space)}; {spec.search.num_samples} samples x "
                   f"{len(spec.seeds)} seed(s) = {plan.total} trials; scheduler "
                   f"{spec.scheduler.type}")
        if spec.confirm is not None:
            click.echo(f"then the best {spec.confirm.top_k} configuration(s) by {spec.metric} on "
                       f"fresh seeds {list(spec.confirm.seeds)}: "
                       f"{spec.confirm.top_k * len(spec.confirm.seeds)} more trials")
        return plan.total
    first = (plan.trials if spec.adaptive is None
             else [t for t in plan.trials if t.seed < spec.adaptive.initial])
    width = max(len(t.variant) for t in first)
    click.echo(f"{'#':>4}  {'variant':<{width}}  seed  changes")
    changes = {v.name: v.changes for v in plan.variants}
    for i, t in enumerate(first, start=1):
        change = ", ".join(f"{k}={v}" for k, v in changes[t.variant].items()) or "-"
        click.echo(f"{i:>4}  {t.variant:<{width}}  {t.seed:>4}  {change}")
    if spec.adaptive is None:
        click.echo(f"study '{spec.name}' ({spec.design}): {len(plan.variants)} variants x "
                   f"{len(spec.seeds)} seed(s) = {plan.total} trials")
    else:
        _print_rounds(plan, len(first))
    if plan.fused:
        from ablate.study.plan import members_per_unit

        stage = plan.for_stage([t.key for t in first])
        groups, limit = stage.groups, members_per_unit(spec, len(first))
        sizing = (f"fuse_members {limit}" if spec.fuse_members is not None
                  else "auto: whole groups on GPUs" if limit is None
                  else f"auto: at most {limit} per Tune trial on CPU, {spec.max_concurrent} "
                       f"at a time")
        click.echo(f"fused ({spec.fuse}; {sizing}): {len(groups)} Tune trial(s): " + "; ".join(
            f"{name} ({len(members)})" for name, members in groups.items()))
    return plan.total


def _print_rounds(plan: Plan, first: int) -> None:
    """An adaptive study's rounds, and where its decisions can be made."""
    spec = plan.spec
    assert spec.adaptive is not None
    rule, rounds = spec.rule, spec.adaptive.rounds
    looks = spec.adaptive.looks(len(plan.variants) - 1, rule.alpha)
    deciding = [f"{n} (alpha {a:.3g})" for n, a in zip(looks.seeds, looks.difference,
                                                       strict=True) if a]
    click.echo(f"study '{spec.name}' ({spec.design}): {len(plan.variants)} variants; adaptive "
               f"seeds: round 1 runs {first} trials ({rounds[0]} seeds each), then rounds at "
               f"{', '.join(str(n) for n in rounds[1:]) or 'none'} seeds for the variants "
               f"still undecided against '{spec.base_name}' on {rule.metric}; at most "
               f"{plan.total} trials")
    click.echo(f"decisions (alpha {rule.alpha:g}, delta {rule.delta:g}): better/worse at "
               f"{', '.join(deciding) or 'no round (see ablate report)'}; equivalence at every "
               f"round (alpha {looks.equivalence[0]:.3g} each)")


@click.command("run")
@click.argument("spec_file", type=click.Path(path_type=Path))
@click.option("--dry-run", is_flag=True, help="Print the trial table and exit.")
@click.option("--storage", default=DEFAULT_STORAGE, show_default=True,
              help="Where studies keep Ray state and checkpoints: a path or a URI (s3://...); "
                   "shared by all nodes on a cluster.")
@click.option("--tracking-uri", default=None,
              help="MLflow tracking URI [default: MLFLOW_TRACKING_URI, else "
                   "sqlite:///mlflow.db].")
@click.option("--address", default=None,
              help="Address of an existing Ray cluster [default: RAY_ADDRESS, else a local "
                   "Ray].")
@click.option("--name", default=None, help="Run under another study name (a new study).")
@click.option("--quiet", is_flag=True, help="No progress lines.")
def run(spec_file: Path, dry_run: bool, storage: str, tracking_uri: str | None,
        address: str | None, name: str | None, quiet: bool) -> None:
    """Run, or resume, the study SPEC_FILE (e.g. search_spaces/como.yaml)."""
    from ablate.cli.stop import graceful_stop

    # A stop is handled alike from the first moment on: while the spec is read, Ray starts,
    # or Tune runs (see ablate.cli.stop).
    plan: Plan | None = None
    with graceful_stop() as stop:
        try:
            plan = load_plan(spec_file, name)
            if dry_run:
                print_trial_table(plan)
                return
            outcome = _run(plan, storage, tracking_uri, address, quiet)
        except KeyboardInterrupt:  # stopped before or after Tune ran: nothing to count
            outcome = None
    study = plan.spec.name if plan is not None else name or spec_file.stem
    if outcome is None or outcome.interrupted:
        done = (f" with {outcome.done}/{outcome.total} trials done"
                if outcome is not None else "")
        click.echo(INTERRUPTED.format(name=study, done=done), err=True)
        raise SystemExit(stop.exit_status)
    assert plan is not None
    _summary(plan.spec, outcome)
    if outcome.failed:
        raise SystemExit(1)
    _publish_summaries(study, storage, outcome.tracking_uri)


def _run(plan: Plan, storage: str, tracking_uri: str | None, address: str | None,
         quiet: bool) -> StudyOutcome:
    """Runs the study of ``plan`` with the environment ``ablate run`` gives Ray and Tune."""
    from ablate.tracking.uri import resolve_tracking_uri

    for key, value in RUN_ENVIRONMENT.items():
        os.environ.setdefault(key, value)
    if plan.spec.search is not None:  # OptunaSearch announces its in-memory study at INFO
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
    use_cluster_token(address or os.environ.get("RAY_ADDRESS"))
    from ablate.engine.runner import run_study

    return run_study(plan, storage, resolve_tracking_uri(tracking_uri), address, quiet=quiet)


def _publish_summaries(study: str, storage: str, uri: str) -> None:
    """The finished study's table as summary runs in the tracking store (what ``ablate
    report`` also writes), so the UI shows it without a report."""
    from ablate.report.build import build_report
    from ablate.report.collect import collect
    from ablate.report.summaries import publish_summaries
    from ablate.tracking.connect import connect

    try:
        tracker = connect(uri)
        publish_summaries(tracker, build_report(collect(tracker, study, storage), {}))
    except AblateError as exc:  # the study is done; its table can still be reported later
        click.echo(f"warning: the summary runs were not written ({exc}); `ablate report "
                   f"{study}` writes them", err=True)


def _summary(spec: StudySpec, outcome: StudyOutcome) -> None:
    from ablate.metrics import TABLE_METRICS

    rows = outcome.rows
    width = max([len("variant")] + [len(r.variant) for r in rows])
    click.echo("")
    click.echo(f"{'variant':<{width}}  {'seed':>4}  {'epochs':>6}  "
               + "  ".join(f"{m:>7}" for m in TABLE_METRICS) + "  status")
    for r in rows:
        values = "  ".join(f"{r.metrics[m]:>7.4f}" if m in r.metrics else f"{'-':>7}"
                           for m in TABLE_METRICS)
        click.echo(f"{r.variant:<{width}}  {r.seed:>4}  {r.epoch:>6}  {values}  {r.state}")
    minutes = outcome.seconds / 60
    click.echo(f"\nstudy '{spec.name}': {outcome.done}/{outcome.total} trials done, "
               f"{outcome.failed} failed "
               f"in {minutes:.1f} min{' (resumed)' if outcome.resumed else ''}")
    if outcome.failed:
        click.echo("rerun the same command to retry the failed trials", err=True)
    click.echo(f"  MLflow UI: ablate ui --tracking-uri {outcome.tracking_uri}")
    click.echo(f"  report:    ablate report {spec.name} --tracking-uri {outcome.tracking_uri}")
    storage = outcome.study_dir.root[:-len(spec.name) - 1]
    click.echo(f"  status:    ablate status {spec.name} --storage {storage}")


@click.command("status")
@click.argument("study")
@click.option("--storage", default=DEFAULT_STORAGE, show_default=True)
def status(study: str, storage: str) -> None:
    """Show the state of STUDY's trials, finished or not (reads files only; starts nothing)."""
    from ablate.cli.options import study_name
    from ablate.study.status import study_status

    for line in study_status(study_name(study, "STUDY"), storage):
        click.echo(line)
