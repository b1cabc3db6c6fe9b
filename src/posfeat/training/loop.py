"""Training SAEs on the layer-0 grid itself: every input is ``W_E[t] + W_pos[p]``.

Batches are (token, position) pairs: positions uniform in ``[0, context)``, tokens uniform over
the vocabulary or drawn from a token-weights vector (real SAEs are trained on text, where
frequent tokens dominate). No activation cache is needed.

The recipe is the standard one gpt2-small-res-jb used, on inputs scaled so that
``E||x||^2 = d_in`` (Anthropic's convention, so ``l1`` has its usual size, about 5; the scale is
folded back into the weights at the end, so the saved SAE reads raw inputs):

* ReLU with an L1 penalty on activations weighted by decoder row norms (rows kept at unit norm),
  or TopK (``arch="topk", k=K``) with the plain reconstruction loss (:class:`TrainingSAE`);
* ``b_dec`` initialised at the data mean, ``W_enc`` initialised as ``W_dec.T``;
* Adam, linear learning-rate warm-up and linear decay over the last 20% of steps (``LambdaLR``),
  the L1 coefficient warmed up linearly over the first ``l1_warmup`` fraction of steps (SAELens);
* dead features (no firing for ``dead_window`` steps) resampled towards badly reconstructed
  inputs at fixed points of training.

:class:`Trainer` holds the state (model, optimiser, scheduler, generator, dead-feature clock, log)
and saves it as one safetensors file (scalars in its header; written atomically, checked whole
at resume), so a run resumes bit for bit (on the CPU; across devices
too, up to the device's arithmetic). Batches and resampling draw from a CPU generator, so a CUDA
run sees the same batches. The reported FVU is the one ``posfeat eval`` uses.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..core.embeddings import Embeddings
from ..core.errors import Interrupted, PosfeatError, Stopped, arg
from ..core.progress import progress_bar
from ..core.signals import deferred_signals, signals_held
from ..io.safetensors_io import read_json, read_metadata, read_tensors, write_tensors
from ..io.writes import remove
from .config import TrainConfig
from .model import TrainingSAE

LOG_FILE = "training_log.csv"
CHECKPOINT = "checkpoint.safetensors"
CHECKPOINT_META = "checkpoint.json"  # the older two-file format only
CHECKPOINT_KEY = "posfeat_training_state"
LOG_COLUMNS = ["step", "loss", "mse", "l1", "fvu", "l0", "dead_fraction", "lr", "elapsed_s"]


class Sampler:
    """Seeded (token, position) batches over the grid, drawn on the CPU and gathered on the
    embeddings' device."""

    def __init__(
        self,
        emb: Embeddings,
        context: int,
        token_weights: torch.Tensor | None,
        gen: torch.Generator,
    ) -> None:
        self.emb, self.context, self.gen = emb, context, gen
        self.p = None if token_weights is None else (token_weights / token_weights.sum()).float()

    def tokens(self, n: int) -> torch.Tensor:
        if self.p is None:
            return torch.randint(0, self.emb.d_vocab, (n,), generator=self.gen)
        return torch.multinomial(self.p, n, replacement=True, generator=self.gen)

    def batch(self, n: int) -> torch.Tensor:
        t = self.tokens(n)
        p = torch.randint(0, self.context, (n,), generator=self.gen)
        dev = self.emb.device
        return self.emb.W_E[t.to(dev)] + self.emb.W_pos[p.to(dev)]


def lr_factor(step: int, cfg: TrainConfig) -> tuple[float, float]:
    """``(warm-up, decay)`` factors of the learning rate at ``step``."""
    warm = min(1.0, (step + 1) / max(1, cfg.warmup))
    decay_start = int(0.8 * cfg.steps)
    decay = (
        1.0
        if step < decay_start
        else max(0.0, (cfg.steps - step) / max(1, cfg.steps - decay_start))
    )
    return warm, decay


def lr_at(step: int, cfg: TrainConfig) -> float:
    warm, decay = lr_factor(step, cfg)
    return cfg.lr * warm * decay


@dataclass
class Scaling:
    """Input scale (``E||x||^2 = d_model`` after dividing by it), the token-part variance FVU
    divides by, and the first batch's mean."""

    scale: float
    tok_var: float
    mean: torch.Tensor

    @classmethod
    @torch.no_grad()
    def measure(
        cls, emb: Embeddings, sampler: Sampler, token_weights: torch.Tensor | None
    ) -> Scaling:
        probe = sampler.batch(16384)
        scale = float(probe.pow(2).sum(1).mean().sqrt()) / emb.d_model**0.5
        tp = (
            token_weights / token_weights.sum()
            if token_weights is not None
            else torch.full((emb.d_vocab,), 1.0 / emb.d_vocab, dtype=torch.float64)
        )
        WE = emb.W_E.double().cpu()
        return cls(
            scale, float(tp @ (WE - tp @ WE).pow(2).sum(1)) / scale**2, (probe / scale).mean(0)
        )


@dataclass
class Trainer:
    """One training run: :meth:`step` advances one batch, :meth:`fit` runs to the end (see module
    docstring)."""

    model: TrainingSAE
    sampler: Sampler
    cfg: TrainConfig
    scaling: Scaling
    checkpoint_dir: Path | None = None
    progress: bool = True
    callback: Callable[[Trainer], None] | None = None
    step_no: int = 0
    rows: list[dict[str, float]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.device = self.model.W_dec.device
        self.opt = torch.optim.Adam(self.model.parameters(), lr=self.cfg.lr, betas=(0.9, 0.999))
        self.sched = torch.optim.lr_scheduler.LambdaLR(
            self.opt, lambda s: (lambda w, d: w * d)(*lr_factor(s, self.cfg))
        )
        self.last_fired = torch.zeros(self.cfg.d_sae, dtype=torch.long, device=self.device)
        self.resample_steps = {int(f * self.cfg.steps) for f in self.cfg.resample_at}
        self.t0 = time.monotonic()

    def l1_coefficient(self) -> float:
        return self.cfg.l1 * min(
            1.0, (self.step_no + 1) / max(1.0, self.cfg.l1_warmup * self.cfg.steps)
        )

    def step(self) -> None:
        """One optimisation step, then resampling and a log row when they are due."""
        x = self.sampler.batch(self.cfg.batch) / self.scaling.scale
        # bf16: the encoder and decoder GEMMs run in bfloat16 under autocast; parameters, gradients
        # and Adam stay fp32
        with torch.autocast(
            self.device.type, dtype=torch.bfloat16, enabled=self.cfg.precision == "bf16"
        ):
            out = self.model.losses(x, self.l1_coefficient())
        self.opt.zero_grad(set_to_none=True)
        out["loss"].backward()
        self.opt.step()
        self.sched.step()
        with torch.no_grad():
            self.model.normalize_decoder()
            self.last_fired[(out["f"] > 0).any(0)] = self.step_no + 1
        self.step_no += 1
        if self.step_no in self.resample_steps and self.model.arch.resamples_dead:
            dead = (self.step_no - self.last_fired) >= self.cfg.dead_window
            if self._resample(dead, self.sampler.batch(self.cfg.batch) / self.scaling.scale):
                self.last_fired[dead] = self.step_no
        if self.step_no % self.cfg.log_every == 0 or self.step_no == self.cfg.steps:
            self._log(out)

    def _log(self, out: dict[str, torch.Tensor]) -> None:
        with torch.no_grad():
            l0 = float((out["f"] > 0).float().sum(1).mean())
            dead = float(
                ((self.step_no - self.last_fired) >= min(self.cfg.dead_window, self.step_no))
                .float()
                .mean()
            )
        mse = out["mse"].item()
        self.rows.append(
            {
                "step": self.step_no,
                "loss": out["loss"].item(),
                "mse": mse,
                "l1": out["l1"].item(),
                "fvu": mse / self.scaling.tok_var,
                "l0": l0,
                "dead_fraction": dead,
                "lr": lr_at(self.step_no - 1, self.cfg),
                "elapsed_s": round(time.monotonic() - self.t0, 2),
            }
        )

    @torch.no_grad()
    def _resample(self, dead: torch.Tensor, x: torch.Tensor) -> int:
        """Point dead features at badly reconstructed inputs (Anthropic-style resampling)."""
        idx = dead.nonzero().flatten()
        if idx.numel() == 0:
            return 0
        m = self.model
        _, x_hat = m(x)
        err = x - x_hat
        w = err.pow(2).sum(1).cpu()
        if float(w.sum()) <= 0:
            return 0
        pick = torch.multinomial(
            w / w.sum(), idx.numel(), replacement=True, generator=self.sampler.gen
        ).to(self.device)
        d = err[pick]
        d = d / d.norm(dim=1, keepdim=True).clamp(min=1e-8)
        alive = ~dead
        enc_norm = (
            m.W_enc[:, alive].norm(dim=0).mean()
            if bool(alive.any())
            else torch.tensor(1.0, device=self.device)
        )
        m.W_dec[idx] = d
        m.W_enc[:, idx] = d.T * enc_norm * 0.2
        m.b_enc[idx] = 0.0
        for p, sl in ((m.W_dec, (idx,)), (m.W_enc, (slice(None), idx)), (m.b_enc, (idx,))):
            st = self.opt.state.get(p)
            if st:
                st["exp_avg"][sl] = 0.0
                st["exp_avg_sq"][sl] = 0.0
        return int(idx.numel())

    def fit(self, stop_after: int | None = None) -> list[dict[str, float]]:
        """Train to ``cfg.steps``, checkpointing every ``checkpoint_seconds`` and on interruption.

        SIGINT or SIGTERM (Ctrl-C too, in a terminal or a notebook) stops the run after the step in
        progress, saves a checkpoint and raises :class:`posfeat.core.errors.Stopped`; so does
        reaching ``stop_after`` (for tests).
        """
        bar = progress_bar(
            total=self.cfg.steps,
            initial=self.step_no,
            desc=f"train d_sae={self.cfg.d_sae}",
            enabled=self.progress,
            unit="step",
        )
        last = (
            time.monotonic()
        )  # never the wall clock: a clock stepped back must not stop the checkpoints
        try:
            with deferred_signals() as signals:
                while self.step_no < self.cfg.steps:
                    if signals.signum is not None or (
                        stop_after is not None and self.step_no >= stop_after
                    ):
                        raise Interrupted(signals.signum or 0)
                    self.step()
                    self._after_step(bar)
                    if (
                        self.checkpoint_dir is not None
                        and time.monotonic() - last >= self.cfg.checkpoint_seconds
                    ):
                        self.save_checkpoint()
                        # never the wall clock: a clock stepped back must
                        # not stop the checkpoints
                        last = time.monotonic()
        except KeyboardInterrupt as err:
            with signals_held():  # a second signal waits until the checkpoint is whole
                self.save_checkpoint()
            where = (
                f"; the checkpoint is in {self.checkpoint_dir}: resume with {arg('resume', True)}"
                if self.checkpoint_dir
                else ""
            )
            raise Stopped(
                f"Training was interrupted at step {self.step_no} of {self.cfg.steps}{where}.",
                signum=getattr(err, "signum", None) or None,
            ) from None
        finally:
            bar.close()
        return self.rows

    def _after_step(self, bar: Any) -> None:
        bar.update(1)
        if self.rows and self.rows[-1]["step"] == self.step_no:
            r = self.rows[-1]
            bar.set_postfix(
                loss=f"{r['loss']:.4f}",
                fvu=f"{r['fvu']:.3f}",
                l0=f"{r['l0']:.1f}",
                dead=f"{r['dead_fraction']:.3f}",
            )
        if self.callback is not None:
            self.callback(self)

    # ------------------------------------------------------------------ state
    def state_dict(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """``(tensors, meta)``: parameters, Adam moments, generator and dead-feature clock; step,
        config, log and schedule."""
        tensors = {f"param.{n}": p.detach().clone() for n, p in self.model.named_parameters()}
        for n, p in self.model.named_parameters():
            st = self.opt.state.get(p, {})
            for key in ("exp_avg", "exp_avg_sq"):
                if key in st:
                    tensors[f"adam.{n}.{key}"] = st[key].clone()
            if "step" in st:
                tensors[f"adam.{n}.step"] = torch.as_tensor(
                    st["step"], dtype=torch.float64
                ).reshape(1)
        tensors["rng"] = self.sampler.gen.get_state()
        tensors["last_fired"] = self.last_fired.clone()
        meta = {
            "step": self.step_no,
            "config": self.cfg.as_dict(),
            "log": self.rows,
            "scheduler": self.sched.state_dict(),
        }
        return tensors, meta

    def load_state_dict(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        dev = self.device
        with torch.no_grad():
            for n, p in self.model.named_parameters():
                p.copy_(tensors[f"param.{n}"].to(dev))
                if f"adam.{n}.exp_avg" in tensors:
                    self.opt.state[p] = {
                        "step": torch.tensor(float(tensors[f"adam.{n}.step"][0])),
                        "exp_avg": tensors[f"adam.{n}.exp_avg"].to(dev).clone(),
                        "exp_avg_sq": tensors[f"adam.{n}.exp_avg_sq"].to(dev).clone(),
                    }
        self.sampler.gen.set_state(tensors["rng"])
        self.last_fired = tensors["last_fired"].to(dev).clone()
        self.step_no, self.rows = int(meta["step"]), list(meta.get("log", []))
        self.sched.load_state_dict({**meta["scheduler"], "lr_lambdas": [None]})
        for group, lr in zip(self.opt.param_groups, self.sched.get_last_lr()):
            group["lr"] = lr

    def save_checkpoint(self) -> None:
        """Write the whole state as one unit: one safetensors file, its scalars (step, config, log,
        schedule) in the header's metadata, written to a temporary file and renamed over the
        previous checkpoint (so a kill at any moment leaves either the old checkpoint or the new
        one, never a mix)."""
        if self.checkpoint_dir is None:
            return
        tensors, meta = self.state_dict()
        write_tensors(
            self.checkpoint_dir / CHECKPOINT, tensors, metadata={CHECKPOINT_KEY: json.dumps(meta)}
        )
        remove(
            self.checkpoint_dir / CHECKPOINT_META
        )  # the second file of the older two-file format, if any

    def has_checkpoint(self) -> bool:
        return self.checkpoint_dir is not None and (self.checkpoint_dir / CHECKPOINT).is_file()

    def resume(self) -> None:
        """Continue from the checkpoint in ``checkpoint_dir`` (made with the same settings); a torn
        or mismatched one is refused."""
        assert self.checkpoint_dir is not None
        tensors, meta = read_checkpoint(self.checkpoint_dir)
        if not made_with(meta, self.cfg):
            raise PosfeatError(
                f"The checkpoint in {self.checkpoint_dir} was made with other settings; rerun with "
                "the same arguments "
                f"or without {arg('resume', True)}."
            )
        self.load_state_dict(tensors, meta)


def _refusal(folder: Path) -> tuple[str, str]:
    return (
        f"The checkpoint in {folder} cannot be resumed",
        f"discard it and start again with {arg('force', True)} (without {arg('resume', True)})",
    )


def made_with(meta: dict[str, Any], cfg: TrainConfig) -> bool:
    """Whether a checkpoint's training state (:func:`checkpoint_state`) was made with the settings
    ``cfg`` (compared as the JSON the checkpoint stores them in)."""
    return meta.get("config") == json.loads(json.dumps(cfg.as_dict()))


def checkpoint_state(folder: Path) -> dict[str, Any]:
    """The training state (step, schedule, log) of the checkpoint in ``folder``, read from its
    header alone (the tensors are read, and the whole checked, by :func:`read_checkpoint`); refused
    with the reason when it has none."""
    path = folder / CHECKPOINT
    header = read_metadata(path)  # after the header is validated
    torn, fix = _refusal(folder)
    if CHECKPOINT_KEY in header:
        try:
            meta = json.loads(header[CHECKPOINT_KEY])
        except (ValueError, RecursionError):
            raise PosfeatError(f"{torn}: its training state is not valid JSON; {fix}.") from None
    elif (folder / CHECKPOINT_META).is_file():
        meta = read_json(folder / CHECKPOINT_META)
    else:
        raise PosfeatError(
            f"{torn}: {CHECKPOINT} holds no training state (step, schedule, log); {fix}."
        )
    if (
        not isinstance(meta, dict)
        or not isinstance(meta.get("step"), int)
        or "scheduler" not in meta
    ):
        raise PosfeatError(f"{torn}: its training state has no step or schedule; {fix}.")
    return meta


def read_checkpoint(folder: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """``(tensors, meta)`` of the checkpoint in ``folder``, checked whole: refused with the reason
    when torn or incomplete.

    The one-file format keeps ``meta`` in the safetensors header; the older two-file format
    (``checkpoint.json`` beside it) is accepted only when both files agree on the step.
    """
    tensors = read_tensors(folder / CHECKPOINT)  # validates the header first
    meta = checkpoint_state(folder)
    torn, fix = _refusal(folder)
    missing = [k for k in ("rng", "last_fired") if k not in tensors]
    if missing or not any(k.startswith("param.") for k in tensors):
        raise PosfeatError(
            f"{torn}: {CHECKPOINT} lacks {', '.join(missing) or 'the parameters'}; {fix}."
        )
    steps = {
        int(v.reshape(-1)[0])
        for k, v in tensors.items()
        if k.startswith("adam.") and k.endswith(".step")
    }
    if steps and steps != {meta["step"]}:
        raise PosfeatError(
            f"{torn}: it is torn (the training state says step {meta['step']}, the optimizer's "
            "tensors step "
            f"{', '.join(map(str, sorted(steps)))}); {fix}."
        )
    return tensors, meta
