"""Testing the note's two conjectures, with several seeds: plan -> executor -> aggregation.

* :func:`sweep_widths`: positional features as a toy of feature splitting. One SAE per width and
  seed on the same layer-0 grid, each classified exactly as ``posfeat analyze`` does; the claim "the
  count grows with width" tested as a trend across widths with seeds, the power law as a description
  (see :mod:`posfeat.experiments.aggregate`), how one early positional feature splits (matched by
  :func:`posfeat.compare_saes`), and the count against training steps for the widest SAE.
* :func:`sweep_context`: does fine-tuning on longer contexts repair length generalisation? Past the
  original context *and* inside it, against an SAE trained from scratch on the longest context.

Runs execute in this process (``executor="local"``) or as Ray tasks (``"ray"``); either way each
trains into its own folder under the sweep folder and writes ``run.json``, and ``runs.csv`` is
rewritten after every finish. A finished run is never redone; an interrupted one continues from its
checkpoint. A run that fails is listed in ``runs.csv`` with its error, the others finish, the
aggregation names the missing points, and the sweep stays in ``<out>.partial`` (rerun to retry).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from ..analyses.classification import classify
from ..analyses.compare import compare_saes
from ..core.archs import architecture, either, trainable
from ..core.embeddings import Embeddings
from ..core.errors import PosfeatError, arg
from ..core.sae import SAE
from ..engine.grid_stats import feature_stats
from ..io.checkpoints import load_embeddings
from ..io.sae_folders import read_sae_folder
from ..io.sources import as_pair
from ..io.tokens import token_weights_arg
from ..io.writes import write_text_atomic
from ..outputs.sweep_section import context_figure, section, width_figures
from ..outputs.write import dump_json
from . import aggregate as agg
from .config import ContextSweepConfig, ExecutorConfig, WidthSweepConfig
from .executors import Executor, make_executor
from .folder import SWEEP_CONTEXT, SWEEP_WIDTHS, SweepFolder
from .plan import Run, Shared, context_plan, width_plan
from .runner import CONTEXT_COLUMNS, CURVE_FILE, KINDS4, PROVENANCE_COLUMNS, WIDTH_COLUMNS, read_run


class SweepIncompleteError(PosfeatError):
    """Some runs failed for good; the others and the aggregation are written in
    ``<out>.partial``."""


@dataclass(frozen=True)
class WidthSweep:
    """What a width sweep hands on (to the CLI, or to a caller of :func:`run_widths`), so that no
    one reads it back from
    its folder: ``summary`` is what ``summary.json`` holds, written once from it.

    Attributes:
        folder: the finished sweep folder.
        table: the per-width table (mean and sd over seeds; ``widths.csv``).
        statistics: the trend test, the power law, its lack of fit, the local exponents and the
            ceiling (:func:`posfeat.experiments.aggregate.width_statistics`; empty when no run
            finished).
        sentence: what the sweep says, in one paragraph (``section.html``; empty when no run
            finished).
        placement: the nodes and devices the runs took part on, and the runs on each.
        summary: ``summary.json``'s content.
    """

    folder: Path
    table: pd.DataFrame
    statistics: dict[str, Any]
    sentence: str
    placement: dict[str, Any]
    summary: dict[str, Any]


@dataclass(frozen=True)
class ContextSweep:
    """What a context sweep hands on (see :class:`WidthSweep`).

    Attributes:
        folder: the finished sweep folder.
        table: mean and sd over seeds per SAE (``contexts.csv``).
        repair: per fine-tuned SAE, its verdict with its margins
            (:func:`posfeat.experiments.aggregate.repair_verdict`).
        sentence: what the sweep says, in one paragraph (``section.html``; empty without the
            original SAE's row).
        placement: the nodes and devices the runs took part on, and the runs on each.
        summary: ``summary.json``'s content.
    """

    folder: Path
    table: pd.DataFrame
    repair: dict[str, dict[str, Any]]
    sentence: str
    placement: dict[str, Any]
    summary: dict[str, Any]


def parse_ints(spec: str, what: str) -> list[int]:
    """``"256,512,1024"`` -> ``[256, 512, 1024]``, with a clear error."""
    try:
        values = [int(x) for x in str(spec).split(",") if x.strip()]
    except ValueError:
        raise PosfeatError(
            f"{what} {spec!r} is not a comma-separated list of integers; give e.g. 256,512,1024."
        ) from None
    if not values or min(values) <= 0:
        raise PosfeatError(f"{what} {spec!r} must list positive integers.")
    return sorted(set(values))


def _line(run: Run, rec: dict[str, Any] | None, err: str | None) -> str:
    if rec is None:
        return f"{run.describe()}: FAILED: {err}"
    r = rec["row"]
    secs = r.get("train_seconds")
    t = f"{secs:.0f} s" if isinstance(secs, (int, float)) else "reused"
    if run.kind == "width":
        return f"d_sae {r['d_sae']} seed {r['seed']}: {r['positional']} positional, FVU {r['fvu_in_context']:.4f}, {t}"
    return (
        f"{r['sae']} seed {r['seed']}: FVU in original context {r['fvu_in_original_context']:.4f}, "
        "past it "
        f"{r['fvu_past_original_context']:.4f}, {t}"
    )


def execute_plan(
    runs: list[Run],
    work: SweepFolder,
    shared: Shared,
    executor: Executor,
    progress: bool,
    columns: list[str],
) -> tuple[pd.DataFrame, list[dict[str, Any]]]:
    """Run every unfinished run of the plan; ``runs.csv`` rewritten after each finish. Returns
    ``(runs table, failures)``."""
    records: dict[str, dict[str, Any]] = {}
    todo = []
    for run in runs:
        rec = read_run(work.path, run)
        if rec is not None:
            records[run.key] = rec
        else:
            todo.append(run)
    failures: dict[str, str] = {}

    def write() -> pd.DataFrame:
        table = _runs_table(runs, records, failures, columns)
        write_text_atomic(work.path / "runs.csv", table.to_csv(index=False, float_format="%.6g"))
        return table

    if todo:
        if executor.dashboard:
            tqdm.write(
                f"Ray dashboard: {executor.dashboard}", file=sys.stderr
            )  # stdout: results only (--json)
        bar = tqdm(
            total=len(runs),
            initial=len(records),
            desc="sweep runs",
            unit="run",
            disable=not progress,
        )
        try:
            for run, rec, err in executor.run(todo, work.path, shared):
                if rec is None:
                    failures[run.key] = err or "failed"
                else:
                    records[run.key] = rec
                if progress:
                    tqdm.write(_line(run, rec, err), file=sys.stderr)
                bar.update(1)
                write()
        finally:
            bar.close()
    table = write()
    work.placement = placement(table)
    return table[table.status == "done"].drop(
        columns=["status", "error", *PROVENANCE_COLUMNS]
    ).reset_index(drop=True), [
        {"run": r.key, "label": r.label, "seed": r.seed, "d_sae": r.d_sae, "error": failures[r.key]}
        for r in runs
        if r.key in failures
    ]


def _runs_table(
    runs: list[Run],
    records: dict[str, dict[str, Any]],
    failures: dict[str, str],
    columns: list[str],
) -> pd.DataFrame:
    """One row per finished or failed run: the measurements, ``status`` and ``error``, then where it
    ran and its wall time."""
    rows = []
    for run in runs:
        if run.key in records:
            rec = records[run.key]
            rows.append(
                {
                    **{c: rec["row"].get(c) for c in columns},
                    "status": "done",
                    "error": "",
                    **{c: rec.get(c) for c in PROVENANCE_COLUMNS},
                }
            )
        elif run.key in failures:
            base = (
                {"d_sae": run.d_sae, "seed": run.seed}
                if run.kind == "width"
                else {"sae": run.label, "seed": run.seed}
            )
            rows.append(
                {
                    **{c: base.get(c) for c in columns},
                    "status": "failed",
                    "error": failures[run.key],
                }
            )
    df = pd.DataFrame(rows, columns=[*columns, "status", "error", *PROVENANCE_COLUMNS])
    for c in [*columns, "wall_seconds"]:
        if c not in ("sae", "error", "status"):
            df[c] = pd.to_numeric(df[c], errors="coerce")
    return df


def placement(table: pd.DataFrame) -> dict[str, Any]:
    """How many nodes and devices the finished runs took part on, and the runs on each (from
    ``runs.csv``'s provenance)."""
    done = table[table.status == "done"] if "status" in table else table
    known = done.dropna(subset=["node"]) if "node" in done else done.iloc[:0]
    per_node = (
        {str(k): int(v) for k, v in known.groupby("node").size().items()} if len(known) else {}
    )
    devices = {(str(n), str(d)) for n, d in zip(known.node, known.device)} if len(known) else set()
    return {
        "nodes": len(per_node),
        "devices": len(devices),
        "runs_per_node": per_node,
        "wall_seconds_of_runs": float(done.wall_seconds.sum())
        if "wall_seconds" in done and len(done)
        else 0.0,
    }


def _finish(work: SweepFolder, failures: list[dict[str, Any]], n: int) -> Path:
    if failures:
        names = "; ".join(f"{f['run']} ({f['error']})" for f in failures[:3]) + (
            " ..." if len(failures) > 3 else ""
        )
        raise SweepIncompleteError(
            f"{len(failures)} of {n} runs failed ({names}); the other runs, runs.csv and the "
            f"aggregation are in {work.path}: "
            "fix the cause and run the same command again to retry them."
        )
    return work.finish()


# ---------------------------------------------------------------------------- widths
def splitting(
    emb: Embeddings, saes: dict[int, SAE], context: int, threshold: float = 0.5
) -> dict[str, Any]:
    """Follow one early positional feature of the narrowest SAE into each wider one: its children by
    :func:`compare_saes`."""
    widths = sorted(saes)
    if not widths:
        return {"reference": None, "widths": {}}
    st = feature_stats(emb, saes[widths[0]], range(context))
    kinds = classify(st)
    peak = st.positions[st.mean_by_position.argmax(1)]
    cand = np.nonzero((kinds == "positional") & (peak >= 1) & (peak <= 8))[0]
    cand = cand if cand.size else np.nonzero(kinds == "positional")[0]
    if cand.size == 0:
        return {"reference": None, "widths": {}}
    ref = int(cand[np.argmax(st.positional_score[cand])])
    out: dict[str, Any] = {
        "reference": ref,
        "reference_width": widths[0],
        "reference_peak": int(peak[ref]),
        "threshold": threshold,
        "widths": {},
    }
    for w in widths:
        children = compare_saes(saes[widths[0]], saes[w], threshold=threshold).children(ref)
        if children:
            sw = feature_stats(emb, saes[w].subset(children), range(context))
            out["widths"][w] = [
                {
                    "feature": c,
                    "peak": int(sw.positions[sw.mean_by_position[i].argmax()]),
                    "profile": sw.mean_by_position[i].tolist(),
                }
                for i, c in enumerate(children)
            ]
        else:
            out["widths"][w] = []
    return out


def _executor_config(
    executor: str | ExecutorConfig, address: str | None, max_retries: int, gpu_memory: float | None
) -> ExecutorConfig:
    """``executor`` itself when it is an :class:`ExecutorConfig`, else one made of the keyword
    arguments."""
    if isinstance(executor, ExecutorConfig):
        return executor
    return ExecutorConfig(
        executor=executor, address=address, max_retries=max_retries, gpu_memory=gpu_memory
    )


def _width_config(
    context: int, widths: Sequence[int], seeds: int, tokens: int | None, curve_points: int
) -> WidthSweepConfig:
    if isinstance(widths, (str, bytes)) or not isinstance(widths, Sequence):
        raise PosfeatError(f"{arg('d_sae', widths)} must list positive integer widths.")
    kw = {} if tokens is None else {"tokens": tokens}
    cfg = WidthSweepConfig(
        context=context,
        d_sae=tuple(
            int(w) if isinstance(w, (int, np.integer)) and not isinstance(w, bool) else w
            for w in widths
        ),
        seeds=seeds,
        curve_points=curve_points,
        **kw,
    )
    cfg.validate()
    return cfg


def sweep_widths(
    emb: Any,
    *,
    context: int,
    widths: Sequence[int],
    out: Any,
    seeds: int = WidthSweepConfig.seeds,
    tokens: int | None = None,
    curve_points: int = WidthSweepConfig.curve_points,
    token_weights: Any = None,
    command: str | None = None,
    model_name: str | None = None,
    progress: bool = True,
    force: bool = False,
    executor: str | ExecutorConfig = ExecutorConfig.executor,
    address: str | None = ExecutorConfig.address,
    max_retries: int = ExecutorConfig.max_retries,
    num_cpus: int | None = None,
    gpu_memory: float | None = ExecutorConfig.gpu_memory,
    **recipe: Any,
) -> pd.DataFrame:
    """Train one SAE per width and seed (resumable) and count features as ``posfeat analyze`` does;
    see module docstring.

    Returns the per-width table (mean and sd over seeds); ``runs.csv`` in ``out`` has every run,
    ``summary.json`` the trend test, the fit and its lack of fit. ``recipe``:
    :class:`posfeat.training.TrainConfig` fields (``l1``, ``lr``, ``steps``, ``batch``, ``seed`` =
    the first seed, ...) over :attr:`WidthSweepConfig.RECIPE`, exactly as ``posfeat sweep widths``
    uses them. ``executor``: ``"local"`` or ``"ray"``, or an :class:`ExecutorConfig` (whose settings
    then win over the keywords; ``address``: the cluster; ``max_retries``: per run; ``num_cpus``: of
    a new local cluster; ``gpu_memory``: GiB per cluster GPU, to size each run's GPU share).
    ``emb``: :class:`Embeddings` or anything :func:`posfeat.load_embeddings` accepts (a name, a
    folder, a model object)."""
    emb = load_embeddings(emb)
    cfg = _width_config(context, widths, seeds, tokens, curve_points)
    rec = WidthSweepConfig.recipe(**recipe)
    exe = _executor_config(executor, address, max_retries, gpu_memory)
    return run_widths(
        emb,
        cfg,
        rec,
        exe,
        out=out,
        token_weights=token_weights,
        command=command,
        model_name=model_name,
        progress=progress,
        force=force,
        num_cpus=num_cpus,
    ).table


def run_widths(
    emb: Embeddings,
    cfg: WidthSweepConfig,
    recipe: dict[str, Any],
    exe: ExecutorConfig,
    *,
    out: Any,
    token_weights: Any,
    command: str | None,
    model_name: str | None,
    progress: bool,
    force: bool,
    num_cpus: int | None,
) -> WidthSweep:
    """:func:`sweep_widths` from its validated configs and recipe (:meth:`WidthSweepConfig.recipe`),
    as ``posfeat sweep widths`` runs it; returns everything the sweep wrote
    (:class:`WidthSweep`)."""
    if not isinstance(cfg.context, int) or not 1 <= cfg.context <= emb.n_ctx:
        raise PosfeatError(
            f"{arg('context', cfg.context)} is outside 1..{emb.n_ctx}, the positions of {emb.name}; "
            "pick a context "
            "within it."
        )
    runs = width_plan(cfg, recipe)
    tw = token_weights_arg(token_weights, emb.d_vocab)
    # connected (Ray: the cluster checked and joined) before the sweep folder is made, so that a sweep
    # that cannot reach its cluster leaves nothing behind
    runner = make_executor(exe, emb.device, progress, num_cpus)
    work = SweepFolder(out, SWEEP_WIDTHS, force, command)
    shared = Shared(emb=emb.to("cpu"), token_weights=tw, command=command, model_name=model_name)
    t0 = time.monotonic()
    table_runs, failures = execute_plan(runs, work, shared, runner, progress, WIDTH_COLUMNS)
    return _width_outputs(
        emb, cfg, recipe, runs, table_runs, failures, work, command, time.monotonic() - t0
    )


def _width_outputs(
    emb: Embeddings,
    cfg: WidthSweepConfig,
    rec: dict[str, Any],
    runs: list[Run],
    table_runs: pd.DataFrame,
    failures: list[dict[str, Any]],
    work: SweepFolder,
    command: str | None,
    seconds: float,
) -> WidthSweep:
    widths = sorted({int(w) for w in cfg.d_sae})
    base_seed = int(rec["seed"])
    table_runs = (
        table_runs.astype({c: int for c in ("d_sae", "seed", *KINDS4)})
        if len(table_runs)
        else table_runs
    )
    table = agg.width_table(table_runs)
    stats = agg.width_statistics(table_runs, cfg.context) if len(table_runs) else {}
    first = {
        r.d_sae: read_sae_folder(work.path / r.key, allow_any_hook=True).to(emb.device)
        for r in runs
        if r.seed == base_seed and r.key not in {f["run"] for f in failures}
    }
    split = splitting(emb, first, cfg.context)
    curve_path = work.path / f"d_sae_{widths[-1]}" / f"seed_{base_seed}" / CURVE_FILE
    curve_df = (
        pd.read_csv(curve_path) if curve_path.is_file() else pd.DataFrame(columns=["step", *KINDS4])
    )
    summary: dict[str, Any] = {
        "model": emb.name,
        "context": cfg.context,
        "widths": widths,
        "seeds": list(range(base_seed, base_seed + cfg.seeds)),
        "recipe": rec,
        "claim": "positional count grows with width",
        **stats,
        "power_law_exponent": stats.get("power_law", {}).get("alpha"),
        "positional_counts": {
            str(int(r.d_sae)): [
                float(r.positional),
                None if np.isnan(r.positional_sd) else float(r.positional_sd),
            ]
            for r in table.itertuples()
        },
        "missing": failures,
        "splitting_reference": {k: v for k, v in split.items() if k != "widths"},
        "splitting_matches": {
            str(w): [m["feature"] for m in ms] for w, ms in split["widths"].items()
        },
        "positional_by_step": curve_df.to_dict(orient="records"),
        "command": command,
        "seconds": seconds,
        **work.placement,
    }
    write_text_atomic(work.path / "widths.csv", table.to_csv(index=False, float_format="%.6g"))
    write_text_atomic(work.path / "summary.json", dump_json(summary))
    sentence = agg.width_sentence(stats, widths, cfg.seeds) if stats else ""
    if stats:
        figs = width_figures(
            emb.name, table, table_runs, stats, split, curve_df, work.path / "figures", cfg.context
        )
        missing = (
            (
                " Missing: "
                + ", ".join(f"d_sae {f['d_sae']} seed {f['seed']}" for f in failures)
                + "."
            )
            if failures
            else ""
        )
        write_text_atomic(
            work.path / "section.html",
            section("Feature splitting with width", table, command, sentence + missing, figs),
        )
    folder = _finish(work, failures, len(runs))
    return WidthSweep(
        folder=folder,
        table=table,
        statistics=stats,
        sentence=sentence,
        placement=dict(work.placement),
        summary=summary,
    )


# ---------------------------------------------------------------------------- contexts
def _check_contexts(
    contexts: Sequence[int], base: int | None, emb: Embeddings, sae: SAE
) -> list[int]:
    if base is None:
        raise PosfeatError(
            f"SAE {sae.name} records no context_size; the context sweep needs the context it was "
            "trained on."
        )
    if not sae.arch.trainable:
        raise PosfeatError(
            f"The context sweep fine-tunes {either([architecture(a).title for a in trainable()])} "
            "SAEs; "
            f"this SAE is {sae.arch.title}."
        )
    cs = sorted({int(c) for c in contexts})
    if not cs:
        raise PosfeatError(
            f"{arg('contexts', '')} is empty; give longer contexts, e.g. 192,256,512."
        )
    bad = [c for c in cs if c <= base]
    if bad:
        raise PosfeatError(
            f"{arg('contexts', ','.join(map(str, cs)))} includes {bad[0]}, not longer than the "
            f"SAE's own context {base}; "
            "give only longer contexts."
        )
    if cs[-1] > emb.n_ctx:
        raise PosfeatError(
            f"{arg('contexts', ','.join(map(str, cs)))} includes {cs[-1]}, past the {emb.n_ctx} "
            f"positions of {emb.name}; "
            "give contexts within it."
        )
    return cs


def sweep_context(
    emb: Any,
    sae: Any,
    *,
    contexts: Sequence[int],
    out: Any,
    seeds: int = ContextSweepConfig.seeds,
    control_steps: int | None = None,
    tokens: int | None = None,
    token_weights: Any = None,
    command: str | None = None,
    model_name: str | None = None,
    progress: bool = True,
    force: bool = False,
    executor: str | ExecutorConfig = ExecutorConfig.executor,
    address: str | None = ExecutorConfig.address,
    max_retries: int = ExecutorConfig.max_retries,
    num_cpus: int | None = None,
    gpu_memory: float | None = ExecutorConfig.gpu_memory,
    past_tolerance: float = ContextSweepConfig.past_tolerance,
    in_context_tolerance: float = ContextSweepConfig.in_context_tolerance,
    **recipe: Any,
) -> pd.DataFrame:
    """Fine-tune ``sae`` on each longer context, seed by seed, against a from-scratch control; see
    module docstring.

    Returns the table (mean and sd over seeds) per SAE; ``runs.csv`` in ``out`` has every run,
    ``summary.json`` the verdicts
    with their margins. ``recipe``: :class:`posfeat.training.TrainConfig` fields for the fine-tuning
    over :attr:`ContextSweepConfig.RECIPE` (``steps``, ``lr``, ``batch``, ``seed``, ``l1``, ...).
    ``emb`` and ``sae`` may be anything :func:`posfeat.load_embeddings` and :func:`posfeat.load_sae`
    accept."""
    emb, sae = as_pair(emb, sae)
    cs = _check_contexts(contexts, sae.context_size, emb, sae)
    kw = {} if tokens is None else {"tokens": tokens}
    cfg = ContextSweepConfig(
        contexts=tuple(cs),
        control_steps=control_steps,
        seeds=seeds,
        past_tolerance=past_tolerance,
        in_context_tolerance=in_context_tolerance,
        **kw,
    )
    cfg.validate()
    rec = ContextSweepConfig.recipe(**recipe)
    exe = _executor_config(executor, address, max_retries, gpu_memory)
    return run_context(
        emb,
        sae,
        cfg,
        rec,
        exe,
        out=out,
        token_weights=token_weights,
        command=command,
        model_name=model_name,
        progress=progress,
        force=force,
        num_cpus=num_cpus,
    ).table


def run_context(
    emb: Embeddings,
    sae: SAE,
    cfg: ContextSweepConfig,
    recipe: dict[str, Any],
    exe: ExecutorConfig,
    *,
    out: Any,
    token_weights: Any,
    command: str | None,
    model_name: str | None,
    progress: bool,
    force: bool,
    num_cpus: int | None,
) -> ContextSweep:
    """:func:`sweep_context` from its validated configs and recipe
    (:meth:`ContextSweepConfig.recipe`), as ``posfeat sweep context`` runs it; returns everything
    the sweep wrote (:class:`ContextSweep`)."""
    base = sae.context_size
    cs = _check_contexts(cfg.contexts, base, emb, sae)
    runs = context_plan(cfg, recipe, sae)
    tw = token_weights_arg(token_weights, emb.d_vocab)
    # connected (Ray: the cluster checked and joined) before the sweep folder is made, so that a sweep
    # that cannot reach its cluster leaves nothing behind
    runner = make_executor(exe, emb.device, progress, num_cpus)
    work = SweepFolder(out, SWEEP_CONTEXT, force, command)
    shared = Shared(
        emb=emb.to("cpu"),
        token_weights=tw,
        sae=sae.to("cpu"),
        base_context=base,
        command=command,
        model_name=model_name,
    )
    t0 = time.monotonic()
    table_runs, failures = execute_plan(runs, work, shared, runner, progress, CONTEXT_COLUMNS)
    return _context_outputs(
        emb,
        sae,
        cfg,
        recipe,
        runs,
        table_runs,
        failures,
        work,
        cs,
        base,
        command,
        time.monotonic() - t0,
    )


def _context_outputs(
    emb: Embeddings,
    sae: SAE,
    cfg: ContextSweepConfig,
    rec: dict[str, Any],
    runs: list[Run],
    table_runs: pd.DataFrame,
    failures: list[dict[str, Any]],
    work: SweepFolder,
    cs: list[int],
    base: int,
    command: str | None,
    seconds: float,
) -> ContextSweep:
    table = agg.context_table(table_runs) if len(table_runs) else pd.DataFrame()
    have_original = len(table) and table.sae.iloc[0] == "original"
    verdicts = (
        agg.context_verdicts(table, cfg.past_tolerance, cfg.in_context_tolerance)
        if have_original
        else {}
    )
    first_seed = min(r.seed for r in runs)
    curves = []
    for r in runs:
        rec_r = read_run(work.path, r) if r.seed == first_seed else None
        if rec_r is not None:
            curves.append((r.label, np.asarray(rec_r["row"]["fvu_by_position"], float)))
    fig_path = context_figure(f"{emb.name} x {sae.name}", curves, base, work.path / "figures")
    ctl_steps = next((dict(r.settings)["steps"] for r in runs if r.kind == "scratch"), None)
    summary = {
        "model": emb.name,
        "sae": sae.name,
        "original_context": base,
        "contexts": cs,
        "seeds": sorted({r.seed for r in runs}),
        "steps": rec["steps"],
        "control_steps": ctl_steps,
        "recipe": rec,
        "tolerances": {"past": cfg.past_tolerance, "in_context": cfg.in_context_tolerance},
        "fvu_past_original_context_before": float(table.fvu_past_original_context.iloc[0])
        if have_original
        else None,
        "fvu_in_original_context_before": float(table.fvu_in_original_context.iloc[0])
        if have_original
        else None,
        "rows": table.to_dict(orient="records"),
        "verdicts": {k: v["verdict"] for k, v in verdicts.items()},
        "repair": verdicts,
        "missing": failures,
        "command": command,
        "seconds": seconds,
        **work.placement,
    }
    write_text_atomic(work.path / "contexts.csv", table.to_csv(index=False, float_format="%.6g"))
    write_text_atomic(work.path / "summary.json", dump_json(summary))
    sentence = agg.context_sentence(table, verdicts, base) if have_original else ""
    if have_original:
        missing = (
            (" Missing: " + ", ".join(f"{f['label']} seed {f['seed']}" for f in failures) + ".")
            if failures
            else ""
        )
        write_text_atomic(
            work.path / "section.html",
            section(
                "Repairing length generalisation", table, command, sentence + missing, [fig_path]
            ),
        )
    folder = _finish(work, failures, len(runs))
    return ContextSweep(
        folder=folder,
        table=table,
        repair=verdicts,
        sentence=sentence,
        placement=dict(work.placement),
        summary=summary,
    )
