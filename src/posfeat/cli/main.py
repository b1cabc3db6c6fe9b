"""The ``posfeat`` command line: the parser, signal handling and the one place errors become one line and an exit status.

Only the parser is imported here: each command's module (and torch, scipy, matplotlib with it) is
imported once the command line is parsed, so ``posfeat --help`` and ``posfeat --version`` are fast.

Exit status: 0 done; 2 an error the user can fix (one sentence on stderr, nothing half-written);
``128 + signal`` when SIGINT or SIGTERM stopped the run (outputs left as they were; training keeps a
checkpoint to resume).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import shlex
import signal
import sys
from collections.abc import Iterator

from ..analyses.config import AnalyzeConfig
from ..core.errors import Interrupted, PosfeatError, Stopped
from ..core.version import __version__
from ..experiments.config import ContextSweepConfig, ExecutorConfig, WidthSweepConfig
from ..training.config import TrainConfig
from .flags import Parser, add_dataclass_flags, add_device, add_output, add_pair


def _analyze_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("analyze", help="reproduce the note: classify features, the helix, length generalisation, verdicts, report.html")
    add_pair(p)
    p.add_argument("--positions", default=None, help="study positions 0..N-1 (default all of W_pos)")
    add_dataclass_flags(p, AnalyzeConfig)
    p.add_argument("--rule", action="append", default=[], metavar="NAME=VALUE", help="change a verdict threshold (see README; repeatable)")
    p.add_argument("--include-sweep", action="append", default=[], metavar="DIR", help="add a posfeat sweep folder's section to report.html")
    add_output(p, "posfeat-out", "output folder")


def _other_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("feature", help="one feature's card in the terminal")
    p.add_argument("index", type=int)
    add_pair(p)
    p = sub.add_parser("prompt", help="the features that fire on each token of a text (exact at layer 0: W_E[t] + W_pos[p])")
    p.add_argument("text", help="the text, tokenised with the model's own tokenizer")
    p.add_argument("--top", type=int, default=10, help="features listed per token (default 10)")
    add_pair(p)
    p = sub.add_parser("stats", help="exact grid statistics of every feature, as CSV")
    add_pair(p)
    p.add_argument("--positions", default=None, help="N or A:B (default the SAE's context)")
    p.add_argument("--out", default=None, help="CSV file (default: print the top features)")
    p.add_argument("--force", action="store_true", help="replace an existing CSV that posfeat wrote")
    p = sub.add_parser("eval", help="reconstruction quality per position on a token sample")
    add_pair(p)
    p.add_argument("--positions", default=None, help="N or A:B (default all)")
    p.add_argument("--tokens", type=int, default=AnalyzeConfig.tokens_sample, help=f"tokens sampled (default {AnalyzeConfig.tokens_sample})")
    p.add_argument("--token-weights", default=None, help="draw tokens from these weights (default: the SAE's own, else uniform)")
    p.add_argument("--seed", type=int, default=0)
    add_output(p, "eval.csv", "CSV file")
    p = sub.add_parser("compare", help="match the features of two SAEs: shared, split, unique")
    p.add_argument("--sae", action="append", default=[], required=True, help="an SAE (give exactly two: --sae A --sae B)")
    p.add_argument("--model", default=None, help="the model both read (default: SAE A's)")
    p.add_argument("--allow-any-hook", action="store_true")
    p.add_argument("--threshold", type=float, default=0.5, help="decoder cosine for a match or a split (default 0.5)")
    add_device(p)
    add_output(p, None, "output folder")


def _training_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train an SAE on the layer-0 grid")
    p.add_argument("--model", default="minilm", help="model (default minilm, the bundled one)")
    add_dataclass_flags(p, TrainConfig)
    p.add_argument("--token-weights", default=None, help="safetensors file with one weight per token id (key 'weights')")
    p.add_argument("--init", default=None, help="SAE folder to fine-tune")
    p.add_argument("--center", action="store_true", help="centre W_E and W_pos rows first (center_writing_weights)")
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint in <out>.partial (an error when there is none)")
    p.add_argument("--resume-or-start", action="store_true", help="continue from a checkpoint if there is one, else start")
    add_device(p)
    add_output(p, None, "output folder (a SAELens-format SAE)")
    sweep = sub.add_parser("sweep", help="test the note's conjectures: widths or contexts")
    sweep = sweep.add_subparsers(dest="sweep", required=True, parser_class=Parser)
    w = sweep.add_parser("widths", help="train SAEs of several widths (and seeds) and count positional features")
    w.add_argument("--model", default="minilm")
    add_dataclass_flags(w, WidthSweepConfig)
    add_dataclass_flags(w, TrainConfig, exclude=WidthSweepConfig.FIXED, defaults=WidthSweepConfig.RECIPE)
    w.add_argument("--token-weights", default=None, help="safetensors file with one weight per token id")
    add_device(w)
    _sweep_flags(w)
    c = sweep.add_parser("context", help="fine-tune an SAE on longer contexts, against a from-scratch control")
    add_pair(c)
    add_dataclass_flags(c, ContextSweepConfig)
    add_dataclass_flags(c, TrainConfig, exclude=(*ContextSweepConfig.FIXED, "l1"), defaults=ContextSweepConfig.RECIPE)
    c.add_argument("--token-weights", default=None, help="default: the SAE's own, else uniform")
    _sweep_flags(c)


def _sweep_flags(p: argparse.ArgumentParser) -> None:
    add_dataclass_flags(p, ExecutorConfig)
    p.add_argument("--plan", action="store_true", help="print the runs with estimated memory and time from a short probe on --device; train nothing")
    add_output(p, None, "sweep folder (a finished sweep of the same kind is extended; an interrupted one continued)")


def build_parser() -> argparse.ArgumentParser:
    ap = Parser(prog="posfeat", description="Exact analysis of positional and semantic features of layer-0 SAEs.")
    ap.add_argument("-v", "--verbose", action="store_true", help="log more")
    ap.add_argument("-V", "--version", action="version", version=f"posfeat {__version__}")
    sub = ap.add_subparsers(dest="command", required=True, parser_class=Parser)
    _analyze_parser(sub)
    _other_parsers(sub)
    _training_parsers(sub)
    return ap


@contextlib.contextmanager
def signals_raise() -> Iterator[None]:
    """While running, SIGINT and SIGTERM raise :class:`Interrupted` (a KeyboardInterrupt) in the main thread."""
    def handler(signum: int, frame: object) -> None:
        raise Interrupted(signum)

    old = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        for s in old:
            signal.signal(s, handler)
    except ValueError:  # not the main thread: leave signals alone
        old = {}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    invocation = "posfeat " + shlex.join(argv)
    try:
        with signals_raise():
            args = build_parser().parse_args(argv)
            logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
            name = args.command if args.command != "sweep" else f"sweep {args.sweep}"
            from .commands import COMMANDS  # here, not at the top: the commands import torch

            return COMMANDS[name](args, invocation)
    except Stopped as err:
        print(f"posfeat: {_one_line(err.for_cli())}", file=sys.stderr)
        return 128 + err.signum if err.signum else 2
    except PosfeatError as err:
        print(f"posfeat: error: {_one_line(err.for_cli())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as err:
        signum = getattr(err, "signum", signal.SIGINT)
        print(f"posfeat: interrupted by {signal.Signals(signum).name}; outputs were left as they were.", file=sys.stderr)
        return 128 + signum
    except OSError as err:
        where = err.filename or "a file"
        print(f"posfeat: error: {err.strerror or _one_line(str(err))}: {where}; check that path and its permissions.", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
