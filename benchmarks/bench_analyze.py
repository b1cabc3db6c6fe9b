"""Benchmark: the README's GPT-2 command, offline, on a full-size GPT-2-shaped stand-in (see gpt2_standin.py).

Builds the stand-in in the real hub-cache layout, then runs, with HF_HUB_OFFLINE=1,

    posfeat analyze --model gpt2 --sae gpt2-small-res-jb/blocks.0.hook_resid_pre --device DEVICE --out OUT

in a fresh process, and prints the stage times (summary.json's timings), each against the floor (the
fp32 GEMM ``W_E @ W_enc`` of these shapes, timed in this process after the run), the wall time, the
peak resident memory of that process, the size of report.html and what it found. The numbers are
the stand-in's: its weights are random, of the real shapes. ``--quick``: 160 positions and 64
sampled tokens (checks the script; measures little).

    python benchmarks/bench_analyze.py [--device cpu|cuda] [--cache DIR] [--embeddings-only] [--quick] [--csv FILE]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpt2_standin import build


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--cache", default=None, help="build (or reuse) the stand-in's hub cache here (default: a temporary folder)")
    ap.add_argument("--embeddings-only", action="store_true", help="write only wte/wpe into model.safetensors (a smaller file)")
    ap.add_argument("--quick", action="store_true", help="analyze --positions 160 --tokens-sample 64")
    ap.add_argument("--csv", default=None, help="also write the table to this CSV file")
    ap.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="more flags for posfeat analyze")
    args = ap.parse_args()
    tmp = tempfile.TemporaryDirectory()
    cache = Path(args.cache or tmp.name) / "hub"
    t0 = time.time()
    if not (cache / "models--openai-community--gpt2").is_dir():
        build(cache, embeddings_only=args.embeddings_only)
    built = time.time() - t0
    out = Path(tmp.name) / "gpt2-res-jb"
    cmd = [sys.executable, "-m", "posfeat.cli.main", "analyze", "--model", "gpt2", "--sae", "gpt2-small-res-jb/blocks.0.hook_resid_pre",
           "--device", args.device, "--out", str(out), *(["--positions", "160", "--tokens-sample", "64"] if args.quick else []), *args.extra]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache)}
    t0 = time.time()
    proc = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, text=True)
    wall = time.time() - t0
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20
    if proc.returncode != 0:
        sys.exit(f"posfeat analyze failed with status {proc.returncode}")
    s = json.loads((out / "summary.json").read_text())
    floor = gemm_floor(torch.device(args.device))
    device = torch.cuda.get_device_name(0) if args.device == "cuda" else f"CPU, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads"
    rows = [("device", device), ("stand-in built in", f"{built:.0f} s"), ("command", "posfeat " + " ".join(cmd[3:]).replace(str(out), "OUT")),
            ("floor: fp32 GEMM W_E @ W_enc (50257 x 768 x 24576)", f"{floor:.3f} s"),
            *[(f"stage: {k}", f"{v:.1f} s ({v / floor:.2f}x floor)") for k, v in s["timings"].items()],
            ("wall time (process)", f"{wall:.1f} s ({wall / floor:.2f}x floor)"),
            ("peak RSS (process)", f"{peak:.2f} GiB"), ("report.html", f"{(out / 'report.html').stat().st_size / 2**20:.2f} MiB"),
            ("counts", json.dumps(s["counts"])), ("L0 in / past context", f"{s['l0_in_context']:.1f} / {s['l0_past_context']:.1f}"),
            ("verdicts", ", ".join(f"{k} {v['verdict']}" for k, v in s["findings"].items()))]
    print("| quantity | value |\n|---|---|")
    for k, v in rows:
        print(f"| {k} | {v} |")
    if args.csv:
        with open(args.csv, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["quantity", "value"])
            w.writerows(rows)


def gemm_floor(device: torch.device, repeats: int = 3) -> float:
    """Best of ``repeats`` fp32 GEMMs of GPT-2 small's W_E by res-jb's W_enc, on ``device`` (random values)."""
    x, w = torch.randn(50257, 768, device=device), torch.randn(768, 24576, device=device)
    best = float("inf")
    for _ in range(repeats if device.type == "cuda" else 1):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        x @ w
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return best


if __name__ == "__main__":
    main()
