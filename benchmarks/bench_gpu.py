"""How many trials one card trains at once: fused, packed as separate processes, or both.

One run on a GPU machine prints, for each number of trials sharing the card, the training
throughput (member-epochs per second) of

- ``separate``: N processes, one trial each, all on the card at once (what Ray Tune's fractional
  GPUs, ``resources.gpu: 1/N``, do with unfused trials);
- ``fused``: one process training the N trials as one vectorised model (``fuse: seeds``);
- ``KxM`` (``--pack``): K processes each training a fused trial of M members (fractional GPUs
  and fusion together),

with the card's utilisation (``nvidia-smi``'s ``utilization.gpu``: the share of time a kernel
ran, sampled every 100 ms while the measured epochs run), its peak memory, and the ratio of each
way's throughput to ``separate`` at the same number of trials. Every way trains the same configs
(seeds 0..N-1 of ``--preset``) on the same store, side by side in one run.

    python benchmarks/bench_gpu.py --device cuda                        # small store
    python benchmarks/bench_gpu.py --device cuda --data ucf --members 4 16 --pack 4x4
    python benchmarks/bench_gpu.py --device cpu --members 1 2 --epochs 1  # the script itself

``--data ucf`` generates UCF-Crime's shape on first use (minutes; about 3.4 GB plus its cache).
"""

from __future__ import annotations

import argparse
import multiprocessing
import queue
import shutil
import statistics
import subprocess
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any


def _configs(preset: str, device: str, seeds: range) -> list[Any]:
    from ablate.config import apply_overrides, load_raw_config, resolve_trial_config

    return [resolve_trial_config(apply_overrides(load_raw_config(preset), {
        "seed": seed, "train.device": device, "train.threads": 1})) for seed in seeds]


def _train(preset: str, device: str, seeds: range, store: str, epochs: int,
           ready: Any, go: Any) -> tuple[float, float]:
    """One process: a trial (one seed) or a fused trial (several) trains a warm-up epoch, says
    it is ``ready``, waits to ``go`` with the others, then trains ``epochs`` epochs; returns
    (start, end) wall clock."""
    import torch

    from ablate.data import load
    from ablate.train.fused import FusedTrainer
    from ablate.train.trainer import Trainer

    dataset = load(Path(store))
    configs = _configs(preset, device, seeds)
    trainer: Any = (Trainer(configs[0], dataset) if len(configs) == 1
                    else FusedTrainer(configs, dataset))

    def sync() -> None:
        if device == "cuda":
            torch.cuda.synchronize()

    trainer.train_epoch()  # allocators, kernels, the train set on the device
    sync()
    ready.put(seeds.start)
    go.wait()
    start = time.time()
    for _ in range(epochs):
        trainer.train_epoch()
    sync()
    return start, time.time()


class CardSampler:
    """``nvidia-smi`` sampled every 100 ms in the background: mean utilisation, peak memory."""

    def __init__(self) -> None:
        self.samples: list[tuple[float, float]] = []
        self._proc: subprocess.Popen[str] | None = None
        self._reader: threading.Thread | None = None

    def __enter__(self) -> CardSampler:
        if shutil.which("nvidia-smi"):
            self._proc = subprocess.Popen(
                ["nvidia-smi", "--query-gpu=utilization.gpu,memory.used",
                 "--format=csv,noheader,nounits", "-lms", "100", "-i", "0"],
                stdout=subprocess.PIPE, text=True)
            self._reader = threading.Thread(target=self._read, daemon=True)
            self._reader.start()
        return self

    def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for line in self._proc.stdout:
            util, memory = (float(v) for v in line.split(","))
            self.samples.append((util, memory))

    def __exit__(self, *exc: object) -> None:
        if self._proc is not None:
            self._proc.terminate()
            self._proc.wait()

    def summary(self) -> str:
        if not self.samples:
            return f"{'n/a':>8}{'n/a':>10}"
        util = statistics.mean(u for u, _ in self.samples)
        return f"{util:>7.0f}%{max(m for _, m in self.samples) / 1024:>8.1f} GB"


def measure(processes: int, members: int, args: argparse.Namespace,
            store: str) -> tuple[float, CardSampler]:
    """Throughput (member-epochs per second) of ``processes`` processes of ``members`` each."""
    context = multiprocessing.get_context("spawn")
    with context.Manager() as manager, ProcessPoolExecutor(processes,
                                                           mp_context=context) as pool:
        ready, go = manager.Queue(), manager.Event()
        futures = [pool.submit(_train, args.preset, args.device,
                               range(p * members, (p + 1) * members), store, args.epochs,
                               ready, go) for p in range(processes)]
        try:
            for _ in range(processes):  # every process warmed up: time the measured epochs only
                while True:
                    try:
                        ready.get(timeout=1.0)
                        break
                    except queue.Empty:
                        for future in futures:
                            if future.done():
                                future.result()  # a failed process (out of memory) says why
            with CardSampler() as sampler:
                go.set()
                spans = [f.result() for f in futures]
        finally:
            go.set()  # after a failure, the others finish instead of waiting forever
    seconds = max(end for _, end in spans) - min(start for start, _ in spans)
    return processes * members * args.epochs / seconds, sampler


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cuda")
    parser.add_argument("--members", type=int, nargs="+", default=[1, 4, 8, 16],
                        help="trials sharing the card")
    parser.add_argument("--pack", nargs="*", default=["4x4"],
                        help="KxM: K processes of M fused members each")
    parser.add_argument("--epochs", type=int, default=2, help="measured epochs per way")
    parser.add_argument("--preset", default="full", help="model variant (a preset name)")
    parser.add_argument("--data", default="small", help="small, ucf, or a feature store path")
    args = parser.parse_args()

    import torch

    from ablate.data.synth import default_store

    if args.data in ("small", "ucf"):
        start = time.perf_counter()
        store = str(default_store(args.data))
        print(f"store {args.data}: ready in {time.perf_counter() - start:.0f} s")
    else:
        store = args.data
    card = torch.cuda.get_device_name() if args.device == "cuda" else "cpu (1 thread/process)"
    print(f"{card}; torch {torch.__version__}; preset {args.preset}; {args.epochs} measured "
          f"epoch(s) after a warm-up one; throughput in member-epochs per second")
    print(f"{'trials':>6}  {'way':<10}{'epochs/s':>10}{'vs separate':>13}{'util':>8}"
          f"{'memory':>10}")
    ways = [(n, [("separate", n, 1), ("fused", 1, n)]) for n in args.members]
    for pack in args.pack:
        k, m = (int(v) for v in pack.split("x"))
        ways.append((k * m, [("separate", k * m, 1), (pack, k, m)]))
    seen: dict[int, float] = {}
    for trials, rows in ways:
        for label, processes, members in rows:
            if label == "separate" and trials in seen:
                continue
            if label == "fused" and trials == 1:
                continue  # one member: the separate trial itself
            throughput, sampler = measure(processes, members, args, store)
            if label == "separate":
                seen[trials] = throughput
            print(f"{trials:>6}  {label:<10}{throughput:>10.2f}"
                  f"{throughput / seen[trials]:>12.2f}x{sampler.summary()}", flush=True)


if __name__ == "__main__":
    main()
