"""posfeat compare: an SAE against itself matches every feature to itself; against a wider SAE, its
splits agree with the sweep's."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

import posfeat.analyses.compare as compare_mod
from posfeat import SAE, compare_saes
from posfeat.analyses.compare import COMPARE_COLUMNS
from posfeat.cli import main
from posfeat.experiments import sweep_widths

from helpers import random_pair


@pytest.mark.realmodel
def test_bundled_sae_against_itself(tmp_path, capsys):
    assert (
        main(
            [
                "compare",
                "--sae",
                "minilm",
                "--sae",
                "minilm",
                "--out",
                str(tmp_path / "c"),
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    df = pd.read_csv(tmp_path / "c" / "compare.csv")
    assert list(df.columns) == COMPARE_COLUMNS and len(df) == 2048
    assert (
        (df.feature_a == df.feature_b).all()
        and np.allclose(df.cosine, 1.0)
        and (df.kind_a == df.kind_b).all()
    )
    summary = json.loads((tmp_path / "c" / "summary.json").read_text())
    assert summary["a"]["positional"] == {"shared": 49, "split": 0, "unique": 0}
    assert (
        tmp_path / "c" / "figures" / "compare.png"
    ).is_file() and "49 shared" in capsys.readouterr().out


def test_planted_split_is_found():
    """B holds A's feature 0 split into two halves (cosine 0.9 each) and feature 1 unchanged;
    feature 2 vanishes."""
    d = np.eye(6)
    W_a = np.stack([d[0], d[1], d[2]])
    half = [0.9 * d[0] + np.sqrt(1 - 0.81) * d[3], 0.9 * d[0] - np.sqrt(1 - 0.81) * d[3]]
    W_b = np.stack([half[0], d[1], half[1], d[4]])
    sae = lambda W: SAE.from_arrays(W.T, W, np.zeros(len(W)), np.zeros(6))  # noqa: E731
    cmp = compare_saes(sae(W_a), sae(W_b))
    assert sorted(cmp.children(0)) == [0, 2] and cmp.children(1) == [1] and cmp.children(2) == []
    assert list(cmp.status_a.status) == ["split", "shared", "unique"] and list(
        cmp.status_b.status
    ) == ["matched"] * 3 + ["unique"]
    assert set(cmp.pairs[cmp.pairs.relation == "split"].feature_b) | {0} >= {0, 2}


def test_greedy_assignment_for_large_saes_agrees_on_a_clear_case(monkeypatch):
    _, sae = random_pair(d_sae=40, d_model=12)
    perm = torch.randperm(40, generator=torch.Generator().manual_seed(1))
    other = SAE.from_arrays(sae.W_enc[:, perm], sae.W_dec[perm], sae.b_enc[perm], sae.b_dec)
    exact = compare_saes(sae, other)
    monkeypatch.setattr(compare_mod, "HUNGARIAN_MAX", 0)
    greedy = compare_saes(sae, other)
    assert exact.summary["assignment"] == "hungarian" and greedy.summary["assignment"].startswith(
        "greedy"
    )
    m = exact.pairs[exact.pairs.relation == "match"]
    assert (perm[m.feature_b.to_numpy()].numpy() == m.feature_a.to_numpy()).all()
    pd.testing.assert_frame_equal(exact.pairs, greedy.pairs)


def test_compare_agrees_with_the_width_sweep(tmp_path):
    emb, _ = random_pair(d_vocab=48, n_ctx=16, d_model=6)
    sweep_widths(
        emb,
        widths=[8, 32],
        out=tmp_path / "sw",
        context=10,
        steps=150,
        batch=64,
        l1=0.05,
        lr=3e-3,
        tokens=20,
        seeds=1,
        curve_points=0,
        progress=False,
    )
    summary = json.loads((tmp_path / "sw" / "summary.json").read_text())
    ref = summary["splitting_reference"]["reference"]
    if ref is None:
        pytest.skip("this tiny sweep found no positional feature to follow")
    from posfeat import read_sae_folder

    a, b = (
        read_sae_folder(tmp_path / "sw" / "d_sae_8" / "seed_0"),
        read_sae_folder(tmp_path / "sw" / "d_sae_32" / "seed_0"),
    )
    cmp = compare_saes(a, b, emb)
    assert sorted(cmp.children(ref)) == sorted(summary["splitting_matches"]["32"])


def test_compare_cli_one_sae_is_refused(tmp_path, capsys):
    assert main(["compare", "--sae", "minilm", "--out", str(tmp_path / "c")]) == 2
    assert "exactly two" in capsys.readouterr().err


def test_saes_of_different_contexts_or_widths_are_flagged():
    """Issue 29: compare warns (summary["warnings"], and on standard error in the CLI) when the two
    SAEs were trained on different contexts or have different widths; two alike SAEs get no
    warning."""
    emb, a = random_pair(d_sae=16)
    _, b = random_pair(d_sae=16, seed=1)
    assert compare_saes(a, b, emb).summary["warnings"] == []
    b.context_size = a.context_size * 2
    _, wide = random_pair(d_sae=24, seed=2)
    warnings = compare_saes(a, b, emb).summary["warnings"]
    assert (
        len(warnings) == 1
        and f"{a.context_size}-position" in warnings[0]
        and str(b.context_size) in warnings[0]
    )
    assert any(
        "16 features" in w and "24" in w for w in compare_saes(a, wide, emb).summary["warnings"]
    )
