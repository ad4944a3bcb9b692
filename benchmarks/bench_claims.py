"""The method's registered claims, decided on held-out draws: every relation variant, final
AUC and AUC_A.

    python benchmarks/bench_claims.py [--benchmarks 3 4] [--seeds 20 21 ... 29] [--json F]

Trains every variant of :data:`ablate.report.claims.VARIANTS` on each benchmark draw with each
training seed (the plain loop, two processes, one thread each), then prints mean ± std per
variant and draw, and the claims table: each registered claim's measured effect, Holm-adjusted
p-values and decision beside the registered outcome (:func:`ablate.report.claims.decide_claims`).
``pytest -m claims`` asserts that every decision is the registered one.
"""

from __future__ import annotations

import argparse
import json
import time

from ablate.report.claims import (
    HELD_OUT_BENCHMARKS,
    HELD_OUT_SEEDS,
    ClaimResults,
    claims_table,
    decide_claims,
    measure_claims,
    variant_table,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--benchmarks", type=int, nargs="+", default=list(HELD_OUT_BENCHMARKS))
    parser.add_argument("--seeds", type=int, nargs="+", default=list(HELD_OUT_SEEDS))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda", "auto"),
                        help="train.device of every trial (default cpu, as CI runs the claims)")
    parser.add_argument("--json", help="also write the per-seed AUCs and AUC_As to this file")
    parser.add_argument("--from-json", help="decide from per-seed results written by --json")
    args = parser.parse_args()
    start = time.perf_counter()
    if args.from_json:
        with open(args.from_json) as f:
            results = ClaimResults.from_json(json.load(f))
    else:
        results = measure_claims(args.benchmarks, args.seeds, args.workers,
                                 overrides={"train.device": args.device})
    print(variant_table(results))
    print()
    print(claims_table(decide_claims(results), results))
    if not args.from_json:
        trials = sum(len(v) for b in results.auc.values() for v in b.values())
        print(f"\n{trials} trials in {time.perf_counter() - start:.0f} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results.to_json(), f, indent=1)


if __name__ == "__main__":
    main()
