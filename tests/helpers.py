"""Shared builders for the tests: tiny random and planted pairs, model and SAE folders, hub caches
in the real layout."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file
from tokenizers import Tokenizer, decoders, models, pre_tokenizers

from posfeat import SAE, Embeddings
from posfeat.io.sae_folders import write_sae_folder

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "tests" / "data"
GPT2_WPE = DATA / "gpt2_wpe_rows0-63.npy"
GPT2_TOKENIZER = DATA / "gpt2-tokenizer"


def random_pair(
    d_vocab: int = 40,
    n_ctx: int = 12,
    d_model: int = 8,
    d_sae: int = 16,
    seed: int = 0,
    threshold: bool = False,
    k: int | None = None,
) -> tuple[Embeddings, SAE]:
    g = torch.Generator().manual_seed(seed)
    emb = Embeddings(
        torch.randn(d_vocab, d_model, generator=g),
        torch.randn(n_ctx, d_model, generator=g) * 0.7,
        tokens=[f"tok{i}" for i in range(d_vocab)],
        name="random",
    )
    sae = SAE.from_arrays(
        torch.randn(d_model, d_sae, generator=g),
        torch.randn(d_sae, d_model, generator=g),
        torch.randn(d_sae, generator=g) - 0.5,
        torch.randn(d_model, generator=g) * 0.1,
        threshold=torch.rand(d_sae, generator=g) if threshold else None,
        k=k,
        context_size=max(1, n_ctx // 2),
        hook_name="blocks.0.hook_resid_pre",
        name="random-sae",
    )
    return emb, sae


def planted_pair(
    n_ctx: int = 48, context: int = 32, n_tok: int = 60, d_model: int = 24, seed: int = 0
):
    """A synthetic model with a helix-shaped W_pos and random W_E orthogonal to it, and an SAE with
    known positional features (each tuned to a window of positions) and known token features.

    Returns ``emb, sae, truth`` where ``truth`` maps feature -> ("positional", (start, end)) or
    ("semantic", token)."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(d_model, d_model)))
    e_pos, e_tok = q[:, :3], q[:, 3:]  # W_pos lives in 3 dims, W_E in the rest
    p = np.arange(n_ctx)
    theta = 2 * np.pi * p / (1.6 * context)
    helix = np.stack([np.cos(theta), np.sin(theta), p / context], 1)  # [n_ctx, 3]
    W_pos = helix @ e_pos.T
    W_E = rng.normal(size=(n_tok, d_model - 3)) @ e_tok.T
    enc, dec, bias, truth = [], [], [], {}
    # positional features: direction = W_pos row at the window centre; bias puts the window at
    # the positions whose cosine with the centre row exceeds a cut.
    Wp_n = W_pos / np.linalg.norm(W_pos, axis=1, keepdims=True)
    for centre in (2, 8, 14, 20, 26):
        d = Wp_n[centre]
        proj = W_pos[:context] @ d
        cut = np.sort(proj)[-5]  # fires on the 5 highest-projection positions within the context
        mid = (np.sort(proj)[-5] + np.sort(proj)[-6]) / 2
        enc.append(d)
        dec.append(d)
        bias.append(-mid)
        window = np.nonzero(proj >= cut)[0]
        truth[len(enc) - 1] = ("positional", (int(window.min()), int(window.max())))
    # token features: direction = one token's embedding (orthogonal to positions)
    for t in (3, 17, 41):
        d = W_E[t] / np.linalg.norm(W_E[t])
        proj = W_E @ d
        second = np.sort(proj)[-2]
        enc.append(d)
        dec.append(d)
        bias.append(-(proj[t] + second) / 2)
        truth[len(enc) - 1] = ("semantic", t)
    emb = Embeddings(
        W_E.astype(np.float32),
        W_pos.astype(np.float32),
        tokens=[f"t{i}" for i in range(n_tok)],
        name="planted",
    )
    sae = SAE.from_arrays(
        np.array(enc).T.astype(np.float32),
        np.array(dec).astype(np.float32),
        np.array(bias, dtype=np.float32),
        np.zeros(d_model, dtype=np.float32),
        apply_b_dec_to_input=False,
        context_size=context,
        hook_name="blocks.0.hook_resid_pre",
        name="planted-sae",
    )
    return emb, sae, truth


def write_planted_folders(tmp_path: Path) -> tuple[Path, Path]:
    """The planted pair saved as a GPT-2-layout checkpoint folder and a SAELens-format SAE
    folder."""
    emb, sae, _ = planted_pair()
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text(
        json.dumps(
            {
                "model_type": "gpt2",
                "n_embd": emb.d_model,
                "n_positions": emb.n_ctx,
                "vocab_size": emb.d_vocab,
            }
        )
    )
    save_file({"wte.weight": emb.W_E, "wpe.weight": emb.W_pos}, str(model / "model.safetensors"))
    write_sae_folder(sae, tmp_path / "sae", {"model_name": str(model)})
    return model, tmp_path / "sae"


# ---------------------------------------------------------------------------- hub caches in the
# real layout
"""``<cache>/models--{org}--{name}/blobs/<sha256>``, ``snapshots/<commit>/<path>`` symlinks to blobs,
and ``refs/main`` holding the commit, as ``huggingface_hub`` writes them."""

COMMIT = "607a30d783dfa663caf39e06633721c8d4cfcd7e"


def add_file(cache: Path, repo_id: str, path: str, data: bytes, commit: str = COMMIT) -> Path:
    root = cache / ("models--" + repo_id.replace("/", "--"))
    sha = hashlib.sha256(data).hexdigest()
    blob = root / "blobs" / sha
    blob.parent.mkdir(parents=True, exist_ok=True)
    blob.write_bytes(data)
    link = root / "snapshots" / commit / path
    link.parent.mkdir(parents=True, exist_ok=True)
    if link.exists() or link.is_symlink():
        link.unlink()
    os.symlink(os.path.relpath(blob, link.parent), link)
    (root / "refs").mkdir(exist_ok=True)
    (root / "refs" / "main").write_text(commit)
    return link


def safetensors_bytes(tensors: dict[str, torch.Tensor], tmp: Path) -> bytes:
    f = tmp / "x.safetensors"
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(f))
    data = f.read_bytes()
    f.unlink()
    return data


def byte_level_tokenizer_json(tokens: list[str]) -> bytes:
    """A byte-level BPE tokenizer.json (GPT-2 style: 'Ġ' marks a leading space)."""
    tok = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    return tok.to_str().encode()


GPT2_TOKENS = [
    "!",
    "Ġthe",
    "Ġcat",
    "ing",
    "Ġ\u00e2\u0128\u0134",
    "Ġsat",
    "Ġon",
    "Ġmat",
    "<|endoftext|>",
    "a",
    "b",
    "c",
]


def build_gpt2_cache(
    cache: Path,
    tmp: Path,
    d_vocab: int = 12,
    n_ctx: int = 160,
    d_model: int = 8,
    d_sae: int = 16,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """``openai-community/gpt2`` and
    ``jbloom/GPT2-Small-SAEs-Reformatted/blocks.0.hook_resid_pre``."""
    g = torch.Generator().manual_seed(seed)
    wte = torch.randn(d_vocab, d_model, generator=g)
    wpe = torch.randn(n_ctx, d_model, generator=g) * 0.3
    config = {
        "activation_function": "gelu_new",
        "architectures": ["GPT2LMHeadModel"],
        "attn_pdrop": 0.1,
        "bos_token_id": d_vocab - 4,
        "embd_pdrop": 0.1,
        "eos_token_id": d_vocab - 4,
        "initializer_range": 0.02,
        "layer_norm_epsilon": 1e-05,
        "model_type": "gpt2",
        "n_ctx": n_ctx,
        "n_embd": d_model,
        "n_head": 2,
        "n_layer": 1,
        "n_positions": n_ctx,
        "resid_pdrop": 0.1,
        "summary_activation": None,
        "summary_first_dropout": 0.1,
        "summary_proj_to_labels": True,
        "summary_type": "cls_index",
        "summary_use_proj": True,
        "task_specific_params": {"text-generation": {"do_sample": True, "max_length": 50}},
        "vocab_size": d_vocab,
    }
    repo = "openai-community/gpt2"
    add_file(cache, repo, "config.json", json.dumps(config).encode())
    add_file(
        cache,
        repo,
        "model.safetensors",
        safetensors_bytes(
            {
                "wte.weight": wte,
                "wpe.weight": wpe,
                "h.0.ln_1.weight": torch.ones(d_model),
                "h.0.attn.c_attn.weight": torch.zeros(d_model, 3 * d_model),
                "ln_f.weight": torch.ones(d_model),
            },
            tmp,
        ),
    )
    add_file(cache, repo, "tokenizer.json", byte_level_tokenizer_json(GPT2_TOKENS[:d_vocab]))
    W_enc = torch.randn(d_model, d_sae, generator=g)
    W_dec = torch.randn(d_sae, d_model, generator=g)
    b_enc = torch.randn(d_sae, generator=g)
    b_dec = torch.randn(d_model, generator=g) * 0.1
    cfg = {
        "model_name": "gpt2-small",
        "hook_point": "blocks.0.hook_resid_pre",
        "hook_point_layer": 0,
        "hook_point_head_index": None,
        "dataset_path": "Skylion007/openwebtext",
        "is_dataset_tokenized": False,
        "context_size": 128,
        "use_cached_activations": False,
        "cached_activations_path": "activations/Skylion007_openwebtext/gpt2-small/blocks.0.hook_resid_pre",
        "d_in": d_model,
        "n_batches_in_buffer": 128,
        "total_training_tokens": 300000000,
        "store_batch_size": 32,
        "device": "mps",
        "seed": 42,
        "dtype": "torch.float32",
        "b_dec_init_method": "geometric_median",
        "expansion_factor": d_sae // d_model,
        "from_pretrained_path": None,
        "l1_coefficient": 8e-05,
        "lr": 0.0004,
        "lr_scheduler_name": None,
        "lr_warm_up_steps": 5000,
        "train_batch_size": 4096,
        "use_ghost_grads": False,
        "feature_sampling_window": 1000,
        "feature_sampling_method": None,
        "resample_batches": 1028,
        "feature_reinit_scale": 0.2,
        "dead_feature_window": 5000,
        "dead_feature_estimation_method": "no_fire",
        "dead_feature_threshold": 1e-08,
        "log_to_wandb": True,
        "wandb_project": "mats_sae_training_gpt2_small_resid_pre_5",
        "wandb_entity": None,
        "wandb_log_frequency": 100,
        "n_checkpoints": 10,
        "checkpoint_path": "checkpoints/y1t51byy",
        "d_sae": d_sae,
        "tokens_per_buffer": 67108864,
        "run_name": f"{d_sae}-L1-8e-05-LR-0.0004-Tokens-3.000e+08",
    }
    sae_repo = "jbloom/GPT2-Small-SAEs-Reformatted"
    folder = "blocks.0.hook_resid_pre"
    add_file(cache, sae_repo, f"{folder}/cfg.json", json.dumps(cfg).encode())
    add_file(
        cache,
        sae_repo,
        f"{folder}/sae_weights.safetensors",
        safetensors_bytes({"W_enc": W_enc, "W_dec": W_dec, "b_enc": b_enc, "b_dec": b_dec}, tmp),
    )
    add_file(
        cache,
        sae_repo,
        f"{folder}/sparsity.safetensors",
        safetensors_bytes({"sparsity": torch.full((d_sae,), -3.0)}, tmp),
    )
    return {
        "wte": wte.numpy(),
        "wpe": wpe.numpy(),
        "W_enc": W_enc.numpy(),
        "W_dec": W_dec.numpy(),
        "b_enc": b_enc.numpy(),
        "b_dec": b_dec.numpy(),
    }


def gpt2_tokenizer_json() -> bytes:
    """GPT-2's real tokenizer.json, built from the real vocabulary and merges in tests/data
    (byte-level BPE)."""
    vocab = json.loads((GPT2_TOKENIZER / "encoder.json").read_text())
    merges = [
        tuple(line.split())
        for line in (GPT2_TOKENIZER / "vocab.bpe").read_text().splitlines()[1:]
        if line.strip()
    ]
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    return tok.to_str().encode()
