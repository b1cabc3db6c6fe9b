"""``analyze(emb, sae) -> Analysis``: every finding of the note, exactly, plus what it only sketched.

Exact grid statistics (all tokens) give the feature classes, spans, profiles, the helix and
spurious firing; what mixes features (reconstruction) uses a stated, seeded token sample at
every position. ``Analysis.save(dir)`` writes features.csv, summary.json, figures and report.html
into a temporary folder renamed into place.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from .classify import KINDS, classify, feature_table, score_knee
from .embeddings import Embeddings
from .errors import PosfeatError
from .evaluation import range_means
from .grid_stats import GridStats, additive_parts, feature_stats
from .helix import PCA, positional_pca
from .length import apparent_position, sample_analysis, spurious_firing
from .reconstruction import TokenSample, sample_tokens
from .sae import SAE
from .sources import sae_token_weights

log = logging.getLogger(__name__)

#: Neuronpedia pages for SAEs it hosts, by SAE name prefix.
NEURONPEDIA = {"gpt2-small-res-jb/blocks.0.hook_resid_pre": "https://www.neuronpedia.org/gpt2-small/0-res-jb/{feature}"}


@dataclass
class Analysis:
    """Everything ``posfeat analyze`` computes. Tables are pandas DataFrames; arrays are numpy.

    Attributes:
        features: one row per feature (``posfeat.classify.FEATURE_COLUMNS`` plus decoder cosines).
        stats_context: exact grid statistics over all tokens and positions ``0..context-1``.
        stats_all: the same over all studied positions (profiles past the context).
        pca: PCA of W_pos rows ``1..context-1``.
        by_position: per position: reconstruction metrics, baselines, apparent position,
            spurious firing, error attribution and add-back.
        spurious_examples: strongest (feature, token) pairs firing only past the context.
        token_profile: ``[n_pos, n_top]`` activations of the top features of ``token`` by position.
        summary: the headline numbers (also summary.json).
    """

    emb: Embeddings
    sae: SAE
    context: int
    features: pd.DataFrame
    stats_context: GridStats
    stats_all: GridStats
    pca: PCA
    by_position: pd.DataFrame
    spurious_examples: pd.DataFrame
    token: int
    token_features: np.ndarray
    token_profile: np.ndarray
    sample: TokenSample
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def positional(self) -> np.ndarray:
        """Indices of positional features, sorted by peak position."""
        df = self.features[self.features.kind == "positional"].sort_values(["peak_position", "feature"])
        return df.feature.to_numpy()

    def neuronpedia_url(self, feature: int) -> str | None:
        for prefix, fmt in NEURONPEDIA.items():
            if self.sae.name.startswith(prefix):
                return fmt.format(feature=feature)
        return None

    def save(self, out: str | Path, *, force: bool = False, command: str | None = None,
             include_sweeps: list[str | Path] = ()) -> Path:
        """Write features.csv, by_position.csv, spurious_examples.csv, summary.json, figures/*.png and report.html
        (with the sections of the given ``posfeat sweep`` folders)."""
        from .report import sweep_sections, write_outputs

        return write_outputs(self, out, force=force, command=command, sections=sweep_sections(list(include_sweeps)))


def default_token(emb: Embeddings) -> int:
    """A common token: ' the' or 'the' when present, else token 0."""
    for s in (" the", "the", "Ġthe"):
        if emb.tokens and s in emb.tokens:
            return emb.tokens.index(s)
    return 0


def analyze(
    emb: Embeddings,
    sae: SAE,
    *,
    positions: int | None = None,
    tokens_sample: int = 2048,
    token: str | int | None = None,
    token_weights: torch.Tensor | str | None = "auto",
    seed: int = 0,
    device: str = "cpu",
    positional_share: float = 0.5,
    semantic_share: float = 0.5,
    n_token_features: int = 10,
    progress: bool = False,
) -> Analysis:
    """Run every analysis of the note on ``emb`` x ``sae`` (see module docstring).

    Args:
        positions: study positions ``0..positions-1`` (default all of W_pos).
        tokens_sample: tokens sampled (seeded) for the reconstruction analyses.
        token: token (string or id) for the per-token figure (default ' the').
        token_weights: draw the sample from these weights; ``"auto"`` (default) uses the token
            distribution the SAE folder ships (``token_weights.safetensors``), else uniform; None: uniform.
        positional_share, semantic_share: thresholds of the classification rule.
    """
    n_pos = emb.n_ctx if positions is None else int(positions)
    if not 1 <= n_pos <= emb.n_ctx:
        raise PosfeatError(f"--positions {positions} is outside 1..{emb.n_ctx}, the positions of {emb.name}; give a number within it.")
    context = min(sae.context_size or n_pos, n_pos)
    if isinstance(token, str):
        tid = emb.token_id(token)
    elif token is None:
        tid = default_token(emb)
    else:
        tid = int(token)
        if not 0 <= tid < emb.d_vocab:
            raise PosfeatError(f"Token id {tid} is not in the vocabulary (0..{emb.d_vocab - 1}); pass an existing token.")
    pos_all = torch.arange(n_pos)
    stats_ctx = feature_stats(emb, sae, range(context), device=device, progress=progress)
    stats_all = stats_ctx if n_pos == context else feature_stats(emb, sae, range(n_pos), device=device, progress=progress)
    kinds = classify(stats_ctx, positional_share, semantic_share)
    features = feature_table(stats_ctx, emb, kinds)

    # decoder directions against W_pos rows (helix and nearest row)
    W_dec = sae.W_dec.double()
    Wp = emb.W_pos[:context].double()
    cos = (W_dec / W_dec.norm(dim=1, keepdim=True).clamp(min=1e-12)) @ (Wp / Wp.norm(dim=1, keepdim=True).clamp(min=1e-12)).T
    best = cos.max(1)
    features["decoder_cos_wpos"] = best.values.numpy()
    features["nearest_wpos_row"] = best.indices.numpy()
    pca = positional_pca(emb.W_pos, range(1, context)) if context > 2 else positional_pca(emb.W_pos, range(0, min(emb.n_ctx, 3)))

    # per-token profile (the note's Figure 5): activations of one token at every position
    a, b = additive_parts(emb, sae, torch.tensor([tid]), pos_all, device)
    prof = sae.activate(a + b).double().cpu().numpy() if sae.separable else sae.encode(emb.inputs(torch.tensor([tid]), pos_all)).double().numpy()
    top_feats = np.argsort(-prof[:context].mean(0), kind="stable")[:n_token_features]

    # reconstruction on a token sample at every position
    if isinstance(token_weights, str):
        shipped = sae_token_weights(sae, emb.d_vocab)
        token_weights = None if shipped is None else shipped[1]
    sample = sample_tokens(emb, tokens_sample, weights=token_weights, seed=seed)
    positional = features.feature[features.kind == "positional"].to_numpy()
    peaks = features.peak_position.to_numpy()[positional]
    app = apparent_position(stats_all, positional, peaks, context)
    if sae.separable:
        spur, examples = spurious_firing(emb, sae, kinds, context, np.arange(n_pos), device=device)
    else:
        log.warning("Spurious firing is computed exactly for ReLU/JumpReLU SAEs only; skipped for %s.", sae.architecture)
        spur = pd.DataFrame({"position": np.arange(n_pos), "spurious_per_token": np.nan, "spurious_pairs": np.nan})
        examples = pd.DataFrame(columns=["feature", "kind", "token", "token_id", "position", "activation"])
    samp = sample_analysis(emb, sae, sample, pos_all, kinds, pca, context, device=device, seed=seed)
    by_pos = samp.per_position.merge(app, on=["position", "in_context"]).merge(spur, on="position")

    an = Analysis(emb=emb, sae=sae, context=context, features=features, stats_context=stats_ctx, stats_all=stats_all, pca=pca,
                  by_position=by_pos, spurious_examples=examples, token=tid, token_features=top_feats, token_profile=prof[:, top_feats],
                  sample=sample)
    an.summary = summarize(an, positional_share=positional_share, semantic_share=semantic_share, seed=seed)
    return an


def summarize(an: Analysis, **settings: Any) -> dict[str, Any]:
    """The headline numbers of an analysis (what summary.json holds), all derived from its tables."""
    from . import __version__

    f = an.features
    live = f[f.kind != "dead"]
    counts = {k: int((f.kind == k).sum()) for k in KINDS}
    maxshare = np.maximum(live.position_share.fillna(0), live.token_share.fillna(0))
    knee = score_knee(f.positional_score.to_numpy())
    top_by_score = set(f.sort_values("positional_score", ascending=False).feature.head(knee))
    pos_set = set(f.feature[f.kind == "positional"])
    bp = an.by_position
    inside = range_means(bp, 0, an.context)
    past = range_means(bp, an.context, int(bp.position.max()) + 1)
    past_rows = bp[bp.position >= an.context]
    ab_past = float(past_rows.addback_fvu.mean()) if len(past_rows) else float("nan")
    pos_feats = f[f.kind == "positional"]
    zero = pos_feats[(pos_feats.peak_position == 0)]
    n_ctx = an.emb.n_ctx
    return {
        "model": an.emb.name,
        "sae": an.sae.name,
        "sae_architecture": an.sae.architecture,
        "d_sae": an.sae.d_sae,
        "d_model": an.emb.d_model,
        "d_vocab": an.emb.d_vocab,
        "n_ctx": n_ctx,
        "positions_studied": int(bp.position.max()) + 1,
        "centered": bool(an.emb.centered),
        "context_size": an.context,
        "classification_rule": {"positional": f"position_share >= {settings['positional_share']}",
                                "semantic": f"token_share >= {settings['semantic_share']}",
                                "dead": "never fires on the grid within the context", "mixed": "otherwise"},
        "counts": counts,
        "disjoint_fraction": float((maxshare >= 0.9).mean()) if len(live) else float("nan"),
        "positional_score_knee": knee,
        "knee_vs_rule": {"knee_count": knee, "rule_positional": len(pos_set), "both": len(top_by_score & pos_set),
                         "jaccard": len(top_by_score & pos_set) / max(1, len(top_by_score | pos_set))},
        "pca_top3_variance": an.pca.top(3),
        "pca_positions": [int(an.pca.positions.min()), int(an.pca.positions.max())],
        "position0_features": [int(x) for x in zero.feature],
        "positional_mean_span": float(pos_feats.span_width[pos_feats.span_width > 0].mean()) if len(pos_feats) else float("nan"),
        "token": an.emb.token_str(an.token),
        "token_top_features": [int(x) for x in an.token_features],
        "token_sample": an.sample.how,
        "fvu_in_context": inside["fvu"],
        "fvu_past_context": past["fvu"],
        "l0_in_context": inside["l0"],
        "l0_past_context": past["l0"],
        "random_fvu_in_context": inside["random_fvu"],
        "random_fvu_past_context": past["random_fvu"],
        "addback_fvu_past_context": ab_past,
        "addback_error_removed": (1 - ab_past / past["fvu"]) if past["fvu"] and not np.isnan(past["fvu"]) else float("nan"),
        "pc_error_share_past_context": float(past_rows.pc_error_share.mean()) if len(past_rows) else float("nan"),
        "spurious_per_token_past_context": float(past_rows.spurious_per_token.mean()) if len(past_rows) else float("nan"),
        "spurious_per_token_in_context": float(bp[bp.position < an.context].spurious_per_token.mean()),
        "semantic_spread_in_context": float(bp[bp.position < an.context].semantic_spread.mean()),
        "semantic_spread_past_context": float(past_rows.semantic_spread.mean()) if len(past_rows) else float("nan"),
        "posfeat_version": __version__,
        "settings": settings,
    }


def jsonable(x: Any) -> Any:
    """Summary values made JSON-safe (NaN -> null, numpy scalars -> Python)."""
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, (np.floating, float)):
        return None if not np.isfinite(x) else float(x)
    if isinstance(x, np.integer):
        return int(x)
    return x


def summary_json(an: Analysis, command: str | None) -> str:
    data = jsonable({**an.summary, "command": command or "analyze(...)",
                     "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")})
    return json.dumps(data, indent=2) + "\n"
