"""The ``posfeat`` command line.

Every error a user can cause ends in one sentence on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import shlex
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .errors import PosfeatError

COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {}


def command(name: str) -> Callable[[Callable[[argparse.Namespace], int]], Callable[[argparse.Namespace], int]]:
    def deco(fn: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
        COMMANDS[name] = fn
        return fn

    return deco


_ARGV: list[str] = []


def invocation() -> str:
    """The command line as parsed (``posfeat ...``), recorded in outputs."""
    return "posfeat " + shlex.join(_ARGV)


def _add_pair(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None, help="model: 'minilm' (bundled, default), a hub id such as gpt2, or a folder")
    p.add_argument("--sae", default=None,
                   help="SAE: 'minilm' (bundled, default), gpt2-small-res-jb/blocks.0.hook_resid_pre, or a SAELens-format folder")
    p.add_argument("--device", default="cpu", help="cpu or cuda")


def _positions(spec: str | None, n_ctx: int) -> range | None:
    """'N' (positions 0..N-1) or 'A:B' -> range, checked against n_ctx."""
    if spec is None:
        return None
    try:
        if ":" in spec:
            a, b = spec.split(":", 1)
            r = range(int(a or 0), int(b or n_ctx))
        else:
            r = range(int(spec))
    except ValueError:
        raise PosfeatError(f"--positions {spec!r} is not N or A:B; give e.g. 128 or 0:512.") from None
    if len(r) == 0 or r.start < 0 or r.stop > n_ctx:
        raise PosfeatError(f"--positions {spec} is outside the model's {n_ctx} positions; give a range within 0:{n_ctx}.")
    return r


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="posfeat", description="Exact analysis of positional and semantic features of layer-0 SAEs.")
    ap.add_argument("-v", "--verbose", action="store_true", help="log more")
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("analyze", help="reproduce the note: classify features, the helix, length generalisation, report.html")
    _add_pair(p)
    p.add_argument("--positions", default=None, help="study positions 0..N-1 (default all of W_pos)")
    p.add_argument("--tokens-sample", type=int, default=2048, help="tokens sampled for reconstruction analyses (default 2048)")
    p.add_argument("--token", default=None, help="token for the per-token figure (default a common one)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="posfeat-out", help="output folder (default posfeat-out)")
    p.add_argument("--force", action="store_true", help="replace an existing output folder")
    p.add_argument("--include-sweep", action="append", default=[], metavar="DIR",
                   help="add the section of a posfeat sweep folder to report.html (repeatable)")

    p = sub.add_parser("feature", help="one feature's card in the terminal")
    p.add_argument("index", type=int)
    _add_pair(p)

    p = sub.add_parser("stats", help="exact grid statistics of every feature, as CSV")
    _add_pair(p)
    p.add_argument("--positions", default=None)
    p.add_argument("--out", default=None, help="CSV file (default: print the top features)")

    p = sub.add_parser("train", help="train an SAE on the layer-0 grid")
    p.add_argument("--model", default="minilm")
    p.add_argument("--d-sae", type=int, required=True)
    p.add_argument("--context", type=int, required=True)
    p.add_argument("--arch", default="relu", choices=["relu", "topk"])
    p.add_argument("--l1", type=float, default=5.0, help="L1 coefficient (ReLU) on inputs scaled to E||x||^2 = d_model (default 5)")
    p.add_argument("--k", type=int, default=None, help="active features (TopK)")
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--batch", type=int, default=2048)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--token-weights", default=None, help="safetensors file with one weight per token id (key 'weights')")
    p.add_argument("--init", default=None, help="SAE folder to fine-tune")
    p.add_argument("--center", action="store_true", help="centre W_E and W_pos rows first (center_writing_weights)")
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint in <out>.partial")
    p.add_argument("--force", action="store_true")
    p.add_argument("--out", required=True)

    p = sub.add_parser("eval", help="reconstruction quality per position on a token sample")
    _add_pair(p)
    p.add_argument("--positions", default=None, help="N or A:B (default all)")
    p.add_argument("--tokens", type=int, default=2048, help="tokens sampled (default 2048)")
    p.add_argument("--token-weights", default=None, help="draw tokens from these weights (default: the SAE's own, else uniform)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="CSV file (default eval.csv in the current folder)")

    p = sub.add_parser("sweep", help="test the note's conjectures: widths or contexts")
    ssub = p.add_subparsers(dest="sweep", required=True)
    w = ssub.add_parser("widths", help="train one SAE per width and count positional features")
    w.add_argument("--model", default="minilm")
    w.add_argument("--context", type=int, required=True)
    w.add_argument("--d-sae", required=True, help="comma-separated widths, e.g. 256,512,1024,2048,4096")
    w.add_argument("--l1", type=float, default=1.0)
    w.add_argument("--k", type=int, default=None)
    w.add_argument("--steps", type=int, default=2000)
    w.add_argument("--lr", type=float, default=5e-3)
    w.add_argument("--tokens", type=int, default=2048, help="tokens sampled for in-context FVU and L0")
    w.add_argument("--batch", type=int, default=2048)
    w.add_argument("--seed", type=int, default=0)
    w.add_argument("--token-weights", default=None)
    w.add_argument("--out", required=True)
    c = ssub.add_parser("context", help="fine-tune an SAE on longer contexts")
    c.add_argument("--model", default=None)
    c.add_argument("--sae", default=None)
    c.add_argument("--contexts", required=True, help="comma-separated contexts, e.g. 128,192,256,512")
    c.add_argument("--steps", type=int, default=500, help="fine-tuning steps per context")
    c.add_argument("--control-steps", type=int, default=None, help="steps of the from-scratch control (default: the SAE's own)")
    c.add_argument("--lr", type=float, default=1e-3)
    c.add_argument("--tokens", type=int, default=2048)
    c.add_argument("--batch", type=int, default=2048)
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--token-weights", default=None)
    c.add_argument("--out", required=True)
    return ap


@command("train")
def _train(args: argparse.Namespace) -> int:
    from .models import load_embeddings
    from .train import train_sae

    emb = load_embeddings(args.model, center=args.center)
    res = train_sae(
        emb, d_sae=args.d_sae, context=args.context, arch=args.arch, l1=args.l1, k=args.k, steps=args.steps, batch=args.batch,
        lr=args.lr, seed=args.seed, token_weights=args.token_weights, init=args.init, out=args.out, resume=args.resume,
        force=args.force, command=invocation(), model_name=args.model,
    )
    last = res.log[-1] if res.log else {}
    print(f"wrote {res.out}: d_sae {res.sae.d_sae}, context {args.context}, final FVU {last.get('fvu', float('nan')):.4f}, "
          f"L0 {last.get('l0', float('nan')):.1f}, dead {last.get('dead_fraction', float('nan')):.3f}")
    return 0


def _token_weights_for(args: argparse.Namespace, emb: object, sae: object) -> tuple[Path, object] | None:
    """--token-weights if given, else the SAE folder's own token_weights.safetensors, else None (uniform)."""
    from .sources import sae_token_weights
    from .train import load_token_weights

    if getattr(args, "token_weights", None):
        return Path(args.token_weights), load_token_weights(args.token_weights, emb.d_vocab)
    return sae_token_weights(sae, emb.d_vocab)


@command("eval")
def _eval(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from .evaluation import dead_features, in_context_stats, range_means, reconstruction_by_position
    from .reconstruction import sample_tokens
    from .sources import load_pair

    emb, sae = load_pair(args.model, args.sae, device=args.device)
    tw = _token_weights_for(args, emb, sae)
    sample = sample_tokens(emb, args.tokens, weights=None if tw is None else tw[1], seed=args.seed)
    positions = _positions(args.positions, emb.n_ctx)
    out = Path(args.out or "eval.csv")
    if out.parent and not out.parent.exists():
        raise PosfeatError(f"Folder {out.parent} for --out does not exist; create it or choose another --out.")
    df = reconstruction_by_position(emb, sae, sample, positions, device=args.device, seed=args.seed)
    dead = dead_features(in_context_stats(emb, sae, device=args.device))
    ctx = sae.context_size or emb.n_ctx
    from .atomic import write_text_atomic

    write_text_atomic(out, df.to_csv(index=False))
    con = Console()
    con.print(f"[bold]{emb.name}[/] x [bold]{sae.name}[/] (context {ctx}); {sample.how}"
              + (f" from {tw[0]}" if tw else ""))
    table = Table("position", "MSE", "FVU", "cosine", "L0", "random FVU", title="reconstruction by position (every 16th)")
    for r in df.iloc[:: max(1, len(df) // 32)].itertuples():
        table.add_row(str(r.position), f"{r.mse:.5f}", f"{r.fvu:.4f}", f"{r.cosine:.4f}", f"{r.l0:.1f}", f"{r.random_fvu:.3f}")
    con.print(table)
    inside = range_means(df, 0, ctx)
    past = range_means(df, ctx, emb.n_ctx)
    con.print(f"in context (0..{ctx - 1}): mean FVU {inside['fvu']:.4f}, mean L0 {inside['l0']:.1f}, cosine {inside['cosine']:.4f}")
    if not np.isnan(past["fvu"]):
        con.print(f"past context ({ctx}..{emb.n_ctx - 1}): mean FVU {past['fvu']:.4f}, mean L0 {past['l0']:.1f}, "
                  f"cosine {past['cosine']:.4f}")
    con.print(f"dead features (never fire on the exact grid within the context): {int(dead.sum())} of {sae.d_sae} "
              f"({dead.mean():.1%})")
    con.print(f"wrote {out}")
    return 0


@command("analyze")
def _analyze(args: argparse.Namespace) -> int:
    import time

    from rich.console import Console

    from .analysis import analyze
    from .atomic import check_output_folder
    from .report import sweep_sections
    from .sources import load_pair

    t0 = time.time()
    out = check_output_folder(args.out, force=args.force)  # fail early on a bad --out, before any work
    sweep_sections(args.include_sweep)  # and on a bad --include-sweep
    emb, sae = load_pair(args.model, args.sae, device=args.device)
    if args.positions is not None and ":" in args.positions:
        raise PosfeatError(f"--positions {args.positions!r}: analyze studies positions 0..N-1; give a single number N.")
    positions = None if args.positions is None else _positions(args.positions, emb.n_ctx).stop
    an = analyze(emb, sae, positions=positions, tokens_sample=args.tokens_sample, token=args.token, seed=args.seed,
                 device=args.device, progress=True)
    an.save(out, force=True, command=invocation(), include_sweeps=args.include_sweep)
    s = an.summary
    con = Console()
    con.print(f"[bold]{s['model']}[/] x [bold]{s['sae']}[/] (context {s['context_size']}, centred {s['centered']})")
    c = s["counts"]
    con.print(f"features: {c['positional']} positional, {c['semantic']} semantic, {c['mixed']} mixed, {c['dead']} dead; "
              f"disjoint fraction {s['disjoint_fraction']:.3f}; positional-score knee {s['positional_score_knee']}")
    con.print(f"helix: top-3 PCs of W_pos explain {s['pca_top3_variance']:.4f}")
    con.print(f"FVU in context {s['fvu_in_context']:.4f}, past context {s['fvu_past_context']:.4f} "
              f"(random vector {s['random_fvu_past_context']:.3f}); L0 {s['l0_in_context']:.1f} -> {s['l0_past_context']:.1f}")
    con.print(f"add-back removes {s['addback_error_removed']:.1%} of the past-context error; "
              f"spurious features per token past context {s['spurious_per_token_past_context']:.2f}")
    con.print(f"wrote {out}/report.html and features.csv, summary.json, figures/ in {time.time() - t0:.0f} s")
    return 0


@command("feature")
def _feature(args: argparse.Namespace) -> int:
    from rich.console import Console

    from .classify import classify, feature_table
    from .grid_stats import feature_stats
    from .sources import load_pair

    emb, sae = load_pair(args.model, args.sae, device=args.device)
    if not 0 <= args.index < sae.d_sae:
        raise PosfeatError(f"Feature {args.index} is out of range; {sae.name} has features 0..{sae.d_sae - 1}.")
    ctx = min(sae.context_size or emb.n_ctx, emb.n_ctx)
    one = sae.subset([args.index]) if sae.separable else sae  # features are independent: statistics of one alone
    i = 0 if sae.separable else args.index
    st = feature_stats(emb, one, range(emb.n_ctx), device=args.device)
    st_ctx = feature_stats(emb, one, range(ctx), device=args.device)
    row = feature_table(st_ctx, emb, classify(st_ctx)).iloc[i]
    prof = st.mean_by_position[i]
    con = Console()
    con.print(f"[bold]feature {args.index}[/] of {sae.name} on {emb.name}: [bold]{row.kind}[/]")
    con.print(f"shares of variance: position {row.position_share:.3f}, token {row.token_share:.3f}, "
              f"interaction {row.interaction_share:.3f}; fires on {row.fire:.2%} of the grid (context {ctx})")
    con.print(f"peak position {row.peak_position} (mean {row.peak_mean:.4f}), span {row.span_start}..{row.span_end}")
    con.print(f"mean by position 0..{emb.n_ctx - 1} (| marks the context end):")
    con.print(sparkline(prof, mark=ctx))
    tops = st_ctx.top_tokens[i][:10]
    means = st_ctx.top_token_means[i][:10]
    con.print("top tokens: " + ", ".join(f"{emb.token_str(int(t))!r} {m:.3f}" for t, m in zip(tops, means)))
    return 0


def sparkline(values: np.ndarray, width: int = 96, mark: int | None = None) -> str:
    """A one-line sparkline of ``values`` resampled to ``width`` cells; ``|`` after position ``mark``."""
    bars = " ▁▂▃▄▅▆▇█"
    v = np.asarray(values, dtype=float)
    n = len(v)
    edges = np.linspace(0, n, min(width, n) + 1).astype(int)
    cells = np.array([v[a:b].mean() for a, b in itertools.pairwise(edges)])
    hi = cells.max() if cells.max() > 0 else 1.0
    cut = None if mark is None or mark >= n else int(np.searchsorted(edges[:-1], mark))  # first cell at or past mark
    out = []
    for i, c in enumerate(cells):
        if i == cut:
            out.append("|")
        out.append(bars[int(np.rint(max(c, 0) / hi * (len(bars) - 1)))])
    return "".join(out)


@command("stats")
def _stats(args: argparse.Namespace) -> int:
    import time

    from .atomic import write_text_atomic
    from .classify import classify, feature_table
    from .grid_stats import feature_stats
    from .sources import load_pair

    emb, sae = load_pair(args.model, args.sae, device=args.device)
    positions = _positions(args.positions, emb.n_ctx) or range(min(sae.context_size or emb.n_ctx, emb.n_ctx))
    t0 = time.time()
    st = feature_stats(emb, sae, positions, device=args.device, progress=True)
    dt = time.time() - t0
    df = feature_table(st, emb, classify(st))
    print(f"exact statistics of {sae.d_sae} features over {emb.d_vocab} tokens x {len(positions)} positions "
          f"({emb.d_vocab * len(positions) * sae.d_sae:.3e} activations) in {dt:.1f} s")
    if args.out:
        write_text_atomic(args.out, df.to_csv(index=False, float_format="%.8g"))
        print(f"wrote {args.out}")
    else:
        print(df.sort_values("positional_score", ascending=False).head(20).to_string(index=False))
    return 0


@command("sweep widths")
def _sweep_widths(args: argparse.Namespace) -> int:
    from .models import load_embeddings
    from .sweeps import parse_ints, sweep_widths

    widths = parse_ints(args.d_sae, "--d-sae")
    emb = load_embeddings(args.model)
    df = sweep_widths(emb, context=args.context, widths=widths, out=args.out, l1=args.l1, k=args.k, steps=args.steps, batch=args.batch,
                      lr=args.lr, seed=args.seed, token_weights=args.token_weights, tokens=args.tokens, command=invocation(),
                      model_name=args.model)
    print(df.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    summary = json.loads((Path(args.out) / "summary.json").read_text())
    print(f"positional features ~ width^{summary['power_law_exponent']:.3f}; wrote {Path(args.out).resolve()}")
    return 0


@command("sweep context")
def _sweep_context(args: argparse.Namespace) -> int:
    from .sources import load_pair
    from .sweeps import parse_ints, sweep_context

    contexts = parse_ints(args.contexts, "--contexts")
    emb, sae = load_pair(args.model, args.sae)
    tw = _token_weights_for(args, emb, sae)
    df = sweep_context(emb, sae, contexts=contexts, out=args.out, steps=args.steps, control_steps=args.control_steps, batch=args.batch,
                       lr=args.lr, seed=args.seed, token_weights=None if tw is None else tw[1], tokens=args.tokens,
                       command=invocation(), model_name=args.model)
    print(df.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    summary = json.loads((Path(args.out) / "summary.json").read_text())
    print("verdicts: " + "; ".join(f"{k}: {v}" for k, v in summary["verdicts"].items()) + f"; wrote {Path(args.out).resolve()}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    _ARGV[:] = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(_ARGV)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    name = args.command if args.command != "sweep" else f"sweep {args.sweep}"
    try:
        return COMMANDS[name](args)
    except PosfeatError as err:
        print(f"posfeat: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("posfeat: interrupted; nothing was written to the output folder.", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
