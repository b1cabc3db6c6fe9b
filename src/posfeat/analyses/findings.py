"""Verdicts on the note's findings, each computed from numbers posfeat also writes, and each read against a null.

Every finding is an object ``{"verdict", "value", "null", "note_value", "test", "evidence"}``: ``verdict``
is ``"reproduced"``, ``"partly"``, ``"not reproduced"`` or ``"undetermined"``; ``value`` is posfeat's number
for the pair in hand; ``null`` is, per statistic, a summary of a null distribution drawn in the same run
(:func:`posfeat.analyses.nulls.null_summary`: its median, the value's percentile among the draws, a one-sided p
value and the number of draws), or a closed-form null, or None where no informative null exists (the
evidence then says why, and the verdict follows the rule alone); ``note_value`` is the note's number (its
words where it gives no number); ``test`` states the rule, with its thresholds (the fields of
:class:`FindingRules`, parameters of ``analyze``); ``evidence`` is built from the numbers, stating value,
null and rule. A verdict is "reproduced" or "partly" only when the value beats its null at ``null_alpha``
(where a null exists); it is "undetermined", with the reason, wherever the value or its null cannot be
computed or the finding does not apply (no positions past the context, no positional feature, no helix for
the decoder to trace, too few features or tokens to test). Docs: docs/findings.md says, per finding, what a
verdict can and cannot tell, and which planted controls reach each outcome.

Each function here reads only ``features.csv``, ``by_position.csv`` and ``tokens.csv`` plus the numbers of
``summary.json`` that need the weights (the PCA spectrum, ``summary["geometry"]`` and the null draws
``summary["nulls"]``), so a verdict can be recomputed from the files.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
import pandas as pd

from ..core.errors import PosfeatError
from .classify import knee_largest_gap, largest_gap_ratio, overlap
from .summaries import null_summary, permuted_spearman, rankdata, spearman

FINDINGS = ("helix", "positional_count", "disjoint", "tiling", "early_positions", "decoder_traces_helix",
            "token_profiles", "worse_than_random", "degrades_past_context", "positional_break", "semantic_break")
VERDICTS = ("reproduced", "partly", "not reproduced", "undetermined")
FINDING_KEYS = ("verdict", "value", "null", "note_value", "test", "evidence")
#: Rule fields that are not shares in [0, 1] (every other field is).
NOT_SHARES = frozenset({"spurious_min", "spurious_factor", "degrade_reproduced", "degrade_partly",
                        "flat_min_features"})
#: Draws of the nulls computed here from the tables (seeded): splits of the context, permutations of peaks.
TABLE_DRAWS = 1000
TABLE_SEED = 0


@dataclass(frozen=True)
class FindingRules:
    """Thresholds of the verdict rules (docs/findings.md; ``analyze(rules=...)``, ``--rule NAME=VALUE``).

    Every threshold is finite; shares lie in [0, 1]; each ``*_partly`` is at most its ``*_reproduced``.
    """

    null_alpha: float = 0.05  # a value beats its null when the null's one-sided p value is below this
    helix_reproduced: float = 0.8  # top-3 PCs of W_pos rows 1..context-1 explain at least this ...
    helix_partly: float = 0.6  # ... beyond random walks of the rows' step sizes
    helix_smooth: float = 0.5  # consecutive chords of the rows' path: mean cosine at least this
    positional_max_fraction: float = 0.05  # positional features are at most this share of live ones
    gap_jaccard_reproduced: float = 0.8  # the sorted positional score's largest-gap cut agrees
    gap_jaccard_partly: float = 0.5
    disjoint_cv: float = 0.1  # a feature depends on one axis when it strays at most this along the other
    disjoint_reproduced: float = 0.9  # ... and this many live features do
    disjoint_partly: float = 0.7
    tiling_single_run_reproduced: float = 0.8  # positional features firing on one contiguous run
    tiling_single_run_partly: float = 0.5
    tiling_coverage: float = 0.9  # share of in-context positions covered by some positional run
    early_alpha: float = 0.05  # significance of the Spearman correlations with peak position
    trace_reproduced: float = 0.8  # Spearman(peak, nearest W_pos row on the helix's top 3 PCs)
    trace_partly: float = 0.5
    flat_cv: float = 0.1  # a token's profile on a feature is flat when std/mean <= this
    flat_token: float = 0.9  # a token is flat when this share of its top non-positional features are
    flat_min_features: int = 2  # tokens with fewer top non-positional features are not tested
    flat_reproduced: float = 0.8  # share of tested tokens (weighted) that are flat
    flat_partly: float = 0.5
    worse_reproduced: float = 0.9  # share of past-context positions where FVU exceeds a random vector's
    worse_partly: float = 0.5
    degrade_reproduced: float = 2.0  # past-context mean FVU over in-context mean FVU
    degrade_partly: float = 1.25
    break_firing: float = 0.5  # share of past-context positions where some positional feature fires
    break_track: float = 0.5  # Spearman of apparent position with the nearest in-context W_pos row
    spurious_min: float = 0.5  # spurious features per token per position past the context
    spurious_factor: float = 2.0  # ... and this many times the in-context leave-one-out level
    spread_increase: float = 0.1  # firing pairs' deviation past minus inside, in their own activation

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise PosfeatError(f"Rule {f.name}={v!r} is not a finite number; give a finite threshold.")
            if f.name not in NOT_SHARES and not 0.0 <= v <= 1.0:
                raise PosfeatError(f"Rule {f.name}={v!r} is a share and must lie within [0, 1]; give a "
                                   "value in that range.")
            if f.name in NOT_SHARES and v < 0:
                raise PosfeatError(f"Rule {f.name}={v!r} is negative; give a value of at least 0.")
            if f.name.endswith("_partly"):
                strict = f.name[: -len("_partly")] + "_reproduced"
                if hasattr(self, strict) and v > getattr(self, strict):
                    raise PosfeatError(f"Rule {f.name}={v!r} is above {strict}={getattr(self, strict)!r}; "
                                       "a 'partly' threshold must be at most its 'reproduced' one.")

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def verdict_of(reproduced: bool, partly: bool) -> str:
    return "reproduced" if reproduced else ("partly" if partly else "not reproduced")


def _finding(verdict: str, value: Any, null: Any, note_value: Any, test: str, evidence: str) -> dict[str, Any]:
    return {"verdict": verdict, "value": value, "null": null, "note_value": note_value, "test": test,
            "evidence": evidence}


def _undetermined(value: Any, null: Any, note_value: Any, test: str, reason: str) -> dict[str, Any]:
    return _finding("undetermined", value, null, note_value, test, f"Undetermined: {reason}")


def _ok(x: Any) -> bool:
    return (x is not None and not isinstance(x, bool) and isinstance(x, (int, float, np.floating, np.integer))
            and math.isfinite(float(x)))


def _pct(x: float | None) -> str:
    return f"{100 * x:.1f}%" if _ok(x) else "n/a"


def _num(x: float | None, nd: int = 3) -> str:
    return f"{x:.{nd}g}" if _ok(x) else "n/a"


def _p(x: float | None) -> str:
    return f"{x:.2g}" if _ok(x) else "n/a"


def _of(k: int, n: int, noun: str, verb_one: str, verb_many: str) -> str:
    """'1 of 3 features is', '2 of 3 features are': grammar that follows the count."""
    return f"{k} of {n} {noun} {verb_one if k == 1 else verb_many}"


def _beats(summary: dict[str, Any], r: FindingRules) -> bool:
    """The value beats its drawn null: the null's one-sided p value is below ``null_alpha``."""
    return _ok(summary.get("p_value")) and float(summary["p_value"]) < r.null_alpha


def _drawn(summary: dict[str, Any]) -> bool:
    return int(summary.get("draws") or 0) > 0 and _ok(summary.get("median"))


def _null_txt(summary: dict[str, Any], seed_note: str = "") -> str:
    """'median 0.83 over 200 draws; the value at percentile 99.5, p = 0.005'."""
    return (f"median {_num(summary.get('median'))} over {summary.get('draws', 0)} draws{seed_note}; the value at "
            f"percentile {_num(summary.get('percentile'), 3)}, p = {_p(summary.get('p_value'))}")


def _median(column: pd.Series) -> float:
    return float(column.median()) if len(column) else float("nan")


def _nulls(nulls: dict[str, Any] | None, key: str) -> Any:
    return (nulls or {}).get(key)


# ---------------------------------------------------------------------------- the findings
def helix(spectrum: np.ndarray, first: int, last: int, r: FindingRules, nulls: dict[str, Any] | None = None,
          geometry: dict[str, Any] | None = None) -> dict[str, Any]:
    """Finding 1: W_pos rows 1..context-1 lie on a one-dimensional helical curve (top 3 PCs explain ~95%).

    Two basis-free tests, both needed: (a) low dimensionality beyond diffusion: the top-3 share against isotropic
    random walks with the rows' own step sizes in d_model (``nulls["helix_random_walk_top3"]``; a random walk's leading
    components are cosines, so it looks like a helix to the top-3 share alone); (b) a curve traced in order: the rows'
    path turns slowly (``geometry["smoothness"]``: the mean cosine of consecutive chords) against walks made of the
    rows' own steps in a random order (``nulls["helix_shuffled_steps"]``: the same steps, sizes, directions and
    dimensions, no order; diffusion confined to a subspace and clouds in no order fail here). Reported beside them: the
    share of rows whose nearest row on the top 3 PCs is within 2 positions, and of the steps lying in the top 3 PCs."""
    test = (f"top-3 explained variance of W_pos rows {first}..{last} >= {r.helix_reproduced} -> reproduced, >= "
            f"{r.helix_partly} -> partly; either only when (a) it beats isotropic random walks of the rows' own step sizes "
            f"and (b) the rows' path turns slowly (consecutive chords' mean cosine >= {r.helix_smooth}) beyond walks of "
            f"the rows' own steps in a random order, each at p < {r.null_alpha}; else not reproduced")
    spectrum = np.asarray(spectrum, dtype=np.float64)
    top3 = float(np.sum(spectrum[:3])) if len(spectrum) and np.isfinite(spectrum).all() else float("nan")
    cum = np.cumsum(spectrum[:10])
    n90: int | None = int(np.searchsorted(cum, 0.9) + 1) if len(cum) and cum[-1] >= 0.9 else None
    geo = geometry or {}
    smooth = geo.get("smoothness", float("nan"))
    walk = null_summary(_nulls(nulls, "helix_random_walk_top3"), top3)
    order = null_summary(_nulls(nulls, "helix_shuffled_steps"), smooth)
    value = {"top3": top3, "smoothness": smooth, "curve_share": geo.get("curve_share"),
             "tangent_share": geo.get("tangent_share"), "components_for_90": n90}
    null = {"top3_random_walk": walk, "smoothness_shuffled_steps": order}
    note = {"top3": 0.95}
    if not _ok(top3) or not _ok(smooth) or not _drawn(walk) or not _drawn(order):
        return _undetermined(value, null, note, test, f"W_pos rows {first}..{last} have no variance to decompose or "
                             "too few rows (at least 4) for a curve, so the tests could not be computed.")
    low = _beats(walk, r)
    in_order = smooth >= r.helix_smooth and _beats(order, r)
    nxt = ", ".join(_pct(float(v)) for v in spectrum[3:6])
    how_many = f"{n90} components reach 90%" if n90 else "more than 10 components are needed for 90%"
    passed = [name for name, ok in (("(a)", low), ("(b)", in_order)) if ok]
    evidence = (f"The top 3 principal components of W_pos rows {first}..{last} explain {_pct(top3)} of their "
                f"variance (the next: {nxt or 'none'}; {how_many}); isotropic random walks with these rows' own step "
                f"sizes: {_null_txt(walk)}, so (a) the rows are {'more' if low else 'no more'} concentrated than "
                f"diffusion. Consecutive chords of the rows' path have a mean cosine of {_num(smooth, 2)}; the rows' own "
                f"steps in a random order: {_null_txt(order)}, so (b) the rows {'are' if in_order else 'are not'} a "
                f"curve traced in order. ({_pct(geo.get('curve_share'))} of rows have their nearest row on the top 3 PCs "
                f"within 2 positions; {_pct(geo.get('tangent_share'))} of the steps lie in those PCs.) "
                f"{'Both tests pass' if len(passed) == 2 else ('Only ' + passed[0] + ' passes') if passed else 'Neither test passes'}; "
                f"rule: top-3 share >= {r.helix_reproduced} reproduced, >= {r.helix_partly} partly, with both tests "
                "(the note: 95%).")
    ok = low and in_order
    return _finding(verdict_of(top3 >= r.helix_reproduced and ok, top3 >= r.helix_partly and ok), value, null, note,
                    test, evidence)


def positional_count(features: pd.DataFrame, r: FindingRules, nulls: dict[str, Any] | None = None) -> dict[str, Any]:
    """Finding 2: a small set of features is positional, separated by a drop in the sorted positional score.

    Null: the random dictionary (:func:`posfeat.analyses.nulls.dictionary_draws`: random directions drawn from the
    grid's own covariance, firing shares matched to the SAE's), 200 draws of as many live features as the SAE has: the largest drop between
    its consecutive sorted positional scores, and the share of its live features the rule calls positional
    (reported)."""
    test = (f"1 <= positional features <= {r.positional_max_fraction} of live features and the largest-gap cut of "
            f"the sorted positional score agrees with the rule's set (Jaccard >= {r.gap_jaccard_reproduced}) -> "
            f"reproduced; some positional features and Jaccard >= {r.gap_jaccard_partly} -> partly; either only when "
            f"the drop at the cut beats the random dictionary's largest drop (p < {r.null_alpha}); else not reproduced")
    live = features[features.kind != "dead"]
    rule = set(features.feature[features.kind == "positional"])
    scores = features.positional_score.to_numpy(float)
    gap = knee_largest_gap(scores)
    ratio = largest_gap_ratio(scores)
    top = set(features.sort_values(["positional_score", "feature"], ascending=[False, True]).feature.head(gap))
    ov = overlap(top, rule)
    n_live = len(live)
    share = len(rule) / n_live if n_live else float("nan")
    draws = _nulls(nulls, "random_dictionary") or {}
    gap_null = null_summary(draws.get("gap_ratio"), ratio)
    share_null = null_summary(draws.get("positional_share"), share)
    value = {"count": len(rule), "share_of_live": share, "gap_ratio": ratio}
    null = {"gap_ratio": gap_null, "share_of_live": share_null}
    note_share = 50 / 24576
    note = {"count": 50, "share_of_live": note_share}
    if not n_live or not _ok(ratio):
        return _undetermined(value, null, note, test, f"{n_live} live features and no drop between sorted positional "
                             "scores to measure, so there is no set to find.")
    if not _drawn(gap_null):
        return _undetermined(value, null, note, test, "the random dictionary had no live features (or none with two "
                             "positive positional scores), so the drop has no null to beat.")
    beat = _beats(gap_null, r)
    small = 1 <= len(rule) <= r.positional_max_fraction * n_live
    verdict = verdict_of(small and ov["jaccard"] >= r.gap_jaccard_reproduced and beat,
                         len(rule) >= 1 and ov["jaccard"] >= r.gap_jaccard_partly and beat)
    evidence = (f"{len(rule)} of {n_live} live features ({_pct(share)}) are positional by the variance rule; the note "
                f"found about 50 of 24576 ({_pct(note_share)}) in GPT-2's res-jb SAE (counts are not comparable "
                f"across widths). The largest gap in the sorted positional scores cuts at {gap} (Jaccard "
                f"{ov['jaccard']:.2f} with the rule's set), a drop of {_num(ratio)}x; the random dictionary's largest "
                f"drop: {_null_txt(gap_null)}; the rule calls a median {_pct(share_null.get('median'))} of its live "
                f"features positional. Rule: at most {_pct(r.positional_max_fraction)} of live, Jaccard >= "
                f"{r.gap_jaccard_reproduced}, drop beyond the null.")
    return _finding(verdict, value, null, note, test, evidence)


def disjoint(features: pd.DataFrame, r: FindingRules, nulls: dict[str, Any] | None = None,
             geometry: dict[str, Any] | None = None) -> dict[str, Any]:
    """Finding 3: a feature's activation is a function of position or of token, not both (``g = 0`` or ``h = 0``).

    Statistic, per live feature: its position dependence (how far it strays across positions on the tokens where it
    fires) and its token dependence (across tokens at the positions where it fires), each as a share of its
    activation (:func:`posfeat.analyses.classify.dependence`, exact); it depends on one axis only when the smaller
    is at most ``disjoint_cv``. Null: the same share in the random dictionary (directions from the grid's covariance,
    so it keeps the embeddings' geometry), 200 draws. ``geometry`` states how much of W_E's variance lies in
    W_pos's principal subspace."""
    test = (f"share of live features whose position dependence or token dependence (RMS variation along that axis "
            f"with the other fixed, over RMS activation) is at most {r.disjoint_cv}: >= {r.disjoint_reproduced} -> "
            f"reproduced, >= {r.disjoint_partly} -> partly; either only when beyond the random dictionary drawn from "
            f"the grid's covariance (p < {r.null_alpha}) and, for reproduced, each kind with 3 or more features "
            f"(positional, semantic) at least {r.disjoint_partly} on its own; else not reproduced")
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
        return _undetermined(value, null, note, test, "no feature fires on the grid, so none could be tested.")
    if not _drawn(null["share"]):
        return _undetermined(value, null, note, test, "the random dictionary had no live features, so the share has "
                             "no null.")
    geo = geometry or {}
    pos = live[live.kind == "positional"]
    sem = live[live.kind == "semantic"]
    by_kind = {}
    for kind, _part in (("positional", pos), ("semantic", sem)):
        sel = (live.kind == kind).to_numpy()
        by_kind[kind] = (float(one[sel].mean()) if sel.any() else float("nan"), int(sel.sum()))
    value["by_kind"] = {kind: {"share": share, "features": n} for kind, (share, n) in by_kind.items()}
    geo_txt = (f" Geometry: {_pct(geo.get('we_share_in_wpos'))} of W_E's variance lies in the {geo.get('wpos_dims')} "
               f"principal directions holding 90% of W_pos's (a random subspace of that size holds "
               f"{_pct(geo.get('random_share'))}), so some separation comes from the embeddings themselves; the null "
               "keeps that geometry." if _ok(geo.get("we_share_in_wpos")) else "")
    evidence = (f"{_pct(frac)} of the {len(live)} live features depend on one axis only (the smaller of their "
                f"position and token dependence is at most {r.disjoint_cv}); {int((~one).sum())} depend on both. "
                f"Of the positional features {_pct(by_kind['positional'][0])} do, of the semantic ones "
                f"{_pct(by_kind['semantic'][0])}. Median token dependence of positional features {_num(_median(pos.token_dependence), 2)}, "
                f"median position dependence of semantic features "
                f"{_num(_median(sem.position_dependence), 2)}. Null, the random "
                f"dictionary drawn from the grid's covariance: {_null_txt(null['share'])}. Rule: >= "
                f"{r.disjoint_reproduced} reproduced, >= {r.disjoint_partly} partly, beyond the null.{geo_txt}")
    beat = _beats(null["share"], r)
    kinds_ok = all(share >= r.disjoint_partly for share, n in by_kind.values() if n >= 3)
    weak = [f"{kind} ({_pct(share)} of {n})" for kind, (share, n) in by_kind.items() if n >= 3 and share < r.disjoint_partly]
    if frac >= r.disjoint_reproduced and beat and not kinds_ok:
        evidence += (f" Not reproduced in full: fewer than {_pct(r.disjoint_partly)} of the " + " and ".join(weak)
                     + " features depend on one axis only, so the share is carried by the other kind.")
    return _finding(verdict_of(frac >= r.disjoint_reproduced and beat and kinds_ok, frac >= r.disjoint_partly and beat),
                    value, null, note, test, evidence)


def _run_lengths(text: Any) -> list[int]:
    out = []
    for run in filter(None, str(text if isinstance(text, str) else "").split(";")):
        a, b = (int(v) for v in run.split("-"))
        out.append(b - a + 1)
    return out


def coverage_by_runs(features: pd.DataFrame, context: int) -> np.ndarray:
    """``Int[ndarray, "context"]``: how many positional features have a firing run over each in-context position."""
    cov = np.zeros(context, dtype=np.int64)
    for text in features.runs[features.kind == "positional"].fillna(""):
        for run in filter(None, str(text).split(";")):
            a, b = (int(v) for v in run.split("-"))
            cov[max(0, a): min(context, b + 1)] += 1
    return cov


def tiling(features: pd.DataFrame, context: int, r: FindingRules) -> dict[str, Any]:
    """Finding 4: each positional feature fires on one contiguous range; together they cover the positions.

    Every positional feature that fires (on at least half of the tokens) at some in-context position counts; one
    firing at a single position is a single run, as the note's dedicated early features are. No informative null:
    on a smooth W_pos (a helix) any direction rises above a threshold once, so single runs follow from the geometry,
    and scattering the firing positions at random gives a share near 0 that every real SAE beats; the verdict follows
    the rule, and the evidence reports how many features fire at a single position."""
    test = (f"share of positional features (firing at some in-context position) that fire on one contiguous run >= "
            f"{r.tiling_single_run_reproduced} and share of in-context positions covered by some run >= "
            f"{r.tiling_coverage} -> reproduced; single-run share >= {r.tiling_single_run_partly} -> partly; else not "
            "reproduced (no informative null: see docs/findings.md)")
    pos = features[features.kind == "positional"]
    k = np.array([sum(_run_lengths(t)) for t in pos.runs], dtype=np.int64)
    firing = pos[k >= 1]
    n_runs = firing.n_runs.to_numpy()
    single = float((n_runs == 1).mean()) if len(firing) else float("nan")
    cov = float((coverage_by_runs(features, context) > 0).mean()) if context else float("nan")
    value = {"single_run_share": single, "coverage": cov, "features": len(firing),
             "single_position_features": int((k == 1).sum())}
    note = {"single_run_share": 1.0, "coverage": 1.0}
    if not len(firing):
        return _undetermined(value, None, note, test, f"no positional feature fires (on half of the tokens) at any of "
                             f"positions 0..{context - 1}, so there is nothing to tile.")
    multi = int((n_runs >= 2).sum())
    med_out = float(firing.outside_span_share.median())
    good = single >= r.tiling_single_run_reproduced and cov >= r.tiling_coverage
    evidence = (f"Of {len(firing)} positional features firing (on at least half of the tokens) inside the context, "
                f"{int((k == 1).sum())} fire at a single position, {_of(multi, len(firing), 'features', 'fires', 'fire')}"
                f" in two or more separate runs: a single-run share of {_pct(single)}; a median {_pct(med_out)} of "
                f"their in-context activation lies outside the main span; runs cover {_pct(cov)} of positions "
                f"0..{context - 1}. No informative null (on a helix any direction fires on one run; scattered positions "
                f"give a share near 0). Rule: single-run share >= {r.tiling_single_run_reproduced} and coverage >= "
                f"{r.tiling_coverage} reproduced, single-run share >= {r.tiling_single_run_partly} partly.")
    return _finding(verdict_of(good, single >= r.tiling_single_run_partly), value, None, note, test, evidence)


def early_positions(features: pd.DataFrame, context: int, r: FindingRules) -> dict[str, Any]:
    """Finding 4b: early positions get dedicated (narrow) features that fire more strongly; later ones share wider
    features.

    Position-0 features are set aside (as in the note) and reported separately. Null: no association (Spearman 0),
    in closed form: scipy's asymptotic test of Spearman's rho (t approximation)."""
    test = (f"Spearman correlation, over positional features peaking after position 0, of span width with peak "
            f"position > 0 and of peak activation with peak position < 0, each different from the null of no "
            f"association at p < {r.early_alpha} (scipy's asymptotic test) -> reproduced; one of the two -> partly; "
            "else not reproduced")
    allpos = features[(features.kind == "positional") & (features.span_width > 0)]
    zero = allpos[allpos.peak_position == 0]
    pos = allpos[allpos.peak_position > 0]
    w_rho, w_p = spearman(pos.peak_position.to_numpy(float), pos.span_width.to_numpy(float))
    s_rho, s_p = spearman(pos.peak_position.to_numpy(float), pos.peak_mean.to_numpy(float))
    cov = coverage_by_runs(features, context)
    early = float(cov[: min(16, context)].mean()) if context else float("nan")
    rest = float(cov[16:].mean()) if context > 16 else float("nan")
    value = {"width_vs_peak_rho": w_rho, "width_vs_peak_p": w_p, "strength_vs_peak_rho": s_rho,
             "strength_vs_peak_p": s_p, "features_per_position_0_15": early, "features_per_position_16_on": rest,
             "position0_features": len(zero)}
    null = {"width_vs_peak_rho": 0.0, "strength_vs_peak_rho": 0.0, "method": "asymptotic t test of Spearman's rho"}
    note = "span width grows and peak strength falls with peak position"
    if not _ok(w_p) and not _ok(s_p):
        return _undetermined(value, null, note, test, f"{len(pos)} positional features peak after position 0 (at "
                             "least 3 with differing widths or strengths are needed), so no correlation could be "
                             "tested.")
    wider = w_rho > 0 and _ok(w_p) and w_p < r.early_alpha
    weaker = s_rho < 0 and _ok(s_p) and s_p < r.early_alpha

    def said(rho: float, p: float, sign: str) -> str:
        if p < r.early_alpha:
            side = "in the note" if (rho > 0) == (sign == "+") else "against the note"
            return f"significant at p < {r.early_alpha}, {side}'s direction"
        return f"not significant at p < {r.early_alpha}: no evidence either way"

    zero_txt = (f"; set aside, {len(zero)} position-0 feature{'s' if len(zero) != 1 else ''} ("
                + ", ".join(f"#{int(f)} peak activation {_num(float(m), 3)}" for f, m in zip(zero.feature, zero.peak_mean))
                + ")" if len(zero) else "")
    def stat(rho: float, p: float, sign: str) -> str:
        if not _ok(p):
            return "not testable (the values do not vary)"
        return f"Spearman {_num(rho, 2)} (asymptotic p = {_num(p, 2)}, {said(rho, p, sign)})"

    evidence = (f"Over {len(pos)} positional features peaking after position 0, span width against peak position: "
                f"{stat(w_rho, w_p, '+')}; peak activation against peak position: {stat(s_rho, s_p, '-')}; null: 0 for "
                f"both; rule: width rising and strength falling, each at p < {r.early_alpha}{zero_txt}; positions 0-15 "
                f"are covered by {_num(early, 3)} features on average, later ones by {_num(rest, 3)}.")
    return _finding(verdict_of(wider and weaker, wider or weaker), value, null, note, test, evidence)


def decoder_traces_helix(features: pd.DataFrame, r: FindingRules, helix_verdict: str = "reproduced") -> dict[str, Any]:
    """Finding 5: positional features' decoder directions, on the helix's top 3 PCs, sit at the W_pos rows of their
    peaks, in the order of their peaks (the note's Figure 1).

    Applies only where the helix finding holds ("reproduced" or "partly"): without a helix there is nothing to
    trace, and in the full space a decoder close to its encoder points at its peak's row almost by construction.
    Statistic: Spearman of peak position with the W_pos row nearest (cosine, top 3 PCs) to the decoder direction.
    Null: the same Spearman with the decoders permuted among the features (:data:`TABLE_DRAWS` permutations, seeded):
    directions that lie on the helix but not at their own feature's peak."""
    test = (f"only where the helix finding is reproduced or partly: Spearman correlation, over positional features "
            f"peaking after position 0, of peak position with the W_pos row nearest (cosine, top 3 PCs) to the "
            f"decoder direction >= {r.trace_reproduced} -> reproduced, >= {r.trace_partly} -> partly; either only "
            f"when beyond the decoders permuted among the features (p < {r.null_alpha}); else not reproduced")
    pos = features[(features.kind == "positional") & (features.peak_position > 0)]
    peak, near = pos.peak_position.to_numpy(float), pos.nearest_wpos_row_pc.to_numpy(float)
    rho, _ = spearman(peak, near)
    dist = float(np.median(np.abs(peak - near))) if len(pos) else float("nan")
    full = pos.nearest_wpos_row.to_numpy(float) if "nearest_wpos_row" in pos else np.full(len(pos), np.nan)
    rho_full, _ = spearman(peak, full)
    on_pcs = float(pos.decoder_pc_share.median()) if "decoder_pc_share" in pos and len(pos) else float("nan")
    tied = float(pos.enc_dec_cos.median()) if "enc_dec_cos" in pos and len(pos) else float("nan")
    perm = null_summary(permuted_spearman(peak, near, TABLE_DRAWS, TABLE_SEED), rho)
    value = {"spearman": rho, "median_distance": dist, "spearman_full_space": rho_full,
             "decoder_share_on_pcs": on_pcs, "encoder_decoder_cos": tied, "features": len(pos)}
    null = {"spearman": perm}
    note = "the crosses follow the helix"
    if helix_verdict not in ("reproduced", "partly"):
        return _undetermined(value, null, note, test, f"the helix finding is {helix_verdict}, so there is no helix for "
                             f"the decoder directions to trace (in the full space their nearest row follows the peak "
                             f"with Spearman {_num(rho_full, 2)}, which any decoder near its encoder shows).")
    if not _ok(rho) or not _drawn(perm):
        return _undetermined(value, null, note, test, f"{len(pos)} positional features peak after position 0 (at least "
                             "3 with differing peaks are needed).")
    beat = _beats(perm, r)
    evidence = (f"For {len(pos)} positional features the W_pos row nearest to the decoder direction on the helix's top "
                f"3 PCs follows the peak position with Spearman {_num(rho, 2)}, a median {_num(dist, 3)} positions away; "
                f"null, the decoders permuted among the features: {_null_txt(perm, ', seed 0')}. A median "
                f"{_pct(on_pcs)} of each decoder's squared norm lies on those 3 PCs; the median cosine of encoder and "
                f"decoder is {_num(tied, 2)} (near 1, the trace follows from the encoder's tuning). Rule: Spearman >= "
                f"{r.trace_reproduced} reproduced, >= {r.trace_partly} partly, beyond the null.")
    return _finding(verdict_of(_ok(rho) and rho >= r.trace_reproduced and beat, _ok(rho) and rho >= r.trace_partly and beat),
                    value, null, note, test, evidence)


TOKEN_COLUMNS = ["token_id", "token", "weight", "n_nonpositional", "n_flat", "flat_share", "max_cv", "most_bent_feature",
                 "n_positional", "positional_flat_share"]
#: Frequency bands of token_profiles: ranks by token weight (0-based, end exclusive).
TOKEN_BANDS = ((0, 100), (100, 1000), (1000, 10000), (10000, None))


def token_profiles(tokens: pd.DataFrame, context: int, token: str, r: FindingRules,
                   nulls: dict[str, Any] | None = None) -> dict[str, Any]:
    """Finding 6: a token's top token features are flat over positions (positional ones are bumps), over every token.

    ``tokens`` is ``tokens.csv`` (:data:`TOKEN_COLUMNS`, one row per token, exact over the context). A token is
    tested when at least ``flat_min_features`` of its top features are non-positional (fewer cannot show a pattern);
    it is flat when at least ``flat_token`` of them have std/mean <= ``flat_cv``. Null: the same statistic for the
    random dictionary drawn from the grid's covariance (50 draws on 192 tokens drawn by weight): how flat
    features that mix token and position directions as the embeddings do would look. Reported by frequency band."""
    test = (f"share of tested tokens (weighted by the token weights; a token is tested when at least "
            f"{r.flat_min_features} of its top features are non-positional) for which at least {r.flat_token} of those "
            f"have std/mean <= {r.flat_cv} over positions 0..{context - 1}: >= {r.flat_reproduced} -> reproduced; >= "
            f"{r.flat_partly} -> partly; either only when beyond the random dictionary (p < {r.null_alpha}); else not "
            "reproduced")
    note = "flat lines plus low bumps"
    t = tokens[tokens.n_nonpositional >= max(1, r.flat_min_features)]
    draws = (_nulls(nulls, "random_dictionary") or {}).get("token_flat")
    if not len(t):
        return _undetermined(None, {"share": null_summary(draws, None)}, note, test, f"no token has {r.flat_min_features} "
                             "or more non-positional features among its top features, so none could be tested.")
    w = t.weight.to_numpy(float)
    w = w / w.sum() if w.sum() > 0 else np.full(len(t), 1 / len(t))
    passes = t.flat_share.to_numpy(float) >= r.flat_token
    share = float(w[passes].sum())
    unweighted = float(passes.mean())
    null = {"share": null_summary(draws, share)}
    ranked = tokens.sort_values(["weight", "token_id"], ascending=[False, True]).reset_index(drop=True)
    rank = pd.Series(np.arange(len(ranked)), index=ranked.token_id)
    t_rank = rank.loc[t.token_id].to_numpy()
    bands = {}
    for lo, hi in TOKEN_BANDS:
        sel = (t_rank >= lo) & (t_rank < (hi if hi is not None else len(ranked) + 1))
        if lo < len(ranked):
            label = f"{lo}-{hi - 1}" if hi is not None else f"{lo}+"
            bands[label] = {"tested": int(sel.sum()), "flat_share": float(passes[sel].mean()) if sel.any() else None}
    value = {"share": share, "unweighted": unweighted, "tested_tokens": len(t), "tokens": len(tokens),
             "tested_weight": float(tokens.weight[tokens.n_nonpositional >= max(1, r.flat_min_features)].sum()
                                    / max(1e-300, float(tokens.weight.sum()))), "bands": bands}
    if not _drawn(null["share"]):
        return _undetermined(value, null, note, test, "the random dictionary gave no token with enough non-positional "
                             "features, so the share has no null.")
    band_txt = "; ".join(f"ranks {k}: {_pct(v['flat_share'])} of {v['tested']}" for k, v in bands.items()
                         if v["tested"])
    mine = tokens[tokens.token.astype(str) == token]
    mine_txt = ""
    if len(mine):
        m = mine.iloc[0]
        flat_m = _of(int(m.n_flat), int(m.n_nonpositional), "top non-positional features", "is", "are")
        tested = " (tested)" if m.n_nonpositional >= r.flat_min_features else " (too few to test)"
        mine_txt = f" For {token!r}: {flat_m} flat{tested}." if m.n_nonpositional > 0 else (
            f" {token!r} activates no non-positional feature.")
    beat = _beats(null["share"], r)
    evidence = (f"{len(t)} of {len(tokens)} tokens ({_pct(value['tested_weight'])} of the token weight) have at least "
                f"{r.flat_min_features} non-positional features among their top features and are tested; "
                f"{_pct(share)} of them, frequency-weighted ({_pct(unweighted)} unweighted), are flat. By frequency "
                f"rank: {band_txt}. Null, the random dictionary drawn from the grid's covariance: "
                f"{_null_txt(null['share'])}. Rule: >= {r.flat_reproduced} reproduced, >= {r.flat_partly} partly, beyond "
                f"the null. Only the flat lines are tested, not the low bumps.{mine_txt}")
    return _finding(verdict_of(share >= r.flat_reproduced and beat, share >= r.flat_partly and beat), value, null, note,
                    test, evidence)


def _past(by_position: pd.DataFrame, context: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    return by_position[by_position.position < context], by_position[by_position.position >= context]


def _no_past(what: str, note_value: Any, test: str) -> dict[str, Any]:
    return _undetermined(None, None, note_value, test, f"no positions past the context were studied, so {what} could "
                         "not be tested.")


def worse_than_random(by_position: pd.DataFrame, context: int, r: FindingRules) -> dict[str, Any]:
    """Finding 7: past the context the SAE reconstructs worse than a random vector of the input's norm (the note's
    claim only).

    The random vector is itself the reference; no further null is informative (inside the context a working SAE
    beats a random vector by construction, so the in-context share is 0 for any usable SAE). The in-context share is
    reported beside it; the verdict follows the rule."""
    test = (f"share of past-context positions where FVU exceeds that of a random vector of the input's norm >= "
            f"{r.worse_reproduced} -> reproduced; >= {r.worse_partly} -> partly; else not reproduced (the random "
            "vector is the reference; no further null)")
    inside, past = _past(by_position, context)
    note = "worse than random past the context"
    if not len(past):
        return _no_past("length generalisation", note, test)
    ok = past.fvu.notna() & past.random_fvu.notna()
    if not ok.any():
        return _undetermined(None, None, note, test, "the reconstruction error past the context could not be computed.")
    worse = int((past.fvu[ok] > past.random_fvu[ok]).sum())
    share = worse / int(ok.sum())
    inside_share = float((inside.fvu > inside.random_fvu).mean()) if len(inside) else float("nan")
    value = {"share": share, "in_context_share": inside_share}
    evidence = (f"Past the context the SAE's FVU exceeds a random vector's (mean "
                f"{_num(float(past.random_fvu.mean()), 3)}) at {worse} of {int(ok.sum())} positions ({_pct(share)}); "
                f"inside the context at {_pct(inside_share)} (reported, not a null: a working SAE beats a random vector "
                f"there by construction; no further null: the random vector is the reference). Rule: >= "
                f"{r.worse_reproduced} reproduced, >= {r.worse_partly} partly.")
    return _finding(verdict_of(share >= r.worse_reproduced, share >= r.worse_partly), value, None, note, test, evidence)


def context_split_null(fvu: np.ndarray) -> np.ndarray:
    """Mean FVU of the in-context positions after a split point over that of the positions before it, at every split
    point ``s = 2 .. C-2``: how much later positions of the context already differ from earlier ones where nothing is
    broken (a trend inside the context shows here; random halves would hide it)."""
    x = np.asarray(fvu, dtype=np.float64)
    x = x[np.isfinite(x)]
    if len(x) < 4:
        return np.full(0, np.nan)
    out = np.array([x[s:].mean() / x[:s].mean() if x[:s].mean() > 0 else np.nan for s in range(2, len(x) - 1)])
    return out


def degrades_past_context(by_position: pd.DataFrame, context: int, r: FindingRules) -> dict[str, Any]:
    """Finding 7': past the context the reconstruction error grows (the note's figure, apart from the random
    baseline).

    Value: past-context mean FVU over in-context mean FVU. Null: the same ratio between the later and the earlier
    positions of the context, at every split point (:func:`context_split_null`, ``C - 3`` draws). Also reported: the
    share of positions where the SAE is worse than reconstructing with zero, past and inside."""
    test = (f"past-context mean FVU / in-context mean FVU >= {r.degrade_reproduced} -> reproduced; >= "
            f"{r.degrade_partly} -> partly; either only when beyond the same ratio between the later and earlier "
            f"positions of the context at every split point (p < {r.null_alpha}); else not reproduced")
    inside, past = _past(by_position, context)
    note = "the error blows up past the context"
    if not len(past):
        return _no_past("the error past the context", note, test)
    f_in = float(inside.fvu.mean()) if len(inside) else float("nan")
    f_out = float(past.fvu.mean())
    ratio = f_out / f_in if _ok(f_in) and f_in > 0 and _ok(f_out) else float("nan")
    split = null_summary(context_split_null(inside.fvu.to_numpy(float)), ratio)
    zero_past = float((past.fvu > past.zero_fvu).mean())
    zero_in = float((inside.fvu > inside.zero_fvu).mean()) if len(inside) else float("nan")
    value = {"fvu_ratio": ratio, "worse_than_zero_share": zero_past, "worse_than_zero_share_in_context": zero_in}
    null = {"fvu_ratio": split}
    if not _ok(ratio) or not _drawn(split):
        return _undetermined(value, null, note, test, "the in-context error is zero or could not be computed on at "
                             "least 4 positions, so there is no ratio or no null.")
    beat = _beats(split, r)
    evidence = (f"Past the context the mean FVU is {_num(f_out)}, {_num(ratio)}x the in-context {_num(f_in)}; null, "
                f"later against earlier positions of the context, at every split point: {_null_txt(split)}. Rule: >= "
                f"{r.degrade_reproduced}x reproduced, >= {r.degrade_partly}x partly, beyond the null. The SAE is worse "
                f"than reconstructing with zero at {_pct(zero_past)} of past-context positions ({_pct(zero_in)} "
                "inside).")
    return _finding(verdict_of(ratio >= r.degrade_reproduced and beat, ratio >= r.degrade_partly and beat), value, null,
                    note, test, evidence)


BREAK_SHUFFLES = 1000
BREAK_SEED = 0


def _rank_rows(x: np.ndarray) -> np.ndarray:
    """Average ranks along the last axis (ties averaged, as Spearman's)."""
    return np.apply_along_axis(rankdata, -1, x)


def shuffled_tracking(app: np.ndarray, near: np.ndarray, n: int = BREAK_SHUFFLES, seed: int = BREAK_SEED) -> tuple[np.ndarray, np.ndarray]:
    """Spearman and median ``|app - near|`` with ``near`` shuffled across the positions, ``n`` times (seeded): the
    tracking a code would show if the apparent position ignored which row is nearest."""
    ok = np.isfinite(app) & np.isfinite(near)
    a, b = app[ok], near[ok]
    if len(a) < 3:
        return np.full(n, np.nan), np.full(n, np.nan)
    rng = np.random.default_rng(seed)
    perm = np.stack([b[rng.permutation(len(b))] for _ in range(n)])
    dist = np.median(np.abs(a[None, :] - perm), axis=1)
    ra, rb = rankdata(a), _rank_rows(perm)
    ra, rb = ra - ra.mean(), rb - rb.mean(axis=1, keepdims=True)
    den = np.sqrt((ra**2).sum() * (rb**2).sum(axis=1))
    rho = np.where(den > 0, (rb @ ra) / np.where(den > 0, den, 1), np.nan)
    return rho, dist


def positional_break(by_position: pd.DataFrame, context: int, r: FindingRules,
                     features: pd.DataFrame | None = None) -> dict[str, Any]:
    """Finding 7a: past the context positional features keep firing, and the apparent position (their
    activation-weighted peak) tracks the nearest in-context W_pos row (cosine, full space).

    Null: the same Spearman and median distance with the nearest rows shuffled across the past positions
    (:func:`shuffled_tracking`, :data:`BREAK_SHUFFLES` shuffles, seeded): the Spearman must beat the shuffles at
    ``null_alpha`` and the distance must lie below their ``null_alpha`` quantile. The true position is reported beside
    it; it is no null for the distance, since every peak lies inside the context and every past position outside."""
    test = (f"past the context, some positional feature fires (on half of the tokens) at >= {r.break_firing} of "
            f"positions and the apparent position tracks the nearest in-context W_pos row (Spearman >= "
            f"{r.break_track} and beyond the same Spearman with the rows shuffled across past positions, p < "
            f"{r.null_alpha}; median distance below the shuffles', p < {r.null_alpha}) -> reproduced; firing but not "
            "tracking -> partly; silent -> not reproduced")
    note = "profiles go strange: the SAE thinks it is at an earlier position"
    _, past = _past(by_position, context)
    if not len(past):
        return _no_past("positional breakage", note, test)
    if "n_positional_firing" not in past or not past.n_positional_firing.notna().any():
        return _undetermined(None, None, note, test, "the positional code past the context was not computed.")
    if features is not None and not (features.kind == "positional").any():
        return _undetermined(None, None, note, test, "the SAE has no positional feature, so none can break.")
    firing = float((past.n_positional_firing > 0).mean())
    app, near, true = (past[c].to_numpy(float) for c in ("apparent_position", "nearest_context_row", "position"))
    rho_near, _ = spearman(app, near)
    rho_true, _ = spearman(app, true)
    ok = np.isfinite(app)
    d_near = float(np.median(np.abs(app[ok] - near[ok]))) if ok.any() else float("nan")
    d_true = float(np.median(np.abs(app[ok] - true[ok]))) if ok.any() else float("nan")
    rho_sh, d_sh = shuffled_tracking(app, near)
    rho_null = null_summary(rho_sh, rho_near)
    d_null = null_summary(d_sh, d_near, higher=False)
    value = {"past_firing_share": firing, "spearman_nearest_row": rho_near, "distance_nearest_row": d_near,
             "spearman_true_position": rho_true, "distance_true_position": d_true}
    null = {"spearman_nearest_row": rho_null, "distance_nearest_row": d_null}
    fires = firing >= r.break_firing
    ok_rows = np.isfinite(app) & np.isfinite(near)
    constant = fires and ok_rows.sum() >= 3 and (np.ptp(near[ok_rows]) == 0 or np.ptp(app[ok_rows]) == 0)
    if constant:
        return _undetermined(value, null, note, test, f"some positional feature fires at {_pct(firing)} of past positions, "
                             f"but the {'nearest in-context row' if np.ptp(near[ok_rows]) == 0 else 'apparent position'} "
                             f"is the same at every one (median distance {_num(d_near)} positions), so tracking cannot be "
                             "told from chance by ranks or by shuffling.")
    if not fires:
        ev = (f"Past the context the positional features are silent: some fires at only {_pct(firing)} of positions "
              f"(rule: >= {_pct(r.break_firing)}), so nothing there says the SAE thinks it is at an earlier position.")
        return _finding("not reproduced", value, null, note, test, ev)
    tracks = (_ok(rho_near) and rho_near >= r.break_track and _beats(rho_null, r) and _ok(d_near)
              and _beats(d_null, r))
    ev = (f"Past the context some positional feature fires at {_pct(firing)} of positions (a median "
          f"{_num(float(past.n_positional_firing.median()))} at once); the apparent position tracks the nearest "
          f"in-context W_pos row with Spearman {_num(rho_near, 2)} and a median distance of {_num(d_near)} positions; "
          f"null, the rows shuffled across past positions ({BREAK_SHUFFLES} shuffles, seed {BREAK_SEED}): Spearman "
          f"{_null_txt(rho_null)}; distance {_null_txt(d_null)}. Against the true position: Spearman "
          f"{_num(rho_true, 2)}, {_num(d_true)} positions away (no null for the distance: peaks lie inside the "
          f"context). Rule: Spearman >= {r.break_track}, both beyond the shuffles.")
    return _finding(verdict_of(fires and tracks, fires), value, null, note, test, ev)


def semantic_break(by_position: pd.DataFrame, features: pd.DataFrame, context: int, r: FindingRules) -> dict[str, Any]:
    """Finding 7b: semantic features break past the context: they get noisy on the tokens they fire on, and features
    fire on tokens they never fire on inside (spurious firing). Both halves -> reproduced; one -> partly.

    Noise: ``semantic_deviation`` (by_position.csv): over the (token, semantic feature) pairs of the token sample that
    fire inside the context, ``sum |f(t, p) - m(t)| / sum m(t)``, ``m`` the pair's in-context mean: a share of their
    own in-context activation, whatever the vocabulary's size or the firing rate. Its null: the same deviation at
    the in-context positions (one draw per position); the past mean must exceed the in-context mean by
    ``spread_increase`` and beat the in-context positions at ``null_alpha``. Spurious firing (exact, all tokens): its
    null is its leave-one-position-out value inside the context (``spurious_null_per_token``)."""
    test = (f"noise: the firing pairs' deviation from their in-context activation, past minus inside, >= "
            f"{r.spread_increase} of that activation and beyond every in-context position's deviation (p < "
            f"{r.null_alpha}); spurious: features per token past the context >= {r.spurious_min} and >= "
            f"{r.spurious_factor}x its in-context leave-one-position-out null; both -> reproduced; one -> partly; "
            "neither -> not reproduced")
    note = "token features get noisy and spurious features fire"
    inside, past = _past(by_position, context)
    if not len(past):
        return _no_past("semantic breakage", note, test)
    if not (features.kind == "semantic").any():
        return _undetermined(None, None, note, test, "the SAE has no semantic feature, so none can break.")
    col = "semantic_deviation"
    dev_in = float(inside[col].mean()) if col in inside and len(inside) else float("nan")
    dev_past = float(past[col].mean()) if col in past else float("nan")
    inc = dev_past - dev_in if _ok(dev_past) and _ok(dev_in) else float("nan")
    noise_null = null_summary(inside[col].to_numpy(float) if col in inside else None, dev_past)
    spur = float(past.spurious_per_token.mean()) if "spurious_per_token" in past else float("nan")
    spur_null = (float(inside.spurious_null_per_token.mean()) if "spurious_null_per_token" in inside and len(inside)
                 else float("nan"))
    value = {"spurious_per_token": spur, "deviation_past": dev_past, "deviation_in_context": dev_in,
             "deviation_increase": inc}
    null = {"spurious_per_token": {"leave_one_position_out": spur_null}, "deviation_past": noise_null}
    noise_ok = _ok(inc) and _drawn(noise_null)
    spur_ok = _ok(spur) and _ok(spur_null)
    if not noise_ok and not spur_ok:
        return _undetermined(value, null, note, test, "no semantic feature fires on the token sample inside the "
                             "context and spurious firing was not computed, so neither half could be tested.")
    noisy = noise_ok and inc >= r.spread_increase and _beats(noise_null, r)
    spurious = spur_ok and spur >= r.spurious_min and spur >= r.spurious_factor * spur_null
    missing = ("" if noise_ok and spur_ok else
               " Only one half could be tested (" + ("spurious firing" if not spur_ok else "the deviation")
               + " was not computed), so the verdict is at most partly.")
    evidence = (f"Past the context each token fires {_num(spur)} features per position that it fires nowhere inside it "
                f"(exact, all tokens); null, leave one position out inside the context: {_num(spur_null)}. On the token "
                f"sample, semantic features that fire on a token inside the context stray from their in-context "
                f"activation by {_pct(dev_past)} of it past the context against {_pct(dev_in)} inside (an increase of "
                f"{_num(inc, 2)}); null, the in-context positions' deviations: {_null_txt(noise_null)}. Rule: spurious "
                f">= {r.spurious_min} and >= {r.spurious_factor}x the null; deviation up by >= {r.spread_increase} and "
                f"beyond the null; both reproduced, one partly.{missing}")
    verdict = verdict_of(noisy and spurious, noisy or spurious)
    return _finding(verdict, value, null, note, test, evidence)


def compute_findings(features: pd.DataFrame, by_position: pd.DataFrame, context: int, spectrum: np.ndarray,
                     pca_rows: tuple[int, int], token: str, rules: FindingRules | None = None,
                     tokens: pd.DataFrame | None = None, nulls: dict[str, Any] | None = None,
                     geometry: dict[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    """All findings, keyed as in :data:`FINDINGS`, from the three tables, the W_pos PCA spectrum, the null draws
    (``summary["nulls"]``: ``helix_random_walk_top3``, ``helix_shuffled_steps``, ``random_dictionary``) and the
    weight-side statistics (``summary["geometry"]``: the helix's ``smoothness``, ``curve_share`` and ``tangent_share``,
    and the embeddings' geometry)."""
    r = rules or FindingRules()
    toks = tokens if tokens is not None else pd.DataFrame(columns=TOKEN_COLUMNS)
    out: dict[str, dict[str, Any]] = {}
    out["helix"] = helix(spectrum, pca_rows[0], pca_rows[1], r, nulls, geometry)
    out["positional_count"] = positional_count(features, r, nulls)
    out["disjoint"] = disjoint(features, r, nulls, geometry)
    out["tiling"] = tiling(features, context, r)
    out["early_positions"] = early_positions(features, context, r)
    out["decoder_traces_helix"] = decoder_traces_helix(features, r, out["helix"]["verdict"])
    out["token_profiles"] = token_profiles(toks, context, token, r, nulls)
    out["worse_than_random"] = worse_than_random(by_position, context, r)
    out["degrades_past_context"] = degrades_past_context(by_position, context, r)
    out["positional_break"] = positional_break(by_position, context, r, features)
    out["semantic_break"] = semantic_break(by_position, features, context, r)
    return out


def _p_txt(summary: Any) -> str:
    return f" (p {_p(summary.get('p_value'))})" if isinstance(summary, dict) and _ok(summary.get("p_value")) else ""


def _median_of(summary: Any, fmt: str = "num") -> str:
    if not isinstance(summary, dict) or not _ok(summary.get("median")):
        return "n/a"
    m = float(summary["median"])
    if fmt == "rho":
        return f"{0.0 if abs(m) < 0.005 else m:.2f}"
    return _pct(m) if fmt == "pct" else _num(m)


def headline(key: str, f: dict[str, Any]) -> tuple[str, str]:
    """The finding's value and null in a few words (README's table, the report's first table, the CLI): the
    numbers the verdict reads first, each null as its median with the value's p value. One place for every reader."""
    v, n = f.get("value"), f.get("null")
    v = v if isinstance(v, dict) else {}
    n = n if isinstance(n, dict) else {}
    if f.get("verdict") == "undetermined" and not v:
        return "n/a (undetermined)", "n/a"
    if key == "helix":
        return (f"top-3 share {_num(v.get('top3'))}; path smoothness {_num(v.get('smoothness'), 2)}",
                f"random walks {_median_of(n.get('top3_random_walk'))}{_p_txt(n.get('top3_random_walk'))}; shuffled "
                f"steps {_median_of(n.get('smoothness_shuffled_steps'), 'rho')}{_p_txt(n.get('smoothness_shuffled_steps'))}")
    if key == "positional_count":
        return (f"{v.get('count')} features ({_pct(v.get('share_of_live'))} of live); drop {_num(v.get('gap_ratio'))}x",
                f"random dictionary's drop {_median_of(n.get('gap_ratio'))}x{_p_txt(n.get('gap_ratio'))}")
    if key == "disjoint":
        kinds = v.get("by_kind", {})
        per = ", ".join(f"{k} {_pct(x.get('share'))}" for k, x in kinds.items() if x.get("features"))
        return (f"{_pct(v.get('share'))} on one axis ({per})",
                f"random dictionary {_median_of(n.get('share'), 'pct')}{_p_txt(n.get('share'))}")
    if key == "tiling":
        return (f"{_pct(v.get('single_run_share'))} single-run, {_pct(v.get('coverage'))} covered",
                "none (see the evidence)")
    if key == "early_positions":
        return (f"Spearman {_num(v.get('width_vs_peak_rho'), 2)} (p {_p(v.get('width_vs_peak_p'))}), "
                f"{_num(v.get('strength_vs_peak_rho'), 2)} (p {_p(v.get('strength_vs_peak_p'))})", "0 (no association)")
    if key == "decoder_traces_helix":
        return (f"Spearman {_num(v.get('spearman'), 2)}",
                f"permuted decoders {_median_of(n.get('spearman'), 'rho')}{_p_txt(n.get('spearman'))}")
    if key == "token_profiles":
        return (f"{_pct(v.get('share'))} of tested tokens ({_pct(v.get('tested_weight'))} of the weight)",
                f"random dictionary {_median_of(n.get('share'), 'pct')}{_p_txt(n.get('share'))}")
    if key == "worse_than_random":
        return f"{_pct(v.get('share'))} of past positions", "none (the random vector is the reference)"
    if key == "degrades_past_context":
        return (f"FVU {_num(v.get('fvu_ratio'))}x in-context",
                f"later/earlier context {_median_of(n.get('fvu_ratio'))}x{_p_txt(n.get('fvu_ratio'))}")
    if key == "positional_break":
        return (f"fires at {_pct(v.get('past_firing_share'))}; tracks the nearest in-context row: Spearman "
                f"{_num(v.get('spearman_nearest_row'), 2)}",
                f"shuffled rows {_median_of(n.get('spearman_nearest_row'), 'rho')}{_p_txt(n.get('spearman_nearest_row'))}")
    if key == "semantic_break":
        spur = n.get("spurious_per_token", {})
        return (f"{_num(v.get('spurious_per_token'))} spurious features per token; deviation {_pct(v.get('deviation_past'))}",
                f"{_num(spur.get('leave_one_position_out') if isinstance(spur, dict) else None)}; inside "
                f"{_median_of(n.get('deviation_past'), 'pct')}{_p_txt(n.get('deviation_past'))}")
    return _num(None), _num(None)


#: What the note says, in a few words (the last column of README's and docs/findings.md's tables).
NOTE_SAYS = {"helix": "0.95: a helix", "positional_count": "about 50 of 24576 (0.20%)", "disjoint": "almost all features",
             "tiling": "one run each, all covered", "early_positions": "width grows, strength falls with position",
             "decoder_traces_helix": "the crosses follow the helix", "token_profiles": "flat lines plus bumps",
             "worse_than_random": "worse than random", "degrades_past_context": "blows up",
             "positional_break": "the SAE thinks it is at an earlier position",
             "semantic_break": "noisy, and spurious firing"}


def markdown_table(findings: dict[str, dict[str, Any]], titles: dict[str, str]) -> str:
    """README's and docs/findings.md's table of verdicts, from ``summary.json["findings"]`` (``scripts/findings_table.py``
    prints it; a test holds both pages to the bundled pair's run)."""
    rows = ["| finding of the note | verdict | posfeat's number | null (same run) | GPT-2 small + res-jb (note) |",
            "|---|---|---|---|---|"]
    for key, f in findings.items():
        value, null = headline(key, f)
        cells = [titles.get(key, key), f"**{f['verdict']}**", value, null, NOTE_SAYS.get(key, "")]
        rows.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
    return "\n".join(rows)
