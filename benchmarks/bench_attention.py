"""Where CoMo's attention looks on the synthetic benchmark: the weight each attention graph puts
on the snippet's own camera, against what uniform attention would put there.

    python benchmarks/bench_attention.py [--relations context ...] [--seeds 10 11] [--benchmark 0]

Trains the ``full`` preset (or the given relations) with the default protocol, then runs it on
the test videos and reads every attention graph. On benchmark version 3 pooling the snippets of
the snippet's own camera is what the relational oracle does (AUC_A about 0.99); a graph whose
weight on the own camera is no higher than uniform's has not found the cameras, however low its
entropy. Per relation and seed it prints the mean weight on the own camera, uniform's share, the
weight within 4 snippets (a local window's), and the normalised entropy (1 = uniform); and, for
reference, the same of an untrained graph: the cosine of the raw features at the attention's
initial temperature.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ablate.config import apply_overrides, load_raw_config, resolve_trial_config
from ablate.data import load
from ablate.data.synth import Generator, default_store
from ablate.train.driver import run_trial

NEAR = 4  # snippets either side that count as the snippet's local window


def attention_weights(model: torch.nn.Module, features: np.ndarray) -> dict[str, torch.Tensor]:
    """Every attention graph of one video, crop-averaged as at test: {relation: (T, T)}."""
    graphs: dict[str, torch.Tensor] = {}
    hooks = []
    for name, branch in model.como.branches.items():
        if hasattr(branch, "attention"):
            def keep(_module, _inputs, output, name=name):
                graphs[name] = output[0].detach()
            hooks.append(branch.attention.register_forward_hook(keep))
    x = torch.from_numpy(np.array(features, dtype=np.float32)).mean(0, keepdim=True)  # (1, T, D)
    with torch.no_grad():
        model(x)
    for hook in hooks:
        hook.remove()
    return graphs


def where_it_looks(graph: torch.Tensor, cameras: np.ndarray) -> tuple[float, float, float, float]:
    """(weight on own camera, uniform's share of it, weight within ``NEAR`` snippets, entropy)."""
    cam = torch.as_tensor(cameras)
    same = (cam[:, None] == cam[None, :]).float()  # (T, T)
    t = len(cam)
    idx = torch.arange(t)
    near = ((idx[:, None] - idx[None, :]).abs() <= NEAR).float()
    entropy = -(graph * graph.clamp_min(1e-12).log()).sum(1) / np.log(t)
    return ((graph * same).sum(1).mean().item(), same.mean(1).mean().item(),
            (graph * near).sum(1).mean().item(), entropy.mean().item())


def raw_cosine_graph(features: np.ndarray, temperature: float) -> torch.Tensor:
    """softmax(tau * cos(x_i, x_j)) of the crop-averaged features: (T, T)."""
    x = F.normalize(torch.from_numpy(np.array(features, dtype=np.float32)).mean(0), dim=-1)
    return torch.softmax(temperature * x @ x.T, dim=-1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--relations", nargs="+", help="CoMo relations (default: full's four)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[10, 11])
    parser.add_argument("--benchmark", type=int, default=0, help="benchmark seed (draw)")
    args = parser.parse_args()

    store = default_store("small", seed=args.benchmark)
    dataset = load(store)
    cameras = {v.video_id: v.track.cameras
               for v in Generator("small", args.benchmark).videos() if v.split == "test"}
    print("| relation | seed | on own camera | uniform | within ±4 snippets | entropy |")
    print("|---|---|---|---|---|---|")
    defaults = resolve_trial_config(apply_overrides(load_raw_config("full"), {}))
    temperature = float(defaults.model["como"]["attention_temperature"])
    raw = np.mean([where_it_looks(raw_cosine_graph(dataset.features(v), temperature), cameras[v])
                   for v in dataset.video_ids("test")], axis=0)
    print(f"| raw features, untrained (tau {temperature:g}) | – | {raw[0]:.3f} | {raw[1]:.3f} | "
          f"{raw[2]:.3f} | {raw[3]:.3f} |")
    for seed in args.seeds:
        overrides: dict[str, object] = {"seed": seed}
        if args.relations:
            overrides["model.como.relations"] = args.relations
        config = resolve_trial_config(apply_overrides(load_raw_config("full"), overrides))
        with tempfile.TemporaryDirectory() as out:
            model = run_trial(config, dataset, Path(out)).model.eval()
        rows: dict[str, list[tuple[float, float, float, float]]] = {}
        for video_id in dataset.video_ids("test"):
            graphs = attention_weights(model, dataset.features(video_id))
            for name, graph in graphs.items():
                rows.setdefault(name, []).append(where_it_looks(graph, cameras[video_id]))
        for name, values in rows.items():
            own, uniform, near, entropy = np.mean(values, axis=0)
            print(f"| {name} | {seed} | {own:.3f} | {uniform:.3f} | {near:.3f} | {entropy:.3f} |")


if __name__ == "__main__":
    main()
