"""report.html: one self-contained page (no network), its prose generated from the findings'
verdicts and evidence.

The page is ``templates/report.html`` filled by :class:`string.Template`; tables come from the
analysis' DataFrames, figures are embedded PNGs and inlined plotly, and the feature explorer
(``templates/explorer.js``) reads the compact data of :mod:`posfeat.outputs.explorer`.
"""

from __future__ import annotations

import base64
import hashlib
import html
import io
import json
import re
import zlib
from importlib import resources
from pathlib import Path
from string import Template
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ..analyses.findings import REGISTRY, headline, title
from ..io.paths import visible
from .explorer import explorer_payload
from .figures import FIGURES, png_data_uri
from .interactive import INTERACTIVE
from .kinds import CSV_FILES

if TYPE_CHECKING:
    from ..analyses.analysis import Analysis


def esc(x: object) -> str:
    """``x`` for HTML: escaped, with control and bidirectional characters shown as escapes
    (``\\u202e``)."""
    return html.escape(visible(str(x)))


def script_json(obj: object) -> str:
    """``obj`` as JSON to embed in a ``<script>``: ``<``, ``>``, ``&`` and the line separators
    written as ``\\u`` escapes, so that no string in it can open a comment (``<!--``), a script
    (``<script``) or close one (``</``) there."""
    text = json.dumps(obj, separators=(",", ":"))
    for ch in "<>&\u2028\u2029":
        text = text.replace(ch, f"\\u{ord(ch):04x}")
    return text


def fmt(x: object, nd: int = 3) -> str:
    if isinstance(x, (float, np.floating)):
        return "n/a" if not np.isfinite(x) else f"{x:.{nd}g}"
    if isinstance(x, dict):
        return ", ".join(f"{k.replace('_', ' ')} {fmt(v, nd)}" for k, v in x.items())
    if x is None:
        return "n/a"
    return esc(x)


def feature_link(feature: int) -> str:
    """A feature id as a link to its card in the page's explorer (``report.html#feature-N``)."""
    return f'<a class="feature-link" href="#feature-{int(feature)}">{int(feature)}</a>'


def table(df: pd.DataFrame, cols: list[str], link: Any = None) -> str:
    """An HTML table of ``df[cols]``; every feature id links to its card in the explorer
    (``#feature-N``; the card links to Neuronpedia). ``link`` is accepted for older callers and not
    used."""
    head = "".join(f"<th>{esc(c)}</th>" for c in cols)
    body = []
    for r in df[cols].itertuples(index=False):
        cells = []
        for c, v in zip(cols, r):
            cell = (
                feature_link(int(v))
                if c == "feature" and isinstance(v, (int, np.integer))
                else fmt(v)
            )
            cells.append(f'<td class="{"l" if isinstance(v, str) else ""}">{cell}</td>')
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def verdict_box(key: str, f: dict[str, Any]) -> str:
    cls = "v-" + f["verdict"].replace(" ", "-")
    value, null = headline(key, f)
    return (
        f'<div class="verdict {cls}" id="finding-{key}"><span class="badge">'
        f"{esc(f['verdict'])}</span> "
        f"<b>{esc(title(key))}</b>: posfeat {esc(value)}; null {esc(null)}; "
        f"{NOTE_PAIR}: {fmt(f['note_value'])}."
        f"<br>{esc(f['evidence'])}<br><span class=test>Rule: {esc(f['test'])}</span></div>"
    )


NOTE_PAIR = "GPT-2 small + res-jb (note)"


def _cells(key: str, f: dict[str, Any]) -> tuple[str, str]:
    """The value and the null as the first table prints them
    (:func:`posfeat.analyses.findings.headline`)."""
    value, null = headline(key, f)
    return esc(value), esc(null)


#: The pair the note studied (DESIGN.md): GPT-2 small and SAELens's gpt2-small-res-jb at
# blocks.0.hook_resid_pre.
NOTE_PAIR_TEXT = (
    "GPT-2 small (1024 positions, d_model 768, vocabulary 50257) with the SAE gpt2-small-res-jb at "
    "blocks.0.hook_resid_pre "
    "(SAELens; ReLU, 24576 features, trained on 128-token contexts of OpenWebText)"
)


def glance(findings: dict[str, Any]) -> str:
    rows = "".join(
        f"<tr><td class=l><a href='#finding-{k}'>{esc(title(k))}</a></td><td class=l><b>"
        f"{esc(f['verdict'])}</b></td>"
        f"<td class=l>{_cells(k, f)[0]}</td><td class=l>{_cells(k, f)[1]}</td><td class=l>"
        f"{fmt(f['note_value'])}</td></tr>"
        for k, f in findings.items()
    )
    return (
        "<table><tr><th>finding of the note</th><th>verdict</th><th>this run</th><th>null (same "
        f"run)</th><th>{esc(NOTE_PAIR)}</th></tr>"
        f"{rows}</table>"
    )


def pairs_html(s: dict[str, Any], pre_layernorm: bool = False) -> str:
    """The first lines of the report: the pair this run studied, the pair the note studied, and what
    a difference means.

    ``pre_layernorm``: a BERT-style model, whose grid is W_E + the token-type-0 row + W_pos before
    the embedding LayerNorm."""
    data = s.get("sae_dataset") or "not stated by the SAE's config"
    live = sum(v for k, v in s["counts"].items() if k != "dead")
    n_pos = s["counts"].get("positional", 0)
    this = (
        f"<b>This run studied</b> {esc(s['model'])} ({s['n_ctx']} positions, d_model "
        f"{s['d_model']}, vocabulary {s['d_vocab']}) with the "
        f"SAE {esc(s['sae'])} ({esc(s['sae_architecture'])}, {s['d_sae']} features, trained on "
        f"{s['context_size']}-position contexts; "
        f"training data: {esc(data)})."
    )
    if pre_layernorm:
        this += (
            " Its grid is W_E + the token-type-0 row + W_pos <b>before the embedding LayerNorm</b> "
            "(pre-LayerNorm, the input the "
            "SAE was trained on), not the LayerNorm's output that layer 0 reads; the note's grid is "
            "GPT-2's hook_resid_pre, what "
            "block 0 reads."
        )
    note = f"<b>The note studied</b> {esc(NOTE_PAIR_TEXT)}."
    same = (
        "gpt2" in str(s["model"]).lower()
        and "res-jb" in str(s["sae"]).lower()
        and s["d_sae"] == 24576
    )
    differ = (
        ""
        if same
        else "<b>The pairs differ</b>: where a verdict differs from the note, the difference may "
        "come from the pair "
        "(model, SAE width, training data) and not from posfeat. "
    )
    share, note_share = n_pos / max(1, live), 50 / 24576
    counts = (
        f"Positional features: {n_pos} of {live} live ({100 * share:.2f}%) here; about 50 of 24576 "
        f"({100 * note_share:.2f}%, assuming no dead features) in the note: compare the shares ("
        f"{share / note_share:.1f}x), "
        "not the counts, which depend on the SAE's width."
    )
    return f"<p class=pairs>{this}<br>{note}<br>{differ}{counts}</p>"


def compact_png_uri(path: Path) -> str:
    """The PNG at ``path`` as a ``data:`` URI, reduced to a 256-colour palette for the page (about a
    third of the bytes; the figures/*.png files keep every colour)."""
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - matplotlib depends on Pillow
        return png_data_uri(path)
    raw = Path(path).read_bytes()
    buf = io.BytesIO()
    try:
        with Image.open(io.BytesIO(raw)) as im:
            # fast octree: a fifth of median cut's time here and smaller files (measured on the bundled
            # pair's 15 figures: 0.3 s and 0.86 MB against 1.6 s and 1.17 MB with optimize)
            small = im.convert("RGB").quantize(
                colors=256, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE
            )
        small.save(buf, format="PNG")
    except (OSError, ValueError):  # a PNG Pillow cannot decode goes in as it is
        buf = io.BytesIO(raw)
    data = buf.getvalue() if len(buf.getvalue()) < len(raw) else raw
    return "data:image/png;base64," + base64.b64encode(data).decode()


def figure_html(
    name: str, pngs: dict[str, Path], interactive: dict[str, str], uris: dict[str, str]
) -> str:
    """A figure of the page: its interactive version where there is one, else its PNG as
    :func:`compact_png_uri` gives it (from ``uris`` where the caller made it already)."""
    if name in interactive:
        return interactive[name]
    caption = FIGURES[name][1]
    uri = uris[name] if name in uris else compact_png_uri(pngs[name])
    return (
        f'<figure id="fig-{name}"><img alt="{esc(caption)}" src="{uri}">'
        f'<figcaption class="cap">{esc(caption)} (figures/{name}.png)</figcaption></figure>'
    )


def _numbers(rows: list[tuple[str, object]]) -> str:
    return (
        "<table>"
        + "".join(f"<tr><td class=l>{esc(k)}</td><td>{fmt(v, 4)}</td></tr>" for k, v in rows)
        + "</table>"
    )


def _features_tables(an: Analysis) -> str:
    f, s, link = an.features, an.summary, an.neuronpedia_url
    counts = pd.DataFrame(
        [{"share threshold": t, **c} for t, c in s["counts_by_threshold"].items()]
    )
    knees = pd.DataFrame([{"method": m, **v} for m, v in s["knee_vs_rule"].items()])
    high = (
        f[f.interaction_share.fillna(0) >= 0.3]
        .sort_values("interaction_share", ascending=False)
        .head(40)
    )
    cols = ["feature", "kind", "position_share", "token_share", "interaction_share", "top_tokens"]
    high_table = table(high, cols, link) if len(high) else "<p>none</p>"
    return (
        "<h3>Counts by kind as the share threshold moves</h3>"
        + table(counts, list(counts.columns))
        + "<h3>The note's method (sorted positional score) beside the rule</h3>"
        + table(knees, list(knees.columns))
        + f"<h3>Features with an interaction share of at least 0.3 ({len(high)})</h3>"
        + high_table
    )


def _positional_tables(an: Analysis) -> str:
    f = an.features
    pos = f[f.kind == "positional"].sort_values(["peak_position", "feature"])
    multi = pos[pos.n_runs >= 2]
    cols = [
        "feature",
        "peak_position",
        "span_start",
        "span_end",
        "n_runs",
        "runs",
        "outside_span_share",
        "peak_mean",
        "position_share",
        "decoder_cos_wpos",
    ]
    return (
        f"<h3>Positional features ({len(pos)})</h3>"
        + table(pos.head(200), cols, an.neuronpedia_url)
        + f"<h3>Positional features firing in two or more runs ({len(multi)})</h3>"
        + (
            f"<p>{', '.join(feature_link(int(x)) for x in multi.feature)}</p>"
            if len(multi)
            else "<p>none</p>"
        )
    )


def _token_tables(an: Analysis) -> str:
    sem = (
        an.features[an.features.kind == "semantic"]
        .sort_values("token_score", ascending=False)
        .head(25)
    )
    return "<h3>Semantic features with the highest token score</h3>" + table(
        sem, ["feature", "token_share", "token_score", "fire", "top_tokens"], an.neuronpedia_url
    )


def _length_tables(an: Analysis) -> str:
    s, link = an.summary, an.neuronpedia_url
    pair = lambda a, b: f"{fmt(s[a], 4)} / {fmt(s[b], 4)}"  # noqa: E731
    rows = [
        ("mean FVU in context", s["fvu_in_context"]),
        ("mean FVU past the context", s["fvu_past_context"]),
        (
            "explained variance (SAELens, pooled) in / past the context",
            pair("explained_variance_in_context", "explained_variance_past_context"),
        ),
        ("mean L0 in / past the context", pair("l0_in_context", "l0_past_context")),
    ]
    edge = s.get("bert_edge")
    if edge:
        rows.append(
            (
                f"spurious features per token at the BERT edge, positions {edge['positions'][0]}.."
                f"{edge['positions'][1]} "
                "(median past the context)",
                f"{fmt(edge['spurious_per_token'], 4)} ({fmt(edge['median_past_context'], 4)})",
            )
        )
    ex, byf = an.spurious_examples, an.spurious_by_feature
    return (
        _numbers(rows)
        + "<h3>Strongest spurious (feature, token) pairs: firing past the context, never inside "
        "it</h3>"
        + (
            table(ex, ["feature", "kind", "token", "position", "activation"], link)
            if len(ex)
            else "<p>none</p>"
        )
        + f"<h3>Features firing spuriously most often ({s['spurious_features']} in all)</h3>"
        + (table(byf.head(25), list(byf.columns), link) if len(byf) else "<p>none</p>")
    )


def _attribution_tables(an: Analysis) -> str:
    s = an.summary
    return _numbers(
        [
            (
                "share of the squared error past the context inside the top-3 W_pos PCs",
                s["pc_error_share_past_context"],
            ),
            (
                "FVU past the context, non-positional features + true W_pos row",
                s["addback_fvu_past_context"],
            ),
            ("share of the past-context error that this removes", s["addback_error_removed"]),
        ]
    )


#: report sections: title, figures, and the function giving their tables; the findings each shows
# are those whose ``section`` is its number (:func:`section_findings`)
SECTIONS = [
    ("1. The helix of W_pos", ["helix_interactive", "helix", "wpos_similarity"], None),
    ("2. Positional and semantic features", ["disjointness", "positional_score"], _features_tables),
    (
        "3. Positional features over the positions",
        ["positional_profiles", "preactivations", "sinusoid", "coverage"],
        _positional_tables,
    ),
    ("4. Token features", ["token_features"], _token_tables),
    (
        "5. Length generalisation",
        [
            "length_generalisation",
            "profiles_interactive",
            "extended_profiles",
            "apparent_position",
            "semantic_breakage",
            "semantic_profiles",
        ],
        _length_tables,
    ),
    ("6. Where the error past the context comes from", ["attribution"], _attribution_tables),
]


def section_findings(number: int) -> list[str]:
    """The keys of the findings the report's section ``number`` (1-based) shows, in the findings'
    order."""
    return [finding.key for finding in REGISTRY if finding.section == number]


def files_html() -> str:
    """The report's Files list: every file the analysis folder holds."""
    return (
        ", ".join(f"{name}.csv ({esc(what)})" for name, what in CSV_FILES.items())
        + ", summary.json, figures/*.png."
    )


def report_parts(
    an: Analysis, logit_part: tuple[dict[str, Any], np.ndarray | None] | None = None
) -> dict[str, Any]:
    """What the page needs besides the figures' PNGs: each interactive figure's HTML
    (``interactive``), each section's tables (``tables``) and the feature explorer's JSON
    (``explorer_data``; ``logit_part``: :func:`posfeat.outputs.explorer.logits` of ``an``, made
    here when None). :func:`posfeat.outputs.write.save_analysis` makes them while the figures are
    drawn, all but the logit effects, made before."""
    interactive = {}
    for name, (fn, div) in INTERACTIVE.items():
        fig = json.loads(fn(an).to_json())
        interactive[name] = (
            f'<div id="{div}" class="plotly-figure" style="height:'
            f'{int(fig["layout"].get("height", 480))}px"></div>'
            f'<script type="application/json" id="figure-{div}">{script_json(fig)}</script>'
        )
    data = script_json(explorer_payload(an, logit_part))
    tables = [make(an) if make else "" for _, _, make in SECTIONS]
    return {"interactive": interactive, "tables": tables, "explorer_data": data}


def render_html(
    an: Analysis,
    pngs: dict[str, Path],
    sweep_sections: tuple[str, ...] = (),
    parts: dict[str, Any] | None = None,
    command: str = "",
) -> str:
    """The whole page (see module docstring); ``parts``: :func:`report_parts` of ``an``, made here
    when None, with the figures' :func:`compact_png_uri` (``"figure_uris"``, by name) and
    :func:`packed_plotly` (``"plotly_packed"``) where the caller made them already; ``command``: the
    command line that made it (shown at the foot)."""
    s = an.summary
    made = report_parts(an) if parts is None else parts
    interactive, data = made["interactive"], made["explorer_data"]
    uris = made.get("figure_uris", {})
    blocks = [
        f"<h2>{esc(heading)}</h2>"
        + "".join(verdict_box(k, an.findings[k]) for k in section_findings(number))
        + "".join(figure_html(n, pngs, interactive, uris) for n in figs)
        + tables
        for number, ((heading, figs, _), tables) in enumerate(
            zip(SECTIONS, made["tables"]), start=1
        )
    ]
    header = (
        f"<b>Model</b> {esc(s['model'])} &nbsp; <b>SAE</b> {esc(s['sae'])} ("
        f"{esc(s['sae_architecture'])}, d_sae {s['d_sae']}) &nbsp; "
        f"<b>context</b> {s['context_size']} of {s['n_ctx']} positions &nbsp; <b>centred</b> "
        f"{s['centered']} &nbsp; "
        f"<b>device</b> {esc(s['device'])} &nbsp; posfeat {esc(s['posfeat_version'])}"
    )
    page = Template(resources.files(__package__).joinpath("templates/report.html").read_text())
    css = resources.files(__package__).joinpath("templates/report.css").read_text()
    explorer_js = resources.files(__package__).joinpath("templates/explorer.js").read_text()
    figures_js = resources.files(__package__).joinpath("templates/figures.js").read_text()
    plotly_src = plotly_js()
    html_page = page.substitute(
        model=esc(s["model"]),
        sae=esc(s["sae"]),
        pairs=pairs_html(s, bool(an.emb.info.get("token_type_row_added"))),
        css=css,
        header=header,
        glance=glance(an.findings),
        sections="\n".join(blocks),
        sweeps="\n".join(sweep_sections),
        command=esc(command),
        files=files_html(),
        explorer_data=data,
        explorer_js=explorer_js,
        plotly_data=made.get("plotly_packed") or packed_plotly(plotly_src),
        figures_js=figures_js,
    )
    return with_csp(
        [f"<script>{explorer_js}</script>", f"<script>{figures_js}</script>"],
        html_page,
        sources=[plotly_src],
    )


def plotly_js() -> str:
    """plotly.js as the installed plotly package ships it."""
    from plotly.offline import get_plotlyjs

    return get_plotlyjs()


def packed_plotly(source: str) -> str:
    """plotly.js deflated and base64 (about 2 MB instead of 4.8): ``templates/figures.js`` inflates
    it with the browser's DecompressionStream and runs it as an inline script, which the page's CSP
    allows by the hash of this very source."""
    return base64.b64encode(zlib.compress(source.encode(), 9)).decode()


_SCRIPT = re.compile(r"<script(?P<attrs>[^>]*)>(?P<body>.*?)</script>", re.S | re.I)


def with_csp(trusted: list[str], page: str, sources: list[str] = ()) -> str:
    """``page`` with a Content-Security-Policy ``<meta>`` first in its head: only the inline scripts
    of ``trusted`` (posfeat's own explorer and plotly's figures) run, each allowed by its sha256
    hash, so a script planted in any string or in an included sweep section cannot; nothing is
    fetched from the network, no plugin, frame, form or ``<base>``; styles and ``data:`` images are
    inline. ``sources``: script texts the page's own scripts insert as inline scripts (plotly.js,
    inflated in the page), allowed by their hashes too."""
    bodies = [
        m.group("body")
        for part in trusted
        for m in _SCRIPT.finditer(part)
        if "application/json" not in m.group("attrs").lower()
    ]
    hashes = sorted(
        {
            "'sha256-" + base64.b64encode(hashlib.sha256(body.encode()).digest()).decode() + "'"
            for body in [*bodies, *sources]
        }
    )
    scripts = " ".join(hashes) or "'none'"
    policy = (
        f"default-src 'none'; script-src {scripts}; style-src 'unsafe-inline'; img-src data:; "
        "font-src data:; connect-src 'none'; object-src 'none'; frame-src 'none'; worker-src "
        "'none'; base-uri 'none'; form-action 'none'"
    )
    return page.replace(
        "<head>", f'<head>\n<meta http-equiv="Content-Security-Policy" content="{policy}">', 1
    )
