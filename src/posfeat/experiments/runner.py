"""What one run does, wherever it runs (in the driver or in a Ray worker): train into its folder,
measure it, write ``run.json``.

A run whose folder holds a finished SAE (``cfg.json``) is not trained again; one whose
``<folder>.partial`` holds a checkpoint continues from it (``posfeat train --resume-or-start``),
which is how a retried Ray task or a rerun sweep picks up an interrupted run. The measurement
(counts exactly as ``posfeat analyze`` makes them, FVU on the run's seeded token sample) is written
to ``run.json`` in the run's folder; the aggregation reads only those files.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..analyses.classification import classify, spans
from ..analyses.evaluation import range_means, reconstruction_by_position
from ..analyses.length import spurious_counts
from ..core.embeddings import Embeddings
from ..core.sae import SAE
from ..engine.grid_stats import feature_stats, grid_statistics
from ..engine.sample import sample_tokens
from ..io.ownership import PARTIAL
from ..io.sae_folders import CFG_FILE, read_sae_folder
from ..io.safetensors_io import read_json
from ..io.writes import atomic_file
from ..training.loop import CHECKPOINT, checkpoint_state
from ..training.train import train_sae
from .plan import Run, Shared

RUN_FILE = "run.json"
KINDS4 = ("positional", "semantic", "mixed", "dead")
WIDTH_COLUMNS = [
    "d_sae",
    "seed",
    *KINDS4,
    "positional_mean_span",
    *[f"features_at_{p}" for p in range(8)],
    "fvu_in_context",
    "l0_in_context",
    "train_seconds",
]
CONTEXT_COLUMNS = [
    "sae",
    "context",
    "seed",
    "steps",
    "train_seconds",
    "fvu_in_original_context",
    "fvu_past_original_context",
    "fvu_new_positions",
    "fvu_past_new_context",
    "l0_past_original_context",
    "positional_coverage_new_positions",
    "spurious_per_token_past_original_context",
]
#: where and how long each run ran (``runs.csv`` has them after the measurements; the aggregation
# does not read them)
PROVENANCE_COLUMNS = ["node", "device", "wall_seconds"]
CURVE_FILE = "positional_by_step.csv"
WORKER_SUFFIX = ".worker.json"


def counts(emb: Embeddings, sae: SAE, context: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Kinds and main spans exactly as ``posfeat analyze`` makes them (exact in-context grid
    statistics)."""
    st = feature_stats(emb, sae, range(context))
    _, start, end = spans(st)
    return classify(st), start, end


class PositionalCurve:
    """Trainer callback: the exact positional-feature count at evenly spaced steps
    (``positional_by_step.csv``).

    The rows are kept in the run's ``.partial`` folder as they come, so a run resumed from a
    checkpoint keeps the points measured before it was interrupted (a point is measured again,
    identically, only if it came after the checkpoint)."""

    file_names = (
        CURVE_FILE,
    )  # what it writes beside the SAE and the checkpoint (declared to the output's kinds)

    def __init__(
        self, emb: Embeddings, context: int, points: int, steps: int, partial: Path | None = None
    ) -> None:
        self.emb, self.context, self.partial = emb, context, partial
        self.at = (
            set(np.unique(np.linspace(0, steps, points + 1).round().astype(int))[1:].tolist())
            if points > 0
            else set()
        )
        self.rows: dict[int, dict[str, int]] = {}
        if partial is not None and (partial / CURVE_FILE).is_file():
            self.rows = {
                int(r["step"]): {k: int(v) for k, v in r.items()}
                for r in pd.read_csv(partial / CURVE_FILE).to_dict("records")
            }

    def __call__(self, trainer: Any) -> None:
        if trainer.step_no not in self.at:
            return
        folded = trainer.model.fold(trainer.scaling.scale)
        sae = SAE.from_arrays(
            folded["W_enc"],
            folded["W_dec"],
            folded["b_enc"],
            folded["b_dec"],
            **trainer.model.arch.params(),
        )
        kinds = counts(self.emb, sae, self.context)[0]
        self.rows[trainer.step_no] = {
            "step": trainer.step_no,
            **{k: int((kinds == k).sum()) for k in KINDS4},
        }
        if self.partial is not None and self.partial.is_dir():
            with atomic_file(self.partial / CURVE_FILE) as tmp:
                tmp.write_text(self.text)

    @property
    def text(self) -> str:
        return pd.DataFrame(
            [self.rows[s] for s in sorted(self.rows)], columns=["step", *KINDS4]
        ).to_csv(index=False)

    @property
    def files(self) -> dict[str, str]:
        return {CURVE_FILE: self.text}


def train_or_reuse(
    run: Run, folder: Path, shared: Shared, emb: Embeddings, progress: bool
) -> tuple[SAE, float, int]:
    """The run's SAE: reused when finished, else trained (continuing a checkpoint); ``(sae, seconds,
    step resumed from)``."""
    if (folder / CFG_FILE).is_file():
        return read_sae_folder(folder, allow_any_hook=True).to(emb.device), float("nan"), -1
    partial = folder.with_name(folder.name + PARTIAL)
    resumed = int(checkpoint_state(partial)["step"]) if (partial / CHECKPOINT).is_file() else 0
    cfg = run.config
    curve = (
        PositionalCurve(emb, cfg.context, run.curve_points, cfg.steps, partial)
        if run.curve_points
        else None
    )
    init = shared.sae.to(emb.device) if run.init else None
    t0 = time.monotonic()
    res = train_sae(
        emb,
        cfg,
        out=folder,
        resume_or_start=True,
        token_weights=shared.token_weights,
        init=init,
        command=shared.command,
        model_name=shared.model_name,
        progress=progress,
        callback=curve,
    )
    return res.sae.to(emb.device), time.monotonic() - t0, resumed


def width_row(
    emb: Embeddings, sae: SAE, context: int, tokens: int, token_weights: Any, seed: int
) -> dict[str, Any]:
    """One (width, seed): counts exactly as ``posfeat analyze`` makes them, plus in-context
    reconstruction."""
    kinds, start, end = counts(emb, sae, context)
    pos = kinds == "positional"
    width = np.where(start >= 0, end - start + 1, 0)
    row: dict[str, Any] = {
        "d_sae": sae.d_sae,
        "seed": seed,
        **{k: int((kinds == k).sum()) for k in KINDS4},
        "positional_mean_span": float(width[pos & (width > 0)].mean())
        if (pos & (width > 0)).any()
        else float("nan"),
    }
    for p in range(8):
        row[f"features_at_{p}"] = int((pos & (start >= 0) & (start <= p) & (end >= p)).sum())
    sample = sample_tokens(emb, tokens, weights=token_weights, seed=seed)
    means = range_means(
        reconstruction_by_position(emb, sae, sample, range(context), seed=seed), 0, context
    )
    row["fvu_in_context"], row["l0_in_context"] = means["fvu"], means["l0"]
    return row


def context_row(
    emb: Embeddings, sae: SAE, label: str, base: int, tokens: int, token_weights: Any, seed: int
) -> dict[str, Any]:
    """One SAE of the context sweep: FVU inside and past the original context, coverage of new
    positions, spurious firing."""
    ctx = sae.context_size or base
    df = reconstruction_by_position(
        emb,
        sae,
        sample_tokens(emb, tokens, weights=token_weights, seed=seed),
        range(emb.n_ctx),
        seed=seed,
    )
    if sae.separable:  # the three position sets share each block's token parts
        (st_ctx, st_base, st_all), _ = grid_statistics(
            emb, sae, [range(ctx), range(base), range(emb.n_ctx)]
        )
    else:
        st_ctx = feature_stats(emb, sae, range(ctx))
    kinds, (_, start, end) = classify(st_ctx), spans(st_ctx)
    covered = np.zeros(emb.n_ctx, bool)
    for f in np.nonzero((kinds == "positional") & (start >= 0))[0]:
        covered[start[f] : end[f] + 1] = True
    spur = float("nan")
    if sae.separable:
        per_pos, _ = spurious_counts(st_all, base, classify(st_base))
        spur = float(per_pos.spurious_per_token[per_pos.position >= base].mean())
    past = range_means(df, base, emb.n_ctx)
    return {
        "sae": label,
        "context": ctx,
        "seed": seed,
        "fvu_in_original_context": range_means(df, 0, base)["fvu"],
        "fvu_past_original_context": past["fvu"],
        "fvu_new_positions": range_means(df, base, ctx)["fvu"],
        "fvu_past_new_context": range_means(df, ctx, emb.n_ctx)["fvu"],
        "l0_past_original_context": past["l0"],
        "positional_coverage_new_positions": float(covered[base:ctx].mean())
        if ctx > base
        else float("nan"),
        "spurious_per_token_past_original_context": spur,
        "fvu_by_position": [float(v) for v in df.fvu],
    }


def _clean(row: dict[str, Any]) -> dict[str, Any]:
    return {
        k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in row.items()
    }


def execute(
    run: Run,
    sweep: Path,
    shared: Shared,
    device: Any = None,
    progress: bool = False,
    where: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train (or reuse) and measure ``run`` under the sweep folder ``sweep``; write and return its
    row (``run.json``).

    The record names the node (``where['node']``; default this machine's name), the device
    (``where['device']``; default the one the run used) and the run's wall time here
    (``wall_seconds``: training and measurement)."""
    t0 = time.monotonic()
    emb = shared.emb if device is None else shared.emb.to(device)
    folder = sweep / run.key
    worker = folder.with_name(
        folder.name + WORKER_SUFFIX
    )  # who runs it, while it runs (pid and host)
    worker.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(worker) as tmp:
        tmp.write_text(
            json.dumps({"pid": os.getpid(), "host": os.uname().nodename, "started": time.time()})
            + "\n"
        )
    try:
        return _execute(run, folder, shared, emb, progress, where or {}, t0)
    finally:
        worker.unlink(missing_ok=True)


def _execute(
    run: Run,
    folder: Path,
    shared: Shared,
    emb: Embeddings,
    progress: bool,
    where: dict[str, Any],
    t0: float,
) -> dict[str, Any]:
    if run.trains:
        sae, secs, resumed = train_or_reuse(run, folder, shared, emb, progress)
        steps = run.config.steps
    else:
        sae, secs, resumed, steps = shared.sae.to(emb.device), 0.0, -1, 0
        folder.mkdir(parents=True, exist_ok=True)
    tw = shared.token_weights
    if run.kind == "width":
        row = width_row(emb, sae, run.config.context, run.tokens, tw, run.seed)
    else:
        row = context_row(
            emb, sae, run.label, int(shared.base_context or 0), run.tokens, tw, run.seed
        )
        row["steps"] = steps
    previous = read_json(folder / RUN_FILE) if (folder / RUN_FILE).is_file() else {}
    row["train_seconds"] = (
        secs
        if not math.isnan(secs)
        else previous.get("row", {}).get("train_seconds", _logged_seconds(folder))
    )
    record = {
        "key": run.key,
        "label": run.label,
        "seed": run.seed,
        "row": _clean(row),
        "resumed_from_step": resumed if resumed > 0 else None,
        "host": os.uname().nodename,
        "pid": os.getpid(),
        "node": os.uname().nodename,
        "device": str(emb.device),
        **where,
        "wall_seconds": time.monotonic() - t0,
    }
    with atomic_file(folder / RUN_FILE) as tmp:
        tmp.write_text(json.dumps(record, indent=1) + "\n")
    return record


def _logged_seconds(folder: Path) -> float | None:
    """Training time of a run finished by an earlier posfeat (the last ``elapsed_s`` of its log),
    when there is no ``run.json``."""
    log = folder / "training_log.csv"
    if not log.is_file():
        return None
    try:
        return float(pd.read_csv(log).elapsed_s.iloc[-1])
    except (ValueError, KeyError, IndexError, AttributeError):
        return None


def read_run(sweep: Path, run: Run) -> dict[str, Any] | None:
    """The finished run's record, or None when it has not finished."""
    path = sweep / run.key / RUN_FILE
    return read_json(path) if path.is_file() else None
