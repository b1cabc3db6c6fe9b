"""Re-run the command recorded in the bundled SAE's cfg.json and compare the result with the shipped
SAE.

The recorded ``--token-weights`` file is replaced by the copy shipped beside the SAE (the same
tensor) and ``--out`` by a temporary folder. Prints a table: in-context FVU and L0 of both, as
``posfeat eval`` measures them (2048 tokens from the shipped token distribution, seed 0), their
ratio, and whether the weights are bit-for-bit identical.

    python benchmarks/reproduce_bundled_sae.py
"""

from __future__ import annotations

import json
import shlex
import tempfile
import time
from pathlib import Path

import torch

from posfeat import load_embeddings, read_sae_folder, reconstruction_by_position, sample_tokens
from posfeat.analyses.evaluation import range_means
from posfeat.cli import main as cli
from posfeat.io import BUNDLED_SAE_DIR
from posfeat.io.tokens import TOKEN_WEIGHTS_FILE, load_token_weights


def in_context(emb, sae, weights) -> dict[str, float]:
    sample = sample_tokens(emb, 2048, weights=weights, seed=0)
    return range_means(
        reconstruction_by_position(emb, sae, sample, range(sae.context_size)), 0, sae.context_size
    )


def main() -> None:
    cfg = json.loads((BUNDLED_SAE_DIR / "cfg.json").read_text())
    argv = shlex.split(cfg["posfeat_training"]["command"])[1:]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "sae"
        argv[argv.index("--token-weights") + 1] = str(BUNDLED_SAE_DIR / TOKEN_WEIGHTS_FILE)
        argv[argv.index("--out") + 1] = str(out)
        t0 = time.time()
        assert cli(argv) == 0
        secs = time.time() - t0
        emb = load_embeddings("minilm")
        weights = load_token_weights(BUNDLED_SAE_DIR / TOKEN_WEIGHTS_FILE, emb.d_vocab)
        shipped, again = read_sae_folder(BUNDLED_SAE_DIR), read_sae_folder(out)
        a, b = in_context(emb, shipped, weights), in_context(emb, again, weights)
        same = all(
            torch.equal(getattr(shipped, n), getattr(again, n))
            for n in ("W_enc", "W_dec", "b_enc", "b_dec")
        )
    rows = [
        ("command", "posfeat " + shlex.join(argv)),
        ("training time", f"{secs:.0f} s"),
        ("in-context FVU, shipped", f"{a['fvu']:.4f}"),
        ("in-context FVU, re-run", f"{b['fvu']:.4f}"),
        ("ratio re-run / shipped", f"{b['fvu'] / a['fvu']:.4f}"),
        ("in-context L0, shipped / re-run", f"{a['l0']:.1f} / {b['l0']:.1f}"),
        ("weights bit-for-bit identical", str(same)),
    ]
    print("| quantity | value |\n|---|---|")
    for k, v in rows:
        print(f"| {k} | {v} |")


if __name__ == "__main__":
    main()
