"""GPU figures for one trial: the small benchmark end to end, and UCF-scale step and eval times.

Run on a machine with CUDA: ``python benchmarks/gpu_check.py``. Prints, side by side in one run,
the CUDA (bfloat16 autocast) and CPU figures of the same work.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from ablate.config import apply_overrides, load_raw_config, resolve_trial_config
from ablate.models import build_model, build_objective, resolve_loss_spec, resolve_model_spec
from ablate.train.trainer import _as_float


def small_trial(device: str, store: Path) -> tuple[float, float]:
    from ablate.data import load
    from ablate.train.driver import run_trial

    config = resolve_trial_config(apply_overrides(load_raw_config("full"),
                                                  {"train.device": device}))
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as out:
        trainer = run_trial(config, load(store), Path(out))
    return time.perf_counter() - start, trainer.history[-1]["auc"]


def ucf_step(device: str, repeats: int) -> float:
    """Median seconds of one forward+backward+Adam step, 32+32 videos x 32 segments x 2048."""
    torch.manual_seed(0)
    full = load_raw_config("full")
    model = build_model(resolve_model_spec(full["model"]), in_dim=2048).to(device)
    objective = build_objective(resolve_loss_spec(full["loss"]), model)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.randn(64, 32, 2048, device=device)
    y = torch.cat([torch.zeros(32), torch.ones(32)]).to(device)
    times = []
    for i in range(repeats + 3):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=device == "cuda"):
            out = model(x)
        loss, _ = objective(_as_float(out), y)  # as the trainer does: losses in float32
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if device == "cuda":
            torch.cuda.synchronize()
        if i >= 3:
            times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def ucf_eval(device: str, t: int) -> float:
    """Seconds to score one test video of T snippets x 10 crops x 2048 (no grad)."""
    full = load_raw_config("full")
    model = build_model(resolve_model_spec(full["model"]), in_dim=2048).to(device).eval()
    x = torch.randn(10, t, 2048, device=device)
    with torch.inference_mode(), torch.autocast(device_type=device, dtype=torch.bfloat16,
                                                enabled=device == "cuda"):
        model(x[:, :64])
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        model(x).scores.float().mean(0).cpu()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cpu-threads", type=int, default=0)
    args = parser.parse_args()
    if args.cpu_threads:
        torch.set_num_threads(args.cpu_threads)
    assert torch.cuda.is_available(), "needs a CUDA device"
    print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}, "
          f"CPU threads {torch.get_num_threads()}")
    from ablate.data.synth import default_store

    store = default_store("small")
    cuda_s, cuda_auc = small_trial("cuda", store)
    cpu_s, cpu_auc = small_trial("cpu", store)
    print(f"small benchmark, full preset, 15 epochs: cuda {cuda_s:.1f} s (auc {cuda_auc:.4f}), "
          f"cpu {cpu_s:.1f} s (auc {cpu_auc:.4f}), cpu/cuda {cpu_s / cuda_s:.1f}x")
    gpu_step, cpu_step = ucf_step("cuda", 20), ucf_step("cpu", 5)
    print(f"UCF-scale step (64 x 32 x 2048, fwd+bwd+Adam): cuda {gpu_step * 1e3:.2f} ms, "
          f"cpu {cpu_step * 1e3:.1f} ms, cpu/cuda {cpu_step / gpu_step:.0f}x")
    for t in (1000, 3000):
        print(f"UCF-scale eval of one video, T={t} x 10 crops: cuda {ucf_eval('cuda', t):.3f} s")
    print(f"peak CUDA memory: {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB")


if __name__ == "__main__":
    main()
