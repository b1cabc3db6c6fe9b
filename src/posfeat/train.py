"""Training SAEs on the layer-0 grid itself: every input is ``W_E[t] + W_pos[p]``.

Batches are (token, position) pairs: positions uniform in ``[0, context)``, tokens uniform over
the vocabulary or drawn from a token-weights vector (real SAEs are trained on text, where
frequent tokens dominate). No activation cache is needed.

The recipe is the standard one gpt2-small-res-jb used, on inputs scaled so that
``E||x||^2 = d_in`` (Anthropic's convention, so ``l1`` has its usual size, about 5; the scale is
folded back into the weights at the end, so the saved SAE reads raw inputs):

* ReLU with an L1 penalty on activations weighted by decoder row norms (rows kept at unit norm),
  or TopK (``--arch topk --k K``) with the plain reconstruction loss;
* ``b_dec`` initialised at the data mean, ``W_enc`` initialised as ``W_dec.T``;
* Adam, linear learning-rate warm-up, linear decay over the last 20% of steps, and the L1
  coefficient warmed up linearly over the first ``l1_warmup`` fraction of steps (SAELens);
* dead features (no firing for ``dead_window`` steps) resampled towards badly reconstructed
  inputs at fixed points of training.

The reported FVU is the one ``posfeat eval`` uses: squared error over the variance of the token
part (the per-position mean input is the baseline).
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from .embeddings import Embeddings
from .errors import PosfeatError
from .sae import SAE
from .sae_io import POSFEAT_HOOK, read_sae_folder, write_sae_folder
from .safetensors_io import read_json, read_tensors, write_json_atomic, write_tensors_atomic

LOG_FILE = "training_log.csv"
TOKEN_WEIGHTS_FILE = "token_weights.safetensors"
LOG_COLUMNS = ["step", "loss", "mse", "l1", "fvu", "l0", "dead_fraction", "lr", "elapsed_s"]


@dataclass
class TrainConfig:
    """Hyper-parameters of one training run (recorded in ``cfg.json``)."""

    d_sae: int
    context: int
    arch: str = "relu"
    l1: float = 5.0
    k: int | None = None
    steps: int = 2000
    batch: int = 2048
    lr: float = 1e-3
    warmup: int = 100
    l1_warmup: float = 0.2
    seed: int = 0
    dead_window: int = 400
    resample_at: tuple[float, ...] = (0.25, 0.5)
    log_every: int = 20
    checkpoint_seconds: float = 180.0

    def validate(self, emb: Embeddings) -> None:
        if self.d_sae <= 0:
            raise PosfeatError(f"--d-sae is {self.d_sae}; the SAE width must be a positive integer.")
        if not 1 <= self.context <= emb.n_ctx:
            raise PosfeatError(f"--context {self.context} is outside 1..{emb.n_ctx}, the positions of {emb.name}; pick a context within it.")
        if self.arch not in {"relu", "topk"}:
            raise PosfeatError(f"--arch {self.arch!r} is unknown; use relu or topk.")
        if self.arch == "topk" and (self.k is None or not 1 <= self.k <= self.d_sae):
            raise PosfeatError(f"--k {self.k} is invalid for a TopK SAE of width {self.d_sae}; give 1 <= k <= d_sae.")
        if self.steps <= 0 or self.batch <= 0:
            raise PosfeatError(f"--steps {self.steps} and --batch {self.batch} must be positive.")
        if self.l1 < 0:
            raise PosfeatError(f"--l1 {self.l1} is negative; the L1 coefficient must be >= 0.")


@dataclass
class TrainResult:
    """The trained SAE, its log rows, and where it was written (if anywhere)."""

    sae: SAE
    log: list[dict[str, float]] = field(default_factory=list)
    out: Path | None = None


def load_token_weights(path: str | Path, d_vocab: int) -> torch.Tensor:
    """``Float[Tensor, "d_vocab"]`` non-negative token weights from a safetensors file (key ``weights``)."""
    w = read_tensors(path, ["weights"])["weights"].double().reshape(-1)
    if w.numel() != d_vocab:
        raise PosfeatError(f"Token weights {path} have {w.numel()} entries but the model has {d_vocab} tokens; give one weight per token id.")
    if not bool(torch.isfinite(w).all()) or bool((w < 0).any()) or float(w.sum()) <= 0:
        raise PosfeatError(f"Token weights {path} must be finite, non-negative and not all zero.")
    return w


class _Sampler:
    """Seeded (token, position) sampler over the grid."""

    def __init__(self, emb: Embeddings, context: int, token_weights: torch.Tensor | None, gen: torch.Generator) -> None:
        self.emb, self.context, self.gen = emb, context, gen
        self.p = None if token_weights is None else (token_weights / token_weights.sum()).float()

    def tokens(self, n: int) -> torch.Tensor:
        if self.p is None:
            return torch.randint(0, self.emb.d_vocab, (n,), generator=self.gen)
        return torch.multinomial(self.p, n, replacement=True, generator=self.gen)

    def batch(self, n: int) -> torch.Tensor:
        t = self.tokens(n)
        p = torch.randint(0, self.context, (n,), generator=self.gen)
        return self.emb.W_E[t] + self.emb.W_pos[p]


class _Params(torch.nn.Module):
    def __init__(self, d_in: int, d_sae: int, gen: torch.Generator) -> None:
        super().__init__()
        W_dec = torch.randn(d_sae, d_in, generator=gen)
        W_dec /= W_dec.norm(dim=1, keepdim=True)
        self.W_dec = torch.nn.Parameter(W_dec)
        self.W_enc = torch.nn.Parameter(W_dec.T.clone())
        self.b_enc = torch.nn.Parameter(torch.zeros(d_sae))
        self.b_dec = torch.nn.Parameter(torch.zeros(d_in))


def _lr_at(step: int, cfg: TrainConfig) -> float:
    warm = min(1.0, (step + 1) / max(1, cfg.warmup))
    decay_start = int(0.8 * cfg.steps)
    decay = 1.0 if step < decay_start else max(0.0, (cfg.steps - step) / max(1, cfg.steps - decay_start))
    return cfg.lr * warm * decay


def _state_tensors(params: _Params, opt: torch.optim.Adam, gen: torch.Generator, last_fired: torch.Tensor) -> dict[str, torch.Tensor]:
    out = {f"param.{n}": p.detach().clone() for n, p in params.named_parameters()}
    for n, p in params.named_parameters():
        st = opt.state.get(p, {})
        for key in ("exp_avg", "exp_avg_sq"):
            if key in st:
                out[f"adam.{n}.{key}"] = st[key].clone()
        if "step" in st:
            out[f"adam.{n}.step"] = torch.as_tensor(st["step"], dtype=torch.float64).reshape(1)
    out["rng"] = gen.get_state()
    out["last_fired"] = last_fired.clone()
    return out


def _restore(state: dict[str, torch.Tensor], params: _Params, opt: torch.optim.Adam, gen: torch.Generator) -> torch.Tensor:
    with torch.no_grad():
        for n, p in params.named_parameters():
            p.copy_(state[f"param.{n}"])
            if f"adam.{n}.exp_avg" in state:
                opt.state[p] = {
                    "step": torch.tensor(float(state[f"adam.{n}.step"][0])),
                    "exp_avg": state[f"adam.{n}.exp_avg"].clone(),
                    "exp_avg_sq": state[f"adam.{n}.exp_avg_sq"].clone(),
                }
    gen.set_state(state["rng"])
    return state["last_fired"].clone()


def _encode(params: _Params, x: torch.Tensor, cfg: TrainConfig) -> tuple[torch.Tensor, torch.Tensor]:
    pre = (x - params.b_dec) @ params.W_enc + params.b_enc
    if cfg.arch == "topk":
        top = torch.topk(pre, cfg.k, dim=-1)
        f = torch.zeros_like(pre).scatter(-1, top.indices, torch.relu(top.values))
    else:
        f = torch.relu(pre)
    return pre, f


@torch.no_grad()
def _resample(params: _Params, opt: torch.optim.Adam, dead: torch.Tensor, x: torch.Tensor, cfg: TrainConfig,
              gen: torch.Generator) -> int:
    """Point dead features at badly reconstructed inputs (Anthropic-style resampling)."""
    idx = dead.nonzero().flatten()
    if idx.numel() == 0:
        return 0
    _, f = _encode(params, x, cfg)
    err = x - (f @ params.W_dec + params.b_dec)
    w = err.pow(2).sum(1)
    if float(w.sum()) <= 0:
        return 0
    pick = torch.multinomial(w / w.sum(), idx.numel(), replacement=True, generator=gen)
    d = err[pick]
    d = d / d.norm(dim=1, keepdim=True).clamp(min=1e-8)
    alive = ~dead
    enc_norm = params.W_enc[:, alive].norm(dim=0).mean() if bool(alive.any()) else torch.tensor(1.0)
    params.W_dec[idx] = d
    params.W_enc[:, idx] = d.T * enc_norm * 0.2
    params.b_enc[idx] = 0.0
    for p, sl in ((params.W_dec, (idx,)), (params.W_enc, (slice(None), idx)), (params.b_enc, (idx,))):
        st = opt.state.get(p)
        if st:
            st["exp_avg"][sl] = 0.0
            st["exp_avg_sq"][sl] = 0.0
    return int(idx.numel())


def _fold(params: _Params, scale: float, cfg: TrainConfig) -> dict[str, torch.Tensor]:
    """Weights that read raw inputs ``x = scale * x'`` with unit-norm decoder rows (see module docstring)."""
    W_dec = params.W_dec.detach()
    norms = W_dec.norm(dim=1).clamp(min=1e-12)
    # activations f_raw = scale * norms * f' so that x_hat = f_raw @ (W_dec / norms) + scale * b_dec
    return {
        "W_enc": (params.W_enc.detach() * norms[None, :]).contiguous(),
        "b_enc": params.b_enc.detach() * norms * scale,
        "W_dec": (W_dec / norms[:, None]).contiguous(),
        "b_dec": params.b_dec.detach() * scale,
    }


def train_sae(
    emb: Embeddings,
    *,
    d_sae: int,
    context: int,
    arch: str = "relu",
    l1: float = 5.0,
    k: int | None = None,
    steps: int = 2000,
    batch: int = 2048,
    seed: int = 0,
    lr: float = 1e-3,
    token_weights: torch.Tensor | str | Path | None = None,
    init: SAE | str | Path | None = None,
    out: str | Path | None = None,
    resume: bool = False,
    force: bool = False,
    progress: bool = True,
    command: str | None = None,
    model_name: str | None = None,
    checkpoint_seconds: float = 180.0,
    stop_after: int | None = None,
) -> TrainResult:
    """Train an SAE on the layer-0 grid of ``emb`` (see module docstring for the recipe).

    Args:
        emb: embeddings; inputs are ``W_E[t] + W_pos[p]`` with ``p < context``.
        d_sae, context, arch, l1, k, steps, batch, seed, lr: the recipe.
        token_weights: ``[d_vocab]`` non-negative weights (tensor or safetensors file), or None
            for uniform tokens.
        init: an SAE (or folder) to fine-tune; its width and architecture win.
        out: write a SAELens-format folder here (``cfg.json``, ``sae_weights.safetensors``,
            ``training_log.csv``, ``token_weights.safetensors`` when given). Training works in
            ``<out>.partial`` (checkpoints) and renames it into place at the end.
        resume: continue from the checkpoint in ``<out>.partial``.
        force: replace an existing ``out``.
        stop_after: stop (as if interrupted) after this many steps; for tests of resumption.
    """
    cfg = TrainConfig(d_sae=d_sae, context=context, arch=arch, l1=l1, k=k, steps=steps, batch=batch, lr=lr, seed=seed,
                      checkpoint_seconds=checkpoint_seconds)
    init_sae = None
    if init is not None:
        init_sae = init if isinstance(init, SAE) else read_sae_folder(init, allow_any_hook=True)
        if not init_sae.separable and arch == "relu":
            cfg.arch, cfg.k = "topk", init_sae.k
        if init_sae.threshold is not None:
            raise PosfeatError("--init points at a JumpReLU SAE; posfeat trains ReLU and TopK SAEs only.")
        cfg.d_sae = init_sae.d_sae
        if init_sae.d_in != emb.d_model:
            raise PosfeatError(f"--init SAE reads d_in {init_sae.d_in} but {emb.name} has d_model {emb.d_model}; fine-tune an SAE of this model.")
    cfg.validate(emb)
    weights_path = None
    if isinstance(token_weights, (str, Path)):
        weights_path = Path(token_weights)
        token_weights = load_token_weights(weights_path, emb.d_vocab)
    elif token_weights is not None:
        token_weights = torch.as_tensor(token_weights, dtype=torch.float64).reshape(-1)
        if token_weights.numel() != emb.d_vocab or bool((token_weights < 0).any()) or float(token_weights.sum()) <= 0:
            raise PosfeatError(f"token_weights must hold {emb.d_vocab} non-negative weights, not all zero.")

    out_dir = partial = None
    if out is not None:
        out_dir = Path(out).expanduser().resolve()
        partial = out_dir.with_name(out_dir.name + ".partial")
        if out_dir.exists() and not force:
            raise PosfeatError(f"Output folder {out_dir} already exists; pass --force to replace it or choose another --out.")
        try:
            out_dir.parent.mkdir(parents=True, exist_ok=True)
            if partial.exists() and not resume:
                shutil.rmtree(partial)
            partial.mkdir(exist_ok=True)
            probe = partial / ".write-test"
            probe.write_text("")
            probe.unlink()
        except OSError as err:
            raise PosfeatError(f"Cannot write to output folder {out_dir} ({err.strerror}); choose a writable --out.") from None

    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    sampler = _Sampler(emb, cfg.context, token_weights, gen)
    # Scale so that E||x||^2 = d_model, and the token-part variance (in scaled units) that FVU divides by.
    with torch.no_grad():
        probe_x = sampler.batch(16384)
        scale = float(probe_x.pow(2).sum(1).mean().sqrt()) / emb.d_model**0.5
        tp = (token_weights / token_weights.sum() if token_weights is not None
              else torch.full((emb.d_vocab,), 1.0 / emb.d_vocab, dtype=torch.float64))
        WE = emb.W_E.double()
        tok_var = float(tp @ (WE - tp @ WE).pow(2).sum(1)) / scale**2

    params = _Params(emb.d_model, cfg.d_sae, gen)
    with torch.no_grad():
        if init_sae is not None:  # inverse of _fold: unit decoder rows, inputs divided by scale
            n = init_sae.W_dec.norm(dim=1).clamp(min=1e-12)
            params.W_dec.copy_(init_sae.W_dec / n[:, None])
            params.W_enc.copy_(init_sae.W_enc * n[None, :])
            params.b_enc.copy_(init_sae.b_enc * n / scale)
            params.b_dec.copy_(init_sae.b_dec / scale)
        else:
            params.b_dec.copy_((probe_x / scale).mean(0))
    opt = torch.optim.Adam(params.parameters(), lr=cfg.lr, betas=(0.9, 0.999))
    last_fired = torch.zeros(cfg.d_sae, dtype=torch.long)
    rows: list[dict[str, float]] = []
    start_step = 0
    ckpt = partial / "checkpoint.safetensors" if partial else None
    if resume and ckpt is not None and ckpt.is_file():
        meta = read_json(partial / "checkpoint.json")
        if meta.get("config") != json.loads(json.dumps(asdict(cfg))):
            raise PosfeatError(f"The checkpoint in {partial} was made with other settings; rerun with the same arguments or without --resume.")
        last_fired = _restore(read_tensors(ckpt), params, opt, gen)
        start_step = int(meta["step"])
        rows = meta.get("log", [])

    def save_checkpoint(step: int) -> None:
        if ckpt is None:
            return
        write_tensors_atomic(ckpt, _state_tensors(params, opt, gen, last_fired))
        write_json_atomic(partial / "checkpoint.json", {"step": step, "config": asdict(cfg), "log": rows})

    resample_steps = {int(f * cfg.steps) for f in cfg.resample_at}
    t0 = time.time()
    last_ckpt = t0
    bar = tqdm(total=cfg.steps, initial=start_step, desc=f"train d_sae={cfg.d_sae}", disable=not progress, unit="step")
    step = start_step
    interrupted = False
    prev_handler = signal.getsignal(signal.SIGTERM)

    def _on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    try:
        signal.signal(signal.SIGTERM, _on_term)
    except ValueError:  # not the main thread
        prev_handler = None
    try:
        while step < cfg.steps:
            if stop_after is not None and step >= stop_after:
                raise KeyboardInterrupt
            for group in opt.param_groups:
                group["lr"] = _lr_at(step, cfg)
            x = sampler.batch(cfg.batch) / scale
            _, f = _encode(params, x, cfg)
            x_hat = f @ params.W_dec + params.b_dec
            mse = (x - x_hat).pow(2).sum(1).mean()
            dec_norm = params.W_dec.norm(dim=1)
            l1 = (f * dec_norm).sum(1).mean() if cfg.arch == "relu" else torch.zeros(())
            l1_now = cfg.l1 * min(1.0, (step + 1) / max(1.0, cfg.l1_warmup * cfg.steps))
            loss = mse + l1_now * l1 if cfg.arch == "relu" else mse
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            with torch.no_grad():
                params.W_dec.div_(params.W_dec.norm(dim=1, keepdim=True).clamp(min=1e-12))
                fired = (f > 0).any(0)
                last_fired[fired] = step + 1
            step += 1
            if step in resample_steps and cfg.arch == "relu":
                dead = (step - last_fired) >= cfg.dead_window
                with torch.no_grad():
                    n = _resample(params, opt, dead, sampler.batch(cfg.batch) / scale, cfg, gen)
                if n:
                    last_fired[dead] = step
            if step % cfg.log_every == 0 or step == cfg.steps:
                with torch.no_grad():
                    l0 = float((f > 0).float().sum(1).mean())
                    dead_frac = float(((step - last_fired) >= min(cfg.dead_window, step)).float().mean())
                row = {"step": step, "loss": loss.item(), "mse": mse.item(), "l1": l1.item(), "fvu": mse.item() / tok_var,
                       "l0": l0, "dead_fraction": dead_frac, "lr": _lr_at(step - 1, cfg), "elapsed_s": round(time.time() - t0, 2)}
                rows.append(row)
                bar.set_postfix(loss=f"{row['loss']:.4f}", fvu=f"{row['fvu']:.3f}", l0=f"{l0:.1f}", dead=f"{dead_frac:.3f}")
            bar.update(1)
            if ckpt is not None and time.time() - last_ckpt >= cfg.checkpoint_seconds:
                save_checkpoint(step)
                last_ckpt = time.time()
    except KeyboardInterrupt:
        interrupted = True
        save_checkpoint(step)
    finally:
        bar.close()
        if prev_handler is not None:
            signal.signal(signal.SIGTERM, prev_handler)
    if interrupted:
        where = f"; resume with --resume (checkpoint in {partial})" if partial else ""
        raise PosfeatError(f"Training was interrupted at step {step} of {cfg.steps}{where}.")

    folded = _fold(params, scale, cfg)
    hook = init_sae.hook_name if init_sae is not None and init_sae.hook_name else POSFEAT_HOOK
    record = {
        "command": command or "train_sae(...)",
        "seed": cfg.seed,
        "config": asdict(cfg),
        "input_scale": scale,
        "token_weights": str(weights_path.name) if weights_path else ("given" if token_weights is not None else "uniform"),
        "init": None if init is None else str(init if not isinstance(init, SAE) else init.name),
        "final": rows[-1] if rows else {},
    }
    sae = SAE.from_arrays(folded["W_enc"], folded["W_dec"], folded["b_enc"], folded["b_dec"], k=cfg.k if cfg.arch == "topk" else None,
                          context_size=cfg.context, hook_name=hook, name=str(out_dir) if out_dir else f"trained d_sae={cfg.d_sae}",
                          cfg={"model_name": model_name or emb.name, "posfeat_training": record,
                               "center_writing_weights": bool(emb.centered)})
    if out_dir is None:
        return TrainResult(sae, rows, None)
    extra = {"model_name": model_name or emb.name, "center_writing_weights": bool(emb.centered), "posfeat_training": record}
    write_sae_folder(sae, partial, extra)
    with open(partial / LOG_FILE, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=LOG_COLUMNS)
        w.writeheader()
        w.writerows(rows)
    if token_weights is not None:
        write_tensors_atomic(partial / TOKEN_WEIGHTS_FILE, {"weights": token_weights.float()})
    for leftover in ("checkpoint.safetensors", "checkpoint.json"):
        (partial / leftover).unlink(missing_ok=True)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    os.replace(partial, out_dir)
    sae.name = str(out_dir)
    return TrainResult(sae, rows, out_dir)


__all__ = ["TrainConfig", "TrainResult", "load_token_weights", "train_sae"]
