"""Finding 5: positional features' decoder directions trace the helix."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ..summaries import null_summary, permuted_spearman, spearman
from .base import (
    TABLE_DRAWS,
    TABLE_SEED,
    CommonRules,
    Finding,
    FindingInputs,
    _beats,
    _drawn,
    _finding,
    _median_of,
    _null_txt,
    _num,
    _ok,
    _p_txt,
    _pct,
    _undetermined,
    verdict_of,
)
from .wpos_helix import HELIX


@dataclass(frozen=True)
class DecoderTraceRules(CommonRules):
    """The rule fields of :data:`DECODER_TRACES_HELIX` (fields of ``FindingRules``, ``--rule
    NAME=VALUE``)."""

    trace_reproduced: float = 0.8  # Spearman(peak, nearest W_pos row on the helix's top 3 PCs)
    trace_partly: float = 0.5


def decoder_traces_helix(
    features: pd.DataFrame, r: DecoderTraceRules, helix_verdict: str = "reproduced"
) -> dict[str, Any]:
    """Finding 5: positional features' decoder directions, on the helix's top 3 PCs, sit at the
    W_pos rows of their peaks, in the order of their peaks (the note's Figure 1).

    Applies only where the helix finding holds ("reproduced" or "partly"): without a helix there is
    nothing to trace, and in the full space a decoder close to its encoder points at its peak's row
    almost by construction.
    Statistic: Spearman of peak position with the W_pos row nearest (cosine, top 3 PCs) to the
        decoder direction.
    Null: the same Spearman with the decoders permuted among the features (:data:`TABLE_DRAWS`
    permutations, seeded): directions that lie on the helix but not at their own feature's peak."""
    test = (
        "only where the helix finding is reproduced or partly: Spearman correlation, over "
        "positional features "
        "peaking after position 0, of peak position with the W_pos row nearest (cosine, top 3 PCs) "
        "to the "
        f"decoder direction >= {r.trace_reproduced} -> reproduced, >= {r.trace_partly} -> partly; "
        "either only "
        f"when beyond the decoders permuted among the features (p < {r.null_alpha}); else not "
        "reproduced"
    )
    pos = features[(features.kind == "positional") & (features.peak_position > 0)]
    peak, near = pos.peak_position.to_numpy(float), pos.nearest_wpos_row_pc.to_numpy(float)
    rho, _ = spearman(peak, near)
    dist = float(np.median(np.abs(peak - near))) if len(pos) else float("nan")
    full = (
        pos.nearest_wpos_row.to_numpy(float)
        if "nearest_wpos_row" in pos
        else np.full(len(pos), np.nan)
    )
    rho_full, _ = spearman(peak, full)
    on_pcs = (
        float(pos.decoder_pc_share.median())
        if "decoder_pc_share" in pos and len(pos)
        else float("nan")
    )
    tied = float(pos.enc_dec_cos.median()) if "enc_dec_cos" in pos and len(pos) else float("nan")
    perm = null_summary(permuted_spearman(peak, near, TABLE_DRAWS, TABLE_SEED), rho)
    value = {
        "spearman": rho,
        "median_distance": dist,
        "spearman_full_space": rho_full,
        "decoder_share_on_pcs": on_pcs,
        "encoder_decoder_cos": tied,
        "features": len(pos),
    }
    null = {"spearman": perm}
    note = "the crosses follow the helix"
    if helix_verdict not in ("reproduced", "partly"):
        return _undetermined(
            value,
            null,
            note,
            test,
            f"the helix finding is {helix_verdict}, so there is no helix for "
            "the decoder directions to trace (in the full space their nearest row follows the peak "
            f"with Spearman {_num(rho_full, 2)}, which any decoder near its encoder shows).",
        )
    if not _ok(rho) or not _drawn(perm):
        return _undetermined(
            value,
            null,
            note,
            test,
            f"{len(pos)} positional features peak after position 0 (at least "
            "3 with differing peaks are needed).",
        )
    beat = _beats(perm, r)
    evidence = (
        f"For {len(pos)} positional features the W_pos row nearest to the decoder direction on the "
        "helix's top "
        f"3 PCs follows the peak position with Spearman {_num(rho, 2)}, a median {_num(dist, 3)} "
        "positions away; "
        f"null, the decoders permuted among the features: {_null_txt(perm, ', seed 0')}. A median "
        f"{_pct(on_pcs)} of each decoder's squared norm lies on those 3 PCs; the median cosine of "
        "encoder and "
        f"decoder is {_num(tied, 2)} (near 1, the trace follows from the encoder's tuning). Rule: "
        "Spearman >= "
        f"{r.trace_reproduced} reproduced, >= {r.trace_partly} partly, beyond the null."
    )
    return _finding(
        verdict_of(
            _ok(rho) and rho >= r.trace_reproduced and beat,
            _ok(rho) and rho >= r.trace_partly and beat,
        ),
        value,
        null,
        note,
        test,
        evidence,
    )


def _headline(v: dict[str, Any], n: dict[str, Any]) -> tuple[str, str]:
    return (
        f"Spearman {_num(v.get('spearman'), 2)}",
        f"permuted decoders {_median_of(n.get('spearman'), 'rho')}{_p_txt(n.get('spearman'))}",
    )


def _compute(
    x: FindingInputs, r: DecoderTraceRules, earlier: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    return decoder_traces_helix(x.features, r, earlier[HELIX.key]["verdict"])


DECODER_TRACES_HELIX = Finding(
    key="decoder_traces_helix",
    number="5",
    title="Decoder directions trace the helix, in the order of their peaks",
    note_says="the crosses follow the helix",
    rules=DecoderTraceRules,
    compute=_compute,
    headline=_headline,
    section=1,
    figures=("helix", "helix_interactive"),
)
