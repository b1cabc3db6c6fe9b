"""Sweep logic on a tiny model: widths 8, 16, 32; resume after an interrupted width; counts equal analyze's."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from posfeat import PosfeatError, analyze, read_sae_folder
from posfeat.cli import main
from posfeat.sweeps import parse_ints, power_law, sweep_context, sweep_widths, verdict
from posfeat.train import train_sae

from conftest import random_pair

KW = {"context": 10, "steps": 120, "batch": 64, "l1": 0.05, "lr": 3e-3, "tokens": 30, "progress": False}


def test_width_sweep_resumes_and_matches_analyze(tmp_path):
    emb, _ = random_pair(d_vocab=48, n_ctx=16, d_model=6)
    ref = sweep_widths(emb, widths=[8, 16, 32], out=tmp_path / "ref", **KW)
    assert list(ref.d_sae) == [8, 16, 32]
    # interrupt width 16 half-way, then run the sweep: 16 resumes from its checkpoint, 8 is reused
    out = tmp_path / "cut"
    sweep_widths(emb, widths=[8], out=out, **KW)
    with pytest.raises(PosfeatError, match="interrupted"):
        train_sae(emb, d_sae=16, out=out / "d_sae_16", stop_after=60, **{k: v for k, v in KW.items() if k != "tokens"})
    assert (out / "d_sae_16.partial" / "checkpoint.safetensors").is_file()
    got = sweep_widths(emb, widths=[8, 16, 32], out=out, **KW)
    assert np.isnan(got.train_seconds.iloc[0])  # width 8 was not retrained
    for w in (8, 16, 32):
        a, b = read_sae_folder(tmp_path / "ref" / f"d_sae_{w}"), read_sae_folder(out / f"d_sae_{w}")
        assert torch.equal(a.W_enc, b.W_enc) and torch.equal(a.b_enc, b.b_enc), w
    cols = ["positional", "semantic", "mixed", "dead", "positional_mean_span", "fvu_in_context", "l0_in_context"]
    np.testing.assert_allclose(ref[cols].to_numpy(float), got[cols].to_numpy(float), equal_nan=True)
    # the counts equal what analyze gives for each saved SAE
    for row in got.itertuples():
        an = analyze(emb, read_sae_folder(out / f"d_sae_{row.d_sae}"), tokens_sample=16)
        assert an.summary["counts"] == {k: getattr(row, k) for k in ("positional", "semantic", "mixed", "dead")}
    summary = json.loads((out / "summary.json").read_text())
    assert summary["widths"] == [8, 16, 32] and "power_law_exponent" in summary
    for f in ("widths.csv", "section.html", "figures/width_counts.png", "figures/width_splitting.png"):
        assert (out / f).is_file(), f


def test_power_law_fit_and_parsing():
    alpha, c = power_law(np.array([100.0, 200, 400, 800]), 3 * np.array([100.0, 200, 400, 800]) ** 0.5)
    assert alpha == pytest.approx(0.5) and c == pytest.approx(3.0)
    assert parse_ints("512,256, 256", "--d-sae") == [256, 512]
    with pytest.raises(PosfeatError, match="comma-separated"):
        parse_ints("a,b", "--d-sae")
    assert verdict(0.1, 0.5, 0.1) == "repaired" and verdict(0.3, 0.5, 0.1) == "improved" and verdict(0.6, 0.5, 0.1) == "not repaired"


def test_context_sweep(tmp_path):
    emb, _ = random_pair(d_vocab=48, n_ctx=16, d_model=6)
    base = train_sae(emb, d_sae=16, **{k: v for k, v in KW.items() if k != "tokens"}).sae
    df = sweep_context(emb, base, contexts=[10, 13, 16], out=tmp_path / "ctx", steps=40, control_steps=60, batch=64, tokens=30,
                       progress=False)
    assert list(df.sae) == ["original", "fine-tuned to 13", "fine-tuned to 16", "from scratch on 16"]
    assert list(df.context) == [10, 13, 16, 16]
    assert df.fvu_past_original_context.notna().all()
    summary = json.loads((tmp_path / "ctx" / "summary.json").read_text())
    assert set(summary["verdicts"]) == {"fine-tuned to 13", "fine-tuned to 16", "from scratch on 16"}


def test_sweep_cli_bad_input(tmp_path, capsys):
    assert main(["sweep", "widths", "--context", "8", "--d-sae", "x", "--out", str(tmp_path / "o")]) == 2
    assert "comma-separated" in capsys.readouterr().err
