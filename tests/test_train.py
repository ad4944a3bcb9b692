"""One trial: the trainer, its checkpoints and resume, and `ablate train`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from ablate.cli import cli
from ablate.config import apply_overrides, load_raw_config, resolve_trial_config
from ablate.data import load
from ablate.errors import ConfigError
from ablate.train.driver import run_trial


def _config(preset: str = "full", **overrides: object):
    return resolve_trial_config(apply_overrides(load_raw_config(preset), overrides))


def test_resume_gives_the_same_metrics_as_a_straight_run(synthetic_small: Path,
                                                         tmp_path: Path) -> None:
    dataset = load(synthetic_small)
    # Test scored every epoch: a 2-epoch run scores it at its last epoch, a 4-epoch one would not.
    # At a constant lr a finished run can grow; a cosine one cannot (see the next test).
    every = {"train.eval_every": 1, "train.lr_schedule": "constant"}
    straight = run_trial(_config(**{"train.epochs": 4}, **every), dataset, tmp_path / "straight")
    run_trial(_config(**{"train.epochs": 2}, **every), dataset, tmp_path / "resumed")
    resumed = run_trial(_config(**{"train.epochs": 4}, **every), dataset, tmp_path / "resumed")
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3, 4]
    assert resumed.history == straight.history
    assert straight.history[-1]["auc"] > 0.5  # it learned something


def test_a_cosine_run_cannot_grow_its_epochs(synthetic_small: Path, tmp_path: Path) -> None:
    from ablate.errors import AblateError

    dataset = load(synthetic_small)
    cosine = {"train.lr_schedule": "cosine", "train.eval_every": 1}
    run_trial(_config(**{"train.epochs": 1}, **cosine), dataset, tmp_path)
    with pytest.raises(AblateError, match=r"holds a checkpoint of a 1-epoch cosine lr schedule; "
                                          r".* cannot become a 2-epoch run"):
        run_trial(_config(**{"train.epochs": 2}, **cosine), dataset, tmp_path)


def test_resume_refuses_a_different_config(synthetic_small: Path, tmp_path: Path) -> None:
    dataset = load(synthetic_small)
    run_trial(_config(**{"train.epochs": 1}), dataset, tmp_path)
    from ablate.errors import AblateError

    with pytest.raises(AblateError, match=r"holds a checkpoint of a different config "
                                          r"\(changed: model\)"):
        run_trial(_config(**{"train.epochs": 1, "model.clav.margin": 2.0}), dataset, tmp_path)


def test_train_cli_writes_metrics_and_resumes(synthetic_small: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "trial"
    # A constant lr, so the finished run may grow from 1 to 2 epochs.
    args = ["train", "baseline", "--data", str(synthetic_small), "--out", str(out),
            "--set", "train.lr_schedule=constant"]
    first = runner.invoke(cli, [*args, "--epochs", "1", "--seed", "3"])
    assert first.exit_code == 0, first.output
    assert "epoch   1/1" in first.output
    second = runner.invoke(cli, [*args, "--epochs", "2", "--seed", "3"])
    assert second.exit_code == 0, second.output
    assert "epoch   1/2" not in second.output and "epoch   2/2" in second.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["epochs"] == 2
    assert [h["epoch"] for h in metrics["history"]] == [1, 2]
    assert metrics["auc"] == metrics["history"][-1]["auc"]
    assert {"auc", "ap", "ap_sklearn", "auc_abnormal"} <= set(metrics)
    assert 0.0 <= metrics["auc_abnormal"] <= 1.0
    assert (out / "checkpoint.pt").exists() and (out / "scores.npz").exists()


@pytest.mark.parametrize(("sets", "message"), [
    (["model.como.type=cmo"],
     "error: model.como.type: unknown component 'cmo'; did you mean 'como'? Allowed: como, none"),
    (["model.como.fusoin=sum"],
     "error: model.como.fusoin: unknown option for como; did you mean 'fusion'? Allowed: "
     "attention_temperature, context_window, dropout, fusion, hidden, layer_norm, relations, "
     "temporal_sigma"),
    (["model.embed.hidden=big"], "error: model.embed.hidden: expected int, got str ('big')"),
    (["model.como.relations=[foo]"],
     "error: model.como.relations: unknown relation 'foo'; allowed: temporal, context, motion, "
     "context_motion"),
    (["train.epochs=ten"], "error: train.epochs: expected int, got str ('ten')"),
    (["train.epoch=3"], "error: train.epoch: unknown option; did you mean 'epochs'? Allowed: "
                        "amp, batch_size, device, epochs, eval_chunk, eval_every, lr, lr_schedule, "
                        "segments, threads, val_fraction, weight_decay"),
])
def test_bad_config_is_one_line_naming_the_key(tmp_path: Path, sets: list[str],
                                               message: str) -> None:
    args = ["train", "full", "--out", str(tmp_path / "t")]
    for item in sets:
        args += ["--set", item]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == [message]
    assert not (tmp_path / "t").exists()  # nothing written for a bad config


def test_bad_config_through_the_real_entry_point(tmp_path: Path) -> None:
    from tests.conftest import run_cli

    result = run_cli("train", "full", "--out", str(tmp_path / "t"), "--set",
                     "model.clav.distance=manhattan")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "error: model.clav.distance: expected one of euclidean, cosine, got 'manhattan'"]


def test_unknown_preset_lists_presets(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["train", "fulll", "--out", str(tmp_path / "t")])
    assert result.exit_code == 1
    assert result.stderr.strip() == (
        "error: fulll: neither a file nor a preset; presets: baseline, clav_only, como_only, "
        "full, mil_ranking, rtfm")


def test_set_values_are_yaml() -> None:
    from ablate.config import parse_set_option

    assert parse_set_option("train.lr=1e-3") == ("train.lr", 1e-3)
    assert parse_set_option("model.como.relations=[motion, context]") == (
        "model.como.relations", ["motion", "context"])
    with pytest.raises(ConfigError, match="expected key=value"):
        parse_set_option("train.lr")


def test_switching_a_component_off_drops_its_options() -> None:
    raw = apply_overrides(load_raw_config("full"), {"model.como.fusion": "sum"})
    off = apply_overrides(raw, {"model.como.type": "none"})
    assert off["model"]["como"] == {"type": "none"}
    assert resolve_trial_config(off).model["como"] == {"type": "none"}


def test_a_cosine_schedule_decays_each_epoch_from_the_peak_lr() -> None:
    from ablate.config import TrainOptions
    from ablate.train.trainer import epoch_lr

    cosine = TrainOptions(epochs=4, lr=2e-3, lr_schedule="cosine")
    assert [epoch_lr(cosine, e) for e in range(4)] == pytest.approx(
        [2e-3, 2e-3 * (1 + 0.5 ** 0.5) / 2, 1e-3, 2e-3 * (1 - 0.5 ** 0.5) / 2])
    constant = TrainOptions(epochs=4, lr=2e-3, lr_schedule="constant")
    assert {epoch_lr(constant, e) for e in range(4)} == {2e-3}


def test_a_resumed_cosine_trial_trains_at_the_lr_of_its_epoch(make_store) -> None:
    """The lr comes from the epoch, not from scheduler state: 2 epochs then 2 more equal 4."""
    import torch

    from ablate.train.trainer import Trainer

    store = make_store(train=(20,) * 12).path
    raw = apply_overrides(load_raw_config("baseline"), {
        "train.epochs": 4, "train.lr": 1e-3, "train.lr_schedule": "cosine", "train.batch_size": 4,
        "train.threads": 1, "train.device": "cpu"})
    whole = Trainer(resolve_trial_config(raw), load(store))
    list(whole.epochs())
    half = Trainer(resolve_trial_config(raw), load(store))
    for _ in range(2):
        half.train_epoch()
        half.epoch += 1
    state = half.state_dict()
    resumed = Trainer(resolve_trial_config(raw), load(store))
    resumed.load_state_dict(state)
    for _ in range(2):
        resumed.train_epoch()
        resumed.epoch += 1
    assert resumed.optimizer.param_groups[0]["lr"] == pytest.approx(1e-3 * (1 - 0.5 ** 0.5) / 2)
    for a, b in zip(whole.model.parameters(), resumed.model.parameters(), strict=True):
        assert torch.equal(a, b)
