"""What the harness costs over the loop a researcher would write, and what fusing seeds saves.

The trials of one study spec (default ``search_spaces/como.yaml``, its first ``--seeds`` seeds)
run four ways, one after another in this process's run so the ratios share the machine's load:

1. ``ablate run``: Ray Tune and MLflow, fresh storage and tracking store, ``--workers`` trials
   at a time, one CPU (so one torch thread) each;
2. the same study with ``fuse: seeds`` (a variant's seeds as Tune trials of ``--fuse-members``
   members, each one model; default auto);
3. the plain in-process loop (:mod:`ablate.train.loop`): ``--workers`` processes, one thread
   each, no tracking, no checkpoints kept;
4. a shell loop of ``ablate train``: ``--workers`` at a time, one thread each, a fresh process
   per trial (checkpoints every epoch, no tracking).

Every way trains the same resolved configs on the same store, so the ratios are the harness's
own cost. Run: ``python benchmarks/bench_study.py [--seeds 2] [--epochs 20] [--skip fused]``.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
ABLATE = shutil.which("ablate") or str(Path(sys.executable).parent / "ablate")
WAYS = ("ablate run", "ablate run, fuse: seeds", "plain loop", "shell loop of ablate train")


def study_spec(spec_file: Path, seeds: int, epochs: int | None, workers: int,
               fuse: bool, fuse_members: str = "auto") -> dict:
    raw = yaml.safe_load(spec_file.read_text())
    raw["seeds"] = list(range(seeds))
    raw["max_concurrent"] = workers
    raw["resources"] = {"cpu": 1, "gpu": 0}
    if epochs is not None:
        raw["overrides"] = {**(raw.get("overrides") or {}), "train.epochs": epochs}
    raw.pop("fuse_members", None)
    raw["fuse"] = "seeds" if fuse else "none"  # whatever the spec file says
    if fuse:
        raw["fuse_members"] = fuse_members if fuse_members == "auto" else int(fuse_members)
    raw["name"] = f"bench-{'fused' if fuse else 'separate'}"
    return raw


def time_ablate_run(raw: dict, work: Path) -> float:
    work.mkdir(parents=True)
    spec = work / "study.yaml"
    spec.write_text(yaml.safe_dump(raw, sort_keys=False))
    start = time.perf_counter()
    subprocess.run([ABLATE, "run", str(spec), "--storage", str(work / "runs"),
                    "--tracking-uri", f"sqlite:///{work / 'mlflow.db'}", "--quiet"],
                   cwd=work, check=True, stdout=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    return time.perf_counter() - start


def time_plain_loop(configs: list, store: Path, workers: int) -> float:
    from ablate.train.loop import train_all

    start = time.perf_counter()
    train_all(configs, store, workers=workers)
    return time.perf_counter() - start


def time_shell_loop(configs: list, store: Path, workers: int, work: Path) -> float:
    work.mkdir(parents=True)
    commands = []
    for i, config in enumerate(configs):
        path = work / f"trial{i}.yaml"
        path.write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
        commands.append([ABLATE, "train", str(path), "--data", str(store),
                         "--out", str(work / f"out{i}")])
    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        for done in pool.map(lambda c: subprocess.run(c, stdout=subprocess.DEVNULL,
                                                      stdin=subprocess.DEVNULL), commands):
            done.check_returncode()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--spec", type=Path, default=REPO / "search_spaces" / "como.yaml")
    parser.add_argument("--seeds", type=int, default=2, help="first N seeds of each variant")
    parser.add_argument("--epochs", type=int, default=None, help="override train.epochs")
    parser.add_argument("--workers", type=int, default=2, help="trials at a time")
    parser.add_argument("--fuse-members", default="auto",
                        help="the fused study's fuse_members: auto, or at most N per Tune trial")
    parser.add_argument("--skip", nargs="*", default=[], choices=["fused", "plain", "shell"])
    args = parser.parse_args()

    from ablate.data.source import ensure_store
    from ablate.study.plan import build_plan
    from ablate.study.spec import parse_spec

    separate = study_spec(args.spec, args.seeds, args.epochs, args.workers, fuse=False)
    plan = build_plan(parse_spec(separate))
    store = ensure_store(plan.spec.dataset)  # generated before any clock starts
    one_thread = [dataclasses.replace(t.config, train=dataclasses.replace(t.config.train,
                                                                          threads=1))
                  for t in plan.trials]
    print(f"{len(plan.trials)} trials ({len(plan.variants)} variants x {args.seeds} seeds, "
          f"{plan.base.train.epochs} epochs) of {args.spec.name}, {args.workers} at a time; "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs")
    seconds: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="bench-study-") as tmp:
        work = Path(tmp)
        seconds[WAYS[0]] = time_ablate_run(separate, work / "separate")
        print(f"  {WAYS[0]:<28} {seconds[WAYS[0]]:7.1f} s", flush=True)
        if "fused" not in args.skip:
            fused = study_spec(args.spec, args.seeds, args.epochs, args.workers, fuse=True,
                               fuse_members=args.fuse_members)
            groups = build_plan(parse_spec(fused)).groups
            print(f"  (fused: {len(groups)} Tune trials of "
                  f"{sorted({len(m) for m in groups.values()})} members)")
            seconds[WAYS[1]] = time_ablate_run(fused, work / "fused")
            print(f"  {WAYS[1]:<28} {seconds[WAYS[1]]:7.1f} s", flush=True)
        if "plain" not in args.skip:
            seconds[WAYS[2]] = time_plain_loop(one_thread, store, args.workers)
            print(f"  {WAYS[2]:<28} {seconds[WAYS[2]]:7.1f} s", flush=True)
        if "shell" not in args.skip:
            seconds[WAYS[3]] = time_shell_loop(one_thread, store, args.workers, work / "shell")
            print(f"  {WAYS[3]:<28} {seconds[WAYS[3]]:7.1f} s", flush=True)
    base = seconds[WAYS[0]]
    print("\nratios (same run):")
    for way, value in seconds.items():
        if way != WAYS[0]:
            print(f"  ablate run / {way:<26} {base / value:5.2f}x")


if __name__ == "__main__":
    main()
