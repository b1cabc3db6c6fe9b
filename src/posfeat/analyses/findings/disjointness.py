"""Finding 3: a feature's activation is a function of position or of token, not both."""

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
    _median,
    _median_of,
    _null_txt,
    _nulls,
    _num,
    _ok,
    _p_txt,
    _pct,
    _undetermined,
    verdict_of,
)


@dataclass(frozen=True)
class DisjointRules(CommonRules):
    """The rule fields of :data:`DISJOINT` (fields of ``FindingRules``, ``--rule NAME=VALUE``)."""

    disjoint_cv: float = (
        0.1  # a feature depends on one axis when it strays at most this along the other
    )
    disjoint_reproduced: float = 0.9  # ... and this many live features do
    disjoint_partly: float = 0.7


def disjoint(
    features: pd.DataFrame,
    r: DisjointRules,
    nulls: dict[str, Any] | None = None,
    geometry: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Finding 3: a feature's activation is a function of position or of token, not both (``g = 0``
    or ``h = 0``).

    Statistic, per live feature: its position dependence (how far it strays across positions on the
    tokens where it fires) and its token dependence (across tokens at the positions where it fires),
    each as a share of its activation (:func:`posfeat.analyses.classification.dependence`, exact); it
    depends on one axis only when the smaller
    is at most ``disjoint_cv``. Null: the same share in the random dictionary (directions from the
    grid's covariance, so it keeps the embeddings' geometry), 200 draws. ``geometry`` states how
    much of W_E's variance lies in W_pos's principal subspace."""
    test = (
        "share of live features whose position dependence or token dependence (RMS variation along "
        "that axis "
        f"with the other fixed, over RMS activation) is at most {r.disjoint_cv}: >= "
        f"{r.disjoint_reproduced} -> "
        f"reproduced, >= {r.disjoint_partly} -> partly; either only when beyond the random "
        "dictionary drawn from "
        f"the grid's covariance (p < {r.null_alpha}) and, for reproduced, each kind with 3 or more "
        "features "
        f"(positional, semantic) at least {r.disjoint_partly} on its own; else not reproduced"
    )
    live = features[features.kind != "dead"]
    pos_dep = live.position_dependence.to_numpy(float)
    tok_dep = live.token_dependence.to_numpy(float)
    one = np.fmin(pos_dep, tok_dep) <= r.disjoint_cv
    frac = float(one.mean()) if len(live) else float("nan")
    draws = (_nulls(nulls, "random_dictionary") or {}).get("disjoint")
    null = {"share": null_summary(draws, frac)}
    value = {"share": frac, "both": int((~one).sum()), "live": len(live)}
    note = "almost all features"
    if not len(live):
        return _undetermined(
            value, null, note, test, "no feature fires on the grid, so none could be tested."
        )
    if not _drawn(null["share"]):
        return _undetermined(
            value,
            null,
            note,
            test,
            "the random dictionary had no live features, so the share has no null.",
        )
    geo = geometry or {}
    pos = live[live.kind == "positional"]
    sem = live[live.kind == "semantic"]
    by_kind = {}
    for kind, _part in (("positional", pos), ("semantic", sem)):
        sel = (live.kind == kind).to_numpy()
        by_kind[kind] = (float(one[sel].mean()) if sel.any() else float("nan"), int(sel.sum()))
    value["by_kind"] = {
        kind: {"share": share, "features": n} for kind, (share, n) in by_kind.items()
    }
    geo_txt = (
        f" Geometry: {_pct(geo.get('we_share_in_wpos'))} of W_E's variance lies in the "
        f"{geo.get('wpos_dims')} "
        f"principal directions holding 90% of W_pos's (a random subspace of that size holds "
        f"{_pct(geo.get('random_share'))}), so some separation comes from the embeddings "
        "themselves; the null "
        "keeps that geometry."
        if _ok(geo.get("we_share_in_wpos"))
        else ""
    )
    evidence = (
        f"{_pct(frac)} of the {len(live)} live features depend on one axis only (the smaller of "
        "their "
        f"position and token dependence is at most {r.disjoint_cv}); {int((~one).sum())} depend on "
        "both. "
        f"Of the positional features {_pct(by_kind['positional'][0])} do, of the semantic ones "
        f"{_pct(by_kind['semantic'][0])}. Median token dependence of positional features "
        f"{_num(_median(pos.token_dependence), 2)}, "
        f"median position dependence of semantic features "
        f"{_num(_median(sem.position_dependence), 2)}. Null, the random "
        f"dictionary drawn from the grid's covariance: {_null_txt(null['share'])}. Rule: >= "
        f"{r.disjoint_reproduced} reproduced, >= {r.disjoint_partly} partly, beyond the null."
        f"{geo_txt}"
    )
    beat = _beats(null["share"], r)
    kinds_ok = all(share >= r.disjoint_partly for share, n in by_kind.values() if n >= 3)
    weak = [
        f"{kind} ({_pct(share)} of {n})"
        for kind, (share, n) in by_kind.items()
        if n >= 3 and share < r.disjoint_partly
    ]
    if frac >= r.disjoint_reproduced and beat and not kinds_ok:
        evidence += (
            f" Not reproduced in full: fewer than {_pct(r.disjoint_partly)} of the "
            + " and ".join(weak)
            + " features depend on one axis only, so the share is carried by the other kind."
        )
    return _finding(
        verdict_of(
            frac >= r.disjoint_reproduced and beat and kinds_ok, frac >= r.disjoint_partly and beat
        ),
        value,
        null,
        note,
        test,
        evidence,
    )


def _headline(v: dict[str, Any], n: dict[str, Any]) -> tuple[str, str]:
    kinds = v.get("by_kind", {})
    per = ", ".join(f"{k} {_pct(x.get('share'))}" for k, x in kinds.items() if x.get("features"))
    return (
        f"{_pct(v.get('share'))} on one axis ({per})",
        f"random dictionary {_median_of(n.get('share'), 'pct')}{_p_txt(n.get('share'))}",
    )


def _compute(
    x: FindingInputs, r: DisjointRules, earlier: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    return disjoint(x.features, r, x.nulls, x.geometry)


DISJOINT = Finding(
    key="disjoint",
    number="3",
    title="Positional and semantic features are disjoint",
    note_says="almost all features",
    rules=DisjointRules,
    compute=_compute,
    headline=_headline,
    section=2,
    figures=("disjointness",),
)
