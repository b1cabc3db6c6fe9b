"""Benchmark: training a GPT-2-shaped SAE (d_model 768, width 24576) on the layer-0 grid, per device
and precision.

Random embeddings of GPT-2 small's shapes (50257 x 768 tokens, 1024 x 768 positions); the trainer of
``posfeat train`` (ReLU + L1, Adam, batch 4096, context 128). Prints steps per second and ms per
step for each device asked (CUDA only when PyTorch sees a GPU) and each precision (fp32, bf16
autocast), after one warm-up step, and the final loss of each run (bf16 next to fp32). ``--quick``:
small sizes.

    python benchmarks/bench_train.py [--devices cpu,cuda] [--precisions fp32,bf16] [--steps-cpu 4]
                                     [--steps-cuda 100] [--d-sae 24576] [--batch 4096] [--quick]
                                     [--csv FILE]
"""

from __future__ import annotations

import argparse
import csv
import os
import time

import torch

from posfeat import Embeddings, train_sae


def run(emb: Embeddings, steps: int, d_sae: int, batch: int, precision: str) -> tuple[float, float]:
    """Steps per second, and the last logged loss."""
    kw = {
        "d_sae": d_sae,
        "context": 128,
        "batch": batch,
        "l1": 5.0,
        "lr": 4e-4,
        "progress": False,
        "precision": precision,
    }
    train_sae(emb, steps=1, log_every=10**9, **kw)  # warm-up (allocations, kernels)
    if emb.device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    result = train_sae(emb, steps=steps, log_every=max(1, steps), **kw)
    if emb.device.type == "cuda":
        torch.cuda.synchronize()
    return steps / (time.perf_counter() - t0), float(result.log[-1]["loss"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--devices",
        default="cpu,cuda",
        help="comma-separated; cuda is skipped (and said so) without a GPU",
    )
    ap.add_argument("--precisions", default="fp32", help="comma-separated: fp32, bf16")
    ap.add_argument("--steps-cpu", type=int, default=4)
    ap.add_argument("--steps-cuda", type=int, default=100)
    ap.add_argument("--d-sae", type=int, default=24576)
    ap.add_argument("--batch", type=int, default=4096)
    ap.add_argument(
        "--quick", action="store_true", help="d_sae 512, batch 256, 2 steps on each device"
    )
    ap.add_argument("--csv", default=None, help="also write the rows to this CSV file")
    args = ap.parse_args()
    if args.quick:
        args.d_sae, args.batch, args.steps_cpu, args.steps_cuda = 512, 256, 2, 2
    g = torch.Generator().manual_seed(0)
    emb = Embeddings(
        torch.randn(50257, 768, generator=g) * 0.14,
        torch.randn(1024, 768, generator=g) * 0.1,
        name="GPT-2-shaped random",
    )
    rows = []
    for device in args.devices.split(","):
        name = (
            f"CUDA ({torch.cuda.get_device_name(0)})"
            if device == "cuda" and torch.cuda.is_available()
            else f"CPU ({os.cpu_count()} cores, {torch.get_num_threads()} threads)"
            if device == "cpu"
            else "CUDA"
        )
        for precision in args.precisions.split(","):
            if device == "cuda" and not torch.cuda.is_available():
                rows.append(
                    {
                        "device": name,
                        "precision": precision,
                        "steps_per_s": "not available on this machine",
                        "ms_per_step": "",
                        "final_loss": "",
                    }
                )
                continue
            steps = args.steps_cuda if device == "cuda" else args.steps_cpu
            rate, loss = run(emb.to(device), steps, args.d_sae, args.batch, precision)
            rows.append(
                {
                    "device": name,
                    "precision": precision,
                    "steps_per_s": f"{rate:.3f}",
                    "ms_per_step": f"{1000 / rate:.1f}",
                    "final_loss": f"{loss:.4f}",
                }
            )
    print(
        f"SAE: ReLU, d_in 768, d_sae {args.d_sae}, batch {args.batch}, context 128 (final loss "
        "after the timed steps)"
    )
    print("| device | precision | steps/s | ms/step | final loss |\n|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['device']} | {r['precision']} | {r['steps_per_s']} | {r['ms_per_step']} | "
            f"{r['final_loss']} |"
        )
    if args.csv:
        with open(args.csv, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)


if __name__ == "__main__":
    main()
