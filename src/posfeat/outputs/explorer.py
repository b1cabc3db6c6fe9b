"""The data of the feature explorer in report.html: every feature's row and its profile over every position, compactly.

Profiles (mean activation over tokens at each studied position) are quantised against each
feature's own maximum, delta-coded along the positions and deflated: positional features to 255
levels, the others to the most levels (255, 63, 31, 15, 7 or 3) that keep all profiles within
about :data:`PROFILE_BUDGET` bytes (the card says how many levels it draws); the table is
column-wise JSON, deflated.

The token index is exact from the grid: each feature's top tokens over the whole vocabulary (the
``GridStats.top_tokens`` of the context, mean activation over positions, those with a positive mean)
as references into one list of the distinct tokens involved, with their activations as float16; the
page inverts it, so searching a token finds every feature that has it among its top tokens (4 bytes an
entry before deflation: about 3 MB in the page at GPT-2 scale, 24576 features x 20 tokens, token strings included). All three
travel as base64 inside the page and are inflated by the browser
(``DecompressionStream``), so the page stays self-contained and offline, and within a few MB at
GPT-2 scale (24576 features x 1024 positions). The CSVs keep the exact numbers.
"""

from __future__ import annotations

import base64
import json
import zlib
from typing import TYPE_CHECKING, Any

import numpy as np

from ..io.paths import visible
from ..io.sae_folders import neuronpedia_url

if TYPE_CHECKING:
    from ..analyses.analysis import Analysis

KIND_CODES = {"positional": 0, "semantic": 1, "mixed": 2, "dead": 3}


def _pack(data: bytes) -> str:
    return base64.b64encode(zlib.compress(data, 6)).decode()


PROFILE_BUDGET = 3_000_000
LEVELS = (255, 63, 31, 15, 7, 3)
SAMPLE_ROWS = 1024


def quantised_profiles(profiles: np.ndarray, levels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(codes uint8 [F, P] delta-coded along positions, scales [F])``: ``value = (cumsum(codes) mod 256) / levels * scale``."""
    scale = np.maximum(profiles.max(1), 0.0)
    safe = np.where(scale > 0, scale, 1.0)[:, None]
    x = np.maximum(profiles, 0.0)  # the same operations in the same order as rint(clip(p, 0) / safe * levels), in place
    x /= safe
    x *= levels[:, None]
    q = np.rint(x, out=x).astype(np.uint8)
    delta = q.copy()
    delta[:, 1:] = q[:, 1:] - q[:, :-1]  # wraps mod 256
    return delta, scale


def packed_profiles(profiles: np.ndarray, exact: np.ndarray, budget: int = PROFILE_BUDGET) -> tuple[str, np.ndarray, np.ndarray]:
    """Deflated base64 profiles within about ``budget`` bytes; features in ``exact`` (the positional ones) keep 255 levels.

    The other features get the most levels whose deflated size, estimated on a sample of rows, fits what the
    exact ones leave of the budget (at least 3 levels). Returns ``(data, scales, levels per feature)``.
    """
    rng = np.random.default_rng(0)
    rest = np.nonzero(~exact)[0]
    sample = rng.choice(rest, min(len(rest), SAMPLE_ROWS), replace=False) if len(rest) else rest
    exact_bytes = len(zlib.compress(quantised_profiles(profiles[exact], np.full(int(exact.sum()), 255))[0].tobytes(), 6)) * 4 / 3
    coarse = LEVELS[-1]
    for lv in LEVELS:
        est = len(zlib.compress(quantised_profiles(profiles[sample], np.full(len(sample), lv))[0].tobytes(), 6)) * 4 / 3
        if exact_bytes + est * len(rest) / max(1, len(sample)) <= budget:
            coarse = lv
            break
    levels = np.where(exact, 255, coarse).astype(np.int64)
    codes, scale = quantised_profiles(profiles, levels)
    return _pack(codes.tobytes()), scale, levels


def _round(x: Any, digits: int = 3) -> list[float | None]:
    return [None if not np.isfinite(v) else float(f"{v:.{digits}g}") for v in np.asarray(x, dtype=float)]




def token_index(an: Analysis) -> dict[str, Any]:
    """Each feature's top tokens over the whole vocabulary with their mean activation (see module docstring).

    Returns ``{"k", "strings", "refs", "values"}``: ``refs`` is ``uint16`` (``uint32`` past 65535 distinct tokens)
    ``[d_sae, k]`` indices into ``strings`` (the sentinel ``len(strings)`` where a feature has fewer than ``k``
    tokens with a positive mean); ``values`` the matching means as float16; both deflated and base64.
    """
    st = an.stats_context
    ids, means = np.asarray(st.top_tokens, dtype=np.int64), np.asarray(st.top_token_means, dtype=np.float64)
    keep = np.isfinite(means) & (means > 0)
    uniq, inverse = np.unique(ids[keep], return_inverse=True)
    dtype = np.uint16 if len(uniq) < np.iinfo(np.uint16).max else np.uint32
    refs = np.full(ids.shape, len(uniq), dtype=dtype)
    refs[keep] = inverse
    values = np.where(keep, np.minimum(means, np.finfo(np.float16).max), 0).astype("<f2")
    return {"k": int(ids.shape[1]) if ids.ndim == 2 else 0, "strings": [visible(an.emb.token_str(int(t))) for t in uniq],
            "ref_bytes": dtype().itemsize, "refs": _pack(refs.astype(refs.dtype.newbyteorder("<")).tobytes()), "values": _pack(values.tobytes())}


def explorer_payload(an: Analysis) -> dict[str, Any]:
    """What the explorer script reads (see module docstring)."""
    f = an.features
    data, scale, levels = packed_profiles(an.stats_all.mean_by_position, (f.kind == "positional").to_numpy())
    table = {
        "kind": [KIND_CODES[k] for k in f.kind], "positional_score": _round(f.positional_score), "token_score": _round(f.token_score),
        "position_share": _round(f.position_share), "token_share": _round(f.token_share), "interaction_share": _round(f.interaction_share),
        "fire": _round(f.fire), "peak": f.peak_position.astype(int).tolist(), "runs": f.runs.fillna("").tolist(),
        "n_runs": f.n_runs.astype(int).tolist(), "scale": _round(scale, 4),
        "levels": levels.tolist(),
    }
    return {"n_features": len(f), "n_positions": int(an.stats_all.mean_by_position.shape[1]), "first_position": int(an.stats_all.positions[0]),
            "context": int(an.context), "kinds": list(KIND_CODES), "neuronpedia": neuronpedia_url(an.sae.meta.neuronpedia_id),
            "table": _pack(json.dumps(table, separators=(",", ":")).encode()), "profiles": data, "tokens": token_index(an)}
