"""Issue 18's cases that need more than one command: one writer per target (the lock), temporaries
and locks of dead runs, checkpoints refused when torn, signals at the edges of a run, the hub's
pickle-only cache, the report's CSP."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import posfeat
from posfeat import PosfeatError, train_sae
from posfeat.cli import main
from posfeat.io import lock, output, writes
from posfeat.io.lock import LOCK_TAG
from posfeat.io.ownership import MARKER
from posfeat.io.writes import TEMP_TAG
from posfeat.training.train import TRAIN_CHECKPOINT, train_kinds

from helpers import add_file, random_pair, write_planted_folders

# Where files go, locks, paths and errors are tested here, not how figures look: each figure is a
# 1x1 PNG (conftest).
pytestmark = pytest.mark.usefixtures("stub_figures")

SRC = str(Path(posfeat.__file__).resolve().parents[1])


def snapshot(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


@pytest.fixture
def pair(tmp_path):
    return write_planted_folders(tmp_path)


def _analyze(model: Path, sae: Path, out: Path, *extra: str) -> list[str]:
    return [
        "analyze",
        "--model",
        str(model),
        "--sae",
        str(sae),
        "--tokens-sample",
        "8",
        "--out",
        str(out),
        *extra,
    ]


@pytest.fixture
def holder():
    """Another process holding the lock on a target, as a running posfeat would (pid, command, start
    time in the lock file)."""
    procs = []

    def hold(target: Path) -> subprocess.Popen:
        code = (
            "import sys; from pathlib import Path; from posfeat.io.lock import lock_target, "
            "set_run; "
            "set_run('posfeat analyze --out the-first-run'); lock_target(Path(sys.argv[1])); "
            "print('locked', flush=True); sys.stdin.read()"
        )
        proc = subprocess.Popen(
            [sys.executable, "-c", code, str(target)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": SRC},
        )
        assert proc.stdout.readline().strip() == "locked"
        procs.append(proc)
        return proc

    yield hold
    for proc in procs:
        proc.stdin.close()
        proc.wait(30)


def test_a_second_run_to_the_same_target_fails_at_once_naming_the_first(
    pair, tmp_path, holder, capsys
):
    model, sae = pair
    out = tmp_path / "out"
    first = holder(out.resolve())
    assert main(_analyze(model, sae, out)) == 2
    err = capsys.readouterr().err
    assert (
        f"Another posfeat run is writing {out.resolve()} (pid {first.pid}, 'posfeat analyze --out "
        "the-first-run', started 20" in err
    )
    assert not out.exists()
    first.stdin.close()
    first.wait(30)
    assert main(_analyze(model, sae, out)) == 0 and (out / "report.html").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(LOCK_TAG)]


def test_train_force_never_touches_a_running_job_s_partial(pair, tmp_path, holder, capsys):
    model, _ = pair
    out = tmp_path / "sae_out"
    partial = tmp_path / "sae_out.partial"
    partial.mkdir()
    (partial / "checkpoint.safetensors").write_bytes(b"the running job's checkpoint")
    before = snapshot(partial)
    holder(out.resolve())
    code = main(
        [
            "train",
            "--model",
            str(model),
            "--d-sae",
            "8",
            "--context",
            "8",
            "--steps",
            "4",
            "--batch",
            "8",
            "--out",
            str(out),
            "--force",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "Another posfeat run is writing" in err and "--resume" not in err, err
    assert snapshot(partial) == before


def test_a_stale_lock_is_taken_over_with_a_note(pair, tmp_path, caplog):
    model, sae = pair
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock = tmp_path / f".out{LOCK_TAG}"
    lock.write_text(
        json.dumps(
            {
                "pid": dead.pid,
                "command": "posfeat analyze (killed)",
                "started": "2026-01-01T00:00:00+00:00",
            }
        )
    )
    assert main(_analyze(model, sae, tmp_path / "out")) == 0
    err = caplog.text  # the CLI prints warnings on stderr; under pytest they are captured here
    assert err.count("took over the lock") == 1 and f"pid {dead.pid}" in err and not lock.exists()


def test_temporaries_of_dead_runs_are_removed_in_one_line_and_live_ones_kept(
    pair, tmp_path, caplog
):
    model, sae = pair
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    live = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE
    )
    try:
        left = [
            tmp_path / f".out.{dead.pid}.k1x2{TEMP_TAG}",
            tmp_path / f".out.{dead.pid}.old.k3x4{TEMP_TAG}",
        ]
        for d in left:
            d.mkdir()
            (d / "features.csv").write_bytes(b"x" * 900)
        running = tmp_path / f".out.{live.pid}.k5x6{TEMP_TAG}"
        running.mkdir()
        other = (
            tmp_path / f".other.{dead.pid}.k7x8{TEMP_TAG}"
        )  # another target's: not ours to judge
        other.mkdir()
        assert main(_analyze(model, sae, tmp_path / "out")) == 0
        err = caplog.text
        notes = [line for line in err.splitlines() if "temporar" in line]
        assert (
            len(notes) == 1 and "removed 2 temporaries left by a run that was killed" in notes[0]
        ), err
        assert not any(d.exists() for d in left) and running.is_dir() and other.is_dir()
    finally:
        live.stdin.close()
        live.wait(30)


def test_a_run_killed_inside_a_safetensors_write_leaves_only_its_own_temporary(tmp_path):
    """safetensors >= 0.8 writes through a ``.tmpXXXXXX`` file of its own beside the path it is
    given; killed there, a resumable folder must not keep a file posfeat does not know (a fresh
    clone's CI once failed on exactly that)."""
    partial = tmp_path / "sae.partial"
    partial.mkdir()
    code = (
        "import os, sys; from pathlib import Path; import safetensors.torch as st; from posfeat.io "
        "import safetensors_io as io\n"
        "real = st.save_file\n"
        "def killed(tensors, name, metadata=None):\n"
        "    Path(name).with_name('.tmpAbC123').write_bytes(b'half')  # as safetensors' own "
        "temporary would be\n"
        "    os._exit(9)\n"
        "io.save_file = killed\n"
        "io.write_tensors(Path(sys.argv[1]) / 'checkpoint.safetensors', {})\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(partial)], env={**os.environ, "PYTHONPATH": SRC}
    )
    assert proc.returncode == 9
    left = [p.name for p in partial.iterdir()]
    assert (
        len(left) == 1
        and left[0].endswith(TEMP_TAG)
        and (partial / left[0] / ".tmpAbC123").exists()
    ), left
    try:
        assert output.partial_folder(tmp_path / "sae", TRAIN_CHECKPOINT) == partial
    finally:
        lock.unlock_target(tmp_path / "sae")
    assert [p.name for p in partial.iterdir()] == [MARKER]


def test_a_sweep_run_killed_after_a_curve_point_resumes(tmp_path):
    """A sweep's run keeps its positional-features curve beside its checkpoint; a worker killed
    after writing a point leaves a work folder its retry must take up (the Ray kill test once found
    it refused)."""
    from posfeat.experiments.runner import CURVE_FILE, PositionalCurve

    target = tmp_path / "seed_0"
    try:
        partial = output.partial_folder(target, train_kinds(PositionalCurve)[1])
        (partial / CURVE_FILE).write_text("step,positional\n10,3\n")
    finally:
        lock.unlock_target(target)
    try:
        assert (
            output.partial_folder(target, train_kinds(PositionalCurve)[1]) == partial
            and (partial / CURVE_FILE).is_file()
        )
    finally:
        lock.unlock_target(target)


def test_a_failed_run_removes_the_folders_it_made_and_its_lock(pair, tmp_path):
    model, sae = pair
    out = tmp_path / "nope1" / "a" / "b" / "out"
    assert main(_analyze(model, sae, out, "--token", "no-such-token")) == 2
    assert not (tmp_path / "nope1").exists()


# ---------------------------------------------------------------------------- checkpoints as one
# unit
def _cut(tmp_path: Path) -> tuple[object, Path]:
    emb, _ = random_pair()
    with pytest.raises(PosfeatError, match="interrupted at step 5"):
        train_sae(
            emb,
            d_sae=8,
            context=6,
            steps=20,
            batch=8,
            out=tmp_path / "cut",
            stop_after=5,
            progress=False,
        )
    return emb, tmp_path / "cut.partial"


def test_a_run_killed_after_its_sae_went_into_place_resumes_to_that_sae(
    tmp_path, monkeypatch, caplog
):
    """SIGKILL between the swap of the finished SAE into ``out`` and the removal of ``out.partial``:
    resuming finds the work done, removes the leftover checkpoint in one line and returns that SAE
    (a fresh clone's kill test once hit this)."""
    from posfeat.training import train as train_module

    from helpers import random_pair

    emb, _ = random_pair(d_vocab=40, n_ctx=12, d_model=8)
    settings = {
        "d_sae": 8,
        "context": 8,
        "steps": 20,
        "batch": 16,
        "checkpoint_seconds": 0.0,
        "progress": False,
    }
    out, partial = tmp_path / "sae", tmp_path / "sae.partial"
    with monkeypatch.context() as m:
        m.setattr(
            train_module, "remove", lambda path: None
        )  # killed right after the swap: the checkpoint folder stays
        first = train_sae(emb, out=out, **settings)
    assert (partial / "checkpoint.safetensors").is_file() and (
        out / "sae_weights.safetensors"
    ).is_file()
    before = snapshot(out)
    with pytest.raises(
        PosfeatError, match="exists"
    ):  # other settings: not this run's leftover, refused as any existing output
        train_sae(emb, out=out, resume_or_start=True, **{**settings, "steps": 30})
    with pytest.raises(
        PosfeatError, match="init"
    ):  # an input is never an output, finished run or not
        train_sae(emb, out=out, init=out, resume_or_start=True, **settings)
    (partial / "notes.txt").write_text(
        "mine"
    )  # a file posfeat did not write: the leftover is not posfeat's alone to remove
    with pytest.raises(PosfeatError, match="exists"):
        train_sae(emb, out=out, resume_or_start=True, **settings)
    assert (partial / "notes.txt").read_text() == "mine" and (
        partial / "checkpoint.safetensors"
    ).is_file()
    (partial / "notes.txt").unlink()
    again = train_sae(emb, out=out, resume_or_start=True, **settings)
    assert (
        torch.equal(again.sae.W_enc, first.sae.W_enc)
        and again.log == first.log
        and again.out == out
    )
    assert not partial.exists() and snapshot(out) == before
    assert (
        sum("removed the checkpoint folder it left" in r.getMessage() for r in caplog.records) == 1
    )


def test_a_checkpoint_is_one_file_with_its_state_in_the_header(tmp_path):
    _, partial = _cut(tmp_path)
    assert sorted(p.name for p in partial.iterdir()) == [
        ".posfeat-output.json",
        "checkpoint.safetensors",
    ]
    from safetensors import safe_open

    with safe_open(str(partial / "checkpoint.safetensors"), framework="pt") as f:
        assert json.loads(f.metadata()["posfeat_training_state"])["step"] == 5


def test_a_torn_two_file_checkpoint_is_refused_with_the_reason(tmp_path):
    """0.2's format kept the step in checkpoint.json: a kill between the two writes left step 18
    there and 19 in the tensors."""
    emb, partial = _cut(tmp_path)
    from safetensors import safe_open

    with safe_open(str(partial / "checkpoint.safetensors"), framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
        meta = json.loads(f.metadata()["posfeat_training_state"])
    save_file(
        tensors, str(partial / "checkpoint.safetensors")
    )  # the tensors of step 5, no state in the header
    (partial / "checkpoint.json").write_text(json.dumps({**meta, "step": 4}))
    with pytest.raises(
        PosfeatError,
        match=r"cannot be resumed: it is torn \(the training state says step 4, the optimizer's "
        r"tensors step 5\)",
    ):
        train_sae(
            emb,
            d_sae=8,
            context=6,
            steps=20,
            batch=8,
            out=tmp_path / "cut",
            resume=True,
            progress=False,
        )
    (partial / "checkpoint.json").unlink()
    with pytest.raises(PosfeatError, match="holds no training state"):
        train_sae(
            emb,
            d_sae=8,
            context=6,
            steps=20,
            batch=8,
            out=tmp_path / "cut",
            resume=True,
            progress=False,
        )
    (partial / "checkpoint.json").write_text(
        json.dumps({**meta, "step": 5})
    )  # an old checkpoint whose two files agree resumes
    res = train_sae(
        emb,
        d_sae=8,
        context=6,
        steps=20,
        batch=8,
        out=tmp_path / "cut",
        resume=True,
        progress=False,
    )
    ref = train_sae(emb, d_sae=8, context=6, steps=20, batch=8, progress=False)
    assert torch.equal(res.sae.W_dec, ref.sae.W_dec)


# ---------------------------------------------------------------------------- signals at the
# edges of a run
def test_a_signal_right_after_the_output_is_in_place_ends_with_0(
    pair, tmp_path, monkeypatch, capsys
):
    model, sae = pair
    real = writes.swap_in

    def swap_then_signal(tmp: Path, target: Path) -> None:
        real(tmp, target)
        os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(output, "swap_in", swap_then_signal)
    assert main(_analyze(model, sae, tmp_path / "out")) == 0
    assert (
        "SIGTERM arrived after" in capsys.readouterr().err
        and (tmp_path / "out" / "report.html").is_file()
    )
    code = main(
        [
            "train",
            "--model",
            str(model),
            "--d-sae",
            "8",
            "--context",
            "8",
            "--steps",
            "4",
            "--batch",
            "8",
            "--out",
            str(tmp_path / "sae_out"),
        ]
    )
    assert (
        code == 0
        and (tmp_path / "sae_out" / "cfg.json").is_file()
        and not (tmp_path / "sae_out.partial").exists()
    )


@pytest.mark.parametrize("ok", [True, False])
def test_a_signal_while_exiting_never_takes_the_default_action(ok, pair, tmp_path, monkeypatch):
    model, sae = pair
    real = lock.release_all

    def release_then_signal(failed: bool = False) -> None:
        os.kill(os.getpid(), signal.SIGTERM)
        real(failed)

    monkeypatch.setattr(sys.modules["posfeat.cli.main"], "release_all", release_then_signal)
    argv = ["stats", "--model", str(model), "--sae", str(sae if ok else tmp_path / "missing")]
    assert main(argv) == (0 if ok else 128 + signal.SIGTERM)


# ---------------------------------------------------------------------------- the hub, the report
def test_a_hub_cache_with_only_pickled_weights_says_what_is_there(offline_cache):
    from posfeat import load_embeddings

    add_file(
        offline_cache,
        "someone/pickled",
        "config.json",
        json.dumps({"model_type": "gpt2", "n_embd": 8}).encode(),
    )
    add_file(offline_cache, "someone/pickled", "pytorch_model.bin", b"\x80\x04\x95not loaded")
    with pytest.raises(
        PosfeatError,
        match=r"holds config.json, pytorch_model.bin: its weights are pickled .* it never unpickles",
    ):
        load_embeddings("someone/pickled")


def test_a_hub_snapshot_file_linking_outside_its_repository_is_refused(offline_cache, tmp_path):
    from posfeat import load_embeddings

    link = add_file(offline_cache, "someone/linked", "config.json", b"{}")
    (tmp_path / "elsewhere.json").write_text("{}")
    link.unlink()
    os.symlink(tmp_path / "elsewhere.json", link)
    with pytest.raises(PosfeatError, match="links outside"):
        load_embeddings("someone/linked")


def test_the_neuronpedia_id_is_an_id_and_its_link_is_encoded(tmp_path):
    from posfeat.io.sae_folders import neuronpedia_url, read_sae_folder

    assert (
        neuronpedia_url("gpt2-small/0-res-jb", 3)
        == "https://www.neuronpedia.org/gpt2-small/0-res-jb/3"
    )
    for bad in [
        'x"><img src=x onerror=alert(1)>',
        "javascript:alert(1)",
        "../../x",
        "a b",
        "",
        "a/" * 9,
    ]:
        assert neuronpedia_url(bad, 3) is None, bad
    _, sae = write_planted_folders(tmp_path)
    cfg = json.loads((sae / "cfg.json").read_text())
    (sae / "cfg.json").write_text(
        json.dumps({**cfg, "neuronpedia_id": 'x"><img src=x onerror=alert(1)>'})
    )
    assert read_sae_folder(sae).meta.neuronpedia_id is None


def test_report_html_allows_only_its_own_scripts(tmp_path):
    import base64
    import hashlib
    import re
    import zlib

    from posfeat import analyze

    from helpers import planted_pair

    emb, sae, _ = planted_pair()
    out = analyze(emb, sae, tokens_sample=16).save(tmp_path / "r")
    page = (out / "report.html").read_text()
    csp = re.search(r'<meta http-equiv="Content-Security-Policy" content="([^"]+)">', page).group(1)
    assert (
        "default-src 'none'" in csp
        and "connect-src 'none'" in csp
        and "unsafe-inline" not in csp.split("script-src")[1].split(";")[0]
    )
    bodies = [
        m.group(2)
        for m in re.finditer(r"<script([^>]*)>(.*?)</script>", page, re.S)
        # a data block (JSON, the deflated plotly.js) has a type a browser never runs as a script
        if not re.search(r'type="application/(json|octet-stream)"', m.group(1))
    ]
    allowed = set(re.findall(r"'sha256-([^']+)'", csp))
    # plotly.js travels deflated in a data block; the page inflates it and runs it as a script, allowed by its own hash
    packed = re.search(
        r'<script id="plotly-js" type="application/octet-stream">(.*?)</script>', page, re.S
    )
    plotly = [zlib.decompress(base64.b64decode(packed.group(1))).decode()] if packed else []
    runs = {
        base64.b64encode(hashlib.sha256(b.encode()).digest()).decode() for b in [*bodies, *plotly]
    }
    assert bodies and runs == allowed
