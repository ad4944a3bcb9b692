"""The method's claims on held-out seeds: every relation variant, final test AUC.

    python benchmarks/bench_claims.py [--benchmarks 3 4] [--seeds 10 11 12 13 14 15]

Trains every variant of :data:`ablate.report.claims.VARIANTS` on each benchmark draw with each
training seed (the plain loop, two processes, one thread each) and prints mean ± std per variant
and the paired difference to ``full``. ``tests/test_benchmark_claims.py`` asserts the claims.
"""

from __future__ import annotations

import argparse
import json
import time

from ablate.report.claims import HELD_OUT_BENCHMARKS, HELD_OUT_SEEDS, measure_claims


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--benchmarks", type=int, nargs="+", default=list(HELD_OUT_BENCHMARKS))
    parser.add_argument("--seeds", type=int, nargs="+", default=list(HELD_OUT_SEEDS))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda", "auto"),
                        help="train.device of every trial (default cpu, as CI runs the claims)")
    parser.add_argument("--json", help="also write the per-seed AUCs to this file")
    args = parser.parse_args()
    start = time.perf_counter()
    results = measure_claims(args.benchmarks, args.seeds, args.workers,
                             overrides={"train.device": args.device})
    print(results.table())
    print(f"\n{sum(len(v) for b in results.auc.values() for v in b.values())} trials in "
          f"{time.perf_counter() - start:.0f} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results.auc, f, indent=1)


if __name__ == "__main__":
    main()
