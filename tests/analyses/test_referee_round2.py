"""Referee, round 2: planted cases the first round of controls does not cover.

Each case is built here from the note's claims and tests/planted.py's helpers, with the truth known
by construction (and re-checked by brute force below where it matters), and the verdict a careful
referee would give is written down with its reason *before* looking at posfeat's rules. Cases:

* look-alikes that share the surface statistic but not the claim (a 2-D circle wound 1.6 times, a
  random walk with GPT-2's decaying step sizes, a curve spread over 10 dimensions, an error that
  ramps smoothly through the context boundary);
* the claim in a less clean form (a noisy helix, 0.5 and 3 turns, GPT-2's real W_pos rows, JumpReLU
  and TopK SAEs, weak token x position mixing, only some token features going noisy, past rows that
  alias with a shift, mixed flat/bent token profiles, many positional features);
* invariances: a random rotation of all of R^d_model changes no verdict; seed 0 and seed 1 agree on
  clear cases.

Verdicts posfeat currently gets wrong are marked ``xfail(strict=False)`` with the reason.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

import posfeat
from planted import (
    CONTEXT,
    D_MODEL,
    D_VOCAB,
    HELIX,
    HOOK,
    N_CTX,
    SPARE,
    helix_rows,
    helix_world,
    orthogonal,
    positional_features,
    token_embeddings,
    token_features,
    unit_rows,
    windows,
)

R, P, NR, U = "reproduced", "partly", "not reproduced", "undetermined"
DATA = Path(__file__).resolve().parents[1] / "data" / "gpt2_wpe_rows0-63.npy"
N_TOK = 24  # token features 0..23 in helix_world's order (then copies, then positional)


# =============================================================================== building blocks
def pair(
    name: str,
    W_E: np.ndarray,
    W_pos: np.ndarray,
    W_enc: np.ndarray,
    W_dec: np.ndarray,
    b_enc: np.ndarray,
    *,
    rotate: int | None = None,
    k: int | None = None,
    threshold: np.ndarray | None = None,
    context: int = CONTEXT,
) -> tuple[Any, Any]:
    """Embeddings and SAE from raw arrays (W_enc [d, n], W_dec [n, d]), optionally rotated."""
    if rotate is not None:
        Q = orthogonal(W_E.shape[1], rotate)
        W_E, W_pos, W_enc, W_dec = W_E @ Q.T, W_pos @ Q.T, Q @ W_enc, W_dec @ Q.T
    f32 = np.float32
    emb = posfeat.Embeddings(
        W_E.astype(f32), W_pos.astype(f32), tokens=[f"t{i}" for i in range(W_E.shape[0])], name=name
    )
    sae = posfeat.SAE.from_arrays(
        W_enc.astype(f32),
        W_dec.astype(f32),
        b_enc.astype(f32),
        np.zeros(W_E.shape[1], f32),
        threshold=None if threshold is None else threshold.astype(f32),
        k=k,
        apply_b_dec_to_input=False,
        context_size=context,
        hook_name=HOOK,
        name=f"{name}-sae",
    )
    return emb, sae


def arrays(c: Any) -> dict[str, np.ndarray]:
    """Canonical (unrotated) arrays of a planted.helix_world, as float64 copies."""
    return {
        "W_E": c.emb.W_E.double().numpy().copy(),
        "W_pos": c.emb.W_pos.double().numpy().copy(),
        "W_enc": c.sae.W_enc.double().numpy().copy(),
        "W_dec": c.sae.W_dec.double().numpy().copy(),
        "b_enc": c.sae.b_enc.double().numpy().copy(),
    }


def from_world(name: str, c: Any, **kw: Any) -> tuple[Any, Any]:
    a = arrays(c)
    return pair(name, a["W_E"], a["W_pos"], a["W_enc"], a["W_dec"], a["b_enc"], **kw)


def tokens_only(name: str, W_pos: np.ndarray, *, rotate: int | None = None) -> tuple[Any, Any]:
    """24 pure token features (planted.token_features) on an arbitrary W_pos: a helix-only case."""
    W_E = token_embeddings()
    feats = token_features(W_E)
    enc = np.stack([f.enc for f in feats], 1)
    dec = np.stack([f.dec for f in feats])
    return pair(name, W_E, W_pos, enc, dec, np.array([f.bias for f in feats]), rotate=rotate)


def in_h(rows: np.ndarray, dims: slice = HELIX) -> np.ndarray:
    out = np.zeros((rows.shape[0], D_MODEL))
    out[:, dims] = rows
    return out


def swing(W_enc: np.ndarray, cols: list[int], alpha: float, seed: int = 3) -> None:
    """Give token-feature columns a helix-plane component: own-token pre-activation 1 + 2 alpha
    cos(theta_p - phi) (times the column's scale), in place; never above zero on other tokens."""
    phis = np.random.default_rng(seed).uniform(0, 2 * np.pi, len(cols))
    for col, phi in zip(cols, phis, strict=True):
        scale = np.linalg.norm(W_enc[:, col]) / 4.0  # planted token encoders are 4 e_t (x scale)
        W_enc[0, col] += 2 * alpha * scale * np.cos(phi)
        W_enc[1, col] += 2 * alpha * scale * np.sin(phi)


# =============================================================================== the cases
def gpt2_rows(n: int = 64, dims: int = 8) -> np.ndarray:
    """GPT-2 small's real W_pos rows 0..n-1, centred on rows 1..63 and projected on their top
    ``dims`` principal components (99%+ of their variance), scaled to a median norm of 1."""
    W = np.load(DATA).astype(np.float64)[:n]
    Wc = W - W[1:].mean(0)
    vt = np.linalg.svd(Wc[1:], full_matrices=False)[2]
    X = Wc @ vt[:dims].T
    return X / np.median(np.linalg.norm(X[1:], axis=1))


def build(name: str, seed: int = 0, rotate: int | None = None) -> tuple[Any, Any, int]:
    """(emb, sae, positions) of case ``name``."""
    rng = np.random.default_rng(100 + seed)
    if name.startswith("helix_noise_"):  # helix + i.i.d. Gaussian noise in H+J (dims 0..7)
        sigma = float(name.rsplit("_", 1)[1])
        W = in_h(helix_rows(N_CTX)) + in_h(rng.normal(scale=sigma, size=(N_CTX, 8)), slice(0, 8))
        return (*tokens_only(name, W, rotate=rotate), CONTEXT)
    if name.startswith("helix_turns_"):
        turns = float(name.rsplit("_", 1)[1])
        return (*tokens_only(name, in_h(helix_rows(N_CTX, turns=turns)), rotate=rotate), CONTEXT)
    if name in ("circle_open", "circle_wound"):  # a circle in dims 0..1: 0.9 or 1.6 turns
        turns = 0.9 if name == "circle_open" else 1.6
        th = 2 * np.pi * turns * np.arange(N_CTX) / CONTEXT
        W = in_h(np.stack([np.cos(th), np.sin(th)], 1), slice(0, 2))
        return (*tokens_only(name, W, rotate=rotate), CONTEXT)
    if name.startswith("walk_gpt2_steps"):  # isotropic directions, GPT-2's step sizes
        steps_gpt2 = np.linalg.norm(np.diff(gpt2_rows(N_CTX + 1), axis=0), axis=1)
        d = unit_rows(N_CTX, 8, np.random.default_rng(int(name[-1])))
        W = in_h(np.cumsum(d * steps_gpt2[:, None], 0), slice(0, 8))
        return (*tokens_only(name, W, rotate=rotate), CONTEXT)
    if name in ("curve10_flat", "curve10_decay"):  # sum of 5 frequencies in dims 0..9
        p = np.arange(N_CTX)
        cols = []
        for f in range(1, 6):
            amp = 1.0 if name == "curve10_flat" else 1.0 / f**2
            th = 2 * np.pi * f * p / 40
            cols += [amp * np.cos(th), amp * np.sin(th)]
        return (*tokens_only(name, in_h(np.stack(cols, 1), slice(0, 10)), rotate=rotate), CONTEXT)
    if name == "gpt2_wpos":  # real GPT-2 rows 0..47 (8 PCs) in dims 0..7, 4-wide windows
        W_pos = in_h(gpt2_rows(N_CTX), slice(0, 8))
        W_E = token_embeddings()
        feats = token_features(W_E) + positional_features(W_pos, windows(4, 3), dims=slice(0, 8))
        enc = np.stack([f.enc for f in feats], 1)
        dec = np.stack([f.dec for f in feats])
        return (
            *pair(name, W_E, W_pos, enc, dec, np.array([f.bias for f in feats]), rotate=rotate),
            CONTEXT,
        )
    if name == "gpt2_rows63":  # GPT-2's rows 0..63 on their top 32 PCs (99.9%), context 64
        W_pos = gpt2_rows(64, 32)
        emb, sae = tokens_only(name, W_pos, rotate=rotate)
        a = {k: getattr(sae, k).double().numpy() for k in ("W_enc", "W_dec", "b_enc")}
        return (
            *pair(name, emb.W_E.double().numpy(), emb.W_pos.double().numpy(), **a, context=64),
            64,
        )
    if name.startswith("walk8_"):  # isotropic Gaussian random walk confined to dims 0..7
        steps = np.random.default_rng(int(name[-1])).normal(scale=0.05, size=(N_CTX, 8))
        return (*tokens_only(name, in_h(np.cumsum(steps, 0), slice(0, 8)), rotate=rotate), CONTEXT)
    if name in ("jumprelu", "jumprelu_alias"):  # same firing sets, activations jump by theta = 0.5
        c = helix_world(name, "", past="alias" if name == "jumprelu_alias" else "harmless")
        a = arrays(c)
        th = np.full(a["b_enc"].shape, 0.5)
        return (
            *pair(
                name,
                a["W_E"],
                a["W_pos"],
                a["W_enc"],
                a["W_dec"],
                a["b_enc"] + th,
                threshold=th,
                rotate=rotate,
            ),
            N_CTX,
        )
    if name == "topk3":  # at most 3 features fire anywhere: k = 3 never binds
        return (*from_world(name, helix_world(name, ""), k=3, rotate=rotate), N_CTX)
    if name == "topk1":  # k = 1 binds: the strongest of token feature and positional features wins
        return (*from_world(name, helix_world(name, ""), k=1, rotate=rotate), N_CTX)
    if name in ("mix_weak", "mix_strong"):  # position dependence ~0.05 or ~0.5 on 24 token features
        a = arrays(helix_world(name, ""))
        swing(a["W_enc"], list(range(N_TOK)), 0.035 if name == "mix_weak" else 0.35)
        return (*pair(name, **a, rotate=rotate), N_CTX)
    if name.startswith("semantic_few"):  # alias past rows + J noise read by only n token features
        n = int(name.rsplit("_", 1)[1])
        a = arrays(helix_world(name, "", past="alias"))
        a["W_pos"][CONTEXT:] += in_h(unit_rows(N_CTX - CONTEXT, 5, rng), SPARE)
        for t in range(n):
            a["W_enc"][:, t] += 2.0 * in_h(unit_rows(1, 5, rng), SPARE)[0]
        return (*pair(name, **a, rotate=rotate), N_CTX)
    if name.startswith("alias_"):  # past row C+j = in-context row m(j) + tiny J noise
        n_past = N_CTX - CONTEXT
        m = {
            "alias_late": 16 + np.arange(n_past),
            "alias_reversed": 30 - np.arange(n_past),
            "alias_shuffled": 1 + np.random.default_rng(7).permutation(30)[:n_past],
            "alias_constant": np.full(n_past, 10),
        }[name]
        a = arrays(helix_world(name, ""))
        a["W_pos"][CONTEXT:] = a["W_pos"][m] + 0.02 * in_h(unit_rows(n_past, 5, rng), SPARE)
        return (*pair(name, **a, rotate=rotate), N_CTX)
    if name == "degrade_ramp":  # alias past rows + an unread J component growing with position
        a = arrays(helix_world(name, "", past="alias"))
        a["W_pos"][:, 3] += 0.02 * np.arange(N_CTX)
        return (*pair(name, **a, rotate=rotate), N_CTX)
    if name in ("profiles_half_bent", "profiles_mixed"):  # 2 token features a token
        a = arrays(helix_world(name, "", copies=2))
        cols = {  # half_bent: tokens 12..23, both features; mixed: every token's copy 1
            "profiles_half_bent": [c * N_TOK + t for c in range(2) for t in range(12, N_TOK)],
            "profiles_mixed": [N_TOK + t for t in range(N_TOK)],
        }[name]
        swing(a["W_enc"], cols, 0.25)
        return (*pair(name, **a, rotate=rotate), N_CTX)
    if name == "count_many":  # 16 positional of 53 live (30%)
        a = arrays(helix_world(name, "", copies=2))
        keep = list(range(N_TOK + 13)) + list(range(2 * N_TOK, 2 * N_TOK + 16))
        return (
            *pair(
                name,
                a["W_E"],
                a["W_pos"],
                a["W_enc"][:, keep],
                a["W_dec"][keep],
                a["b_enc"][keep],
                rotate=rotate,
            ),
            N_CTX,
        )
    if name == "count_few":  # 2 positional of 50 live (4%)
        c = helix_world(name, "", sets=[[0, 1, 2], [5, 6, 7]], copies=2)
        return (*from_world(name, c, rotate=rotate), N_CTX)
    raise KeyError(name)


@cache
def run(name: str, seed: int = 0, rotate: int | None = None) -> Any:
    emb, sae, positions = build(name, rotate=rotate)
    return posfeat.analyze(
        emb, sae, positions=positions, tokens_sample=D_VOCAB, seed=seed, progress=False
    )


# =============================================================================== expected verdicts
# (the lead, after the fixes this round: the 3-turn helix, the confined random walks, GPT-2's rows
# in 32 dimensions, the constant alias and the positional_count flips now get the expected verdicts;
# two cases remain known failures)
XF_WOUND = (
    "posfeat's curve test (the path's chord smoothness against its own steps shuffled) cannot see a "
    "closed curve "
    "traced more than once: the wound circle is smooth and in order locally; docs/findings.md says "
    "so"
)
XF_RAMP = (
    "the null (later against earlier positions of the context at every split) sees an in-context "
    "trend, but a "
    "ramp that keeps rising past C still exceeds it: posfeat cannot tell a trend that continues "
    "past the "
    "context from a break at its end (docs/findings.md says so)"
)

# (case, finding, expected verdict(s), why, xfail reason or None)
EXPECT: list[tuple[str, str, str | tuple[str, ...], str, str | None]] = [
    (
        "helix_noise_0.05",
        "helix",
        R,
        "exact helix + noise of norm ~0.14 in 8 dims (adjacent rows 0.32 "
        "apart): top-3 ~98%, rows still in order, most step variance in the helix's 3 PCs",
        None,
    ),
    (
        "helix_noise_0.5",
        "helix",
        NR,
        "noise of norm ~1.4 in 8 dims swamps a helix of radius 1: top-3 "
        "~60%, rows no longer in order",
        None,
    ),
    (
        "helix_turns_0.5",
        "helix",
        R,
        "half a turn with a rise: a 1-D curve exactly in 3 dims, in order",
        None,
    ),
    (
        "helix_turns_3",
        "helix",
        R,
        "an exact 3-turn helix: 100% in 3 PCs, every step in them",
        None,
    ),
    (
        "circle_open",
        "helix",
        R,
        "0.9 turn of a circle: a 1-D curve in 2 dims traced in order; the "
        "note's statistic (top 3 PCs) holds and a circle is a helix of zero pitch",
        None,
    ),
    (
        "circle_wound",
        "helix",
        NR,
        "a circle wound 1.6 times: rows p and p+20 coincide, so the rows "
        "retrace themselves; 100% in 2 PCs, every step in them, but not a curve traced in order",
        XF_WOUND,
    ),
    (
        "walk_gpt2_steps0",
        "helix",
        NR,
        "isotropic random walk in 8 dims with GPT-2's decaying step sizes: "
        "the first steps dominate, so PCA shares look helix-like, but the steps have no direction",
        None,
    ),
    ("walk_gpt2_steps1", "helix", NR, "as above, another seed", None),
    *[
        (
            f"walk8_{i}",
            "helix",
            NR,
            "isotropic Gaussian random walk (constant step scale) confined to "
            "dims 0..7 of 32: diffusion, no curve; the existing walk controls diffuse in all 32",
            None,
        )
        for i in range(3)
    ],
    (
        "curve10_flat",
        "helix",
        NR,
        "a smooth curve in order but spread evenly over 10 dims (5 "
        "frequencies of equal amplitude): top-3 ~40%, not low-dimensional",
        None,
    ),
    (
        "curve10_decay",
        "helix",
        R,
        "the same curve with amplitudes 1/f^2: ~96% in 3 PCs, in order, "
        "steps mostly in those PCs: a low-dimensional curve in the note's sense",
        None,
    ),
    ("gpt2_wpos", "helix", R, "GPT-2's real rows 1..31 (8 PCs, 99.8%): the note's own helix", None),
    (
        "gpt2_rows63",
        "helix",
        R,
        "GPT-2's real rows 1..63, the note's own check (top 3 PCs 97.3%), "
        "on their top 32 PCs (99.9% of the variance)",
        None,
    ),
    (
        "gpt2_wpos",
        "positional_count",
        P,
        "11 LP window features of 35 live (31%), cleanly separated: a drop, not a small set (the "
        "standard control's verdict)",
        None,
    ),
    ("gpt2_wpos", "disjoint", R, "pure token features and LP positional features", None),
    (
        "gpt2_wpos",
        "tiling",
        R,
        "4-wide windows every 3 positions on GPT-2's rows, covering 0..31",
        None,
    ),
    (
        "gpt2_wpos",
        "decoder_traces_helix",
        R,
        "each decoder is the unit W_pos row at its peak",
        None,
    ),
    *[
        (
            "jumprelu",
            f,
            v,
            "JumpReLU (theta 0.5, bias raised by 0.5): the standard world's firing sets, "
            "activations shifted by 0.5 where firing; the standard control's verdict",
            None,
        )
        for f, v in [
            ("helix", R),
            ("disjoint", R),
            ("tiling", R),
            ("decoder_traces_helix", R),
            ("positional_break", NR),
            ("semantic_break", NR),
            ("degrades_past_context", NR),
            ("worse_than_random", NR),
        ]
    ],
    ("jumprelu_alias", "positional_break", R, "JumpReLU, past row C+j a copy of row 4+j", None),
    ("jumprelu_alias", "semantic_break", NR, "JumpReLU, past rows copies of in-context rows", None),
    *[
        (
            "topk3",
            f,
            v,
            "TopK with k = 3 never binds here (at most 1 token + 2 positional features fire): "
            "the standard control's verdict",
            None,
        )
        for f, v in [
            ("helix", R),
            ("disjoint", R),
            ("tiling", R),
            ("decoder_traces_helix", R),
            ("positional_break", NR),
            ("semantic_break", NR),
        ]
    ],
    (
        "topk1",
        "disjoint",
        (P, NR),
        "TopK with k = 1 binds: where a positional feature is stronger than "
        "the token feature (activation 1) it wins on every token, so token features switch "
        "off at those positions: they depend on token AND position",
        None,
    ),
    (
        "mix_weak",
        "disjoint",
        R,
        "token features' own-token activation 1 +- 0.07 over positions "
        "(position dependence ~0.05): almost entirely a function of token, as the note allows",
        None,
    ),
    ("mix_strong", "disjoint", NR, "24 of 40 live features with position dependence ~0.5", None),
    (
        "semantic_few_3",
        "semantic_break",
        (P, NR),
        "3 of 24 token features deviate by ~68% past the "
        "context, the other 21 not at all, nothing spurious: the claim holds for a few "
        "features only",
        None,
    ),
    (
        "semantic_few_8",
        "semantic_break",
        P,
        "8 of 24 token features deviate by ~68% (mean over "
        "features ~23%), nothing spurious: the noisy half of the claim holds, the spurious one not",
        None,
    ),
    ("alias_late", "positional_break", R, "past row C+j a copy of row 16+j", None),
    (
        "alias_reversed",
        "positional_break",
        R,
        "past row C+j a copy of row 30-j: the SAE thinks it is at "
        "the nearest earlier position, walking backwards",
        None,
    ),
    (
        "alias_shuffled",
        "positional_break",
        R,
        "past rows copies of in-context rows in shuffled order: "
        "at each past position the SAE thinks it is at that row's position",
        None,
    ),
    (
        "alias_constant",
        "positional_break",
        (R, U),
        "every past row a copy of row 10: the SAE thinks it "
        "is at position 10 everywhere past the context; exactly the claim, though a rank "
        "correlation with a constant is undefined",
        None,
    ),
    (
        "degrade_ramp",
        "degrades_past_context",
        (P, NR),
        "the squared error grows as (0.02 p)^2 from "
        "position 0 through 47 with no break at the context's end: past the context it is "
        "larger, but it is the in-context trend continued, not a blow-up beyond the training "
        "context",
        XF_RAMP,
    ),
    ("degrade_ramp", "worse_than_random", NR, "the error stays far below a random vector's", None),
    (
        "profiles_half_bent",
        "token_profiles",
        P,
        "half the tokens have two flat token features, the "
        "other half two features that swing +-50% over positions: the claim holds for half",
        None,
    ),
    (
        "profiles_mixed",
        "token_profiles",
        (P, NR),
        "each token's features: one flat, one swinging "
        "+-50%: half of every token's top token features is not flat",
        None,
    ),
    (
        "count_many",
        "positional_count",
        (P, NR),
        "16 of 53 live features (30%) are positional, cleanly "
        "separated: a drop, but not a small set",
        None,
    ),
    (
        "count_few",
        "positional_count",
        R,
        "2 of 50 live features (4%) positional, scores 1 vs 1/24",
        None,
    ),
]


def _params() -> Any:
    for case, finding, want, why, xf in EXPECT:
        marks = [pytest.mark.xfail(strict=False, reason=xf)] if xf else []
        yield pytest.param(case, finding, want, why, id=f"{case}-{finding}", marks=marks)


@pytest.mark.parametrize(("case", "finding", "expected", "why"), list(_params()))
def test_expected_verdict(
    case: str, finding: str, expected: str | tuple[str, ...], why: str
) -> None:
    got = run(case).findings[finding]
    ok = got["verdict"] in expected if isinstance(expected, tuple) else got["verdict"] == expected
    assert ok, (
        f"{case} / {finding}: expected {expected!r}, got {got['verdict']!r}\n  why: {why}\n"
        f"  value: {got['value']}\n  null: {got['null']}\n  evidence: {got['evidence']}"
    )


# =============================================================================== invariances
ROTATED = [
    "helix_noise_0.05",
    "gpt2_wpos",
    "jumprelu_alias",
    "mix_weak",
    "circle_wound",
    "semantic_few_8",
]


@pytest.mark.parametrize("case", ROTATED)
def test_rotation_changes_no_verdict(case: str) -> None:
    """A random orthogonal rotation of all of R^32 preserves every activation and every distance."""
    a, b = run(case).findings, run(case, rotate=11).findings
    diff = {k: (a[k]["verdict"], b[k]["verdict"]) for k in a if a[k]["verdict"] != b[k]["verdict"]}
    assert not diff, diff


SEEDED = [
    "helix_noise_0.05",
    "gpt2_wpos",
    "jumprelu_alias",
    "mix_weak",
    "alias_shuffled",
    "semantic_few_8",
    "profiles_half_bent",
    "count_few",
    "walk8_0",
]


@pytest.mark.parametrize("case", SEEDED)
def test_seed_changes_no_verdict(case: str) -> None:
    """Seeds 0 and 1 draw different nulls; on these cases every value is far from its null."""
    a, b = run(case).findings, run(case, seed=1).findings
    diff = {k: (a[k]["verdict"], b[k]["verdict"]) for k in a if a[k]["verdict"] != b[k]["verdict"]}
    assert not diff, diff


# =============================================================================== the planted truth
def geometry(W: np.ndarray, context: int = CONTEXT) -> dict[str, float]:
    """Top-3 PC share of rows 1..C-1 and the share of their steps' energy in those PCs."""
    X = W[1:context] - W[1:context].mean(0)
    s, vt = np.linalg.svd(X, full_matrices=False)[1:]
    d = np.diff(W[1:context], axis=0)
    return {
        "top3": float((s[:3] ** 2).sum() / (s**2).sum()),
        "tangent": float(((d @ vt[:3].T) ** 2).sum() / (d**2).sum()),
    }


def encode_grid(emb: Any, sae: Any) -> np.ndarray:
    t, p = torch.meshgrid(torch.arange(emb.d_vocab), torch.arange(emb.n_ctx), indexing="ij")
    with torch.no_grad():
        return sae.encode(emb.inputs(t, p)).double().numpy()


def test_truth_helix_look_alikes() -> None:
    g = geometry(build("walk8_0")[0].W_pos.double().numpy())
    assert g["top3"] > 0.85 and g["tangent"] < 0.6, g  # helix-like PCA, steps not confined to it
    W = build("helix_turns_3")[0].W_pos.double().numpy()[1:CONTEXT]
    assert geometry(build("helix_turns_3")[0].W_pos.double().numpy())["top3"] > 0.9999
    dist = np.linalg.norm(W[:, None] - W[None], axis=-1) + np.diag(np.full(len(W), np.inf))
    assert np.mean(np.abs(dist.argmin(1) - np.arange(len(W))) > 2) > 0.9  # next turn is nearer
    W = build("circle_wound")[0].W_pos.double().numpy()
    np.testing.assert_allclose(W[1:12], W[21:32], atol=1e-6)  # p and p + 20 coincide
    g = geometry(build("curve10_flat")[0].W_pos.double().numpy())
    assert g["top3"] < 0.5, g
    g = geometry(build("gpt2_rows63")[0].W_pos.double().numpy(), 64)
    assert g["top3"] > 0.97, g


def test_truth_mixing_and_topk() -> None:
    """mix_weak: position dependence ~0.05; mix_strong ~0.5; topk1: token features off at ~half of
    the positions; jumprelu and topk3 fire exactly where the standard world does."""
    for case, lo, hi in [("mix_weak", 0.03, 0.07), ("mix_strong", 0.3, 0.6)]:
        f = encode_grid(*build(case)[:2])[:, :CONTEXT]
        own = np.stack([f[t, :, t] for t in range(N_TOK)])
        dep = own.std(1) / np.sqrt((own**2).mean(1))
        assert lo < np.median(dep) < hi, dep
    f = encode_grid(*build("topk1")[:2])[:, :CONTEXT]
    own = np.stack([f[t, :, t] for t in range(N_TOK)])
    assert 0.3 < (own > 0).mean() < 0.7
    ref = encode_grid(*build("topk3")[:2]) > 0
    for case in ("jumprelu", "topk3"):
        np.testing.assert_array_equal(encode_grid(*build(case)[:2]) > 0, ref)


def test_truth_past_context() -> None:
    """semantic_few_n: exactly n token features deviate past the context, nothing spurious;
    alias_constant: positional features fire past the context exactly as at position 10;
    degrade_ramp: the squared error rises smoothly through the context's end."""
    for n in (3, 8):
        f = encode_grid(*build(f"semantic_few_{n}")[:2])
        own = np.stack([f[t, :, t] for t in range(N_TOK)])
        dev = np.abs(own[:, CONTEXT:] - own[:, :CONTEXT].mean(1, keepdims=True)).mean(1)
        assert np.all(own[:, :CONTEXT] == own[:, :1]) and (dev > 0.1).sum() == n, dev
        inside = (f[:, :CONTEXT] > 0).any(1)
        assert not ((f[:, CONTEXT:] > 0) & ~inside[:, None]).any()
    f = encode_grid(*build("alias_constant")[:2])
    np.testing.assert_allclose(
        f[:, CONTEXT:, N_TOK:], f[:, [10] * (N_CTX - CONTEXT), N_TOK:], atol=1e-3
    )
    emb, sae, _ = build("degrade_ramp")
    t, p = torch.meshgrid(torch.arange(emb.d_vocab), torch.arange(emb.n_ctx), indexing="ij")
    with torch.no_grad():
        x = emb.inputs(t, p)
        err = ((x - sae.decode(sae.encode(x))) ** 2).sum(-1).mean(0).double().numpy()
    steps = np.diff(err)
    assert steps[CONTEXT - 1] < np.abs(steps[: CONTEXT - 1]).max(), steps  # no break at C
    assert np.all(err[CONTEXT:] < 1.2 * (0.02 * np.arange(CONTEXT, N_CTX)) ** 2 + 0.05)
    assert abs(spearmanr(np.arange(N_CTX), err).statistic) > 0.95


@pytest.mark.parametrize("case", ["helix_noise_0.5", "helix_turns_3", "curve10_flat"])
def test_helix_evidence_does_not_claim_failed_tests_passed(case: str) -> None:
    # (the lead: the 3-turn helix is now reproduced, as the main table expects; the evidence must
    # say which tests passed, never that all did when one failed)
    fd = run(case).findings["helix"]
    assert "all three tests passed" not in fd["evidence"], fd["evidence"]
    if fd["verdict"] == NR:
        assert "Both tests pass" not in fd["evidence"], fd["evidence"]
