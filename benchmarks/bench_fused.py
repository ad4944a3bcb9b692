"""Fused trials vs separate ones: step and epoch time of N seeds of one model variant.

Prints, measured side by side in one run on one device, the time of a training step and of an
epoch (training, then validation and test scoring) for N members trained as one vectorised model
(:class:`~ablate.train.fused.FusedTrainer`, N members per forward call) and for the same N models
trained one after the other by :class:`~ablate.train.trainer.Trainer` (one member per call: what N
separate trials cost on one device), and the fused/separate ratio (below 1: fusion is faster).
Rounds alternate between the two, so a load that drifts on a shared machine hits both alike; the
figures are medians over the rounds after a warm-up round. On CPU the process's CPU time is
printed beside the wall time: on a machine shared with other jobs, wall time also counts the
time this process waited for a core, CPU time only the work.

    python benchmarks/bench_fused.py                          # CPU, 3 members, small store
    python benchmarks/bench_fused.py --members-per-call 3     # CPU, vmapped as on a GPU
    python benchmarks/bench_fused.py --device cuda --members 8

On CUDA both run under bfloat16 autocast, as the Trainer does (``train.amp``). The data is the
small synthetic store (generated into the cache on first use, seconds) unless ``--data`` names a
store.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ablate.config import apply_overrides, load_raw_config, resolve_trial_config
from ablate.data import load
from ablate.train.fused import FusedTrainer
from ablate.train.trainer import Trainer


def timed(device: str, work: Callable[[], Any]) -> tuple[float, float]:
    """Wall and process CPU seconds of ``work()``, with the GPU's queue drained before and
    after."""
    if device == "cuda":
        torch.cuda.synchronize()
    wall, cpu = time.perf_counter(), time.process_time()
    work()
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - wall, time.process_time() - cpu


def _total(samples: list[tuple[float, float]]) -> tuple[float, float]:
    return sum(w for w, _ in samples), sum(c for _, c in samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--members", type=int, default=3, help="seeds fused into one trial")
    parser.add_argument("--members-per-call", type=int,
                        help="members one vmapped call serves (default: the FusedTrainer's: all "
                             "on CUDA, 1 on CPU)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--preset", default="full", help="model variant (a preset name)")
    parser.add_argument("--batch-size", type=int, default=64, help="videos per step (RTFM's)")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads for torch")
    parser.add_argument("--rounds", type=int, default=3, help="measured rounds after a warm-up")
    parser.add_argument("--data", type=Path, help="a feature store (default: small synthetic)")
    args = parser.parse_args()

    if args.data is None:
        from ablate.data.synth import default_store

        args.data = default_store("small")
    dataset = load(args.data)
    configs = [resolve_trial_config(apply_overrides(load_raw_config(args.preset), {
        "seed": seed, "train.device": args.device, "train.threads": args.threads,
        "train.batch_size": args.batch_size})) for seed in range(args.members)]
    separate = [Trainer(config, dataset) for config in configs]
    fused = FusedTrainer(configs, dataset, args.members_per_call)
    data = fused.data
    steps = math.ceil(len(data.abnormal) / (args.batch_size // 2))

    times: dict[str, list[tuple[float, float]]] = {key: [] for key in (
        "separate train", "separate eval", "fused train", "fused eval")}
    for round_ in range(args.rounds + 1):  # round 0 warms up allocators, kernels, page cache
        sample = {
            "separate train": _total([timed(args.device, t.train_epoch) for t in separate]),
            "separate eval": _total([timed(args.device, t.evaluate) for t in separate]),
            "fused train": timed(args.device, fused.train_epoch),
            "fused eval": timed(args.device, fused.evaluate),
        }
        if round_:
            for key, value in sample.items():
                times[key].append(value)
    wall = {key: statistics.median(w for w, _ in values) for key, values in times.items()}
    cpu = {key: statistics.median(c for _, c in values) for key, values in times.items()}

    threads = f", {torch.get_num_threads()} thread(s)" if args.device == "cpu" else ""
    name = torch.cuda.get_device_name() if args.device == "cuda" else "cpu"
    amp = ", bf16 autocast" if args.device == "cuda" and configs[0].train.amp else ""
    print(f"device {name}{threads}{amp}; torch {torch.__version__}; preset {args.preset}; "
          f"{args.members} members (seeds 0-{args.members - 1})")
    print(f"store {args.data.name}: {steps} steps/epoch of {args.batch_size} videos x "
          f"{configs[0].train.segments} segments; scoring {len(data.test_ids)} test + "
          f"{len(data.val_ids)} validation videos; median of {args.rounds} rounds")
    print(f"members per call: fused {fused.members_per_call}, separate 1")
    clocks = [("wall", wall)] + ([("cpu", cpu)] if args.device == "cpu" else [])
    print(f"{'':24}{'separate':>12}{'fused':>12}{'fused/separate':>16}")
    for clock, med in clocks:
        rows = [
            ("train step", med["separate train"] / steps, med["fused train"] / steps),
            ("epoch: train", med["separate train"], med["fused train"]),
            ("epoch: evaluation", med["separate eval"], med["fused eval"]),
            ("epoch: total", med["separate train"] + med["separate eval"],
             med["fused train"] + med["fused eval"]),
        ]
        for label, sep, fus in rows:
            print(f"{clock + ' ' + label:24}{_seconds(sep):>12}{_seconds(fus):>12}"
                  f"{fus / sep:>16.2f}")


def _seconds(value: float) -> str:
    return f"{value * 1e3:.1f} ms" if value < 1 else f"{value:.2f} s"


if __name__ == "__main__":
    main()
