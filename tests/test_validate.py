"""Every class of store corruption is reported as one line naming the file, video and problem:
by ``ablate data validate`` (in-process and as a real subprocess) and by ``load``."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from ablate.cli import cli
from ablate.data import load, validate_store
from ablate.data.layout import sha256_file
from ablate.errors import DataError

WIDTH = 2 * 8  # crops × dim of the default test store


def _rewrite(store: Path, name: str, table: pa.Table) -> None:
    """Write a Parquet file and record its new checksum, so only the content is wrong."""
    pq.write_table(table, store / name, row_group_size=10)
    manifest = json.loads((store / "manifest.json").read_text())
    manifest["files"][name] = {"sha256": sha256_file(store / name),
                               "bytes": (store / name).stat().st_size}
    (store / "manifest.json").write_text(json.dumps(manifest))


def _features(store: Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    table = pq.read_table(store / "features.parquet")
    ids = [str(v) for v in table.column("video_id").to_pylist()]
    snippets = table.column("snippet").to_numpy()
    values = table.column("feature").combine_chunks().flatten().to_numpy().copy()
    return ids, snippets, values.reshape(len(ids), -1)


def _features_table(ids: list[str], snippets: np.ndarray, values: np.ndarray) -> pa.Table:
    return pa.table({
        "video_id": pc.dictionary_encode(pa.array(ids, pa.string())),
        "snippet": pa.array(np.asarray(snippets, dtype=np.int32)),
        "feature": pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1)),
                                                     values.shape[1]),
    })


def nan_and_inf(store: Path) -> str:
    ids, snippets, values = _features(store)
    rows = [i for i, v in enumerate(ids) if v == "test_002"]  # 70 rows, several row groups
    values[rows[0], :7] = np.nan
    values[rows[-1], 3:8] = np.inf
    _rewrite(store, "features.parquet", _features_table(ids, snippets, values))
    return "features.parquet: video test_002: 12 NaN/Inf values in features"


def wrong_dimension(store: Path) -> str:
    ids, snippets, values = _features(store)
    _rewrite(store, "features.parquet",
             _features_table(ids, snippets, np.ascontiguousarray(values[:, :-1])))
    return f"features.parquet: feature list size {WIDTH - 1}, expected crops × dim = 2 × 8 = 16"


def frame_label_length(store: Path) -> str:
    table = pq.read_table(store / "frame_labels.parquet")
    labels = table.column("labels").to_pylist()
    ids = table.column("video_id").to_pylist()
    labels[ids.index("test_002")] = labels[ids.index("test_002")][:-16]
    _rewrite(store, "frame_labels.parquet",
             pa.table({"video_id": ids, "labels": pa.array(labels, pa.list_(pa.uint8()))}))
    return ("frame_labels.parquet: video test_002: 1104 frame labels, expected 16 × 70 snippets "
            "= 1120")


def video_missing_from_features(store: Path) -> str:
    ids, snippets, values = _features(store)
    keep = [i for i, v in enumerate(ids) if v != "train_002"]
    _rewrite(store, "features.parquet",
             _features_table([ids[i] for i in keep], snippets[keep], values[keep]))
    return "features.parquet: video train_002: listed in videos.parquet but has no feature rows"


def extra_video_in_features(store: Path) -> str:
    ids, snippets, values = _features(store)
    _rewrite(store, "features.parquet",
             _features_table(ids + ["intruder"] * 3, np.concatenate([snippets, [0, 1, 2]]),
                             np.concatenate([values, values[:3]])))
    return "features.parquet: video intruder: not listed in videos.parquet"


def snippet_count(store: Path) -> str:
    ids, snippets, values = _features(store)
    last = max(i for i, v in enumerate(ids) if v == "train_001")
    keep = [i for i in range(len(ids)) if i != last]
    _rewrite(store, "features.parquet",
             _features_table([ids[i] for i in keep], snippets[keep], values[keep]))
    return ("features.parquet: video train_001: 39 feature rows, but videos.parquet says "
            "num_snippets = 40")


def checksum_mismatch(store: Path) -> str:
    path = store / "features.parquet"
    before = sha256_file(path)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    return (f"features.parquet: sha256 {sha256_file(path)[:12]} does not match the manifest's "
            f"{before[:12]}: the file changed after the store was written")


def unknown_schema_version(store: Path) -> str:
    manifest = json.loads((store / "manifest.json").read_text())
    manifest["schema_version"] = 99
    (store / "manifest.json").write_text(json.dumps(manifest))
    return ("manifest.json: unknown schema_version 99 (this version of ablate reads "
            "schema_version 1)")


def missing_manifest(store: Path) -> str:
    (store / "manifest.json").unlink()
    return (f"manifest.json: not found in {store}: not an ablate feature store "
            "(create one with 'ablate data synth' or 'ablate data import')")


CORRUPTIONS: list[Callable[[Path], str]] = [
    nan_and_inf,
    wrong_dimension,
    frame_label_length,
    video_missing_from_features,
    extra_video_in_features,
    snippet_count,
    checksum_mismatch,
    unknown_schema_version,
    missing_manifest,
]


@pytest.fixture
def store(make_store) -> Path:
    # train_001 has T = 40, train_002 T = 1, test_002 T = 70; small row groups so that videos
    # span several of them.
    return make_store(train=(5, 40, 1), test=(5, 32, 70), row_group_bytes=10 * WIDTH * 2).path


def _validate_in_process(store: Path) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, ["data", "validate", str(store)])
    return result.exit_code, result.stdout, result.stderr


def _validate_subprocess(exe: str, store: Path) -> tuple[int, str, str]:
    done = subprocess.run([exe, "data", "validate", str(store)], capture_output=True, text=True,
                          timeout=120)
    return done.returncode, done.stdout, done.stderr


@pytest.mark.parametrize("corrupt", CORRUPTIONS, ids=lambda f: f.__name__)
@pytest.mark.parametrize("how", ["cli-runner", "subprocess"])
def test_validate_reports_corruption_in_one_line(store, corrupt, how, ablate_exe):
    message = corrupt(store)
    if how == "cli-runner":
        code, stdout, stderr = _validate_in_process(store)
    else:
        code, stdout, stderr = _validate_subprocess(ablate_exe, store)
    assert code == 1
    assert stdout == ""
    assert stderr.splitlines() == [f"error: {message}"]


@pytest.mark.parametrize("corrupt", CORRUPTIONS, ids=lambda f: f.__name__)
def test_load_reports_the_same_corruption(store, corrupt):
    message = corrupt(store)
    with pytest.raises(DataError) as exc:
        load(store)
    assert str(exc.value) == message
    cache = store / ".cache"
    assert not cache.exists() or not list(cache.glob("*.arrow"))  # nothing half-built


def test_validate_success_prints_one_summary_line(store):
    result = CliRunner().invoke(cli, ["data", "validate", str(store)])
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    assert result.stdout.splitlines() == [
        f"{store}: valid: 6 videos (train 3, test 3), 153 snippets, 2 crops × 8 float16, 1,712 "
        "test frame labels; all 3 files match the manifest's checksums"
    ]
    report = validate_store(store)
    assert (report.snippets, report.test_frames, report.videos) == (
        153, 1712, {"train": 3, "test": 3})


def test_validate_reports_rows_out_of_order(store):
    ids, snippets, values = _features(store)
    rows = [i for i, v in enumerate(ids) if v == "train_001"]
    order = list(range(len(ids)))
    order[rows[3]], order[rows[4]] = order[rows[4]], order[rows[3]]
    _rewrite(store, "features.parquet",
             _features_table([ids[i] for i in order], snippets[order], values[order]))
    with pytest.raises(DataError) as exc:
        validate_store(store)
    assert str(exc.value) == (
        "features.parquet: video train_001: row 8 holds snippet 4, expected snippet 3 of video "
        "train_001 (rows must follow videos.parquet order, snippets 0..T-1)"
    )


def test_validate_reports_a_missing_data_file(store):
    (store / "frame_labels.parquet").unlink()
    with pytest.raises(DataError) as exc:
        validate_store(store)
    assert str(exc.value) == f"frame_labels.parquet: missing from {store} (the manifest lists it)"
