"""Planted controls with known truth: the verdict a careful referee expects for each finding.

The controls (tests/planted.py) are built from the note's claims alone, not from posfeat's rules.
Every expected verdict below comes with the reason a referee would give. The second half of the
file re-derives each planted truth by brute force (the whole activation grid through
``sae.encode(emb.inputs(tok, pos))``, and numpy geometry), so a control cannot silently be wrong.

Verdicts: "reproduced", "partly", "not reproduced", "undetermined" (the value or its null cannot be
computed, or the finding does not apply).
"""

from __future__ import annotations

import math
from functools import cache
from typing import Any

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

import posfeat
from planted import CONTEXT, CONTROLS, D_VOCAB, N_CTX, Planted, control, helix_rows

R, P, NR, U = "reproduced", "partly", "not reproduced", "undetermined"
VERDICTS = {R, P, NR, U}
NOT_R = (P, NR)  # "anything but reproduced", and the finding does apply


@cache
def run(name: str) -> tuple[Planted, Any]:
    c = control(name)
    an = posfeat.analyze(
        c.emb, c.sae, positions=c.positions, tokens_sample=D_VOCAB, seed=0, progress=False
    )
    return c, an


# (control, finding, expected verdict or tuple of acceptable verdicts, why, xfail reason or None)
EXPECT: list[tuple[str, str, str | tuple[str, ...], str, str | None]] = [
    # ------------------------------------------------------------------ 1. helix
    (
        "standard",
        "helix",
        R,
        "W_pos rows 0..31 are a perfect helix (1.6 turns) on axes 0..2: top 3 PCs 100%, "
        "each row's nearest neighbours are its neighbours in order, the tangents live in the same 3 "
        "PCs",
        None,
    ),
    (
        "standard_rotated",
        "helix",
        R,
        "the same helix in a randomly rotated basis: PCA is rotation invariant",
        None,
    ),
    (
        "random_walk0",
        "helix",
        NR,
        "an isotropic random walk in R^32: its top 3 PCs hold ~85-90% of the variance "
        "(the known PCA-of-random-walk artefact, Lissajous 'helices'), but each step is isotropic: "
        "only ~20% of the "
        "tangent variance lies in those PCs, so the rows are not a 1-D curve in a 3-D space",
        None,
    ),
    ("random_walk1", "helix", NR, "random walk, seed 1 (as above)", None),
    ("random_walk2", "helix", NR, "random walk, seed 2 (as above)", None),
    (
        "cloud_3d",
        "helix",
        NR,
        "i.i.d. rows in a random 3-D subspace: 3 PCs hold 100% but the rows are in no order "
        "(adjacent rows are nearest neighbours no more often than chance): low-dimensional, not a "
        "curve",
        None,
    ),
    ("iid_full", "helix", NR, "i.i.d. rows in all of R^32: top 3 PCs ~30%, no curve", None),
    (
        "iid_positional",
        "helix",
        NR,
        "i.i.d. rows in an 8-D subspace: top 3 PCs ~55%, no curve",
        None,
    ),
    (
        "identical_rows",
        "helix",
        U,
        "every row identical: zero variance, PCA shares are 0/0; nothing can be tested",
        None,
    ),
    # ------------------------------------------------------------------ 2. disjoint
    (
        "standard",
        "disjoint",
        R,
        "24 token features exactly g(tok) (encoders in W_E's span, orthogonal to W_pos) and 16 "
        "positional features exactly h(pos): every live feature is pure (brute-force variance "
        "shares 1.0)",
        None,
    ),
    ("standard_rotated", "disjoint", R, "rotation preserves every activation", None),
    (
        "swing",
        "disjoint",
        NOT_R,
        "every token feature's activation on its own token is 1 +- (0.3..0.7) cos(position "
        "phase): it depends on token AND position (a token x position interaction, 4-20% of its "
        "variance), 24 of 40 "
        "live features; the note's 'g=0 or h=0' fails for them. Partly or not reproduced, depending "
        "on how strongly "
        "a referee weighs an interaction share of 4-20%",
        None,
    ),
    (
        "conjunction",
        "disjoint",
        NR,
        "24 of 40 live features fire only on their token AND within an arc of positions "
        "(interaction the majority of their variance): most features depend on both",
        None,
    ),
    # ------------------------------------------------------------------ 3. tiling
    (
        "standard",
        "tiling",
        R,
        "16 positional features on 3-wide windows every 2 positions: each fires on exactly "
        "one run, together they cover 0..31",
        None,
    ),
    (
        "singles",
        "tiling",
        R,
        "one feature per position 0..31, each firing on that position alone: a run of length "
        "one is one contiguous run, and together they cover the context",
        None,
    ),
    (
        "windows5",
        "tiling",
        R,
        "5-wide windows every 4 positions (0-4, 4-8, ..., 28-31): single runs, full cover",
        None,
    ),
    (
        "two_runs",
        "tiling",
        NR,
        "every positional feature fires on two separated 3-wide runs (gap >= 2); they do "
        "cover 0..31, so only the 'one contiguous run' part fails, and it fails for all of them",
        None,
    ),
    # ------------------------------------------------------------------ 4. decoder_traces_helix
    (
        "standard",
        "decoder_traces_helix",
        R,
        "each positional decoder IS the unit W_pos row at its peak position",
        None,
    ),
    ("standard_rotated", "decoder_traces_helix", R, "rotation invariance", None),
    (
        "permuted",
        "decoder_traces_helix",
        NR,
        "decoders permuted among the positional features (encoders, so peaks, "
        "unchanged): the matched W_pos row follows the peak with |Spearman| < 0.2, each 3+ features "
        "away",
        None,
    ),
    ("permuted_rotated", "decoder_traces_helix", NR, "rotation invariance of the negative", None),
    (
        "iid_positional",
        "decoder_traces_helix",
        U,
        "there is no helix (i.i.d. 8-D rows), so 'decoders sit on the "
        "helix' does not apply, even though each decoder is the W_pos row at its peak",
        None,
    ),
    # ------------------------------------------------------------------ 5. token_profiles
    # The lead's decision (issue 27: "counts a token only where it has enough non-positional
    # features to test"):
    # a token is tested only with at least flat_min_features = 2 top non-positional features,
    # so the single-feature
    # worlds are undetermined; the same worlds with 3 token features per token carry the
    # positive and negatives.
    (
        "standard",
        "token_profiles",
        U,
        "each token has one non-positional feature: too few to test a pattern",
        None,
    ),
    (
        "swing",
        "token_profiles",
        U,
        "each token has one non-positional feature: too few to test a pattern",
        None,
    ),
    (
        "standard_multi",
        "token_profiles",
        R,
        "a token's three non-positional features are its own, each exactly "
        "constant at every position",
        None,
    ),
    (
        "swing_multi",
        "token_profiles",
        NR,
        "every token's top non-positional features swing +-30..70% over positions",
        None,
    ),
    (
        "conjunction_multi",
        "token_profiles",
        NR,
        "every token's top non-positional features are zero on 2/3 of "
        "positions and positive on an arc: the opposite of flat",
        None,
    ),
    # ------------------------------------------------------------------ 6. semantic_break
    (
        "standard",
        "semantic_break",
        NR,
        "past rows are orthogonal to every encoder: every token feature's activation "
        "past the context equals its in-context value exactly, and nothing new fires",
        None,
    ),
    (
        "alias",
        "semantic_break",
        NR,
        "past rows are copies of in-context rows (plus noise orthogonal to every "
        "encoder): token features are exactly unchanged, no spurious firing",
        None,
    ),
    (
        "noisy",
        "semantic_break",
        P,
        "own-token activations (exactly 1 at every in-context position) deviate by 68% "
        "on average past the context (range 0..2.8); pre-activations on other tokens stay below -1: "
        "no spurious firing. "
        "One of the two parts of the claim holds",
        None,
    ),
    (
        "spurious",
        "semantic_break",
        R,
        "own-token activations deviate strongly AND token features fire on tokens "
        "they never fire on inside the context: both parts hold",
        None,
    ),
    (
        "blowup",
        "semantic_break",
        R,
        "every encoder reads the unseen past component: noisy and spurious",
        None,
    ),
    (
        "standard_in_context_only",
        "semantic_break",
        U,
        "positions = C: nothing past the context is studied",
        None,
    ),
    # ------------------------------------------------------------------ 9. reconstruction and
    # positional break
    (
        "standard_in_context_only",
        "worse_than_random",
        U,
        "positions = C: no past-context FVU exists",
        None,
    ),
    (
        "standard_in_context_only",
        "degrades_past_context",
        U,
        "positions = C: no past-context FVU exists",
        None,
    ),
    (
        "standard_in_context_only",
        "positional_break",
        U,
        "positions = C: nothing past the context is studied",
        None,
    ),
    (
        "blowup",
        "degrades_past_context",
        R,
        "mean past squared error over 1000x the in-context one (brute force)",
        None,
    ),
    (
        "blowup",
        "worse_than_random",
        R,
        "at every past position and token the SAE's squared error exceeds 2|x|^2, "
        "the expected error of a random vector of the input's norm (brute force)",
        None,
    ),
    (
        "standard",
        "degrades_past_context",
        NR,
        "past rows add at most 0.01 to the squared error of an input whose "
        "in-context reconstruction is already good: no blow-up",
        None,
    ),
    (
        "standard",
        "worse_than_random",
        NR,
        "past error ~0.01-0.03 against a random vector's ~2",
        None,
    ),
    (
        "alias",
        "degrades_past_context",
        NR,
        "past inputs are copies of in-context inputs: same error",
        None,
    ),
    (
        "alias",
        "worse_than_random",
        NR,
        "past inputs are copies of in-context inputs: same error",
        None,
    ),
    (
        "standard",
        "positional_break",
        NR,
        "past the context every positional feature is silent (past rows orthogonal "
        "to every encoder): they do not keep firing, so the SAE does not think it is anywhere",
        None,
    ),
    (
        "alias",
        "positional_break",
        R,
        "past row C+j is a copy of row 4+j: positional features fire exactly as at "
        "4+j, the nearest in-context row; the SAE thinks it is at an earlier position",
        None,
    ),
    (
        "scrambled",
        "positional_break",
        NOT_R,
        "positional features keep firing past the context, but driven by a "
        "component they never saw, at positions unrelated to the nearest in-context row "
        "(brute-force Spearman 0.29, "
        "p = 0.27): the 'thinks it is at the nearest earlier position' half fails",
        None,
    ),
    # ------------------------------------------------------------------ 8. degenerate inputs
    *[
        (
            "dead",
            f,
            U,
            "every bias -100: no feature fires anywhere, so there is nothing to classify, "
            "decompose, tile, "
            "place on the helix or profile",
            None,
        )
        for f in (
            "positional_count",
            "disjoint",
            "tiling",
            "early_positions",
            "decoder_traces_helix",
            "token_profiles",
        )
    ],
    (
        "dead",
        "positional_break",
        U,
        "no positional features exist to keep firing (posfeat: undetermined, 'no positional "
        "feature, so none can break')",
        None,
    ),
    (
        "dead",
        "semantic_break",
        U,
        "no token features exist to get noisy (posfeat: undetermined, 'no semantic feature')",
        None,
    ),
]


def _params():
    for c, f, v, why, xf in EXPECT:
        marks = [pytest.mark.xfail(strict=False, reason=xf)] if xf else []
        yield pytest.param(c, f, v, why, id=f"{c}-{f}", marks=marks)


@pytest.mark.parametrize(("name", "finding", "expected", "why"), list(_params()))
def test_expected_verdict(
    name: str, finding: str, expected: str | tuple[str, ...], why: str
) -> None:
    _, an = run(name)
    got = an.findings[finding]
    ok = got["verdict"] in expected if isinstance(expected, tuple) else got["verdict"] == expected
    assert ok, (
        f"{name} / {finding}: expected {expected!r}, got {got['verdict']!r}\n  planted: "
        f"{CONTROLS[name]}\n"
        f"  why: {why}\n  value: {got['value']}\n  null: {got['null']}\n  evidence: "
        f"{got['evidence']}"
    )


def _numbers(x: Any) -> list[float]:
    if isinstance(x, dict):
        return [v for item in x.values() for v in _numbers(item)]
    if isinstance(x, (list, tuple)):
        return [v for item in x for v in _numbers(item)]
    if isinstance(x, (bool, np.bool_)) or x is None or isinstance(x, str):
        return []
    try:
        return [float(x)]
    except (TypeError, ValueError):
        return []


@pytest.mark.parametrize("name", list(CONTROLS))
def test_no_positive_verdict_on_a_missing_null(name: str) -> None:
    """Issue item 7, over every control: a 'reproduced' or 'partly' verdict rests on a comparison
    with its null, so every number in that finding's null must be finite, and its evidence must not
    say 'n/a'. Every verdict is one of the four."""
    _, an = run(name)
    bad = []
    for key, fd in an.findings.items():
        assert fd["verdict"] in VERDICTS, (key, fd["verdict"])
        if fd["verdict"] in (R, P):
            nonfinite = [v for v in _numbers(fd["null"]) if not math.isfinite(v)]
            if nonfinite or "n/a" in str(fd["evidence"]):
                bad.append(
                    f"{key}: {fd['verdict']} with null {fd['null']} / evidence {fd['evidence']}"
                )
    assert not bad, "\n".join(bad)


# =============================================================================== brute-force truth
def grid(c: Planted) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Inputs x, activations f and reconstructions x_hat over the whole grid [d_vocab, n_ctx,
    ...]."""
    t, p = torch.meshgrid(torch.arange(c.emb.d_vocab), torch.arange(c.emb.n_ctx), indexing="ij")
    with torch.no_grad():
        x = c.emb.inputs(t, p)
        f = c.sae.encode(x)
        xh = c.sae.decode(f)
    return x.double().numpy(), f.double().numpy(), xh.double().numpy()


def shares(a: np.ndarray) -> tuple[float, float, float]:
    """(token, position, interaction) shares of the variance of a [tok, pos] table (two-way
    ANOVA)."""
    mu = a.mean()
    g = a.mean(1, keepdims=True) - mu
    h = a.mean(0, keepdims=True) - mu
    r = a - mu - g - h
    tot = ((a - mu) ** 2).sum()
    return (
        float((g**2).sum() * a.shape[1] / tot),
        float((h**2).sum() * a.shape[0] / tot),
        float((r**2).sum() / tot),
    )


def geometry(W: np.ndarray) -> dict[str, float]:
    """Top-3 PC share, tangent share in those PCs, adjacent-nearest-neighbour share, of rows
    1..C-1."""
    X = W[1:CONTEXT]
    Xc = X - X.mean(0)
    s, vt = np.linalg.svd(Xc, full_matrices=False)[1:]
    top3 = float((s[:3] ** 2).sum() / (s**2).sum())
    d = np.diff(X, axis=0)
    tangent = float(((d @ vt[:3].T) ** 2).sum() / (d**2).sum())
    dist = np.linalg.norm(X[:, None] - X[None], axis=-1) + np.diag(np.full(len(X), np.inf))
    nn = dist.argmin(1)
    adjacent = float(np.mean(np.abs(nn - np.arange(len(X))) == 1))
    return {"top3": top3, "tangent": tangent, "adjacent_nn": adjacent}


HELIXES = [
    "standard",
    "standard_rotated",
    "alias",
    "noisy",
    "spurious",
    "blowup",
    "scrambled",
    "swing",
    "conjunction",
    "singles",
    "windows5",
    "two_runs",
    "permuted",
    "permuted_rotated",
    "dead",
    "topk",
]


@pytest.mark.parametrize("name", HELIXES)
def test_truth_helix(name: str) -> None:
    g = geometry(control(name).emb.W_pos.double().numpy())
    assert g["top3"] > 0.9999 and g["tangent"] > 0.9999 and g["adjacent_nn"] == 1.0, g


@pytest.mark.parametrize("name", ["random_walk0", "random_walk1", "random_walk2"])
def test_truth_random_walk(name: str) -> None:
    g = geometry(control(name).emb.W_pos.double().numpy())
    print(name, g)
    assert g["top3"] > 0.75, g  # the hard negative: the PCA share alone looks like a helix ...
    assert g["tangent"] < 0.3, (
        g
    )  # ... but the steps are isotropic: not a curve in those 3 dimensions


def test_truth_other_wpos() -> None:
    cloud = geometry(control("cloud_3d").emb.W_pos.double().numpy())
    assert cloud["top3"] > 0.9999 and cloud["adjacent_nn"] < 0.3, cloud
    assert geometry(control("iid_full").emb.W_pos.double().numpy())["top3"] < 0.5
    g = geometry(control("iid_positional").emb.W_pos.double().numpy())
    assert g["top3"] < 0.7 and g["adjacent_nn"] < 0.3, g
    W = control("identical_rows").emb.W_pos.numpy()
    assert np.ptp(W, axis=0).max() == 0


WITH_FEATURES = [n for n in HELIXES if n not in ("dead", "topk")] + ["iid_positional"]


@pytest.mark.parametrize("name", WITH_FEATURES)
def test_truth_features(name: str) -> None:
    """Every planted feature does, over the whole in-context grid, exactly what its kind says."""
    c = control(name)
    f = grid(c)[1][:, :CONTEXT]  # [tok, pos, feature]
    for i, (kind, what) in c.kinds.items():
        a = f[:, :, i]
        if kind == "token":
            want = np.zeros_like(a)
            want[what] = 1.0
            np.testing.assert_allclose(a, want, atol=1e-5, err_msg=f"{name} feature {i}")
            assert shares(a)[0] > 0.999
        elif kind == "positional":
            assert np.ptp(a, axis=0).max() < 1e-5, f"{name} feature {i} depends on the token"
            assert sorted(np.nonzero(a[0] > 1e-6)[0].tolist()) == what, (
                name,
                i,
                np.nonzero(a[0])[0],
                what,
            )
            assert shares(a)[1] > 0.999
        elif kind == "swing":
            assert np.all(a[np.arange(D_VOCAB) != what] == 0) and np.all(a[what] > 0)
            rel = (a[what].max() - a[what].min()) / (2 * a[what].mean())
            assert 0.25 < rel < 0.75, rel
            tok, pos, inter = shares(a)
            assert 0.03 < inter < 0.25 and pos + inter > 0.03, (tok, pos, inter)
        elif kind == "conjunction":
            assert np.all(a[np.arange(D_VOCAB) != what] == 0)
            on = np.mean(a[what] > 0)
            assert 0.15 < on < 0.5, on
            assert shares(a)[2] > 0.5, shares(a)
        else:
            raise AssertionError(kind)


def test_truth_rotation_preserves_activations() -> None:
    for a, b in [("standard", "standard_rotated"), ("permuted", "permuted_rotated")]:
        fa, fb = grid(control(a))[1], grid(control(b))[1]
        np.testing.assert_allclose(fa, fb, atol=1e-4)


def _positional(c: Planted) -> list[int]:
    return [i for i, (k, _) in c.kinds.items() if k == "positional"]


def _peaks(c: Planted, f: np.ndarray) -> dict[int, int]:
    return {i: int(np.argmax(f[0, :CONTEXT, i])) for i in _positional(c)}


@pytest.mark.parametrize(
    "name", ["standard", "standard_rotated", "permuted", "permuted_rotated", "iid_positional"]
)
def test_truth_decoders(name: str) -> None:
    """The W_pos row nearest (by cosine) to each positional decoder is its own peak, or a permuted
    one's."""
    c = control(name)
    f = grid(c)[1]
    W = c.emb.W_pos.double().numpy()[:CONTEXT]
    Wn = W / np.linalg.norm(W, axis=1, keepdims=True)
    dec = c.sae.W_dec.double().numpy()
    pos = _positional(c)
    peaks = _peaks(c, f)
    matched = [int(np.argmax(Wn @ dec[i])) for i in pos]
    if "permuted" in name:
        perm = c.truth["permute"]
        assert matched == [peaks[pos[perm[j]]] for j in range(len(pos))]
        rho = spearmanr([peaks[i] for i in pos], matched).statistic
        assert abs(rho) < 0.2, rho
    else:
        assert matched == [peaks[i] for i in pos]


def _spurious(f: np.ndarray) -> int:
    """(token, past position, feature) firings of a feature that never fires on that token inside
    the context."""
    inside = (f[:, :CONTEXT] > 0).any(1)  # [tok, feature]
    return int(((f[:, CONTEXT:] > 0) & ~inside[:, None, :]).sum())


def _own_deviation(c: Planted, f: np.ndarray) -> tuple[float, float]:
    """Mean |own-token activation - its in-context value| of the token features, inside and past."""
    tok = [(i, t) for i, (k, t) in c.kinds.items() if k == "token"]
    own = np.stack([f[t, :, i] for i, t in tok])  # [feature, pos]
    ref = own[:, :CONTEXT].mean(1, keepdims=True)
    return float(np.abs(own[:, :CONTEXT] - ref).mean()), float(
        np.abs(own[:, CONTEXT:] - ref).mean()
    )


def test_truth_past_context() -> None:
    """What each past mode plants, by brute force over the whole grid."""
    # harmless: positional features silent past the context, token features exactly as inside
    c = control("standard")
    x, f, xh = grid(c)
    assert np.all(f[:, CONTEXT:, _positional(c)] == 0)
    assert _own_deviation(c, f) == (0.0, 0.0) and _spurious(f) == 0
    err = ((x - xh) ** 2).sum(-1)
    assert err[:, CONTEXT:].max() < 0.05 and err[:, :CONTEXT].mean() < 0.05
    # alias: past position C+j behaves exactly as position 4+j
    c = control("alias")
    x, f, xh = grid(c)
    alias = c.truth["alias"]
    np.testing.assert_allclose(f[:, CONTEXT:], f[:, alias], atol=1e-5)
    # noisy: own-token activations deviate, nothing spurious (pre-activation on other tokens < 0)
    c = control("noisy")
    f = grid(c)[1]
    inside_dev, past_dev = _own_deviation(c, f)
    assert inside_dev == 0 and past_dev > 0.5 and _spurious(f) == 0, (past_dev, _spurious(f))
    # spurious: deviations and spurious firing
    c = control("spurious")
    f = grid(c)[1]
    assert _own_deviation(c, f)[1] > 0.5 and _spurious(f) > 100, (
        _own_deviation(c, f),
        _spurious(f),
    )
    # blowup: worse than a random vector of the input's norm (expected squared error 2|x|^2) at
    # every past input
    c = control("blowup")
    x, f, xh = grid(c)
    err = ((x - xh) ** 2).sum(-1)
    rnd = 2 * (x**2).sum(-1)
    assert np.all(err[:, CONTEXT:] > rnd[:, CONTEXT:])
    assert err[:, CONTEXT:].mean() > 1000 * err[:, :CONTEXT].mean()
    assert np.all(err[:, :CONTEXT] < 0.1 * rnd[:, :CONTEXT])
    # scrambled: positional features fire past the context, not where the nearest in-context row
    # says
    c = control("scrambled")
    f = grid(c)[1]
    pos = _positional(c)
    peaks = _peaks(c, f)
    fires = f[0, CONTEXT:][:, pos].max(1) > 0
    assert fires.mean() > 0.8
    apparent = [peaks[pos[int(np.argmax(f[0, CONTEXT + j, pos]))]] for j in range(N_CTX - CONTEXT)]
    W = c.emb.W_pos.double().numpy()
    nearest = [
        int(np.argmin(np.linalg.norm(W[:CONTEXT] - W[CONTEXT + j], axis=1)))
        for j in range(N_CTX - CONTEXT)
    ]
    assert nearest == list(c.truth["alias"])
    assert abs(spearmanr(apparent, nearest).statistic) < 0.4


def test_truth_dead() -> None:
    assert np.all(grid(control("dead"))[1] == 0)


def test_truth_two_runs_are_separated() -> None:
    for _, (kind, fire) in control("two_runs").kinds.items():
        if kind == "positional":
            breaks = np.nonzero(np.diff(fire) > 1)[0]
            assert len(breaks) == 1 and fire[breaks[0] + 1] - fire[breaks[0]] >= 3, fire


def test_truth_helix_shape() -> None:
    """1.6 turns over the context: the angle advances 2 pi * 1.6 over 32 positions (period 20)."""
    h = helix_rows(CONTEXT)
    np.testing.assert_allclose(h[20, :2], h[0, :2], atol=1e-12)
    assert np.all(np.diff(h[:, 2]) > 0)
