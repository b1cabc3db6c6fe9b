"""Benchmark: exact whole-grid feature statistics against the GEMM floor and brute-force
enumeration, on any device.

Builds a random GPT-2-shaped instance (d_vocab 50257, n_ctx 1024, d_model 768, d_sae 24576, ReLU) on
the device, times ``feature_stats`` over the whole grid, its peak memory (resident for the process;
allocated on the GPU), the fp32 GEMM ``W_E @ W_enc`` alone (the floor), and brute-force enumeration
on a slice of the grid in the same run, scaled per (token, position, feature) to the whole grid.
``--quick`` runs a small size. On the CPU the floor's time includes faulting in the fresh pages of
its result (4.9 GB at GPT-2's size; on some virtual machines seconds of system time), as any caller
of ``W_E @ W_enc`` pays; the GEMM into a preallocated, touched output is printed beside it (the
arithmetic alone). The engine and the GEMM are timed alternately ``--repeats`` times in
one process (best of each; on a busy CPU the process CPU time is printed too, and its ratio, which
other processes disturb less than wall time).

    python benchmarks/bench_grid_stats.py [--quick] [--sparse] [--device cpu|cuda] [--threads N]
    [--backend auto|numba|torch|triton]
                                          [--screen auto|on|off] [--repeats N] [--csv FILE]
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import resource
import time

import torch

from posfeat import SAE, Embeddings, brute_force_stats, feature_stats
from posfeat.engine.kernel import set_threads

from machine import cpu_identity  # benchmarks/machine.py

SIZES = {
    "gpt2": {"d_vocab": 50257, "n_ctx": 1024, "d_model": 768, "d_sae": 24576},
    "quick": {"d_vocab": 4096, "n_ctx": 256, "d_model": 128, "d_sae": 2048},
    "tiny": {
        "d_vocab": 512,
        "n_ctx": 32,
        "d_model": 32,
        "d_sae": 64,
    },  # for checking the script itself (e.g. Triton's interpreter)
}


def random_instance(
    d_vocab: int, n_ctx: int, d_model: int, d_sae: int, seed: int = 0, sparse: bool = False
) -> tuple[Embeddings, SAE]:
    """A random model/SAE pair of GPT-2's shapes (built on the CPU); it fires on about 27% of inputs
    (the table prints the mean firing fraction), far denser than a trained SAE such as res-jb (L0
    about 50 of 24576); ``sparse``: encoder biases about 2.9 standard deviations below zero, so it
    fires on about 0.2% of inputs, as res-jb does."""
    g = torch.Generator().manual_seed(seed)
    W_E = torch.randn(d_vocab, d_model, generator=g) * 0.14
    W_pos = torch.randn(n_ctx, d_model, generator=g) * 0.05
    W_enc = torch.randn(d_model, d_sae, generator=g) / d_model**0.5
    b_enc = (
        (-0.43 - 0.05 * torch.rand(d_sae, generator=g))
        if sparse
        else -0.2 * torch.rand(d_sae, generator=g)
    )
    return Embeddings(W_E, W_pos, name=f"random {d_vocab}x{n_ctx}"), SAE.from_arrays(
        W_enc, W_enc.T.contiguous(), b_enc, torch.zeros(d_model)
    )


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device: torch.device, repeats: int = 1) -> float:
    return timed_both(fn, device, repeats)[0]


def timed_both(fn, device: torch.device, repeats: int = 1) -> tuple[float, float]:
    """Best wall time and best process CPU time (all threads) of ``repeats`` calls."""
    best, best_cpu = float("inf"), float("inf")
    for _ in range(repeats):
        sync(device)
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        sync(device)
        best, best_cpu = (
            min(best, time.perf_counter() - t0),
            min(best_cpu, time.process_time() - c0),
        )
    return best, best_cpu


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small instance, under a minute")
    ap.add_argument(
        "--tiny", action="store_true", help="a tiny instance: checks the script, measures nothing"
    )
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads for torch and the numba kernel (default: all cores)",
    )
    ap.add_argument("--backend", default="auto", choices=["auto", "numba", "torch", "triton"])
    ap.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="time the engine and the GEMM alternately this many times (best of each)",
    )
    ap.add_argument("--csv", default=None, help="also write the table to this CSV file")
    ap.add_argument(
        "--sparse",
        action="store_true",
        help="a sparse SAE (fires on about 0.2%% of inputs, as res-jb) instead of a dense one",
    )
    ap.add_argument(
        "--screen",
        default="auto",
        choices=["auto", "on", "off"],
        help="the numba path's bfloat16 screen (engine/screen.py)",
    )
    ap.add_argument("--bf-tokens", type=int, default=8, help="tokens in the brute-force slice")
    ap.add_argument(
        "--bf-positions", type=int, default=64, help="positions in the brute-force slice"
    )
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    set_threads(args.threads)
    device = torch.device(args.device)
    size = SIZES["tiny" if args.tiny else "quick" if args.quick else "gpt2"]
    emb, sae = random_instance(**size, sparse=args.sparse)
    screen = {"auto": None, "on": True, "off": False}[args.screen]
    emb, sae = emb.to(device), sae.to(device)
    feature_stats(
        emb, sae, positions=range(4), tokens=range(64), backend=args.backend
    )  # compile / warm up
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    stats = None

    def run() -> None:
        nonlocal stats
        stats = feature_stats(emb, sae, backend=args.backend, screen=screen)

    t_fast = t_gemm = c_fast = c_gemm = float("inf")
    memory = ""
    for _ in range(max(1, args.repeats)):  # alternate, so both see the same load
        w, c = timed_both(run, device)
        t_fast, c_fast = min(t_fast, w), min(c_fast, c)
        memory = memory or (
            f"{torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB allocated on the GPU"
            if device.type == "cuda"
            else f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB resident "
            "(process, instance included)"
        )
        w, c = timed_both(
            lambda: emb.W_E @ sae.W_enc, device, repeats=3 if device.type == "cuda" else 1
        )
        t_gemm, c_gemm = min(t_gemm, w), min(c_gemm, c)
    t_into = float("inf")
    if device.type == "cpu":  # the arithmetic alone: no fresh pages for the 4.9 GB result to fault
        buf = torch.empty(size["d_vocab"], size["d_sae"]).fill_(0.0)
        for _ in range(max(1, args.repeats)):
            t_into = min(t_into, timed(lambda: torch.mm(emb.W_E, sae.W_enc, out=buf), device))
        del buf
    n_t, n_p = min(args.bf_tokens, size["d_vocab"]), min(args.bf_positions, size["n_ctx"])
    t_bf = timed(
        lambda: brute_force_stats(
            emb, sae, positions=range(n_p), tokens=range(n_t), dtype=torch.float32, token_chunk=1
        ),
        device,
    )
    full = size["d_vocab"] * size["n_ctx"] * size["d_sae"]
    t_bf_full = t_bf / (n_t * n_p * size["d_sae"]) * full
    rows = [
        ("device", device_name(device)),
        *(
            cpu_identity()
            if device.type == "cpu"
            else [("threads", f"torch {torch.get_num_threads()}")]
        ),
        ("backend", f"{args.backend}, screen {args.screen}"),
        (
            "instance",
            f"d_vocab {size['d_vocab']}, n_ctx {size['n_ctx']}, d_model {size['d_model']}, d_sae "
            f"{size['d_sae']} "
            f"(ReLU, {'sparse' if args.sparse else 'dense'})",
        ),
        ("grid activations", f"{full:.3e}"),
        ("feature_stats, whole grid", f"{t_fast:.2f} s"),
        ("peak memory (first engine run, before any GEMM of the floor)", memory),
        ("GEMM W_E @ W_enc, fp32 (the floor)", f"{t_gemm:.3f} s"),
        ("feature_stats / floor", f"{t_fast / t_gemm:.2f}x"),
        *(
            [
                (
                    "GEMM into a preallocated output (its arithmetic, no page faults); ratio",
                    f"{t_into:.3f} s; feature_stats {t_fast / t_into:.2f}x",
                )
            ]
            if device.type == "cpu"
            else []
        ),
        *(
            [
                (
                    "process CPU time: feature_stats, GEMM, ratio",
                    f"{c_fast:.2f} s, {c_gemm:.2f} s, {c_fast / c_gemm:.2f}x",
                )
            ]
            if device.type == "cpu"
            else []
        ),
        ("repeats (best of each)", str(max(1, args.repeats))),
        ("brute force slice", f"{n_t} tok x {n_p} pos x {size['d_sae']} feat in {t_bf:.2f} s"),
        ("brute force, scaled to the grid", f"{t_bf_full:.0f} s ({t_bf_full / 3600:.2f} h)"),
        ("speed-up per unit of work", f"{t_bf_full / t_fast:.0f}x"),
        ("mean firing fraction", f"{stats.fire.mean():.4f}"),
    ]
    w = max(len(r[0]) for r in rows)
    print(f"| {'quantity':<{w}} | value |\n|{'-' * (w + 2)}|-------|")
    for k, v in rows:
        print(f"| {k:<{w}} | {v} |")
    if args.csv:
        with open(args.csv, "w", newline="") as fh:
            out = csv.writer(fh)
            out.writerow(["quantity", "value"])
            out.writerows(rows)


if __name__ == "__main__":
    main()
