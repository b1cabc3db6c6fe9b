"""Sweeps on a tiny model: widths 8, 16, 32 with two seeds; resume after an interrupted run; counts equal analyze's; contexts."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from posfeat import PosfeatError, analyze, read_sae_folder
from posfeat.cli import main
from posfeat.training import train_sae
from posfeat.training.sweeps import parse_ints, power_law, sweep_context, sweep_widths, verdict

from helpers import random_pair

RECIPE = {"context": 10, "steps": 120, "batch": 64, "l1": 0.05, "lr": 3e-3, "progress": False}
KW = {**RECIPE, "tokens": 30, "seeds": 2, "curve_points": 3}


def test_width_sweep_resumes_and_matches_analyze(tmp_path):
    emb, _ = random_pair(d_vocab=48, n_ctx=16, d_model=6)
    ref = sweep_widths(emb, widths=[8, 16, 32], out=tmp_path / "ref", **KW)
    assert list(ref.d_sae) == [8, 16, 32] and list(ref.n_seeds) == [2, 2, 2]
    assert {"positional", "positional_sd", "fvu_in_context", "fvu_in_context_sd"} <= set(ref.columns)
    # interrupt width 16 (first seed) half-way, then run the sweep: 16 resumes from its checkpoint, 8 and 32 are reused
    out = tmp_path / "cut"
    sweep_widths(emb, widths=[8, 32], out=out, **KW)
    with pytest.raises(PosfeatError, match="interrupted"):
        train_sae(emb, d_sae=16, seed=0, out=out / "d_sae_16" / "seed_0", stop_after=60, **RECIPE)
    assert (out / "d_sae_16" / "seed_0.partial" / "checkpoint.safetensors").is_file()
    got = sweep_widths(emb, widths=[8, 16, 32], out=out, **KW)
    runs = pd.read_csv(out / "runs.csv")
    assert len(runs) == 6 and runs[runs.d_sae != 16].train_seconds.isna().all()  # widths 8 and 32 were not retrained
    for w in (8, 16, 32):
        for s in (0, 1):
            a, b = read_sae_folder(tmp_path / "ref" / f"d_sae_{w}" / f"seed_{s}"), read_sae_folder(out / f"d_sae_{w}" / f"seed_{s}")
            assert torch.equal(a.W_enc, b.W_enc) and torch.equal(a.b_enc, b.b_enc), (w, s)
    cols = ["positional", "semantic", "mixed", "dead", "positional_mean_span", "fvu_in_context", "l0_in_context"]
    np.testing.assert_allclose(ref[cols].to_numpy(float), got[cols].to_numpy(float), equal_nan=True)
    for row in runs.itertuples():  # every run's counts equal what analyze gives for its saved SAE
        an = analyze(emb, read_sae_folder(out / f"d_sae_{row.d_sae}" / f"seed_{row.seed}"), tokens_sample=16)
        assert an.summary["counts"] == {k: getattr(row, k) for k in ("positional", "semantic", "mixed", "dead")}
    summary = json.loads((out / "summary.json").read_text())
    assert summary["widths"] == [8, 16, 32] and summary["seeds"] == [0, 1]
    fit = summary["power_law"]
    assert fit["points"] >= 2 and (fit["alpha_low"] is None or fit["alpha_low"] <= fit["alpha"] <= fit["alpha_high"])
    steps = summary["positional_by_step"]
    assert [r["step"] for r in steps] == [40, 80, 120]  # widest SAE, first seed: the count during training
    for f in ("widths.csv", "runs.csv", "section.html", "figures/width_counts.png", "figures/width_splitting.png", "figures/width_steps.png"):
        assert (out / f).is_file(), f
    assert not (tmp_path / "cut.partial").exists() and not (tmp_path / "ref.partial").exists()


def test_power_law_fit_with_interval_and_parsing():
    w = np.array([100.0, 200, 400, 800] * 3)
    fit = power_law(w, 3 * w**0.5)
    assert fit["alpha"] == pytest.approx(0.5) and fit["c"] == pytest.approx(3.0)
    assert fit["alpha_low"] == pytest.approx(0.5) and fit["alpha_high"] == pytest.approx(0.5)  # no scatter: a point interval
    noisy = power_law(w, 3 * w**0.5 * np.exp(np.random.default_rng(0).normal(0, 0.2, len(w))))
    assert noisy["alpha_low"] < noisy["alpha"] < noisy["alpha_high"]
    assert parse_ints("512,256, 256", "--d-sae") == [256, 512]
    with pytest.raises(PosfeatError, match="comma-separated"):
        parse_ints("a,b", "--d-sae")
    assert verdict(0.1, 0.5, 0.1) == "repaired" and verdict(0.3, 0.5, 0.1) == "improved" and verdict(0.6, 0.5, 0.1) == "not repaired"


def test_context_sweep(tmp_path):
    emb, _ = random_pair(d_vocab=48, n_ctx=16, d_model=6)
    base = train_sae(emb, d_sae=16, **RECIPE).sae
    df = sweep_context(emb, base, contexts=[13, 16], out=tmp_path / "ctx", steps=40, control_steps=60, batch=64, tokens=30, seeds=2,
                       progress=False)
    assert list(df.sae) == ["original", "fine-tuned to 13", "fine-tuned to 16", "from scratch on 16"]
    assert list(df.context) == [10, 13, 16, 16] and list(df.n_seeds) == [2, 2, 2, 2]
    assert df.fvu_past_original_context.notna().all() and df.fvu_past_original_context_sd.notna().all()
    summary = json.loads((tmp_path / "ctx" / "summary.json").read_text())
    assert set(summary["verdicts"]) == {"fine-tuned to 13", "fine-tuned to 16", "from scratch on 16"}
    assert len(pd.read_csv(tmp_path / "ctx" / "runs.csv")) == 8
    with pytest.raises(PosfeatError, match="not longer than the SAE's own context 10"):
        sweep_context(emb, base, contexts=[10, 16], out=tmp_path / "bad", steps=5, progress=False)
    assert not (tmp_path / "bad").exists() and not (tmp_path / "bad.partial").exists()


def test_sweep_cli_bad_input(tmp_path, capsys):
    assert main(["sweep", "widths", "--context", "8", "--d-sae", "x", "--out", str(tmp_path / "o")]) == 2
    assert "comma-separated" in capsys.readouterr().err
