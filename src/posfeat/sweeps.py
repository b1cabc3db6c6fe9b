"""Testing the note's two conjectures.

* :func:`sweep_widths`: positional features as a toy of feature splitting. One SAE per width on
  the same layer-0 grid (same recipe, seed and token distribution), each classified exactly as
  ``posfeat analyze`` does (:func:`posfeat.classify.classify` on the exact in-context grid
  statistics); the positional-feature count against width, with a fitted power law, and how one
  early positional feature splits (matched by decoder cosine similarity).
* :func:`sweep_context`: does fine-tuning on longer contexts repair length generalisation?
  Fine-tune the SAE on each longer context (``train --init``), measure FVU past the original
  context, positional-feature coverage of the new positions and spurious firing before and after,
  with the step budget used; an SAE of the same width trained from scratch on the longest context
  is the control.

Both are resumable: an SAE folder that is complete is reused, an interrupted one resumes from its
checkpoint. Tables, ``summary.json``, figures and ``section.html`` (a fragment for a report) are
written atomically into ``out``.
"""

from __future__ import annotations

import html
import json
import time
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

from .analysis import jsonable
from .atomic import write_text_atomic
from .classify import classify, spans
from .embeddings import Embeddings
from .errors import PosfeatError
from .evaluation import range_means, reconstruction_by_position
from .figures import save_figure
from .grid_stats import feature_stats
from .length import spurious_firing
from .reconstruction import sample_tokens
from .sae import SAE
from .sae_io import CFG_FILE, read_sae_folder
from .train import train_sae

WIDTH_COLUMNS = ["d_sae", "positional", "semantic", "mixed", "dead", "positional_mean_span", *[f"features_at_{p}" for p in range(8)],
                 "fvu_in_context", "l0_in_context", "train_seconds"]
CONTEXT_COLUMNS = ["sae", "context", "steps", "train_seconds", "fvu_in_original_context", "fvu_past_original_context",
                   "fvu_new_positions", "fvu_past_new_context", "l0_past_original_context", "positional_coverage_new_positions",
                   "spurious_per_token_past_original_context"]


def parse_ints(spec: str, what: str) -> list[int]:
    """``"256,512,1024"`` -> ``[256, 512, 1024]``, with a clear error."""
    try:
        values = [int(x) for x in spec.split(",") if x.strip()]
    except ValueError:
        raise PosfeatError(f"{what} {spec!r} is not a comma-separated list of integers; give e.g. 256,512,1024.") from None
    if not values or min(values) <= 0:
        raise PosfeatError(f"{what} {spec!r} must list positive integers.")
    return sorted(set(values))


def _train_or_reuse(folder: Path, emb: Embeddings, **kw) -> tuple[SAE, float]:
    """Reuse a complete SAE folder; otherwise train (resuming a checkpoint if one was left)."""
    if (folder / CFG_FILE).is_file():
        return read_sae_folder(folder, allow_any_hook=True), float("nan")
    t0 = time.time()
    res = train_sae(emb, out=folder, resume=True, **kw)
    return res.sae, time.time() - t0


def width_row(emb: Embeddings, sae: SAE, context: int, sample_weights: torch.Tensor | None, tokens: int, seed: int) -> dict:
    """Counts exactly as ``posfeat analyze`` makes them, plus in-context reconstruction."""
    st = feature_stats(emb, sae, range(context))
    kinds = classify(st)
    _, start, end = spans(st)
    pos = kinds == "positional"
    width = np.where(start >= 0, end - start + 1, 0)
    row = {"d_sae": sae.d_sae, **{k: int((kinds == k).sum()) for k in ("positional", "semantic", "mixed", "dead")},
           "positional_mean_span": float(width[pos & (width > 0)].mean()) if (pos & (width > 0)).any() else float("nan")}
    for p in range(8):
        row[f"features_at_{p}"] = int((pos & (start >= 0) & (start <= p) & (end >= p)).sum())
    sample = sample_tokens(emb, tokens, weights=sample_weights, seed=seed)
    df = reconstruction_by_position(emb, sae, sample, range(context), seed=seed)
    means = range_means(df, 0, context)
    row["fvu_in_context"], row["l0_in_context"] = means["fvu"], means["l0"]
    return row


def power_law(widths: np.ndarray, counts: np.ndarray) -> tuple[float, float]:
    """Least-squares fit ``count = c * width^alpha`` on log-log axes; returns ``(alpha, c)``."""
    ok = counts > 0
    if ok.sum() < 2:
        return float("nan"), float("nan")
    alpha, logc = np.polyfit(np.log(widths[ok]), np.log(counts[ok]), 1)
    return float(alpha), float(np.exp(logc))


def splitting(emb: Embeddings, saes: dict[int, SAE], context: int, min_cos: float = 0.5) -> dict:
    """Follow one early positional feature of the narrowest SAE across widths by decoder cosine similarity."""
    widths = sorted(saes)
    st0 = feature_stats(emb, saes[widths[0]], range(context))
    kinds0 = classify(st0)
    peak0 = st0.positions[st0.mean_by_position.argmax(1)]
    cand = np.nonzero((kinds0 == "positional") & (peak0 >= 1) & (peak0 <= 8))[0]
    if cand.size == 0:
        cand = np.nonzero(kinds0 == "positional")[0]
    if cand.size == 0:
        return {"reference": None, "widths": {}}
    ref = int(cand[np.argmax(st0.positional_score[cand])])
    d0 = saes[widths[0]].W_dec[ref]
    d0 = d0 / d0.norm()
    out = {"reference": ref, "reference_width": widths[0], "reference_peak": int(peak0[ref]), "widths": {}}
    for w in widths:
        W = saes[w].W_dec
        cos = (W / W.norm(dim=1, keepdim=True).clamp(min=1e-12)) @ d0
        st = feature_stats(emb, saes[w], range(context))
        match = [int(i) for i in torch.nonzero(cos >= min_cos).flatten()]
        out["widths"][w] = [{"feature": i, "cos": float(cos[i]), "peak": int(st.positions[st.mean_by_position[i].argmax()]),
                             "profile": st.mean_by_position[i].tolist()} for i in match]
    return out


def _label(emb: Embeddings, extra: str) -> str:
    return f"{emb.name}  ({extra})"


def sweep_widths(emb: Embeddings, *, context: int, widths: Sequence[int], out: str | Path, l1: float = 1.0, k: int | None = None,
                 steps: int = 2000, batch: int = 2048, lr: float = 5e-3, seed: int = 0, token_weights: torch.Tensor | str | Path | None = None,
                 tokens: int = 2048, command: str | None = None, model_name: str | None = None, progress: bool = True) -> pd.DataFrame:
    """Train one SAE per width (resumable) and count features as ``posfeat analyze`` does; see module docstring."""
    out = Path(out).expanduser().resolve()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise PosfeatError(f"Cannot write sweep folder {out} ({err.strerror}); choose a writable --out.") from None
    if not 1 <= context <= emb.n_ctx:
        raise PosfeatError(f"--context {context} is outside 1..{emb.n_ctx}, the positions of {emb.name}; pick a context within it.")
    arch = "topk" if k is not None else "relu"
    tw = token_weights
    if isinstance(tw, (str, Path)):
        from .train import load_token_weights

        tw = load_token_weights(tw, emb.d_vocab)
    rows, saes = [], {}
    for w in sorted(widths):
        sae, secs = _train_or_reuse(out / f"d_sae_{w}", emb, d_sae=w, context=context, arch=arch, l1=l1, k=k, steps=steps, batch=batch,
                                    lr=lr, seed=seed, token_weights=tw, command=command, model_name=model_name, progress=progress)
        saes[w] = sae
        rows.append({**width_row(emb, sae, context, tw, tokens, seed), "train_seconds": secs})
    df = pd.DataFrame(rows)[WIDTH_COLUMNS]
    alpha, c = power_law(df.d_sae.to_numpy(float), df.positional.to_numpy(float))
    split = splitting(emb, saes, context)
    summary = {"model": emb.name, "context": context, "widths": [int(w) for w in df.d_sae], "recipe": {"arch": arch, "l1": l1, "k": k,
               "steps": steps, "batch": batch, "lr": lr, "seed": seed}, "power_law_exponent": alpha, "power_law_coefficient": c,
               "positional_counts": [int(x) for x in df.positional], "splitting_reference": {k2: v for k2, v in split.items() if k2 != "widths"},
               "splitting_matches": {str(w): [m["feature"] for m in ms] for w, ms in split["widths"].items()}, "command": command}
    (out / "figures").mkdir(exist_ok=True)
    fig, ax = plt.subplots(figsize=(5.5, 4))
    ax.plot(df.d_sae, df.positional, "o-", label="positional features")
    if np.isfinite(alpha):
        xs = np.geomspace(df.d_sae.min(), df.d_sae.max(), 50)
        ax.plot(xs, c * xs**alpha, "--", label=f"fit: {c:.2g} * width^{alpha:.2f}")
    ax.plot(df.d_sae, df.semantic, "s:", alpha=0.6, label="semantic features")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("SAE width (d_sae)")
    ax.set_ylabel("features")
    ax.legend(fontsize=7)
    save_figure(fig, "Positional features against width", _label(emb, f"context {context}, {arch}"), out / "figures" / "width_counts.png")
    ws = sorted(split["widths"])
    fig, axs = plt.subplots(1, max(1, len(ws)), figsize=(3.2 * max(1, len(ws)), 3), sharey=True, squeeze=False)
    for ax, w in zip(axs[0], ws):
        for m in split["widths"][w]:
            ax.plot(m["profile"], lw=1, label=f"#{m['feature']} cos {m['cos']:.2f}")
        ax.set_title(f"d_sae {w}", fontsize=8)
        ax.set_xlabel("position")
        ax.legend(fontsize=6)
    axs[0][0].set_ylabel("mean activation")
    save_figure(fig, f"How feature {split.get('reference')} (d_sae {split.get('reference_width')}) splits across widths",
                _label(emb, f"context {context}"), out / "figures" / "width_splitting.png")
    write_text_atomic(out / "widths.csv", df.to_csv(index=False, float_format="%.6g"))
    write_text_atomic(out / "summary.json", json.dumps(jsonable(summary), indent=2) + "\n")
    write_text_atomic(out / "section.html", _section("Feature splitting with width", df, summary,
                      f"Positional features grow with width as width^{alpha:.2f} over {len(df)} widths "
                      f"({int(df.d_sae.min())}..{int(df.d_sae.max())}).", ["width_counts", "width_splitting"], out))
    return df


def _section(title: str, df: pd.DataFrame, summary: dict, sentence: str, figs: list[str], out: Path) -> str:
    import base64

    imgs = "".join(f'<img alt="{f}" src="data:image/png;base64,{base64.b64encode((out / "figures" / f"{f}.png").read_bytes()).decode()}">'
                   for f in figs)
    return (f"<section><h2>{html.escape(title)}</h2><p>{html.escape(sentence)}</p>{df.to_html(index=False, float_format=lambda v: f'{v:.4g}')}"
            f"{imgs}<p class=cap>Command: <code>{html.escape(str(summary.get('command')))}</code></p></section>\n")


def verdict(after: float, before: float, in_context: float) -> str:
    """``repaired``: FVU past the original context within 10% of the original in-context FVU;
    ``improved``: lower than before; else ``not repaired``."""
    if after <= 1.1 * in_context:
        return "repaired"
    return "improved" if after < before else "not repaired"


def context_row(emb: Embeddings, sae: SAE, label: str, base_context: int, sample, steps: int, secs: float, seed: int) -> tuple[dict, pd.DataFrame]:
    ctx = sae.context_size or base_context
    df = reconstruction_by_position(emb, sae, sample, range(emb.n_ctx), seed=seed)
    st = feature_stats(emb, sae, range(ctx))
    kinds = classify(st)
    _, start, end = spans(st)
    pos = np.nonzero(kinds == "positional")[0]
    covered = np.zeros(emb.n_ctx, bool)
    for f in pos:
        if start[f] >= 0:
            covered[start[f]: end[f] + 1] = True
    new = np.arange(base_context, ctx)
    spur = float("nan")
    if sae.separable:
        per_pos, _ = spurious_firing(emb, sae, kinds, base_context, np.arange(base_context, emb.n_ctx), top=0)
        spur = float(per_pos.spurious_per_token.mean())
    past = range_means(df, base_context, emb.n_ctx)
    return {
        "sae": label, "context": ctx, "steps": steps, "train_seconds": secs,
        "fvu_in_original_context": range_means(df, 0, base_context)["fvu"], "fvu_past_original_context": past["fvu"],
        "fvu_new_positions": range_means(df, base_context, ctx)["fvu"], "fvu_past_new_context": range_means(df, ctx, emb.n_ctx)["fvu"],
        "l0_past_original_context": past["l0"],
        "positional_coverage_new_positions": float(covered[new].mean()) if len(new) else float("nan"),
        "spurious_per_token_past_original_context": spur,
    }, df


def sweep_context(emb: Embeddings, sae: SAE, *, contexts: Sequence[int], out: str | Path, steps: int = 500, control_steps: int | None = None,
                  batch: int = 2048, lr: float = 1e-3, seed: int = 0, token_weights: torch.Tensor | None = None, tokens: int = 2048,
                  command: str | None = None, model_name: str | None = None, progress: bool = True) -> pd.DataFrame:
    """Fine-tune ``sae`` on each longer context and compare with a from-scratch control; see module docstring."""
    out = Path(out).expanduser().resolve()
    base = sae.context_size
    if base is None:
        raise PosfeatError(f"SAE {sae.name} records no context_size; the context sweep needs the context it was trained on.")
    bad = [c for c in contexts if c > emb.n_ctx]
    if bad:
        raise PosfeatError(f"--contexts {bad[0]} exceeds the {emb.n_ctx} positions of {emb.name}; give contexts within it.")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise PosfeatError(f"Cannot write sweep folder {out} ({err.strerror}); choose a writable --out.") from None
    if sae.threshold is not None:
        raise PosfeatError("The context sweep fine-tunes ReLU or TopK SAEs; this SAE is JumpReLU.")
    sample = sample_tokens(emb, tokens, weights=token_weights, seed=seed)
    rec = sae.cfg.get("posfeat_training", {}).get("config", {})
    arch = "topk" if sae.k is not None else "relu"
    l1 = float(rec.get("l1", 1.0))
    rows, curves = [], {}
    row, curves["before"] = context_row(emb, sae, "original", base, sample, 0, 0.0, seed)
    rows.append(row)
    for c in sorted(set(contexts)):
        if c <= base:
            continue
        tuned, secs = _train_or_reuse(out / f"finetune_ctx_{c}", emb, d_sae=sae.d_sae, context=c, arch=arch, l1=l1, k=sae.k, steps=steps,
                                      batch=batch, lr=lr, seed=seed, token_weights=token_weights, init=sae, command=command,
                                      model_name=model_name, progress=progress)
        row, curves[f"fine-tuned {c}"] = context_row(emb, tuned, f"fine-tuned to {c}", base, sample, steps, secs, seed)
        rows.append(row)
    full = max(contexts)
    ctl_steps = control_steps or int(rec.get("steps", 4 * steps))
    control, secs = _train_or_reuse(out / f"scratch_ctx_{full}", emb, d_sae=sae.d_sae, context=full, arch=arch, l1=l1, k=sae.k,
                                    steps=ctl_steps, batch=batch, lr=float(rec.get("lr", 5e-3)), seed=seed, token_weights=token_weights,
                                    command=command, model_name=model_name, progress=progress)
    row, curves[f"scratch {full}"] = context_row(emb, control, f"from scratch on {full}", base, sample, ctl_steps, secs, seed)
    rows.append(row)
    df = pd.DataFrame(rows)[CONTEXT_COLUMNS]
    (out / "figures").mkdir(exist_ok=True)
    fig, ax = plt.subplots(figsize=(8, 4))
    for name, cdf in curves.items():
        ax.plot(cdf.position, cdf.fvu, lw=1, label=name)
    ax.axvline(base - 0.5, color="k", ls="--", lw=0.8, label=f"original context ({base})")
    ax.set_yscale("log")
    ax.set_xlabel("position")
    ax.set_ylabel("FVU")
    ax.legend(fontsize=7)
    save_figure(fig, "Fine-tuning on longer contexts", _label(emb, sae.name), out / "figures" / "context_fvu.png")
    before = df.fvu_past_original_context.iloc[0]
    inside = df.fvu_in_original_context.iloc[0]
    verdicts = {r.sae: verdict(r.fvu_past_original_context, before, inside) for r in df.iloc[1:].itertuples()}
    summary = {"model": emb.name, "sae": sae.name, "original_context": base, "contexts": sorted(set(contexts)), "steps": steps,
               "control_steps": ctl_steps, "fvu_past_original_context_before": before,
               "rows": df.to_dict(orient="records"), "verdicts": verdicts, "command": command}
    write_text_atomic(out / "contexts.csv", df.to_csv(index=False, float_format="%.6g"))
    write_text_atomic(out / "summary.json", json.dumps(jsonable(summary), indent=2) + "\n")
    write_text_atomic(out / "section.html", _section("Repairing length generalisation", df, summary,
                      f"FVU past position {base}: {before:.4g} before; after fine-tuning: "
                      + ", ".join(f"{r.sae} {r.fvu_past_original_context:.4g}" for r in df.iloc[1:].itertuples()) + ".",
                      ["context_fvu"], out))
    return df
