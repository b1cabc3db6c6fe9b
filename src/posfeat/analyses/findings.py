"""Verdicts on the note's findings, each computed from numbers posfeat also writes, and each read against a null.

Every finding is an object ``{"verdict", "value", "null", "note_value", "test", "evidence"}``: ``verdict``
is ``"reproduced"``, ``"partly"`` or ``"not reproduced"``; ``value`` is posfeat's number for the pair in
hand; ``null`` is the same statistic on a reference where the claim should not hold, or where nothing is
broken, computed in the same run (docs/findings.md says why each reference was chosen); ``note_value`` is
the note's number (its words where it gives no number); ``test`` states the rule, with its thresholds
(the fields of :class:`FindingRules`, parameters of ``analyze``); ``evidence`` is one or two sentences
built from the numbers, stating value, null and rule. A verdict is "reproduced" or "partly" only when
the value also beats its null; ``token_profiles`` has no informative null (``null`` is None, its evidence
says why) and follows its rule alone.

Each function here reads only ``features.csv``, ``by_position.csv`` and ``tokens.csv`` plus the
numbers of ``summary.json`` (the PCA spectrum and the nulls that need the weights:
``summary["nulls"]``), so a verdict can be recomputed from the files. A finding about the positions
past the context is ``"not reproduced"`` when no such position was studied, and says so.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
import pandas as pd
from scipy.special import stdtr  # scipy.stats would add about 0.45 s to every analyze's start-up

from ..core.errors import PosfeatError
from .classify import gap_window, knee_largest_gap, overlap

FINDINGS = ("helix", "positional_count", "disjoint", "tiling", "early_positions", "decoder_traces_helix", "token_profiles",
            "worse_than_random", "degrades_past_context", "positional_break", "semantic_break")
VERDICTS = ("reproduced", "partly", "not reproduced")
FINDING_KEYS = ("verdict", "value", "null", "note_value", "test", "evidence")
#: Rule fields that are not shares in [0, 1] (every other field is).
NOT_SHARES = frozenset({"spurious_min", "spurious_factor", "degrade_reproduced", "degrade_partly"})


@dataclass(frozen=True)
class FindingRules:
    """Thresholds of the verdict rules (documented in docs/findings.md; ``analyze(rules=...)``, ``--rule NAME=VALUE``).

    Every threshold is finite; shares lie in [0, 1]; each ``*_partly`` is at most its ``*_reproduced``.
    """

    helix_reproduced: float = 0.8  # top-3 PCs of W_pos rows 1..context-1 explain at least this (and more than the shuffled null)
    helix_partly: float = 0.6
    positional_max_fraction: float = 0.05  # positional features are a small set: at most this share of live features
    gap_jaccard_reproduced: float = 0.8  # the largest-gap cut of the sorted positional score agrees with the rule
    gap_jaccard_partly: float = 0.5
    disjoint_share: float = 0.9  # a feature is pure when position or token share reaches this
    disjoint_reproduced: float = 0.9  # ... and this many live features are pure
    disjoint_partly: float = 0.7
    tiling_single_run_reproduced: float = 0.8  # positional features firing on one contiguous run inside the context
    tiling_single_run_partly: float = 0.5
    tiling_coverage: float = 0.9  # share of in-context positions covered by some positional run
    early_alpha: float = 0.05  # significance of the Spearman correlations with peak position
    trace_reproduced: float = 0.8  # Spearman(peak, nearest W_pos row on the top-3 PCs) of positional features
    trace_partly: float = 0.5
    flat_cv: float = 0.1  # a token's profile on a feature is flat when std/mean over the context is at most this
    flat_token: float = 0.9  # a token's profiles are flat when this share of its top non-positional features are flat
    flat_reproduced: float = 0.8  # share of tokens (weighted) whose profiles are flat
    flat_partly: float = 0.5
    worse_reproduced: float = 0.9  # share of past-context positions where FVU exceeds the random vector's
    worse_partly: float = 0.5
    degrade_reproduced: float = 2.0  # past-context mean FVU over in-context mean FVU
    degrade_partly: float = 1.25
    break_firing: float = 0.5  # share of past-context positions where some positional feature fires
    break_track: float = 0.5  # Spearman of the apparent position with the nearest in-context W_pos row, past the context
    spurious_min: float = 0.5  # spurious features per token per position past the context
    spurious_factor: float = 2.0  # ... and at least this many times the in-context leave-one-position-out level
    spread_increase: float = 0.05  # semantic deviation past minus inside, in units of the semantic features' mean activation

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise PosfeatError(f"Rule {f.name}={v!r} is not a finite number; give a finite threshold.")
            if f.name not in NOT_SHARES and not 0.0 <= v <= 1.0:
                raise PosfeatError(f"Rule {f.name}={v!r} is a share and must lie within [0, 1]; give a value in that range.")
            if f.name in NOT_SHARES and v < 0:
                raise PosfeatError(f"Rule {f.name}={v!r} is negative; give a value of at least 0.")
            if f.name.endswith("_partly"):
                strict = f.name[: -len("_partly")] + "_reproduced"
                if hasattr(self, strict) and v > getattr(self, strict):
                    raise PosfeatError(f"Rule {f.name}={v!r} is above {strict}={getattr(self, strict)!r}; a 'partly' threshold must be "
                                       "at most its 'reproduced' one.")

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def verdict_of(reproduced: bool, partly: bool) -> str:
    return "reproduced" if reproduced else ("partly" if partly else "not reproduced")


def _finding(verdict: str, value: Any, null: Any, note_value: Any, test: str, evidence: str) -> dict[str, Any]:
    return {"verdict": verdict, "value": value, "null": null, "note_value": note_value, "test": test, "evidence": evidence}


def _ok(x: Any) -> bool:
    return x is not None and isinstance(x, (int, float, np.floating, np.integer)) and math.isfinite(float(x))


def _pct(x: float | None) -> str:
    return f"{100 * x:.1f}%" if _ok(x) else "n/a"


def _num(x: float | None, nd: int = 3) -> str:
    return f"{x:.{nd}g}" if _ok(x) else "n/a"


def _of(k: int, n: int, noun: str, verb_one: str, verb_many: str) -> str:
    """'1 of 3 features is', '2 of 3 features are': grammar that follows the count."""
    return f"{k} of {n} {noun} {verb_one if k == 1 else verb_many}"


def _beats(value: float, null: float | None, higher: bool = True) -> bool:
    """The value is on the claim's side of its null (a missing null does not block)."""
    if not _ok(value):
        return False
    if not _ok(null):
        return True
    return value > null if higher else value < null


def _untested(what: str, note_value: Any, test: str) -> dict[str, Any]:
    return _finding("not reproduced", None, None, note_value, test, f"No positions past the context were studied, so {what} could not be tested.")


# ---------------------------------------------------------------------------- the findings
def helix(spectrum: np.ndarray, first: int, last: int, r: FindingRules, null: float | None = None) -> dict[str, Any]:
    """Finding 1: W_pos rows 1..context-1 lie near a one-dimensional helix (top 3 PCs explain ~95%).

    Null: the same top-3 share of the same rows with each dimension shuffled independently across the rows
    (seeded): the same per-dimension spread, no curve."""
    top3 = float(np.sum(spectrum[:3]))
    nxt = ", ".join(_pct(float(v)) for v in spectrum[3:7])
    cum = np.cumsum(spectrum[:10])  # summary.json keeps the first 10
    n90: int | str = int(np.searchsorted(cum, 0.9) + 1) if len(cum) and cum[-1] >= 0.9 else f"more than {len(cum)}"
    shape = "a curve in 3 dimensions" if isinstance(n90, int) and n90 <= 3 else "not a 3-D helix"
    beat = _beats(top3, null)
    return _finding(verdict_of(top3 >= r.helix_reproduced and beat, top3 >= r.helix_partly and beat), top3, null, 0.95,
                    f"top-3 explained variance of W_pos rows {first}..{last} >= {r.helix_reproduced} -> reproduced; >= {r.helix_partly} "
                    "-> partly; either only when above the null (the same rows, each dimension shuffled across rows); else not reproduced",
                    f"The top 3 principal components of W_pos rows {first}..{last} explain {_pct(top3)} of their variance (the next ones: "
                    f"{nxt or 'none'}; {n90} components reach 90%, so {shape}); "
                    f"null, the same rows with each dimension shuffled across rows: {_pct(null)}; rule: >= "
                    f"{r.helix_reproduced} reproduced, >= {r.helix_partly} partly, above the null.")


def positional_count(features: pd.DataFrame, r: FindingRules, null_gap: float | None = None,
                     null_share: float | None = None) -> dict[str, Any]:
    """Finding 2: a small set of features is positional, separated by a drop in the sorted positional score.

    Null: a random dictionary (random encoder directions with the SAE's encoder norms and biases, exact over the
    same grid; ``summary["nulls"]``): the largest drop between its consecutive sorted positional scores
    (``null_gap``) and the share of its live features the same rule calls positional (``null_share``, reported).
    A random dictionary can show a larger drop than the SAE (nothing fixes the cut there), so the null can win; the
    largest drop *below* the SAE's own cut cannot (the cut is where the largest drop is)."""
    live = features[features.kind != "dead"]
    rule = set(features.feature[features.kind == "positional"])
    scores = features.positional_score.to_numpy(float)
    gap = knee_largest_gap(scores)
    s = np.sort(scores[np.isfinite(scores) & (scores > 0)])[::-1]
    window = s[: gap_window(len(s))]
    ratio = float(window[gap - 1] / window[gap]) if 0 < gap < len(window) else float("nan")
    top = set(features.sort_values(["positional_score", "feature"], ascending=[False, True]).feature.head(gap))
    ov = overlap(top, rule)
    n_live = max(1, len(live))
    share = len(rule) / n_live
    small = 1 <= len(rule) <= r.positional_max_fraction * n_live
    beat = _beats(ratio, null_gap)
    verdict = verdict_of(small and ov["jaccard"] >= r.gap_jaccard_reproduced and beat,
                         len(rule) >= 1 and ov["jaccard"] >= r.gap_jaccard_partly and beat)
    value = {"count": len(rule), "share_of_live": share, "gap_ratio": ratio}
    note_share = 50 / 24576
    return _finding(verdict, value, {"gap_ratio": null_gap, "share_of_live": null_share}, {"count": 50, "share_of_live": note_share},
                    f"1 <= positional features <= {r.positional_max_fraction} of live features and the largest-gap cut of the sorted "
                    f"positional score agrees with the rule's set (Jaccard >= {r.gap_jaccard_reproduced}) -> reproduced; some positional "
                    f"features and Jaccard >= {r.gap_jaccard_partly} -> partly; either only when the drop at the cut is larger than the "
                    "null (the largest drop in a random dictionary's sorted positional scores); else not reproduced",
                    f"{len(rule)} of {len(live)} live features ({_pct(share)}) are positional by the variance rule; the note found about "
                    f"50 of 24576 ({_pct(note_share)}) in GPT-2's res-jb SAE, so the shares differ by {_num(share / note_share, 2)}x and the "
                    f"counts are not comparable across widths. The largest gap in the sorted positional scores cuts at {gap} (Jaccard "
                    f"{ov['jaccard']:.2f} with the rule's set), a drop of {_num(ratio)}x; null, a random dictionary of the same encoder "
                    f"norms and biases: its largest drop is {_num(null_gap)}x and it calls {_pct(null_share)} of its live features "
                    f"positional; rule: at most {_pct(r.positional_max_fraction)} of live, Jaccard >= {r.gap_jaccard_reproduced}, drop "
                    "above the null's.")


def disjoint(features: pd.DataFrame, r: FindingRules, null: float | None = None) -> dict[str, Any]:
    """Finding 3: a feature's activation is almost entirely a function of position or of token.

    Null: the same share for a random dictionary (random encoder directions with the SAE's encoder norms
    and biases) on the same grid, where nothing makes a feature pick position or token."""
    live = features[features.kind != "dead"]
    pure = np.maximum(live.position_share.fillna(0), live.token_share.fillna(0)) >= r.disjoint_share
    frac = float(pure.mean()) if len(live) else float("nan")
    n_mixed = int((features.kind == "mixed").sum())
    high = int((live.interaction_share.fillna(0) >= 0.3).sum())
    beat = _beats(frac, null)
    return _finding(verdict_of(frac >= r.disjoint_reproduced and beat, frac >= r.disjoint_partly and beat), frac, null, "almost all features",
                    f"share of live features with max(position share, token share) >= {r.disjoint_share}: >= {r.disjoint_reproduced} "
                    f"-> reproduced; >= {r.disjoint_partly} -> partly; either only when above the null (a random dictionary of the "
                    "same encoder norms and biases); else not reproduced",
                    f"{_pct(frac)} of the {len(live)} live features have a position or token share of at least {r.disjoint_share} "
                    f"({n_mixed} are mixed, {high} have an interaction share of at least 0.3); null, a random dictionary on the same grid: "
                    f"{_pct(null)}; rule: >= {r.disjoint_reproduced} reproduced, >= {r.disjoint_partly} partly, above the null.")


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


def single_run_chance(k: int, context: int) -> float:
    """Probability that ``k`` positions drawn at random among ``context`` form one contiguous run: ``(C - k + 1) / C(C, k)``."""
    if k <= 0 or k > context:
        return float("nan")
    return (context - k + 1) / math.comb(context, k)


def tiling(features: pd.DataFrame, context: int, r: FindingRules) -> dict[str, Any]:
    """Finding 4: each positional feature fires on one contiguous range; together they cover the positions.

    Features firing at a single position are one run by definition: they are left out of both the single-run
    share and its null (and counted in the evidence). Null: the single-run share expected if each remaining
    positional feature's firing positions (as many as it has, at least 2) were scattered at random over the
    context (exact)."""
    pos = features[features.kind == "positional"]
    k = np.array([sum(_run_lengths(t)) for t in pos.runs], dtype=np.int64)
    one = int((k == 1).sum())
    many = pos[k >= 2]
    n_runs = many.n_runs.to_numpy()
    single = float((n_runs == 1).mean()) if len(many) else float("nan")
    cov = float((coverage_by_runs(features, context) > 0).mean())
    multi = int((n_runs >= 2).sum())
    chances = [single_run_chance(int(kk), context) for kk in k[k >= 2]]
    chances = [c for c in chances if math.isfinite(c)]
    null = float(np.mean(chances)) if chances else float("nan")
    med_out = float(many.outside_span_share.median()) if len(many) else float("nan")
    beat = _beats(single, null)
    fire_verb = "fires" if multi == 1 else "fire"
    where = "below" if _ok(single) and single < r.tiling_single_run_partly else "at or above"
    good = len(many) > 0 and single >= r.tiling_single_run_reproduced and cov >= r.tiling_coverage and beat
    fair = len(many) > 0 and single >= r.tiling_single_run_partly and beat
    return _finding(verdict_of(good, fair), {"single_run_share": single, "coverage": cov}, {"single_run_share": null},
                    {"single_run_share": 1.0, "coverage": 1.0},
                    f"share of positional features firing at two or more in-context positions that fire on one contiguous run >= "
                    f"{r.tiling_single_run_reproduced} and share of in-context positions covered by some run >= {r.tiling_coverage} -> "
                    f"reproduced; single-run share >= {r.tiling_single_run_partly} -> partly (coverage alone is evidence, not a verdict); "
                    "either only when above the null (the same number of firing positions scattered at random); else not reproduced",
                    f"Of the {len(many)} positional features firing (on at least half of the tokens) at two or more in-context positions "
                    f"({one} more fire at a single position, one run by definition, and are left out), {multi} {fire_verb} in two or more separate "
                    f"runs, so the single-run share is {_pct(single)} against a null of {_num(null)} (the same number of firing positions "
                    f"scattered at random): {'above' if beat else 'not above'} chance, {where}"
                    f" the rule; a median {_pct(med_out)} of their in-context activation lies outside the main span (a main span plus "
                    f"side runs); runs cover {_pct(cov)} of positions 0..{context - 1}; rule: single-run share >= "
                    f"{r.tiling_single_run_reproduced} and coverage >= {r.tiling_coverage} reproduced, single-run share >= "
                    f"{r.tiling_single_run_partly} partly, above the null.")


def rankdata(a: np.ndarray) -> np.ndarray:
    """Ranks from 1, ties given their average rank (``scipy.stats.rankdata``'s default, the same algorithm)."""
    a = np.asarray(a)
    order = np.argsort(a, kind="mergesort")
    inv = np.empty(len(a), np.intp)
    inv[order] = np.arange(len(a))
    s = a[order]
    first = np.r_[True, s[1:] != s[:-1]]
    dense = first.cumsum()[inv]
    bounds = np.r_[np.nonzero(first)[0], len(a)]
    return 0.5 * (bounds[dense] + bounds[dense - 1] + 1)


def spearman(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Spearman's rho and its two-sided p value from the t approximation with ``n - 2`` degrees of freedom
    (what ``scipy.stats.spearmanr`` returns for finite data); NaNs for fewer than 3 points or a constant side."""
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan"), float("nan")
    rx, ry = rankdata(x) - (len(x) + 1) / 2, rankdata(y) - (len(y) + 1) / 2
    rho = np.clip(np.float64(rx @ ry) / np.sqrt((rx @ rx) * (ry @ ry)), -1.0, 1.0)
    dof = len(x) - 2
    with np.errstate(divide="ignore"):  # rho = +-1: t is infinite, p is 0
        t = rho * np.sqrt(dof / ((1.0 + rho) * (1.0 - rho)))
    return float(rho), float(2 * stdtr(dof, -abs(t)))



def early_positions(features: pd.DataFrame, context: int, r: FindingRules) -> dict[str, Any]:
    """Finding 4b: early positions get dedicated (narrow) features that fire more strongly; later ones share wider features.

    Position-0 features are set aside (as in the note) and reported separately. Null: no association (Spearman
    0); each p value is scipy's asymptotic test of Spearman's rho (t approximation), not a permutation test."""
    allpos = features[(features.kind == "positional") & (features.span_width > 0)]
    zero = allpos[allpos.peak_position == 0]
    pos = allpos[allpos.peak_position > 0]
    w_rho, w_p = spearman(pos.peak_position.to_numpy(float), pos.span_width.to_numpy(float))
    s_rho, s_p = spearman(pos.peak_position.to_numpy(float), pos.peak_mean.to_numpy(float))
    cov = coverage_by_runs(features, context)
    early, rest = float(cov[: min(16, context)].mean()), float(cov[16:].mean()) if context > 16 else float("nan")
    wider = w_rho > 0 and w_p < r.early_alpha
    weaker = s_rho < 0 and s_p < r.early_alpha
    value = {"width_vs_peak_rho": w_rho, "width_vs_peak_p": w_p, "strength_vs_peak_rho": s_rho, "strength_vs_peak_p": s_p,
             "features_per_position_0_15": early, "features_per_position_16_on": rest, "position0_features": len(zero)}

    def said(rho: float, p: float, sign: str) -> str:
        if not _ok(p):
            return "not testable"
        if p < r.early_alpha:
            return f"significant at p < {r.early_alpha}, {'in the note' if (rho > 0) == (sign == '+') else 'against the note'}'s direction"
        return f"not significant at p < {r.early_alpha}: no evidence either way"

    zero_txt = (f"; set aside, {len(zero)} position-0 feature{'s' if len(zero) != 1 else ''} "
                f"({', '.join(f'#{int(f)} peak activation {_num(float(m), 3)}' for f, m in zip(zero.feature, zero.peak_mean))})"
                if len(zero) else "")
    return _finding(verdict_of(wider and weaker, wider or weaker), value, {"width_vs_peak_rho": 0.0, "strength_vs_peak_rho": 0.0},
                    "span width grows and peak strength falls with peak position",
                    f"Spearman correlation, over positional features peaking after position 0, of span width with peak position > 0 and "
                    f"of peak activation with peak position < 0, each different from the null of no association at p < {r.early_alpha} "
                    "(scipy's asymptotic test) -> reproduced; one of the two -> partly; else not reproduced",
                    f"Over {len(pos)} positional features peaking after position 0, span width against peak position: Spearman "
                    f"{_num(w_rho, 2)} (asymptotic p = {_num(w_p, 2)}, {said(w_rho, w_p, '+')}); peak activation against peak position: "
                    f"{_num(s_rho, 2)} (p = {_num(s_p, 2)}, {said(s_rho, s_p, '-')}); null: 0 for both; rule: width rising and strength "
                    f"falling, each at p < {r.early_alpha}{zero_txt}; positions 0-15 are covered by {_num(early, 3)} features on average, "
                    f"later ones by {_num(rest, 3)}.")


def decoder_traces_helix(features: pd.DataFrame, r: FindingRules) -> dict[str, Any]:
    """Finding 5: positional features' decoder directions, on the top 3 PCs, sit at the W_pos rows of their peaks.

    Null: the median distance between a feature's peak and the nearest row of every *other* positional
    feature's decoder direction (a direction matched to the wrong feature); Spearman's null is 0. Also reported:
    the same agreement with the nearest row in the full space (``nearest_wpos_row``), which shows whether decoder
    directions point at their peak's W_pos row whatever the helix's shape."""
    pos = features[(features.kind == "positional") & (features.peak_position > 0)]
    peak, near = pos.peak_position.to_numpy(float), pos.nearest_wpos_row_pc.to_numpy(float)
    rho, p = spearman(peak, near)
    dist = float(np.median(np.abs(peak - near))) if len(pos) else float("nan")
    full = pos.nearest_wpos_row.to_numpy(float) if "nearest_wpos_row" in pos else np.full(len(pos), np.nan)
    rho_full, _ = spearman(peak, full)
    dist_full = float(np.median(np.abs(peak - full))) if len(pos) else float("nan")
    if len(pos) >= 2:
        d = np.abs(peak[:, None] - near[None, :])
        null = float(np.median(d[~np.eye(len(pos), dtype=bool)]))
    else:
        null = float("nan")
    ok = math.isfinite(rho)
    beat = _beats(dist, null, higher=False)
    return _finding(verdict_of(ok and rho >= r.trace_reproduced and beat, ok and rho >= r.trace_partly and beat),
                    {"spearman": rho, "median_distance": dist, "spearman_full_space": rho_full, "median_distance_full_space": dist_full},
                    {"spearman": 0.0, "median_distance": null}, "the crosses follow the helix",
                    f"Spearman correlation, over positional features peaking after position 0, of peak position with the W_pos row "
                    f"nearest (cosine, top 3 PCs) to the decoder direction >= {r.trace_reproduced} -> reproduced; >= {r.trace_partly} -> "
                    "partly; either only when the median distance between them is below the null (each direction matched to the other "
                    "features' peaks); else not reproduced",
                    f"For {len(pos)} positional features the W_pos row nearest to the decoder direction on the top 3 PCs follows the peak "
                    f"position with Spearman {_num(rho, 2)} (p = {_num(p, 2)}; null 0), a median {_num(dist, 3)} positions away against "
                    f"{_num(null, 3)} for directions matched to the other features' peaks; rule: Spearman >= {r.trace_reproduced} "
                    f"reproduced, >= {r.trace_partly} partly, distance below the null. In the full space the nearest row follows the peak "
                    f"with Spearman {_num(rho_full, 2)}, a median {_num(dist_full, 3)} positions away: the decoder directions point at "
                    "their peak's W_pos row, whatever the shape of W_pos (this is not evidence of a helix; see the helix finding).")


TOKEN_COLUMNS = ["token_id", "token", "weight", "n_nonpositional", "n_flat", "flat_share", "max_cv", "most_bent_feature",
                 "n_positional", "positional_flat_share"]


def token_profiles(tokens: pd.DataFrame, context: int, token: str, r: FindingRules) -> dict[str, Any]:
    """Finding 6: a token's top token features are flat over positions (positional ones are bumps), over every token.

    ``tokens`` is ``tokens.csv`` (:data:`TOKEN_COLUMNS`, one row per token, exact over the context). A token's
    profiles are flat when at least ``flat_token`` of its top non-positional features have std/mean <= ``flat_cv``.
    Tokens activating no non-positional feature are left out and named. There is no informative null: the
    same test on the tokens' top positional features is 0 by construction (a positional feature varies with
    position by definition), and a feature that is mostly a function of the token is flat by construction, so
    ``null`` is None and the evidence says so; the verdict follows the rule alone."""
    test = (f"share of tokens (weighted by the token weights) for which at least {r.flat_token} of their top non-positional features "
            f"have std/mean <= {r.flat_cv} over positions 0..{context - 1}: >= {r.flat_reproduced} -> reproduced; >= {r.flat_partly} -> "
            "partly; else not reproduced (no informative null exists for this test)")
    t = tokens[tokens.n_nonpositional > 0]
    if not len(t):
        return _finding("not reproduced", None, None, "flat lines plus low bumps", test, "No token activates any non-positional feature.")
    w = t.weight.to_numpy(float)
    w = w / w.sum() if w.sum() > 0 else np.full(len(t), 1 / len(t))
    passes = t.flat_share.to_numpy(float) >= r.flat_token
    share = float(w[passes].sum())
    unweighted = float(passes.mean())
    q = np.quantile(t.flat_share.to_numpy(float), [0.25, 0.5, 0.75])
    common = t[t.weight >= t.weight.quantile(0.9)]
    bent = common.sort_values(["flat_share", "weight", "token_id"], ascending=[True, False, True])
    worst = float(bent.flat_share.iloc[0]) if len(bent) else float("nan")
    tied = bent[bent.flat_share <= worst]
    bent_txt = ", ".join(f"{tok!r}" for tok in tied.token.astype(str).head(5)) + (f" and {len(tied) - 5} more" if len(tied) > 5 else "")
    freq = t.sort_values(["weight", "token_id"], ascending=[False, True]).head(8)
    k_top = int((tokens.n_nonpositional + tokens.n_positional).max())
    freq_txt = ", ".join(f"{tok!r} {int(n)}" for tok, n in zip(freq.token.astype(str), freq.n_nonpositional))
    dropped = tokens[tokens.n_nonpositional <= 0]
    drop_txt = (f" (left out: {len(dropped)} token{'s' if len(dropped) != 1 else ''} activating no non-positional feature, "
                + ", ".join(repr(str(x)) for x in dropped.token.head(5)) + (" ..." if len(dropped) > 5 else "") + ")") if len(dropped) else ""
    mine = tokens[tokens.token.astype(str) == token]
    mine_txt = ""
    if len(mine):
        m = mine.iloc[0]
        mine_txt = (f" For {token!r}: {_of(int(m.n_flat), int(m.n_nonpositional), 'top non-positional features', 'is', 'are')} flat."
                    if m.n_nonpositional > 0 else f" {token!r} activates no non-positional feature.")
    return _finding(verdict_of(share >= r.flat_reproduced, share >= r.flat_partly), share, None, "flat lines plus low bumps", test,
                    f"Over {len(t)} tokens{drop_txt}, {_pct(share)} frequency-weighted ({_pct(unweighted)} unweighted) have flat profiles "
                    f"on their top non-positional features (per-token flat share quartiles {_num(q[0], 2)} / {_num(q[1], 2)} / "
                    f"{_num(q[2], 2)}; non-positional features among the top {k_top} of the most frequent "
                    f"tokens: "
                    f"{freq_txt}; most bent of the most frequent tenth, at flat share {_num(worst, 2)}: {bent_txt}); no informative null "
                    "(positional features vary by definition, token features are flat by definition, so only the rule decides); rule: "
                    f">= {r.flat_reproduced} reproduced, >= {r.flat_partly} partly. Only the flat lines are tested, not the low bumps."
                    f"{mine_txt}")


def _past(by_position: pd.DataFrame, context: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    return by_position[by_position.position < context], by_position[by_position.position >= context]


def worse_than_random(by_position: pd.DataFrame, context: int, r: FindingRules) -> dict[str, Any]:
    """Finding 7: past the context the SAE reconstructs worse than a random vector of the input's norm (the note's claim only).

    Null: the same share inside the context, where nothing is broken."""
    test = (f"share of past-context positions where FVU exceeds that of a random vector of the input's norm >= {r.worse_reproduced} -> "
            f"reproduced; >= {r.worse_partly} -> partly; either only when above the same share inside the context (the null); else not "
            "reproduced")
    inside, past = _past(by_position, context)
    if not len(past):
        return _untested("length generalisation", "worse than random past the context", test)
    worse = int((past.fvu > past.random_fvu).sum())
    share = worse / len(past)
    null = float((inside.fvu > inside.random_fvu).mean()) if len(inside) else float("nan")
    beat = _beats(share, null)
    return _finding(verdict_of(share >= r.worse_reproduced and beat, share >= r.worse_partly and beat), share, null,
                    "worse than random past the context", test,
                    f"Past the context the SAE's FVU exceeds a random vector's (mean {_num(float(past.random_fvu.mean()), 3)}) at {worse} of "
                    f"{len(past)} positions ({_pct(share)}); null, the same share inside the context: {_pct(null)}; rule: >= "
                    f"{r.worse_reproduced} reproduced, >= {r.worse_partly} partly, above the null.")


def degrades_past_context(by_position: pd.DataFrame, context: int, r: FindingRules) -> dict[str, Any]:
    """Finding 7': past the context the reconstruction error grows (the note's figure, apart from the random baseline).

    Value: past-context mean FVU over in-context mean FVU. Null: the same ratio between the second and the
    first half of the context, where nothing is broken. Also reported: the share of positions where the SAE
    is worse than reconstructing with zero, past and inside."""
    test = (f"past-context mean FVU / in-context mean FVU >= {r.degrade_reproduced} -> reproduced; >= {r.degrade_partly} -> partly; "
            "either only when above the null (the second half of the context over its first half); else not reproduced")
    inside, past = _past(by_position, context)
    if not len(past):
        return _untested("the error past the context", "the error grows past the context", test)
    f_in, f_out = float(inside.fvu.mean()) if len(inside) else float("nan"), float(past.fvu.mean())
    ratio = f_out / f_in if _ok(f_in) and f_in > 0 else float("nan")
    half = context // 2
    first, second = inside[inside.position < half], inside[inside.position >= half]
    null = float(second.fvu.mean() / first.fvu.mean()) if len(first) and len(second) and first.fvu.mean() > 0 else float("nan")
    zero_past = float((past.fvu > past.zero_fvu).mean())
    zero_in = float((inside.fvu > inside.zero_fvu).mean()) if len(inside) else float("nan")
    beat = _beats(ratio, null)
    value = {"fvu_ratio": ratio, "worse_than_zero_share": zero_past}
    return _finding(verdict_of(_ok(ratio) and ratio >= r.degrade_reproduced and beat, _ok(ratio) and ratio >= r.degrade_partly and beat),
                    value, {"fvu_ratio": null, "worse_than_zero_share": zero_in}, "the error blows up past the context", test,
                    f"Past the context the mean FVU is {_num(f_out)}, {_num(ratio)}x the in-context {_num(f_in)}; null, the second half of "
                    f"the context over its first half: {_num(null)}x; rule: >= {r.degrade_reproduced}x reproduced, >= {r.degrade_partly}x "
                    f"partly, above the null. The SAE is worse than reconstructing with zero at {_pct(zero_past)} of past-context positions "
                    f"({_pct(zero_in)} inside).")


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


def positional_break(by_position: pd.DataFrame, context: int, r: FindingRules) -> dict[str, Any]:
    """Finding 7a: past the context positional features keep firing, and the apparent position (their
    activation-weighted peak) tracks the nearest in-context W_pos row (cosine, full space).

    Null: the same Spearman and median distance with the nearest rows shuffled across the past positions
    (:func:`shuffled_tracking`, seeded): the value must beat the shuffles' 95th percentile (Spearman) and 5th
    percentile (distance). The true position is reported beside it; it is no null for the distance, since
    every peak lies inside the context and every past position outside it."""
    test = (f"past the context, some positional feature fires (on half of the tokens) at >= {r.break_firing} of positions and the "
            f"apparent position tracks the nearest in-context W_pos row (Spearman >= {r.break_track}, above the 95th percentile of "
            "the same Spearman with the rows shuffled across past positions, and a median distance below those shuffles' 5th "
            "percentile) -> reproduced; firing but not tracking -> partly; silent -> not reproduced")
    _, past = _past(by_position, context)
    if not len(past):
        return _untested("positional breakage", "the SAE thinks it is at an earlier position", test)
    firing = float((past.n_positional_firing > 0).mean())
    app, near, true = (past[c].to_numpy(float) for c in ("apparent_position", "nearest_context_row", "position"))
    rho_near, _ = spearman(app, near)
    rho_true, _ = spearman(app, true)
    ok = np.isfinite(app)
    d_near = float(np.median(np.abs(app[ok] - near[ok]))) if ok.any() else float("nan")
    d_true = float(np.median(np.abs(app[ok] - true[ok]))) if ok.any() else float("nan")
    rho_sh, d_sh = shuffled_tracking(app, near)
    have = bool(np.isfinite(rho_sh).any())
    rho_q95 = float(np.nanquantile(rho_sh, 0.95)) if have else float("nan")
    d_q05 = float(np.nanquantile(d_sh, 0.05)) if np.isfinite(d_sh).any() else float("nan")
    rho_mean = float(np.nanmean(rho_sh)) if have else float("nan")
    d_mean = float(np.nanmean(d_sh)) if np.isfinite(d_sh).any() else float("nan")
    p_rho = float((np.sum(rho_sh >= rho_near) + 1) / (np.isfinite(rho_sh).sum() + 1)) if have and _ok(rho_near) else float("nan")
    fires = firing >= r.break_firing
    tracks = (_ok(rho_near) and rho_near >= r.break_track and _beats(rho_near, rho_q95)
              and _ok(d_near) and _beats(d_near, d_q05, higher=False))
    value = {"past_firing_share": firing, "spearman_nearest_row": rho_near, "distance_nearest_row": d_near}
    null = {"spearman_shuffled_q95": rho_q95, "spearman_shuffled_mean": rho_mean, "distance_shuffled_q05": d_q05,
            "distance_shuffled_mean": d_mean, "spearman_true_position": rho_true, "distance_true_position": d_true}
    if not fires:
        ev = (f"Past the context the positional features are silent: some fires at only {_pct(firing)} of positions (rule: >= "
              f"{_pct(r.break_firing)}), so nothing there says the SAE thinks it is at an earlier position.")
    else:
        ev = (f"Past the context some positional feature fires at {_pct(firing)} of positions (a median "
              f"{_num(float(past.n_positional_firing.median()))} at once); the apparent position tracks the nearest in-context W_pos "
              f"row with Spearman {_num(rho_near, 2)} and a median distance of {_num(d_near)} positions; null, the same rows shuffled "
              f"across past positions ({BREAK_SHUFFLES} shuffles, seed {BREAK_SEED}): Spearman {_num(rho_mean, 2)} on average (95th "
              f"percentile {_num(rho_q95, 2)}, permutation p = {_num(p_rho, 2)}), median distance {_num(d_mean)} on average (5th "
              f"percentile {_num(d_q05)}); against the true position: Spearman {_num(rho_true, 2)}, {_num(d_true)} positions away (no "
              f"null for the distance: peaks lie inside the context); rule: Spearman >= {r.break_track} and above the shuffles' 95th "
              "percentile, distance below their 5th.")
    return _finding(verdict_of(fires and tracks, fires), value, null, "profiles go strange: the SAE thinks it is at an earlier position",
                    test, ev)


def semantic_break(by_position: pd.DataFrame, features: pd.DataFrame, context: int, r: FindingRules) -> dict[str, Any]:
    """Finding 7b: semantic features break past the context (noise, and features firing on tokens they never fire on inside).

    Spurious firing's null is its leave-one-position-out value inside the context (``spurious_null_per_token``:
    features a token fires at an in-context p and at no other in-context q). The deviation of semantic features
    from their in-context value (on the token sample) is scaled by their mean activation when firing (``mean / fire`` over
    the exact grid, averaged over semantic features); its null is the same deviation inside the context."""
    test = (f"spurious features per token past the context >= {r.spurious_min} and >= {r.spurious_factor}x its in-context "
            f"leave-one-position-out null; semantic deviation (token sample) past minus inside >= {r.spread_increase} of the semantic "
            "features' mean activation when firing -> reproduced; one of the two -> partly; else not reproduced")
    inside, past = _past(by_position, context)
    if not len(past):
        return _untested("semantic breakage", "token features get noisy and spurious features fire", test)
    spur = float(past.spurious_per_token.mean())
    has_null = "spurious_null_per_token" in inside and len(inside)
    spur_null = float(inside.spurious_null_per_token.mean()) if has_null else float("nan")
    sem = features[(features.kind == "semantic") & (features.fire > 0)]
    scale = float((sem["mean"] / sem["fire"]).mean()) if len(sem) else float("nan")  # mean activation when firing (exact grid)
    s_in = float(inside.semantic_spread.mean()) / scale if _ok(scale) and scale > 0 else float("nan")
    s_out = float(past.semantic_spread.mean()) / scale if _ok(scale) and scale > 0 else float("nan")
    inc = s_out - s_in if _ok(s_out) and _ok(s_in) else float("nan")
    a = _ok(spur) and spur >= r.spurious_min and (not _ok(spur_null) or spur >= r.spurious_factor * spur_null)
    b = _ok(inc) and inc >= r.spread_increase
    return _finding(verdict_of(a and b, a or b), {"spurious_per_token": spur, "deviation_past": s_out},
                    {"spurious_per_token": spur_null, "deviation_past": s_in}, "token features get noisy and spurious features fire", test,
                    f"Past the context each token fires {_num(spur)} features per position that it fires nowhere inside it (exact, all "
                    f"tokens); null, leave one position out inside the context: {_num(spur_null)}; on the token sample, semantic features "
                    f"deviate from their in-context value by {_num(s_out)} of their mean activation when firing ({_num(scale)}) past the "
                    f"context against {_num(s_in)} inside (null), {_num(s_out * scale)} and {_num(s_in * scale)} unscaled (the same "
                    "quantity); rule: "
                    f">= {r.spurious_min} and >= {r.spurious_factor}x the null, and an increase of >= {r.spread_increase}.")


def compute_findings(features: pd.DataFrame, by_position: pd.DataFrame, context: int, spectrum: np.ndarray, pca_rows: tuple[int, int],
                     token: str, rules: FindingRules | None = None, tokens: pd.DataFrame | None = None,
                     nulls: dict[str, float] | None = None) -> dict[str, dict[str, Any]]:
    """All findings, keyed as in :data:`FINDINGS`, from the three tables, the W_pos PCA spectrum and ``nulls``
    (``summary["nulls"]``: ``helix_shuffled_top3``, ``disjoint_random_dictionary``, ``positional_random_dictionary_gap``,
    ``positional_random_dictionary_share``)."""
    r = rules or FindingRules()
    n = nulls or {}
    toks = tokens if tokens is not None else pd.DataFrame(columns=TOKEN_COLUMNS)
    return {
        "helix": helix(spectrum, pca_rows[0], pca_rows[1], r, n.get("helix_shuffled_top3")),
        "positional_count": positional_count(features, r, n.get("positional_random_dictionary_gap"),
                                             n.get("positional_random_dictionary_share")),
        "disjoint": disjoint(features, r, n.get("disjoint_random_dictionary")),
        "tiling": tiling(features, context, r),
        "early_positions": early_positions(features, context, r),
        "decoder_traces_helix": decoder_traces_helix(features, r),
        "token_profiles": token_profiles(toks, context, token, r),
        "worse_than_random": worse_than_random(by_position, context, r),
        "degrades_past_context": degrades_past_context(by_position, context, r),
        "positional_break": positional_break(by_position, context, r),
        "semantic_break": semantic_break(by_position, features, context, r),
    }
