"""The ``posfeat`` command line: the parser, signal handling and the one place errors become one
line and an exit status.

Only the parser is imported here: each command's module (and torch, scipy, matplotlib with it) is
imported once the command line is parsed, so ``posfeat --help`` and ``posfeat --version`` are fast.

Exit status: 0 done; 2 an error the user can fix (one sentence on stderr, nothing half-written);
``128 + signal`` when SIGINT, SIGTERM, SIGHUP or SIGQUIT stopped the run (outputs left as they were;
training keeps a checkpoint to resume), or 0 when the signal came after the output was complete; 141
(``128 + SIGPIPE``), with nothing printed, when the reader of the standard output left (``posfeat
... | head``), as for a program that SIGPIPE ends. Signals are handled from the first line of
:func:`main` until the process exits, never by their default action."""

from __future__ import annotations

import argparse
import atexit
import contextlib
import logging
import os
import select
import shlex
import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import NoReturn

from ..analyses.config import AnalyzeConfig
from ..core.errors import Interrupted, PosfeatError, Stopped
from ..core.memory import collector_paused, collector_scope
from ..core.signals import STOP_SIGNALS
from ..core.version import __version__
from ..experiments.config import ContextSweepConfig, ExecutorConfig, WidthSweepConfig
from ..io.lock import release_all, set_run
from ..io.names import BUNDLED_MODEL
from ..io.paths import PATH_KEEP, expand, shorten
from ..io.writes import completed
from ..training.config import TrainConfig
from .flags import (
    STDOUT,
    Parser,
    add_dataclass_flags,
    add_device,
    add_json,
    add_output,
    add_pair,
    seed_value,
)


def _analyze_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "analyze",
        help="reproduce the note: classify features, the helix, length generalisation, verdicts, "
        "report.html",
    )
    add_pair(p)
    p.add_argument(
        "--positions", default=None, help="study positions 0..N-1 (default all of W_pos)"
    )
    add_dataclass_flags(p, AnalyzeConfig)
    p.add_argument(
        "--rule",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="change a verdict threshold (see README; repeatable)",
    )
    p.add_argument(
        "--include-sweep",
        action="append",
        default=[],
        metavar="DIR",
        help="add a posfeat sweep folder's section to report.html",
    )
    add_output(p, "posfeat-out", "output folder")
    add_json(
        p, "the pair, the counts, the reconstruction numbers, every verdict and the files written"
    )


def _other_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("feature", help="one feature's card in the terminal")
    p.add_argument("index", type=int, help="the feature's index")
    p.add_argument(
        "--json", action="store_true", help="print the card as one JSON document (docs/usage.md)"
    )
    add_pair(p)
    p = sub.add_parser(
        "prompt",
        help="the features that fire on each token of a text (exact at layer 0: W_E[t] + W_pos[p])",
    )
    p.add_argument(
        "text",
        help="the text, tokenised with the model's own tokenizer; - reads it from standard input",
    )
    p.add_argument("--top", type=int, default=10, help="features listed per token (default 10)")
    add_json(p, "every token's firing features")
    add_pair(p)
    p = sub.add_parser("stats", help="exact grid statistics of every feature, as CSV")
    add_pair(p)
    p.add_argument("--positions", default=None, help="N or A:B (default the SAE's context)")
    p.add_argument(
        "--out",
        default=None,
        help="CSV file; - prints the CSV on standard output (default: print the top features)",
    )
    p.add_argument(
        "--force", action="store_true", help="replace an existing CSV that posfeat wrote"
    )
    p.add_argument(
        "--json",
        action="store_true",
        help="print every feature's statistics as one JSON document (docs/usage.md)",
    )
    p = sub.add_parser("eval", help="reconstruction quality per position on a token sample")
    add_pair(p)
    p.add_argument("--positions", default=None, help="N or A:B (default all)")
    p.add_argument(
        "--tokens",
        type=int,
        default=AnalyzeConfig.tokens_sample,
        help=f"tokens sampled (default {AnalyzeConfig.tokens_sample})",
    )
    p.add_argument(
        "--token-weights",
        default=None,
        help="draw tokens from these weights (default: the SAE's own, else uniform)",
    )
    p.add_argument(
        "--seed",
        type=seed_value,
        default=0,
        help="seed of the token sample, 0..2**32-1 (default 0)",
    )
    add_output(p, "eval.csv", "CSV file", stdout=True)
    add_json(p, "the per-position table and its in- and past-context means")
    p = sub.add_parser("compare", help="match the features of two SAEs: shared, split, unique")
    p.add_argument(
        "--sae",
        action="append",
        default=[],
        required=True,
        help="an SAE (give exactly two: --sae A --sae B)",
    )
    p.add_argument("--model", default=None, help="the model both read (default: SAE A's)")
    p.add_argument(
        "--allow-any-hook",
        action="store_true",
        help="compare SAEs that do not read the layer-0 embedding sum anyway",
    )
    p.add_argument(
        "--threshold",
        type=float,
        default=0.5,
        help="decoder cosine for a match or a split (default 0.5)",
    )
    add_device(p)
    add_output(p, None, "output folder")
    add_json(p, "the counts of shared, split and unique features and the warnings")


def _training_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train an SAE on the layer-0 grid")
    p.add_argument(
        "--model", default=BUNDLED_MODEL, help=f"model (default {BUNDLED_MODEL}, the bundled one)"
    )
    add_dataclass_flags(p, TrainConfig)
    p.add_argument(
        "--token-weights",
        default=None,
        help="safetensors file with one weight per token id (key 'weights')",
    )
    p.add_argument("--init", default=None, help="SAE folder to fine-tune")
    p.add_argument(
        "--center",
        action="store_true",
        help="centre W_E and W_pos rows first (center_writing_weights)",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue from the checkpoint in <out>.partial (an error when there is none)",
    )
    p.add_argument(
        "--resume-or-start",
        action="store_true",
        help="continue from a checkpoint if there is one, else start",
    )
    add_device(p)
    add_output(p, None, "output folder (a SAELens-format SAE)")
    add_json(p, "the SAE written and its final training numbers")
    sweep = sub.add_parser("sweep", help="test the note's conjectures: widths or contexts")
    sweep = sweep.add_subparsers(dest="sweep", required=True, parser_class=Parser)
    w = sweep.add_parser(
        "widths", help="train SAEs of several widths (and seeds) and count positional features"
    )
    w.add_argument(
        "--model",
        default=BUNDLED_MODEL,
        help=f"model: '{BUNDLED_MODEL}' (bundled, default), a hub id such as gpt2, or a folder",
    )
    add_dataclass_flags(w, WidthSweepConfig)
    add_dataclass_flags(
        w,
        TrainConfig,
        exclude=WidthSweepConfig.FIXED,
        defaults=WidthSweepConfig.RECIPE,
        why=WidthSweepConfig.WHY,
    )
    w.add_argument(
        "--token-weights", default=None, help="safetensors file with one weight per token id"
    )
    add_device(w)
    _sweep_flags(w)
    c = sweep.add_parser(
        "context", help="fine-tune an SAE on longer contexts, against a from-scratch control"
    )
    add_pair(c)
    add_dataclass_flags(c, ContextSweepConfig)
    add_dataclass_flags(
        c,
        TrainConfig,
        exclude=(*ContextSweepConfig.FIXED, "l1"),
        defaults=ContextSweepConfig.RECIPE,
        why=ContextSweepConfig.WHY,
    )
    c.add_argument("--token-weights", default=None, help="default: the SAE's own, else uniform")
    _sweep_flags(c)


def _sweep_flags(p: argparse.ArgumentParser) -> None:
    add_dataclass_flags(p, ExecutorConfig)
    p.add_argument(
        "--plan",
        action="store_true",
        help="print the runs with estimated memory and time from a short probe on --device; train "
        "nothing",
    )
    add_output(
        p,
        None,
        "sweep folder (a finished sweep of the same kind is extended; an interrupted one continued)",
    )
    add_json(p, "the runs' table and the sweep's summary (with --plan: the plan)")


def build_parser() -> argparse.ArgumentParser:
    ap = Parser(
        prog="posfeat",
        description="Exact analysis of positional and semantic features of layer-0 SAEs.",
    )
    ap.add_argument("-v", "--verbose", action="store_true", help="log more")
    ap.add_argument("-V", "--version", action="version", version=f"posfeat {__version__}")
    sub = ap.add_subparsers(dest="command", required=True, parser_class=Parser)
    _analyze_parser(sub)
    _other_parsers(sub)
    _training_parsers(sub)
    _verbose_everywhere(ap)
    return ap


def _verbose_everywhere(parser: argparse.ArgumentParser) -> None:
    """``-v`` after the command too (``posfeat analyze -v``), not only before it: each subcommand
    takes the flag, and leaves the top level's value alone when it is not given there."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in dict.fromkeys(action.choices.values()):
                if not any("-v" in a.option_strings for a in child._actions):
                    child.add_argument(
                        "-v",
                        "--verbose",
                        action="store_true",
                        default=argparse.SUPPRESS,
                        help="log more",
                    )
                _verbose_everywhere(child)


class _Signals:
    """SIGINT/SIGTERM handling from the first line of :func:`main` to the process's exit.

    While the command runs, a signal raises :class:`Interrupted` (a KeyboardInterrupt) in the main
    thread, once; after that (the run is stopping, failing or done) signals are only recorded, so
    the exit status is decided by :func:`main` and never by the signal's default action.
    """

    def __init__(self) -> None:
        self.running = True
        self.signum: int | None = None
        self.old: dict[int, object] = {}

    def handler(self, signum: int, frame: FrameType | None) -> None:
        if self.running and _cannot_raise(frame):
            # An exception raised in a finalizer (llvmlite frees its strings in ``__del__`` while
            # numba compiles) or in a ctypes callback (llvmlite's object cache, called from C as
            # numba writes or reads a cached kernel) is printed as "Exception ignored" and lost:
            # deliver the signal again once it has returned.
            again = threading.Timer(0.05, os.kill, (os.getpid(), signum))
            again.daemon = True
            again.start()
            return
        self.signum = self.signum or signum
        if self.running:
            self.running = False
            raise Interrupted(signum)

    def install(self) -> _Signals:
        try:
            self.old = {s: signal.signal(s, self.handler) for s in STOP_SIGNALS}
        except ValueError:  # not the main thread: leave signals alone
            self.old = {}
        return self

    def restore(self) -> None:
        for s, h in self.old.items():
            signal.signal(s, h)


#: Where llvmlite's Python code lives: its callbacks from C (the object cache) are among it.
_LLVMLITE_BINDING = f"{os.sep}llvmlite{os.sep}binding{os.sep}"


def _cannot_raise(frame: FrameType | None) -> bool:
    """Whether the code a signal interrupted runs where an exception cannot leave: inside a
    ``__del__``, or inside llvmlite's bindings (whose callbacks from C, through ctypes, swallow it;
    elsewhere in them the signal is only delivered a moment later)."""
    while frame is not None:
        if frame.f_code.co_name == "__del__" or _LLVMLITE_BINDING in frame.f_code.co_filename:
            return True
        frame = frame.f_back
    return False


def _one_line(text: str) -> str:
    """The message on one line, with any very long word (a pasted value) shortened to its start and
    its length."""
    return " ".join(shorten(w) if len(w) > 200 else w for w in str(text).split())


def _target(args: argparse.Namespace | None) -> Path | None:
    out = getattr(args, "out", None)
    try:
        return None if out is None or out == STDOUT else expand(out).resolve()
    except (OSError, RuntimeError):
        return None


def _reader_left(stream: object) -> bool:
    """Whether ``stream`` is a pipe whose reader has closed it (the kernel reports an error on
    polling its write end)."""
    try:
        poll = select.poll()
        poll.register(stream.fileno(), select.POLLOUT)  # type: ignore[attr-defined]
        return any(events & select.POLLERR for _, events in poll.poll(0))
    except (
        AttributeError,
        OSError,
        ValueError,
    ):  # not a file (a captured stream) or already closed
        return False


DRIVER_ENV = "POSFEAT_RAY_DRIVER"
#: the statuses posfeat itself ends with (done, an error it explained, a signal, a reader that left)
OWN_STATUSES = (0, 2, 128 + signal.SIGINT, 128 + signal.SIGTERM, 128 + signal.SIGPIPE)


def _ray_sweep(args: argparse.Namespace) -> bool:
    return (
        args.command == "sweep"
        and getattr(args, "executor", None) == "ray"
        and not args.plan
        and not os.environ.get(DRIVER_ENV)
    )


def _supervise(argv: list[str], args: argparse.Namespace, sig: _Signals) -> int:
    """A Ray sweep runs in a child process (the Ray driver) that this process watches.

    Ray ends its driver with ``_exit(1)`` and no word of posfeat's when the node's raylet (or one of
    its agents) dies, and can abort it from C++; the sweep's lock and work folder would be left as
    they were, with no message. Here the child's
    end is seen: posfeat's own statuses pass through; any other is explained in one sentence, the
    lock the child held is removed, and the status is 2. SIGINT and SIGTERM are passed on to the
    child, which stops as any sweep does (130/143)."""
    import subprocess
    import tempfile

    fd, marker = tempfile.mkstemp(prefix="posfeat-driver-", suffix=".status")
    os.close(fd)
    child = subprocess.Popen(
        [sys.executable, "-m", "posfeat.cli.main", *argv],
        env={**os.environ, DRIVER_ENV: marker},
        process_group=0,
    )  # its group holds the local Ray cluster it may start: ended with it below
    signum = None
    while True:
        try:
            rc = child.wait()
            break
        except KeyboardInterrupt as err:  # Interrupted: pass it on, then wait for the child to stop
            signum = getattr(err, "signum", None) or sig.signum or signal.SIGINT
            sig.running = True  # the next signal is passed on too
            with contextlib.suppress(ProcessLookupError):
                child.send_signal(signum)
    _end_group(child.pid)
    explained = _explained(marker)
    if rc in OWN_STATUSES or (signum is not None and rc < 0):
        return rc if rc >= 0 else 128 + signum  # type: ignore[operator]
    target = _target(args)
    if target is not None:
        _drop_stale_lock(target)
    if (
        explained is not None
    ):  # the driver said what went wrong (e.g. every run failed) before Ray ended it: once is enough
        return explained
    how = f"signal {signal.Signals(-rc).name}" if rc < 0 else f"exit status {rc}"
    where = (
        f"{target.with_name(target.name + '.partial')}"
        if target is not None
        else "the sweep folder"
    )
    # on a line of its own: the driver, ended mid-run, may have left a progress bar's line open
    sys.stderr.write("\r\033[K" if sys.stderr.isatty() else "\n")
    print(
        f"posfeat: error: the Ray driver ended without finishing ({how}): Ray ends it so when its "
        "node's raylet or one of its "
        f"agents dies; the finished runs are kept in {where}: check the cluster (ray status) and "
        "run the same command again to "
        "continue.",
        file=sys.stderr,
    )
    return 2


def _explained(marker: str) -> int | None:
    """The status the driver had decided on (and explained on standard error) before it ended, if it
    got that far; the marker file is removed."""
    try:
        text = Path(marker).read_text().strip()
    except OSError:
        return None
    finally:
        with contextlib.suppress(OSError):
            os.unlink(marker)
    return int(text) if text.isdigit() else None


def _mark_explained(rc: int) -> None:
    """In a Ray sweep's driver: record the status posfeat decided on, once it has said why, for the
    watching process (Ray may end the driver with its own status right after)."""
    marker = os.environ.get(DRIVER_ENV)
    if marker and marker != "1" and rc in OWN_STATUSES and rc != 0:
        with contextlib.suppress(OSError), open(marker, "w") as fh:
            fh.write(str(rc))


def _end_group(pgid: int) -> None:
    """SIGKILL what is left of the driver's process group (a local Ray cluster whose driver Ray
    ended at once)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def _drop_stale_lock(target: Path) -> None:
    """Remove ``target``'s lock file when no process holds it (its holder died)."""
    import fcntl

    from ..io.lock import LOCK_TAG

    path = target.with_name(f".{target.name}{LOCK_TAG}")
    try:
        fd = os.open(path, os.O_RDWR)
    except OSError:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.unlink(path)
    except OSError:
        pass
    finally:
        os.close(fd)


def _interrupted(err: KeyboardInterrupt, sig: _Signals, args: argparse.Namespace | None) -> int:
    """The status and the line for a KeyboardInterrupt: a signal's (128+signal, or 0 when the output
    was complete), or, when no signal arrived (a library raised it, as OpenBLAS can when it cannot
    start its threads under ``ulimit -v``), an error that says so instead of naming a SIGINT that
    never came."""
    signum = getattr(err, "signum", None) or sig.signum
    if signum is None:
        limit = _address_limit()
        print(
            "posfeat: error: the run was stopped by a KeyboardInterrupt that no signal sent (a "
            "library gave up, typically when it "
            f"could not start its threads or allocate memory{limit}); outputs were left as they "
            "were: raise the limit or free "
            "memory and run the command again.",
            file=sys.stderr,
        )
        return 2
    target = _target(args)
    if target is not None and completed(target):
        print(
            f"posfeat: {signal.Signals(signum).name} arrived after {target} was complete; it is in "
            "place.",
            file=sys.stderr,
        )
        return 0
    print(
        f"posfeat: interrupted by {signal.Signals(signum).name}; outputs were left as they were.",
        file=sys.stderr,
    )
    return 128 + signum


def _address_limit() -> str:
    import resource

    soft = resource.getrlimit(resource.RLIMIT_AS)[0]
    return "" if soft == resource.RLIM_INFINITY else f" under ulimit -v {soft // 1024} (KiB)"


def _run_command(name: str, args: argparse.Namespace, invocation: str) -> int:
    """Command ``name``'s module imported (here, not at the top: the commands import torch) with
    the cyclic garbage collector paused, then run; the objects made by paused blocks stay out of
    its passes until the command returns (:func:`~posfeat.core.memory.collector_scope`)."""
    with collector_scope():
        with collector_paused():
            from .commands import COMMANDS
        return COMMANDS[name](args, invocation)


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns the exit status (see module docstring). Signals are handled from
    here until the process exits."""
    sig = _Signals().install()
    as_function, rc, args = argv is not None, 2, None
    try:
        argv = list(sys.argv[1:] if argv is None else argv)
        invocation = "posfeat " + shlex.join(argv)
        set_run(invocation)
        args = build_parser().parse_args(argv)
        logging.basicConfig(
            level=logging.INFO if args.verbose else logging.WARNING,
            format="%(levelname)s %(name)s: %(message)s",
        )
        name = args.command if args.command != "sweep" else f"sweep {args.sweep}"
        if _ray_sweep(args) and not as_function:
            rc = _supervise(argv, args, sig)
            sig.running = False
            return rc
        rc = _run_command(name, args, invocation)
        sig.running = False
    except Stopped as err:
        sig.running = False
        print(f"posfeat: {_one_line(err.for_cli())}", file=sys.stderr)
        rc = 128 + err.signum if err.signum else 2
    except PosfeatError as err:
        sig.running = False
        print(f"posfeat: error: {_one_line(err.for_cli())}", file=sys.stderr)
        rc = 2
    except KeyboardInterrupt as err:
        sig.running = False
        rc = _interrupted(err, sig, args)
    except OSError as err:
        sig.running = False
        if isinstance(err, BrokenPipeError) and _reader_left(
            sys.stdout
        ):  # ``posfeat ... | head``: quiet, as SIGPIPE ends a program
            rc = 128 + signal.SIGPIPE
        else:
            where = (
                f" {shorten(os.fsdecode(err.filename), PATH_KEEP)}"
                if err.filename
                else " (the system named no path)"
            )
            print(
                f"posfeat: error: {err.strerror or _one_line(str(err))} while reading or writing"
                f"{where}; check that path, its disk "
                "and its permissions.",
                file=sys.stderr,
            )
            rc = 2
    except SystemExit as err:  # argparse: --help (0) or a usage error (2)
        sig.running = False
        rc = err.code if isinstance(err.code, int) else 2
    finally:
        sig.running = False
        _mark_explained(rc)
        release_all(failed=rc != 0)
        if (
            as_function
        ):  # give the caller its handlers back (as a program, they stay until the process exits)
            sig.restore()
    if rc != 0 and sig.signum is not None and rc not in {128 + s for s in STOP_SIGNALS}:
        rc = (
            128 + sig.signum
        )  # a signal came while the run was failing: it ends the run as a signal does
    return rc


def _closed_streams() -> int | None:
    """2 when the standard output was closed (``posfeat stats >&-``): what posfeat prints would have
    nowhere to go, so it says so in one sentence before any work (a closed standard error is
    replaced by /dev/null first, so that sentence can be written or silently dropped)."""
    if sys.stderr is None:
        sys.stderr = open(os.devnull, "w")  # noqa: SIM115 (for the life of the process)
    if sys.stdout is not None:
        return None
    print(
        "posfeat: error: the standard output is closed (>&-), so posfeat could not print what it "
        "finds; run it with the "
        "output open (> /dev/null to discard it).",
        file=sys.stderr,
    )
    return 2


def run() -> NoReturn:
    """The ``posfeat`` program: :func:`main`, then the process ends without the interpreter's
    teardown.

    Once :func:`main` has returned, every output is in place and every lock released. The exit
    handlers still run here (as at any exit), and the streams are flushed; what is skipped is
    unloading torch, numba and the rest module by module, which writes nothing and took about 0.6 s
    of every command."""
    rc = _closed_streams()
    if rc is None:
        rc = main()
    # the handlers any exit runs (logging's flush, weakref finalizers such as temporary
    # folders)
    atexit._run_exitfuncs()
    try:
        if sys.stdout is not None:
            sys.stdout.flush()
    except (
        BrokenPipeError
    ):  # its reader left (``posfeat ... | head``): nothing more can reach it; the status says so
        rc = rc or 128 + signal.SIGPIPE
    except OSError as err:  # e.g. a full disk under ``> file``: what was printed is not all there
        print(
            f"posfeat: error: {err.strerror or err} while writing the standard output; check where "
            "it goes.",
            file=sys.stderr,
        )
        rc = rc or 2
    with contextlib.suppress(OSError, ValueError):
        sys.stderr.flush()
    os._exit(rc)


if __name__ == "__main__":
    run()
