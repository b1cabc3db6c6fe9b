"""Print what a finished sweep folder supports, from its runs.csv alone (no SAE loaded, nothing
trained).

Width sweep: the trend test, the power-law description (fit, local exponents, lack-of-fit F and p)
    and the ceiling.
Context sweep: in-context FVU before and after fine-tuning beside the past-context repair, the
    margins and the verdicts.

    python scripts/sweep_stats.py sweep-widths python scripts/sweep_stats.py sweep-context
    [--past-tolerance 0.10] [--in-context-tolerance 0.05]
"""

from __future__ import annotations

import argparse
import math

from posfeat.experiments.aggregate import from_folder


def _pm(m: float, sd: float, fmt: str = ".3f") -> str:
    return (
        f"{m:{fmt}} ± {sd:{fmt}}" if isinstance(sd, float) and not math.isnan(sd) else f"{m:{fmt}}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder")
    ap.add_argument("--past-tolerance", type=float, default=0.10)
    ap.add_argument("--in-context-tolerance", type=float, default=0.05)
    args = ap.parse_args()
    s = from_folder(args.folder, args.past_tolerance, args.in_context_tolerance)
    t = s["table"]
    if s["kind"] == "widths":
        tr, fit, lof = s["trend"], s["power_law"], s["lack_of_fit"]
        print("| test | statistic | p (one-sided) |\n|---|---|---|")
        print(
            f"| Page's L, {tr['page']['blocks']} seeds as blocks, widths in order | L = "
            f"{tr['page']['L']:.0f} | {tr['page']['p']:.2g} |"
        )
        print(f"| Spearman, every run | rho = {tr['spearman_rho']:.3f} | {tr['spearman_p']:.2g} |")
        print(f"\ngrows with width (p < {tr['alpha']}): {tr['grows']}\n")
        print("| widths | local exponent |\n|---|---|")
        for e in s["local_exponents"]:
            print(f"| {e['from']} -> {e['to']} | {e['exponent']:.2f} |")
        print(
            f"\npower law (description): {fit['c']:.3g} * width^{fit['alpha']:.3f}, 95% CI "
            f"{fit['alpha_low']:.3f} to {fit['alpha_high']:.3f} "
            f"({fit['points']} runs)"
        )
        print(
            f"lack of fit: F({lof['df_lack_of_fit']}, {lof['df_pure_error']}) = {lof['F']:.2f}, p = "
            f"{lof['p']:.2g}"
        )
        c = s["ceiling"]
        print(
            f"ceiling: {c['positions']} positions; the fitted line would reach it at width "
            f"{c['fit_reaches_it_at_width']:.3g}"
        )
        return
    first = t.iloc[0]
    print(
        f"| SAE | FVU 0..{s['original_context'] - 1} before | after | in-context margin | FVU past "
        f"{s['original_context']} | "
        "past margin (vs in-context before) | verdict |\n|---|---|---|---|---|---|---|"
    )
    print(
        f"| original | {_pm(first.fvu_in_original_context, first.fvu_in_original_context_sd)} | | | "
        f"{_pm(first.fvu_past_original_context, first.fvu_past_original_context_sd)} | | |"
    )
    for r in t.iloc[1:].itertuples():
        v = s["repair"][r.sae]
        print(
            f"| {r.sae} | {first.fvu_in_original_context:.3f} | "
            f"{_pm(r.fvu_in_original_context, r.fvu_in_original_context_sd)} | "
            f"{v['in_context_margin']:+.1%} (tolerance {v['in_context_tolerance']:.0%}) | "
            f"{_pm(r.fvu_past_original_context, r.fvu_past_original_context_sd)} | "
            f"{v['past_margin']:+.1%} (tolerance {v['past_tolerance']:.0%}) | {v['verdict']} |"
        )


if __name__ == "__main__":
    main()
