"""Load time and memory: the memory-mapped feature store vs per-video ``.npy`` files.

Prints, in one run:

(a) the time to load the whole feature set and touch every byte of it (an XOR over 64-bit
    words, so the timing is data access, not float16 arithmetic): the store's first load (which
    builds the memory-mapped cache from Parquet), then store vs the same data as one ``.npy``
    per video in RTFM's layout ([T, crops, D], ``np.load`` of every file), both with the files'
    pages evicted from the page cache first (``posix_fadvise(DONTNEED)``, no root needed) and
    with them cached;
(b) memory while one and two processes hold the whole feature set at once: peak RSS per process
    (``VmHWM``; shared mapped pages count in every process's RSS), the summed PSS (shared pages
    split between the processes that map them) and the system-wide ``MemAvailable`` drop.

Every measurement runs in a fresh subprocess; imports are outside the timings.

    python benchmarks/bench_store_load.py --scale small          # seconds
    python benchmarks/bench_store_load.py                        # UCF-Crime sized, several GB
    python benchmarks/bench_store_load.py --data STORE --npy-dir DIR
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve()


# -- worker side: one measurement in a fresh process ----------------------------------------------


def _touch(array: np.ndarray) -> int:
    """Read every byte of a C-contiguous array (XOR of its 64-bit words, or bytes)."""
    flat = array.reshape(-1).view(np.uint8)
    if flat.size % 8 == 0:
        return int(np.bitwise_xor.reduce(flat.view(np.uint64)))
    return int(np.bitwise_xor.reduce(flat))


def _proc_status() -> dict[str, int]:
    """kB values of /proc/self/status (VmRSS, VmHWM...)."""
    values = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if rest.strip().endswith("kB"):
            values[key] = int(rest.split()[0])
    return values


def _worker(mode: str, path: str, cache_dir: str | None, hold: bool) -> None:
    # Imported before the clock starts. pyarrow imports pandas on its first array conversion
    # (~0.15 s); trial processes have it already (Ray Tune imports it), so it is done here too.
    import pandas  # noqa: F401

    from ablate.data import load

    baseline_kb = _proc_status()["VmRSS"]
    held: list[np.ndarray] = []
    checksum = 0
    start = time.perf_counter()
    if mode == "idle":  # imports only: the memory every process has before any data
        opened = start
    elif mode in ("store", "store-build"):
        dataset = load(path, cache_dir=cache_dir)
        opened = time.perf_counter()
        for video_id in dataset.video_ids():
            # [crops, T, D] -> [T, crops, D]: the contiguous rows as stored, no copy.
            rows = dataset.features(video_id).transpose(1, 0, 2)
            checksum ^= _touch(rows)
            held.append(rows)
    else:
        listed = (Path(path) / "rgb.list").read_text().split()
        opened = time.perf_counter()
        for file in listed:
            array = np.load(file)
            checksum ^= _touch(array)
            held.append(array)
    done = time.perf_counter()
    result = {"open_s": opened - start, "total_s": done - start, "checksum": checksum,
              "bytes": int(sum(a.nbytes for a in held)), "baseline_kb": baseline_kb}
    print(json.dumps(result), flush=True)
    if hold:
        sys.stdin.readline()  # the parent measures memory while every worker holds its data
        print(json.dumps({"VmHWM_kb": _proc_status()["VmHWM"]}), flush=True)


# -- parent side ---------------------------------------------------------------------------------


def _meminfo(key: str) -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def _pss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1])
    raise KeyError("Pss")


def _evict(paths: list[Path]) -> None:
    """Drop these files' pages from the page cache, so the next read comes from disk."""
    os.sync()
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def _spawn(mode: str, path: Path, cache_dir: Path | None, hold: bool) -> subprocess.Popen[str]:
    command = [sys.executable, str(HERE), "--worker", mode, "--path", str(path)]
    if cache_dir is not None:
        command += ["--cache-dir", str(cache_dir)]
    if hold:
        command.append("--hold")
    return subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


def _run(mode: str, path: Path, cache_dir: Path | None) -> dict[str, Any]:
    proc = _spawn(mode, path, cache_dir, hold=False)
    out, _ = proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"worker {mode} failed with exit status {proc.returncode}")
    return json.loads(out.splitlines()[0])


def _memory(mode: str, path: Path, cache_dir: Path | None, processes: int) -> dict[str, float]:
    """Launch ``processes`` workers at once; measure while all hold the whole feature set."""
    available_before = _meminfo("MemAvailable")
    procs = [_spawn(mode, path, cache_dir, hold=True) for _ in range(processes)]
    for proc in procs:
        assert proc.stdout is not None
        json.loads(proc.stdout.readline())  # this worker now holds everything
    available_during = _meminfo("MemAvailable")
    pss = sum(_pss_kb(proc.pid) for proc in procs)
    peaks = []
    for proc in procs:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write("\n")
        proc.stdin.flush()
        peaks.append(json.loads(proc.stdout.readline())["VmHWM_kb"])
        proc.wait()
    return {"peak_rss_mib": max(peaks) / 1024, "pss_mib": pss / 1024,
            "available_drop_mib": (available_before - available_during) / 1024}


def _export_npy(store: Path, npy_dir: Path) -> Path:
    """One ``<video>_i3d.npy`` of shape [T, crops, D] per video (RTFM's layout), plus a list
    file in list order; done once, re-done when the store's content changed."""
    from ablate.data import load

    dataset = load(store)
    sha = dataset.manifest["files"]["features.parquet"]["sha256"]
    marker = npy_dir / ".complete"
    if marker.is_file() and marker.read_text() == sha:
        return npy_dir
    shutil.rmtree(npy_dir, ignore_errors=True)
    npy_dir.mkdir(parents=True)
    lines = []
    ids = dataset.video_ids()
    for i, video_id in enumerate(ids):
        file = npy_dir / f"{video_id}_i3d.npy"
        np.save(file, dataset.features(video_id).transpose(1, 0, 2))
        lines.append(str(file))
        if sys.stderr.isatty():
            print(f"\rexporting .npy files: {i + 1}/{len(ids)}", end="", file=sys.stderr)
    if sys.stderr.isatty():
        print(file=sys.stderr)
    (npy_dir / "rgb.list").write_text("\n".join(lines) + "\n")
    marker.write_text(sha)
    return npy_dir


def _store(args: argparse.Namespace) -> Path:
    if args.data is not None:
        return Path(args.data)
    from ablate.data.synth import default_store

    return default_store(args.scale)


def _gib(size: float) -> str:
    return f"{size / 2**30:.2f} GiB" if size >= 2**28 else f"{size / 2**20:.1f} MiB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, help="An existing store (default: the synthetic "
                        "benchmark of --scale, generated once into the user cache).")
    parser.add_argument("--scale", choices=["small", "ucf"], default="ucf",
                        help="Synthetic scale when --data is not given (default: ucf).")
    parser.add_argument("--npy-dir", type=Path, help="Per-video .npy copy of the store "
                        "(default: next to the store; exported once if missing).")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--path", help=argparse.SUPPRESS)
    parser.add_argument("--cache-dir", help=argparse.SUPPRESS)
    parser.add_argument("--hold", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        _worker(args.worker, args.path, args.cache_dir, args.hold)
        return

    store = _store(args)
    npy_dir = _export_npy(store, args.npy_dir or store.with_name(store.name + "-npy"))
    npy_files = [Path(line) for line in (npy_dir / "rgb.list").read_text().split()]
    manifest = json.loads((store / "manifest.json").read_text())
    counts = manifest["counts"]
    videos = counts["train"]["videos"] + counts["test"]["videos"]
    snippets = counts["train"]["snippets"] + counts["test"]["snippets"]
    shape = f"{manifest['crops']} crops × {manifest['dim']} {manifest['dtype']}"
    print(f"store: {store} ({videos} videos, {snippets:,} snippets, {shape}; features.parquet "
          f"{_gib(manifest['files']['features.parquet']['bytes'])})")
    print(f"npy:   {npy_dir} ({len(npy_files)} files [T, {manifest['crops']}, {manifest['dim']}] "
          f"{manifest['dtype']}, {_gib(sum(f.stat().st_size for f in npy_files))})")
    print(f"machine: {os.cpu_count()} CPUs, {_meminfo('MemTotal') / 2**20:.1f} GiB memory")

    # A private cache directory, so the first load really builds the cache.
    cache_dir = Path(tempfile.mkdtemp(prefix=".bench-cache-", dir=store.parent))
    try:
        _evict([store / "features.parquet"])
        build = _run("store-build", store, cache_dir)
        cache_files = list(cache_dir.glob("features-*.arrow"))
        _evict(cache_files)
        store_cold = _run("store", store, cache_dir)
        store_warm = min((_run("store", store, cache_dir) for _ in range(3)),
                         key=lambda r: r["total_s"])
        _evict(npy_files)
        npy_cold = _run("npy", npy_dir, None)
        npy_warm = min((_run("npy", npy_dir, None) for _ in range(3)),
                       key=lambda r: r["total_s"])
        if len({store_cold["checksum"], store_warm["checksum"], npy_cold["checksum"],
                npy_warm["checksum"]}) != 1:
            raise SystemExit("the store and the .npy files hold different data")
        data_bytes = store_warm["bytes"]

        print()
        print(f"(a) load all {_gib(data_bytes)} of features and touch every byte"
              f"{'':8}store     .npy files   npy/store")
        print(f"    first load: Parquet -> memory-mapped cache{'':18}{build['total_s']:7.2f} s"
              f"{'-':>12}")
        for label, s, n in (("pages evicted from the page cache", store_cold, npy_cold),
                            ("pages in the page cache (best of 3)", store_warm, npy_warm)):
            print(f"    {label:<61}{s['total_s']:7.2f} s {n['total_s']:9.2f} s "
                  f"{n['total_s'] / s['total_s']:9.1f}x")

        print()
        paths = {"store": (store, cache_dir), "npy": (npy_dir, None), "idle": (store, None)}
        memory = {(mode, n): _memory(mode, *paths[mode], n)
                  for mode in ("idle", "store", "npy") for n in (1, 2)}
        for mode in ("store", "npy"):  # what the data adds over processes holding nothing
            for n in (1, 2):
                memory[(mode, n)]["pss_data_mib"] = (memory[(mode, n)]["pss_mib"]
                                                     - memory[("idle", n)]["pss_mib"])
        print(f"(b) memory while N processes hold all features{'':6}store N=1   N=2   2/1"
              f"    npy N=1   N=2   2/1")
        for key, label in (("peak_rss_mib", "peak RSS per process (VmHWM), MiB"),
                           ("pss_mib", "PSS summed over the processes, MiB"),
                           ("pss_data_mib", "  minus the PSS of N processes holding no data"),
                           ("available_drop_mib", "system MemAvailable drop, MiB")):
            cells = []
            for mode in ("store", "npy"):
                one, two = memory[(mode, 1)][key], memory[(mode, 2)][key]
                ratio = f"{two / one:5.2f}" if one > 0.05 * data_bytes / 2**20 else "  n/a"
                cells.append(f"{one:9.0f} {two:6.0f} {ratio}")
            print(f"    {label:<48}{cells[0]}  {cells[1]}")
        print(f"    (processes holding no data: PSS {memory[('idle', 1)]['pss_mib']:.0f} MiB for "
              f"one, {memory[('idle', 2)]['pss_mib']:.0f} MiB for two.")
        print("    PSS splits shared pages between the processes that map them; MemAvailable "
              "counts")
        print("    clean mapped file pages as reclaimable, so its drop is the private memory.)")
    finally:
        shutil.rmtree(cache_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
