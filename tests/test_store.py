"""Writing and loading feature stores: round trips, the training view, caching, atomicity."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import ablate.data.cache as cache_module
from ablate.data import FeatureDataset, StoreWriter, VideoInfo, load, resample_segments
from ablate.errors import AblateError, DataError


def rtfm_process_feat(feat: np.ndarray, length: int) -> np.ndarray:
    """A literal port of RTFM's ``utils.process_feat`` (``np.int`` is ``int`` in numpy 2)."""
    new_feat = np.zeros((length, feat.shape[1])).astype(np.float32)
    r = np.linspace(0, len(feat), length + 1, dtype=int)
    for i in range(length):
        if r[i] != r[i + 1]:
            new_feat[i, :] = np.mean(feat[r[i] : r[i + 1], :], 0)
        else:
            new_feat[i, :] = feat[r[i], :]
    return new_feat


LENGTHS = (1, 7, 31, 32, 33, 150)  # T < 32, T == 32 and T large


@pytest.mark.parametrize("dtype", ["float16", "float32"])
@pytest.mark.parametrize("crops", [1, 5, 10])
def test_round_trip(make_store, dtype, crops):
    store = make_store(crops=crops, dim=6, dtype=dtype, train=LENGTHS, test=(3, 32, 90))
    ds = load(store.path)

    assert ds.video_ids("train") == store.train
    assert ds.video_ids("test") == store.test
    assert ds.video_ids() == store.train + store.test
    assert (ds.crops, ds.dim, ds.dtype, ds.frames_per_snippet) == (crops, 6, np.dtype(dtype), 16)
    for video_id, feats in store.features.items():
        got = ds.features(video_id)
        assert got.shape == feats.shape and got.dtype == np.dtype(dtype)
        # The store holds exactly the values cast to its dtype.
        np.testing.assert_array_equal(got, feats.astype(dtype))
        tolerance = 2e-3 if dtype == "float16" else 0
        np.testing.assert_allclose(got, feats, rtol=tolerance, atol=tolerance)
    for video_id, frames in store.frame_labels.items():
        np.testing.assert_array_equal(ds.frame_labels(video_id), frames)
    np.testing.assert_array_equal(ds.test_frame_labels(),
                                  np.concatenate([store.frame_labels[v] for v in store.test]))
    assert ds.video("test_001") == VideoInfo("test_001", "test", 0, "Normal", 32, 512, crops)
    assert ds.video("train_000") == VideoInfo("train_000", "train", 1, "Abuse", 1, 16, crops)


@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_train_view_is_rtfm_process_feat_per_crop(make_store, dtype):
    store = make_store(crops=3, dim=5, dtype=dtype, train=LENGTHS, test=(4,))
    ds = load(store.path)
    features, labels = ds.train_view()

    assert features.shape == (len(LENGTHS), 3, 32, 5) and features.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(labels, [store.labels[v] for v in store.train])
    assert labels.dtype == np.int64
    tolerance = 2e-3 if dtype == "float16" else 1e-6
    for i, video_id in enumerate(store.train):
        stored = ds.features(video_id).astype(np.float32)
        for crop in range(3):
            expected = rtfm_process_feat(stored[crop], 32)
            np.testing.assert_allclose(features[i, crop], expected, rtol=tolerance,
                                       atol=tolerance)


@pytest.mark.parametrize("snippets", [1, 2, 5, 31, 32, 33, 64, 100, 1000])
def test_resample_segments_matches_rtfm(snippets):
    feat = np.random.default_rng(snippets).standard_normal((snippets, 4))
    np.testing.assert_allclose(resample_segments(feat), rtfm_process_feat(feat, 32), rtol=1e-6,
                               atol=1e-6)
    stacked = np.stack([feat, 2 * feat])
    out = resample_segments(stacked, segments=8)
    assert out.shape == (2, 8, 4) and out.dtype == np.float32
    np.testing.assert_allclose(out[1], rtfm_process_feat(2 * feat, 8), rtol=1e-6, atol=1e-6)


def test_same_content_gives_identical_checksums(make_store):
    first = make_store("a", seed=3)
    second = make_store("b", seed=3, interleave=True)  # different call order, same content
    other = make_store("c", seed=4)
    manifest = [json.loads((s.path / "manifest.json").read_text()) for s in (first, second, other)]
    assert manifest[0]["files"] == manifest[1]["files"]
    assert manifest[0]["files"]["features.parquet"] != manifest[2]["files"]["features.parquet"]
    for name in ("videos.parquet", "features.parquet", "frame_labels.parquet"):
        assert (first.path / name).read_bytes() == (second.path / name).read_bytes()
    assert manifest[0]["counts"]["train"] == {"videos": 4, "normal": 2, "abnormal": 2,
                                              "snippets": 79, "frames": 1264}
    assert manifest[0]["source"] == {"kind": "test", "seed": 3}


def test_interleaved_calls_are_stored_train_first(make_store):
    store = make_store(interleave=True, row_group_bytes=64)  # several rows per row group
    ds = load(store.path)
    assert ds.video_ids() == store.train + store.test
    for video_id, feats in store.features.items():
        np.testing.assert_array_equal(ds.features(video_id), feats.astype(np.float16))


def test_videos_span_row_groups_and_cache_batches(make_store, monkeypatch):
    # Tiny row groups and cache batches: videos cut across Parquet row groups must still come
    # back whole, and every cache batch must hold whole videos.
    monkeypatch.setattr(cache_module, "CACHE_BATCH_BYTES", 100)
    store = make_store(train=(1, 13, 2, 40), test=(9, 3), row_group_bytes=7 * 2 * 8 * 2)
    ds = load(store.path)
    assert ds._reader.num_record_batches > 2
    for video_id, feats in store.features.items():
        np.testing.assert_array_equal(ds.features(video_id), feats.astype(np.float16))


def test_features_are_read_only_views_on_the_memory_map(make_store):
    store = make_store()
    ds = load(store.path)
    first, again = ds.features("train_001"), ds.features("train_001")
    assert np.shares_memory(first, again)  # both views on the same mapped pages
    assert not first.flags.writeable
    caches = sorted(p.name for p in (store.path / ".cache").glob("*.arrow"))
    sha = ds.manifest["files"]["features.parquet"]["sha256"]
    assert caches == [f"features-{sha}.arrow"]
    maps = Path("/proc/self/maps").read_text()
    assert str(store.path / ".cache" / caches[0]) in maps  # mapped, not read into memory

    view, _ = ds.train_view()
    assert not view.flags.writeable
    train_cache = store.path / ".cache" / f"train-{sha}-s32.arrow"
    assert str(train_cache) in Path("/proc/self/maps").read_text()

    # A second load maps the existing cache instead of rebuilding it.
    mtime = (store.path / ".cache" / caches[0]).stat().st_mtime_ns
    second = load(store.path)
    assert (store.path / ".cache" / caches[0]).stat().st_mtime_ns == mtime
    np.testing.assert_array_equal(second.features("test_002"), ds.features("test_002"))


def test_concurrent_first_loads_build_the_cache_once(make_store):
    store = make_store()
    script = (
        "import sys, numpy as np; from ablate.data import load; ds = load(sys.argv[1]); "
        "print(sum(float(np.sum(ds.features(v), dtype=np.float64)) for v in ds.video_ids()))"
    )
    procs = [subprocess.Popen([sys.executable, "-c", script, str(store.path)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(3)]
    results = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], results
    assert len({out for out, _ in results}) == 1
    files = sorted(p.name for p in (store.path / ".cache").iterdir() if not p.name.startswith("."))
    assert len(files) == 1 and files[0].startswith("features-")
    assert not [p for p in (store.path / ".cache").iterdir() if p.name.endswith((".tmp", ".raw"))]


def test_cache_falls_back_to_user_cache(make_store, tmp_path, monkeypatch):
    store = make_store()
    (store.path / ".cache").write_text("not a directory")  # the store is not writable for us
    monkeypatch.setenv("ABLATE_CACHE", str(tmp_path / "user-cache"))
    ds = load(store.path)
    found = list((tmp_path / "user-cache" / "stores").glob("*/features-*.arrow"))
    assert len(found) == 1
    np.testing.assert_array_equal(ds.features("train_000"),
                                  store.features["train_000"].astype(np.float16))

    explicit = load(store.path, cache_dir=tmp_path / "explicit")
    assert len(list((tmp_path / "explicit").glob("features-*.arrow"))) == 1
    assert explicit.video_ids() == ds.video_ids()


def test_features_changed_after_caching_are_detected(make_store):
    store = make_store()
    load(store.path)
    path = store.path / "features.parquet"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(DataError, match=r"^features.parquet: sha256 [0-9a-f]{12} does not match"):
        load(store.path)


def test_pickling_reopens_the_store(make_store):
    store = make_store()
    ds = load(store.path)
    clone = pickle.loads(pickle.dumps(ds))
    assert isinstance(clone, FeatureDataset) and clone.path == ds.path
    assert len(pickle.dumps(ds)) < 1000  # the arrays are not shipped
    np.testing.assert_array_equal(clone.features("test_000"), ds.features("test_000"))


def test_lookup_errors_are_clear(make_store):
    ds = load(make_store().path)
    with pytest.raises(KeyError, match="no video 'nope' in the store at"):
        ds.features("nope")
    with pytest.raises(DataError) as exc:
        ds.frame_labels("train_000")
    assert str(exc.value) == ("frame_labels.parquet: video train_000: is a train video; only "
                              "test videos have frame labels")
    with pytest.raises(ValueError, match="split must be one of"):
        ds.video_ids("val")


def test_exception_mid_write_leaves_nothing(tmp_path):
    out = tmp_path / "store"
    with pytest.raises(RuntimeError, match="interrupted"):
        with StoreWriter(out, dim=4, crops=2, row_group_bytes=64) as writer:
            for i in range(5):
                writer.add_video(f"v{i}", "train", i % 2, "x", np.ones((2, 20, 4)))
            raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []  # no store, no temporary directory


def test_overwrite_replaces_only_after_success(make_store, tmp_path):
    store = make_store()
    before = (store.path / "manifest.json").read_text()
    with pytest.raises(AblateError) as exc:
        StoreWriter(store.path, dim=8, crops=2)
    assert str(exc.value) == (f"{store.path} already exists and is not empty "
                              "(--overwrite or overwrite=True replaces it)")
    with pytest.raises(DataError):
        with StoreWriter(store.path, dim=8, crops=2, overwrite=True) as writer:
            writer.add_video("v", "train", 0, "x", np.full((2, 3, 8), np.nan))
    assert (store.path / "manifest.json").read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["store"]

    with StoreWriter(store.path, dim=3, crops=1, overwrite=True) as writer:
        writer.add_video("only", "train", 0, "x", np.zeros((1, 2, 3)))
    assert load(store.path).video_ids() == ["only"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["store"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("v", "train", 0, "x", np.zeros((2, 4, 7))),
         "features.parquet: video v: features have shape [2, 4, 7], expected "
         "[crops=2, T, dim=8]"),
        (("v", "train", 0, "x", np.zeros((3, 4, 8))),
         "features.parquet: video v: features have shape [3, 4, 8], expected "
         "[crops=2, T, dim=8]"),
        (("v", "train", 0, "x", np.zeros((2, 0, 8))),
         "features.parquet: video v: video has no snippets (T = 0)"),
        (("v", "train", 0, "x", np.full((2, 4, 8), 1e6)),
         "features.parquet: video v: 64 NaN/Inf values in features (after conversion to "
         "float16)"),
        (("v", "test", 1, "x", np.zeros((2, 4, 8)), np.ones(60)),
         "frame_labels.parquet: video v: 60 frame labels, expected 16 × 4 snippets = 64"),
        (("v", "test", 1, "x", np.zeros((2, 4, 8))),
         "frame_labels.parquet: video v: test video has no frame labels"),
        (("v", "train", 0, "x", np.zeros((2, 4, 8)), np.ones(64)),
         "frame_labels.parquet: video v: frame labels given for a train video (the store keeps "
         "them for test videos only)"),
        (("v", "val", 0, "x", np.zeros((2, 4, 8))),
         "videos.parquet: video v: split 'val', expected 'train' or 'test'"),
        (("v", "train", 2, "x", np.zeros((2, 4, 8))),
         "videos.parquet: video v: label 2, expected 0 (normal) or 1 (abnormal)"),
    ],
)
def test_writer_checks_each_video(tmp_path, args, message):
    with pytest.raises(DataError) as exc:
        with StoreWriter(tmp_path / "s", dim=8, crops=2) as writer:
            writer.add_video(*args)
    assert str(exc.value) == message
    assert list(tmp_path.iterdir()) == []


def test_writer_refuses_duplicates_and_empty_stores(tmp_path):
    with pytest.raises(DataError, match="^videos.parquet: video a: added twice"):
        with StoreWriter(tmp_path / "s", dim=1, crops=1) as writer:
            writer.add_video("a", "train", 0, "x", np.zeros((1, 1, 1)))
            writer.add_video("a", "train", 0, "x", np.zeros((1, 1, 1)))
    with pytest.raises(AblateError, match="no videos were added"):
        with StoreWriter(tmp_path / "s", dim=1, crops=1):
            pass
    assert list(tmp_path.iterdir()) == []


def test_created_honours_source_date_epoch(tmp_path, monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "0")
    with StoreWriter(tmp_path / "s", dim=1, crops=1) as writer:
        writer.add_video("a", "train", 0, "x", np.zeros((1, 1, 1)))
    manifest = json.loads((tmp_path / "s" / "manifest.json").read_text())
    assert manifest["created"] == "1970-01-01T00:00:00+00:00"
    assert list(manifest) == ["format", "schema_version", "name", "created", "dim", "crops",
                              "dtype", "frames_per_snippet", "segments", "counts", "files",
                              "source"]


def test_import_ablate_data_stays_light():
    code = ("import sys, ablate.data; heavy = {'torch', 'ray', 'mlflow', 'click'} & "
            "set(sys.modules); print(sorted(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env={**os.environ})
    assert out.stdout.strip() == "[]"
