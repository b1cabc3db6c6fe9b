"""Planted controls: small Embeddings/SAE pairs whose truth is known by construction.

Each control is built *independently of posfeat's verdict rules*, from the note's claims alone
(Chughtai & Lau 2024, "Understanding Positional Features in Layer 0 SAEs"), so the verdict a careful
referee expects for it can be written down before the tool is run. ``tests/analyses/
test_planted_controls.py`` asserts those verdicts and re-checks every planted truth by brute force
(``sae.encode(emb.inputs(tok, pos))`` over the whole grid, with numpy), so a control cannot silently
be wrong.

The canonical world (before an optional random rotation of the whole of R^d_model, which preserves
every inner product and so every finding):

* ``d_model = 32``: dims 0..2 are the *helix* space H, dims 3..7 the *spare* space J, dims 8..31 the
  *token* space T.
* ``d_vocab = 24``: ``W_E[t] = e_{8+t}`` (orthonormal, unit-norm token embeddings in T).
* the SAE's context is ``C = 32`` and ``n_ctx = 48``: positions 32..47 lie past the context.
* in-context ``W_pos`` rows 0..31 lie in H (or in H+J for the no-helix controls), so they are
  orthogonal to every token embedding; past-context rows are set by a *past mode* (below).
* token feature ``t``: encoder ``4 e_{8+t}``, bias ``-3``, decoder ``e_{8+t}``: pre-activation is
  ``+1`` on token t and ``-3`` on every other token at every in-context position, so it fires with
  activation exactly 1 on its token and nowhere else, and reconstructs the token exactly. The wide
  margin below zero leaves room for past-context noise that is not spurious firing.
* positional feature: encoder in H (or H+J), found by a max-margin linear program so that it fires
  (for every token alike) on exactly a designed set of in-context positions; decoder = the unit
  W_pos row at its peak position; a common scale makes the positional part reconstruct well.

Past modes (rows C..n_ctx-1):

* ``harmless``: ``0.1 x`` a random unit vector of J, and no encoder has a J component: every
  encoder is orthogonal to every past row, so past the context positional features are silent and
  token features are exactly as inside; reconstruction error changes by ``0.01`` per input.
* ``alias``: ``W_pos[C+j] = W_pos[4+j] + 0.02 x`` (J noise orthogonal to every encoder): the past
  positions are copies of the in-context positions 4..19, so positional features fire there exactly
  as at position ``4+j`` (the SAE "thinks" it is at position 4+j, the nearest in-context row).
* ``noisy``: ``alias`` plus ``g v_j`` (v_j a random unit vector of J) and token encoders given a J
  component ``e u_t`` with ``g e = 2``: a token feature's own-token pre-activation moves by ``2
  <v_j, u_t>`` (|.| < 2), so its activation on its token (1 inside) ranges over 0..3 past the
  context, while its pre-activation on any other token stays below ``-3 + 2 < 0``: no spurious
  firing.
* ``spurious``: as ``noisy`` with ``g e = 6``: activations swing further and token features fire on
  tokens they never fire on inside the context (wherever ``<v_j, u_t> > 1/2``).
* ``blowup``: ``alias`` plus ``4 v_j``, and *every* encoder given a random J component of norm 3:
  past inputs carry a large component the SAE never saw, many features fire with large activations
  along decoders that do not contain it, and the reconstruction error exceeds a random vector's.
* ``scrambled``: as ``blowup`` but only the *positional* encoders get J components: past the context
  positional features keep firing, driven by the unseen component, at positions unrelated to the
  nearest in-context row (which is still the alias row 4+j: the J part is equidistant from all).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.optimize import linprog

from posfeat import SAE, Embeddings

D_MODEL = 32
CONTEXT = 32
N_CTX = 48
D_VOCAB = 24
HELIX = slice(0, 3)
SPARE = slice(3, 8)
TOKEN0 = 8
TURNS = 1.6
ALIAS_START = 4
HOOK = "blocks.0.hook_resid_pre"


@dataclass
class Planted:
    """One control: the pair, how to analyse it, and what was planted."""

    name: str
    emb: Embeddings
    sae: SAE
    doc: str
    positions: int = N_CTX
    #: feature index -> ("token", t) | ("positional", sorted in-context positions) | ("mixed", t) |
    # ...
    kinds: dict[int, tuple[str, Any]] = field(default_factory=dict)
    #: anything else the sanity tests need (alias map, permutation, ...)
    truth: dict[str, Any] = field(default_factory=dict)


# ----------------------------------------------------------------------------- geometry
def helix_rows(n: int = N_CTX, context: int = CONTEXT, turns: float = TURNS) -> np.ndarray:
    """[n, 3] rows of a helix: (cos, sin, linear rise from -0.6 to 0.6 over the context).

    ``turns`` turns over the context (1.6: period 20 positions for C = 32). Adjacent rows are 0.32
    apart; rows one turn apart are 0.77 apart, so every row's nearest neighbours are its neighbours
    in order, and every row is an extreme point (single positions are linearly separable).
    """
    p = np.arange(n)
    theta = 2 * np.pi * turns * p / context
    return np.stack([np.cos(theta), np.sin(theta), 1.2 * p / (context - 1) - 0.6], 1)


def separate(X: np.ndarray, fire: list[int] | np.ndarray) -> tuple[np.ndarray, float, float]:
    """Max-margin ``(w, b, margin)`` with ``X[q] @ w + b >= margin`` for q in ``fire`` and
    ``<= -margin`` for every other row (box |w_i| <= 1); margin <= 0 means not separable."""
    n, d = X.shape
    sign = -np.ones(n)
    sign[np.asarray(fire)] = 1
    A = np.concatenate([-sign[:, None] * X, -sign[:, None], np.ones((n, 1))], 1)
    res = linprog(
        c=np.r_[np.zeros(d + 1), -1.0],
        A_ub=A,
        b_ub=np.zeros(n),
        bounds=[(-1, 1)] * d + [(None, None), (None, 1)],
        method="highs",
    )
    assert res.status == 0, res.message
    return res.x[:d], float(res.x[d]), float(res.x[-1])


def orthogonal(d: int, seed: int) -> np.ndarray:
    q, r = np.linalg.qr(np.random.default_rng(seed).normal(size=(d, d)))
    return q * np.sign(np.diag(r))


def unit_rows(n: int, d: int, rng: np.random.Generator) -> np.ndarray:
    v = rng.normal(size=(n, d))
    return v / np.linalg.norm(v, axis=1, keepdims=True)


# ----------------------------------------------------------------------------- assembly
@dataclass
class _Feat:
    enc: np.ndarray
    bias: float
    dec: np.ndarray
    kind: tuple[str, Any]


def _embed(rows: np.ndarray, dims: slice) -> np.ndarray:
    out = np.zeros((rows.shape[0], D_MODEL))
    out[:, dims] = rows
    return out


def token_embeddings() -> np.ndarray:
    W_E = np.zeros((D_VOCAB, D_MODEL))
    W_E[np.arange(D_VOCAB), TOKEN0 + np.arange(D_VOCAB)] = 1.0
    return W_E


def token_features(W_E: np.ndarray) -> list[_Feat]:
    """One pure token feature per token: +1 on its token, -3 on every other (any in-context
    position)."""
    return [_Feat(4 * W_E[t], -3.0, W_E[t].copy(), ("token", t)) for t in range(W_E.shape[0])]


def positional_features(
    W_pos: np.ndarray, sets: list[list[int]], dims: slice = HELIX, context: int = CONTEXT
) -> list[_Feat]:
    """Pure positional features firing (for every token) on exactly ``sets[i]`` of the context.

    Encoder: the max-margin separator of ``sets[i]`` on the in-context W_pos rows (within ``dims``);
    decoder: the unit W_pos row at the feature's peak position; a common positive scale (ReLU is
    positively homogeneous, so firing sets are unchanged) minimises the positional reconstruction
    error."""
    X = W_pos[:context, dims]
    feats = []
    for s in sets:
        w, b, margin = separate(X, s)
        assert margin > 1e-3, f"positions {s} are not linearly separable on these rows"
        act = np.maximum(X @ w + b, 0)
        w, b = w / act.max(), b / act.max()
        peak = int(np.argmax(X @ w + b))
        enc = np.zeros(D_MODEL)
        enc[dims] = w
        dec = W_pos[peak] / np.linalg.norm(W_pos[peak])
        feats.append(_Feat(enc, b, dec, ("positional", sorted(int(q) for q in s))))
    acts = np.stack([np.maximum(W_pos[:context] @ f.enc + f.bias, 0) for f in feats], 1)  # [C, n]
    recon = acts @ np.stack([f.dec for f in feats])
    scale = float(np.sum(recon * W_pos[:context]) / np.sum(recon * recon))
    for f in feats:
        f.enc, f.bias = f.enc * scale, f.bias * scale
    return feats


def past_rows(
    W_pos_ctx: np.ndarray, mode: str, feats: list[_Feat], seed: int
) -> tuple[np.ndarray, dict[str, Any]]:
    """Rows C..n_ctx-1 for a past mode (module docstring); may give encoders J components (in
    place)."""
    rng = np.random.default_rng(seed + 1000)
    n_past = N_CTX - CONTEXT
    v = _embed(unit_rows(n_past, 5, rng), SPARE)
    alias = ALIAS_START + np.arange(n_past)
    info: dict[str, Any] = {"mode": mode, "alias": alias if mode != "harmless" else None}
    if mode == "harmless":
        return 0.1 * v, info
    base = W_pos_ctx[alias] + 0.02 * _embed(unit_rows(n_past, 5, rng), SPARE)
    if mode == "alias":
        return base, info
    if mode in ("noisy", "spurious"):
        ge = 2.0 if mode == "noisy" else 6.0
        for f in feats:
            if f.kind[0] == "token":
                f.enc = f.enc + ge * _embed(unit_rows(1, 5, rng), SPARE)[0]
        return base + v, info
    if mode == "blowup":
        for f in feats:
            f.enc = f.enc + 3.0 * _embed(unit_rows(1, 5, rng), SPARE)[0]
        return base + 4.0 * v, info
    if mode == "scrambled":
        for f in feats:
            if f.kind[0] == "positional":
                f.enc = f.enc + 2.0 * _embed(unit_rows(1, 5, rng), SPARE)[0]
        return base + 4.0 * v, info
    raise ValueError(mode)


def assemble(
    name: str,
    doc: str,
    W_E: np.ndarray,
    W_pos: np.ndarray,
    feats: list[_Feat],
    *,
    rotate: int | None = None,
    k: int | None = None,
    positions: int = N_CTX,
    truth: dict[str, Any] | None = None,
) -> Planted:
    """The pair in canonical coordinates, optionally rotated by a random orthogonal matrix."""
    enc = np.stack([f.enc for f in feats], 1)
    dec = np.stack([f.dec for f in feats])
    if rotate is not None:
        Q = orthogonal(D_MODEL, rotate)
        W_E, W_pos, enc, dec = W_E @ Q.T, W_pos @ Q.T, Q @ enc, dec @ Q.T
    f32 = np.float32
    emb = Embeddings(
        W_E.astype(f32), W_pos.astype(f32), tokens=[f"t{i}" for i in range(W_E.shape[0])], name=name
    )
    sae = SAE.from_arrays(
        enc.astype(f32),
        dec.astype(f32),
        np.array([f.bias for f in feats], dtype=f32),
        np.zeros(D_MODEL, dtype=f32),
        k=k,
        apply_b_dec_to_input=False,
        context_size=CONTEXT,
        hook_name=HOOK,
        name=f"{name}-sae",
    )
    return Planted(
        name, emb, sae, doc, positions, {i: f.kind for i, f in enumerate(feats)}, dict(truth or {})
    )


# ----------------------------------------------------------------------------- position sets
def windows(width: int, stride: int, context: int = CONTEXT) -> list[list[int]]:
    return [
        list(range(s, min(s + width, context)))
        for s in range(0, context - width + stride, stride)
        if s < context
    ]


#: Pairs of 3-wide runs (centred at a and b) that are linearly separable together on the helix
#: (found by the max-margin LP) and together cover all of 0..31; each pair has a gap of >= 2.
TWO_RUN_CENTRES = [(1, 21), (4, 24), (7, 27), (10, 30), (13, 30), (16, 30), (1, 19)]


def two_runs() -> list[list[int]]:
    out = []
    for a, b in TWO_RUN_CENTRES:
        out.append(sorted({q for c in (a, b) for q in (c - 1, c, c + 1) if 0 <= q < CONTEXT}))
    return out


# ----------------------------------------------------------------------------- the helix world
def helix_world(
    name: str,
    doc: str,
    *,
    sets: list[list[int]] | None = None,
    past: str = "harmless",
    rotate: int | None = None,
    k: int | None = None,
    positions: int = N_CTX,
    dead: bool = False,
    permute: list[int] | None = None,
    mixed: str | None = None,
    seed: int = 0,
    copies: int = 1,
) -> Planted:
    """Helix W_pos in H, orthonormal tokens in T, 24 pure token features + positional features on
    ``sets`` (default: 3-wide windows every 2 positions, 16 features), past rows per ``past``.

    ``permute``: permute the positional features' decoders among themselves (encoders unchanged).
    ``mixed="swing"``: token features whose own-token activation swings with position;
    ``mixed="conjunction"``: token features that fire only on their token AND within an arc of
    positions. ``dead``: every bias -100 (nothing fires anywhere). ``copies``: each token feature
    repeated ``copies`` times, copy ``c`` scaled by ``1 - 0.2 c`` (ReLU is positively
    homogeneous: the same firing set and shape, a smaller activation), so each token has ``copies``
    top token features."""
    W_E = token_embeddings()
    W_pos_ctx = _embed(helix_rows(CONTEXT), HELIX)
    pos = positional_features(W_pos_ctx, sets if sets is not None else windows(3, 2))
    tok = token_features(W_E)
    truth: dict[str, Any] = {}
    rng = np.random.default_rng(seed + 7)
    if mixed is not None:
        phis = rng.uniform(0, 2 * np.pi, D_VOCAB)
        alphas = np.linspace(0.15, 0.35, D_VOCAB) if mixed == "swing" else np.ones(D_VOCAB)
        for t, f in enumerate(tok):
            v = np.zeros(D_MODEL)
            v[:2] = np.cos(phis[t]), np.sin(phis[t])
            # swing: own-token pre-activation 1 + 2 alpha cos(theta_p - phi), elsewhere <= -2.3
            f.enc = f.enc + 2 * alphas[t] * v
            if mixed == "conjunction":
                # own token: 2 cos(theta_p - phi) - 1 > 0 only where cos > 1/2; elsewhere <= -3
                f.bias = -5.0
            f.kind = (mixed, t)
        truth["phis"], truth["alphas"] = phis, alphas
    tok = tok + [
        _Feat(f.enc * (1 - 0.2 * c), f.bias * (1 - 0.2 * c), f.dec.copy(), f.kind)
        for c in range(1, copies)
        for f in tok
    ]
    if permute is not None:
        decs = [f.dec for f in pos]
        for i, f in enumerate(pos):
            f.dec = decs[permute[i]]
        truth["permute"] = list(permute)
    feats = tok + pos
    W_past, info = past_rows(W_pos_ctx, past, feats, seed)
    truth.update(info)
    if dead:
        for f in feats:
            f.bias = -100.0
    W_pos = np.concatenate([W_pos_ctx, W_past])
    return assemble(
        name, doc, W_E, W_pos, feats, rotate=rotate, k=k, positions=positions, truth=truth
    )


def other_wpos_world(
    name: str,
    doc: str,
    W_pos: np.ndarray,
    *,
    pos_dims: slice | None = None,
    sets: list[list[int]] | None = None,
) -> Planted:
    """Token features plus (optionally) LP positional features on an arbitrary W_pos (past rows
    included)."""
    W_E = token_embeddings()
    feats = token_features(W_E)
    if sets:
        feats += positional_features(W_pos, sets, dims=pos_dims or HELIX)
    return assemble(name, doc, W_E, W_pos, feats)


# ----------------------------------------------------------------------------- the controls
def low_spearman_permutation(n: int, seed: int = 0) -> list[int]:
    """A seeded permutation of range(n) whose Spearman correlation with the identity is below 0.2
    in absolute value and that moves every element at least 3 places."""
    rng = np.random.default_rng(seed)
    idx = np.arange(n)
    while True:
        perm = rng.permutation(n)
        rho = np.corrcoef(idx, perm)[
            0, 1
        ]  # ranks of a permutation are the permutation: Pearson = Spearman
        if abs(rho) < 0.2 and np.all(np.abs(perm - idx) >= 3):
            return [int(x) for x in perm]


def control(name: str) -> Planted:
    """Build the control ``name`` (see CONTROLS for what each plants)."""
    doc = CONTROLS[name]
    rng = np.random.default_rng(12345)
    if name == "standard":
        return helix_world(name, doc)
    if name == "standard_rotated":
        return helix_world(name, doc, rotate=1)
    if name == "standard_in_context_only":
        return helix_world(name, doc, positions=CONTEXT)
    if name == "alias":
        return helix_world(name, doc, past="alias")
    if name == "noisy":
        return helix_world(name, doc, past="noisy")
    if name == "spurious":
        return helix_world(name, doc, past="spurious")
    if name == "blowup":
        return helix_world(name, doc, past="blowup")
    if name == "scrambled":
        return helix_world(name, doc, past="scrambled")
    if name == "swing":
        return helix_world(name, doc, mixed="swing")
    if name == "standard_multi":
        return helix_world(name, doc, copies=3)
    if name == "swing_multi":
        return helix_world(name, doc, mixed="swing", copies=3)
    if name == "conjunction_multi":
        return helix_world(name, doc, mixed="conjunction", copies=3)
    if name == "conjunction":
        return helix_world(name, doc, mixed="conjunction")
    if name == "singles":
        return helix_world(name, doc, sets=[[q] for q in range(CONTEXT)])
    if name == "windows5":
        return helix_world(name, doc, sets=windows(5, 4))
    if name == "two_runs":
        return helix_world(name, doc, sets=two_runs())
    if name == "permuted":
        return helix_world(name, doc, permute=low_spearman_permutation(len(windows(3, 2))))
    if name == "permuted_rotated":
        return helix_world(
            name, doc, permute=low_spearman_permutation(len(windows(3, 2))), rotate=1
        )
    if name == "dead":
        return helix_world(name, doc, dead=True)
    if name == "topk":
        return helix_world(name, doc, k=3)
    if name.startswith("random_walk"):
        seed = int(name[-1])
        steps = np.random.default_rng(seed).normal(scale=0.05, size=(N_CTX, D_MODEL))
        return other_wpos_world(name, doc, np.cumsum(steps, 0))
    if name == "cloud_3d":
        basis = orthogonal(D_MODEL, 5)[:, :3]
        return other_wpos_world(name, doc, rng.normal(scale=0.3, size=(N_CTX, 3)) @ basis.T)
    if name == "iid_full":
        return other_wpos_world(
            name, doc, rng.normal(scale=0.3 / np.sqrt(D_MODEL / 3), size=(N_CTX, D_MODEL))
        )
    if name == "iid_positional":
        W_pos = np.zeros((N_CTX, D_MODEL))
        W_pos[:, :8] = rng.normal(scale=0.5, size=(N_CTX, 8))
        return other_wpos_world(
            name, doc, W_pos, pos_dims=slice(0, 8), sets=[[q] for q in range(1, CONTEXT, 2)]
        )
    if name == "identical_rows":
        W_pos = np.zeros((N_CTX, D_MODEL))
        W_pos[:, 0] = 0.5
        return other_wpos_world(name, doc, W_pos)
    raise KeyError(name)


#: name -> what it plants (the expected verdicts and the reasons live in the test file).
CONTROLS: dict[str, str] = {
    "standard": "helix W_pos on coordinate axes; 24 pure token features; 16 pure positional "
    "features "
    "(3-wide windows every 2 positions, decoder = unit W_pos row at the peak); harmless past rows",
    "standard_rotated": "'standard' with all of R^32 rotated by a random orthogonal matrix",
    "standard_in_context_only": "'standard' analysed with positions = C: nothing past the context "
    "is studied",
    "alias": "'standard' with past rows = copies of in-context rows 4..19 (+ noise orthogonal to "
    "every encoder)",
    "noisy": "'alias' + past J components that move token features' own-token activation, never "
    "above zero elsewhere",
    "spurious": "'noisy' with 3x larger J coupling: token features also fire on tokens they never "
    "fire on inside",
    "blowup": "'alias' + large past J components (norm 4) and every encoder given a J component of "
    "norm 3",
    "scrambled": "'alias' + large past J components read only by the positional encoders (norm 2)",
    "swing": "token features whose own-token activation is 1 +- (0.3..0.7) cos(theta_p - phi_t) "
    "inside the context",
    "conjunction": "token features firing only on their token AND within +-60 degrees of a phase on "
    "the helix",
    "standard_multi": "'standard' with each token feature repeated 3 times (scaled 1, 0.8, 0.6): 3 "
    "token features a token",
    "swing_multi": "'swing' with each token feature repeated 3 times (scaled 1, 0.8, 0.6)",
    "conjunction_multi": "'conjunction' with each token feature repeated 3 times (scaled 1, 0.8, "
    "0.6)",
    "singles": "one positional feature per in-context position 0..31, each firing on that position "
    "alone",
    "windows5": "positional features on 5-wide windows every 4 positions (0-4, 4-8, ..., 28-31)",
    "two_runs": "7 positional features each firing on two separated 3-wide runs; together they "
    "cover 0..31",
    "permuted": "'standard' with the positional decoders permuted among features (|Spearman| < 0.2)",
    "permuted_rotated": "'permuted' rotated",
    "dead": "'standard' with every bias -100: no feature fires anywhere",
    "topk": "'standard' as a TopK SAE (k = 3)",
    "random_walk0": "W_pos = isotropic Gaussian random walk in R^32 (seed 0); token features only",
    "random_walk1": "random walk, seed 1",
    "random_walk2": "random walk, seed 2",
    "cloud_3d": "W_pos rows i.i.d. Gaussian in a random 3-D subspace (no order); token features "
    "only",
    "iid_full": "W_pos rows i.i.d. Gaussian in all of R^32; token features only",
    "iid_positional": "W_pos rows i.i.d. Gaussian in H+J (8-D, no helix); 16 single-position "
    "features, "
    "decoder = unit W_pos row at the peak",
    "identical_rows": "every W_pos row the same vector; token features only",
}
