"""``analyze(emb, sae) -> Analysis``: every finding of the note, exactly, plus what it only
sketched.

Exact grid statistics (all tokens) give the feature classes, firing runs, profiles, the helix and
spurious firing; what mixes features (reconstruction) uses a stated, seeded token sample at every
position. Each claim becomes a verdict (:mod:`posfeat.analyses.findings`). Everything is computed
where the pair lives; every table and array of an :class:`Analysis` is CPU pandas/numpy.
An Analysis shows its headline numbers in a notebook; the public :class:`posfeat.Analysis`
(``posfeat.outputs.results``, a later stage) adds ``save(dir)``, which writes the files, and
``figure(name)``, which draws one figure.
"""

from __future__ import annotations

import html
import numbers
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch

from ..core.embeddings import Embeddings
from ..core.errors import PosfeatError, PosfeatTypeError, arg
from ..core.memory import release_freed
from ..core.sae import SAE, sae_context
from ..core.tensors import to_numpy
from ..engine.grid_stats import (
    GridStats,
    additive_parts,
    check_pair,
    feature_stats,
    grid_statistics,
    on_device,
)
from ..engine.indices import IndexSet, resolve_index
from ..engine.sample import TokenSample, sample_tokens
from ..io.paths import shorten
from ..io.sae_folders import neuronpedia_url
from ..io.sources import as_pair, sae_token_weights
from ..io.tokens import token_weights_arg
from . import warmup
from .classification import (
    KINDS,
    classify,
    counts_by_threshold,
    feature_table,
    gap_window,
    knee_kneedle,
    knee_largest_gap,
    overlap,
    token_flatness,
)
from .config import AnalyzeConfig
from .findings import TOKEN_PROFILES, FindingRules, compute_findings
from .headline import AnalysisSummary
from .helix import PCA, positional_pca
from .length import (
    SPURIOUS_COLUMNS,
    SPURIOUS_FEATURE_COLUMNS,
    nearest_context_rows,
    positional_code,
    sample_analysis,
    spurious_counts,
    spurious_examples,
)
from .nulls import dictionary_draws, embedding_geometry, helix_statistics, token_moments

KNEEDLE_WINDOW = 1000
INTERACTION_FLAG = 0.3


@dataclass
class HelixPoints:
    """W_pos rows and positional features' decoder directions on the top 3 PCs (Figure 1 of the
    note).

    ``rows``: ``[n, 3]`` W_pos rows ``pca.positions``; ``features``: positional features peaking
    after position 0; ``feature_points``: ``[m, 3]`` their decoder directions, scaled to the mean
    radius of the rows (a direction has no length of its own); ``peaks``: their peak positions."""

    rows: np.ndarray
    positions: np.ndarray
    features: np.ndarray
    feature_points: np.ndarray
    peaks: np.ndarray


@dataclass
class Analysis:
    """Everything ``posfeat analyze`` computes. Tables are pandas DataFrames; arrays are numpy
    (CPU).

    Attributes:
        features: one row per feature (``posfeat.analyses.classification.FEATURE_COLUMNS`` plus decoder
            geometry).
        stats_context: exact grid statistics over all tokens and positions ``0..context-1``.
        stats_all: the same over all studied positions (profiles past the context).
        pca: PCA of W_pos rows ``1..context-1``.
        by_position: per position: reconstruction metrics and baselines, the positional code (firing
            positional features and their peaks), spurious firing, error attribution, add-back, and
            the chosen token's top features (``token_f<N>``).
        spurious_examples: strongest (feature, token) pairs firing only past the context (exact).
        spurious_by_feature: per feature, how often it fires spuriously past the context (exact).
        token: the chosen token's id (the per-token figure's).
        token_features: the chosen token's top features.
        token_profile: their activations at every position ``[n_pos, k]``.
        tokens: per token, exact over the context: how many of its top features are flat
            (``tokens.csv``).
        token_panels: ``(token id, why, top features, profile [n_pos, k])`` for the tokens drawn as
            small multiples: the chosen one, the most frequent ones and the most bent one.
        nulls: the null draws that need the weights (``summary["nulls"]``: random walks and permuted
            orders for the helix, the random dictionary's statistics per draw; the others are drawn
            from the tables).
        geometry: the weight-side statistics the findings read (``summary["geometry"]``: the helix's
            curve share, W_E's variance in W_pos's principal subspace).
        findings: the verdicts (``summary["findings"]``).
        numbers: the headline numbers, typed (:class:`~posfeat.analyses.headline.AnalysisSummary`);
            ``summary`` is their dict view, what summary.json holds.
        timings: seconds per stage.
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
    spurious_by_feature: pd.DataFrame
    token: int
    token_features: np.ndarray
    token_profile: np.ndarray
    sample: TokenSample
    helix: HelixPoints
    rules: FindingRules = field(default_factory=FindingRules)
    tokens: pd.DataFrame = field(default_factory=pd.DataFrame)
    token_panels: list[tuple[int, str, np.ndarray, np.ndarray]] = field(default_factory=list)
    nulls: dict[str, Any] = field(default_factory=dict)
    geometry: dict[str, Any] = field(default_factory=dict)
    findings: dict[str, Any] = field(default_factory=dict)
    numbers: AnalysisSummary | None = None
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def summary(self) -> dict[str, Any]:
        """The headline numbers as ``summary.json`` holds them (but the command and the time it was
        written): a dict view of :attr:`numbers`, the typed
        :class:`~posfeat.analyses.headline.AnalysisSummary` (empty before it is made)."""
        return self.numbers.as_dict() if self.numbers is not None else {}

    @property
    def positional(self) -> np.ndarray:
        """Indices of positional features, sorted by peak position."""
        df = self.features[self.features.kind == "positional"].sort_values(
            ["peak_position", "feature"]
        )
        return df.feature.to_numpy()

    def neuronpedia_url(self, feature: int) -> str | None:
        """The feature's Neuronpedia page, when the SAE has a Neuronpedia id."""
        npid = self.sae.meta.neuronpedia_id
        return neuronpedia_url(npid, int(feature)) if npid else None  # validated id, URL-encoded

    def feature(self, index: int) -> Any:
        """A :class:`posfeat.FeatureCard` for one feature, from this analysis."""
        from .card import card_from_analysis

        return card_from_analysis(self, index)

    def prompt(
        self,
        text: str | list[int],
        *,
        top: int | None = 10,
        feature: int | None = None,
        tokenizer: Any = None,
    ) -> Any:
        """The features of each token of ``text`` (a :class:`posfeat.analyses.prompts.Prompt`),
        classified as this analysis classifies them."""
        from .prompts import prompt

        return prompt(self, text, top=top, feature=feature, tokenizer=tokenizer)

    def __repr__(self) -> str:
        """A few lines (under 2 KB): the pair, the feature counts and each finding's verdict; the
        tables are attributes."""
        s = self.summary
        counts = ", ".join(f"{v} {k}" for k, v in s.get("counts", {}).items())
        verdicts = "; ".join(f"{k}: {f.get('verdict')}" for k, f in self.findings.items())
        text = (
            f"<posfeat.Analysis of {s.get('model', self.emb.name)} x {s.get('sae', self.sae.name)}: "
            f"d_sae {self.sae.d_sae}, "
            f"context {self.context} of {self.emb.n_ctx} positions; features: {counts or 'n/a'}; "
            f"verdicts: {verdicts or 'none'}. "
            "Tables: .features, .by_position, .spurious_examples; .findings, .summary; "
            ".figure(name), .save(folder)>"
        )
        return text if len(text) <= 1900 else text[:1896] + "...>"

    def _repr_html_(self) -> str:
        s = self.summary
        rows = [
            ("model", s.get("model")),
            ("SAE", f"{s.get('sae')} ({s.get('sae_architecture')}, d_sae {s.get('d_sae')})"),
            ("context", f"{s.get('context_size')} of {s.get('n_ctx')} positions"),
            ("features", ", ".join(f"{v} {k}" for k, v in s.get("counts", {}).items())),
        ]
        head = "".join(
            f"<tr><th style='text-align:left'>{html.escape(str(k))}</th><td colspan=3 "
            "style='text-align:left'>"
            f"{html.escape(str(v))}</td></tr>"
            for k, v in rows
        )
        body = "".join(
            f"<tr><td style='text-align:left'>{html.escape(k)}</td><td><b>"
            f"{html.escape(f['verdict'])}</b></td>"
            f"<td style='text-align:left'>{html.escape(f['evidence'])}</td></tr>"
            for k, f in self.findings.items()
        )
        return (
            f"<table>{head}<tr><th>finding</th><th>verdict</th><th>evidence</th></tr>{body}</table>"
        )


def default_token(emb: Embeddings) -> int:
    """A common token: ' the' or 'the' when present, else token 0."""
    for s in (" the", "the", "Ġthe"):
        if emb.tokens and s in emb.tokens:
            return emb.tokens.index(s)
    return 0


def resolve_token(emb: Embeddings, token: str | int | None) -> int:
    if isinstance(token, str):
        return emb.token_id(token)
    if token is None:
        return default_token(emb)
    tid = int(token)
    if not 0 <= tid < emb.d_vocab:
        raise PosfeatError(
            f"Token id {tid} is not in the vocabulary (0..{emb.d_vocab - 1}); pass an existing "
            "token."
        )
    return tid


@contextmanager
def timed(timings: dict[str, float], stage: str) -> Iterator[None]:
    """Add the seconds spent in the block to ``timings[stage]``."""
    t0 = time.perf_counter()
    try:
        yield
    finally:
        timings[stage] = timings.get(stage, 0.0) + time.perf_counter() - t0


def decoder_geometry(emb: Embeddings, sae: SAE, pca: PCA, context: int) -> pd.DataFrame:
    """Per feature: cosine of the decoder direction with its nearest W_pos row (full space), that
    row, the nearest row on the top 3 PCs (the geometry of the note's Figure 1), the share of the
    decoder's squared norm on those 3 PCs (``decoder_pc_share``) and the cosine of the feature's
    encoder and decoder directions (``enc_dec_cos``)."""
    W = sae.W_dec.double()
    Wp = emb.W_pos[:context].double()
    cos = (W / W.norm(dim=1, keepdim=True).clamp(min=1e-12)) @ (
        Wp / Wp.norm(dim=1, keepdim=True).clamp(min=1e-12)
    ).T
    best = cos.max(1)
    rows = pca.project(to_numpy(emb.W_pos[torch.as_tensor(pca.positions)]))
    dirs = pca.project(to_numpy(sae.W_dec), center=False)
    rn = rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)
    dn = dirs / np.maximum(np.linalg.norm(dirs, axis=1, keepdims=True), 1e-12)
    nearest_pc = pca.positions[(dn @ rn.T).argmax(1)]
    norm2 = (W**2).sum(1)
    on_pcs = np.where(
        to_numpy(norm2) > 0, (dirs**2).sum(1) / np.maximum(to_numpy(norm2), 1e-300), np.nan
    )
    # each feature's encoder column as a contiguous row (a transposed view made every product and
    # norm below stride across memory: 0.27 against 0.15 s at GPT-2's width; float64 sums in
    # another order, equal to the printed 8 digits)
    enc = sae.W_enc.T.contiguous().double()
    tied = (enc * W).sum(1) / (enc.norm(dim=1) * W.norm(dim=1)).clamp(min=1e-300)
    return pd.DataFrame(
        {
            "decoder_cos_wpos": to_numpy(best.values),
            "nearest_wpos_row": to_numpy(best.indices),
            "nearest_wpos_row_pc": nearest_pc,
            "decoder_pc_share": on_pcs,
            "enc_dec_cos": to_numpy(tied),
        }
    )


def helix_points(emb: Embeddings, sae: SAE, pca: PCA, features: pd.DataFrame) -> HelixPoints:
    """See :class:`HelixPoints`; position-0 features are left out (reported separately), as in the
    note."""
    pts = pca.project(to_numpy(emb.W_pos[torch.as_tensor(pca.positions)]))
    sel = features[(features.kind == "positional") & (features.peak_position > 0)]
    feats = sel.feature.to_numpy()
    proj = pca.project(
        to_numpy(sae.W_dec[torch.tensor(np.asarray(feats, dtype=np.int64), device=sae.device)]),
        center=False,
    )
    norm = np.linalg.norm(proj, axis=1, keepdims=True)
    fpts = proj / np.where(norm > 0, norm, 1) * np.linalg.norm(pts, axis=1).mean()
    return HelixPoints(
        _three_columns(pts),
        pca.positions,
        feats,
        _three_columns(fpts),
        sel.peak_position.to_numpy(),
    )


def _three_columns(points: np.ndarray) -> np.ndarray:
    """``[n, 3]``: a model with fewer than three PCs (d_model 2, or two positions) gets its missing
    axes as zeros, so the 3-D figures draw it flat instead of failing."""
    points = (
        np.asarray(points, dtype=float).reshape(len(points), -1)
        if np.size(points)
        else np.zeros((len(points), 0))
    )
    return np.pad(points, ((0, 0), (0, max(0, 3 - points.shape[1]))))[:, :3]


def token_profile(
    emb: Embeddings,
    sae: SAE,
    tid: int,
    n_pos: int,
    context: int,
    k: int,
    b: torch.Tensor | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The top ``k`` features of token ``tid`` by mean over the context (those it activates at all),
    and their activations at every position ``[n_pos, k]``. ``b``: the position parts of positions
    ``0..n_pos-1`` when the caller has them (a separable SAE; one ``[n_pos, d_in] x [d_in, d_sae]``
    product spared per token)."""
    pos = torch.arange(n_pos)
    if sae.separable:
        a, b_own = additive_parts(emb, sae, torch.tensor([tid]), pos if b is None else pos[:1])
        b = b_own if b is None else b
        # the ranking from the context's rows, the profile for the top columns alone (not the whole
        # [n_pos, d_sae] activations: 0.08 s a token at GPT-2's shapes), each as the engine
        # computes a separable SAE's activation: pre where pre > cut, else 0
        mean = to_numpy(sae.activate(a + b[:context])).astype(np.float64).mean(0)
        top = _top_features(mean, k)
        cols = torch.as_tensor(top, device=b.device)
        pre = a[:, cols] + b[:, cols]
        act = torch.where(pre > sae.cut(pre.dtype)[cols], pre, torch.zeros((), dtype=pre.dtype))
        return top, to_numpy(act).astype(np.float64)
    prof = to_numpy(
        sae.encode(emb.inputs(torch.full((n_pos,), tid, device=emb.device), pos.to(emb.device)))
    )
    # float64 only where it is summed and for the columns returned (not the whole [n_pos, d_sae]:
    # 0.2 s a token at GPT-2's shapes)
    top = _top_features(prof[:context].astype(np.float64).mean(0), k)
    return top, prof[:, top].astype(np.float64)


def _top_features(mean: np.ndarray, k: int) -> np.ndarray:
    """The ``k`` largest of ``mean`` (ties: the lower feature first), those above zero only."""
    top = np.argsort(-mean, kind="stable")[:k]
    return top[mean[top] > 0]  # only features the token activates


def _grid(
    emb: Embeddings, sae: SAE, context: int, n_pos: int, progress: bool, token_top_k: int
) -> tuple[GridStats, GridStats, Any]:
    if sae.separable:
        sets = [range(context)] if n_pos == context else [range(context), range(n_pos)]
        stats, never = grid_statistics(
            emb,
            sae,
            sets,
            progress=progress,
            never_firing_context=context,
            token_top_k=token_top_k,
            histograms=True,  # the report's feature cards, from this pass's token parts
        )
        return stats[0], stats[-1], never
    ctx = feature_stats(emb, sae, range(context), progress=progress)
    return (
        ctx,
        (ctx if n_pos == context else feature_stats(emb, sae, range(n_pos), progress=progress)),
        None,
    )


def _spurious(
    emb: Embeddings,
    sae: SAE,
    stats_all: GridStats,
    never: Any,
    kinds: np.ndarray,
    context: int,
    n_pos: int,
    b_pos: torch.Tensor | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Exact spurious firing for separable SAEs; NaN (not computed) for TopK, whose counts are not
    monotone in ``b``. ``b_pos``: the position parts when made already."""
    if never is not None:
        per_pos, by_feature = spurious_counts(stats_all, context, kinds)
        examples = spurious_examples(emb, sae, never, kinds, context, n_pos, b_pos=b_pos)
        return per_pos, by_feature, examples
    per_pos = pd.DataFrame(
        {
            "position": stats_all.positions,
            "spurious_per_token": np.nan,
            "spurious_pairs": np.nan,
            "spurious_null_per_token": np.nan,
        }
    )
    return (
        per_pos,
        pd.DataFrame(columns=SPURIOUS_FEATURE_COLUMNS),
        pd.DataFrame(columns=SPURIOUS_COLUMNS),
    )


def token_panels(
    emb: Embeddings,
    sae: SAE,
    tokens: pd.DataFrame,
    tid: int,
    n_pos: int,
    context: int,
    k: int,
    b: torch.Tensor | None = None,
    chosen: tuple[np.ndarray, np.ndarray] | None = None,
) -> list[tuple[int, str, np.ndarray, np.ndarray]]:
    """The tokens drawn as small multiples: the chosen one, the two most frequent others, the most
    bent frequent one. ``b``: :func:`token_profile`'s position parts when the caller has them;
    ``chosen``: the chosen token's profile when made already."""
    act = tokens[tokens.n_nonpositional > 0]
    picks: list[tuple[int, str]] = [(tid, "chosen")]
    for t in act.sort_values(["weight", "token_id"], ascending=[False, True]).token_id:
        if len(picks) >= 3:
            break
        if int(t) != tid:
            picks.append((int(t), "frequent"))
    common = act[act.weight >= act.weight.quantile(0.9)] if len(act) > 20 else act
    bent = common.sort_values(["flat_share", "max_cv", "token_id"], ascending=[True, False, True])
    for t in bent.token_id:
        if int(t) not in {p for p, _ in picks}:
            picks.append((int(t), "most bent"))
            break
    if b is None and sae.separable:
        b = position_parts(emb, sae, n_pos)  # shared by every panel
    out = []
    for t, why in picks:
        feats, prof = (
            chosen
            if chosen is not None and t == tid
            else token_profile(emb, sae, t, n_pos, context, k, b)
        )
        out.append((t, why, feats, prof))
    return out


def position_parts(emb: Embeddings, sae: SAE, n_pos: int) -> torch.Tensor:
    """A separable SAE's position parts of positions ``0..n_pos-1`` ``[n_pos, d_sae]``
    (:func:`token_profile`'s ``b``)."""
    return additive_parts(emb, sae, torch.arange(1), torch.arange(n_pos))[1]


def study_count(positions: Any, n_ctx: int) -> int:
    """``analyze``'s positions as a count: an int N, or any set :func:`resolve_index` accepts that
    is ``0..N-1``."""
    idx = resolve_index(positions, n_ctx, "positions")
    if int(idx[0]) != 0 or int(idx[-1]) != len(idx) - 1:
        raise PosfeatError(
            f"{arg('positions', shorten(repr(positions)))} is not 0..N-1: analyze studies positions "
            "from 0 on; "
            "give a count N."
        )
    return len(idx)


def _check_settings(positional_share: Any, semantic_share: Any, n_token_features: Any) -> None:
    for name, share in (("positional_share", positional_share), ("semantic_share", semantic_share)):
        if isinstance(share, bool) or not isinstance(share, numbers.Real) or not 0 <= share <= 1:
            raise PosfeatTypeError(
                f"{arg(name, shorten(repr(share)))} is not a share; give a number from 0 to 1."
            )
    if (
        isinstance(n_token_features, bool)
        or not isinstance(n_token_features, numbers.Integral)
        or n_token_features < 1
    ):
        raise PosfeatTypeError(
            f"{arg('n_token_features', shorten(repr(n_token_features)))} is not a count; give a "
            "whole "
            "number, 1 or more."
        )


def analyze(
    emb: Any,
    sae: Any,
    *,
    positions: IndexSet = None,
    tokens_sample: int = AnalyzeConfig.tokens_sample,
    token: str | int | None = AnalyzeConfig.token,
    token_weights: Any = "auto",
    seed: int = AnalyzeConfig.seed,
    device: str | torch.device | None = None,
    positional_share: float = AnalyzeConfig.positional_share,
    semantic_share: float = AnalyzeConfig.semantic_share,
    n_token_features: int = AnalyzeConfig.n_token_features,
    rules: FindingRules | None = None,
    progress: bool = True,
) -> Analysis:
    """Run every analysis of the note on ``emb`` x ``sae`` where they live (see module docstring).

    Args:
        emb: the model: :class:`Embeddings`, or anything :func:`posfeat.load_embeddings` accepts (a
            name, a folder, a TransformerLens ``HookedTransformer``, a transformers
            ``PreTrainedModel``), centred as the SAE was trained.
        sae: an :class:`SAE`, or anything :func:`posfeat.load_sae` accepts (a folder, a release, a
            sae_lens SAE object).
        positions: study positions ``0..positions-1``: a count N, as everywhere in posfeat, or
            ``range(N)`` (default all of W_pos).
        tokens_sample: tokens sampled (seeded) for the reconstruction analyses.
        token: token (string or id) for the per-token figure (default ' the').
        token_weights: draw the sample from these weights (tensor or safetensors file); ``"auto"``
            (default) uses the token distribution the SAE folder ships, else uniform; None: uniform.
        device: move the pair there first (default: where it is).
        positional_share: a feature is positional when its position share is at least this (the
            classification rule).
        semantic_share: a feature is semantic when its token share is at least this.
        rules: thresholds of the verdicts (:class:`FindingRules`).
        progress: show each stage's progress (a bar in a terminal or notebook, one line per stage in
            a log; False: nothing).
    """
    emb, sae = on_device(*as_pair(emb, sae), device)
    check_pair(emb, sae)
    n_pos = study_count(positions, emb.n_ctx)
    _check_settings(positional_share, semantic_share, n_token_features)
    context = min(sae_context(sae, emb.n_ctx), n_pos)
    tid = resolve_token(emb, token)
    weights, sample = _token_sample(emb, sae, token_weights, tokens_sample, seed)
    rules = rules or FindingRules()
    timings: dict[str, float] = {}
    with timed(timings, "grid_statistics"):
        stats_ctx, stats_all, never = _grid(emb, sae, context, n_pos, progress, n_token_features)
        # the engine's block buffers: a few hundred MB at GPT-2 width, before
        # reconstruction's
        release_freed()
    kinds = classify(stats_ctx, positional_share, semantic_share)
    pca = (
        positional_pca(emb.W_pos, range(1, context))
        if context > 2
        else positional_pca(emb.W_pos, range(0, min(emb.n_ctx, 3)))
    )
    with ThreadPoolExecutor(1) as pool:
        # the decoder's geometry (torch, which lets go of the interpreter) on the other core while
        # the feature table (Python and numpy) is made: 1.25 -> 0.8 s on the GPT-2 stand-in
        geometry = pool.submit(decoder_geometry, emb, sae, pca, context)
        features = pd.concat([feature_table(stats_ctx, emb, kinds), geometry.result()], axis=1)
    b_pos = position_parts(emb, sae, n_pos) if sae.separable else None  # for every token profile
    top_feats, prof = token_profile(emb, sae, tid, n_pos, context, n_token_features, b_pos)
    positional = features.feature[features.kind == "positional"].to_numpy()
    code = positional_code(
        stats_all,
        positional,
        features.peak_position.to_numpy()[positional],
        context,
        nearest_rows=nearest_context_rows(emb.W_pos, stats_all.positions, context),
    )
    code["positional_mass"] = stats_all.mean_by_position[positional].sum(0)
    with timed(timings, "spurious_firing"):
        spur, by_feature, examples = _spurious(
            emb, sae, stats_all, never, kinds, context, n_pos, b_pos
        )
    with timed(timings, TOKEN_PROFILES.key):
        tokens = token_flatness(
            emb,
            sae,
            kinds,
            context,
            n_token_features,
            rules.flat_cv,
            None if weights is None else to_numpy(weights),
            top=stats_ctx.token_top,
        )
        panels = token_panels(
            emb, sae, tokens, tid, n_pos, context, n_token_features, b_pos, (top_feats, prof)
        )
        del b_pos
    with timed(timings, "nulls"):
        nulls, geometry = _nulls(
            emb,
            sae,
            pca,
            features,
            context,
            rules,
            positional_share,
            n_token_features,
            weights,
            seed,
        )
    # The reconstruction comes last: on the first run after an install its kernels are compiled
    # meanwhile in a second process (which goes on with the cards'), and the stages above need
    # none of them, so they run while it compiles.
    with timed(timings, "reconstruction"):
        warmup.wait("reconstruction")
        # the earlier stages' temporaries, before the stage of the run's peak (the stand-in's
        # analyze: 3.09 -> 2.99 GiB in one process)
        release_freed()
        samp = sample_analysis(
            emb, sae, sample, torch.arange(n_pos), kinds, pca, context, seed=seed, progress=progress
        )
    by_pos = samp.per_position.merge(code, on=["position", "in_context"]).merge(spur, on="position")
    for j, f in enumerate(top_feats):
        by_pos[f"token_f{int(f)}"] = prof[:, j]
    an = Analysis(
        emb=emb,
        sae=sae,
        context=context,
        features=features,
        stats_context=stats_ctx,
        stats_all=stats_all,
        pca=pca,
        by_position=by_pos,
        spurious_examples=examples,
        spurious_by_feature=by_feature,
        token=tid,
        token_features=top_feats,
        token_profile=prof,
        sample=sample,
        helix=helix_points(emb, sae, pca, features),
        rules=rules,
        tokens=tokens,
        token_panels=panels,
        nulls=nulls,
        geometry=geometry,
        timings=timings,
    )
    an.findings = compute_findings(
        features,
        by_pos,
        context,
        pca.explained_variance_ratio,
        (int(pca.positions.min()), int(pca.positions.max())),
        emb.token_str(tid),
        an.rules,
        tokens=tokens,
        nulls=nulls,
        geometry=geometry,
    )
    an.numbers = summarize(
        an, stats_ctx, positional_share=positional_share, semantic_share=semantic_share, seed=seed
    )
    return an


def _nulls(
    emb: Embeddings,
    sae: SAE,
    pca: PCA,
    features: pd.DataFrame,
    context: int,
    rules: FindingRules,
    positional_share: float,
    k: int,
    weights: torch.Tensor | None,
    seed: int,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The null draws that need the weights (``summary["nulls"]``) and the weight-side statistics
    the findings read (``summary["geometry"]``): the helix's random walks and permuted orders, the
    random dictionary's draws."""
    helix_stats, helix_draws = helix_statistics(emb.W_pos, pca.positions.tolist(), seed)
    moments = token_moments(emb.W_E)  # W_E's mean and covariance, once for both
    dictionary = dictionary_draws(
        emb,
        sae,
        context,
        features.fire.to_numpy(float),
        disjoint_cv=rules.disjoint_cv,
        positional_share=positional_share,
        flat_cv=rules.flat_cv,
        flat_min_features=int(rules.flat_min_features),
        k=k,
        weights=None if weights is None else to_numpy(weights),
        seed=seed,
        moments=moments,
    )
    geometry = {**helix_stats, **embedding_geometry(emb, context, moments=moments)}
    return {**helix_draws, "random_dictionary": dictionary.as_dict()}, geometry


def _token_sample(
    emb: Embeddings, sae: SAE, token_weights: Any, n: int, seed: int
) -> tuple[torch.Tensor | None, TokenSample]:
    """The token weights (``"auto"``: the distribution the SAE folder ships, else uniform) and the
    seeded sample drawn from them."""
    if isinstance(token_weights, str) and token_weights == "auto":
        shipped = sae_token_weights(sae, emb.d_vocab)
        token_weights = None if shipped is None else shipped[1]
    weights = token_weights_arg(token_weights, emb.d_vocab)
    return weights, sample_tokens(emb, n, weights=weights, seed=seed)


def _mean(df: pd.DataFrame, col: str) -> float:
    return float(df[col].mean()) if len(df) else float("nan")


def _knees(features: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """The note's method beside the rule: Kneedle (within a stated window) and the largest gap of
    the sorted scores."""
    ranked = features.sort_values(["positional_score", "feature"], ascending=[False, True]).feature
    rule = set(features.feature[features.kind == "positional"])
    scores = features.positional_score.to_numpy()
    kneedle, gap = knee_kneedle(scores, KNEEDLE_WINDOW), knee_largest_gap(scores)
    return {
        "kneedle": {"window": KNEEDLE_WINDOW, **overlap(set(ranked.head(kneedle)), rule)},
        "largest_gap": {
            "window": gap_window(int((scores > 0).sum())),
            **overlap(set(ranked.head(gap)), rule),
        },
    }


def _bert_edge(an: Analysis) -> dict[str, Any] | None:
    """BERT-style encoders' last positions are rarely trained: their spurious firing, called out
    against the median past the context."""
    if not an.emb.info.get("token_type_row_added"):
        return None
    bp = an.by_position
    past = bp[bp.position >= an.context]
    edge = bp[bp.position >= bp.position.max() - 7]
    if not len(past):
        return None
    return {
        "positions": [int(edge.position.min()), int(edge.position.max())],
        "spurious_per_token": _mean(edge, "spurious_per_token"),
        "median_past_context": float(past.spurious_per_token.median()),
    }


def summarize(an: Analysis, stats_ctx: GridStats, **settings: Any) -> AnalysisSummary:
    """The headline numbers of an analysis (what summary.json holds), all derived from its
    tables."""
    from ..core.version import __version__
    from .evaluation import pooled_explained_variance, range_means

    f, bp = an.features, an.by_position
    live = f[f.kind != "dead"]
    pos_feats = f[f.kind == "positional"]
    inside, past = (
        range_means(bp, 0, an.context),
        range_means(bp, an.context, int(bp.position.max()) + 1),
    )
    past_rows, in_rows = bp[bp.position >= an.context], bp[bp.position < an.context]
    ab_past = _mean(past_rows, "addback_fvu")
    knees = _knees(f)
    return AnalysisSummary(
        **{
            "model": an.emb.name,
            "sae": an.sae.name,
            "sae_architecture": an.sae.architecture,
            "d_sae": an.sae.d_sae,
            "d_model": an.emb.d_model,
            "d_vocab": an.emb.d_vocab,
            "n_ctx": an.emb.n_ctx,
            "positions_studied": int(bp.position.max()) + 1,
            "centered": bool(an.emb.centered),
            "context_size": an.context,
            "device": str(an.sae.device),
            "classification_rule": {
                "positional": f"position_share >= {settings['positional_share']}",
                "semantic": f"token_share >= {settings['semantic_share']}",
                "dead": "never fires on the grid within the context",
                "mixed": "otherwise",
            },
            "counts": {k: int((f.kind == k).sum()) for k in KINDS},
            "counts_share_of_live": {
                k: int((f.kind == k).sum()) / max(1, len(live)) for k in KINDS if k != "dead"
            },
            "sae_dataset": an.sae.meta.dataset,
            "counts_by_threshold": counts_by_threshold(stats_ctx),
            "disjoint_fraction": float(
                (
                    np.fmin(live.position_dependence, live.token_dependence) <= an.rules.disjoint_cv
                ).mean()
            )
            if len(live)
            else float("nan"),
            "positional_score_knee": knees["kneedle"]["count"],
            "positional_score_gap": knees["largest_gap"]["count"],
            "knee_vs_rule": knees,
            "pca_top3_variance": an.pca.top(3),
            "pca_spectrum": [float(v) for v in an.pca.explained_variance_ratio[:10]],
            "pca_positions": [int(an.pca.positions.min()), int(an.pca.positions.max())],
            "position0_features": [int(x) for x in pos_feats.feature[pos_feats.peak_position == 0]],
            "positional_mean_span": float(pos_feats.span_width[pos_feats.span_width > 0].mean())
            if len(pos_feats)
            else float("nan"),
            "multi_run_features": [int(x) for x in pos_feats.feature[pos_feats.n_runs >= 2]],
            "high_interaction_features": [
                int(x) for x in live.feature[live.interaction_share.fillna(0) >= INTERACTION_FLAG]
            ],
            "token": an.emb.token_str(an.token),
            "token_top_features": [int(x) for x in an.token_features],
            "token_sample": an.sample.how,
            "fvu_in_context": inside["fvu"],
            "fvu_past_context": past["fvu"],
            "l0_in_context": inside["l0"],
            "l0_past_context": past["l0"],
            "explained_variance_in_context": pooled_explained_variance(
                bp, an.emb, an.sample, 0, an.context
            ),
            "explained_variance_past_context": pooled_explained_variance(
                bp, an.emb, an.sample, an.context, int(bp.position.max()) + 1
            ),
            "random_fvu_in_context": inside["random_fvu"],
            "random_fvu_past_context": past["random_fvu"],
            "zero_fvu_in_context": inside["zero_fvu"],
            "zero_fvu_past_context": past["zero_fvu"],
            "addback_fvu_past_context": ab_past,
            "addback_error_removed": (1 - ab_past / past["fvu"])
            if past["fvu"] and np.isfinite(past["fvu"])
            else float("nan"),
            "pc_error_share_past_context": _mean(past_rows, "pc_error_share"),
            "spurious_per_token_past_context": _mean(past_rows, "spurious_per_token"),
            "spurious_per_token_in_context": _mean(in_rows, "spurious_per_token"),
            "spurious_features": len(an.spurious_by_feature),
            "semantic_spread_in_context": _mean(in_rows, "semantic_spread"),
            "semantic_spread_past_context": _mean(past_rows, "semantic_spread"),
            "semantic_deviation_in_context": _mean(in_rows, "semantic_deviation"),
            "semantic_deviation_past_context": _mean(past_rows, "semantic_deviation"),
            "bert_edge": _bert_edge(an),
            "nulls": dict(an.nulls),
            "geometry": dict(an.geometry),
            "findings": an.findings,
            "rules": an.rules.as_dict(),
            "timings": dict(an.timings),
            "posfeat_version": __version__,
            "settings": settings,
        }
    )
