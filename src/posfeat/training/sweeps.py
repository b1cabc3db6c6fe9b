"""Testing the note's two conjectures, with several seeds.

* :func:`sweep_widths`: positional features as a toy of feature splitting. One SAE per width and
  seed on the same layer-0 grid (same recipe and token distribution), each classified exactly as
  ``posfeat analyze`` does; the positional-feature count against width as mean +- sd over seeds,
  a power law fitted to every (width, count) with a 95% confidence interval on its exponent, how
  one early positional feature splits (matched by :func:`posfeat.compare_saes`), and the count
  against training steps for the widest SAE.
* :func:`sweep_context`: does fine-tuning on longer contexts repair length generalisation?
  Fine-tune the SAE on each longer context (seed by seed), measure FVU past the original context,
  positional-feature coverage of the new positions and spurious firing, against an SAE of the same
  width trained from scratch on the longest context (the control).

Both resume: a finished SAE folder is reused, an interrupted one continues from its checkpoint. A
sweep works in ``<out>.partial`` and moves it into place when done; pointed at a finished sweep of
the same kind it extends it in place (new widths, contexts or seeds). Tables, ``summary.json``,
figures and ``section.html`` (a fragment for a report) are written atomically.
"""

from __future__ import annotations

import html
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as sstats

from ..analyses.classify import classify, spans
from ..analyses.compare import compare_saes
from ..analyses.evaluation import range_means, reconstruction_by_position
from ..analyses.length import spurious_counts
from ..core.embeddings import Embeddings
from ..core.errors import PosfeatError, arg
from ..core.sae import SAE
from ..engine.grid_stats import feature_stats, grid_statistics
from ..engine.sample import TokenSample, sample_tokens
from ..io.atomic import check_target, finish_partial, lock_target, partial_folder, resolve_target, write_marker, write_text_atomic, written_by_posfeat
from ..io.sae_folders import CFG_FILE, read_sae_folder
from ..io.tokens import token_weights_arg
from ..outputs.figures import new_figure, png_data_uri, save_figure
from ..outputs.write import dump_json
from .train import train_sae

KINDS4 = ("positional", "semantic", "mixed", "dead")
RUN_COLUMNS = ["d_sae", "seed", *KINDS4, "positional_mean_span", *[f"features_at_{p}" for p in range(8)], "fvu_in_context",
               "l0_in_context", "train_seconds"]
CONTEXT_COLUMNS = ["sae", "context", "seed", "steps", "train_seconds", "fvu_in_original_context", "fvu_past_original_context",
                   "fvu_new_positions", "fvu_past_new_context", "l0_past_original_context", "positional_coverage_new_positions",
                   "spurious_per_token_past_original_context"]


def parse_ints(spec: str, what: str) -> list[int]:
    """``"256,512,1024"`` -> ``[256, 512, 1024]``, with a clear error."""
    try:
        values = [int(x) for x in str(spec).split(",") if x.strip()]
    except ValueError:
        raise PosfeatError(f"{what} {spec!r} is not a comma-separated list of integers; give e.g. 256,512,1024.") from None
    if not values or min(values) <= 0:
        raise PosfeatError(f"{what} {spec!r} must list positive integers.")
    return sorted(set(values))


# ---------------------------------------------------------------------------- the sweep folder
class SweepFolder:
    """Where a sweep works (see module docstring): ``path`` while running, ``target`` once done."""

    def __init__(self, out: Any, kind: str, force: bool, command: str | None) -> None:
        target = resolve_target(out)
        self.in_place = target.is_dir() and written_by_posfeat(target) == kind
        self.target, self.kind, self.command = (lock_target(target).target if self.in_place else check_target(out, force=force)), kind, command
        self.path = self.target if self.in_place else partial_folder(self.target, kind)
        try:
            (self.path / "figures").mkdir(exist_ok=True)
        except OSError as err:
            raise PosfeatError(f"Cannot write sweep folder {self.path} ({err.strerror or err}); choose a writable {arg('out')}.") from None

    def finish(self) -> Path:
        if self.in_place:
            write_marker(self.path, self.kind, self.command)
            return self.target
        return finish_partial(self.path, self.target, self.kind, self.command)


def train_or_reuse(folder: Path, emb: Embeddings, **kw: Any) -> tuple[SAE, float]:
    """Reuse a finished SAE folder; otherwise train (continuing a checkpoint if one was left)."""
    if (folder / CFG_FILE).is_file():
        return read_sae_folder(folder, allow_any_hook=True).to(emb.device), float("nan")
    t0 = time.time()
    res = train_sae(emb, out=folder, resume_or_start=True, **kw)
    return res.sae.to(emb.device), time.time() - t0


def counts(emb: Embeddings, sae: SAE, context: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Kinds and main spans exactly as ``posfeat analyze`` makes them (exact in-context grid statistics)."""
    st = feature_stats(emb, sae, range(context))
    _, start, end = spans(st)
    return classify(st), start, end


def mean_sd(df: pd.DataFrame, by: str, cols: list[str]) -> pd.DataFrame:
    """Per value of ``by``: ``n_seeds`` and ``<col>`` (mean), ``<col>_sd`` (sample sd; NaN for one seed) for each column."""
    g = df.groupby(by, sort=True)
    out = pd.DataFrame({"n_seeds": g.size()})
    for c in cols:
        out[c] = g[c].mean()
        out[f"{c}_sd"] = g[c].std(ddof=1)
    return out.reset_index()


def power_law(widths: np.ndarray, values: np.ndarray, level: float = 0.95) -> dict[str, float]:
    """Least squares ``log count = alpha log width + log c`` over every run; ``alpha`` with a ``level`` t-interval."""
    ok = values > 0
    x, y = np.log(widths[ok]), np.log(values[ok])
    nan = float("nan")
    if len(np.unique(x)) < 2:
        return {"alpha": nan, "c": nan, "alpha_low": nan, "alpha_high": nan, "points": int(ok.sum())}
    alpha, logc = np.polyfit(x, y, 1)
    if len(x) > 2:
        resid = y - (alpha * x + logc)
        se = float(np.sqrt(resid @ resid / (len(x) - 2) / ((x - x.mean()) ** 2).sum()))
        half = float(sstats.t.ppf(0.5 + level / 2, len(x) - 2)) * se
    else:
        half = nan
    return {"alpha": float(alpha), "c": float(np.exp(logc)), "alpha_low": float(alpha - half), "alpha_high": float(alpha + half),
            "points": int(ok.sum())}


def section(title: str, table: pd.DataFrame, command: str | None, sentence: str, figs: list[Path]) -> str:
    """An HTML fragment for report.html (``posfeat analyze --include-sweep``), figures embedded."""
    imgs = "".join(f'<img alt="{html.escape(p.stem)}" src="{png_data_uri(p)}">' for p in figs)
    return (f"<section><h2>{html.escape(title)}</h2><p>{html.escape(sentence)}</p>{table.to_html(index=False, float_format=lambda v: f'{v:.4g}')}"
            f"{imgs}<p class=cap>Command: <code>{html.escape(str(command))}</code></p></section>\n")


# ---------------------------------------------------------------------------- widths
class PositionalCurve:
    """Trainer callback: the exact positional-feature count at evenly spaced steps (written as positional_by_step.csv)."""

    def __init__(self, emb: Embeddings, context: int, points: int, steps: int) -> None:
        self.emb, self.context = emb, context
        self.at = set(np.unique(np.linspace(0, steps, points + 1).round().astype(int))[1:].tolist()) if points > 0 else set()
        self.rows: list[dict[str, int]] = []

    def __call__(self, trainer: Any) -> None:
        if trainer.step_no not in self.at:
            return
        folded = trainer.model.fold(trainer.scaling.scale)
        sae = SAE.from_arrays(folded["W_enc"], folded["W_dec"], folded["b_enc"], folded["b_dec"], k=trainer.model.k)
        kinds = counts(self.emb, sae, self.context)[0]
        self.rows.append({"step": trainer.step_no, **{k: int((kinds == k).sum()) for k in KINDS4}})

    @property
    def files(self) -> dict[str, str]:
        return {"positional_by_step.csv": pd.DataFrame(self.rows, columns=["step", *KINDS4]).to_csv(index=False)}


def width_run(emb: Embeddings, sae: SAE, context: int, sample: TokenSample, seed: int) -> dict[str, Any]:
    """One (width, seed): counts exactly as ``posfeat analyze`` makes them, plus in-context reconstruction."""
    kinds, start, end = counts(emb, sae, context)
    pos = kinds == "positional"
    width = np.where(start >= 0, end - start + 1, 0)
    row: dict[str, Any] = {"d_sae": sae.d_sae, "seed": seed, **{k: int((kinds == k).sum()) for k in KINDS4},
                           "positional_mean_span": float(width[pos & (width > 0)].mean()) if (pos & (width > 0)).any() else float("nan")}
    for p in range(8):
        row[f"features_at_{p}"] = int((pos & (start >= 0) & (start <= p) & (end >= p)).sum())
    means = range_means(reconstruction_by_position(emb, sae, sample, range(context), seed=seed), 0, context)
    row["fvu_in_context"], row["l0_in_context"] = means["fvu"], means["l0"]
    return row


def splitting(emb: Embeddings, saes: dict[int, SAE], context: int, threshold: float = 0.5) -> dict[str, Any]:
    """Follow one early positional feature of the narrowest SAE into each wider one: its children by :func:`compare_saes`."""
    widths = sorted(saes)
    st = feature_stats(emb, saes[widths[0]], range(context))
    kinds = classify(st)
    peak = st.positions[st.mean_by_position.argmax(1)]
    cand = np.nonzero((kinds == "positional") & (peak >= 1) & (peak <= 8))[0]
    cand = cand if cand.size else np.nonzero(kinds == "positional")[0]
    if cand.size == 0:
        return {"reference": None, "widths": {}}
    ref = int(cand[np.argmax(st.positional_score[cand])])
    out: dict[str, Any] = {"reference": ref, "reference_width": widths[0], "reference_peak": int(peak[ref]), "threshold": threshold, "widths": {}}
    for w in widths:
        children = compare_saes(saes[widths[0]], saes[w], threshold=threshold).children(ref)
        if children:
            sw = feature_stats(emb, saes[w].subset(children), range(context))
            out["widths"][w] = [{"feature": c, "peak": int(sw.positions[sw.mean_by_position[i].argmax()]), "profile": sw.mean_by_position[i].tolist()}
                                for i, c in enumerate(children)]
        else:
            out["widths"][w] = []
    return out


def _width_figures(emb: Embeddings, table: pd.DataFrame, runs: pd.DataFrame, fit: dict[str, float], split: dict[str, Any],
                   curve: pd.DataFrame, folder: Path, context: int) -> list[Path]:
    lab = f"{emb.name} (context {context}; {int(table.n_seeds.max())} seed(s) per width)"
    fig, ax = new_figure(6.2, 4.6, "Positional features against SAE width (mean +- sd over seeds)", lab)
    ax.errorbar(table.d_sae, table.positional, yerr=table.positional_sd.fillna(0), fmt="o-", capsize=3, label="positional features")
    ax.scatter(runs.d_sae, runs.positional, s=8, color="k", alpha=0.4, label="each seed")
    if np.isfinite(fit["alpha"]):
        xs = np.geomspace(table.d_sae.min(), table.d_sae.max(), 50)
        ax.plot(xs, fit["c"] * xs ** fit["alpha"], "--", label=f"fit: {fit['c']:.2g} * width^{fit['alpha']:.2f} "
                f"(95% CI {fit['alpha_low']:.2f}..{fit['alpha_high']:.2f})")
    ax.set(xscale="log", yscale="log" if (runs.positional > 0).any() else "linear", xlabel="SAE width (d_sae)", ylabel="positional features")
    ax.legend(fontsize=7)
    paths = [save_figure(fig, folder / "width_counts.png")]
    ws = sorted(split["widths"])
    fig, axs = new_figure(3.3 * max(1, len(ws)), 3.4, f"How feature {split.get('reference')} (d_sae {split.get('reference_width')}, "
                          f"peak {split.get('reference_peak')}) splits across widths (first seed; children by decoder cosine >= "
                          f"{split.get('threshold')})", emb.name, ncols=max(1, len(ws)), sharey=True, squeeze=False)
    for ax, w in zip(axs[0], ws):
        for m in split["widths"][w]:
            ax.plot(m["profile"], lw=1, label=f"#{m['feature']} (peak {m['peak']})")
        ax.set_title(f"d_sae {w}", fontsize=8)
        ax.set_xlabel("position")
        if split["widths"][w]:
            ax.legend(fontsize=6)
    axs[0][0].set_ylabel("mean activation")
    paths.append(save_figure(fig, folder / "width_splitting.png"))
    if len(curve):
        fig, ax = new_figure(6.2, 4.2, f"Positional features during training (d_sae {int(table.d_sae.max())}, first seed)", lab)
        ax.plot(curve.step, curve.positional, "o-")
        ax.set(xlabel="training step", ylabel="positional features (exact)")
        paths.append(save_figure(fig, folder / "width_steps.png"))
    return paths


def sweep_widths(emb: Embeddings, *, context: int, widths: Sequence[int], out: Any, seeds: int = 3, tokens: int = 2048,
                 curve_points: int = 10, token_weights: Any = None, command: str | None = None, model_name: str | None = None,
                 progress: bool = True, force: bool = False, **recipe: Any) -> pd.DataFrame:
    """Train one SAE per width and seed (resumable) and count features as ``posfeat analyze`` does; see module docstring.

    Returns the per-width table (mean and sd over seeds); ``runs.csv`` in ``out`` has every run.
    ``recipe``: :class:`posfeat.training.TrainConfig` fields (``l1``, ``lr``, ``steps``, ``batch``, ``seed`` = the first seed, ...).
    """
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise PosfeatError(f"{arg('seeds', seeds)} must be a positive whole number.")
    if not widths or any(isinstance(w, bool) or not isinstance(w, (int, np.integer)) or w <= 0 for w in widths):
        raise PosfeatError(f"{arg('d_sae', widths)} must list positive integer widths.")
    if not isinstance(context, int) or not 1 <= context <= emb.n_ctx:
        raise PosfeatError(f"{arg('context', context)} is outside 1..{emb.n_ctx}, the positions of {emb.name}; pick a context within it.")
    if len({int(w) for w in widths}) < 2:
        raise PosfeatError(f"{arg('d_sae', ','.join(map(str, widths)))} lists one width; a sweep needs at least two widths to fit how "
                           "the count grows with width.")
    tw = token_weights_arg(token_weights, emb.d_vocab)
    base_seed = int(recipe.pop("seed", 0))
    steps = int(recipe.get("steps", 2000))
    work = SweepFolder(out, "sweep widths", force, command)
    rows, first = [], {}
    widths = sorted({int(w) for w in widths})
    for w in widths:
        for s in range(base_seed, base_seed + seeds):
            folder = work.path / f"d_sae_{w}" / f"seed_{s}"
            curve = PositionalCurve(emb, context, curve_points, steps) if (w == widths[-1] and s == base_seed) else None
            sae, secs = train_or_reuse(folder, emb, d_sae=w, context=context, seed=s, token_weights=tw, command=command, model_name=model_name,
                                       progress=progress, callback=curve, **recipe)
            first.setdefault(w, sae)
            rows.append({**width_run(emb, sae, context, sample_tokens(emb, tokens, weights=tw, seed=s), s), "train_seconds": secs})
    runs = pd.DataFrame(rows)[RUN_COLUMNS]
    table = mean_sd(runs, "d_sae", ["positional", "semantic", "mixed", "dead", "positional_mean_span", "fvu_in_context", "l0_in_context"])
    fit = power_law(runs.d_sae.to_numpy(float), runs.positional.to_numpy(float))
    split = splitting(emb, first, context)
    curve_path = work.path / f"d_sae_{widths[-1]}" / f"seed_{base_seed}" / "positional_by_step.csv"
    curve_df = pd.read_csv(curve_path) if curve_path.is_file() else pd.DataFrame(columns=["step", *KINDS4])
    figs = _width_figures(emb, table, runs, fit, split, curve_df, work.path / "figures", context)
    summary = {"model": emb.name, "context": context, "widths": widths, "seeds": list(range(base_seed, base_seed + seeds)),
               "recipe": {**recipe, "seed": base_seed}, "power_law": fit, "power_law_exponent": fit["alpha"],
               "positional_counts": {str(int(r.d_sae)): [float(r.positional), None if np.isnan(r.positional_sd) else float(r.positional_sd)]
                                     for r in table.itertuples()},
               "splitting_reference": {k: v for k, v in split.items() if k != "widths"},
               "splitting_matches": {str(w): [m["feature"] for m in ms] for w, ms in split["widths"].items()},
               "positional_by_step": curve_df.to_dict(orient="records"), "command": command}
    write_text_atomic(work.path / "widths.csv", table.to_csv(index=False, float_format="%.6g"))
    write_text_atomic(work.path / "runs.csv", runs.to_csv(index=False, float_format="%.6g"))
    write_text_atomic(work.path / "summary.json", dump_json(summary))
    sentence = (f"Positional features grow with width as width^{fit['alpha']:.2f} (95% CI {fit['alpha_low']:.2f} to {fit['alpha_high']:.2f}) "
                f"over {len(widths)} widths ({widths[0]}..{widths[-1]}) and {seeds} seed(s) each.")
    write_text_atomic(work.path / "section.html", section("Feature splitting with width", table, command, sentence, figs))
    work.finish()
    return table


# ---------------------------------------------------------------------------- contexts
def context_run(emb: Embeddings, sae: SAE, label: str, base: int, sample: TokenSample, steps: int, secs: float, seed: int) -> dict[str, Any]:
    """One SAE of the context sweep: FVU inside and past the original context, coverage of new positions, spurious firing."""
    ctx = sae.context_size or base
    df = reconstruction_by_position(emb, sae, sample, range(emb.n_ctx), seed=seed)
    if sae.separable:  # the three position sets share each block's token parts
        (st_ctx, st_base, st_all), _ = grid_statistics(emb, sae, [range(ctx), range(base), range(emb.n_ctx)])
    else:
        st_ctx = feature_stats(emb, sae, range(ctx))
    kinds, (_, start, end) = classify(st_ctx), spans(st_ctx)
    covered = np.zeros(emb.n_ctx, bool)
    for f in np.nonzero((kinds == "positional") & (start >= 0))[0]:
        covered[start[f]: end[f] + 1] = True
    spur = float("nan")
    if sae.separable:
        per_pos, _ = spurious_counts(st_all, base, classify(st_base))
        spur = float(per_pos.spurious_per_token[per_pos.position >= base].mean())
    past = range_means(df, base, emb.n_ctx)
    return {"sae": label, "context": ctx, "seed": seed, "steps": steps, "train_seconds": secs,
            "fvu_in_original_context": range_means(df, 0, base)["fvu"], "fvu_past_original_context": past["fvu"],
            "fvu_new_positions": range_means(df, base, ctx)["fvu"], "fvu_past_new_context": range_means(df, ctx, emb.n_ctx)["fvu"],
            "l0_past_original_context": past["l0"],
            "positional_coverage_new_positions": float(covered[base:ctx].mean()) if ctx > base else float("nan"),
            "spurious_per_token_past_original_context": spur, "_curve": df[["position", "fvu"]]}


def verdict(after: float, before: float, in_context: float) -> str:
    """``repaired``: FVU past the original context within 10% of the original in-context FVU; ``improved``: lower than
    before; else ``not repaired``."""
    if after <= 1.1 * in_context:
        return "repaired"
    return "improved" if after < before else "not repaired"


def _check_contexts(contexts: Sequence[int], base: int | None, emb: Embeddings, sae: SAE) -> list[int]:
    if base is None:
        raise PosfeatError(f"SAE {sae.name} records no context_size; the context sweep needs the context it was trained on.")
    if sae.threshold is not None:
        raise PosfeatError("The context sweep fine-tunes ReLU or TopK SAEs; this SAE is JumpReLU.")
    cs = sorted({int(c) for c in contexts})
    bad = [c for c in cs if c <= base]
    if bad:
        raise PosfeatError(f"{arg('contexts', ','.join(map(str, cs)))} includes {bad[0]}, not longer than the SAE's own context {base}; "
                           "give only longer contexts.")
    if cs[-1] > emb.n_ctx:
        raise PosfeatError(f"{arg('contexts', ','.join(map(str, cs)))} includes {cs[-1]}, past the {emb.n_ctx} positions of {emb.name}; "
                           "give contexts within it.")
    return cs


def sweep_context(emb: Embeddings, sae: SAE, *, contexts: Sequence[int], out: Any, seeds: int = 3, control_steps: int | None = None,
                  tokens: int = 2048, token_weights: Any = None, command: str | None = None, model_name: str | None = None,
                  progress: bool = True, force: bool = False, **recipe: Any) -> pd.DataFrame:
    """Fine-tune ``sae`` on each longer context, seed by seed, against a from-scratch control; see module docstring.

    Returns the table (mean and sd over seeds) per SAE; ``runs.csv`` in ``out`` has every run.
    ``recipe``: :class:`posfeat.training.TrainConfig` fields for the fine-tuning (``steps``, ``lr``, ``batch``, ``seed``, ...).
    """
    base = sae.context_size
    cs = _check_contexts(contexts, base, emb, sae)
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise PosfeatError(f"{arg('seeds', seeds)} must be a positive whole number.")
    tw = token_weights_arg(token_weights, emb.d_vocab)
    rec = sae.cfg.get("posfeat_training", {}).get("config", {})
    arch, l1 = ("topk" if sae.k is not None else "relu"), float(recipe.pop("l1", rec.get("l1", 1.0)))
    base_seed, steps = int(recipe.pop("seed", 0)), int(recipe.pop("steps", 500))
    ctl_steps = control_steps or int(rec.get("steps", 4 * steps))
    work = SweepFolder(out, "sweep context", force, command)
    rows: list[dict[str, Any]] = []
    for s in range(base_seed, base_seed + seeds):
        sample = sample_tokens(emb, tokens, weights=tw, seed=s)
        rows.append(context_run(emb, sae, "original", base, sample, 0, 0.0, s))
        common = {"d_sae": sae.d_sae, "arch": arch, "l1": l1, "k": sae.k, "seed": s, "token_weights": tw, "command": command,
                  "model_name": model_name, "progress": progress}
        for c in cs:
            tuned, secs = train_or_reuse(work.path / f"finetune_ctx_{c}" / f"seed_{s}", emb, context=c, steps=steps, init=sae, **common, **recipe)
            rows.append(context_run(emb, tuned, f"fine-tuned to {c}", base, sample, steps, secs, s))
        ctl_recipe = {**recipe, "lr": float(rec.get("lr", 5e-3))}
        control, secs = train_or_reuse(work.path / f"scratch_ctx_{cs[-1]}" / f"seed_{s}", emb, context=cs[-1], steps=ctl_steps,
                                       **common, **ctl_recipe)
        rows.append(context_run(emb, control, f"from scratch on {cs[-1]}", base, sample, ctl_steps, secs, s))
    return _context_outputs(emb, sae, rows, work, cs, base, steps, ctl_steps, command)


def _context_outputs(emb: Embeddings, sae: SAE, rows: list[dict[str, Any]], work: SweepFolder, cs: list[int], base: int, steps: int,
                     ctl_steps: int, command: str | None) -> pd.DataFrame:
    runs = pd.DataFrame([{k: v for k, v in r.items() if k != "_curve"} for r in rows])[CONTEXT_COLUMNS]
    order = {name: i for i, name in enumerate(dict.fromkeys(runs.sae))}
    cols = [c for c in CONTEXT_COLUMNS if c not in ("sae", "context", "seed", "steps")]
    table = mean_sd(runs, "sae", cols)
    table = table.merge(runs.groupby("sae")[["context", "steps"]].first().reset_index(), on="sae")
    table = table.sort_values("sae", key=lambda s: s.map(order), ignore_index=True)
    fig, ax = new_figure(8.5, 4.4, "FVU by position after fine-tuning on longer contexts (first seed)", f"{emb.name} x {sae.name}")
    for r in rows:
        if r["seed"] == rows[0]["seed"]:
            ax.plot(r["_curve"].position, r["_curve"].fvu, lw=1, label=r["sae"])
    ax.axvline(base - 0.5, color="k", ls="--", lw=0.8, label=f"original context ({base})")
    ax.set(yscale="log", xlabel="position", ylabel="FVU")
    ax.legend(fontsize=7)
    fig_path = save_figure(fig, work.path / "figures" / "context_fvu.png")
    first = table.iloc[0]
    verdicts = {r.sae: verdict(r.fvu_past_original_context, first.fvu_past_original_context, first.fvu_in_original_context)
                for r in table.iloc[1:].itertuples()}
    summary = {"model": emb.name, "sae": sae.name, "original_context": base, "contexts": cs, "seeds": sorted(runs.seed.unique().tolist()),
               "steps": steps, "control_steps": ctl_steps, "fvu_past_original_context_before": float(first.fvu_past_original_context),
               "rows": table.to_dict(orient="records"), "verdicts": verdicts, "command": command}
    write_text_atomic(work.path / "contexts.csv", table.to_csv(index=False, float_format="%.6g"))
    write_text_atomic(work.path / "runs.csv", runs.to_csv(index=False, float_format="%.6g"))
    write_text_atomic(work.path / "summary.json", dump_json(summary))
    sentence = (f"FVU past position {base} (mean over seeds): {first.fvu_past_original_context:.4g} before; after: "
                + ", ".join(f"{r.sae} {r.fvu_past_original_context:.4g} ({verdicts[r.sae]})" for r in table.iloc[1:].itertuples()) + ".")
    write_text_atomic(work.path / "section.html", section("Repairing length generalisation", table, command, sentence, [fig_path]))
    work.finish()
    return table

