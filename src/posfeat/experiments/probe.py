"""``--plan``: the runs of a sweep with each one's estimated memory and time, from a short measured
probe, without training.

The probe times a few optimisation steps (after one warm-up step) at the smallest and the largest
width of the plan on the chosen device, with the plan's recipe; a step's time is taken as linear in
the width through those two points (on the CPU a wide SAE is timed at a smaller batch, about
``PROBE_FLOPS`` of arithmetic a step but at least ``PROBE_BATCH`` inputs, and scaled linearly to the
plan's batch; the fastest of the timed steps counts, and on the CPU a step's time is the process's
CPU time over its threads when that is less than the wall time, so time spent waiting for a core on
a busy machine is left out). A run's time is its steps times that, plus its measurement (the exact
statistics and the token sample), estimated from its share of floating-point work relative to a
step. Memory is :func:`posfeat.experiments.executors.memory_estimate`. Nothing is written.
"""

from __future__ import annotations

import os
import time
from typing import Any

import pandas as pd
import torch

from ..core.archs import architecture
from ..core.embeddings import Embeddings
from ..training.loop import Sampler, Scaling, Trainer
from ..training.model import TrainingSAE
from .executors import memory_estimate
from .plan import Run, Shared

PROBE_STEPS = 3
PROBE_BATCH = 128
#: on the CPU a probe step is at most about this much arithmetic (a smaller batch, scaled up), at
# least PROBE_BATCH inputs
PROBE_FLOPS = 2e10


def _step_seconds(emb: Embeddings, run: Run, steps: int, batch: int) -> float:
    cfg = run.config
    cfg = type(cfg)(
        **{
            **cfg.as_dict(),
            "steps": 10**6,
            "batch": batch,
            "resample_at": (0.5,),
            "checkpoint_seconds": 1e9,
        }
    )
    gen = torch.Generator().manual_seed(0)
    sampler = Sampler(emb, cfg.context, None, gen)
    scaling = Scaling.measure(emb, sampler, None)
    model = TrainingSAE(emb.d_model, cfg.d_sae, architecture(cfg.arch).from_settings(cfg), gen).to(
        emb.device
    )
    trainer = Trainer(model, sampler, cfg, scaling, None, progress=False)
    trainer.step()
    if emb.device.type == "cuda":
        torch.cuda.synchronize()
    times = []
    for _ in range(steps):
        t0, c0 = time.perf_counter(), time.process_time()
        trainer.step()
        if emb.device.type == "cuda":
            torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
        # on a shared CPU, the time this process computed (over its threads), not the time
        # it waited for a core
        else:
            times.append(
                min(
                    time.perf_counter() - t0,
                    (time.process_time() - c0) / max(1, torch.get_num_threads()),
                )
            )
    return min(times)


def plan_table(
    emb: Embeddings, runs: list[Run], shared: Shared | None = None, steps: int = PROBE_STEPS
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """One row per run (``run``, ``d_sae``, ``steps``, ``memory_gib``, ``seconds``) and the probe's
    measurements and totals."""
    training = [r for r in runs if r.trains]
    widths = sorted({r.config.d_sae for r in training})
    batch = training[0].config.batch if training else 1

    def probe_batch(w: int) -> int:
        return (
            batch
            if emb.device.type == "cuda"
            else min(batch, max(PROBE_BATCH, int(PROBE_FLOPS / (12 * emb.d_model * w))))
        )

    t_probe = time.perf_counter()
    measured = {
        w: _step_seconds(
            emb, next(r for r in training if r.config.d_sae == w), steps, probe_batch(w)
        )
        * batch
        / probe_batch(w)
        for w in ({widths[0], widths[-1]} if widths else set())
    }
    probe_seconds = time.perf_counter() - t_probe
    w0, w1 = (widths[0], widths[-1]) if widths else (1, 1)
    slope = (measured[w1] - measured[w0]) / (w1 - w0) if w1 != w0 else 0.0

    def per_step(w: int) -> float:
        return max(measured[w0] + slope * (w - w0), 0.0)

    rows = []
    for r in runs:
        d_sae = (
            r.config.d_sae
            if r.trains
            else (shared.sae.d_sae if shared is not None and shared.sae is not None else w0)
        )
        n_steps = r.config.steps if r.trains else 0
        context = r.config.context if r.trains else emb.n_ctx
        b = r.config.batch if r.trains else batch
        step_flops = 6 * b * emb.d_model * d_sae * 2
        meas_flops = (
            2 * emb.d_vocab * emb.d_model * d_sae
            + 4 * max(r.tokens, 1) * emb.n_ctx * emb.d_model * d_sae
        )
        t_step = per_step(d_sae) if widths else 0.0
        rows.append(
            {
                "run": r.key,
                "d_sae": d_sae,
                "context": context,
                "steps": n_steps,
                "memory_gib": memory_estimate(emb.d_model, d_sae, b, emb.d_vocab, emb.n_ctx)
                / 2**30,
                "seconds": n_steps * t_step + t_step * meas_flops / step_flops,
            }
        )
    df = pd.DataFrame(rows)
    info = {
        "device": str(emb.device),
        "probe_steps": steps,
        "probe_batch": {int(w): probe_batch(w) for w in measured},
        "batch": batch,
        "probe_seconds": probe_seconds,
        "seconds_per_step": {int(w): float(s) for w, s in measured.items()},
        "total_device_hours": float(df.seconds.sum() / 3600),
        "peak_memory_gib": float(df.memory_gib.max()) if len(df) else 0.0,
        "load_average": float(os.getloadavg()[0]) if hasattr(os, "getloadavg") else float("nan"),
        "cpus": os.cpu_count(),
    }
    return df, info


def plan_text(df: pd.DataFrame, info: dict[str, Any]) -> str:
    """The plan as the CLI prints it: the runs, then what the estimates rest on and the total."""
    lines = [
        df.to_string(
            index=False, formatters={"memory_gib": "{:.2f}".format, "seconds": "{:.0f}".format}
        )
    ]
    per = ", ".join(
        f"d_sae {w}: {s:.3g} s (timed at batch {info['probe_batch'][w]})"
        for w, s in info["seconds_per_step"].items()
    )
    lines.append(
        f"probe on {info['device']}: fastest of {info['probe_steps']} steps, scaled to batch "
        f"{info['batch']}, per step: "
        f"{per}; probe took {info['probe_seconds']:.1f} s"
        + (
            f" (load average {info['load_average']:.1f} on {info['cpus']} CPUs)"
            if info["device"] == "cpu"
            else ""
        )
    )
    lines.append(
        f"{len(df)} runs; total {df.seconds.sum():.0f} s = {info['total_device_hours']:.2f} "
        f"device-hours on {info['device']}; "
        f"largest run needs about {info['peak_memory_gib']:.2f} GiB"
    )
    return "\n".join(lines)
