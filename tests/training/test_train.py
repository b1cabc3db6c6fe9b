"""The trainer: learns, is deterministic, resumes exactly, writes a SAELens folder, refuses bad
input."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest
import torch

from posfeat import PosfeatError
from posfeat.cli import main
from posfeat.io.sae_folders import read_sae_folder
from posfeat.training import LOG_COLUMNS, train_sae

from helpers import random_pair

KW = {
    "d_sae": 32,
    "context": 12,
    "steps": 300,
    "batch": 128,
    "l1": 0.05,
    "lr": 3e-3,
    "progress": False,
}
FVU_BOUND = 0.1


def fvu_on_grid(emb, sae, context):
    x = emb.W_E[:, None, :] + emb.W_pos[None, :context]
    err = (x - sae(x)).pow(2).sum()
    return float(err / ((emb.W_E - emb.W_E.mean(0)).pow(2).sum() * context))


def test_small_run_learns_and_is_bit_for_bit_reproducible():
    emb, _ = random_pair(d_vocab=64, n_ctx=16, d_model=8)
    a = train_sae(emb, seed=3, **KW)
    b = train_sae(emb, seed=3, **KW)
    assert a.log[0]["fvu"] > a.log[-1]["fvu"]
    assert fvu_on_grid(emb, a.sae, 12) < FVU_BOUND
    for name in ("W_enc", "W_dec", "b_enc", "b_dec"):
        assert torch.equal(getattr(a.sae, name), getattr(b.sae, name)), name
    c = train_sae(emb, seed=4, **KW)
    assert not torch.equal(a.sae.W_enc, c.sae.W_enc)


def test_topk_training():
    emb, _ = random_pair(d_vocab=64, n_ctx=16, d_model=8)
    res = train_sae(emb, **{**KW, "l1": 0.0}, arch="topk", k=4)
    assert res.sae.k == 4 and res.log[-1]["l0"] <= 4
    assert fvu_on_grid(emb, res.sae, 12) < 0.5


def test_output_folder_resume_and_init(tmp_path):
    emb, _ = random_pair(d_vocab=64, n_ctx=16, d_model=8)
    tw = torch.rand(64)
    full = train_sae(
        emb,
        seed=1,
        token_weights=tw,
        out=tmp_path / "full",
        command="posfeat train ...",
        model_name="random",
        **KW,
    )
    cfg = json.loads((tmp_path / "full" / "cfg.json").read_text())
    for key in ("d_in", "d_sae", "hook_name", "architecture", "context_size"):
        assert key in cfg
    assert (
        cfg["posfeat_training"]["command"] == "posfeat train ..."
        and cfg["posfeat_training"]["seed"] == 1
    )
    assert cfg["model_name"] == "random" and cfg["context_size"] == 12
    with open(tmp_path / "full" / "training_log.csv") as fh:
        assert next(csv.reader(fh)) == LOG_COLUMNS
    assert (tmp_path / "full" / "token_weights.safetensors").is_file()
    loaded = read_sae_folder(tmp_path / "full")
    assert torch.equal(loaded.W_enc, full.sae.W_enc)

    # interrupted at step 100, then resumed: identical to the uninterrupted run
    with pytest.raises(PosfeatError, match="resume"):
        train_sae(emb, seed=1, token_weights=tw, out=tmp_path / "cut", stop_after=100, **KW)
    assert (
        not (tmp_path / "cut").exists()
        and (tmp_path / "cut.partial" / "checkpoint.safetensors").is_file()
    )
    resumed = train_sae(emb, seed=1, token_weights=tw, out=tmp_path / "cut", resume=True, **KW)
    assert torch.equal(resumed.sae.W_enc, full.sae.W_enc) and torch.equal(
        resumed.sae.b_dec, full.sae.b_dec
    )
    assert not (tmp_path / "cut.partial").exists()

    # fine-tuning with a zero learning rate returns the initial SAE (the unfold/fold round trip)
    same = train_sae(emb, init=tmp_path / "full", **{**KW, "lr": 0.0, "steps": 5, "context": 16})
    for name in ("W_enc", "W_dec", "b_enc", "b_dec"):
        torch.testing.assert_close(
            getattr(same.sae, name), getattr(full.sae, name), atol=1e-5, rtol=1e-5
        )
    assert same.sae.context_size == 16


def test_sae_lens_encodes_trained_folder_identically(tmp_path):
    sae_lens = pytest.importorskip("sae_lens")
    emb, _ = random_pair(d_vocab=64, n_ctx=16, d_model=8)
    res = train_sae(emb, out=tmp_path / "s", **KW)
    theirs = sae_lens.SAE.load_from_disk(str(tmp_path / "s"), device="cpu")
    x = emb.W_E[:10] + emb.W_pos[3]
    torch.testing.assert_close(theirs.encode(x), res.sae.encode(x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--context", "513"], "--context 513"),
        (["--d-sae", "0"], "--d-sae is 0"),
        (["--out-unwritable"], "Cannot write"),
        (["--bad-weights"], "one weight per token"),
    ],
)
def test_train_cli_bad_input(extra, needle, tmp_path, capsys):
    args = {
        "--model": "minilm",
        "--d-sae": "8",
        "--context": "8",
        "--steps": "2",
        "--batch": "4",
        "--out": str(tmp_path / "out"),
    }
    if extra[0] == "--out-unwritable":
        (tmp_path / "file").write_text("x")
        args["--out"] = str(tmp_path / "file" / "out")
    elif extra[0] == "--bad-weights":
        from safetensors.torch import save_file

        save_file({"weights": torch.ones(10)}, str(tmp_path / "w.safetensors"))
        args["--token-weights"] = str(tmp_path / "w.safetensors")
    else:
        args[extra[0]] = extra[1]
    argv = ["train"] + [x for kv in args.items() for x in kv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("posfeat: error:") and needle in err and "Traceback" not in err
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.partial").exists()


def test_trained_sae_records_the_hook_sae_lens_uses(planted_dirs, tmp_path):
    """GPT-2, GPT-Neo and OPT: blocks.0.hook_resid_pre (no LayerNorm before it); BERT-style:
    posfeat's own name for the plain sum."""
    import json as _json

    from safetensors.torch import save_file

    from posfeat import load_embeddings

    model, _ = planted_dirs
    gpt = train_sae(
        load_embeddings(str(model)),
        d_sae=8,
        context=8,
        steps=3,
        batch=8,
        out=tmp_path / "g",
        progress=False,
    )
    assert gpt.sae.hook_name == "blocks.0.hook_resid_pre"
    assert (
        _json.loads((tmp_path / "g" / "cfg.json").read_text())["metadata"]["hook_name"]
        == "blocks.0.hook_resid_pre"
    )
    bert = tmp_path / "bert"
    bert.mkdir()
    (bert / "config.json").write_text(
        _json.dumps(
            {
                "model_type": "bert",
                "hidden_size": 8,
                "vocab_size": 20,
                "max_position_embeddings": 16,
            }
        )
    )
    save_file(
        {
            "embeddings.word_embeddings.weight": torch.randn(20, 8),
            "embeddings.position_embeddings.weight": torch.randn(16, 8),
            "embeddings.token_type_embeddings.weight": torch.randn(2, 8),
        },
        str(bert / "model.safetensors"),
    )
    b = train_sae(load_embeddings(str(bert)), d_sae=8, context=8, steps=3, batch=8, progress=False)
    assert b.sae.hook_name == "hook_embed+hook_pos_embed"
    old = (
        tmp_path / "old"
    )  # a folder written by posfeat 0.1 (its own hook name on a GPT-2 model) still loads
    shutil.copytree(tmp_path / "g", old)
    cfg = _json.loads((old / "cfg.json").read_text())
    cfg["hook_name"] = cfg["metadata"]["hook_name"] = "hook_embed+hook_pos_embed"
    (old / "cfg.json").write_text(_json.dumps(cfg))
    assert read_sae_folder(old).hook_name == "hook_embed+hook_pos_embed"


def test_training_checkpoint_is_readable_whatever_its_header_length(tmp_path):
    """posfeat's own checkpoints were refused as pickles when their header length's low byte was
    0x80 (d_model 16, d_sae 379-388)."""
    emb, _ = random_pair(d_vocab=64, n_ctx=16, d_model=16)
    for d_sae in range(379, 389):
        with pytest.raises(PosfeatError, match="interrupted"):
            train_sae(
                emb,
                d_sae=d_sae,
                context=8,
                steps=4,
                batch=8,
                out=tmp_path / f"s{d_sae}",
                stop_after=2,
                progress=False,
            )
        res = train_sae(
            emb,
            d_sae=d_sae,
            context=8,
            steps=4,
            batch=8,
            out=tmp_path / f"s{d_sae}",
            resume=True,
            progress=False,
        )
        assert res.sae.d_sae == d_sae


def test_bf16_loss_curve_tracks_fp32():
    """bf16 autocast (here on the CPU; on CUDA the same code) follows fp32's loss curve within a few
    percent; an unknown precision is one clear error."""
    emb, _ = random_pair(d_vocab=64, n_ctx=16, d_model=8)
    kw = {
        "d_sae": 32,
        "context": 12,
        "steps": 120,
        "batch": 256,
        "l1": 0.05,
        "lr": 3e-3,
        "log_every": 20,
        "progress": False,
    }
    fp32 = train_sae(emb, **kw)
    bf16 = train_sae(emb, precision="bf16", **kw)
    a, b = np.array([r["loss"] for r in fp32.log]), np.array([r["loss"] for r in bf16.log])
    assert len(a) == len(b) == 6
    assert a[-1] < 0.5 * a[0]  # it learned
    np.testing.assert_allclose(b, a, rtol=0.05)
    assert not np.array_equal(a, b)  # bf16 did run: the curves are close, not identical
    with pytest.raises(PosfeatError, match="precision"):
        train_sae(emb, precision="fp8", **kw)


@pytest.mark.parametrize("final_fvu", [1.08, None])
def test_train_warns_when_its_final_fvu_is_above_one(
    final_fvu, planted_dirs, tmp_path, capsys, monkeypatch
):
    """Issue 29: a run that ends reconstructing worse than the mean input (FVU 1.08, as one did)
    says so, and what to change; a run that learned (the real training here) does not."""
    import types

    import posfeat.training.train as train_mod
    from posfeat.cli import main

    real = train_mod.train_sae
    if final_fvu is not None:  # the same run, its last log line as the reported one's

        def fake(*args, **kwargs):
            res = real(*args, **kwargs)
            return types.SimpleNamespace(
                out=res.out, sae=res.sae, log=[*res.log, {**res.log[-1], "fvu": final_fvu}]
            )

        monkeypatch.setattr(train_mod, "train_sae", fake)
    model, _ = planted_dirs
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
            "40",
            "--batch",
            "64",
            "--out",
            str(tmp_path / "t"),
        ]
    )
    out, err = capsys.readouterr()
    fvu = float(out.split("final FVU ")[1].split(",")[0])
    assert code == 0 and (fvu > 1.0) == (final_fvu is not None), out
    assert ("final FVU" in err and "above 1" in err and "--steps" in err) == (
        final_fvu is not None
    ), err
