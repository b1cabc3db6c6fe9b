"""Writing an analysis: features.csv, by_position.csv, spurious_examples.csv, summary.json, figures/*.png, report.html.

Everything is written into a temporary folder beside ``out`` and renamed into place, so an
interrupted run leaves the previous outputs untouched and nothing half-written.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .atomic import output_folder
from .errors import PosfeatError
from .figures import FIGURES, interactive_helix, interactive_profiles

if TYPE_CHECKING:
    from .analysis import Analysis

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1180px;margin:24px auto;padding:0 16px;color:#222}
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:2em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:.85em}td,th{border:1px solid #ddd;padding:3px 7px;text-align:right}
th{background:#f4f4f4}td.l{text-align:left}img{max-width:100%;border:1px solid #eee}
.num{font-weight:600}.cap{color:#555;font-size:.9em}
"""


def _fmt(x: object, nd: int = 3) -> str:
    if isinstance(x, (float, np.floating)):
        return "n/a" if not np.isfinite(x) else f"{x:.{nd}f}"
    return html.escape(str(x))


def _pct(x: float | None) -> str:
    """A share as a percentage, ``n/a`` when missing (NaN)."""
    return "n/a" if x is None or not np.isfinite(x) else f"{100 * x:.1f}%"


def _img(path: Path, name: str, caption: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return (f'<figure id="fig-{name}"><img alt="{html.escape(caption)}" src="data:image/png;base64,{data}">'
            f'<figcaption class="cap">{html.escape(caption)} (figures/{name}.png)</figcaption></figure>')


def _table(an: Analysis, df, cols: list[str], link_col: str = "feature") -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = []
    for _, r in df.iterrows():
        cells = []
        for c in cols:
            v = r[c]
            if c == link_col and (url := an.neuronpedia_url(int(v))):
                cells.append(f'<td><a href="{url}">{int(v)}</a></td>')
            else:
                cells.append(f'<td class="{"l" if isinstance(v, str) else ""}">{_fmt(v)}</td>')
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def findings(an: Analysis) -> dict[str, str]:
    """One paragraph per finding, from the summary numbers."""
    s = an.summary
    c = s["counts"]
    live = s["d_sae"] - c["dead"]
    kv = s["knee_vs_rule"]
    return {
        "helix": (f"The top 3 principal components of W_pos rows {s['pca_positions'][0]}..{s['pca_positions'][1]} explain "
                  f"<span class=num>{s['pca_top3_variance']:.1%}</span> of their variance: the positional embeddings lie close "
                  "to a one-dimensional curve (a helix) in a 3-dimensional subspace."),
        "classes": (f"Of {s['d_sae']} features, {c['positional']} are positional, {c['semantic']} semantic, {c['mixed']} mixed and "
                    f"{c['dead']} dead, by the exact variance decomposition over all {s['d_vocab']} tokens x {s['context_size']} positions "
                    f"(rule: {s['classification_rule']['positional']} / {s['classification_rule']['semantic']}). The note's method, "
                    f"the knee of the sorted positional scores, counts {kv['knee_count']}; {kv['both']} features are in both sets "
                    f"(Jaccard {kv['jaccard']:.2f})."),
        "disjoint": (f"<span class=num>{_pct(s['disjoint_fraction'])}</span> of the {live} live features have either a "
                     "position share or a token share of at least 0.9: a feature's activation is almost entirely a function of "
                     "position or of token, rarely both."),
        "positional": (f"Positional features cover contiguous spans of positions (mean span {_fmt(s['positional_mean_span'], 1)} "
                       f"positions); {len(s['position0_features'])} feature(s) peak at position 0 "
                       f"({', '.join(map(str, s['position0_features'][:10])) or 'none'}), reported separately and left out of the helix "
                       "plot. Early positions get dedicated features and fire more strongly; later positions share wider features."),
        "token": (f"For token {html.escape(repr(s['token']))}, the top features by mean over positions are "
                  f"{', '.join(map(str, s['token_top_features']))}: token features are flat lines over position, positional ones bumps."),
        "length": (f"Inside the context (0..{s['context_size'] - 1}) the mean FVU is <span class=num>{_fmt(s['fvu_in_context'], 4)}</span> "
                   f"and L0 {_fmt(s['l0_in_context'], 1)}; past it the mean FVU is <span class=num>{_fmt(s['fvu_past_context'], 4)}</span> "
                   f"(a random vector of the input's norm: {_fmt(s['random_fvu_past_context'], 3)}) and L0 {_fmt(s['l0_past_context'], 1)}. "
                   f"({html.escape(s['token_sample'])}.)"),
        "semantic": (f"Past the context each token gains on average {_fmt(s['spurious_per_token_past_context'], 2)} spurious features "
                     f"per position (features that fire on it there but nowhere inside the context; exact over all tokens), against "
                     f"{_fmt(s['spurious_per_token_in_context'], 2)} inside. Semantic features' deviation from their in-context value "
                     f"grows from {_fmt(s['semantic_spread_in_context'], 4)} to {_fmt(s['semantic_spread_past_context'], 4)}."),
        "attribution": (f"Past the context {_pct(s['pc_error_share_past_context'])} "
                        "of the squared error lies in the top-3 W_pos principal subspace. Dropping positional features and adding the true "
                        f"W_pos row gives a past-context FVU of {_fmt(s['addback_fvu_past_context'], 4)}, removing "
                        f"{_pct(s['addback_error_removed'])} of the error."),
    }


def render_html(an: Analysis, figs: dict[str, Path], sections: tuple[str, ...] = ()) -> str:
    f = findings(an)
    s = an.summary
    pos = an.features[an.features.kind == "positional"].sort_values("peak_position")
    sem = an.features[an.features.kind == "semantic"].sort_values("token_score", ascending=False).head(25)
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>posfeat report: {html.escape(s['model'])}</title>",
        f"<style>{CSS}</style></head><body>",
        "<h1>Positional features in a layer-0 SAE</h1>",
        f"<p><b>Model</b> {html.escape(s['model'])} &nbsp; <b>SAE</b> {html.escape(s['sae'])} ({s['sae_architecture']}, d_sae "
        f"{s['d_sae']}) &nbsp; <b>context</b> {s['context_size']} of {s['n_ctx']} positions &nbsp; <b>centred</b> {s['centered']}"
        f" &nbsp; posfeat {s['posfeat_version']}</p>",
        "<p class=cap>Reproduces Chughtai and Lau (2024), <i>Understanding Positional Features in Layer 0 SAEs</i>, with exact statistics "
        "over the whole token x position grid.</p>",
        "<h2>1. The helix of W_pos</h2>", f"<p>{f['helix']}</p>", interactive_helix(an, include_js=True),
        _img(figs["helix"], "helix", FIGURES["helix"][1]),
        "<h2>2. Positional and semantic features</h2>", f"<p>{f['classes']}</p>", f"<p>{f['disjoint']}</p>",
        _img(figs["disjointness"], "disjointness", FIGURES["disjointness"][1]),
        _img(figs["positional_score"], "positional_score", FIGURES["positional_score"][1]),
        "<h2>3. Positional features tile the positions</h2>", f"<p>{f['positional']}</p>",
        _img(figs["positional_profiles"], "positional_profiles", FIGURES["positional_profiles"][1]),
        _img(figs["preactivations"], "preactivations", FIGURES["preactivations"][1]),
        _img(figs["coverage"], "coverage", FIGURES["coverage"][1]),
        _table(an, pos.head(60), ["feature", "peak_position", "span_start", "span_end", "peak_mean", "position_share", "decoder_cos_wpos"]),
        "<h2>4. Semantic features</h2>", f"<p>{f['token']}</p>",
        _img(figs["token_features"], "token_features", FIGURES["token_features"][1]),
        _table(an, sem, ["feature", "token_share", "token_score", "fire", "top_tokens"]),
        "<h2>5. Length generalisation</h2>", f"<p>{f['length']}</p>",
        _img(figs["length_generalisation"], "length_generalisation", FIGURES["length_generalisation"][1]),
        interactive_profiles(an, include_js=False),
        _img(figs["extended_profiles"], "extended_profiles", FIGURES["extended_profiles"][1]),
        _img(figs["apparent_position"], "apparent_position", FIGURES["apparent_position"][1]),
        f"<p>{f['semantic']}</p>", _img(figs["semantic_breakage"], "semantic_breakage", FIGURES["semantic_breakage"][1]),
        "<p>Strongest spurious (feature, token) pairs: the feature fires on the token past the context and at no position inside it.</p>",
        _table(an, an.spurious_examples, ["feature", "kind", "token", "position", "activation"]) if len(an.spurious_examples) else "<p>none</p>",
        "<h2>6. Where the error past the context comes from</h2>", f"<p>{f['attribution']}</p>",
        _img(figs["attribution"], "attribution", FIGURES["attribution"][1]),
        *sections,
        "<h2>Files</h2><p>features.csv (one row per feature), by_position.csv, spurious_examples.csv, summary.json, figures/*.png.</p>",
        f"<p class=cap>Command: <code>{html.escape(str(s.get('command', '')))}</code></p>",
        "</body></html>",
    ]
    return "\n".join(parts)


def sweep_sections(folders: list[str | Path]) -> tuple[str, ...]:
    """The ``section.html`` fragments that ``posfeat sweep`` wrote into each folder."""
    out = []
    for folder in folders:
        path = Path(folder) / "section.html"
        if not path.is_file():
            raise PosfeatError(f"{folder} has no section.html; pass a folder written by posfeat sweep widths or posfeat sweep context.")
        out.append(path.read_text())
    return tuple(out)


def write_outputs(an: Analysis, out: str | Path, *, force: bool = False, command: str | None = None,
                  sections: tuple[str, ...] = ()) -> Path:
    from .analysis import summary_json

    an.summary["command"] = command or "analyze(...)"
    with output_folder(out, force=force) as tmp:
        an.features.to_csv(tmp / "features.csv", index=False, float_format="%.8g")
        an.by_position.to_csv(tmp / "by_position.csv", index=False, float_format="%.8g")
        an.spurious_examples.to_csv(tmp / "spurious_examples.csv", index=False, float_format="%.8g")
        (tmp / "summary.json").write_text(summary_json(an, command))
        (tmp / "figures").mkdir()
        figs = {name: fn(an, tmp / "figures" / f"{name}.png") for name, (fn, _) in FIGURES.items()}
        (tmp / "report.html").write_text(render_html(an, figs, sections))
    return Path(out).expanduser().resolve()
