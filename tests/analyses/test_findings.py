"""Verdicts on the note's findings: planted cases for every outcome each verdict can reach, and
summary.json agreeing with the CSVs."""

from __future__ import annotations

import json
import math
import re
from unittest import mock

import numpy as np
import pandas as pd
import pytest
import torch

from posfeat import SAE, Embeddings, analyze, positional_pca
from posfeat.analyses import findings as F  # noqa: N812
from posfeat.cli import main
from posfeat.core.errors import PosfeatError

from helpers import GPT2_WPE, planted_pair, random_pair

R = F.FindingRules()


def feats(kinds, **cols) -> pd.DataFrame:
    """A features table with the columns the verdicts read (defaults for those not given)."""
    n = len(kinds)
    base = {
        "feature": np.arange(n),
        "kind": kinds,
        "positional_score": np.linspace(1, 0.01, n),
        "position_share": np.zeros(n),
        "token_share": np.ones(n),
        "interaction_share": np.zeros(n),
        "peak_position": np.arange(n),
        "span_width": np.ones(n, int),
        "peak_mean": np.ones(n),
        "runs": ["0-0"] * n,
        "n_runs": np.ones(n, int),
        "outside_span_share": np.zeros(n),
        "nearest_wpos_row_pc": np.arange(n),
        "nearest_wpos_row": np.arange(n),
        "mean": np.full(n, 0.1),
        "fire": np.ones(n),
        "position_dependence": np.zeros(n),
        "token_dependence": np.ones(n),
    }
    base.update(cols)
    return pd.DataFrame(base)


def by_pos(n: int, context: int, **cols) -> pd.DataFrame:
    base = {
        "position": np.arange(n),
        "fvu": np.full(n, 0.1),
        "random_fvu": np.full(n, 2.0),
        "zero_fvu": np.full(n, 1.0),
        "n_positional_firing": np.ones(n, int),
        "apparent_position": np.arange(n, dtype=float),
        "nearest_context_row": np.arange(n) % context,
        "spurious_null_per_token": np.zeros(n),
        "peak_distance": np.full(n, 1.0),
        "positional_mass": np.ones(n),
        "spurious_per_token": np.zeros(n),
        "semantic_spread": np.full(n, 1e-3),
        "semantic_deviation": np.full(n, 0.05),
    }
    base.update(cols)
    return pd.DataFrame(base)


def toks(flat_share, positional_flat_share=None, weight=None, token=None) -> pd.DataFrame:
    """A tokens table (tokens.csv) with the columns the token verdict reads."""
    fs = np.asarray(flat_share, float)
    n = len(fs)
    pfs = np.zeros(n) if positional_flat_share is None else np.asarray(positional_flat_share, float)
    return pd.DataFrame(
        {
            "token_id": np.arange(n),
            "token": token or [f"t{i}" for i in range(n)],
            "weight": np.full(n, 1 / n) if weight is None else np.asarray(weight, float),
            "n_nonpositional": np.full(n, 4),
            "n_flat": np.rint(fs * 4).astype(int),
            "flat_share": fs,
            "max_cv": 1 - fs,
            "most_bent_feature": np.zeros(n, int),
            "n_positional": np.full(n, 2),
            "positional_flat_share": pfs,
        }
    )


def _draws(center: float, spread: float = 0.01, n: int = 100, seed: int = 0) -> list[float]:
    return list(np.random.default_rng(seed).normal(center, spread, n))


def _dictionary(**stats) -> dict:
    """A nulls dict whose random dictionary draws are centred where given (defaults: a null every
    value beats)."""
    base = {
        "disjoint": _draws(0.2),
        "positional_share": _draws(0.2),
        "gap_ratio": _draws(1.2),
        "token_flat": _draws(0.1),
    }
    base.update({k: _draws(v) for k, v in stats.items()})
    return {"random_dictionary": base}


def test_every_finding_has_a_null_or_says_why_not():
    emb, sae, _ = planted_pair()
    an = analyze(emb, sae, tokens_sample=16)
    for key, f in an.findings.items():
        assert tuple(f) == F.FINDING_KEYS and f["verdict"] in F.VERDICTS, key
        if f["null"] is None:
            assert f["verdict"] == "undetermined" or re.search(
                r"[Nn]o (informative|further) null", f["evidence"]
            ), key
        if f["verdict"] in ("reproduced", "partly"):
            assert "n/a" not in f["evidence"], key
            drawn = [v for v in (f["null"] or {}).values() if isinstance(v, dict) and "draws" in v]
            assert all(v["draws"] > 0 and math.isfinite(v["p_value"]) for v in drawn), key


def _helix(top3: float, smooth: float = 0.9, walk: float = 0.83, shuffled: float = 0.05) -> dict:
    spectrum = np.r_[top3 * np.array([0.5, 0.3, 0.2]), np.full(7, (1 - top3) / 7)]
    nulls = {"helix_random_walk_top3": _draws(walk), "helix_shuffled_steps": _draws(shuffled, 0.05)}
    return F.helix(
        spectrum, 1, 31, R, nulls, {"smoothness": smooth, "curve_share": 1.0, "tangent_share": 0.9}
    )


def test_helix_outcomes():
    assert _helix(0.95)["verdict"] == "reproduced"
    assert _helix(0.7, walk=0.5)["verdict"] == "partly"
    # a random walk: its top-3 share is what random walks of its step sizes give
    f = _helix(0.84)
    assert (
        f["verdict"] == "not reproduced" and "no more concentrated than diffusion" in f["evidence"]
    )
    # a cloud, or diffusion in a subspace: concentrated, but its path turns as much as its own steps
    # shuffled
    f = _helix(1.0, smooth=0.0)
    assert f["verdict"] == "not reproduced" and "are not a curve traced in order" in f["evidence"]
    f = F.helix(np.full(10, np.nan), 1, 31, R, {}, {})
    assert f["verdict"] == "undetermined" and f["evidence"].startswith("Undetermined:")


def test_helix_on_gpt2s_real_rows_is_reproduced_and_random_walks_are_not():
    """GPT-2 small's real W_pos rows 1..63 (tests/data) against isotropic random walks of the same
    shape."""
    from posfeat.analyses.nulls import helix_statistics

    W = torch.as_tensor(np.load(GPT2_WPE), dtype=torch.float64)
    stats, draws = helix_statistics(W, range(1, 64))
    f = F.helix(positional_pca(W, range(1, 64)).explained_variance_ratio, 1, 63, R, draws, stats)
    assert f["verdict"] == "reproduced", f["evidence"]
    assert (
        f["value"]["top3"] == pytest.approx(0.973, abs=5e-4)
        and f["null"]["top3_random_walk"]["median"] < 0.85
    )
    g = torch.Generator().manual_seed(1)
    walk = torch.randn(64, 768, generator=g, dtype=torch.float64).cumsum(0)
    stats, draws = helix_statistics(walk, range(1, 64))
    assert F.helix(
        positional_pca(walk, range(1, 64)).explained_variance_ratio, 1, 63, R, draws, stats
    )["verdict"] == ("not reproduced")


def test_positional_count_outcomes():
    n = 100
    scores = np.r_[np.full(3, 1.0), np.full(n - 3, 0.01)]
    kinds = np.array(["positional"] * 3 + ["semantic"] * (n - 3), dtype=object)
    f = F.positional_count(feats(kinds, positional_score=scores), R, _dictionary())
    assert f["verdict"] == "reproduced" and f["null"]["gap_ratio"]["p_value"] < 0.05
    assert (
        f["value"]["share_of_live"] == pytest.approx(0.03)
        and "not comparable across widths" in f["evidence"]
    )
    kinds_p = kinds.copy()
    kinds_p[3] = "positional"  # the rule takes one more than the gap: Jaccard 3/4
    assert (
        F.positional_count(feats(kinds_p, positional_score=scores), R, _dictionary())["verdict"]
        == "partly"
    )
    none = np.array(["semantic"] * n, dtype=object)
    assert (
        F.positional_count(feats(none, positional_score=scores), R, _dictionary())["verdict"]
        == "not reproduced"
    )
    stairs = 0.9 ** np.arange(
        n
    )  # a staircase drops by 1/0.9 everywhere, less than the dictionary's drops
    assert (
        F.positional_count(feats(kinds, positional_score=stairs), R, _dictionary())["verdict"]
        == "not reproduced"
    )
    # the null can win: random dictionaries with larger drops than the SAE's take the verdict away
    f = F.positional_count(feats(kinds, positional_score=scores), R, _dictionary(gap_ratio=200.0))
    assert f["value"]["gap_ratio"] == pytest.approx(100) and f["verdict"] == "not reproduced"
    # no null drawn (a dictionary with no live feature): undetermined, never reproduced beside a
    # missing null
    f = F.positional_count(
        feats(kinds, positional_score=scores), R, {"random_dictionary": {"gap_ratio": []}}
    )
    assert f["verdict"] == "undetermined" and "n/a" not in f["evidence"]


def test_disjoint_outcomes():
    kinds = np.array(["semantic"] * 8 + ["positional"] * 4, dtype=object)
    pure = {
        "position_dependence": np.r_[np.full(8, 0.02), np.full(4, 0.9)],
        "token_dependence": np.r_[np.full(8, 0.9), np.full(4, 0.03)],
    }
    f = F.disjoint(feats(kinds, **pure), R, _dictionary())
    assert f["verdict"] == "reproduced" and f["value"]["share"] == 1.0
    # semantic features that swing with position (0.3..0.7 on their token): both axes
    mixed = dict(
        pure, position_dependence=np.r_[np.full(3, 0.23), np.full(5, 0.02), np.full(4, 0.9)]
    )
    assert F.disjoint(feats(kinds, **mixed), R, _dictionary())["verdict"] == "partly"
    every = dict(pure, position_dependence=np.r_[np.full(8, 0.23), np.full(4, 0.9)])
    assert F.disjoint(feats(kinds, **every), R, _dictionary())["verdict"] == "not reproduced"
    # the share is carried by the semantic features while the positional ones depend on tokens too:
    # at most partly
    n = 40
    kinds40 = np.array(["semantic"] * 37 + ["positional"] * 3, dtype=object)
    cols = {
        "position_dependence": np.r_[np.full(37, 0.02), np.full(3, 0.9)],
        "token_dependence": np.r_[np.full(37, 0.9), np.full(3, 0.2)],
    }
    f = F.disjoint(feats(kinds40, **cols), R, _dictionary())
    assert (
        f["value"]["share"] == pytest.approx(37 / n)
        and f["verdict"] == "partly"
        and "carried by" in f["evidence"]
    )
    # a random dictionary of this geometry is as pure: no evidence
    assert (
        F.disjoint(feats(kinds, **pure), R, _dictionary(disjoint=1.0))["verdict"]
        == "not reproduced"
    )
    assert F.disjoint(feats(kinds, **pure), R, {})["verdict"] == "undetermined"


def test_dependence_is_the_brute_force_share():
    """position_dependence and token_dependence of features.csv against the activations over the
    whole grid."""
    emb, sae = random_pair(d_vocab=30, n_ctx=12, d_sae=10)
    an = analyze(emb, sae, tokens_sample=8)
    C = an.context
    act = (
        sae.encode(
            emb.inputs(
                torch.arange(emb.d_vocab)[:, None].expand(-1, C),
                torch.arange(C)[None, :].expand(emb.d_vocab, -1),
            )
        )
        .double()
        .numpy()
    )  # [T, C, F]
    raw = (act**2).sum((0, 1))
    pos_dep = np.sqrt(((act - act.mean(1, keepdims=True)) ** 2).sum((0, 1)) / raw)
    tok_dep = np.sqrt(((act - act.mean(0, keepdims=True)) ** 2).sum((0, 1)) / raw)
    live = raw > 0
    assert an.features.position_dependence.to_numpy()[live] == pytest.approx(
        pos_dep[live], rel=1e-6, abs=1e-9
    )
    assert an.features.token_dependence.to_numpy()[live] == pytest.approx(
        tok_dep[live], rel=1e-6, abs=1e-9
    )


def test_tiling_outcomes():
    kinds = np.array(["positional"] * 4, dtype=object)
    tiles = ["0-3", "4-7", "8-11", "12-15"]
    f = F.tiling(feats(kinds, runs=tiles), 16, R)
    assert (
        f["verdict"] == "reproduced"
        and f["null"] is None
        and "No informative null" in f["evidence"]
    )
    two = ["0-3;9-9", "4-7", "8-11;1-1", "12-15"]
    assert (
        F.tiling(feats(kinds, runs=two, n_runs=np.array([2, 1, 2, 1])), 16, R)["verdict"]
        == "partly"
    )
    gaps = ["0-0;5-5", "2-2;9-9", "4-4;12-12", "6-6;14-14"]
    assert (
        F.tiling(feats(kinds, runs=gaps, n_runs=np.full(4, 2)), 16, R)["verdict"]
        == "not reproduced"
    )
    cover = ["0-3;9-9", "4-7;1-1", "8-11;3-3", "12-15"]  # coverage alone is evidence, not a verdict
    f = F.tiling(feats(kinds, runs=cover, n_runs=np.array([2, 2, 2, 1])), 16, R)
    assert f["value"]["coverage"] == 1.0 and f["verdict"] == "not reproduced"
    # one feature per position: each a single run, every position covered (the note's early
    # positions)
    singles = np.array(["positional"] * 16, dtype=object)
    f = F.tiling(feats(singles, runs=[f"{p}-{p}" for p in range(16)]), 16, R)
    assert f["verdict"] == "reproduced" and f["value"]["single_position_features"] == 16
    assert (
        F.tiling(feats(np.array(["semantic"] * 4, dtype=object)), 16, R)["verdict"]
        == "undetermined"
    )


def test_early_positions_outcomes():
    kinds = np.array(["positional"] * 12, dtype=object)
    peaks = np.arange(12) * 10
    wider, weaker = np.arange(1, 13), np.linspace(1, 0.1, 12)
    assert (
        F.early_positions(
            feats(kinds, peak_position=peaks, span_width=wider, peak_mean=weaker), 128, R
        )["verdict"]
        == "reproduced"
    )
    flat = np.array([3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8])
    assert (
        F.early_positions(
            feats(kinds, peak_position=peaks, span_width=wider, peak_mean=flat / 10), 128, R
        )["verdict"]
        == "partly"
    )
    f = F.early_positions(
        feats(kinds, peak_position=peaks, span_width=flat, peak_mean=flat / 10), 128, R
    )
    assert (
        f["verdict"] == "not reproduced"
        and "no evidence either way" in f["evidence"]
        and "asymptotic" in f["evidence"]
    )
    # position-0 features are set aside: a strong, narrow one at 0 does not make strength fall with
    # position
    kinds13 = np.array(["positional"] * 13, dtype=object)
    peaks13 = np.r_[0, np.arange(1, 13) * 10]
    f = F.early_positions(
        feats(
            kinds13,
            peak_position=peaks13,
            span_width=np.r_[1, flat],
            peak_mean=np.r_[50.0, flat / 10],
        ),
        128,
        R,
    )
    assert (
        f["value"]["position0_features"] == 1
        and f["verdict"] == "not reproduced"
        and "set aside, 1 position-0 feature" in f["evidence"]
    )
    with_zero = F.spearman(peaks13.astype(float), np.r_[50.0, flat / 10])[0]
    assert f["value"]["strength_vs_peak_rho"] != pytest.approx(with_zero)


def test_decoder_traces_helix_outcomes():
    kinds = np.array(["positional"] * 10, dtype=object)
    peaks = np.arange(1, 11)
    f = F.decoder_traces_helix(
        feats(kinds, peak_position=peaks, nearest_wpos_row_pc=peaks), R, "reproduced"
    )
    assert f["verdict"] == "reproduced" and f["null"]["spearman"]["p_value"] < 0.01
    loose = np.array([2, 1, 4, 3, 6, 5, 8, 7, 10, 9])
    assert F.decoder_traces_helix(
        feats(kinds, peak_position=peaks, nearest_wpos_row_pc=loose), R, "partly"
    )["verdict"] == ("reproduced")
    rough = np.array([4, 1, 3, 2, 7, 5, 10, 6, 9, 8])  # Spearman 0.78, permutation p about 0.005
    assert (
        F.decoder_traces_helix(feats(kinds, peak_position=peaks, nearest_wpos_row_pc=rough), R)[
            "verdict"
        ]
        == "partly"
    )
    assert F.decoder_traces_helix(
        feats(kinds, peak_position=peaks, nearest_wpos_row_pc=peaks[::-1]), R
    )["verdict"] == ("not reproduced")
    # no helix: nothing to trace, whatever the decoders do
    f = F.decoder_traces_helix(
        feats(kinds, peak_position=peaks, nearest_wpos_row_pc=peaks), R, "not reproduced"
    )
    assert f["verdict"] == "undetermined" and "no helix" in f["evidence"]
    f = F.decoder_traces_helix(
        feats(kinds[:2], peak_position=peaks[:2], nearest_wpos_row_pc=peaks[:2]), R
    )
    assert f["verdict"] == "undetermined"


def test_token_profiles_outcomes():
    most_flat = np.r_[np.zeros(1), np.ones(19)]  # one token bent, the rest flat
    f = F.token_profiles(toks(most_flat), 32, "t0", R, _dictionary())
    assert f["verdict"] == "reproduced" and f["value"]["share"] == pytest.approx(0.95)
    assert f["null"]["share"]["p_value"] < 0.05 and "ranks 0-99: 95.0% of 20" in f["evidence"]
    assert (
        F.token_profiles(toks(np.r_[np.zeros(7), np.ones(13)]), 32, "t0", R, _dictionary())[
            "verdict"
        ]
        == "partly"
    )
    assert F.token_profiles(toks(np.r_[np.zeros(15), np.ones(5)]), 32, "t0", R, _dictionary())[
        "verdict"
    ] == ("not reproduced")
    # a random dictionary of this geometry is as flat: no evidence
    assert (
        F.token_profiles(toks(most_flat), 32, "t0", R, _dictionary(token_flat=0.99))["verdict"]
        == "not reproduced"
    )
    # tokens with fewer than flat_min_features non-positional features are not tested
    t = toks(most_flat)
    t.loc[0, ["n_nonpositional", "n_flat", "flat_share"]] = [1, 0, 0.0]
    f = F.token_profiles(t, 32, "t0", R, _dictionary())
    assert f["value"]["tested_tokens"] == 19 and f["value"]["share"] == pytest.approx(1.0)
    assert "(too few to test)" in f["evidence"]
    one = toks(np.ones(5))
    one["n_nonpositional"] = 1
    assert F.token_profiles(one, 32, "t0", R, _dictionary())["verdict"] == "undetermined"
    # weighted: the bent token carries most of the weight
    w = np.r_[0.9, np.full(19, 0.1 / 19)]
    assert (
        F.token_profiles(toks(most_flat, weight=w), 32, "t0", R, _dictionary())["verdict"]
        == "not reproduced"
    )


def test_evidence_grammar_follows_the_count():
    t = toks(np.ones(3))
    t.loc[0, ["n_nonpositional", "n_flat"]] = [3, 1]
    assert (
        "1 of 3 top non-positional features is flat"
        in F.token_profiles(t, 32, "t0", R, _dictionary())["evidence"]
    )
    kinds = np.array(["positional"] * 4, dtype=object)
    ev = F.tiling(
        feats(kinds, runs=["0-3;9-9", "4-7", "8-11", "12-15"], n_runs=np.array([2, 1, 1, 1])), 16, R
    )["evidence"]
    assert "1 of 4 features fires in two or more separate runs" in ev


def test_worse_than_random_outcomes():
    fvu = np.r_[np.full(10, 0.1), np.full(30, 3.0)]
    f = F.worse_than_random(by_pos(40, 10, fvu=fvu), 10, R)
    assert f["verdict"] == "reproduced" and f["null"] is None and "not a null" in f["evidence"]
    half = np.r_[np.full(10, 0.1), np.full(15, 3.0), np.full(15, 1.0)]
    assert F.worse_than_random(by_pos(40, 10, fvu=half), 10, R)["verdict"] == "partly"
    assert F.worse_than_random(
        by_pos(40, 10, fvu=np.r_[np.full(10, 0.1), np.full(30, 1.0)]), 10, R
    )["verdict"] == ("not reproduced")
    untested = F.worse_than_random(by_pos(10, 10), 10, R)
    assert (
        untested["verdict"] == "undetermined"
        and "no positions past the context" in untested["evidence"]
    )


def test_degrades_past_context_outcomes():
    """Context 30: the null has 27 split points, so its smallest p value is 1/28 (contexts under 23
    positions cannot pass at 0.05, as docs/findings.md says)."""
    rng = np.random.default_rng(0)
    inside = 0.1 + rng.normal(0, 0.005, 30)
    f = F.degrades_past_context(by_pos(80, 30, fvu=np.r_[inside, np.full(50, 1.0)]), 30, R)
    assert f["verdict"] == "reproduced" and f["value"]["fvu_ratio"] == pytest.approx(10, rel=0.05)
    assert (
        f["null"]["fvu_ratio"]["median"] == pytest.approx(1, abs=0.05)
        and f["null"]["fvu_ratio"]["draws"] == 27
    )
    assert (
        F.degrades_past_context(by_pos(80, 30, fvu=np.r_[inside, np.full(50, 0.15)]), 30, R)[
            "verdict"
        ]
        == "partly"
    )
    same = np.r_[inside, inside, inside[:20]]
    assert F.degrades_past_context(by_pos(80, 30, fvu=same), 30, R)["verdict"] == "not reproduced"
    # the error already steps up inside the context (later positions 3x the earlier ones) and stays
    # there
    step = np.r_[np.full(10, 0.1), np.full(70, 0.3)]
    f = F.degrades_past_context(by_pos(80, 30, fvu=step), 30, R)
    assert f["value"]["fvu_ratio"] >= R.degrade_partly and f["verdict"] == "not reproduced", f[
        "evidence"
    ]
    small = F.degrades_past_context(by_pos(40, 10, fvu=np.r_[inside[:10], np.full(30, 1.0)]), 10, R)
    assert small["verdict"] == "not reproduced" and small["null"]["fvu_ratio"][
        "p_value"
    ] == pytest.approx(1 / 8)
    assert F.degrades_past_context(by_pos(10, 10), 10, R)["verdict"] == "undetermined"


def _break_table(apparent_past, firing_past, n=40, context=10):
    near = np.r_[
        np.arange(1, context + 1) % context, np.arange(context, n) % context
    ]  # past rows repeat the context
    app = np.r_[np.arange(context, dtype=float), apparent_past]
    fire = np.r_[np.ones(context, int), firing_past]
    return by_pos(
        n, context, apparent_position=app, nearest_context_row=near, n_positional_firing=fire
    )


def test_positional_break_outcomes():
    past = np.arange(10, 40) % 10 + 0.3  # the apparent position repeats the nearest in-context row
    f = F.positional_break(_break_table(past, np.ones(30, int)), 10, R)
    assert f["verdict"] == "reproduced" and f["value"]["spearman_nearest_row"] > 0.9
    assert (
        f["value"]["distance_true_position"] > 10
        and f["null"]["distance_nearest_row"]["p_value"] < 0.05
    )
    assert "tracks the nearest in-context W_pos row" in f["evidence"]
    # ranks follow the rows, but 50 positions off: no closer than the same rows shuffled, so not
    # tracking
    f = F.positional_break(_break_table(past + 50, np.ones(30, int)), 10, R)
    assert f["value"]["spearman_nearest_row"] > 0.9 and f["verdict"] == "partly", f["evidence"]
    scrambled = np.random.default_rng(3).permutation(past)  # firing, but following neither
    assert (
        F.positional_break(_break_table(scrambled, np.ones(30, int)), 10, R)["verdict"] == "partly"
    )
    f = F.positional_break(_break_table(np.full(30, np.nan), np.zeros(30, int)), 10, R)
    assert f["verdict"] == "not reproduced" and "silent" in f["evidence"]
    none = feats(np.array(["semantic"] * 3, dtype=object))
    assert (
        F.positional_break(_break_table(past, np.ones(30, int)), 10, R, none)["verdict"]
        == "undetermined"
    )


def _semantic(spur, null, deviation, n=60, context=20):
    kinds = np.array(["semantic"] * 4, dtype=object)
    bp = by_pos(
        n,
        context,
        spurious_per_token=spur,
        spurious_null_per_token=null,
        semantic_deviation=deviation,
    )
    return F.semantic_break(bp, feats(kinds), context, R)


def test_semantic_break_outcomes():
    spur = np.r_[np.zeros(20), np.full(40, 3.0)]
    null = np.r_[np.full(20, 0.2), np.full(40, np.nan)]
    rng = np.random.default_rng(0)
    calm = 0.05 + rng.uniform(-0.01, 0.01, 60)
    noisy = np.r_[calm[:20], np.full(40, 0.5)]
    f = _semantic(spur, null, noisy)
    assert f["verdict"] == "reproduced" and f["null"]["spurious_per_token"][
        "leave_one_position_out"
    ] == pytest.approx(0.2)
    assert (
        f["value"]["deviation_past"] == pytest.approx(0.5)
        and f["null"]["deviation_past"]["draws"] == 20
    )
    assert _semantic(spur, null, calm)["verdict"] == "partly"  # spurious firing only
    assert _semantic(np.zeros(60), null, noisy)["verdict"] == "partly"  # noise only
    assert _semantic(np.zeros(60), null, calm)["verdict"] == "not reproduced"
    # spurious firing past the context no higher than twice its in-context null: not counted
    assert (
        _semantic(
            np.r_[np.zeros(20), np.full(40, 1.0)],
            np.r_[np.full(20, 0.8), np.full(40, np.nan)],
            calm,
        )["verdict"]
        == "not reproduced"
    )
    # neither half computable (no firing pair, no spurious counts)
    assert (
        _semantic(np.full(60, np.nan), np.full(60, np.nan), np.full(60, np.nan))["verdict"]
        == "undetermined"
    )
    assert F.semantic_break(by_pos(10, 10), feats(np.array(["semantic"], dtype=object)), 10, R)[
        "verdict"
    ] == ("undetermined")


@pytest.mark.parametrize("cycles", [1.5, 2.37, 0.8, 6.3])
def test_sinusoid_fit_scores_non_integer_periods(cycles):
    """The free-frequency fit: planted sinusoids of non-integer period score >= 0.95, with or
    without a spike at position 0 (left out of the fit); noise scores low."""
    from posfeat.analyses.classification import sinusoid_check

    p = np.arange(128)
    x = np.sin(2 * np.pi * cycles * p / 127 + 0.4)
    spiked = x.copy()
    spiked[0] = 25.0
    noise = np.random.default_rng(0).normal(size=128)
    got = sinusoid_check(np.stack([x, spiked, noise]))
    assert (got.pre_sine_r2[:2] >= 0.95).all() and got.pre_sine_r2[2] < 0.2
    assert got.pre_sine_cycles[0] == pytest.approx(cycles * 127 / 127, abs=0.05)


@pytest.mark.parametrize(
    "spec, needle",
    [
        ({"helix_reproduced": float("nan")}, "not a finite number"),
        ({"spurious_min": float("inf")}, "not a finite number"),
        ({"flat_cv": -0.1}, "within [0, 1]"),
        ({"disjoint_cv": 1.5}, "within [0, 1]"),
        ({"helix_partly": 0.9}, "at most its 'reproduced'"),
        ({"degrade_partly": 3.0}, "at most its 'reproduced'"),
        ({"spurious_factor": -1.0}, "negative"),
    ],
)
def test_rules_are_validated(spec, needle):
    with pytest.raises(PosfeatError, match=re.escape(needle)):
        F.FindingRules(**spec)


@pytest.mark.parametrize(
    "rule, needle",
    [
        ("helix_reproduced=nan", "not a finite number"),
        ("worse_partly=-0.2", "within [0, 1]"),
        ("trace_partly=0.95", "at most its 'reproduced'"),
    ],
)
def test_bad_rules_on_the_command_line_exit_2_with_one_sentence(
    rule, needle, planted_dirs, tmp_path, capsys
):
    model, sae = planted_dirs
    code = main(
        [
            "analyze",
            "--model",
            str(model),
            "--sae",
            str(sae),
            "--out",
            str(tmp_path / "o"),
            "--rule",
            rule,
        ]
    )
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1 and needle in lines[0] and "Traceback" not in err, err
    assert not (tmp_path / "o").exists()


def _windowed_pair(past: str | None):
    """W_pos made of 8 windows of 4 positions (one direction each), tokens orthogonal to them, and
    one feature per window.

    ``past``: None (no position past the context); ``"repeat"``: the rows past the context repeat
    the in-context ones, so the features fire there for earlier positions; ``"all"``: every row past
    the context is the same sum of all windows, so all features fire and the apparent position
    follows nothing. Feature 8 fires in two windows (positions 4-7 and 20-23)."""
    rng = np.random.default_rng(0)
    d, context = 16, 32
    n_ctx = 32 if past is None else 64
    W_pos = np.zeros((n_ctx, d))
    for p in range(n_ctx):
        if p >= context and past == "all":
            W_pos[p, :8] = 0.7
        else:
            W_pos[p, (p % context) // 4] = 1.0
    W_pos += rng.normal(0, 0.01, W_pos.shape)
    W_E = np.zeros((40, d))
    W_E[:, 8:] = rng.normal(0, 0.3, (40, 8))
    enc = np.zeros((d, 9))
    enc[np.arange(8), np.arange(8)] = 1.0
    enc[[1, 5], 8] = 1.0  # windows 1 and 5: positions 4-7 and 20-23
    sae = SAE.from_arrays(
        enc, enc.T, np.full(9, -0.5), np.zeros(d), apply_b_dec_to_input=False, context_size=context
    )
    return Embeddings(W_E, W_pos, name="windows"), sae


def test_planted_two_window_feature_has_two_runs():
    emb, sae = _windowed_pair(None)
    an = analyze(emb, sae, tokens_sample=16)
    row = an.features.iloc[8]
    assert row.n_runs == 2 and row.runs == "4-7;20-23"
    assert list(an.features.n_runs[:8]) == [1] * 8


def test_planted_positional_code_repeating_earlier_positions_is_reproduced():
    emb, sae = _windowed_pair("repeat")
    f = analyze(emb, sae, tokens_sample=16).findings["positional_break"]
    assert f["verdict"] == "reproduced", f["evidence"]
    assert (
        f["value"]["spearman_nearest_row"] > 0.8
        and f["value"]["distance_nearest_row"] < f["value"]["distance_true_position"]
    )


def test_planted_positional_features_firing_for_no_position_are_partly():
    emb, sae = _windowed_pair("all")
    f = analyze(emb, sae, tokens_sample=16).findings["positional_break"]
    assert f["value"]["past_firing_share"] == 1.0
    assert f["verdict"] == "partly", f["evidence"]


def test_planted_positional_features_silent_past_the_context_are_not_reproduced():
    emb, sae, _ = (
        planted_pair()
    )  # the helix runs on: the window features do not fire past position 31
    f = analyze(emb, sae, tokens_sample=16).findings["positional_break"]
    assert f["verdict"] == "not reproduced" and "silent" in f["evidence"]


def _token_pair(n_tok: int = 20, bent: int = 0):
    """Tokens along their own axes, W_pos a ramp on one more axis, one token feature per token (flat
    over positions) except token ``bent``'s, which also reads the position axis (a rising line); two
    positional features."""
    d = n_tok + 2
    n_ctx = context = 32
    W_pos = np.zeros((n_ctx, d))
    W_pos[:, n_tok] = np.linspace(-1, 1, n_ctx)
    W_pos[:, n_tok + 1] = np.cos(np.linspace(0, np.pi, n_ctx))
    W_E = np.eye(n_tok, d)
    enc = np.zeros((d, n_tok + 2))
    enc[np.arange(n_tok), np.arange(n_tok)] = 1.0
    enc[n_tok, bent] = 0.5
    enc[n_tok, n_tok], enc[n_tok + 1, n_tok + 1] = 4.0, 4.0  # positional: the ramp, the cosine
    b = np.r_[np.full(n_tok, -0.2), -1.0, -1.0]
    b[bent] = -0.6  # fires for token ``bent`` only: 1 + 0.5 ramp - 0.6
    sae = SAE.from_arrays(
        enc, enc.T, b, np.zeros(d), apply_b_dec_to_input=False, context_size=context
    )
    return Embeddings(W_E, W_pos, tokens=[f"w{i}" for i in range(n_tok)], name="tokens"), sae


def test_planted_one_bent_token_among_flat_ones():
    """One token feature per token: too few features per token to test (undetermined, the reason
    given); the bent token's own row still shows the bend."""
    emb, sae = _token_pair()
    an = analyze(emb, sae, tokens_sample=16, token="w0")
    f = an.findings["token_profiles"]
    assert an.features.kind.iloc[20] == an.features.kind.iloc[21] == "positional"
    assert f["verdict"] == "undetermined" and "none could be tested" in f["evidence"], f["evidence"]
    row = an.tokens.set_index("token").loc["w0"]
    assert row.n_flat == 0 and row.n_nonpositional == 1


@pytest.mark.parametrize(
    ("kind", "source"),
    [(k, "chunks") for k in ("planted", "relu", "jumprelu", "topk")]
    + [(k, "engine") for k in ("planted", "relu", "jumprelu")],
)
def test_token_flatness_is_exact(kind, source):
    """Both ways of computing the token table: chunk by chunk, and from the top lists the grid
    statistics keep in their own pass (``grid_statistics(..., token_top_k=k)``, what analyze uses on
    the CPU)."""
    from posfeat.analyses.classification import token_flatness
    from posfeat.engine.grid_stats import grid_statistics

    if kind == "planted":
        emb, sae = _token_pair()
        kinds = np.array(["semantic"] * 20 + ["positional"] * 2, dtype=object)
    else:
        emb, sae = random_pair(
            d_vocab=30,
            n_ctx=16,
            d_sae=12,
            threshold=kind == "jumprelu",
            k=3 if kind == "topk" else None,
        )
        kinds = np.array(["semantic", "positional", "mixed", "dead"] * 3, dtype=object)
    context, k = sae.context_size, 4
    if source == "chunks":
        t = token_flatness(emb, sae, kinds, context, k, 0.1)
    else:
        with (  # blocks of 5 features in sub-blocks of 1 (30 tokens)
            mock.patch("posfeat.engine.additive.SUB_ELEMS", 31),
            mock.patch("posfeat.engine.additive.SCREEN_ELEMS", 31),
        ):
            (stats,), _ = grid_statistics(
                emb, sae, [range(context)], dtype=torch.float64, token_top_k=k, feature_chunk=5
            )
        top = stats.token_top
        assert top is not None and top.feature.shape == (emb.d_vocab, k)
        kinds[(kinds == "dead") & (stats.fire > 0)] = (
            "mixed"  # as analyze calls them: dead features never fire
        )
        with mock.patch(
            "posfeat.analyses.classification._flatness_chunks",
            side_effect=AssertionError("recomputed"),
        ):
            t = token_flatness(emb, sae, kinds, context, k, 0.1, top=top)
    pos = torch.arange(context)
    for tid in range(emb.d_vocab):
        act = sae.encode(emb.inputs(torch.full((context,), tid), pos)).double().numpy()  # [C, F]
        m, sd = act.mean(0), act.std(0)
        m[kinds == "dead"] = -1.0
        top = np.argsort(-m, kind="stable")[:k]
        top = top[m[top] > 0]
        non = [f for f in top if kinds[f] != "positional"]
        flat = [f for f in non if sd[f] / m[f] <= 0.1]
        assert t.n_nonpositional[tid] == len(non) and t.n_flat[tid] == len(flat), tid
        assert t.n_positional[tid] == len(top) - len(non), tid
        if non:
            assert t.max_cv[tid] == pytest.approx(
                max(sd[f] / m[f] for f in non), rel=1e-6, abs=1e-9
            ), tid


def test_token_flatness_recomputes_when_a_feature_called_dead_fires():
    """Dead features rank last in a token's list; the engine's lists do not know which are dead, so
    a dead feature that fires makes token_flatness recompute (the same table as without the
    lists)."""
    from posfeat.analyses.classification import token_flatness
    from posfeat.engine.grid_stats import grid_statistics

    emb, sae = random_pair(d_vocab=30, n_ctx=16, d_sae=12)
    kinds = np.array(["semantic", "positional", "mixed", "dead"] * 3, dtype=object)
    (stats,), _ = grid_statistics(
        emb, sae, [range(sae.context_size)], dtype=torch.float64, token_top_k=4
    )
    assert (stats.fire[kinds == "dead"] > 0).any()
    pd.testing.assert_frame_equal(
        token_flatness(emb, sae, kinds, sae.context_size, 4, 0.1, top=stats.token_top),
        token_flatness(emb, sae, kinds, sae.context_size, 4, 0.1),
    )


def test_planted_semantic_features_unchanged_past_the_context_are_not_reproduced():
    emb, sae, _ = (
        planted_pair()
    )  # token features orthogonal to W_pos: nothing changes past position 31
    an = analyze(emb, sae, tokens_sample=16)
    f = an.findings["semantic_break"]
    assert f["verdict"] == "not reproduced", f["evidence"]
    assert f["value"]["spurious_per_token"] == 0.0


def test_spurious_null_is_leave_one_position_out():
    emb, sae = random_pair(d_vocab=30, n_ctx=10, d_sae=12)
    an = analyze(emb, sae, tokens_sample=8)
    context = an.context
    pos = torch.arange(context)
    hits = np.zeros(context)
    for t in range(emb.d_vocab):
        fire = (sae.encode(emb.inputs(torch.full((context,), t), pos)) > 0).numpy()  # [C, F]
        alone = fire & (fire.sum(0, keepdims=True) == 1)
        hits += alone.sum(1)
    got = an.by_position.spurious_null_per_token.to_numpy()[:context]
    assert got == pytest.approx(hits / emb.d_vocab)


def _nan_equal(a, b) -> bool:
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_nan_equal(a[k], b[k]) for k in a)
    if (
        a is None
        or b is None
        or (isinstance(a, float) and math.isnan(a))
        or (isinstance(b, float) and math.isnan(b))
    ):
        return (a is None or math.isnan(a)) and (b is None or math.isnan(b))
    if isinstance(a, (int, float)):
        return a == pytest.approx(b, rel=1e-6, abs=1e-9)
    return a == b


def test_summary_findings_recomputed_from_the_csvs(
    planted_dirs, tmp_path, stub_figures
):  # the numbers, not the figures
    model, sae = planted_dirs
    assert (
        main(
            [
                "analyze",
                "--model",
                str(model),
                "--sae",
                str(sae),
                "--out",
                str(tmp_path / "o"),
                "--tokens-sample",
                "24",
            ]
        )
        == 0
    )
    s = json.loads((tmp_path / "o" / "summary.json").read_text())
    features = pd.read_csv(tmp_path / "o" / "features.csv", keep_default_na=False, na_values=[""])
    features["runs"] = features.runs.fillna("")
    bp = pd.read_csv(tmp_path / "o" / "by_position.csv")
    tokens = pd.read_csv(tmp_path / "o" / "tokens.csv", keep_default_na=False, na_values=[""])
    assert list(tokens.columns) == F.TOKEN_COLUMNS and len(tokens) == 60
    again = F.compute_findings(
        features,
        bp,
        s["context_size"],
        np.array(s["pca_spectrum"]),
        tuple(s["pca_positions"]),
        s["token"],
        F.FindingRules(**s["rules"]),
        tokens=tokens,
        nulls=s["nulls"],
        geometry=s["geometry"],
    )
    assert set(s["findings"]) == set(F.FINDINGS) and "degrades_past_context" in s["findings"]
    for key, f in s["findings"].items():
        assert tuple(f) == F.FINDING_KEYS, key
        assert f["verdict"] in F.VERDICTS and f["verdict"] == again[key]["verdict"], key
        assert _nan_equal(f["value"], again[key]["value"]), key
        assert _nan_equal(f["null"], again[key]["null"]), key
        assert f["evidence"] == again[key]["evidence"], key


def test_a_random_pair_gets_a_verdict_for_every_finding():
    emb, sae = random_pair(d_vocab=50, n_ctx=20, d_sae=24)
    an = analyze(emb, sae, tokens_sample=20)
    assert set(an.findings) == set(F.FINDINGS) and all(
        f["verdict"] in F.VERDICTS for f in an.findings.values()
    )


@pytest.mark.parametrize("seed", range(6))
def test_spearman_and_ranks_are_scipys(seed):
    """findings' own Spearman (so analyze need not import scipy.stats): scipy's rho and asymptotic
    p, ties included."""
    from scipy import stats

    rng = np.random.default_rng(seed)
    n = int(rng.integers(3, 60))
    x = rng.integers(0, 6, n).astype(float) if seed % 2 else rng.normal(size=n)
    y = x * rng.choice([-1.0, 0.3, 1.0]) + rng.normal(size=n) * rng.choice([0.0, 0.5, 3.0])
    np.testing.assert_array_equal(F.rankdata(x), stats.rankdata(x))
    if np.ptp(y) == 0:
        y[0] += 1.0
    rho, p = F.spearman(x, y)
    ref = stats.spearmanr(x, y)
    assert rho == pytest.approx(ref.statistic, abs=1e-12) and p == pytest.approx(
        ref.pvalue, rel=1e-9, abs=1e-300
    )
