"""Benchmark: the README's GPT-2 command, offline, on a full-size GPT-2-shaped stand-in (see gpt2_standin.py).

Builds the stand-in in the real hub-cache layout, then runs, with HF_HUB_OFFLINE=1,

    posfeat analyze --model gpt2 --sae gpt2-small-res-jb/blocks.0.hook_resid_pre --device DEVICE --out OUT

in a fresh process, and prints the stage times (summary.json's timings), the wall time, the peak
resident memory of that process, the size of report.html and what it found. The numbers are the
stand-in's: its weights are random, of the real shapes.

    python benchmarks/bench_analyze.py [--device cpu|cuda] [--cache DIR] [--embeddings-only]
"""

from __future__ import annotations

import argparse
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
           "--device", args.device, "--out", str(out), *args.extra]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache)}
    t0 = time.time()
    proc = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, text=True)
    wall = time.time() - t0
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20
    if proc.returncode != 0:
        sys.exit(f"posfeat analyze failed with status {proc.returncode}")
    s = json.loads((out / "summary.json").read_text())
    device = torch.cuda.get_device_name(0) if args.device == "cuda" else f"CPU, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads"
    rows = [("device", device), ("stand-in built in", f"{built:.0f} s"), ("command", "posfeat " + " ".join(cmd[3:]).replace(str(out), "OUT")),
            *[(f"stage: {k}", f"{v:.1f} s") for k, v in s["timings"].items()], ("wall time (process)", f"{wall:.1f} s"),
            ("peak RSS (process)", f"{peak:.2f} GiB"), ("report.html", f"{(out / 'report.html').stat().st_size / 2**20:.2f} MiB"),
            ("counts", json.dumps(s["counts"])), ("L0 in / past context", f"{s['l0_in_context']:.1f} / {s['l0_past_context']:.1f}"),
            ("verdicts", ", ".join(f"{k} {v['verdict']}" for k, v in s["findings"].items()))]
    print("| quantity | value |\n|---|---|")
    for k, v in rows:
        print(f"| {k} | {v} |")


if __name__ == "__main__":
    main()
