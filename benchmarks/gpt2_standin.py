"""A full-size stand-in for GPT-2 small and gpt2-small-res-jb, in the real Hugging Face hub-cache
layout.

Nothing here is GPT-2's or res-jb's trained weights (the hub is out of reach): random weights of the
real shapes under the real file and tensor names, so that posfeat's loaders, engine and report run
at the note's true scale. What is real: the tokenizer (GPT-2's vocabulary and merges, from
tests/data), the config files' keys, and W_pos rows 0..63 (GPT-2's own, from tests/data). Rows
64..1023 continue them smoothly along their top three principal directions (plus noise of the real
rows' residual size); W_E is Gaussian with GPT-2's per-entry scale; the SAE is Gaussian with 48
planted positional features (encoder along W_pos rows of positions 0..127) and a bias giving an L0
of a few dozen, like res-jb's layer 0. Numbers measured on it are the stand-in's, never GPT-2's.

Why ``posfeat analyze`` finds only about 8 of the 48 planted features positional (measured with
posfeat's exact statistics on the 48 alone: 8 positional, 36 mixed, 4 semantic): each planted
feature fires only at the ~4 positions whose W_pos rows lie nearest its direction, where the
position part of its pre-activation clears the bias by about as much as the spread the Gaussian
W_E adds along that same direction (std 0.28). Whether it fires there therefore depends on the
token, and most of its variance over the grid is token x position interaction, so the variance
rule calls it mixed. Widening each window to 24 positions makes 13 positional; making them all
positional would need W_E with less spread along W_pos's directions than GPT-2's per-entry scale
gives a random W_E. That is left as it is: the stand-in is for running posfeat's loaders, engine,
report and timings at the note's true scale and file layout, not for its verdicts.
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

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "tests" / "data"
COMMIT = "607a30d783dfa663caf39e06633721c8d4cfcd7e"
D_VOCAB, N_CTX, D_MODEL, D_SAE, N_LAYER = 50257, 1024, 768, 24576, 12
GPT2_CONFIG = {
    "activation_function": "gelu_new",
    "architectures": ["GPT2LMHeadModel"],
    "attn_pdrop": 0.1,
    "bos_token_id": 50256,
    "embd_pdrop": 0.1,
    "eos_token_id": 50256,
    "initializer_range": 0.02,
    "layer_norm_epsilon": 1e-05,
    "model_type": "gpt2",
    "n_ctx": N_CTX,
    "n_embd": D_MODEL,
    "n_head": 12,
    "n_layer": N_LAYER,
    "n_positions": N_CTX,
    "resid_pdrop": 0.1,
    "summary_activation": None,
    "summary_first_dropout": 0.1,
    "summary_proj_to_labels": True,
    "summary_type": "cls_index",
    "summary_use_proj": True,
    "task_specific_params": {"text-generation": {"do_sample": True, "max_length": 50}},
    "vocab_size": D_VOCAB,
}


def add_file(cache: Path, repo_id: str, path: str, src: Path) -> None:
    """Move ``src`` into the cache as huggingface_hub stores it: a blob named by its sha256, a
    snapshot link, refs/main."""
    root = cache / ("models--" + repo_id.replace("/", "--"))
    h = hashlib.sha256()
    with open(src, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 24), b""):
            h.update(chunk)
    blob = root / "blobs" / h.hexdigest()
    blob.parent.mkdir(parents=True, exist_ok=True)
    os.replace(src, blob)
    link = root / "snapshots" / COMMIT / path
    link.parent.mkdir(parents=True, exist_ok=True)
    if link.is_symlink() or link.exists():
        link.unlink()
    os.symlink(os.path.relpath(blob, link.parent), link)
    (root / "refs").mkdir(exist_ok=True)
    (root / "refs" / "main").write_text(COMMIT)


def gpt2_tokenizer() -> Tokenizer:
    vocab = json.loads((DATA / "gpt2-tokenizer" / "encoder.json").read_text())
    merges = [
        tuple(line.split())
        for line in (DATA / "gpt2-tokenizer" / "vocab.bpe").read_text().splitlines()[1:]
        if line.strip()
    ]
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    return tok


def standin_wpe(rng: np.random.Generator) -> np.ndarray:
    """GPT-2's real rows 0..63, continued smoothly to 1024 rows (see module docstring)."""
    real = np.load(DATA / "gpt2_wpe_rows0-63.npy").astype(np.float64)
    rows = real[1:]
    mean = rows.mean(0)
    vt = np.linalg.svd(rows - mean, full_matrices=False)[2]
    coords = (rows - mean) @ vt[:3].T
    resid = (rows - mean) - coords @ vt[:3]
    p = np.arange(64, N_CTX)
    amp = coords.std(0) * np.sqrt(2)
    periods = (2048.0, 1024.0, 683.0)
    curve = np.stack(
        [a * np.cos(2 * np.pi * p / T + k) for k, (a, T) in enumerate(zip(amp, periods))], 1
    )
    tail = mean + curve @ vt[:3] + rng.normal(0, resid.std(), (len(p), D_MODEL))
    return np.concatenate([real, tail]).astype(np.float32)


def gpt2_tensors(rng: np.random.Generator, embeddings_only: bool) -> dict[str, torch.Tensor]:
    """wte, wpe and (unless ``embeddings_only``) every other tensor of GPT2LMHeadModel's checkpoint,
    random, real names and shapes."""
    g = torch.Generator().manual_seed(0)
    t = {
        "wte.weight": torch.randn(D_VOCAB, D_MODEL, generator=g) * 0.14,
        "wpe.weight": torch.from_numpy(standin_wpe(rng)),
    }
    if embeddings_only:
        return t
    for i in range(N_LAYER):
        shapes = {
            "ln_1.weight": (D_MODEL,),
            "ln_1.bias": (D_MODEL,),
            "attn.c_attn.weight": (D_MODEL, 3 * D_MODEL),
            "attn.c_attn.bias": (3 * D_MODEL,),
            "attn.c_proj.weight": (D_MODEL, D_MODEL),
            "attn.c_proj.bias": (D_MODEL,),
            "ln_2.weight": (D_MODEL,),
            "ln_2.bias": (D_MODEL,),
            "mlp.c_fc.weight": (D_MODEL, 4 * D_MODEL),
            "mlp.c_fc.bias": (4 * D_MODEL,),
            "mlp.c_proj.weight": (4 * D_MODEL, D_MODEL),
            "mlp.c_proj.bias": (D_MODEL,),
        }
        for name, shape in shapes.items():
            t[f"h.{i}.{name}"] = torch.randn(*shape, generator=g) * 0.02
    t["ln_f.weight"], t["ln_f.bias"] = torch.ones(D_MODEL), torch.zeros(D_MODEL)
    return t


def standin_sae(
    W_E: torch.Tensor, W_pos: torch.Tensor, l0: float = 40.0
) -> dict[str, torch.Tensor]:
    """A res-jb-shaped SAE on the centred stand-in: Gaussian features, 48 planted positional ones,
    an L0 of about ``l0``.

    Each Gaussian feature's bias puts it at the same firing rate, ``l0 / d_sae``, on a sample of
    in-context inputs."""
    g = torch.Generator().manual_seed(1)
    E = W_E - W_E.mean(1, keepdim=True)
    P = W_pos - W_pos.mean(1, keepdim=True)
    W_enc = torch.randn(D_MODEL, D_SAE, generator=g) / D_MODEL**0.5
    x = (
        E[torch.randint(0, D_VOCAB, (4096,), generator=g)]
        + P[torch.randint(0, 128, (4096,), generator=g)]
    )
    b_enc = -torch.quantile(x @ W_enc, 1 - l0 / D_SAE, dim=0)
    for k, p in enumerate(np.linspace(0, 127, 48).round().astype(int)):
        w = P[p] / P[p].norm() * 2.0
        W_enc[:, k] = w
        b_enc[k] = -float((P[:128] @ w).sort().values[-4])  # fires near position p
    W_dec = (W_enc / W_enc.norm(dim=0, keepdim=True)).T.contiguous()
    return {
        "W_enc": W_enc.contiguous(),
        "W_dec": W_dec,
        "b_enc": b_enc.contiguous(),
        "b_dec": torch.zeros(D_MODEL),
    }


def build(cache: Path, embeddings_only: bool = False) -> Path:
    """Write ``openai-community/gpt2`` and
    ``jbloom/GPT2-Small-SAEs-Reformatted/blocks.0.hook_resid_pre`` into ``cache``."""
    rng = np.random.default_rng(0)
    work = cache / ".build"
    work.mkdir(parents=True, exist_ok=True)
    tensors = gpt2_tensors(rng, embeddings_only)
    save_file(tensors, str(work / "model.safetensors"), metadata={"format": "pt"})
    add_file(cache, "openai-community/gpt2", "model.safetensors", work / "model.safetensors")
    (work / "config.json").write_text(json.dumps(GPT2_CONFIG))
    add_file(cache, "openai-community/gpt2", "config.json", work / "config.json")
    gpt2_tokenizer().save(str(work / "tokenizer.json"))
    add_file(cache, "openai-community/gpt2", "tokenizer.json", work / "tokenizer.json")
    sae = standin_sae(tensors["wte.weight"], tensors["wpe.weight"])
    cfg = {
        "model_name": "gpt2-small",
        "hook_point": "blocks.0.hook_resid_pre",
        "hook_point_layer": 0,
        "hook_point_head_index": None,
        "dataset_path": "Skylion007/openwebtext",
        "is_dataset_tokenized": False,
        "context_size": 128,
        "use_cached_activations": False,
        "d_in": D_MODEL,
        "expansion_factor": 32,
        "b_dec_init_method": "geometric_median",
        "l1_coefficient": 8e-05,
        "lr": 0.0004,
        "train_batch_size": 4096,
        "d_sae": D_SAE,
        "device": "mps",
        "seed": 42,
        "dtype": "torch.float32",
    }
    folder = "blocks.0.hook_resid_pre"
    (work / "cfg.json").write_text(json.dumps(cfg))
    add_file(cache, "jbloom/GPT2-Small-SAEs-Reformatted", f"{folder}/cfg.json", work / "cfg.json")
    save_file(sae, str(work / "sae_weights.safetensors"))
    add_file(
        cache,
        "jbloom/GPT2-Small-SAEs-Reformatted",
        f"{folder}/sae_weights.safetensors",
        work / "sae_weights.safetensors",
    )
    save_file({"sparsity": torch.full((D_SAE,), -3.0)}, str(work / "sparsity.safetensors"))
    add_file(
        cache,
        "jbloom/GPT2-Small-SAEs-Reformatted",
        f"{folder}/sparsity.safetensors",
        work / "sparsity.safetensors",
    )
    os.rmdir(work)
    return cache
