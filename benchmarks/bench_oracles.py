"""The synthetic benchmark's oracles: what its information structure allows, from latent truth.

    python benchmarks/bench_oracles.py [--scale small] [--seeds 0 1 2]

Prints, per benchmark seed, the frame-level test AUC and AUC_A (within abnormal videos) of every
oracle of :mod:`ablate.data.oracles`, the scene and motion accuracies, and the label-leak AUCs
of video-level statistics (0.5 = no leak).
"""

from __future__ import annotations

import argparse

from ablate.data.oracles import DETECTORS, measure

LABELS = {
    "video_label": "video label (each snippet scored with its video's label)",
    "context_blind": "context-blind (true motion, no scene)",
    "cooccurrence": "motion co-occurrence (true motions of the video, no scene)",
    "per_snippet_bayes": "per-snippet (Bayes)",
    "per_snippet_mlp": "per-snippet (MLP probe, latent labels)",
    "window_3": "local window, 3 snippets", "window_5": "local window, 5 snippets",
    "window_9": "local window, 9 snippets",
    "same_look": "snippets that look alike (camera dims)",
    "same_camera": "same camera (latent truth)", "whole_video": "whole video pooled",
    "perfect": "perfect (scene and motion)",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", default="small")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    reports = [measure(args.scale, seed) for seed in args.seeds]
    print("| oracle | " + " | ".join(f"AUC seed {s} | AUC_A seed {s}" for s in args.seeds) + " |")
    print("|---|" + "---|---|" * len(args.seeds))
    for name in DETECTORS:
        print(f"| {LABELS[name]} | " + " | ".join(
            f"{r.auc[name]:.3f} | {r.auc_abnormal[name]:.3f}" for r in reports) + " |")
    print()
    print("| accuracy | " + " | ".join(f"seed {s}" for s in args.seeds) + " |")
    print("|---|" + "---|" * len(args.seeds))
    for name in reports[0].scene_acc:
        print(f"| scene, {name.replace('_', ' ')} | "
              + " | ".join(f"{r.scene_acc[name]:.3f}" for r in reports) + " |")
    print("| motion, one snippet | "
          + " | ".join(f"{r.motion_acc_snippet:.3f}" for r in reports) + " |")
    print("| motion, change between snippets | "
          + " | ".join(f"{r.motion_acc_change:.3f}" for r in reports) + " |")
    for name in reports[0].leak_auc:
        print(f"| leak AUC: {name} | "
              + " | ".join(f"{r.leak_auc[name]:.3f}" for r in reports) + " |")


if __name__ == "__main__":
    main()
