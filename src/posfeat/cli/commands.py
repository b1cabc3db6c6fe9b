"""The commands: each checks its flags, loads what it needs, runs, and prints lines that follow from
numbers it also writes."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import json
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..core.errors import PosfeatError
from ..core.memory import collector_paused
from ..core.sae import sae_context
from ..core.tensors import resolve_device
from ..experiments.config import ContextSweepConfig, ExecutorConfig, WidthSweepConfig
from ..io.checkpoints import load_embeddings
from ..io.names import BUNDLED_MODEL
from ..io.output import Output, output_file
from ..io.paths import expand
from ..io.policy import check_file_target, check_target
from ..io.sources import input_locations, load_pair, load_sae, sae_token_weights
from ..io.tokens import load_token_weights
from ..training.config import TrainConfig
from .flags import STDOUT, positions_arg, values_of

# Each command imports the stages it runs when it runs (analyses, engine, outputs, training):
# `posfeat train` does not load the analysis (scipy.stats, matplotlib), which took about 1.8 s of
# every training process's start-up.

COMMANDS: dict[str, Callable[[argparse.Namespace, str], int]] = {}


def command(
    name: str,
) -> Callable[[Callable[[argparse.Namespace, str], int]], Callable[[argparse.Namespace, str], int]]:
    def deco(
        fn: Callable[[argparse.Namespace, str], int],
    ) -> Callable[[argparse.Namespace, str], int]:
        COMMANDS[name] = fn
        return fn

    return deco


def _pair(args: argparse.Namespace) -> tuple[Any, Any]:
    return load_pair(
        args.model,
        args.sae,
        device=args.device,
        allow_any_hook=getattr(args, "allow_any_hook", False),
        strict=getattr(args, "strict", False),
    )


def _token_weights(args: argparse.Namespace, emb: Any, sae: Any) -> tuple[Path, Any] | None:
    """--token-weights if given, else the SAE folder's own token_weights.safetensors, else None
    (uniform)."""
    if getattr(args, "token_weights", None):
        return expand(args.token_weights), load_token_weights(args.token_weights, emb.d_vocab)
    return None if sae is None else sae_token_weights(sae, emb.d_vocab)


def _inputs(args: argparse.Namespace) -> list[tuple[str, Any]]:
    """The command's inputs on disk (model, SAE, token weights, --init, --include-sweep): never an
    output."""
    model = getattr(args, "model", None)
    if model is None and getattr(args, "command", "") == "train":
        model = BUNDLED_MODEL
    return input_locations(
        model,
        getattr(args, "sae", None),
        token_weights=getattr(args, "token_weights", None),
        init=getattr(args, "init", None),
        include_sweep=getattr(args, "include_sweep", None),
    )


def _rules(specs: list[str]) -> Any:
    from ..analyses.findings import FindingRules

    known = FindingRules().as_dict()
    values = {}
    for spec in specs:
        name, _, text = spec.partition("=")
        if name not in known or not text:
            raise PosfeatError(
                f"--rule {spec!r} is not NAME=VALUE with NAME one of {', '.join(known)}."
            )
        try:
            values[name] = float(text)
        except ValueError:
            raise PosfeatError(f"--rule {spec!r}: {text!r} is not a number.") from None
    return FindingRules(**values)


def _positive(args: argparse.Namespace, *names: str) -> None:
    for name in names:
        v = getattr(args, name)
        if v is not None and v <= 0:
            raise PosfeatError(f"--{name.replace('_', '-')} {v} must be positive.")


def _folder_out(args: argparse.Namespace) -> None:
    """``--out -`` is for a command that writes one file; this one writes a folder."""
    if args.out == STDOUT:
        raise PosfeatError(
            f"--out - prints a single file on standard output, but {args.command} writes a folder; "
            "give --out a folder "
            "(--json prints the results on standard output)."
        )


def _stdout_or_json(args: argparse.Namespace) -> bool:
    """Whether ``--out -`` asks for the file on standard output (refused beside ``--json``: one
    document per output)."""
    if args.out != STDOUT:
        return False
    if args.json:
        raise PosfeatError(
            "--out - and --json both print on standard output; give --out a file, or drop one of "
            "them."
        )
    return True


def import_meanwhile(name: str, needs: tuple[str, ...] = ()) -> threading.Thread | None:
    """Import module ``name`` on a second thread, started now; an error is left to the main
    thread's own import of it, which raises it. ``needs``: packages it imports; where one is not
    installed, ``name`` is imported here and now (None), so that its error comes before any work."""
    if not all(_installed(package) for package in needs):
        importlib.import_module(name)
        return None

    def run() -> None:
        with contextlib.suppress(Exception):
            importlib.import_module(name)

    thread = threading.Thread(target=run, name=f"import {name}", daemon=True)
    thread.start()
    return thread


def _installed(package: str) -> bool:
    """Whether top-level ``package`` can be found (without importing it)."""
    try:
        return importlib.util.find_spec(package) is not None
    except (ImportError, ValueError):  # ValueError: a module set to None, as tests do to hide one
        return False


@command("analyze")
def run_analyze(args: argparse.Namespace, invocation: str) -> int:
    with collector_paused():  # imports: numba, pandas, scipy
        from ..analyses import warmup
        from ..analyses.analysis import analyze, timed
        from ..analyses.card import unembedding_note
        from ..analyses.config import AnalyzeConfig
        from ..outputs.kinds import ANALYZE, CSV_FILES, sweep_sections

    t0 = time.monotonic()
    _folder_out(args)
    _positive(args, "tokens_sample")
    rules = _rules(args.rule)
    dev = resolve_device(args.device)
    output = Output(args.out, ANALYZE, force=args.force, command=invocation, inputs=_inputs(args))
    output.claim()  # fail early on a bad --out, before any work
    sweep_sections(args.include_sweep)  # and on a bad --include-sweep
    load_time: dict[str, float] = {}
    with timed(load_time, "load"), collector_paused():
        emb, sae = _pair(args)
    # a fresh install: the reconstruction's kernels compiled on a second core meanwhile (the logit
    # effects' only for a model that has them)
    compiling = dev.type == "cpu" and warmup.start(logits=unembedding_note(emb) is None)
    positions = positions_arg(args.positions, emb.n_ctx, single=True)
    # the writers (matplotlib and plotly: about 0.4 s) imported on a second thread while the engine
    # runs, mostly outside the interpreter's lock; before the work while numba compiles the engine's
    # kernels (in the lock) on the first run after an install, or where one of them is missing
    writers = (
        importlib.import_module("posfeat.outputs.write")
        if compiling
        else import_meanwhile("posfeat.outputs.write", needs=("matplotlib", "plotly"))
    )
    an = analyze(
        emb,
        sae,
        positions=None if positions is None else positions.stop,
        rules=rules,
        progress=True,
        **values_of(args, AnalyzeConfig),
    )
    an.timings = {**load_time, **an.timings}
    if isinstance(writers, threading.Thread):
        writers.join()  # no thread left when the figures' children fork
    from ..outputs.write import save_analysis

    out = save_analysis(
        an,
        output,
        force=args.force,
        command=invocation,
        include_sweeps=args.include_sweep,
        progress=True,
    )
    s = an.summary
    c = s["counts"]
    files = ["report.html", *(f"{name}.csv" for name in CSV_FILES), "summary.json", "figures/"]
    if args.json:
        keys = (
            "model",
            "sae",
            "context_size",
            "centered",
            "device",
            "counts",
            "fvu_in_context",
            "fvu_past_context",
            "random_fvu_past_context",
            "l0_in_context",
            "l0_past_context",
        )
        print(
            _json_document(
                {
                    "command": "analyze",
                    "out": str(out),
                    "files": files,
                    **{k: s.get(k) for k in keys},
                    "findings": an.findings,
                    "seconds": time.monotonic() - t0,
                }
            )
        )
        return 0
    print(
        f"{s['model']} x {s['sae']} (context {s['context_size']}, centred {s['centered']}, device "
        f"{s['device']})"
    )
    print(
        f"features: {c['positional']} positional, {c['semantic']} semantic, {c['mixed']} mixed, "
        f"{c['dead']} dead"
    )
    print(
        f"FVU in context {s['fvu_in_context']:.4f}, past it {s['fvu_past_context']:.4f} (random "
        f"vector {s['random_fvu_past_context']:.3f}); "
        f"L0 {s['l0_in_context']:.1f} -> {s['l0_past_context']:.1f}"
    )
    for key, f in an.findings.items():
        print(f"  {key}: {f['verdict']}. {f['evidence']}")
    print(
        f"wrote {out}/report.html, {', '.join(f'{name}.csv' for name in CSV_FILES)}, summary.json "
        "and figures/ in "
        f"{time.monotonic() - t0:.0f} s"
    )
    return 0


@command("feature")
def run_feature(args: argparse.Namespace, invocation: str) -> int:
    from ..analyses.card import feature_card

    resolve_device(args.device)
    emb, sae = _pair(args)
    card = feature_card(emb, sae, args.index)
    if args.json:
        print(_json_document({"command": "feature", **card.as_dict()}))
    else:
        print("\n".join(card.lines()))
    return 0


def _json_document(doc: dict) -> str:
    """One JSON document for standard output: NaN and infinities as null (strict JSON), numpy
    scalars as numbers."""
    from ..outputs.write import jsonable

    return json.dumps(jsonable(doc), allow_nan=False)


@command("prompt")
def run_prompt(args: argparse.Namespace, invocation: str) -> int:
    from ..analyses.prompts import prompt

    _positive(args, "top")
    resolve_device(args.device)
    emb, sae = _pair(args)
    text = sys.stdin.read() if args.text == "-" else args.text
    pr = prompt((emb, sae), text, top=args.top)
    if args.json:
        tokens = [
            {
                "position": p,
                "token_id": int(pr.token_ids[p]),
                "token": pr.token_strs[p],
                "in_context": bool(p < pr.context),
                "n_active": int((pr.activations[p] > 0).sum()),
                "features": [
                    {
                        "feature": int(f),
                        "activation": float(pr.activations[p, f]),
                        "kind": str(pr.kinds[f]),
                    }
                    for f in pr.ranked(p)
                ],
            }
            for p in range(pr.n_tokens)
        ]
        print(
            _json_document(
                {
                    "command": "prompt",
                    "model": pr.model,
                    "sae": pr.sae,
                    "context": pr.context,
                    "top": pr.top,
                    "tokens": tokens,
                    "notes": pr.notes,
                }
            )
        )
        return 0
    print("\n".join(pr.lines()))
    return 0


@command("stats")
def run_stats(args: argparse.Namespace, invocation: str) -> int:
    from ..analyses.classification import FEATURE_COLUMNS, classify, feature_table
    from ..engine.grid_stats import feature_stats

    resolve_device(args.device)
    header = ",".join(FEATURE_COLUMNS)
    to_stdout = args.out is not None and _stdout_or_json(args)
    if args.out is not None and not to_stdout:
        check_file_target(args.out, force=args.force, header=header, inputs=_inputs(args))
    emb, sae = _pair(args)
    positions = positions_arg(args.positions, emb.n_ctx) or range(sae_context(sae, emb.n_ctx))
    t0 = time.monotonic()
    st = feature_stats(emb, sae, positions, progress=True)
    dt = time.monotonic() - t0
    df = feature_table(st, emb, classify(st))
    if args.json:
        doc = {
            "command": "stats",
            "model": emb.name,
            "sae": sae.name,
            "d_sae": sae.d_sae,
            "d_vocab": emb.d_vocab,
            "positions": [int(positions[0]), int(positions[-1])],
            "seconds": dt,
            "features": df.to_dict(orient="records"),
        }
        print(_json_document(doc))
        if args.out is not None:
            output_file(
                args.out,
                lambda p: df.to_csv(p, index=False, float_format="%.8g"),
                force=args.force,
                header=header,
            )
        return 0
    print(
        f"exact statistics of {sae.d_sae} features over {emb.d_vocab} tokens x {len(positions)} "
        "positions "
        f"({emb.d_vocab * len(positions) * sae.d_sae:.3e} activations) in {dt:.1f} s on "
        f"{sae.device}",
        file=sys.stderr if to_stdout else sys.stdout,
    )
    if to_stdout:
        df.to_csv(sys.stdout, index=False, float_format="%.8g")
    elif args.out is not None:
        path = output_file(
            args.out,
            lambda p: df.to_csv(p, index=False, float_format="%.8g"),
            force=args.force,
            header=header,
        )
        print(f"wrote {path}")
    else:
        print(
            df.sort_values("positional_score", ascending=False)
            .head(20)
            .drop(columns=["runs"])
            .to_string(index=False)
        )
    return 0


@command("eval")
def run_eval(args: argparse.Namespace, invocation: str) -> int:
    from ..analyses.evaluation import (
        EVAL_COLUMNS,
        dead_features,
        in_context_stats,
        range_means,
        reconstruction_by_position,
    )
    from ..engine.sample import sample_tokens

    _positive(args, "tokens")
    resolve_device(args.device)
    header = ",".join(EVAL_COLUMNS)
    to_stdout = _stdout_or_json(args)
    if not to_stdout:
        check_file_target(args.out, force=args.force, header=header, inputs=_inputs(args))
    emb, sae = _pair(args)
    tw = _token_weights(args, emb, sae)
    sample = sample_tokens(emb, args.tokens, weights=None if tw is None else tw[1], seed=args.seed)
    positions = positions_arg(args.positions, emb.n_ctx)
    df = reconstruction_by_position(emb, sae, sample, positions, seed=args.seed)
    dead = dead_features(in_context_stats(emb, sae))
    ctx = sae_context(sae, emb.n_ctx)
    inside, past = range_means(df, 0, ctx), range_means(df, ctx, emb.n_ctx)
    if to_stdout:
        df.to_csv(sys.stdout, index=False)
        path = None
    else:
        path = output_file(
            args.out, lambda p: df.to_csv(p, index=False), force=args.force, header=header
        )
    if args.json:
        print(
            _json_document(
                {
                    "command": "eval",
                    "model": emb.name,
                    "sae": sae.name,
                    "context": ctx,
                    "sample": sample.how,
                    "token_weights": None if tw is None else str(tw[0]),
                    "out": str(path),
                    "in_context": inside,
                    "past_context": past if past["fvu"] == past["fvu"] else None,
                    "dead_features": int(dead.sum()),
                    "d_sae": sae.d_sae,
                    "positions": df.to_dict(orient="records"),
                }
            )
        )
        return 0
    say = (
        sys.stderr if to_stdout else sys.stdout
    )  # with --out -, the CSV alone is on standard output
    print(
        f"{emb.name} x {sae.name} (context {ctx}); {sample.how}" + (f" from {tw[0]}" if tw else ""),
        file=say,
    )
    if not to_stdout:
        shown = df.iloc[:: max(1, len(df) // 32)][
            ["position", "mse", "fvu", "cosine", "l0", "random_fvu"]
        ]
        print(shown.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    print(
        f"in context (0..{ctx - 1}): mean FVU {inside['fvu']:.4f}, mean L0 {inside['l0']:.1f}, "
        f"cosine {inside['cosine']:.4f}",
        file=say,
    )
    if past["fvu"] == past["fvu"]:
        print(
            f"past context ({ctx}..{emb.n_ctx - 1}): mean FVU {past['fvu']:.4f}, mean L0 "
            f"{past['l0']:.1f}, cosine {past['cosine']:.4f}",
            file=say,
        )
    print(
        f"dead features (never fire on the exact grid within the context): {int(dead.sum())} of "
        f"{sae.d_sae} ({dead.mean():.1%})",
        file=say,
    )
    if path is not None:
        print(f"wrote {path}")
    return 0


@command("train")
def run_train(args: argparse.Namespace, invocation: str) -> int:
    from ..training.train import TRAIN, train_sae

    _folder_out(args)
    values = values_of(args, TrainConfig)
    TrainConfig(**values).validate(None)
    dev = resolve_device(args.device)
    output = Output(args.out, TRAIN, force=args.force, command=invocation, inputs=_inputs(args))
    output.claim()
    emb = load_embeddings(args.model, center=args.center).to(dev)
    res = train_sae(
        emb,
        token_weights=args.token_weights,
        init=args.init,
        out=output,
        resume=args.resume,
        resume_or_start=args.resume_or_start,
        force=args.force,
        command=invocation,
        model_name=args.model,
        **values,
    )
    last = res.log[-1] if res.log else {}
    warnings = []
    if last.get("fvu", 0.0) > 1.0:
        warnings.append(
            f"the final FVU {last['fvu']:.3f} is above 1: this SAE reconstructs worse than the mean "
            "input; "
            "train longer (--steps), lower --l1 or change --lr."
        )
    if args.json:
        print(
            _json_document(
                {
                    "command": "train",
                    "out": str(res.out),
                    "d_sae": res.sae.d_sae,
                    "context_size": res.sae.context_size,
                    "hook_name": res.sae.hook_name,
                    "final": last,
                    "warnings": warnings,
                }
            )
        )
    else:
        print(
            f"wrote {res.out}: d_sae {res.sae.d_sae}, context {res.sae.context_size}, hook "
            f"{res.sae.hook_name}, final FVU "
            f"{last.get('fvu', float('nan')):.4f}, L0 {last.get('l0', float('nan')):.1f}, dead "
            f"{last.get('dead_fraction', float('nan')):.3f}"
        )
    for warning in warnings:
        print(f"posfeat: warning: {warning}", file=sys.stderr)
    return 0


def _sweep_recipe(
    args: argparse.Namespace, cls: type, exclude: tuple[str, ...] = ()
) -> dict[str, Any]:
    """The recipe a sweep command trains with: the same :meth:`recipe` the API calls, fed the flags'
    values."""
    return cls.recipe(**values_of(args, TrainConfig, exclude=(*cls.FIXED, *exclude)))


def _width_setup(args: argparse.Namespace) -> tuple[WidthSweepConfig, dict[str, Any]]:
    """The config and recipe ``posfeat sweep widths`` builds from its flags (tests compare them with
    the API's)."""
    cfg = WidthSweepConfig(**values_of(args, WidthSweepConfig))
    cfg.validate()
    return cfg, _sweep_recipe(args, WidthSweepConfig)


def _print_plan(
    emb: Any,
    runs: list[Any],
    shared: Any,
    exe: ExecutorConfig,
    as_json: bool = False,
    name: str = "",
) -> int:
    """The plan; against a cluster (``--executor ray --address``) also how its runs map onto the
    cluster's GPUs."""
    from ..experiments.probe import plan_table, plan_text

    nodes = None
    if (
        exe.executor == "ray" and exe.address
    ):  # read before the probe: a cluster that cannot be used fails at once
        from ..experiments.cluster import cluster_nodes, resolve_address

        nodes = cluster_nodes(resolve_address(exe.address), label=exe.address)
    df, info = plan_table(emb, runs, shared)
    if as_json:
        print(_json_document({"command": name, "plan": df.to_dict(orient="records"), "info": info}))
        return 0
    print(plan_text(df, info))
    if nodes is not None:
        from ..experiments.cluster import placement_text, plan_placement

        print(placement_text(plan_placement(df, nodes, exe.gpu_memory), exe.address))
    return 0


def _sweep_json(name: str, out: str, table: Any) -> int:
    path = expand(out).resolve()
    summary = json.loads((path / "summary.json").read_text())
    print(
        _json_document(
            {
                "command": name,
                "out": str(path),
                "runs": table.to_dict(orient="records"),
                "summary": summary,
            }
        )
    )
    return 0


def _finished(out: str, placement: dict[str, Any]) -> None:
    """The sweep's last lines: where it wrote, and the nodes and devices its runs took part on."""
    path = expand(out).resolve()
    print(f"wrote {path} (runs.csv, summary.json, figures/, section.html)")
    if placement.get("nodes"):
        print(
            f"runs took part on {placement['nodes']} node(s) and {placement['devices']} device(s): "
            + ", ".join(f"{k}: {n} run(s)" for k, n in placement.get("runs_per_node", {}).items())
            + " (runs.csv: node, device, wall_seconds)"
        )


@command("sweep widths")
def run_sweep_widths(args: argparse.Namespace, invocation: str) -> int:
    from ..experiments.folder import SWEEP_KINDS
    from ..experiments.plan import Shared, width_plan
    from ..experiments.sweeps import run_widths

    _folder_out(args)
    cfg, recipe = _width_setup(args)
    exe = ExecutorConfig(**values_of(args, ExecutorConfig))
    exe.validate()
    dev = resolve_device(args.device)
    if not args.plan:
        check_target(args.out, force=True, inputs=_inputs(args), kinds=SWEEP_KINDS)
    emb = load_embeddings(args.model).to(dev)
    if args.plan:
        return _print_plan(
            emb, width_plan(cfg, recipe), Shared(emb=emb), exe, args.json, "sweep widths"
        )
    result = run_widths(
        emb,
        cfg,
        recipe,
        exe,
        out=args.out,
        token_weights=args.token_weights,
        command=invocation,
        model_name=args.model,
        progress=True,
        force=args.force,
        num_cpus=None,
    )
    if args.json:
        return _sweep_json("sweep widths", args.out, result.table)
    print(result.table.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    print(result.sentence)
    _finished(args.out, result.placement)
    return 0


@command("sweep context")
def run_sweep_context(args: argparse.Namespace, invocation: str) -> int:
    from ..experiments.folder import SWEEP_KINDS
    from ..experiments.plan import Shared, context_plan
    from ..experiments.sweeps import _check_contexts, run_context

    _folder_out(args)
    cfg = ContextSweepConfig(**values_of(args, ContextSweepConfig))
    cfg.validate()
    recipe = values_of(args, TrainConfig, exclude=(*ContextSweepConfig.FIXED, "l1"))
    exe = ExecutorConfig(**values_of(args, ExecutorConfig))
    exe.validate()
    dev = resolve_device(args.device)
    if not args.plan:
        check_target(args.out, force=True, inputs=_inputs(args), kinds=SWEEP_KINDS)
    emb, sae = load_pair(
        args.model, args.sae, device=dev, allow_any_hook=args.allow_any_hook, strict=args.strict
    )
    tw = _token_weights(args, emb, sae)
    if args.plan:
        _check_contexts(cfg.contexts, sae.context_size, emb, sae)
        return _print_plan(
            emb,
            context_plan(cfg, ContextSweepConfig.recipe(**recipe), sae),
            Shared(emb=emb, sae=sae),
            exe,
            args.json,
            "sweep context",
        )
    result = run_context(
        emb,
        sae,
        cfg,
        ContextSweepConfig.recipe(**recipe),
        exe,
        out=args.out,
        token_weights=None if tw is None else tw[1],
        command=invocation,
        model_name=args.model,
        progress=True,
        force=args.force,
        num_cpus=None,
    )
    if args.json:
        return _sweep_json("sweep context", args.out, result.table)
    print(result.table.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    for name, v in result.repair.items():
        print(
            f"{name}: {v['verdict']} (past-context FVU {v['past_margin']:+.1%} vs the original "
            "in-context FVU, tolerance "
            f"{v['past_tolerance']:.0%}; in-context FVU {v['in_context_margin']:+.1%} vs before, "
            f"tolerance {v['in_context_tolerance']:.0%}: "
            f"{v['why']})"
        )
    _finished(args.out, result.placement)
    return 0


@command("compare")
def run_compare(args: argparse.Namespace, invocation: str) -> int:
    from ..analyses.compare import compare_saes
    from ..outputs.write import COMPARE, save_comparison

    if len(args.sae) != 2:
        raise PosfeatError(
            f"--sae was given {len(args.sae)} time(s); compare takes exactly two: --sae A --sae B."
        )
    if not -1.0 <= args.threshold <= 1.0:
        raise PosfeatError(
            f"--threshold {args.threshold} is not a cosine; give a value between -1 and 1."
        )
    _folder_out(args)
    dev = resolve_device(args.device)
    output = Output(args.out, COMPARE, force=args.force, command=invocation, inputs=_inputs(args))
    output.claim()
    emb, a = load_pair(args.model, args.sae[0], device=dev, allow_any_hook=args.allow_any_hook)
    b = load_sae(args.sae[1], device=dev, allow_any_hook=args.allow_any_hook)
    cmp = compare_saes(a, b, emb, threshold=args.threshold)
    for warning in cmp.summary["warnings"]:
        print(f"posfeat: warning: {warning}", file=sys.stderr)
    out = save_comparison(cmp, output, force=args.force, command=invocation)
    if args.json:
        print(
            _json_document(
                {
                    "command": "compare",
                    "out": str(out),
                    "threshold": args.threshold,
                    "summary": cmp.summary,
                }
            )
        )
        return 0
    for side in ("a", "b"):
        for kind, c in cmp.summary[side].items():
            print(f"SAE {side.upper()} {kind}: " + ", ".join(f"{v} {k}" for k, v in c.items()))
    print(
        f"matched by {cmp.summary['assignment']} at cosine >= {args.threshold}; wrote "
        f"{out}/compare.csv"
    )
    return 0
