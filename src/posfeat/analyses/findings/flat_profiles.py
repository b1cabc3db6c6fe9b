"""Finding 6: a token's features are flat lines plus bumps."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ..summaries import null_summary
from .base import (
    CommonRules,
    Finding,
    FindingInputs,
    _beats,
    _drawn,
    _finding,
    _median_of,
    _null_txt,
    _nulls,
    _of,
    _p_txt,
    _pct,
    _undetermined,
    number,
    verdict_of,
)


@dataclass(frozen=True)
class TokenProfilesRules(CommonRules):
    """The rule fields of :data:`TOKEN_PROFILES` (fields of ``FindingRules``, ``--rule
    NAME=VALUE``)."""

    flat_cv: float = 0.1  # a token's profile on a feature is flat when std/mean <= this
    flat_token: float = (
        0.9  # a token is flat when this share of its top non-positional features are
    )
    flat_min_features: int = number(
        2
    )  # tokens with fewer top non-positional features are not tested
    flat_reproduced: float = 0.8  # share of tested tokens (weighted) that are flat
    flat_partly: float = 0.5


TOKEN_COLUMNS = [
    "token_id",
    "token",
    "weight",
    "n_nonpositional",
    "n_flat",
    "flat_share",
    "max_cv",
    "most_bent_feature",
    "n_positional",
    "positional_flat_share",
]
#: Frequency bands of token_profiles: ranks by token weight (0-based, end exclusive).
TOKEN_BANDS = ((0, 100), (100, 1000), (1000, 10000), (10000, None))


def token_profiles(
    tokens: pd.DataFrame,
    context: int,
    token: str,
    r: TokenProfilesRules,
    nulls: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Finding 6: a token's top token features are flat over positions (positional ones are bumps),
    over every token.

    ``tokens`` is ``tokens.csv`` (:data:`TOKEN_COLUMNS`, one row per token, exact over the context).
    A token is tested when at least ``flat_min_features`` of its top features are non-positional
    (fewer cannot show a pattern); it is flat when at least ``flat_token`` of them have std/mean <=
    ``flat_cv``. Null: the same statistic for the random dictionary drawn from the grid's covariance
    (50 draws on 192 tokens drawn by weight): how flat features that mix token and position
    directions as the embeddings do would look. Reported by frequency band."""
    test = (
        f"share of tested tokens (weighted by the token weights; a token is tested when at least "
        f"{r.flat_min_features} of its top features are non-positional) for which at least "
        f"{r.flat_token} of those "
        f"have std/mean <= {r.flat_cv} over positions 0..{context - 1}: >= {r.flat_reproduced} -> "
        "reproduced; >= "
        f"{r.flat_partly} -> partly; either only when beyond the random dictionary (p < "
        f"{r.null_alpha}); else not "
        "reproduced"
    )
    note = "flat lines plus low bumps"
    t = tokens[tokens.n_nonpositional >= max(1, r.flat_min_features)]
    draws = (_nulls(nulls, "random_dictionary") or {}).get("token_flat")
    if not len(t):
        return _undetermined(
            None,
            {"share": null_summary(draws, None)},
            note,
            test,
            f"no token has {r.flat_min_features} "
            "or more non-positional features among its top features, so none could be tested.",
        )
    w = t.weight.to_numpy(float)
    w = w / w.sum() if w.sum() > 0 else np.full(len(t), 1 / len(t))
    passes = t.flat_share.to_numpy(float) >= r.flat_token
    share = float(w[passes].sum())
    unweighted = float(passes.mean())
    null = {"share": null_summary(draws, share)}
    ranked = tokens.sort_values(["weight", "token_id"], ascending=[False, True]).reset_index(
        drop=True
    )
    rank = pd.Series(np.arange(len(ranked)), index=ranked.token_id)
    t_rank = rank.loc[t.token_id].to_numpy()
    bands = {}
    for lo, hi in TOKEN_BANDS:
        sel = (t_rank >= lo) & (t_rank < (hi if hi is not None else len(ranked) + 1))
        if lo < len(ranked):
            label = f"{lo}-{hi - 1}" if hi is not None else f"{lo}+"
            bands[label] = {
                "tested": int(sel.sum()),
                "flat_share": float(passes[sel].mean()) if sel.any() else None,
            }
    value = {
        "share": share,
        "unweighted": unweighted,
        "tested_tokens": len(t),
        "tokens": len(tokens),
        "tested_weight": float(
            tokens.weight[tokens.n_nonpositional >= max(1, r.flat_min_features)].sum()
            / max(1e-300, float(tokens.weight.sum()))
        ),
        "bands": bands,
    }
    if not _drawn(null["share"]):
        return _undetermined(
            value,
            null,
            note,
            test,
            "the random dictionary gave no token with enough non-positional "
            "features, so the share has no null.",
        )
    band_txt = "; ".join(
        f"ranks {k}: {_pct(v['flat_share'])} of {v['tested']}"
        for k, v in bands.items()
        if v["tested"]
    )
    mine = tokens[tokens.token.astype(str) == token]
    mine_txt = ""
    if len(mine):
        m = mine.iloc[0]
        flat_m = _of(
            int(m.n_flat), int(m.n_nonpositional), "top non-positional features", "is", "are"
        )
        tested = " (tested)" if m.n_nonpositional >= r.flat_min_features else " (too few to test)"
        mine_txt = (
            f" For {token!r}: {flat_m} flat{tested}."
            if m.n_nonpositional > 0
            else (f" {token!r} activates no non-positional feature.")
        )
    beat = _beats(null["share"], r)
    evidence = (
        f"{len(t)} of {len(tokens)} tokens ({_pct(value['tested_weight'])} of the token weight) "
        "have at least "
        f"{r.flat_min_features} non-positional features among their top features and are tested; "
        f"{_pct(share)} of them, frequency-weighted ({_pct(unweighted)} unweighted), are flat. By "
        "frequency "
        f"rank: {band_txt}. Null, the random dictionary drawn from the grid's covariance: "
        f"{_null_txt(null['share'])}. Rule: >= {r.flat_reproduced} reproduced, >= {r.flat_partly} "
        "partly, beyond "
        f"the null. Only the flat lines are tested, not the low bumps.{mine_txt}"
    )
    return _finding(
        verdict_of(share >= r.flat_reproduced and beat, share >= r.flat_partly and beat),
        value,
        null,
        note,
        test,
        evidence,
    )


def _headline(v: dict[str, Any], n: dict[str, Any]) -> tuple[str, str]:
    return (
        f"{_pct(v.get('share'))} of tested tokens ({_pct(v.get('tested_weight'))} of the weight)",
        f"random dictionary {_median_of(n.get('share'), 'pct')}{_p_txt(n.get('share'))}",
    )


def _compute(
    x: FindingInputs, r: TokenProfilesRules, earlier: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    return token_profiles(x.tokens, x.context, x.token, r, x.nulls)


TOKEN_PROFILES = Finding(
    key="token_profiles",
    number="6",
    title="A token's features are flat lines plus bumps",
    note_says="flat lines plus bumps",
    rules=TokenProfilesRules,
    compute=_compute,
    headline=_headline,
    section=4,
    figures=("token_features",),
)
