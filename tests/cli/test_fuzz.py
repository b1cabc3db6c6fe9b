"""Issue 30, item 10: a bounded-time fuzzer of the command line. Hypothesis mutates safetensors
headers, config.json and cfg.json, the arguments, and the state of the file system (links,
permissions, files and folders where outputs and locks go, and a full disk through ``ulimit -f`` in
a subprocess); every run must end with status 0 or 2 and no traceback, leave every input byte for
byte as it was, and leave nothing of its own behind (``.partial`` folders, locks, temporaries).

The commands run in-process (``posfeat.cli.main(argv)`` returns the status) to keep each example
cheap; only the full disk needs a process of its own. ``POSFEAT_FUZZ=long`` searches much longer (a
few hundred examples per test, minutes); the default takes a few tens of seconds on two cores."""

from __future__ import annotations

import contextlib
import io
import json
import os
import resource
import shutil
import stat
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from posfeat.cli import main
from posfeat.io.lock import LOCK_TAG
from posfeat.io.writes import TEMP_TAG

from helpers import REPO, write_planted_folders

LONG = os.environ.get("POSFEAT_FUZZ") == "long"
FUZZ = settings(
    max_examples=400 if LONG else 12,
    deadline=None,
    derandomize=not LONG,
    database=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
        HealthCheck.data_too_large,
    ],
)
WEIGHTS = "sae_weights.safetensors"


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz")
    write_planted_folders(root)
    main(
        [
            "stats",
            "--model",
            str(root / "model"),
            "--sae",
            str(root / "sae"),
            "--out",
            str(root / "warm.csv"),
        ]
    )  # compile once
    (root / "warm.csv").unlink()
    return root


@contextlib.contextmanager
def workspace(pristine: Path):
    root = Path(tempfile.mkdtemp(prefix="posfeat-fuzz-"))
    try:
        shutil.copytree(pristine / "model", root / "model")
        shutil.copytree(pristine / "sae", root / "sae")
        yield root
    finally:
        for p in [
            root,
            *root.rglob("*"),
        ]:  # undo any permission the example took away, so the folder can go
            with contextlib.suppress(OSError):
                if p.is_dir() and not p.is_symlink():
                    p.chmod(0o755)
        shutil.rmtree(root, ignore_errors=True)


def inputs(root: Path) -> dict[str, bytes | str]:
    out: dict[str, bytes | str] = {}
    for p in sorted([*(root / "model").rglob("*"), *(root / "sae").rglob("*")]):
        key = str(p.relative_to(root))
        if p.is_symlink():
            out[key] = "-> " + os.readlink(p)
        elif p.is_file():
            out[key] = p.read_bytes()
    return out


def leftovers(root: Path) -> list[str]:
    return [
        str(p.relative_to(root))
        for p in root.rglob("*")
        if TEMP_TAG in p.name or p.name.endswith((LOCK_TAG, ".partial"))
    ]


def run_cli(argv: list[str]) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(argv)
    return code, err.getvalue()


def check(root: Path, argv: list[str], before: dict[str, bytes | str]) -> None:
    code, err = run_cli(argv)
    assert code in (0, 2), f"status {code} for {argv}:\n{err[-3000:]}"
    assert "Traceback" not in err, err[-3000:]
    assert inputs(root) == before, f"an input changed under {argv}"
    assert leftovers(root) == [], f"{leftovers(root)} left by {argv}:\n{err[-2000:]}"


def command(root: Path, out: str = "out.csv") -> list[str]:
    return [
        "stats",
        "--model",
        str(root / "model"),
        "--sae",
        str(root / "sae"),
        "--out",
        str(root / out),
    ]


# ---------------------------------------------------------------------------- strategies
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
DTYPES = ["F32", "F16", "BF16", "F64", "I64", "I32", "BOOL", "U8", "F8_E4M3", "X", ""]
header_entry = st.fixed_dictionaries(
    {
        "dtype": st.sampled_from(DTYPES) | json_values,
        "shape": st.lists(st.integers(-2, 2**40), max_size=3) | json_values,
        "data_offsets": st.lists(st.integers(-5, 2**64), min_size=0, max_size=3) | json_values,
    }
)


@st.composite
def header_mutation(draw):
    kind = draw(st.sampled_from(["entry", "length", "truncate", "bytes", "metadata"]))
    return kind, draw(
        st.tuples(
            st.sampled_from(["W_enc", "W_dec", "b_enc", "b_dec", "extra"]),
            header_entry,
            st.integers(0, 2**64 - 1),
            st.integers(0, 10_000),
            st.binary(max_size=16),
            json_values,
        )
    )


def mutate_weights(path: Path, mutation) -> None:
    kind, (name, entry, length, cut, junk, meta) = mutation
    data = path.read_bytes()
    n = struct.unpack("<Q", data[:8])[0]
    header, body = json.loads(data[8 : 8 + n]), data[8 + n :]
    if kind == "entry":
        header[name] = entry
        raw = json.dumps(header).encode()
        data = struct.pack("<Q", len(raw)) + raw + body
    elif kind == "length":
        data = struct.pack("<Q", length) + data[8:]
    elif kind == "truncate":
        data = data[: cut % (len(data) + 1)]
    elif kind == "bytes":
        at = 8 + cut % max(1, n)
        data = data[:at] + junk + data[at + len(junk) :]
    else:
        header["__metadata__"] = meta
        raw = json.dumps(header).encode()
        data = struct.pack("<Q", len(raw)) + raw + body
    path.write_bytes(data)


# ---------------------------------------------------------------------------- the properties
@FUZZ
@given(mutation=header_mutation())
def test_fuzzed_safetensors_headers(pristine, mutation):
    with workspace(pristine) as root:
        mutate_weights(root / "sae" / WEIGHTS, mutation)
        check(root, command(root), inputs(root))


@FUZZ
@given(
    which=st.sampled_from(["model/config.json", "sae/cfg.json"]),
    key=st.text(max_size=12)
    | st.sampled_from(
        [
            "d_sae",
            "d_in",
            "context_size",
            "hook_name",
            "hook_point",
            "n_positions",
            "n_embd",
            "vocab_size",
            "model_type",
            "architecture",
            "apply_b_dec_to_input",
            "metadata",
            "model_name",
            "hook_point_layer",
            "normalize_activations",
        ]
    ),
    value=json_values,
    whole=st.none() | st.text(max_size=40) | st.binary(max_size=40),
)
def test_fuzzed_configs(pristine, which, key, value, whole):
    with workspace(pristine) as root:
        path = root / which
        if whole is None:
            data = json.loads(path.read_text())
            data[key] = value
            path.write_text(json.dumps(data))
        else:
            path.write_bytes(
                whole.encode("utf-8", "surrogatepass") if isinstance(whole, str) else whole
            )
        check(root, command(root), inputs(root))


FLAGS = {
    "stats": ["--positions", "--top-k", "--device", "--out", "--force"],
    "eval": [
        "--positions",
        "--tokens",
        "--seed",
        "--device",
        "--out",
        "--force",
        "--token-weights",
    ],
    "feature": ["--device"],
    "train": [
        "--d-sae",
        "--context",
        "--steps",
        "--batch",
        "--lr",
        "--l1",
        "--seed",
        "--out",
        "--force",
        "--arch",
        "--k",
    ],
}
weird = (
    st.integers(-(2**70), 2**70).map(str)
    | st.floats().map(str)
    | st.text(max_size=30)
    | st.sampled_from(
        [
            "",
            "0",
            "1",
            "-1",
            "3:1",
            "0:",
            ":",
            "nan",
            "inf",
            "1e400",
            "cuda",
            "meta",
            "auto",
            "~",
            "/",
            ".",
            "..",
            "a" * 300,
            "0:48",
            "48",
            "8",
            "relu",
            "topk",
            "\udcff",
        ]
    )
)


@st.composite
def argv_strategy(draw):
    cmd = draw(st.sampled_from(list(FLAGS)))
    parts: list[object] = []
    for flag in draw(
        st.lists(st.sampled_from(FLAGS[cmd] + ["--model", "--sae", "--bogus", "-v"]), max_size=5)
    ):
        parts.append(flag)
        if flag not in ("--force", "-v") and draw(st.booleans() | st.just(True)):
            parts.append(draw(st.sampled_from(["OUT", "OUT2", "MODEL", "SAE", "SAEFILE"]) | weird))
    return cmd, parts


@FUZZ
@given(
    spec=argv_strategy(), positional=st.sampled_from(["0", "7", "-1", "x", "99999999999999999999"])
)
def test_fuzzed_arguments(pristine, spec, positional):
    cmd, parts = spec
    with workspace(pristine) as root:
        names = {
            "OUT": str(root / "out"),
            "OUT2": str(root / "o.csv"),
            "MODEL": str(root / "model"),
            "SAE": str(root / "sae"),
            "SAEFILE": str(root / "sae" / WEIGHTS),
        }
        argv = [
            cmd,
            *([positional] if cmd == "feature" else []),
            "--model",
            str(root / "model"),
            "--sae",
            str(root / "sae"),
        ]
        if cmd == "train":
            argv = [
                "train",
                "--model",
                str(root / "model"),
                "--steps",
                "2",
                "--batch",
                "8",
                "--d-sae",
                "8",
                "--context",
                "4",
                "--out",
                str(root / "t"),
            ]
        argv += [names.get(p, p) if isinstance(p, str) else p for p in parts]
        # a fuzzed value such as "A" is a relative --out: run where such a file lands in the scratch
        # folder, not the repository
        with contextlib.chdir(root):
            check(root, argv, inputs(root))


STATES = [
    "out_symlink_to_sae",
    "out_dangling_symlink",
    "out_is_a_file",
    "out_user_folder",
    "lock_symlink",
    "lock_fifo",
    "lock_folder",
    "temp_of_dead_run",
    "parent_read_only",
    "parent_is_a_file",
    "sae_unreadable",
    "sae_weights_symlink_out",
    "out_inside_sae",
    "partial_of_user",
]


def make_state(root: Path, state: str) -> str:
    """Lay the state out; the --out to use."""
    out = root / "res" / "s.csv"
    out.parent.mkdir()
    lock = out.with_name(f".{out.name}{LOCK_TAG}")
    if state == "out_symlink_to_sae":
        out.symlink_to(root / "sae" / WEIGHTS)
    elif state == "out_dangling_symlink":
        out.symlink_to(root / "nowhere.csv")
    elif state == "out_is_a_file":
        out.write_text("mine,not posfeat's\n1,2\n")
    elif state == "out_user_folder":
        out.mkdir()
        (out / "thesis.tex").write_text("x")
    elif state == "lock_symlink":
        lock.symlink_to(root / "sae" / "cfg.json")
    elif state == "lock_fifo":
        os.mkfifo(lock)
    elif state == "lock_folder":
        lock.mkdir()
    elif state == "temp_of_dead_run":
        (out.parent / f".{out.name}.999999.abcdefgh{TEMP_TAG}").write_text("x")
    elif state == "parent_read_only":
        out.parent.chmod(stat.S_IRUSR | stat.S_IXUSR)
    elif state == "parent_is_a_file":
        out.parent.rmdir()
        out.parent.write_text("a file")
    elif state == "sae_unreadable":
        (root / "sae" / WEIGHTS).chmod(0)
    elif state == "sae_weights_symlink_out":
        target = root / "elsewhere.safetensors"
        shutil.copy(root / "sae" / WEIGHTS, target)
        (root / "sae" / WEIGHTS).unlink()
        (root / "sae" / WEIGHTS).symlink_to(target)
    elif state == "out_inside_sae":
        return str(root / "sae" / "s.csv")
    elif state == "partial_of_user":
        return str(root / "res" / "x.partial")
    return str(out)


@FUZZ
@given(state=st.sampled_from(STATES), force=st.booleans())
def test_fuzzed_file_system_states(pristine, state, force):
    with workspace(pristine) as root:
        out = make_state(root, state)
        user = {
            str(p.relative_to(root)): p.read_bytes()
            for p in root.rglob("*")
            if p.is_file()
            and not p.is_symlink()
            and "sae" not in p.parts
            and "model" not in p.parts
            and os.access(p, os.R_OK)
        }
        argv = [
            "stats",
            "--model",
            str(root / "model"),
            "--sae",
            str(root / "sae"),
            "--out",
            out,
            *(["--force"] if force else []),
        ]
        before, there = inputs(root), set(leftovers(root))
        code, err = run_cli(argv)
        assert code in (0, 2) and "Traceback" not in err, f"{state}: status {code}\n{err[-3000:]}"
        assert inputs(root) == before
        assert [p for p in leftovers(root) if p not in there] == [], leftovers(
            root
        )  # the user's own lock-named things stay
        for (
            name,
            data,
        ) in (
            user.items()
        ):  # a file of the user's is never changed (an old temporary of a dead run may go)
            if TEMP_TAG not in name:
                assert (root / name).read_bytes() == data, f"{state}: {name} changed"


@settings(FUZZ, max_examples=60 if LONG else 3)
@given(limit=st.integers(0, 40_000), cmd=st.sampled_from(["stats", "train"]))
def test_fuzzed_full_disk(pristine, limit, cmd):
    """A file-size limit (``ulimit -f``) anywhere from nothing to more than the outputs need: each
    write may be the one that fails. The only case run as a subprocess (the limit is the
    process's)."""
    with workspace(pristine) as root:
        argv = (
            command(root)
            if cmd == "stats"
            else [
                "train",
                "--model",
                str(root / "model"),
                "--steps",
                "2",
                "--batch",
                "8",
                "--d-sae",
                "64",
                "--context",
                "4",
                "--out",
                str(root / "t"),
            ]
        )
        before = inputs(root)
        env = {
            **os.environ,
            "PYTHONPATH": str(REPO / "src"),
            "POSFEAT_NUMBA_CACHE": "0",
            "PYTHONWARNINGS": "ignore",
        }
        run = subprocess.run(
            [sys.executable, "-m", "posfeat.cli.main", *argv],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit)),
        )
        assert run.returncode in (0, 2) and "Traceback" not in run.stderr, (
            f"limit {limit}: {run.returncode}\n{run.stderr[-3000:]}"
        )
        assert inputs(root) == before and leftovers(root) == [], leftovers(root)
