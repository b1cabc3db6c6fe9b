"""Random sequences of commands (analyze, stats, eval, train, compare, sweep widths) whose outputs
are drawn among the inputs, their parents, folders of the user's own with foreign files, earlier
outputs and new paths, with and without --force. After
every step: every input and every foreign file is byte-identical, the command either succeeded with
a complete output or exited 2 with one line, and no temporary or lock is left (issue 18, item 10).

The default run is seeded (derandomized) and bounded; ``POSFEAT_LONG=1`` runs many more and longer
sequences. Figures are stubbed with a tiny PNG so that a step costs well under a second: what is
tested is where files go, not how they look."""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test
from safetensors.torch import save_file

from posfeat.analyses.classification import FEATURE_COLUMNS
from posfeat.analyses.evaluation import EVAL_COLUMNS
from posfeat.cli import main
from posfeat.io.lock import LOCK_TAG
from posfeat.io.ownership import MARKER
from posfeat.io.writes import TEMP_TAG

from helpers import write_planted_folders

pytestmark = pytest.mark.slow
LONG = bool(os.environ.get("POSFEAT_LONG"))
PROGRESS = re.compile(r"\d+%\|.*\|")
COMMANDS = ["analyze", "stats", "eval", "train", "train", "compare", "sweep"]
WHERE = [
    "new",
    "new",
    "previous",
    "previous",
    "input",
    "input_parent",
    "inside_input",
    "user",
    "thesis",
    "package",
]


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.is_symlink()
    }


class Workspace(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.root = Path(tempfile.mkdtemp(prefix="posfeat-stateful-")).resolve()
        self.model, self.sae = write_planted_folders(self.root)
        self.weights = self.root / "w.safetensors"
        save_file({"weights": torch.rand(60) + 0.1}, str(self.weights))
        self.user = self.root / "user"
        self.user.mkdir()
        (self.user / "notes.txt").write_text("the user's own notes")
        (self.user / "mine.csv").write_text("my,own\n1,2\n")
        self.thesis = self.root / "thesis"
        self.thesis.mkdir()
        (self.thesis / "widths.csv").write_text("a,b\n")
        (self.thesis / "thesis.tex").write_text("\\chapter{Years}\n")
        self.protected = {
            p: _files(p) if p.is_dir() else p.read_bytes()
            for p in (self.model, self.sae, self.weights, self.user, self.thesis)
        }
        self.outputs: dict[Path, str] = {}  # earlier outputs -> kind
        self.n = 0
        self.cwd = Path.cwd()
        os.chdir(self.user)

    def teardown(self) -> None:
        os.chdir(self.cwd)
        shutil.rmtree(self.root, ignore_errors=True)

    def _out(self, where: str, cmd: str, data: st.DataObject) -> Path:
        csv = cmd in ("stats", "eval")
        self.n += 1
        if where == "previous" and self.outputs:
            return data.draw(st.sampled_from(sorted(self.outputs)), label="previous")
        if where == "input":
            return data.draw(st.sampled_from([self.model, self.sae, self.weights]), label="input")
        if where == "input_parent":
            return self.root
        if where == "inside_input":
            return data.draw(
                st.sampled_from([self.sae / "sub", self.sae / "cfg.json", self.model / "out.csv"]),
                label="inside",
            )
        if where == "user":
            return self.user / "mine.csv" if csv else self.user
        if where == "thesis":
            return self.thesis
        if where == "package":
            import posfeat

            return Path(posfeat.__file__).resolve().parent / "bundled" / "minilm-l0-res-2048"
        return self.root / ("out" + str(self.n) + (".csv" if csv else ""))

    def _argv(self, cmd: str, out: Path, force: bool) -> list[str]:
        pair = ["--model", str(self.model), "--sae", str(self.sae)]
        tail = ["--out", str(out), *(["--force"] if force else [])]
        return {
            "analyze": ["analyze", *pair, "--tokens-sample", "8"],
            "stats": ["stats", *pair, "--positions", "8"],
            "eval": [
                "eval",
                *pair,
                "--tokens",
                "16",
                "--positions",
                "8",
                "--token-weights",
                str(self.weights),
            ],
            "train": [
                "train",
                "--model",
                str(self.model),
                "--d-sae",
                "8",
                "--context",
                "8",
                "--steps",
                "6",
                "--batch",
                "8",
                "--token-weights",
                str(self.weights),
                "--device",
                "cpu",
            ],
            "compare": [
                "compare",
                "--model",
                str(self.model),
                "--sae",
                str(self.sae),
                "--sae",
                str(self.sae),
            ],
            "sweep": [
                "sweep",
                "widths",
                "--model",
                str(self.model),
                "--context",
                "8",
                "--d-sae",
                "4,8",
                "--seeds",
                "1",
                "--steps",
                "6",
                "--batch",
                "8",
                "--curve-points",
                "0",
                "--tokens",
                "8",
                "--device",
                "cpu",
            ],
        }[cmd] + tail

    @rule(
        cmd=st.sampled_from(COMMANDS),
        where=st.sampled_from(WHERE),
        force=st.booleans(),
        data=st.data(),
    )
    def run(self, cmd: str, where: str, force: bool, data: st.DataObject) -> None:
        out = self._out(where, cmd, data)
        capture = self.capsys
        code = main(self._argv(cmd, out, force))
        err = capture.readouterr().err
        lines = [
            line
            for line in err.replace("\r", "\n").splitlines()
            if line.strip() and not PROGRESS.search(line) and not line.startswith("WARNING")
        ]
        assert code in (0, 2), (cmd, out, code, err)
        self.codes.append(code)
        if code == 2:
            assert (
                len(lines) == 1
                and lines[0].startswith("posfeat: error:")
                and "Traceback" not in err
            ), (cmd, out, err)
            return
        kind = {"sweep": "sweep widths"}.get(cmd, cmd)
        self._complete(cmd, out)
        self.outputs[out] = kind

    def _complete(self, cmd: str, out: Path) -> None:
        if cmd in ("stats", "eval"):
            header = ",".join(FEATURE_COLUMNS if cmd == "stats" else EVAL_COLUMNS)
            assert out.read_text().splitlines()[0] == header
            return
        marker = json.loads((out / MARKER).read_text())
        main_file = {
            "analyze": "report.html",
            "train": "cfg.json",
            "compare": "compare.csv",
            "sweep": "widths.csv",
        }[cmd]
        assert (out / main_file).is_file() and marker["tool"] == "posfeat"
        assert not out.with_name(out.name + ".partial").exists()

    @invariant()
    def nothing_of_the_user_s_changed(self) -> None:
        for (
            p,
            before,
        ) in (
            self.protected.items()
        ):  # every file that was there is there, byte for byte (a new output may sit beside)
            if p.is_dir():
                now = _files(p)
                assert {k: now.get(k) for k in before} == before, p
            else:
                assert p.read_bytes() == before, p

    @invariant()
    def no_temporary_or_lock_is_left(self) -> None:
        left = [p for p in self.root.rglob("*") if p.name.endswith((TEMP_TAG, LOCK_TAG))]
        assert left == [], left


def test_random_sequences_of_commands_lose_nothing(stub_figures, capsys):
    Workspace.capsys, Workspace.codes = capsys, []
    run_state_machine_as_test(
        Workspace,
        settings=settings(
            max_examples=200 if LONG else 5,
            stateful_step_count=20 if LONG else 6,
            deadline=None,
            derandomize=not LONG,
            database=None,
            suppress_health_check=list(HealthCheck),
        ),
    )
    assert {0, 2} <= set(Workspace.codes), (
        Workspace.codes
    )  # the sequences did both write and get refused
