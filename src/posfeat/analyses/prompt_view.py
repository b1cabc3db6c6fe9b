"""The notebook view of a :class:`posfeat.analyses.prompts.Prompt`: tokens shaded by one feature's
activation (as SAEDashboard shows them), each token's features on hover and in a table below,
positions past the SAE's context marked.

Every string from the tokenizer is escaped; the fragment carries no script.
"""

from __future__ import annotations

import html
from typing import Any

Prompt = Any  # a posfeat.analyses.prompts.Prompt (not imported: the Prompt imports this view)

_STYLE = (
    "font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:13px;white-space:pre;padding:1px 0;margin:0 1px;"
    "border-radius:3px;outline:1px solid #ddd;"
)


def _features(pr: Prompt, p: int) -> str:
    return ", ".join(
        f"#{int(f)} {pr.activations[p, f]:.3g}" + (" P" if pr.kinds[f] == "positional" else "")
        for f in pr.ranked(p)
    )


def prompt_html(pr: Prompt, feature: int | None) -> str:
    """An HTML fragment: the tokens coloured by ``feature`` (darker = stronger, relative to its
    largest activation in this text)."""
    f = 0 if feature is None else int(feature)
    col = pr.activations[:, f] if pr.activations.shape[1] else pr.activations[:, :0].sum(1)
    peak = float(col.max()) if len(col) else 0.0
    kind = str(pr.kinds[f]) if len(pr.kinds) else ""
    spans = []
    for p in range(pr.n_tokens):
        a = float(col[p])
        alpha = 0.0 if peak <= 0 else max(0.0, a) / peak
        past = p >= pr.context
        title = (
            f"position {p}{' (past the context)' if past else ''}, token {pr.token_strs[p]!r} (id "
            f"{int(pr.token_ids[p])})\n"
            f"feature #{f}: {a:.4g}\nactive: {_features(pr, p) or 'none'}"
        )
        border = "border-bottom:2px dashed #c00;" if past else ""
        spans.append(
            f'<span title="{html.escape(title)}" style="{_STYLE}{border}background:rgba(255,102,0,'
            f'{alpha:.3f})">'
            f"{html.escape(pr.token_strs[p])}</span>"
        )
    rows = "".join(
        f"<tr><td style='text-align:right'>{p}{'*' if p >= pr.context else ''}</td>"
        f"<td style='text-align:left;white-space:pre'>{html.escape(repr(pr.token_strs[p]))}</td>"
        f"<td style='text-align:right'>{float(col[p]):.3g}</td>"
        f"<td style='text-align:left'>{html.escape(_features(pr, p)) or '(none active)'}</td></tr>"
        for p in range(pr.n_tokens)
    )
    caption = (
        f"{html.escape(pr.model)} x {html.escape(pr.sae)}: tokens coloured by feature #{f}"
        f"{f' ({html.escape(kind)})' if kind else ''}, largest activation in this text {peak:.4g}; "
        "hover a token for its features"
    )
    past = (
        f"; dashed, *: past the SAE's training context ({pr.context} positions)"
        if pr.n_tokens > pr.context
        else ""
    )
    listed = "every active feature" if pr.top is None else f"top {pr.top} features"
    return (
        f"<div class='posfeat-prompt'><div style='margin-bottom:4px'>{caption}{past}.</div>"
        f"<div style='line-height:2.1'>{''.join(spans)}</div>"
        f"<table><tr><th>pos</th><th>token</th><th>#{f}</th><th>{listed} (P = positional)</th></tr>"
        f"{rows}</table></div>"
    )
