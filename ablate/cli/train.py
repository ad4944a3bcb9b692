"""``ablate train``: one trial, without Ray or MLflow."""

from __future__ import annotations

import json
from pathlib import Path

import click


@click.command("train")
@click.argument("config_or_preset")
@click.option("--data", "data_dir", type=click.Path(path_type=Path), default=None,
              help="Feature store directory [default: the synthetic small benchmark, "
                   "generated on first use].")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), required=True,
              help="Output directory; rerunning with the same directory resumes.")
@click.option("--seed", type=int, default=None, help="Trial seed (overrides the config).")
@click.option("--epochs", type=int, default=None, help="Epochs (overrides train.epochs).")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="Override a config key, e.g. --set model.como.relations=[motion].")
def train(config_or_preset: str, data_dir: Path | None, out_dir: Path, seed: int | None,
          epochs: int | None, sets: tuple[str, ...]) -> None:
    """Train and evaluate one trial from a config file or a preset (see `ablate list`)."""
    from ablate.config import (
        apply_overrides,
        load_raw_config,
        parse_set_option,
        resolve_trial_config,
    )
    from ablate.data import load
    from ablate.data.synth import default_store
    from ablate.metrics import METRICS, TABLE_METRICS, VALIDATION_METRICS
    from ablate.train.driver import run_trial
    from ablate.train.outputs import write_trial_outputs

    overrides = dict(parse_set_option(item) for item in sets)
    if seed is not None:
        overrides["seed"] = seed
    if epochs is not None:
        overrides["train.epochs"] = epochs
    config = resolve_trial_config(apply_overrides(load_raw_config(config_or_preset), overrides))
    dataset = load(data_dir if data_dir is not None else default_store())

    out_dir.mkdir(parents=True, exist_ok=True)
    total = config.train.epochs

    def report(result) -> None:
        m = result.metrics
        shown = [f"loss {m['loss']:.4f}"]
        shown += [f"{name} {m[name]:.4f}" for name in (VALIDATION_METRICS[0], *TABLE_METRICS)
                  if name in m]
        click.echo(f"epoch {result.epoch:>3}/{total}  {'  '.join(shown)}  "
                   f"({result.seconds:.1f}s)")

    trainer = run_trial(config, dataset, out_dir, on_epoch=report)
    if not trainer.history:
        raise click.ClickException("no epoch was trained")
    if not trainer.last_scores:  # resumed an already finished trial: score it again
        trainer.evaluate()
    final = trainer.history[-1]
    metrics = {**{name: final[name] for name in METRICS}, "epochs": trainer.epoch,
               "history": trainer.history}
    write_trial_outputs(out_dir, trainer)
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    values = "  ".join(f"{name} {final[name]:.4f}" for name in TABLE_METRICS)
    click.echo(f"done: {values}  -> {out_dir}/metrics.json")
