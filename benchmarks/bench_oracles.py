"""The synthetic benchmark's oracles: what its information structure allows, from latent truth.

    python benchmarks/bench_oracles.py [--scale small] [--seeds 0 3 4]

Prints, per benchmark seed, the frame-level test AUC of the context-blind oracle, the best
per-snippet detector, the pooled-scene detector and the perfect one, the scene and motion
accuracies, and the label-leak AUCs of video-level statistics (0.5 = no leak).
"""

from __future__ import annotations

import argparse

from ablate.data.oracles import measure

ROWS = (("context-blind", "context_blind_auc"), ("per-snippet (Bayes)", "per_snippet_bayes_auc"),
        ("per-snippet (MLP probe)", "per_snippet_mlp_auc"), ("pooled scene", "pooled_auc"),
        ("perfect", "perfect_auc"), ("scene acc, one snippet", "scene_acc_snippet"),
        ("scene acc, pooled video", "scene_acc_pooled"),
        ("motion acc, one snippet", "motion_acc_snippet"),
        ("motion acc, change", "motion_acc_change"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", default="small")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 3, 4])
    args = parser.parse_args()
    reports = [measure(args.scale, seed).as_dict() for seed in args.seeds]
    print("| oracle | " + " | ".join(f"seed {s}" for s in args.seeds) + " |")
    print("|---|" + "---|" * len(args.seeds))
    for label, key in ROWS:
        print(f"| {label} | " + " | ".join(f"{r[key]:.3f}" for r in reports) + " |")
    for name in reports[0]["leak_auc"]:
        print(f"| leak AUC: {name} | "
              + " | ".join(f"{r['leak_auc'][name]:.3f}" for r in reports) + " |")


if __name__ == "__main__":
    main()
