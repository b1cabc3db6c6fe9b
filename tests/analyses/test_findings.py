"""Verdicts on the note's findings: planted cases for every outcome each verdict can reach, and summary.json agreeing with the CSVs."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

from posfeat import SAE, Embeddings, analyze, positional_pca
from posfeat.analyses import findings as F  # noqa: N812
from posfeat.cli import main

from helpers import planted_pair, random_pair

R = F.FindingRules()


def feats(kinds, **cols) -> pd.DataFrame:
    """A features table with the columns the verdicts read (defaults for those not given)."""
    n = len(kinds)
    base = {"feature": np.arange(n), "kind": kinds, "positional_score": np.linspace(1, 0.01, n), "position_share": np.zeros(n),
            "token_share": np.ones(n), "interaction_share": np.zeros(n), "peak_position": np.arange(n), "span_width": np.ones(n, int),
            "peak_mean": np.ones(n), "runs": ["0-0"] * n, "n_runs": np.ones(n, int), "outside_span_share": np.zeros(n),
            "nearest_wpos_row_pc": np.arange(n)}
    base.update(cols)
    return pd.DataFrame(base)


def by_pos(n: int, context: int, **cols) -> pd.DataFrame:
    base = {"position": np.arange(n), "fvu": np.full(n, 0.1), "random_fvu": np.full(n, 2.0), "n_positional_firing": np.ones(n, int),
            "peak_distance": np.full(n, 1.0), "positional_mass": np.ones(n), "spurious_per_token": np.zeros(n), "semantic_spread": np.full(n, 1e-3)}
    base.update(cols)
    return pd.DataFrame(base)


def test_helix_outcomes_on_planted_and_random_w_pos():
    emb, _, _ = planted_pair()  # a helix in 3 dimensions
    pca = positional_pca(emb.W_pos, range(1, 32))
    assert F.helix(pca.explained_variance_ratio, 1, 31, R)["verdict"] == "reproduced"
    W = torch.randn(128, 64, generator=torch.Generator().manual_seed(0))
    assert F.helix(positional_pca(W, range(1, 128)).explained_variance_ratio, 1, 127, R)["verdict"] == "not reproduced"
    assert F.helix(np.array([0.3, 0.2, 0.2, 0.1, 0.1, 0.1]), 1, 9, R)["verdict"] == "partly"


def test_positional_count_outcomes():
    n = 100
    scores = np.r_[np.full(3, 1.0), np.full(n - 3, 0.01)]
    kinds = np.array(["positional"] * 3 + ["semantic"] * (n - 3), dtype=object)
    assert F.positional_count(feats(kinds, positional_score=scores), R)["verdict"] == "reproduced"
    kinds_p = kinds.copy()
    kinds_p[3] = "positional"  # the rule takes one more than the gap: Jaccard 3/4
    assert F.positional_count(feats(kinds_p, positional_score=scores), R)["verdict"] == "partly"
    none = np.array(["semantic"] * n, dtype=object)
    assert F.positional_count(feats(none, positional_score=scores), R)["verdict"] == "not reproduced"


def test_disjoint_outcomes():
    kinds = np.array(["semantic"] * 10, dtype=object)
    assert F.disjoint(feats(kinds), R)["verdict"] == "reproduced"
    ts = np.r_[np.ones(8), np.full(2, 0.5)]
    assert F.disjoint(feats(kinds, token_share=ts), R)["verdict"] == "partly"
    assert F.disjoint(feats(kinds, token_share=np.full(10, 0.5)), R)["verdict"] == "not reproduced"


def test_tiling_outcomes():
    kinds = np.array(["positional"] * 4, dtype=object)
    tiles = ["0-3", "4-7", "8-11", "12-15"]
    assert F.tiling(feats(kinds, runs=tiles), 16, R)["verdict"] == "reproduced"
    two = ["0-3;9-9", "4-7", "8-11;1-1", "12-15"]
    assert F.tiling(feats(kinds, runs=two, n_runs=np.array([2, 1, 2, 1])), 16, R)["verdict"] == "partly"
    gaps = ["0-0;5-5", "2-2;9-9", "4-4;12-12", "6-6;14-14"]
    assert F.tiling(feats(kinds, runs=gaps, n_runs=np.full(4, 2)), 16, R)["verdict"] == "not reproduced"


def test_early_positions_outcomes():
    kinds = np.array(["positional"] * 12, dtype=object)
    peaks = np.arange(12) * 10
    wider, weaker = np.arange(1, 13), np.linspace(1, 0.1, 12)
    assert F.early_positions(feats(kinds, peak_position=peaks, span_width=wider, peak_mean=weaker), 128, R)["verdict"] == "reproduced"
    flat = np.array([3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8])
    assert F.early_positions(feats(kinds, peak_position=peaks, span_width=wider, peak_mean=flat / 10), 128, R)["verdict"] == "partly"
    assert F.early_positions(feats(kinds, peak_position=peaks, span_width=flat, peak_mean=flat / 10), 128, R)["verdict"] == "not reproduced"


def test_decoder_traces_helix_outcomes():
    kinds = np.array(["positional"] * 10, dtype=object)
    peaks = np.arange(1, 11)
    assert F.decoder_traces_helix(feats(kinds, peak_position=peaks, nearest_wpos_row_pc=peaks), R)["verdict"] == "reproduced"
    loose = np.array([1, 3, 2, 5, 4, 7, 6, 10, 8, 9])
    assert F.decoder_traces_helix(feats(kinds, peak_position=peaks, nearest_wpos_row_pc=loose + np.array([0, 0, 5, 0, -3, 0, 0, 0, -6, 0])),
                                  R)["verdict"] == "partly"
    assert F.decoder_traces_helix(feats(kinds, peak_position=peaks, nearest_wpos_row_pc=peaks[::-1]), R)["verdict"] == "not reproduced"


def test_token_profiles_outcomes():
    kinds = np.array(["semantic", "semantic", "positional"], dtype=object)
    flat, wavy = np.full(32, 0.3), 0.2 + 0.2 * np.sin(np.arange(32))
    f = feats(kinds)
    assert F.token_profiles(f, by_pos(32, 32, token_f0=flat, token_f1=flat, token_f2=wavy), 32, "t", R)["verdict"] == "reproduced"
    assert F.token_profiles(f, by_pos(32, 32, token_f0=flat, token_f1=wavy, token_f2=wavy), 32, "t", R)["verdict"] == "partly"
    assert F.token_profiles(f, by_pos(32, 32, token_f0=wavy, token_f1=wavy, token_f2=flat), 32, "t", R)["verdict"] == "not reproduced"


def test_worse_than_random_outcomes():
    fvu = np.r_[np.full(10, 0.1), np.full(30, 3.0)]
    assert F.worse_than_random(by_pos(40, 10, fvu=fvu), 10, R)["verdict"] == "reproduced"
    assert F.worse_than_random(by_pos(40, 10, fvu=np.r_[np.full(10, 0.1), np.full(30, 1.0)]), 10, R)["verdict"] == "partly"
    assert F.worse_than_random(by_pos(40, 10), 10, R)["verdict"] == "not reproduced"
    untested = F.worse_than_random(by_pos(10, 10), 10, R)
    assert untested["verdict"] == "not reproduced" and "No positions past the context" in untested["evidence"]


def test_positional_break_outcomes():
    far = np.r_[np.full(10, 1.0), np.full(30, 20.0)]
    assert F.positional_break(by_pos(40, 10, peak_distance=far), 10, R)["verdict"] == "reproduced"
    silent = np.r_[np.ones(10, int), np.zeros(30, int)]
    assert F.positional_break(by_pos(40, 10, n_positional_firing=silent, peak_distance=np.r_[np.ones(10), np.full(30, np.nan)]),
                              10, R)["verdict"] == "partly"
    assert F.positional_break(by_pos(40, 10), 10, R)["verdict"] == "not reproduced"


def test_semantic_break_outcomes():
    spur = np.r_[np.zeros(10), np.full(30, 3.0)]
    spread = np.r_[np.full(10, 1e-3), np.full(30, 1e-2)]
    assert F.semantic_break(by_pos(40, 10, spurious_per_token=spur, semantic_spread=spread), 10, R)["verdict"] == "reproduced"
    assert F.semantic_break(by_pos(40, 10, spurious_per_token=spur), 10, R)["verdict"] == "partly"
    assert F.semantic_break(by_pos(40, 10), 10, R)["verdict"] == "not reproduced"


def _windowed_pair(repeat_past_context: bool):
    """W_pos made of 8 windows of 4 positions (one direction each), tokens orthogonal to them, and one feature per window.

    With ``repeat_past_context`` the rows past the context repeat the in-context ones, so the features fire there for the
    wrong positions; feature 8 fires in two windows (positions 4-7 and 20-23)."""
    rng = np.random.default_rng(0)
    d, context = 16, 32
    n_ctx = 64 if repeat_past_context else 32
    W_pos = np.zeros((n_ctx, d))
    for p in range(n_ctx):
        W_pos[p, (p % context) // 4] = 1.0
    W_pos += rng.normal(0, 0.01, W_pos.shape)
    W_E = np.zeros((40, d))
    W_E[:, 8:] = rng.normal(0, 0.3, (40, 8))
    enc = np.zeros((d, 9))
    enc[np.arange(8), np.arange(8)] = 1.0
    enc[[1, 5], 8] = 1.0  # windows 1 and 5: positions 4-7 and 20-23
    sae = SAE.from_arrays(enc, enc.T, np.full(9, -0.5), np.zeros(d), apply_b_dec_to_input=False, context_size=context)
    return Embeddings(W_E, W_pos, name="windows"), sae


def test_planted_two_window_feature_has_two_runs():
    emb, sae = _windowed_pair(False)
    an = analyze(emb, sae, tokens_sample=16)
    row = an.features.iloc[8]
    assert row.n_runs == 2 and row.runs == "4-7;20-23"
    assert list(an.features.n_runs[:8]) == [1] * 8


def test_positional_features_defined_only_inside_the_context_break_past_it():
    emb, sae = _windowed_pair(True)
    an = analyze(emb, sae, tokens_sample=16)
    f = an.findings["positional_break"]
    assert f["verdict"] == "reproduced", f["evidence"]
    assert f["value"]["peak_distance_past_context"] >= 28


def _nan_equal(a, b) -> bool:
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_nan_equal(a[k], b[k]) for k in a)
    if a is None or b is None or (isinstance(a, float) and math.isnan(a)) or (isinstance(b, float) and math.isnan(b)):
        return (a is None or math.isnan(a)) and (b is None or math.isnan(b))
    if isinstance(a, (int, float)):
        return a == pytest.approx(b, rel=1e-6, abs=1e-9)
    return a == b


def test_summary_findings_recomputed_from_the_csvs(planted_dirs, tmp_path):
    model, sae = planted_dirs
    assert main(["analyze", "--model", str(model), "--sae", str(sae), "--out", str(tmp_path / "o"), "--tokens-sample", "24"]) == 0
    s = json.loads((tmp_path / "o" / "summary.json").read_text())
    features = pd.read_csv(tmp_path / "o" / "features.csv", keep_default_na=False, na_values=[""])
    features["runs"] = features.runs.fillna("")
    bp = pd.read_csv(tmp_path / "o" / "by_position.csv")
    again = F.compute_findings(features, bp, s["context_size"], np.array(s["pca_spectrum"]), tuple(s["pca_positions"]), s["token"],
                               F.FindingRules(**s["rules"]))
    assert set(s["findings"]) == set(F.FINDINGS)
    for key, f in s["findings"].items():
        assert set(f) == {"verdict", "value", "note_value", "test", "evidence"}, key
        assert f["verdict"] in F.VERDICTS and f["verdict"] == again[key]["verdict"], key
        assert _nan_equal(f["value"], again[key]["value"]), key
        assert f["evidence"] == again[key]["evidence"], key


def test_a_random_pair_gets_a_verdict_for_every_finding():
    emb, sae = random_pair(d_vocab=50, n_ctx=20, d_sae=24)
    an = analyze(emb, sae, tokens_sample=20)
    assert set(an.findings) == set(F.FINDINGS) and all(f["verdict"] in F.VERDICTS for f in an.findings.values())
