"""Importing the public I3D releases from tiny fixtures in exactly their real layouts."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from ablate.cli import cli
from ablate.data import load
from ablate.data.importers import class_from_name

DIM = 16


def _invoke(*args: str):
    return CliRunner().invoke(cli, ["data", "import", *args])


def _frames(snippets: int, abnormal: bool, rng: np.random.Generator) -> np.ndarray:
    frames = np.zeros(16 * snippets, dtype=np.uint8)
    if abnormal:
        start = int(rng.integers(0, 16 * snippets - 8))
        frames[start : start + int(rng.integers(1, 8 * snippets))] = 1
    return frames


class RtfmRelease:
    """UCF-Crime as RTFM released it: one [T, 10, D] file per video, absolute foreign paths."""

    train = ["Abuse028_x264", "RoadAccidents001_x264", "Normal_Videos003_x264",
             "Normal_Videos_010_x264"]
    test = ["Abuse030_x264", "Normal_Videos_003_x264", "Explosion002_x264"]

    def __init__(self, root: Path, crops: int = 10) -> None:
        rng = np.random.default_rng(0)
        self.root = root / "features"
        self.arrays: dict[str, np.ndarray] = {}
        self.frames: dict[str, np.ndarray] = {}
        for split, names, folder in (("train", self.train, "UCF_Train_ten_crop_i3d"),
                                     ("test", self.test, "UCF_Test_ten_crop_i3d")):
            (self.root / folder).mkdir(parents=True)
            lines = []
            for name in names:
                snippets = int(rng.integers(2, 45))
                array = rng.random((snippets, crops, DIM), dtype=np.float32) * 3
                np.save(self.root / folder / f"{name}_i3d.npy", array)
                self.arrays[name] = array
                lines.append(f"/home/yu/yu_ssd/{folder}/{name}_i3d.npy")
                if split == "test":
                    self.frames[name] = _frames(snippets, not name.startswith("Normal"), rng)
            (root / f"ucf-i3d{'' if split == 'train' else '-test'}.list").write_text(
                "\n".join(lines) + "\n")
        self.train_list = root / "ucf-i3d.list"
        self.test_list = root / "ucf-i3d-test.list"
        self.gt = root / "gt-ucf.npy"
        np.save(self.gt, np.concatenate([self.frames[n] for n in self.test]).astype(np.float64))

    def args(self, out: Path, *extra: str) -> list[str]:
        return ["rtfm", "--train-list", str(self.train_list), "--test-list", str(self.test_list),
                "--gt", str(self.gt), "--out", str(out), "--feature-root", str(self.root), *extra]


def test_rtfm_ucf_round_trip(tmp_path):
    release = RtfmRelease(tmp_path)
    out = tmp_path / "ucf"
    result = _invoke(*release.args(out))
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"imported 7 videos (train 4, test 3; 10 crops × 16 float16) "
                                    f"to {out}; next: ")

    ds = load(out)
    assert ds.video_ids("train") == release.train
    assert ds.video_ids("test") == release.test
    for name, array in release.arrays.items():
        got = ds.features(name)
        assert got.shape == (10, array.shape[0], DIM)
        np.testing.assert_allclose(got, array.transpose(1, 0, 2), rtol=1e-3, atol=2e-3)
    for name, frames in release.frames.items():
        np.testing.assert_array_equal(ds.frame_labels(name), frames)
    np.testing.assert_array_equal(ds.test_frame_labels(), np.load(release.gt))
    infos = {v.video_id: (v.label, v.class_name) for v in ds.videos()}
    assert infos == {
        "Abuse028_x264": (1, "Abuse"), "RoadAccidents001_x264": (1, "RoadAccidents"),
        "Normal_Videos003_x264": (0, "Normal"), "Normal_Videos_010_x264": (0, "Normal"),
        "Abuse030_x264": (1, "Abuse"), "Normal_Videos_003_x264": (0, "Normal"),
        "Explosion002_x264": (1, "Explosion"),
    }
    assert ds.manifest["source"]["kind"] == "rtfm"


def test_rtfm_import_through_the_real_cli(tmp_path, ablate_exe):
    release = RtfmRelease(tmp_path)
    out = tmp_path / "ucf"
    done = subprocess.run([ablate_exe, "data", "import", *release.args(out, "--dtype", "float32")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    ds = load(out)
    for name, array in release.arrays.items():
        np.testing.assert_array_equal(ds.features(name), array.transpose(1, 0, 2))

    bad = tmp_path / "gt-short.npy"
    np.save(bad, np.load(release.gt)[:-1])
    args = release.args(tmp_path / "other")
    args[args.index("--gt") + 1] = str(bad)
    done = subprocess.run([ablate_exe, "data", "import", *args], capture_output=True, text=True,
                          timeout=120)
    snippets = sum(release.arrays[n].shape[0] for n in release.test)
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        f"error: {bad}: gt has {16 * snippets - 1} frames, test list needs 16 × {snippets} "
        f"snippets = {16 * snippets}"
    ]
    assert not (tmp_path / "other").exists()


def test_gt_length_mismatch_is_an_error_never_trimmed(tmp_path):
    release = RtfmRelease(tmp_path)
    gt = np.load(release.gt)
    np.save(release.gt, np.concatenate([gt, np.zeros(16)]))
    result = _invoke(*release.args(tmp_path / "out"))
    snippets = sum(release.arrays[n].shape[0] for n in release.test)
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        f"error: {release.gt}: gt has {16 * snippets + 16} frames, test list needs 16 × "
        f"{snippets} snippets = {16 * snippets}"
    ]
    assert not (tmp_path / "out").exists()


def test_missing_feature_file_is_named(tmp_path):
    release = RtfmRelease(tmp_path)
    (release.root / "UCF_Train_ten_crop_i3d" / "Normal_Videos003_x264_i3d.npy").unlink()
    result = _invoke(*release.args(tmp_path / "out"))
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        f"error: Normal_Videos003_x264_i3d.npy: feature file not found under {release.root} "
        f"(listed in {release.train_list})"
    ]
    # Without --feature-root the listed (foreign, absolute) path is used as it is.
    args = release.args(tmp_path / "out")[:-2]
    result = _invoke(*args)
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        "error: /home/yu/yu_ssd/UCF_Train_ten_crop_i3d/Abuse028_x264_i3d.npy: feature file not "
        f"found (listed in {release.train_list}); pass --feature-root DIR to find files by base "
        "name"
    ]


def test_crops_disagreeing_across_videos(tmp_path):
    release = RtfmRelease(tmp_path)
    odd = release.root / "UCF_Test_ten_crop_i3d" / "Explosion002_x264_i3d.npy"
    np.save(odd, np.zeros((4, 5, DIM), dtype=np.float32))
    result = _invoke(*release.args(tmp_path / "out"))
    first = release.root / "UCF_Train_ten_crop_i3d" / "Abuse028_x264_i3d.npy"
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [f"error: {odd}: 5 crops, but {first} has 10"]


def test_rtfm_shanghaitech_with_relative_paths_and_num_abnormal(tmp_path):
    rng = np.random.default_rng(1)
    (tmp_path / "SH_Train_ten_crop_i3d").mkdir()
    (tmp_path / "SH_Test_ten_crop_i3d").mkdir()
    train = ["01_0014", "01_0015", "01_001", "02_002"]  # abnormal first: 2 abnormal
    test = ["01_0016", "03_0031"]
    arrays = {}
    for folder, names in (("SH_Train_ten_crop_i3d", train), ("SH_Test_ten_crop_i3d", test)):
        for name in names:
            arrays[name] = rng.random((int(rng.integers(3, 20)), 10, DIM), dtype=np.float32)
            np.save(tmp_path / folder / f"{name}_i3d.npy", arrays[name])
    (tmp_path / "shanghai-i3d-train-10crop.list").write_text(
        "".join(f"SH_Train_ten_crop_i3d/{n}_i3d.npy\n" for n in train))
    (tmp_path / "shanghai-i3d-test-10crop.list").write_text(
        "".join(f"SH_Test_ten_crop_i3d/{n}_i3d.npy\n" for n in test))
    frames = [_frames(arrays[n].shape[0], n == "01_0016", rng) for n in test]
    np.save(tmp_path / "gt-sh.npy", np.concatenate(frames))
    base = ["rtfm", "--train-list", str(tmp_path / "shanghai-i3d-train-10crop.list"),
            "--test-list", str(tmp_path / "shanghai-i3d-test-10crop.list"),
            "--gt", str(tmp_path / "gt-sh.npy"), "--out", str(tmp_path / "sh")]

    result = _invoke(*base)
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        f"error: every train video in {tmp_path / 'shanghai-i3d-train-10crop.list'} is abnormal "
        "by its name ('Normal' in the name marks normal); for a list ordered abnormal-first "
        "pass --num-abnormal N (ShanghaiTech: 63)"
    ]

    result = _invoke(*base, "--num-abnormal", "2")
    assert result.exit_code == 0, result.output
    ds = load(tmp_path / "sh")
    assert [(v.video_id, v.label, v.class_name) for v in ds.videos()] == [
        ("01_0014", 1, "abnormal"), ("01_0015", 1, "abnormal"), ("01_001", 0, "normal"),
        ("02_002", 0, "normal"), ("01_0016", 1, "abnormal"), ("03_0031", 0, "normal"),
    ]
    for name, array in arrays.items():
        np.testing.assert_allclose(ds.features(name), array.transpose(1, 0, 2), atol=1e-3)


def _write_wu(root: Path, names: list[str], crops: int, rng: np.random.Generator
              ) -> dict[str, np.ndarray]:
    arrays = {}
    for name in names:
        snippets = int(rng.integers(2, 30))
        arrays[name] = rng.random((crops, snippets, DIM), dtype=np.float32)
        for k in range(crops):
            np.save(root / f"{name}__{k}.npy", arrays[name][k])
    return arrays


def test_wu_ucf_ten_crop_files_listed_per_crop(tmp_path):
    rng = np.random.default_rng(2)
    root = tmp_path / "UCF-Crime-I3D"
    root.mkdir()
    train, test = ["Abuse001_x264", "Normal_Videos001_x264"], ["Arson011_x264"]
    arrays = _write_wu(root, train + test, 10, rng)
    for split, names in (("train", train), ("test", test)):
        (tmp_path / f"{split}.list").write_text("".join(
            f"/data/wu/UCF-Crime/{name}__{k}.npy\n" for name in names for k in range(10)))
    frames = _frames(arrays["Arson011_x264"].shape[1], True, rng)
    np.save(tmp_path / "gt.npy", frames)
    result = _invoke("wu", "--train-list", str(tmp_path / "train.list"), "--test-list",
                     str(tmp_path / "test.list"), "--gt", str(tmp_path / "gt.npy"), "--out",
                     str(tmp_path / "store"), "--feature-root", str(root))
    assert result.exit_code == 0, result.output
    ds = load(tmp_path / "store")
    assert ds.video_ids() == train + test  # 10 listed crop files -> one video, order kept
    assert ds.crops == 10
    for name, array in arrays.items():
        np.testing.assert_allclose(ds.features(name), array, atol=1e-3)
    np.testing.assert_array_equal(ds.frame_labels("Arson011_x264"), frames)
    assert [v.label for v in ds.videos()] == [1, 0, 1]

    (root / "Normal_Videos001_x264__9.npy").unlink()
    result = _invoke("wu", "--train-list", str(tmp_path / "train.list"), "--test-list",
                     str(tmp_path / "test.list"), "--gt", str(tmp_path / "gt.npy"), "--out",
                     str(tmp_path / "again"), "--feature-root", str(root))
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        f"error: Normal_Videos001_x264__9.npy: feature file not found under {root} (listed in "
        f"{tmp_path / 'train.list'})"
    ]


def test_wu_xd_violence_five_crops_and_label_a(tmp_path):
    rng = np.random.default_rng(3)
    root = tmp_path / "i3d-features"
    root.mkdir()
    train = ["v=wVey5JjqHn8__#1_label_B2-0-0", "A.Beautiful.Mind.2001__#00-25-20_00-29-20_label_A",
             "Bad.Boys.1995__#01-11-55_01-12-40_label_G-B2-B6"]
    test = ["Black.Hawk.Down.2001__#02-10-00_02-11-00_label_B2-0-0",
            "About.Time.2013__#00-37-10_00-38-10_label_A"]
    arrays = _write_wu(root, train + test, 5, rng)
    (tmp_path / "rgb.list").write_text(
        "".join(f"/home/xd/i3d-features/RGB/{n}__{k}.npy\n" for n in train for k in range(5)))
    (tmp_path / "rgb_test.list").write_text("".join(f"{n}\n" for n in test))  # base names only
    frames = [_frames(arrays[n].shape[1], "label_A" not in n, rng) for n in test]
    np.save(tmp_path / "gt.npy", np.concatenate(frames))
    result = _invoke("wu", "--train-list", str(tmp_path / "rgb.list"), "--test-list",
                     str(tmp_path / "rgb_test.list"), "--gt", str(tmp_path / "gt.npy"), "--out",
                     str(tmp_path / "xd"), "--feature-root", str(root), "--dtype", "float32",
                     "--name", "xd-violence")
    assert result.exit_code == 0, result.output
    ds = load(tmp_path / "xd")
    assert ds.crops == 5 and ds.dtype == np.float32 and ds.manifest["name"] == "xd-violence"
    assert [(v.label, v.class_name) for v in ds.videos()] == [
        (1, "Shooting"), (0, "Normal"), (1, "Explosion"), (1, "Shooting"), (0, "Normal")]
    for name, array in arrays.items():
        np.testing.assert_array_equal(ds.features(name), array)
    np.testing.assert_array_equal(ds.test_frame_labels(), np.concatenate(frames))


@pytest.mark.parametrize(
    ("name", "label", "expected"),
    [("Abuse028_x264", 1, "Abuse"), ("Normal_Videos_003_x264", 0, "Normal"),
     ("Normal_Videos308_3_x264", 0, "Normal"), ("RoadAccidents001_x264", 1, "RoadAccidents"),
     ("01_0015", 1, "abnormal"), ("01_0015", 0, "normal"),
     ("Bad.Boys.1995__#01-11-55_01-12-40_label_G-B2-B6", 1, "Explosion"),
     ("x__#1_label_A", 0, "Normal")],
)
def test_class_from_name(name, label, expected):
    assert class_from_name(name, label) == expected
