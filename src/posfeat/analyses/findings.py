"""Verdicts on the note's findings, each computed from numbers posfeat also writes.

Every finding is an object ``{"verdict", "value", "note_value", "test", "evidence"}``: ``verdict`` is
``"reproduced"``, ``"partly"`` or ``"not reproduced"``; ``value`` is posfeat's number for the pair in
hand and ``note_value`` the note's (its words where it gives no number); ``test`` states the rule,
with its thresholds (the fields of :class:`FindingRules`, parameters of ``analyze``); ``evidence`` is
one sentence built from the numbers. Each function here reads only ``features.csv`` and
``by_position.csv`` (plus the PCA spectrum for the helix), so a verdict can be recomputed from the
files. A finding about the positions past the context is ``"not reproduced"`` when no such position
was studied, and says so.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as sstats

from .classify import knee_largest_gap, overlap

FINDINGS = ("helix", "positional_count", "disjoint", "tiling", "early_positions", "decoder_traces_helix", "token_profiles",
            "worse_than_random", "positional_break", "semantic_break")
VERDICTS = ("reproduced", "partly", "not reproduced")


@dataclass(frozen=True)
class FindingRules:
    """Thresholds of the verdict rules (documented in README; ``analyze(rules=...)``)."""

    helix_reproduced: float = 0.8  # top-3 PCs of W_pos rows 1..context-1 explain at least this
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
    flat_reproduced: float = 0.9  # share of the token's top non-positional features that are flat
    flat_partly: float = 0.5
    worse_reproduced: float = 0.9  # share of past-context positions where FVU exceeds the random vector's
    worse_partly: float = 0.5
    blowup_partly: float = 2.0  # ... or the past-context FVU is at least this multiple of the in-context FVU
    break_firing: float = 0.5  # share of past-context positions where some positional feature fires
    break_factor: float = 4.0  # firing peaks lie this many times farther from the true position than inside the context
    break_min_distance: float = 4.0  # ... and at least this many positions
    spurious_min: float = 0.5  # spurious features per token per position past the context
    spread_ratio: float = 2.0  # semantic spread past the context over the spread inside

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def verdict_of(reproduced: bool, partly: bool) -> str:
    return "reproduced" if reproduced else ("partly" if partly else "not reproduced")


def _finding(verdict: str, value: Any, note_value: Any, test: str, evidence: str) -> dict[str, Any]:
    return {"verdict": verdict, "value": value, "note_value": note_value, "test": test, "evidence": evidence}


def _pct(x: float) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{100 * x:.1f}%"


def _num(x: float, nd: int = 3) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{x:.{nd}g}"


def _untested(what: str, note_value: Any, test: str) -> dict[str, Any]:
    return _finding("not reproduced", None, note_value, test, f"No positions past the context were studied, so {what} could not be tested.")


# ---------------------------------------------------------------------------- the findings
def helix(spectrum: np.ndarray, first: int, last: int, r: FindingRules) -> dict[str, Any]:
    """Finding 1: W_pos rows 1..context-1 lie near a one-dimensional helix (top 3 PCs explain ~95%)."""
    top3 = float(np.sum(spectrum[:3]))
    nxt = ", ".join(_pct(float(v)) for v in spectrum[3:7])
    return _finding(verdict_of(top3 >= r.helix_reproduced, top3 >= r.helix_partly), top3, 0.95,
                    f"top-3 explained variance of W_pos rows {first}..{last} >= {r.helix_reproduced} -> reproduced; "
                    f">= {r.helix_partly} -> partly; else not reproduced",
                    f"The top 3 principal components of W_pos rows {first}..{last} explain {_pct(top3)} of their variance "
                    f"(the next ones: {nxt or 'none'}).")


def positional_count(features: pd.DataFrame, r: FindingRules) -> dict[str, Any]:
    """Finding 2: a small set of features is positional, separated by a drop in the sorted positional score."""
    live = features[features.kind != "dead"]
    rule = set(features.feature[features.kind == "positional"])
    gap = knee_largest_gap(features.positional_score.to_numpy())
    top = set(features.sort_values(["positional_score", "feature"], ascending=[False, True]).feature.head(gap))
    ov = overlap(top, rule)
    small = 1 <= len(rule) <= r.positional_max_fraction * max(1, len(live))
    verdict = verdict_of(small and ov["jaccard"] >= r.gap_jaccard_reproduced, len(rule) >= 1 and ov["jaccard"] >= r.gap_jaccard_partly)
    return _finding(verdict, len(rule), 50,
                    f"1 <= positional features <= {r.positional_max_fraction} of live features and the largest-gap cut of the sorted "
                    f"positional score agrees with the rule's set (Jaccard >= {r.gap_jaccard_reproduced}) -> reproduced; some positional "
                    f"features and Jaccard >= {r.gap_jaccard_partly} -> partly; else not reproduced",
                    f"{len(rule)} of {len(features)} features ({_pct(len(rule) / max(1, len(features)))}) are positional by the variance "
                    f"rule; the largest gap in the sorted positional scores cuts at {gap} (Jaccard {ov['jaccard']:.2f} with the rule's set); "
                    "the note found about 50 of 24576.")


def disjoint(features: pd.DataFrame, r: FindingRules) -> dict[str, Any]:
    """Finding 3: a feature's activation is almost entirely a function of position or of token."""
    live = features[features.kind != "dead"]
    pure = np.maximum(live.position_share.fillna(0), live.token_share.fillna(0)) >= r.disjoint_share
    frac = float(pure.mean()) if len(live) else float("nan")
    n_mixed = int((features.kind == "mixed").sum())
    high = int((live.interaction_share.fillna(0) >= 0.3).sum())
    return _finding(verdict_of(frac >= r.disjoint_reproduced, frac >= r.disjoint_partly), frac, "almost all features",
                    f"share of live features with max(position share, token share) >= {r.disjoint_share}: >= {r.disjoint_reproduced} "
                    f"-> reproduced; >= {r.disjoint_partly} -> partly; else not reproduced",
                    f"{_pct(frac)} of the {len(live)} live features have a position or token share of at least {r.disjoint_share}; "
                    f"{n_mixed} are mixed and {high} have an interaction share of at least 0.3.")


def coverage_by_runs(features: pd.DataFrame, context: int) -> np.ndarray:
    """``Int[ndarray, "context"]``: how many positional features have a firing run over each in-context position."""
    cov = np.zeros(context, dtype=np.int64)
    for text in features.runs[features.kind == "positional"].fillna(""):
        for run in filter(None, str(text).split(";")):
            a, b = (int(v) for v in run.split("-"))
            cov[max(0, a): min(context, b + 1)] += 1
    return cov


def tiling(features: pd.DataFrame, context: int, r: FindingRules) -> dict[str, Any]:
    """Finding 4: each positional feature fires on one contiguous range; together they cover the positions."""
    pos = features[features.kind == "positional"]
    n_runs = pos.n_runs.to_numpy()
    single = float((n_runs == 1).mean()) if len(pos) else float("nan")
    cov = float((coverage_by_runs(features, context) > 0).mean())
    multi = int((n_runs >= 2).sum())
    med_out = float(pos.outside_span_share.median()) if len(pos) else float("nan")
    good = len(pos) > 0 and single >= r.tiling_single_run_reproduced and cov >= r.tiling_coverage
    fair = len(pos) > 0 and (single >= r.tiling_single_run_partly or cov >= r.tiling_coverage)
    return _finding(verdict_of(good, fair), {"single_run_share": single, "coverage": cov}, {"single_run_share": 1.0, "coverage": 1.0},
                    f"share of positional features with one firing run inside the context >= {r.tiling_single_run_reproduced} and share of "
                    f"in-context positions covered by some run >= {r.tiling_coverage} -> reproduced; single-run share >= "
                    f"{r.tiling_single_run_partly} or coverage met -> partly; else not reproduced",
                    f"{multi} of {len(pos)} positional features fire (on at least half of the tokens) in two or more separate runs inside the "
                    f"context; a median {_pct(med_out)} of a feature's in-context activation lies outside its main span; runs cover "
                    f"{_pct(cov)} of positions 0..{context - 1}.")


def _spearman(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan"), float("nan")
    res = sstats.spearmanr(x, y)
    return float(res.statistic), float(res.pvalue)


def early_positions(features: pd.DataFrame, context: int, r: FindingRules) -> dict[str, Any]:
    """Finding 4b: early positions get dedicated (narrow) features that fire more strongly; later ones share wider features."""
    pos = features[(features.kind == "positional") & (features.span_width > 0)]
    w_rho, w_p = _spearman(pos.peak_position.to_numpy(float), pos.span_width.to_numpy(float))
    s_rho, s_p = _spearman(pos.peak_position.to_numpy(float), pos.peak_mean.to_numpy(float))
    cov = coverage_by_runs(features, context)
    early, rest = float(cov[: min(16, context)].mean()), float(cov[16:].mean()) if context > 16 else float("nan")
    wider = w_rho > 0 and w_p < r.early_alpha
    weaker = s_rho < 0 and s_p < r.early_alpha
    value = {"width_vs_peak_rho": w_rho, "width_vs_peak_p": w_p, "strength_vs_peak_rho": s_rho, "strength_vs_peak_p": s_p,
             "features_per_position_0_15": early, "features_per_position_16_on": rest}
    return _finding(verdict_of(wider and weaker, wider or weaker), value,
                    "span width grows and peak strength falls with peak position",
                    f"Spearman correlation of span width with peak position > 0 and of peak activation with peak position < 0, each with "
                    f"p < {r.early_alpha} -> reproduced; one of the two -> partly; else not reproduced",
                    f"Over {len(pos)} positional features, span width against peak position: Spearman {_num(w_rho, 2)} (p = {_num(w_p, 2)}); "
                    f"peak activation against peak position: {_num(s_rho, 2)} (p = {_num(s_p, 2)}); positions 0-15 are covered by "
                    f"{_num(early, 3)} features on average, later ones by {_num(rest, 3)}.")


def decoder_traces_helix(features: pd.DataFrame, r: FindingRules) -> dict[str, Any]:
    """Finding 5: positional features' decoder directions, on the top 3 PCs, sit at the W_pos rows of their peaks."""
    pos = features[(features.kind == "positional") & (features.peak_position > 0)]
    rho, p = _spearman(pos.peak_position.to_numpy(float), pos.nearest_wpos_row_pc.to_numpy(float))
    dist = float(np.median(np.abs(pos.peak_position - pos.nearest_wpos_row_pc))) if len(pos) else float("nan")
    ok = math.isfinite(rho)
    return _finding(verdict_of(ok and rho >= r.trace_reproduced, ok and rho >= r.trace_partly), rho, "the crosses follow the helix",
                    f"Spearman correlation, over positional features peaking after position 0, of peak position with the W_pos row "
                    f"nearest (cosine, top 3 PCs) to the decoder direction >= {r.trace_reproduced} -> reproduced; >= {r.trace_partly} -> "
                    "partly; else not reproduced",
                    f"For {len(pos)} positional features the W_pos row nearest to the decoder direction on the top 3 PCs follows the peak "
                    f"position with Spearman {_num(rho, 2)} (p = {_num(p, 2)}); the median distance between them is {_num(dist, 3)} positions.")


def token_profiles(features: pd.DataFrame, by_position: pd.DataFrame, context: int, token: str, r: FindingRules) -> dict[str, Any]:
    """Finding 6: for a fixed token, its top token features are flat over positions (positional ones are bumps)."""
    cols = [c for c in by_position.columns if c.startswith("token_f")]
    inside = by_position[by_position.position < context]
    kinds = features.set_index("feature").kind
    flat, bent = [], []
    for c in cols:
        f = int(c[len("token_f"):])
        if kinds.get(f) == "positional":
            continue
        v = inside[c].to_numpy(float)
        cv = float(v.std() / v.mean()) if v.mean() > 0 else float("inf")
        (flat if cv <= r.flat_cv else bent).append(f)
    n = len(flat) + len(bent)
    share = len(flat) / n if n else float("nan")
    bent_txt = f"; not flat: {', '.join(map(str, bent[:6]))}" if bent else ""
    return _finding(verdict_of(n > 0 and share >= r.flat_reproduced, n > 0 and share >= r.flat_partly), share,
                    "flat lines plus low bumps",
                    f"share of the token's top non-positional features whose activation over positions 0..{context - 1} has std/mean <= "
                    f"{r.flat_cv}: >= {r.flat_reproduced} -> reproduced; >= {r.flat_partly} -> partly; else not reproduced",
                    f"Of the top {len(cols)} features of token {token!r}, {n} are not positional and {len(flat)} of them are flat over "
                    f"the context{bent_txt}.")


def _past(by_position: pd.DataFrame, context: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    return by_position[by_position.position < context], by_position[by_position.position >= context]


def worse_than_random(by_position: pd.DataFrame, context: int, r: FindingRules) -> dict[str, Any]:
    """Finding 7: past the context the reconstruction error blows up, worse than a random vector of the input's norm."""
    test = (f"share of past-context positions where FVU exceeds that of a random vector of the input's norm >= {r.worse_reproduced} -> "
            f"reproduced; >= {r.worse_partly}, or past-context FVU >= {r.blowup_partly}x the in-context FVU -> partly; else not reproduced")
    inside, past = _past(by_position, context)
    if not len(past):
        return _untested("length generalisation", "worse than random past the context", test)
    worse = int((past.fvu > past.random_fvu).sum())
    share = worse / len(past)
    ratio = float(past.fvu.mean() / inside.fvu.mean()) if len(inside) and inside.fvu.mean() > 0 else float("inf")
    return _finding(verdict_of(share >= r.worse_reproduced, share >= r.worse_partly or ratio >= r.blowup_partly), share,
                    "worse than random past the context", test,
                    f"Past the context the mean FVU is {_num(float(past.fvu.mean()), 3)} ({_num(ratio, 3)}x the in-context "
                    f"{_num(float(inside.fvu.mean()), 3)}); it exceeds a random vector's FVU (mean {_num(float(past.random_fvu.mean()), 3)}) at "
                    f"{worse} of {len(past)} positions.")


def positional_break(by_position: pd.DataFrame, context: int, r: FindingRules) -> dict[str, Any]:
    """Finding 7a: positional features break past the context (they fire for positions far from the true one)."""
    need = f"max({r.break_factor} x the in-context distance, {r.break_min_distance})"
    test = (f"past-context positions where some positional feature fires (on half of the tokens) >= {r.break_firing} and the median "
            f"distance of their peaks from the true position >= {need} -> reproduced; fewer firing (features fall silent) -> partly; "
            "firing features still peak near the true position -> not reproduced")
    inside, past = _past(by_position, context)
    if not len(past):
        return _untested("positional breakage", "profiles go strange past the context", test)
    d_in = float(inside.peak_distance.median()) if inside.peak_distance.notna().any() else float("nan")
    d_out = float(past.peak_distance.median()) if past.peak_distance.notna().any() else float("nan")
    firing = float((past.n_positional_firing > 0).mean())
    far = math.isfinite(d_out) and d_out >= max(r.break_factor * (d_in if math.isfinite(d_in) else 0.0), r.break_min_distance)
    mass = float(past.positional_mass.mean() / inside.positional_mass.mean()) if len(inside) and inside.positional_mass.mean() > 0 else float("nan")
    value = {"past_firing_share": firing, "peak_distance_in_context": d_in, "peak_distance_past_context": d_out, "positional_mass_ratio": mass}
    return _finding(verdict_of(firing >= r.break_firing and far, firing < r.break_firing), value,
                    "profiles go strange: the SAE thinks it is at an earlier position", test,
                    f"Past the context some positional feature fires at {_pct(firing)} of positions; the peaks of the features firing lie a "
                    f"median {_num(d_out, 3)} positions from the true position (inside the context: {_num(d_in, 3)}); their total mean "
                    f"activation there is {_num(mass, 3)}x that inside.")


def semantic_break(by_position: pd.DataFrame, context: int, r: FindingRules) -> dict[str, Any]:
    """Finding 7b: semantic features break past the context (noise, and features firing on tokens they never fire on inside)."""
    test = (f"spurious features per token past the context >= {r.spurious_min} and semantic spread past / inside >= {r.spread_ratio} "
            "-> reproduced; one of the two -> partly; else not reproduced")
    inside, past = _past(by_position, context)
    if not len(past):
        return _untested("semantic breakage", "token features get noisy and spurious features fire", test)
    spur = float(past.spurious_per_token.mean())
    s_in, s_out = float(inside.semantic_spread.mean()), float(past.semantic_spread.mean())
    ratio = s_out / s_in if s_in > 0 else (float("inf") if s_out > 0 else float("nan"))
    a, b = spur >= r.spurious_min, (math.isfinite(ratio) and ratio >= r.spread_ratio) or ratio == float("inf")
    return _finding(verdict_of(a and b, a or b), {"spurious_per_token": spur, "spread_ratio": ratio},
                    "token features get noisy and spurious features fire", test,
                    f"Past the context each token fires {_num(spur, 3)} features per position that it fires nowhere inside it (exact, all "
                    f"tokens); semantic features deviate from their in-context value by {_num(s_out, 3)} against {_num(s_in, 3)} inside "
                    f"({_num(ratio, 3)}x).")


def compute_findings(features: pd.DataFrame, by_position: pd.DataFrame, context: int, spectrum: np.ndarray, pca_rows: tuple[int, int],
                     token: str, rules: FindingRules | None = None) -> dict[str, dict[str, Any]]:
    """All findings, keyed as in :data:`FINDINGS`, from the two tables (and the W_pos PCA spectrum)."""
    r = rules or FindingRules()
    return {
        "helix": helix(spectrum, pca_rows[0], pca_rows[1], r),
        "positional_count": positional_count(features, r),
        "disjoint": disjoint(features, r),
        "tiling": tiling(features, context, r),
        "early_positions": early_positions(features, context, r),
        "decoder_traces_helix": decoder_traces_helix(features, r),
        "token_profiles": token_profiles(features, by_position, context, token, r),
        "worse_than_random": worse_than_random(by_position, context, r),
        "positional_break": positional_break(by_position, context, r),
        "semantic_break": semantic_break(by_position, context, r),
    }
