"""Benchmark: exact whole-grid feature statistics vs the GEMM floor and brute-force enumeration.

Builds a random GPT-2-shaped instance (d_vocab 50257, n_ctx 1024, d_model 768, d_sae 24576,
ReLU), times ``feature_stats`` over the whole grid, its peak resident memory, the GEMM
``W_E @ W_enc`` alone (the floor), and brute-force enumeration on a slice of the grid in the same
run, scaled per (token, position, feature) to the whole grid. ``--quick`` runs a small size.

    python benchmarks/bench_grid_stats.py [--quick]
"""

from __future__ import annotations

import argparse
import resource
import time

import torch

from posfeat import SAE, Embeddings, brute_force_stats, feature_stats

SIZES = {
    "gpt2": {"d_vocab": 50257, "n_ctx": 1024, "d_model": 768, "d_sae": 24576},
    "quick": {"d_vocab": 4096, "n_ctx": 256, "d_model": 128, "d_sae": 2048},
}


def random_instance(d_vocab: int, n_ctx: int, d_model: int, d_sae: int, seed: int = 0) -> tuple[Embeddings, SAE]:
    """A random model/SAE pair with GPT-2-like scales and a few percent of features firing."""
    g = torch.Generator().manual_seed(seed)
    W_E = torch.randn(d_vocab, d_model, generator=g) * 0.14
    W_pos = torch.randn(n_ctx, d_model, generator=g) * 0.05
    W_enc = torch.randn(d_model, d_sae, generator=g) / d_model**0.5
    W_dec = W_enc.T.contiguous()
    b_enc = -0.2 * torch.rand(d_sae, generator=g)
    b_dec = torch.zeros(d_model)
    return Embeddings(W_E, W_pos, name=f"random {d_vocab}x{n_ctx}"), SAE.from_arrays(W_enc, W_dec, b_enc, b_dec)


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small instance, under a minute")
    ap.add_argument("--bf-tokens", type=int, default=8, help="tokens in the brute-force slice")
    ap.add_argument("--bf-positions", type=int, default=64, help="positions in the brute-force slice")
    args = ap.parse_args()
    size = SIZES["quick" if args.quick else "gpt2"]
    emb, sae = random_instance(**size)
    rss_before = peak_rss_gib()

    feature_stats(emb, sae, positions=range(4), tokens=range(64))  # compile the kernel first
    t0 = time.perf_counter()
    stats = feature_stats(emb, sae)
    t_fast = time.perf_counter() - t0
    rss = peak_rss_gib()

    t0 = time.perf_counter()
    _ = emb.W_E @ sae.W_enc
    t_gemm = time.perf_counter() - t0

    n_t, n_p = min(args.bf_tokens, size["d_vocab"]), min(args.bf_positions, size["n_ctx"])
    t0 = time.perf_counter()
    brute_force_stats(emb, sae, positions=range(n_p), tokens=range(n_t), dtype=torch.float32, token_chunk=1)
    t_bf_slice = time.perf_counter() - t0
    full = size["d_vocab"] * size["n_ctx"] * size["d_sae"]
    per_unit = t_bf_slice / (n_t * n_p * size["d_sae"])
    t_bf_full = per_unit * full

    rows = [
        ("instance", f"d_vocab {size['d_vocab']}, n_ctx {size['n_ctx']}, d_model {size['d_model']}, d_sae {size['d_sae']} (ReLU)"),
        ("grid activations", f"{full:.3e}"),
        ("threads", str(torch.get_num_threads())),
        ("feature_stats, whole grid", f"{t_fast:.1f} s"),
        ("peak RSS (process)", f"{rss:.2f} GiB (instance alone {rss_before:.2f} GiB)"),
        ("GEMM W_E @ W_enc (floor)", f"{t_gemm:.1f} s"),
        ("feature_stats / floor", f"{t_fast / t_gemm:.2f}x"),
        ("brute force slice", f"{n_t} tok x {n_p} pos x {size['d_sae']} feat in {t_bf_slice:.2f} s"),
        ("brute force, scaled to grid", f"{t_bf_full:.0f} s ({t_bf_full / 3600:.2f} h)"),
        ("speed-up per unit of work", f"{t_bf_full / t_fast:.0f}x"),
        ("mean firing fraction", f"{stats.fire.mean():.4f}"),
    ]
    w = max(len(r[0]) for r in rows)
    print(f"| {'quantity':<{w}} | value |\n|{'-' * (w + 2)}|-------|")
    for k, v in rows:
        print(f"| {k:<{w}} | {v} |")


if __name__ == "__main__":
    main()
