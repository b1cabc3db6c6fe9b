"""The data of the feature explorer in report.html: every feature's row, profile and card,
compactly, and the prompt box's tokenizer.

Profiles (mean activation over tokens at each studied position) are quantised against each feature's
own maximum, delta-coded along the positions and deflated: positional features at every position to
255 levels, the others as means over blocks of positions (:data:`COARSE_POINTS` points at most) to
the most levels (255, 63, 31, 15, 7 or 3) that keep all profiles within about :data:`PROFILE_BUDGET`
bytes (the card says how many levels and positions it draws); the table is column-wise JSON,
deflated.

The card's data, for every feature: the exact activation histogram over the context's grid
(:mod:`posfeat.engine.histogram`; counts as 8-bit codes of log2(1 + count), the Python card and
``posfeat feature N --json`` keep them exact) and its :data:`PAGE_INPUTS` strongest (token,
position) inputs; the mean pre-activation by position (exact for positional features, else on the
top :data:`PRE_PCS` principal components of W_pos, as the card says); the nearest W_pos row;
past-context numbers; and the logit effects through a tied unembedding (or why there are none).

The token index is exact from the grid: each feature's top :data:`TOKEN_INDEX_K` tokens over the
whole vocabulary (``GridStats.top_tokens`` of the context, mean activation over positions) as token
ids into the page's vocabulary (every token's string, deflated), with 8-bit codes of their means;
the page inverts it, so searching a token finds every feature that has it among its top tokens, with
its activation.

Everything travels as base64 inside the page and is inflated by the browser
(``DecompressionStream``), so the page stays self-contained and offline: the GPT-2-shaped stand-in's
whole report is under 8 MB (24576 features x 1024 positions). The CSVs keep the exact numbers."""

from __future__ import annotations

import base64
import json
import zlib
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..analyses.card import logit_effects, unembedding_note
from ..analyses.prompts import tokenizer_for
from ..core.tensors import to_numpy
from ..engine.histogram import ActivationHistograms, activation_histograms
from ..io.paths import visible
from ..io.sae_folders import neuronpedia_url

if TYPE_CHECKING:
    from ..analyses.analysis import Analysis

KIND_CODES = {"positional": 0, "semantic": 1, "mixed": 2, "dead": 3}


def _pack(data: bytes) -> str:
    return base64.b64encode(zlib.compress(data, 6)).decode()


PROFILE_BUDGET = 800_000
LEVELS = (255, 63, 31, 15, 7, 3)
SAMPLE_ROWS = 1024


def quantised_profiles(profiles: np.ndarray, levels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(codes uint8 [F, P] delta-coded along positions, scales [F])``: ``value = (cumsum(codes)
    mod 256) / levels * scale``."""
    scale = np.maximum(profiles.max(1), 0.0)
    safe = np.where(scale > 0, scale, 1.0)[:, None]
    x = np.maximum(
        profiles, 0.0
    )  # the same operations in the same order as rint(clip(p, 0) / safe * levels), in place
    x /= safe
    x *= levels[:, None]
    q = np.rint(x, out=x).astype(np.uint8)
    delta = q.copy()
    delta[:, 1:] = q[:, 1:] - q[:, :-1]  # wraps mod 256
    return delta, scale


#: profiles of the non-positional features are drawn as means over blocks of positions when there
# are more positions than this
COARSE_POINTS = 128


def coarse_block(n_pos: int) -> int:
    """Positions per block of a non-positional feature's profile in the page (1: every position)."""
    return -(-n_pos // COARSE_POINTS)


def packed_profiles(
    profiles: np.ndarray, exact: np.ndarray, budget: int = PROFILE_BUDGET
) -> tuple[str, np.ndarray, np.ndarray, int]:
    """Deflated base64 profiles within about ``budget`` bytes; features in ``exact`` (the positional
    ones) keep every position at 255 levels.

    The other features are averaged over blocks of :func:`coarse_block` positions (their profiles
    are nearly flat) and get the most levels whose deflated size, estimated on a sample of rows,
    fits what the exact ones leave of the budget (at least 3 levels). The exact rows come first
    (``n_exact x n_pos`` codes), then the others (``n_rest x n_blocks``), each in feature order.
    Returns ``(data, scales, levels per feature, block)``."""
    n_pos = profiles.shape[1]
    block = coarse_block(n_pos)
    n_blocks = -(-n_pos // block)
    # block means of every row from a view of the whole blocks (no copy of the [F, n_pos] array),
    # the last partial block padded with its last value; then the rows not kept exact
    full = n_pos // block
    parts = [profiles[:, : full * block].reshape(len(profiles), full, block).mean(2)]
    if full < n_blocks:
        tail = np.pad(profiles[:, full * block :], ((0, 0), (0, n_blocks * block - n_pos)), "edge")
        parts.append(tail.mean(1, keepdims=True))
    coarse = (np.concatenate(parts, 1) if len(parts) > 1 else parts[0])[~exact]
    rng = np.random.default_rng(0)
    sample = (
        rng.choice(len(coarse), min(len(coarse), SAMPLE_ROWS), replace=False)
        if len(coarse)
        else np.arange(0)
    )
    exact_codes = quantised_profiles(profiles[exact], np.full(int(exact.sum()), 255))[0]
    exact_bytes = len(zlib.compress(exact_codes.tobytes(), 6)) * 4 / 3
    chosen = LEVELS[-1]
    for lv in LEVELS:
        est = (
            len(
                zlib.compress(
                    quantised_profiles(coarse[sample], np.full(len(sample), lv))[0].tobytes(), 6
                )
            )
            * 4
            / 3
        )
        if exact_bytes + est * len(coarse) / max(1, len(sample)) <= budget:
            chosen = lv
            break
    levels = np.where(exact, 255, chosen).astype(np.int64)
    rest_codes, _ = quantised_profiles(coarse, np.full(len(coarse), chosen))
    scale = np.zeros(len(profiles))
    scale[exact] = np.maximum(profiles[exact].max(1, initial=0.0), 0.0)
    scale[~exact] = np.maximum(coarse.max(1, initial=0.0), 0.0)
    return _pack(exact_codes.tobytes() + rest_codes.tobytes()), scale, levels, block


def _round(x: Any, digits: int = 3) -> list[float | None]:
    return [
        None if not np.isfinite(v) else float(f"{v:.{digits}g}") for v in np.asarray(x, dtype=float)
    ]


#: what the page carries per feature (the Python card and ``posfeat feature N --json`` carry more)
TOKEN_INDEX_K = 10
PAGE_INPUTS = 5
PAGE_LOGITS = 5
PRE_PCS = 8


def _ids(ids: np.ndarray, d_vocab: int) -> tuple[int, str]:
    """Token ids as little-endian uint16 (uint32 past 65535 tokens), deflated: ``(bytes per id,
    data)``."""
    dtype = np.dtype("<u2") if d_vocab <= np.iinfo(np.uint16).max else np.dtype("<u4")
    return dtype.itemsize, _pack(np.asarray(ids).astype(dtype).tobytes())


def _codes(values: np.ndarray, scale: np.ndarray, signed: bool = False) -> str:
    """``values`` as 8-bit codes of ``value / scale`` (per row): uint8 of 0..255, or int8 of
    -127..127 when ``signed``."""
    safe = np.where(scale > 0, scale, 1.0)[:, None]
    x = np.nan_to_num(np.asarray(values, dtype=np.float64) / safe)
    if signed:
        return _pack(np.rint(np.clip(x, -1, 1) * 127).astype(np.int8).tobytes())
    return _pack(np.rint(np.clip(x, 0, 1) * 255).astype(np.uint8).tobytes())


def vocabulary(an: Analysis) -> dict[str, Any]:
    """Every token's readable string (deflated JSON list, ids in order) and whether the vocabulary
    is uncased (no upper-case
    letters: the search then ignores case)."""
    strings = [visible(an.emb.token_str(t)) for t in range(an.emb.d_vocab)]
    return {
        "n": len(strings),
        "strings": _pack(json.dumps(strings).encode()),
        "uncased": not any(any(c.isupper() for c in s) for s in strings),
    }


def token_index(an: Analysis, k: int = TOKEN_INDEX_K) -> dict[str, Any]:
    """Each feature's top ``k`` tokens over the whole vocabulary by exact mean activation over the
    context's positions.

    Returns ``{"k", "id_bytes", "ids", "values"}``: ``ids`` ``[d_sae, k]`` token ids (``d_vocab``
    where a feature has fewer than ``k`` tokens with a positive mean), ``values`` the means as 8-bit
    codes of ``mean / token_score`` (the feature's largest token mean, in the table), both deflated
    and base64; the page inverts it, so searching a token finds every feature that has it among its
    top ``k`` tokens, with its activation."""
    st = an.stats_context
    ids, means = (
        np.asarray(st.top_tokens, dtype=np.int64)[:, :k],
        np.asarray(st.top_token_means, dtype=np.float64)[:, :k],
    )
    keep = np.isfinite(means) & (means > 0)
    ids = np.where(keep, ids, an.emb.d_vocab)
    width, data = _ids(ids, an.emb.d_vocab)
    return {
        "k": int(ids.shape[1]),
        "id_bytes": width,
        "ids": data,
        "values": _codes(np.where(keep, means, 0.0), means.max(1, initial=0.0)),
    }


def histograms(an: Analysis) -> tuple[dict[str, Any] | None, ActivationHistograms | None]:
    """Every feature's exact activation histogram over the context's grid
    (:mod:`posfeat.engine.histogram`) as log-count codes, and its strongest inputs; None for an SAE
    that does not separate (TopK)."""
    if not an.sae.separable:
        return None, None
    hist = an.stats_context.histograms  # from the engine's pass, where it gave them
    if hist is None or len(hist.positions) != an.context:
        hist = activation_histograms(an.emb, an.sae, an.context)
    scale = 255 / np.log2(1 + max(hist.grid_size, 1))
    codes = np.rint(np.log2(1 + hist.counts) * scale).astype(np.uint8)
    k = min(PAGE_INPUTS, hist.top_tokens.shape[1])
    tok = np.where(hist.top_tokens[:, :k] >= 0, hist.top_tokens[:, :k], an.emb.d_vocab)
    width, ids = _ids(tok, an.emb.d_vocab)
    return (
        {
            "bins": hist.bins,
            "scale": scale,
            "grid": hist.grid_size,
            "counts": _pack(codes.tobytes()),
            "inputs": {
                "k": k,
                "id_bytes": width,
                "ids": ids,
                "positions": _pack(
                    np.maximum(hist.top_positions[:, :k], 0).astype("<u2").tobytes()
                ),
                "values": _codes(hist.top_values[:, :k], hist.max_activation),
            },
        },
        hist,
    )


def logits(an: Analysis) -> tuple[dict[str, Any], np.ndarray | None]:
    """Each feature's top and bottom logit effects (tied unembedding) as token ids and signed 8-bit
    codes of the feature's largest absolute effect (``logit_scale`` in the table); or the reason
    there are none."""
    note = unembedding_note(an.emb)
    if note is not None:
        return {"note": note}, None
    top_i, top_v, bot_i, bot_v = logit_effects(
        an.emb, an.sae, np.arange(an.sae.d_sae), k=PAGE_LOGITS
    )
    scale = np.maximum(np.abs(top_v).max(1, initial=0.0), np.abs(bot_v).max(1, initial=0.0))
    width, up = _ids(top_i, an.emb.d_vocab)
    _, down = _ids(bot_i, an.emb.d_vocab)
    return {
        "k": int(top_i.shape[1]),
        "id_bytes": width,
        "up": up,
        "down": down,
        "up_values": _codes(top_v, scale, signed=True),
        "down_values": _codes(bot_v, scale, signed=True),
    }, scale


def preactivations(an: Analysis, positional: np.ndarray) -> tuple[dict[str, Any], np.ndarray]:
    """Each feature's mean pre-activation by position, ``mean + (W_pos[p] - mean row) . w_enc``:
    exact (255 levels between its least and largest value) for the positional features, whose cards
    lead with it; for the others on the top :data:`PRE_PCS` principal components of W_pos's studied
    rows (the page states the share of their variance kept), as float16 coefficients of a shared
    basis. Returns the data and each feature's mean over positions."""
    pre = an.stats_all.pre_mean_by_position
    rows = an.stats_all.positions
    Wp = an.emb.W_pos[torch.as_tensor(rows, device=an.emb.device)].double()
    centred = Wp - Wp.mean(0, keepdim=True)
    u, sv, vt = torch.linalg.svd(centred, full_matrices=False)
    r = min(PRE_PCS, len(sv))
    basis = to_numpy(u[:, :r] * sv[:r], np.float64)  # [n_pos, r]
    coef = to_numpy(vt[:r] @ an.sae.W_enc.double(), np.float64).T  # [d_sae, r]
    coef_scale = np.abs(coef).max(1, initial=0.0)
    share = float((sv[:r] ** 2).sum() / (sv**2).sum().clamp(min=1e-300))
    lo, hi = pre[positional].min(1, initial=np.inf), pre[positional].max(1, initial=-np.inf)
    codes = _codes(pre[positional] - lo[:, None], hi - lo) if len(positional) else _pack(b"")
    return {
        "pcs": r,
        "share": share,
        "basis": _pack(basis.astype("<f4").tobytes()),
        "coef": _codes(coef, coef_scale, signed=True),
        "exact_features": [int(f) for f in positional],
        "coef_scale": _pack(coef_scale.astype("<f4").tobytes()),
        "exact_lo": _round(lo, 5),
        "exact_hi": _round(hi, 5),
        "exact": codes,
    }, pre.mean(1)


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable character map of byte-level BPE."""
    keep = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    chars, extra = list(keep), 0
    for b in range(256):
        if b not in keep:
            keep.append(b)
            chars.append(256 + extra)
            extra += 1
    return {b: chr(c) for b, c in zip(keep, chars)}


def tokenizer_spec(an: Analysis) -> dict[str, Any]:
    """What the page's prompt box needs to tokenise a text as the model's tokenizer does, for the
    two kinds it can run: a BERT WordPiece (lower-casing, accents, punctuation; the vocabulary is
    the page's) and byte-level BPE (GPT-2, OPT, GPT-Neo: the merges as id triples, each byte's id).
    Anything else: ``{"kind": None, "note": why}``."""
    try:
        tok = tokenizer_for(an.emb)
    except Exception as err:  # the prompt box is optional; the page says why it is missing
        return {
            "kind": None,
            "note": f"the model's tokenizer could not be read ({type(err).__name__})",
        }
    if tok is None or not hasattr(tok, "to_str"):
        return {"kind": None, "note": "no tokenizer.json was found for this model"}
    spec = json.loads(tok.to_str())
    model = spec.get("model") or {}
    special = [int(i) for i in tok.encode("", add_special_tokens=True).ids]
    if model.get("type") == "WordPiece":
        norm = spec.get("normalizer") or {}
        lower = bool(norm.get("lowercase", False))
        if (
            norm.get("type") != "BertNormalizer"
            or (spec.get("pre_tokenizer") or {}).get("type") != "BertPreTokenizer"
        ):
            return {
                "kind": None,
                "note": "its WordPiece tokenizer is not BERT's (normaliser or pre-tokeniser), which "
                "is all the page runs",
            }
        return {
            "kind": "wordpiece",
            "lowercase": lower,
            "strip_accents": bool(
                lower if norm.get("strip_accents") is None else norm["strip_accents"]
            ),
            "chinese": bool(norm.get("handle_chinese_chars", True)),
            "unk": model.get("unk_token", "[UNK]"),
            "prefix": model.get("continuing_subword_prefix", "##"),
            "max_chars": int(model.get("max_input_chars_per_word", 100)),
            "special": special,
        }
    pre = json.dumps(spec.get("pre_tokenizer") or {})
    if model.get("type") == "BPE" and "ByteLevel" in pre and not spec.get("normalizer"):
        vocab = model["vocab"]
        merges = [m if isinstance(m, list) else m.split(" ") for m in model.get("merges", [])]
        byte_ids = [vocab.get(ch, -1) for _, ch in sorted(_bytes_to_unicode().items())]
        if min(byte_ids) < 0 or any(
            a not in vocab or b not in vocab or a + b not in vocab for a, b in merges
        ):
            return {
                "kind": None,
                "note": "its byte-level BPE vocabulary lacks a byte or a merge result",
            }
        triples = np.array(
            [[vocab[a], vocab[b], vocab[a + b]] for a, b in merges], dtype=np.int64
        ).reshape(-1, 3)
        first = int(triples[0, 2]) if len(triples) else 0
        sequential = bool(
            (triples[:, 2] == first + np.arange(len(triples))).all()
        )  # GPT-2: merge r makes token first + r
        width, data = _ids(
            triples[:, :2] if sequential else triples,
            max(an.emb.d_vocab, int(triples.max(initial=0)) + 1),
        )
        prefix_space = '"add_prefix_space": true' in pre
        return {
            "kind": "bytebpe",
            "bytes": byte_ids,
            "id_bytes": width,
            "merges": data,
            "first_result": first if sequential else None,
            "prefix_space": prefix_space,
            "special": special,
        }
    return {
        "kind": None,
        "note": f"its tokenizer ({model.get('type') or 'unknown'}) is neither BERT's WordPiece nor "
        "byte-level BPE",
    }


def _column_mean(m: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """``m[:, cols].mean(1)`` for a boolean ``cols``; where the columns are one run (the positions
    past the context) over a view of them, not a copy made by the mask (1.2 s for GPT-2's 24576 x
    896 floats; 0.01 s). The sums' order differs (the copy is column-major), their rounding only."""
    idx = np.flatnonzero(cols)
    if len(idx) and idx[-1] - idx[0] + 1 == len(idx):
        return m[:, int(idx[0]) : int(idx[-1]) + 1].mean(1)
    return m[:, cols].mean(1)


def explorer_payload(
    an: Analysis, logit_part: tuple[dict[str, Any], np.ndarray | None] | None = None
) -> dict[str, Any]:
    """What the explorer script reads (see module docstring); ``logit_part``: :func:`logits` of
    ``an``, made here when None."""
    f = an.features
    positional = (f.kind == "positional").to_numpy()
    data, scale, levels, block = packed_profiles(an.stats_all.mean_by_position, positional)
    hist_data, hist = histograms(an)
    logit_data, logit_scale = logits(an) if logit_part is None else logit_part
    pre_data, pre_mean = preactivations(an, np.nonzero(positional)[0])
    fire = an.stats_all.fire_by_position
    past = an.stats_all.positions >= an.context
    spur = an.spurious_by_feature
    pairs = np.zeros(len(f), dtype=np.int64)
    if len(spur):
        pairs[spur.feature.to_numpy(int)] = spur.spurious_pairs.to_numpy(int)
    table = {
        "kind": [KIND_CODES[k] for k in f.kind],
        "positional_score": _round(f.positional_score),
        "token_score": _round(f.token_score),
        "position_share": _round(f.position_share),
        "token_share": _round(f.token_share),
        "interaction_share": _round(f.interaction_share),
        "fire": None if hist is not None else _round(f.fire),
        "peak": f.peak_position.astype(int).tolist(),
        "runs": f.runs.fillna("").tolist(),
        "n_runs": f.n_runs.astype(int).tolist(),
        "scale": _round(scale, 4),
        "levels": levels.tolist(),
        "nearest_wpos_row": f.nearest_wpos_row.astype(int).tolist(),
        "decoder_cos_wpos": _round(f.decoder_cos_wpos),
        "pre_mean": _round(pre_mean),
        "threshold": _round(to_numpy(an.sae.cut(torch.float64)), 4),
        "past_fire": _round(_column_mean(fire, past)) if past.any() else None,
        "spurious_pairs": pairs.tolist() if an.sae.separable else None,
        "hist_max": None if hist is None else _round(hist.max_activation, 4),
        "firing": None if hist is None else hist.firing.tolist(),
        "logit_scale": None if logit_scale is None else _round(logit_scale, 4),
    }
    return {
        "n_features": len(f),
        "n_positions": int(an.stats_all.mean_by_position.shape[1]),
        "first_position": int(an.stats_all.positions[0]),
        "context": int(an.context),
        "kinds": list(KIND_CODES),
        "neuronpedia": neuronpedia_url(an.sae.meta.neuronpedia_id),
        "table": _pack(json.dumps(table, separators=(",", ":")).encode()),
        "profiles": data,
        "profile_block": block,
        "vocab": vocabulary(an),
        "tokens": token_index(an),
        "hist": hist_data,
        "hist_note": None
        if hist is not None
        else (
            f"not computed: {an.sae.name} is a {an.sae.architecture} SAE, whose activations do not "
            "split into token and position parts"
        ),
        "logits": logit_data,
        "pre": pre_data,
        "tokenizer": tokenizer_spec(an),
    }
