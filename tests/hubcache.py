"""Build a Hugging Face hub cache in the exact on-disk layout, with tiny tensors under the real names.

``<cache>/models--{org}--{name}/blobs/<sha256>``, ``snapshots/<commit>/<path>`` symlinks to blobs,
and ``refs/main`` holding the commit, as ``huggingface_hub`` writes them.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file
from tokenizers import Tokenizer, decoders, models, pre_tokenizers

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


GPT2_TOKENS = ["!", "Ġthe", "Ġcat", "ing", "Ġ\u00e2\u0128\u0134", "Ġsat", "Ġon", "Ġmat", "<|endoftext|>", "a", "b", "c"]


def build_gpt2_cache(cache: Path, tmp: Path, d_vocab: int = 12, n_ctx: int = 160, d_model: int = 8, d_sae: int = 16,
                     seed: int = 0) -> dict[str, np.ndarray]:
    """``openai-community/gpt2`` and ``jbloom/GPT2-Small-SAEs-Reformatted/blocks.0.hook_resid_pre``."""
    g = torch.Generator().manual_seed(seed)
    wte = torch.randn(d_vocab, d_model, generator=g)
    wpe = torch.randn(n_ctx, d_model, generator=g) * 0.3
    config = {"activation_function": "gelu_new", "architectures": ["GPT2LMHeadModel"], "attn_pdrop": 0.1, "bos_token_id": d_vocab - 4,
              "embd_pdrop": 0.1, "eos_token_id": d_vocab - 4, "initializer_range": 0.02, "layer_norm_epsilon": 1e-05,
              "model_type": "gpt2", "n_ctx": n_ctx, "n_embd": d_model, "n_head": 2, "n_layer": 1, "n_positions": n_ctx,
              "resid_pdrop": 0.1, "summary_activation": None, "summary_first_dropout": 0.1, "summary_proj_to_labels": True,
              "summary_type": "cls_index", "summary_use_proj": True, "task_specific_params": {"text-generation": {"do_sample": True,
              "max_length": 50}}, "vocab_size": d_vocab}
    repo = "openai-community/gpt2"
    add_file(cache, repo, "config.json", json.dumps(config).encode())
    add_file(cache, repo, "model.safetensors", safetensors_bytes({
        "wte.weight": wte, "wpe.weight": wpe, "h.0.ln_1.weight": torch.ones(d_model), "h.0.attn.c_attn.weight": torch.zeros(d_model, 3 * d_model),
        "ln_f.weight": torch.ones(d_model)}, tmp))
    add_file(cache, repo, "tokenizer.json", byte_level_tokenizer_json(GPT2_TOKENS[:d_vocab]))
    W_enc = torch.randn(d_model, d_sae, generator=g)
    W_dec = torch.randn(d_sae, d_model, generator=g)
    b_enc = torch.randn(d_sae, generator=g)
    b_dec = torch.randn(d_model, generator=g) * 0.1
    cfg = {"model_name": "gpt2-small", "hook_point": "blocks.0.hook_resid_pre", "hook_point_layer": 0, "hook_point_head_index": None,
           "dataset_path": "Skylion007/openwebtext", "is_dataset_tokenized": False, "context_size": 128, "use_cached_activations": False,
           "cached_activations_path": "activations/Skylion007_openwebtext/gpt2-small/blocks.0.hook_resid_pre", "d_in": d_model,
           "n_batches_in_buffer": 128, "total_training_tokens": 300000000, "store_batch_size": 32, "device": "mps", "seed": 42,
           "dtype": "torch.float32", "b_dec_init_method": "geometric_median", "expansion_factor": d_sae // d_model,
           "from_pretrained_path": None, "l1_coefficient": 8e-05, "lr": 0.0004, "lr_scheduler_name": None, "lr_warm_up_steps": 5000,
           "train_batch_size": 4096, "use_ghost_grads": False, "feature_sampling_window": 1000, "feature_sampling_method": None,
           "resample_batches": 1028, "feature_reinit_scale": 0.2, "dead_feature_window": 5000, "dead_feature_estimation_method": "no_fire",
           "dead_feature_threshold": 1e-08, "log_to_wandb": True, "wandb_project": "mats_sae_training_gpt2_small_resid_pre_5",
           "wandb_entity": None, "wandb_log_frequency": 100, "n_checkpoints": 10, "checkpoint_path": "checkpoints/y1t51byy",
           "d_sae": d_sae, "tokens_per_buffer": 67108864, "run_name": f"{d_sae}-L1-8e-05-LR-0.0004-Tokens-3.000e+08"}
    sae_repo = "jbloom/GPT2-Small-SAEs-Reformatted"
    folder = "blocks.0.hook_resid_pre"
    add_file(cache, sae_repo, f"{folder}/cfg.json", json.dumps(cfg).encode())
    add_file(cache, sae_repo, f"{folder}/sae_weights.safetensors",
             safetensors_bytes({"W_enc": W_enc, "W_dec": W_dec, "b_enc": b_enc, "b_dec": b_dec}, tmp))
    add_file(cache, sae_repo, f"{folder}/sparsity.safetensors", safetensors_bytes({"sparsity": torch.full((d_sae,), -3.0)}, tmp))
    return {"wte": wte.numpy(), "wpe": wpe.numpy(), "W_enc": W_enc.numpy(), "W_dec": W_dec.numpy(), "b_enc": b_enc.numpy(),
            "b_dec": b_dec.numpy()}
