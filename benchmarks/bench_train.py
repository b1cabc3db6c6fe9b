"""Benchmark: training a GPT-2-shaped SAE (d_model 768, width 24576) on the layer-0 grid, CPU and CUDA side by side.

Random embeddings of GPT-2 small's shapes (50257 x 768 tokens, 1024 x 768 positions); the trainer of
``posfeat train`` (ReLU + L1, Adam, batch 4096, context 128). Prints steps per second on each device
available (CUDA only when PyTorch sees a GPU), after one warm-up step.

    python benchmarks/bench_train.py [--steps-cpu 4] [--steps-cuda 100] [--d-sae 24576] [--batch 4096]
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from posfeat import Embeddings, train_sae


def rate(emb: Embeddings, steps: int, d_sae: int, batch: int) -> float:
    kw = {"d_sae": d_sae, "context": 128, "batch": batch, "l1": 5.0, "lr": 4e-4, "progress": False, "log_every": 10**9}
    train_sae(emb, steps=1, **kw)  # warm-up (allocations, kernels)
    if emb.device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    train_sae(emb, steps=steps, **kw)
    if emb.device.type == "cuda":
        torch.cuda.synchronize()
    return steps / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps-cpu", type=int, default=4)
    ap.add_argument("--steps-cuda", type=int, default=100)
    ap.add_argument("--d-sae", type=int, default=24576)
    ap.add_argument("--batch", type=int, default=4096)
    args = ap.parse_args()
    g = torch.Generator().manual_seed(0)
    emb = Embeddings(torch.randn(50257, 768, generator=g) * 0.14, torch.randn(1024, 768, generator=g) * 0.1, name="GPT-2-shaped random")
    rows = [("SAE", f"ReLU, d_in 768, d_sae {args.d_sae}, batch {args.batch}, context 128"),
            (f"CPU ({os.cpu_count()} cores, {torch.get_num_threads()} threads)", f"{rate(emb, args.steps_cpu, args.d_sae, args.batch):.3f} steps/s")]
    if torch.cuda.is_available():
        rows.append((f"CUDA ({torch.cuda.get_device_name(0)})", f"{rate(emb.to('cuda'), args.steps_cuda, args.d_sae, args.batch):.2f} steps/s"))
    else:
        rows.append(("CUDA", "not available on this machine"))
    print("| device | training speed |\n|---|---|")
    for k, v in rows:
        print(f"| {k} | {v} |")


if __name__ == "__main__":
    main()
