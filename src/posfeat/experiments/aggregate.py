"""The aggregation: tables and statistics from the finished runs' records (``run.json``), and what
the data support.

Width sweep. The claim tested is the note's conjecture as the data can show it: *the number of
positional features grows with width*. It is tested as a trend across widths with seeds:
Page's L test (one-sided, seeds as blocks, widths in their order; an exact p for small sweeps) and
Spearman's rho over every run (one-sided). The power law is a description, not the claim: the
least-squares fit of log count on log width with a 95% interval on its exponent, the local
exponents between neighbouring widths (from the means), and a lack-of-fit F test (the fit's
residual against the pure error of the seeds at each width; a small p says the curve is not a
straight line in log-log). Counts cannot grow without bound: the ceiling drawn is the number of
positions the SAEs were trained on, and the fit's width at which it would reach it.

Context sweep. "Repaired" needs both halves: FVU past the original context within
``past_tolerance`` above the original SAE's in-context FVU, *and* the in-context FVU after
fine-tuning within ``in_context_tolerance`` above its value before. Both margins are reported.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as sstats

from .runner import CONTEXT_COLUMNS, WIDTH_COLUMNS

TREND_ALPHA = 0.05


def mean_sd(df: pd.DataFrame, by: str, cols: list[str]) -> pd.DataFrame:
    """Per value of ``by``: ``n_seeds`` and ``<col>`` (mean), ``<col>_sd`` (sample sd; NaN for one
    seed) for each column."""
    g = df.groupby(by, sort=True)
    out = pd.DataFrame({"n_seeds": g.size()})
    for c in cols:
        out[c] = g[c].mean()
        out[f"{c}_sd"] = g[c].std(ddof=1)
    return out.reset_index()


def power_law(widths: np.ndarray, values: np.ndarray, level: float = 0.95) -> dict[str, float]:
    """Least squares ``log count = alpha log width + log c`` over every run; ``alpha`` with a
    ``level`` t-interval."""
    ok = values > 0
    x, y = np.log(widths[ok]), np.log(values[ok])
    nan = float("nan")
    if len(np.unique(x)) < 2:
        return {
            "alpha": nan,
            "c": nan,
            "alpha_low": nan,
            "alpha_high": nan,
            "points": int(ok.sum()),
        }
    alpha, logc = np.polyfit(x, y, 1)
    if len(x) > 2:
        resid = y - (alpha * x + logc)
        se = float(np.sqrt(resid @ resid / (len(x) - 2) / ((x - x.mean()) ** 2).sum()))
        half = float(sstats.t.ppf(0.5 + level / 2, len(x) - 2)) * se
    else:
        half = nan
    return {
        "alpha": float(alpha),
        "c": float(np.exp(logc)),
        "alpha_low": float(alpha - half),
        "alpha_high": float(alpha + half),
        "points": int(ok.sum()),
    }


def lack_of_fit(widths: np.ndarray, values: np.ndarray, fit: dict[str, float]) -> dict[str, float]:
    """F test of the log-log line against the widths' own means: ``F = (SS_lof / (k - 2)) / (SS_pe /
    (n - k))``.

    ``SS_pe`` is the scatter of log counts around their width's mean (the seeds), ``SS_lof`` what
    the line misses beyond it. NaN when there are fewer than 3 widths or no replicate scatter."""
    ok = values > 0
    x, y = np.log(widths[ok]), np.log(values[ok])
    nan = {"F": float("nan"), "df_lack_of_fit": 0, "df_pure_error": 0, "p": float("nan")}
    levels = np.unique(x)
    k, n = len(levels), len(x)
    if k < 3 or n <= k or not math.isfinite(fit["alpha"]):
        return nan
    resid = y - (fit["alpha"] * x + math.log(fit["c"]))
    ss_pe = float(sum(((y[x == lv] - y[x == lv].mean()) ** 2).sum() for lv in levels))
    ss_lof = float(resid @ resid) - ss_pe
    if ss_pe <= 0:
        return {**nan, "df_lack_of_fit": k - 2, "df_pure_error": n - k}
    F = (ss_lof / (k - 2)) / (ss_pe / (n - k))
    return {
        "F": float(F),
        "df_lack_of_fit": k - 2,
        "df_pure_error": n - k,
        "p": float(sstats.f.sf(F, k - 2, n - k)),
    }


def local_exponents(table: pd.DataFrame, col: str = "positional") -> list[dict[str, float]]:
    """``log(m2 / m1) / log(w2 / w1)`` between neighbouring widths' mean counts."""
    out = []
    rows = table.sort_values("d_sae")
    for (w1, m1), (w2, m2) in zip(zip(rows.d_sae, rows[col]), zip(rows.d_sae[1:], rows[col][1:])):
        e = math.log(m2 / m1) / math.log(w2 / w1) if m1 > 0 and m2 > 0 else float("nan")
        out.append({"from": int(w1), "to": int(w2), "exponent": float(e)})
    return out


def trend_test(
    runs: pd.DataFrame, col: str = "positional", alpha: float = TREND_ALPHA
) -> dict[str, Any]:
    """Does ``col`` grow with width? Page's L (seeds with every width as blocks) and Spearman over
    all runs, both one-sided."""
    widths = sorted(runs.d_sae.unique())
    wide = (
        runs.pivot_table(index="seed", columns="d_sae", values=col, aggfunc="first")
        .reindex(columns=widths)
        .dropna()
    )
    page: dict[str, Any] = {"L": float("nan"), "p": float("nan"), "blocks": len(wide)}
    if (
        len(widths) >= 3 and len(wide) >= 2
    ):  # Page's L needs at least 3 widths and 2 seeds; else Spearman alone
        res = sstats.page_trend_test(
            wide.to_numpy(float), method="exact" if len(wide) * len(widths) <= 60 else "auto"
        )
        page = {"L": float(res.statistic), "p": float(res.pvalue), "blocks": len(wide)}
    rho, p_rho = (float("nan"), float("nan"))
    if runs.d_sae.nunique() >= 2 and runs[col].nunique() >= 2:
        r = sstats.spearmanr(runs.d_sae, runs[col], alternative="greater")
        rho, p_rho = float(r.statistic), float(r.pvalue)
    p_main = page["p"] if math.isfinite(page["p"]) else p_rho
    grows = bool(math.isfinite(p_main) and p_main < alpha and (not math.isfinite(rho) or rho > 0))
    return {
        "page": page,
        "spearman_rho": rho,
        "spearman_p": p_rho,
        "alpha": alpha,
        "grows": grows,
        "test": "Page's L (one-sided, seeds as blocks)"
        if math.isfinite(page["p"])
        else "Spearman (one-sided, every run)",
    }


def width_statistics(runs: pd.DataFrame, context: int) -> dict[str, Any]:
    """Everything the width sweep says about the count against width (see module docstring)."""
    table = width_table(runs)
    w, v = runs.d_sae.to_numpy(float), runs.positional.to_numpy(float)
    fit = power_law(w, v)
    lof = lack_of_fit(w, v, fit)
    ceiling_width = (
        (context / fit["c"]) ** (1 / fit["alpha"])
        if math.isfinite(fit["alpha"]) and fit["alpha"] > 0
        else float("nan")
    )
    return {
        "trend": trend_test(runs),
        "power_law": fit,
        "lack_of_fit": lof,
        "local_exponents": local_exponents(table),
        "ceiling": {"positions": int(context), "fit_reaches_it_at_width": float(ceiling_width)},
    }


def width_table(runs: pd.DataFrame) -> pd.DataFrame:
    return mean_sd(
        runs,
        "d_sae",
        [
            "positional",
            "semantic",
            "mixed",
            "dead",
            "positional_mean_span",
            "fvu_in_context",
            "l0_in_context",
        ],
    )


def width_sentence(stats: dict[str, Any], widths: list[int], seeds: int) -> str:
    t, fit, lof = stats["trend"], stats["power_law"], stats["lack_of_fit"]
    p = t["page"]["p"] if math.isfinite(t["page"]["p"]) else t["spearman_p"]
    if not math.isfinite(p):
        return (
            "The trend of positional features with width cannot be tested on these runs ("
            f"{len(widths)} widths, {seeds} seed(s), "
            "counts that do not vary); sweep at least three widths with positional features."
        )
    head = (
        f"Positional features {'grow' if t['grows'] else 'are not shown to grow'} with width ("
        f"{t['test']}: p = {p:.2g} against "
        f"alpha {t['alpha']}; Spearman rho {t['spearman_rho']:.2f} over every run) across "
        f"{len(widths)} widths ({widths[0]}..{widths[-1]}), "
        f"{seeds} seed(s) each."
    )
    local = ", ".join(f"{e['exponent']:.2f}" for e in stats["local_exponents"])
    desc = (
        f" As a description, a power law width^{fit['alpha']:.2f} (95% CI {fit['alpha_low']:.2f} to "
        f"{fit['alpha_high']:.2f}); "
        f"local exponents {local}"
    )
    if math.isfinite(lof["p"]):
        desc += (
            f"; lack of fit F({lof['df_lack_of_fit']}, {lof['df_pure_error']}) = {lof['F']:.2f}, p "
            f"= {lof['p']:.2g}"
            + (
                " (the curve bends: the power law does not fit)"
                if lof["p"] < TREND_ALPHA
                else " (no evidence against the line)"
            )
        )
    return (
        head
        + desc
        + f"; reference: the {stats['ceiling']['positions']}-position training context (not a "
        "bound)."
    )


# ---------------------------------------------------------------------------- context sweep
def context_table(runs: pd.DataFrame) -> pd.DataFrame:
    order = {name: i for i, name in enumerate(dict.fromkeys(runs.sae))}
    cols = [c for c in CONTEXT_COLUMNS if c not in ("sae", "context", "seed", "steps")]
    table = mean_sd(runs, "sae", cols)
    table = table.merge(runs.groupby("sae")[["context", "steps"]].first().reset_index(), on="sae")
    return table.sort_values("sae", key=lambda s: s.map(order), ignore_index=True)


def repair_verdict(
    past_after: float,
    past_before: float,
    in_before: float,
    in_after: float,
    past_tolerance: float = 0.10,
    in_context_tolerance: float = 0.05,
) -> dict[str, Any]:
    """``repaired``: past-context FVU within ``past_tolerance`` above the original in-context FVU
    *and* in-context FVU within ``in_context_tolerance`` above its value before; ``improved``:
    past-context FVU lower than before; else ``not repaired``.

    The margins (``past_margin``: past FVU / original in-context FVU - 1; ``in_context_margin``:
    in-context FVU after / before - 1) come with it, so a reader sees how near each bar the run
    came."""
    past_margin = past_after / in_before - 1 if in_before > 0 else float("nan")
    in_margin = in_after / in_before - 1 if in_before > 0 else float("nan")
    past_ok, in_ok = past_margin <= past_tolerance, in_margin <= in_context_tolerance
    verdict = (
        "repaired"
        if past_ok and in_ok
        else ("improved" if past_after < past_before else "not repaired")
    )
    why = (
        "both within tolerance"
        if past_ok and in_ok
        else "past context repaired but in-context FVU regressed beyond tolerance"
        if past_ok
        else "past-context FVU still above tolerance"
    )
    return {
        "verdict": verdict,
        "past_margin": float(past_margin),
        "past_tolerance": past_tolerance,
        "past_ok": bool(past_ok),
        "in_context_margin": float(in_margin),
        "in_context_tolerance": in_context_tolerance,
        "in_context_ok": bool(in_ok),
        "why": why,
    }


def context_verdicts(
    table: pd.DataFrame, past_tolerance: float, in_context_tolerance: float
) -> dict[str, dict[str, Any]]:
    first = table.iloc[0]
    return {
        r.sae: repair_verdict(
            r.fvu_past_original_context,
            first.fvu_past_original_context,
            first.fvu_in_original_context,
            r.fvu_in_original_context,
            past_tolerance,
            in_context_tolerance,
        )
        for r in table.iloc[1:].itertuples()
    }


def context_sentence(table: pd.DataFrame, verdicts: dict[str, dict[str, Any]], base: int) -> str:
    first = table.iloc[0]
    parts = [
        f"{r.sae}: past {r.fvu_past_original_context:.4g} ({verdicts[r.sae]['past_margin']:+.1%} vs "
        "in-context "
        f"{first.fvu_in_original_context:.4g}), in-context {r.fvu_in_original_context:.4g} ("
        f"{verdicts[r.sae]['in_context_margin']:+.1%}) "
        f"-> {verdicts[r.sae]['verdict']}"
        for r in table.iloc[1:].itertuples()
    ]
    tol = (
        next(iter(verdicts.values()))
        if verdicts
        else {"past_tolerance": float("nan"), "in_context_tolerance": float("nan")}
    )
    return (
        f"FVU past position {base} (mean over seeds) {first.fvu_past_original_context:.4g} before "
        "fine-tuning; 'repaired' needs it within "
        f"{tol['past_tolerance']:.0%} of the in-context FVU and the in-context FVU within "
        f"{tol['in_context_tolerance']:.0%} of its value "
        "before. " + "; ".join(parts) + "."
    )


def from_folder(
    folder: str | Path, past_tolerance: float = 0.10, in_context_tolerance: float = 0.05
) -> dict[str, Any]:
    """The statistics of a finished sweep folder from its ``runs.csv`` (this version's or posfeat
    0.2's) and ``summary.json``.

    Reads only what the runs wrote: no SAE is loaded and nothing is trained. Returns ``{"kind":
    "widths" | "context", "table": ..., **statistics}``."""
    folder = Path(folder)
    runs = pd.read_csv(folder / "runs.csv")
    if "status" in runs:
        runs = runs[runs.status == "done"].drop(columns=["status", "error"])
    summary = json.loads((folder / "summary.json").read_text())
    if "d_sae" in runs.columns:
        return {
            "kind": "widths",
            "table": width_table(runs),
            **width_statistics(runs, int(summary["context"])),
        }
    table = context_table(runs)
    return {
        "kind": "context",
        "table": table,
        "repair": context_verdicts(table, past_tolerance, in_context_tolerance),
        "original_context": int(summary["original_context"]),
    }


__all__ = [
    "CONTEXT_COLUMNS",
    "WIDTH_COLUMNS",
    "context_table",
    "context_verdicts",
    "from_folder",
    "lack_of_fit",
    "local_exponents",
    "mean_sd",
    "power_law",
    "repair_verdict",
    "trend_test",
    "width_statistics",
    "width_table",
]
