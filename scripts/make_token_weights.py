"""Make a text-like token distribution for a model from wordfreq's English word frequencies.

Each of the most frequent English words (wordfreq, ``top_n``) is pushed through the model's own
tokenizer (with a leading space variant for byte-level BPE); its frequency is added to every
token it produces. A small uniform floor keeps every token in the distribution.

    pip install 'posfeat[train]'
    python scripts/make_token_weights.py --model minilm --out token_weights.safetensors
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from safetensors.torch import save_file
from tokenizers import Tokenizer
from wordfreq import top_n_list, word_frequency

from posfeat.models import MODEL_ALIASES, bundled_model_dir


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="minilm", help="'minilm' or a folder holding tokenizer.json")
    ap.add_argument("--top-n", type=int, default=50000)
    ap.add_argument(
        "--floor",
        type=float,
        default=0.02,
        help="share of the mass spread uniformly over all tokens",
    )
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    folder = (
        bundled_model_dir()
        if args.model == "minilm"
        else Path(MODEL_ALIASES.get(args.model, args.model))
    )
    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tok.no_padding()
    tok.no_truncation()
    vocab = tok.get_vocab_size()
    w = torch.zeros(vocab, dtype=torch.float64)
    for word in top_n_list("en", args.top_n):
        f = word_frequency(word, "en")
        ids = tok.encode(word, add_special_tokens=False).ids
        for i in ids:
            w[i] += f
    w = (1 - args.floor) * w / w.sum() + args.floor / vocab
    save_file({"weights": w.float()}, args.out)
    top = torch.topk(w, 10).indices.tolist()
    print(f"wrote {args.out}: {vocab} weights; top tokens {[tok.id_to_token(i) for i in top]}")


if __name__ == "__main__":
    main()
