"""``ablate data info``, ``synth`` and the command tree."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from click.testing import CliRunner

import ablate.data.synth
from ablate.cli import cli
from ablate.data import StoreWriter


def test_info_text(make_store):
    store = make_store(train=(5, 40, 1), test=(5, 32, 70))
    result = CliRunner().invoke(cli, ["data", "info", str(store.path)])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"store      {store.path} (store, created ")
    assert lines[1:5] == [
        "features   2 crops × 8 dims, float16",
        "videos     6: train 3 (1 normal, 2 abnormal), test 3 (1 normal, 2 abnormal)",
        "snippets   153: train 46, test 107",
        "frames     2,448: train 736, test 1,712 (16 per snippet)",
    ]
    assert lines[5].startswith("on disk    ") and "features.parquet " in lines[5]
    assert lines[5].endswith("; cache 0 B")
    assert lines[6] == "source     test (seed=0)"


def test_info_json(make_store):
    store = make_store(train=(5, 40, 1), test=(5, 32, 70))
    result = CliRunner().invoke(cli, ["data", "info", str(store.path), "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["videos"] == {"train": {"videos": 3, "normal": 1, "abnormal": 2},
                              "test": {"videos": 3, "normal": 1, "abnormal": 2}, "total": 6}
    assert info["snippets"] == {"train": 46, "test": 107, "total": 153}
    assert info["frames"] == {"train": 736, "test": 1712, "total": 2448}
    assert (info["crops"], info["dim"], info["dtype"]) == (2, 8, "float16")
    files = {name: (store.path / name).stat().st_size
             for name in ("videos.parquet", "features.parquet", "frame_labels.parquet",
                          "manifest.json")}
    assert info["bytes"] == {"total": sum(files.values()), "files": files, "cache": 0}


def test_info_on_a_directory_that_is_not_a_store(tmp_path):
    result = CliRunner().invoke(cli, ["data", "info", str(tmp_path)])
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        f"error: manifest.json: not found in {tmp_path}: not an ablate feature store (create one "
        "with 'ablate data synth' or 'ablate data import')"
    ]


def test_synth_calls_the_generator_and_says_what_next(tmp_path, monkeypatch):
    calls = []

    def fake_generate(out_dir: Path, scale: str = "small", seed: int = 0,
                      overwrite: bool = False, progress: bool = False) -> Path:
        calls.append((Path(out_dir), scale, seed, overwrite))
        with StoreWriter(out_dir, dim=2, crops=1, overwrite=overwrite) as writer:
            writer.add_video("a", "train", 0, "normal", np.zeros((1, 3, 2)))
        return Path(out_dir)

    monkeypatch.setattr(ablate.data.synth, "generate", fake_generate)
    out = tmp_path / "syn"
    result = CliRunner().invoke(cli, ["data", "synth", "--out", str(out), "--scale", "ucf",
                                      "--seed", "7", "--overwrite"])
    assert result.exit_code == 0, result.output
    assert calls == [(out, "ucf", 7, True)]
    assert result.stdout.splitlines() == [
        f"wrote the synthetic benchmark (ucf, seed 7) to {out}; next: set 'dataset: {out}' in a "
        "study file under search_spaces/ and 'ablate run' it"
    ]

    result = CliRunner().invoke(cli, ["data", "synth", "--out", str(out), "--scale", "huge"])
    assert result.exit_code == 2 and "'huge' is not one of 'small', 'ucf'" in result.stderr


def test_command_tree():
    result = CliRunner().invoke(cli, ["data", "--help"])
    assert result.exit_code == 0
    for command in ("import", "info", "synth", "validate"):
        assert f"  {command} " in result.stdout
    result = CliRunner().invoke(cli, ["data", "import", "--help"])
    assert "  rtfm " in result.stdout and "  wu " in result.stdout
    result = CliRunner().invoke(cli, ["data", "import", "rtfm", "--help"])
    for option in ("--train-list", "--test-list", "--gt", "--out", "--feature-root",
                   "--num-abnormal", "--dtype", "--name"):
        assert option in result.stdout
