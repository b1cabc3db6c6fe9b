"""The CLI driven with bad inputs of every kind: each ends in exit 2 and one line on stderr, no
traceback, nothing written, earlier outputs byte-identical and no temporary files left (issue 9)."""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from posfeat.cli import main
from posfeat.core.progress import STAGE_LINE
from posfeat.io.lock import LOCK_TAG
from posfeat.io.sources import BUNDLED_SAE_DIR
from posfeat.io.writes import TEMP_TAG

from helpers import random_pair, write_planted_folders

# Where files go, locks, paths and errors are tested here, not how figures look: each figure is a
# 1x1 PNG (conftest).
pytestmark = pytest.mark.usefixtures("stub_figures")

PROGRESS = re.compile(r"\d+%\|.*\|")


def snapshot(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    """A workspace: a planted model and SAE, earlier posfeat outputs, and a folder of the user's
    own."""
    root = tmp_path_factory.mktemp("ws")
    model, sae = write_planted_folders(root)
    user = root / "user"
    user.mkdir()
    (user / "notes.txt").write_text("the user's own file")
    (user / "mine.csv").write_text("my,own\n1,2\n")
    (root / "theirs").mkdir()
    (root / "theirs" / "data.txt").write_text("someone else's folder")
    assert (
        main(
            [
                "analyze",
                "--model",
                str(model),
                "--sae",
                str(sae),
                "--out",
                str(root / "prev"),
                "--tokens-sample",
                "16",
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "train",
                "--model",
                str(model),
                "--d-sae",
                "8",
                "--context",
                "8",
                "--steps",
                "20",
                "--batch",
                "16",
                "--out",
                str(root / "prev_sae"),
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    from posfeat import load_embeddings, train_sae

    with pytest.raises(Exception, match="interrupted"):
        train_sae(
            load_embeddings(str(model)),
            d_sae=8,
            context=8,
            steps=20,
            batch=16,
            out=root / "cut_sae",
            stop_after=5,
            progress=False,
        )
    thesis = root / "thesis"  # a user's folder that shares one file name with a posfeat 0.1 sweep
    thesis.mkdir()
    (thesis / "widths.csv").write_text("my,own\n")
    (thesis / "thesis.tex").write_text("\\chapter{Years of work}\n")
    bad = root / "bad"
    bad.mkdir()
    return root


def _cfg_edit(ws: Path, name: str, edit) -> str:
    """A copy of the planted SAE (or model, for config.json) with its config edited."""
    src = ws / ("model" if name.startswith("model") else "sae")
    dst = ws / "bad" / name
    if not dst.exists():
        shutil.copytree(src, dst)
        cfg = dst / ("config.json" if name.startswith("model") else "cfg.json")
        data = json.loads(cfg.read_text())
        edit(data, dst)
        cfg.write_text(json.dumps(data))
    return str(dst)


def _bool_embeddings(ws: Path) -> str:
    dst = ws / "bad" / "model_bool"
    if not dst.exists():
        shutil.copytree(ws / "model", dst)
        save_file(
            {"wte.weight": torch.ones(60, 24, dtype=torch.bool), "wpe.weight": torch.ones(48, 24)},
            str(dst / "model.safetensors"),
        )
    return str(dst)


def _one_hot_weights(ws: Path) -> str:
    path = ws / "bad" / "one_hot.safetensors"
    w = torch.zeros(60)
    w[3] = 1.0
    save_file({"weights": w}, str(path))
    return str(path)


def _shard_list(data: dict, dst: Path) -> None:
    (dst / "model.safetensors").rename(dst / "model-00001-of-00001.safetensors")
    (dst / "model.safetensors.index.json").write_text(json.dumps({"weight_map": ["wte.weight"]}))


def _index_to(target: str):
    """A sharded model whose index names ``target`` (relative with .., or absolute) as the shard of
    both embeddings."""

    def edit(data: dict, dst: Path) -> None:
        (dst / "model.safetensors").unlink()
        (dst / "model.safetensors.index.json").write_text(
            json.dumps({"weight_map": {"wte.weight": target, "wpe.weight": target}})
        )

    return edit


def _hooks_disagree(data: dict, dst: Path) -> None:
    data["hook_name"] = "blocks.0.hook_resid_pre"
    data["metadata"]["hook_name"] = "blocks.5.hook_resid_pre"


def _weights_link_outside(data: dict, dst: Path) -> None:
    (dst / "sae_weights.safetensors").unlink()
    os.symlink(
        dst.parent.parent / "sae" / "sae_weights.safetensors", dst / "sae_weights.safetensors"
    )


def _nested_sae(ws: Path) -> str:
    """An SAE inside a finished posfeat sweep folder (bad/sw/d_sae_8/seed_0)."""
    from posfeat.experiments.folder import SWEEP_WIDTHS
    from posfeat.io.ownership import write_marker

    dst = ws / "bad" / "sw" / "d_sae_8" / "seed_0"
    if not dst.exists():
        shutil.copytree(ws / "sae", dst)
        write_marker(ws / "bad" / "sw", SWEEP_WIDTHS)
    return str(dst)


LONG = "x" * 300

# id -> (argv with {M}, {S}, {W} for the model, SAE and workspace, needle in the message)
CASES: dict[str, tuple[list[str], str]] = {
    "analyze_out_empty_force": (
        ["analyze", "--model", "{M}", "--sae", "{S}", "--out", "", "--force"],
        "--out is empty",
    ),
    "analyze_out_dot_force": (
        ["analyze", "--model", "{M}", "--sae", "{S}", "--out", ".", "--force"],
        "current folder",
    ),
    "analyze_out_dotdot_force": (
        ["analyze", "--model", "{M}", "--sae", "{S}", "--out", "..", "--force"],
        "parent of the current folder",
    ),
    "analyze_out_home": (
        ["analyze", "--model", "{M}", "--sae", "{S}", "--out", "~", "--force"],
        "home folder",
    ),
    "train_out_empty_force": (
        ["train", "--model", "{M}", "--d-sae", "8", "--context", "8", "--out", "", "--force"],
        "--out is empty",
    ),
    "train_out_dot_force": (
        ["train", "--model", "{M}", "--d-sae", "8", "--context", "8", "--out", ".", "--force"],
        "current folder",
    ),
    "train_out_dotdot_force": (
        ["train", "--model", "{M}", "--d-sae", "8", "--context", "8", "--out", "..", "--force"],
        "parent of the current",
    ),
    "analyze_out_exists": (
        ["analyze", "--model", "{M}", "--sae", "{S}", "--out", "{W}/prev"],
        "already exists; pass --force",
    ),
    "analyze_force_over_user_folder": (
        ["analyze", "--model", "{M}", "--sae", "{S}", "--out", "{W}/theirs", "--force"],
        "not written by posfeat",
    ),
    "train_force_over_user_folder": (
        [
            "train",
            "--model",
            "{M}",
            "--d-sae",
            "8",
            "--context",
            "8",
            "--out",
            "{W}/theirs",
            "--force",
        ],
        "not written by posfeat",
    ),
    "train_out_is_a_file": (
        [
            "train",
            "--model",
            "{M}",
            "--d-sae",
            "8",
            "--context",
            "8",
            "--out",
            "{W}/user/notes.txt",
            "--force",
        ],
        "existing file",
    ),
    "sweep_into_analyze_folder": (
        [
            "sweep",
            "widths",
            "--model",
            "{M}",
            "--context",
            "8",
            "--d-sae",
            "4,8",
            "--out",
            "{W}/prev",
        ],
        "already exists; pass --force",
    ),
    "sweep_context_at_own_context": (
        [
            "sweep",
            "context",
            "--model",
            "{M}",
            "--sae",
            "{S}",
            "--contexts",
            "32",
            "--out",
            "{W}/ctx",
        ],
        "not longer than the SAE's own context 32",
    ),
    "sweep_context_past_model": (
        [
            "sweep",
            "context",
            "--model",
            "{M}",
            "--sae",
            "{S}",
            "--contexts",
            "99",
            "--out",
            "{W}/ctx",
        ],
        "past the 48",
    ),
    "sweep_widths_single_width": (
        ["sweep", "widths", "--model", "{M}", "--context", "8", "--d-sae", "8", "--out", "{W}/sw"],
        "at least two",
    ),
    "stats_out_user_csv_force": (
        ["stats", "--model", "{M}", "--sae", "{S}", "--out", "{W}/user/mine.csv", "--force"],
        "not written by this posfeat command",
    ),
    "eval_out_existing_folder": (
        ["eval", "--model", "{M}", "--sae", "{S}", "--out", "{W}/prev"],
        "is an existing folder",
    ),
    "stats_out_existing_folder": (
        ["stats", "--model", "{M}", "--sae", "{S}", "--out", "{W}/prev"],
        "is an existing folder",
    ),
    "resume_without_checkpoint": (
        [
            "train",
            "--model",
            "{M}",
            "--d-sae",
            "8",
            "--context",
            "8",
            "--resume",
            "--out",
            "{W}/fresh",
        ],
        "no checkpoint",
    ),
    "checkpoint_without_resume": (
        [
            "train",
            "--model",
            "{M}",
            "--d-sae",
            "8",
            "--context",
            "8",
            "--steps",
            "20",
            "--batch",
            "16",
            "--out",
            "{W}/cut_sae",
        ],
        "holds the checkpoint of an interrupted run",
    ),
    "lr_inf": (
        [
            "train",
            "--model",
            "{M}",
            "--d-sae",
            "8",
            "--context",
            "8",
            "--lr",
            "inf",
            "--out",
            "{W}/t",
        ],
        "--lr is inf",
    ),
    "lr_nan": (
        [
            "train",
            "--model",
            "{M}",
            "--d-sae",
            "8",
            "--context",
            "8",
            "--lr",
            "nan",
            "--out",
            "{W}/t",
        ],
        "--lr is nan",
    ),
    "lr_negative": (
        [
            "train",
            "--model",
            "{M}",
            "--d-sae",
            "8",
            "--context",
            "8",
            "--lr",
            "-1",
            "--out",
            "{W}/t",
        ],
        "--lr is -1",
    ),
    "l1_nan": (
        [
            "train",
            "--model",
            "{M}",
            "--d-sae",
            "8",
            "--context",
            "8",
            "--l1",
            "nan",
            "--out",
            "{W}/t",
        ],
        "--l1 is nan",
    ),
    "l1_text": (
        [
            "train",
            "--model",
            "{M}",
            "--d-sae",
            "8",
            "--context",
            "8",
            "--l1",
            "lots",
            "--out",
            "{W}/t",
        ],
        "not a number",
    ),
    "d_sae_zero": (
        ["train", "--model", "{M}", "--d-sae", "0", "--context", "8", "--out", "{W}/t"],
        "--d-sae is 0",
    ),
    "context_too_long": (
        ["train", "--model", "{M}", "--d-sae", "8", "--context", "999", "--out", "{W}/t"],
        "--context 999 is outside",
    ),
    "topk_without_k": (
        [
            "train",
            "--model",
            "{M}",
            "--d-sae",
            "8",
            "--context",
            "8",
            "--arch",
            "topk",
            "--out",
            "{W}/t",
        ],
        "--k",
    ),
    "one_hot_token_weights": (
        [
            "train",
            "--model",
            "{M}",
            "--d-sae",
            "8",
            "--context",
            "8",
            "--token-weights",
            "@one_hot",
            "--out",
            "{W}/t",
        ],
        "at least two tokens",
    ),
    "cfg_d_sae_fraction": (
        ["stats", "--model", "{M}", "--sae", "@d_sae_frac"],
        "d_sae is 32.7, not an integer",
    ),
    "cfg_d_sae_text": (["stats", "--model", "{M}", "--sae", "@d_sae_abc"], "d_sae is 'abc'"),
    "cfg_context_text": (
        ["stats", "--model", "{M}", "--sae", "@ctx_128k"],
        "context_size is '128k'",
    ),
    "cfg_vocab_text": (
        ["stats", "--model", "@model_vocab", "--sae", "{S}"],
        "vocab_size is 'lots'",
    ),
    "cfg_n_positions_wrong": (
        ["stats", "--model", "@model_npos", "--sae", "{S}"],
        "gives 96 positions but the positional embedding has 48",
    ),
    "cfg_weight_map_list": (["stats", "--model", "@model_shards", "--sae", "{S}"], "weight_map is"),
    "bool_embeddings": (["stats", "--model", "@model_bool", "--sae", "{S}"], "non-floating-point"),
    "device_cuda_without_gpu": (
        ["analyze", "--model", "{M}", "--sae", "{S}", "--device", "cuda", "--out", "{W}/o"],
        "no CUDA GPU",
    ),
    "device_unknown": (
        ["analyze", "--model", "{M}", "--sae", "{S}", "--device", "foo", "--out", "{W}/o"],
        "invalid choice",
    ),
    "token_superscript": (
        ["analyze", "--model", "{M}", "--sae", "{S}", "--token", "²", "--out", "{W}/o"],
        "not in the vocabulary",
    ),
    "positions_reversed": (
        ["stats", "--model", "{M}", "--sae", "{S}", "--positions", "10:5"],
        "start must be at least 0 and below the end",
    ),
    "positions_text": (
        ["stats", "--model", "{M}", "--sae", "{S}", "--positions", "abc"],
        "is not N or A:B",
    ),
    "analyze_positions_range": (
        ["analyze", "--model", "{M}", "--sae", "{S}", "--positions", "0:8", "--out", "{W}/o"],
        "single number",
    ),
    "out_name_too_long": (
        ["analyze", "--model", "{M}", "--sae", "{S}", "--out", "{W}/" + LONG],
        "File name too long",
    ),
    "sae_name_too_long": (
        ["stats", "--model", "{M}", "--sae", "{W}/" + LONG],
        "File name too long",
    ),
    "sae_is_a_file": (
        ["stats", "--model", "{M}", "--sae", "{W}/user/notes.txt"],
        "is a file, not a folder",
    ),
    "model_missing": (["stats", "--model", "{W}/nope", "--sae", "{S}"], "does not exist"),
    "include_sweep_not_a_sweep": (
        [
            "analyze",
            "--model",
            "{M}",
            "--sae",
            "{S}",
            "--include-sweep",
            "{W}/user",
            "--out",
            "{W}/o",
        ],
        "has no section.html",
    ),
    "tokens_sample_zero": (
        ["analyze", "--model", "{M}", "--sae", "{S}", "--tokens-sample", "0", "--out", "{W}/o"],
        "must be positive",
    ),
    "feature_out_of_range": (["feature", "999", "--model", "{M}", "--sae", "{S}"], "out of range"),
    "compare_one_sae": (
        ["compare", "--sae", "{S}", "--model", "{M}", "--out", "{W}/c"],
        "exactly two",
    ),
    "unknown_rule": (
        ["analyze", "--model", "{M}", "--sae", "{S}", "--rule", "bogus=1", "--out", "{W}/o"],
        "NAME=VALUE",
    ),
    "unknown_command": (["frobnicate"], "invalid choice"),
    "missing_flag_value": (["train", "--model", "{M}", "--d-sae"], "expected one argument"),
    "hook_not_layer0": (["stats", "--model", "{M}", "--sae", "@hook5"], "pass --allow-any-hook"),
    "pickle_weights": (["stats", "--model", "{M}", "--sae", "@pickled"], "never unpickles"),
    # issue 18: inputs are never outputs, with or without --force
    "out_is_the_sae": (
        ["analyze", "--model", "{M}", "--sae", "{S}", "--out", "{S}", "--force"],
        "is the input --sae",
    ),
    "out_holds_the_sae": (
        ["analyze", "--model", "{M}", "--sae", "@nested_sae", "--out", "{W}/bad/sw", "--force"],
        "holds the input --sae",
    ),
    "out_inside_the_model": (
        ["analyze", "--model", "{M}", "--sae", "{S}", "--out", "{M}/results"],
        "lies inside the input --model",
    ),
    "out_is_the_bundled_sae": (
        ["analyze", "--model", "{M}", "--sae", "{S}", "--out", str(BUNDLED_SAE_DIR), "--force"],
        "posfeat's installed package",
    ),
    "train_out_is_init": (
        [
            "train",
            "--model",
            "{M}",
            "--init",
            "{S}",
            "--d-sae",
            "8",
            "--context",
            "8",
            "--out",
            "{S}",
            "--force",
        ],
        "is the input --init",
    ),
    "eval_out_inside_the_sae": (
        ["eval", "--model", "{M}", "--sae", "{S}", "--out", "{S}/cfg.json", "--force"],
        "lies inside the input --sae",
    ),
    "sweep_context_out_holds_its_sae": (
        [
            "sweep",
            "context",
            "--model",
            "{M}",
            "--sae",
            "@nested_sae",
            "--contexts",
            "40",
            "--out",
            "{W}/bad/sw",
        ],
        "holds the input --sae",
    ),
    # ownership by content: one shared file name does not make a user's folder posfeat's
    "thesis_folder_force": (
        ["analyze", "--model", "{M}", "--sae", "{S}", "--out", "{W}/thesis", "--force"],
        "thesis.tex",
    ),
    "sweep_into_thesis_folder": (
        [
            "sweep",
            "widths",
            "--model",
            "{M}",
            "--context",
            "8",
            "--d-sae",
            "4,8",
            "--out",
            "{W}/thesis",
        ],
        "thesis.tex",
    ),
    # files stay inside their folder
    "weight_map_dotdot": (
        ["stats", "--model", "@model_escape", "--sae", "{S}"],
        "lies outside its folder",
    ),
    "weight_map_absolute": (
        ["stats", "--model", "@model_etc", "--sae", "{S}"],
        "lies outside its folder",
    ),
    "sae_weights_link_outside": (["stats", "--model", "{M}", "--sae", "@sae_link"], "outside"),
    "hook_fields_disagree": (
        ["stats", "--model", "{M}", "--sae", "@hooks_disagree"],
        "names different hooks",
    ),
    "token_10000_characters": (
        [
            "analyze",
            "--model",
            "{M}",
            "--sae",
            "{S}",
            "--token",
            "y" * 10000,
            "--out",
            "{W}/nope1/a/b/out",
        ],
        "(10002 characters)",
    ),
}
SETUPS = {
    "d_sae_frac": lambda d, p: d.update(d_sae=32.7),
    "d_sae_abc": lambda d, p: d.update(d_sae="abc"),
    "ctx_128k": lambda d, p: d.update(context_size="128k"),
    "model_vocab": lambda d, p: d.update(vocab_size="lots"),
    "model_npos": lambda d, p: d.update(n_positions=96),
    "model_shards": _shard_list,
    "hook5": lambda d, p: (
        d.update(hook_name="blocks.5.hook_resid_pre"),
        d["metadata"].update(hook_name="blocks.5.hook_resid_pre"),
    ),
    "pickled": lambda d, p: (p / "sae_weights.safetensors").write_bytes(
        b"\x80\x04\x95" + os.urandom(64)
    ),
    "model_escape": _index_to("../../elsewhere/x.safetensors"),
    "model_etc": _index_to("/etc/passwd"),
    "hooks_disagree": _hooks_disagree,
    "sae_link": _weights_link_outside,
}


def _argv(ws: Path, argv: list[str]) -> list[str]:
    out = []
    for a in argv:
        if a.startswith("@"):
            name = a[1:]
            a = (
                _one_hot_weights(ws)
                if name == "one_hot"
                else _bool_embeddings(ws)
                if name == "model_bool"
                else _nested_sae(ws)
                if name == "nested_sae"
                else _cfg_edit(ws, name, SETUPS[name])
            )
        out.append(
            a.replace("{M}", str(ws / "model"))
            .replace("{S}", str(ws / "sae"))
            .replace("{W}", str(ws))
        )
    return out


def _check(
    ws: Path, argv: list[str], needle: str, capsys, monkeypatch, chdir: Path | None = None
) -> None:
    monkeypatch.chdir(chdir or ws / "user")
    argv = _argv(ws, argv)
    before = snapshot(ws)
    code = main(argv)
    err = capsys.readouterr().err
    lines = [
        line
        for line in err.replace("\r", "\n").splitlines()
        if line and not PROGRESS.search(line) and not STAGE_LINE.match(line)
    ]  # progress bars and stage lines aside
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("posfeat: error:") and "Traceback" not in err, (
        err
    )
    assert needle in err, err
    assert "Traceback" not in err and len(lines[0]) < 600, err  # long values shortened
    assert not (ws / "nope1").exists() and not [
        p for p in ws.rglob("*") if p.name.endswith(LOCK_TAG)
    ]  # folders made for it removed
    after = snapshot(ws)
    assert {k: v for k, v in after.items() if not k.startswith("bad/")} == {
        k: v for k, v in before.items() if not k.startswith("bad/")
    }
    assert not [p for p in ws.rglob("*") if TEMP_TAG in p.name]


def test_the_table_has_at_least_forty_cases():
    assert len(CASES) + len(INJECTED) >= 40


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input(case, ws, capsys, monkeypatch):
    argv, needle = CASES[case]
    _check(ws, argv, needle, capsys, monkeypatch)


INJECTED = {
    # root ignores file permissions, so these errors are injected where the OS would raise them
    "unreadable_cfg": (
        "posfeat.io.sae_folders.read_json",
        PermissionError(errno.EACCES, "Permission denied", "cfg.json"),
        ["stats", "--model", "{M}", "--sae", "{S}"],
        "cfg.json",
    ),
    "unreadable_weights": (
        "posfeat.io.safetensors_io.open",
        PermissionError(errno.EACCES, "Permission denied", "sae_weights.safetensors"),
        ["stats", "--model", "{M}", "--sae", "{S}"],
        "check its permissions",
    ),
    "no_space_writing_report": (
        "posfeat.outputs.write.render_html",
        OSError(errno.ENOSPC, "No space left on device", "report.html"),
        [
            "analyze",
            "--model",
            "{M}",
            "--sae",
            "{S}",
            "--out",
            "{W}/prev",
            "--force",
            "--tokens-sample",
            "8",
        ],
        "No space left on device while writing output folder",
    ),
    "read_only_old_output": (
        "posfeat.io.policy.os.access",
        None,
        ["analyze", "--model", "{M}", "--sae", "{S}", "--out", "{W}/prev", "--force"],
        "writable",
    ),
}


@pytest.mark.parametrize("case", list(INJECTED))
def test_os_errors_are_one_sentence(case, ws, capsys, monkeypatch):
    target, exc, argv, needle = INJECTED[case]
    if exc is None:
        monkeypatch.setattr(target, lambda p, mode: False)
    else:

        def fail(*a, **k):
            raise exc

        monkeypatch.setattr(target, fail, raising=False)
    _check(ws, argv, needle, capsys, monkeypatch)


def test_hook_refusal_speaks_the_api_to_api_users(ws):
    from posfeat import PosfeatError, load_sae

    folder = _cfg_edit(ws, "hook5", SETUPS["hook5"])
    with pytest.raises(PosfeatError, match=r"pass allow_any_hook=True"):
        load_sae(folder)


def test_one_hot_weights_are_refused_by_the_api_too():
    from posfeat import PosfeatError, train_sae

    emb, _ = random_pair(d_vocab=20)
    w = torch.zeros(20)
    w[0] = 1
    with pytest.raises(PosfeatError, match="at least two tokens"):
        train_sae(emb, d_sae=4, context=4, steps=2, token_weights=w, progress=False)
