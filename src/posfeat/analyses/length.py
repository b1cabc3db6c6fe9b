"""Length generalisation: what happens to an SAE past the context it was trained on.

* reconstruction per position over all studied positions, against a random vector of the input's
  norm and the zero reconstruction (:mod:`posfeat.analyses.evaluation`);
* positional features extended past the context: which fire where, the spread of their peaks
  (all of which lie inside the context) against the true position, inside and past the context;
* semantic features past the context: spread of their activation around each token's in-context
  mean (on the token sample), and spurious firing, exact over the whole vocabulary for separable
  SAEs. A token fires feature ``i`` at ``p`` but nowhere inside the context iff
  ``cut - b[p] < a <= cut - max_{q < context} b[q]``; since the number of tokens firing at a
  position grows with ``b``, the count of such tokens at ``p`` is exactly
  ``max(0, count[p] - max_{q < context} count[q])``, read off the exact grid statistics;
* attribution of the error past the context: its share inside the span of the top principal
  components of W_pos, and the add-back test (drop positional features, add the true W_pos row).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from ..core.embeddings import Embeddings
from ..core.progress import progress_bar
from ..core.sae import SAE
from ..core.tensors import to_numpy
from ..engine.grid_stats import GridStats, NeverFiring, additive_parts
from ..engine.sample import DeviationSums, SampleGrid, TokenSample
from .evaluation import chunk_metrics, chunk_sums, random_cosines, token_spread
from .helix import PCA

SPURIOUS_COLUMNS = ["feature", "kind", "token", "token_id", "position", "activation"]
SPURIOUS_FEATURE_COLUMNS = [
    "feature",
    "kind",
    "spurious_pairs",
    "spurious_per_position",
    "positions_with_spurious",
    "first_spurious_position",
    "max_spurious_position",
]
PEAK_QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9)


def nearest_context_rows(W_pos: torch.Tensor, positions: np.ndarray, context: int) -> np.ndarray:
    """``Int[ndarray, "n_pos"]``: for each position, the in-context W_pos row nearest to its own by
    cosine in the full space (for an in-context position, the nearest *other* in-context row)."""
    W = W_pos.double()
    Wn = W / W.norm(dim=1, keepdim=True).clamp(min=1e-12)
    cos = Wn[torch.as_tensor(positions, dtype=torch.long, device=W.device)] @ Wn[:context].T
    inside = torch.as_tensor(positions < context, device=W.device)
    rows = torch.nonzero(inside).flatten()
    cos[rows, torch.as_tensor(positions, device=W.device)[rows]] = -2.0
    return to_numpy(cos.argmax(1))


def positional_code(
    stats_all: GridStats,
    positional: np.ndarray,
    peak: np.ndarray,
    context: int,
    min_fire: float = 0.5,
    nearest_rows: np.ndarray | None = None,
) -> pd.DataFrame:
    """Per position: the positional features firing there (on at least ``min_fire`` of the tokens)
    and where they peak.

    Columns: ``position``, ``in_context``, ``nearest_context_row`` (:func:`nearest_context_rows`,
    when given), ``n_positional_firing`` (zero is an answer too), ``apparent_position``
    (activation-weighted mean of their peaks), ``peak_q10 .. peak_q90`` (quantiles of their peaks)
    and ``peak_distance`` (median ``|position - peak|``); NaN where none fires."""
    mean = stats_all.mean_by_position[positional]
    fire = stats_all.fire_by_position[positional] >= min_fire
    rows = []
    for j, p in enumerate(stats_all.positions):
        on = fire[:, j]
        w, pk = mean[on, j], peak[on]
        row = {
            "position": int(p),
            "in_context": bool(p < context),
            "nearest_context_row": int(nearest_rows[j]) if nearest_rows is not None else -1,
            "n_positional_firing": int(on.sum()),
            "apparent_position": float((w * pk).sum() / w.sum()) if w.sum() > 0 else float("nan"),
        }
        qs = np.quantile(pk, PEAK_QUANTILES) if len(pk) else [float("nan")] * len(PEAK_QUANTILES)
        row.update({f"peak_q{int(q * 100)}": float(v) for q, v in zip(PEAK_QUANTILES, qs)})
        row["peak_distance"] = float(np.median(np.abs(p - pk))) if len(pk) else float("nan")
        rows.append(row)
    return pd.DataFrame(rows)


def spurious_counts(
    stats_all: GridStats, context: int, kinds: np.ndarray
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Exact spurious firing over the whole vocabulary, from the exact counts (module docstring).

    Returns ``per_position`` (``position``, ``spurious_per_token``: features per token that fire
    there and nowhere inside the context, ``spurious_pairs``; and its null
    ``spurious_null_per_token`` at in-context
    positions: features per token that fire at ``p`` and at no other in-context position, exactly
    ``max(0, count[p] - max_{q < context, q != p} count[q])`` by the same argument; NaN past the
    context) and ``by_feature`` (``SPURIOUS_FEATURE_COLUMNS``, features with any spurious firing,
    most first)."""
    n_tok = len(stats_all.tokens)
    count = (
        stats_all.fire_by_position * n_tok
    )  # [d_sae, n_pos]; then worked on in place (two fewer copies of that size)
    np.rint(count, out=count)
    inside = stats_all.positions < context
    n_in = int(inside.sum())
    # the in-context columns: a view where they lead (positions from 0, as analyze's), else a copy
    ci = count[:, :n_in] if inside[:n_in].all() else count[:, inside]
    best_inside = ci.max(1, initial=0.0)
    loo = np.full(len(stats_all.positions), np.nan)
    if n_in >= 2:
        order = np.partition(ci, n_in - 2, axis=1)  # the two largest last, in order
        first, second = order[:, -1:], order[:, -2:-1]
        others = np.where(ci >= first, second, first)  # the best other in-context position
        loo[inside] = np.clip(ci - others, 0.0, None).sum(0) / n_tok
    spur = count  # count - best_inside, clipped at 0, and 0 inside the context
    spur -= best_inside[:, None]
    np.clip(spur, 0.0, None, out=spur)
    spur[:, inside] = 0.0
    pairs = spur.sum(0)
    per_pos = pd.DataFrame(
        {
            "position": stats_all.positions,
            "spurious_per_token": pairs / n_tok,
            "spurious_pairs": pairs,
            "spurious_null_per_token": loo,
        }
    )
    total = spur.sum(1)
    feats = np.nonzero(total > 0)[0]
    pos = stats_all.positions
    fires = spur > 0
    by_feature = pd.DataFrame(
        {
            "feature": feats,
            "kind": kinds[feats],
            "spurious_pairs": total[feats],
            "spurious_per_position": total[feats] / max(1, int((~inside).sum())),
            "positions_with_spurious": fires.sum(1)[feats],
            "first_spurious_position": pos[fires.argmax(1)[feats]].astype(int),
            "max_spurious_position": pos[spur.argmax(1)[feats]].astype(int),
        },
        columns=SPURIOUS_FEATURE_COLUMNS,
    ).sort_values(["spurious_pairs", "feature"], ascending=[False, True], ignore_index=True)
    return per_pos, by_feature


@dataclass
class OwnAndSpurious:
    """Semantic features across and past the context, split by token (:func:`own_and_spurious`);
    ``[n_feat, n_pos]`` arrays over ``positions``.

    * ``own_tokens``: ``[n_feat]`` how many tokens fire the feature at some in-context position (its
      own tokens);
    * ``own_mean``: mean activation over its own tokens at each position (zeros included);
    * ``own_inside``: ``[n_feat]`` the mean of ``own_mean`` over the in-context positions;
    * ``spurious_share``: share of all tokens firing it at the position that fire it nowhere inside
      the context (0 inside);
    * ``spurious_mean``: their mean activation when firing (NaN where none fires).
    """

    features: np.ndarray
    positions: np.ndarray
    own_tokens: np.ndarray
    own_mean: np.ndarray
    own_inside: np.ndarray
    spurious_share: np.ndarray
    spurious_mean: np.ndarray


@torch.no_grad()
def own_and_spurious(
    emb: Embeddings, sae: SAE, stats_all: GridStats, features: np.ndarray, context: int
) -> OwnAndSpurious:
    """Exact, over the grid's tokens and positions, for a separable SAE: each feature's activation
    on the tokens that fire it inside the context, apart from its firing on the tokens that do not
    (spurious).

    With ``pre[t, p] = a[t] + b[p]``, firing iff ``pre > cut`` (and then equal to ``pre``), a token
    fires the feature somewhere inside the context iff ``a[t] > own = cut - max_{q < context}
    b[q]``, and at ``p`` iff ``a[t] > cut - b[p]``: over the token parts sorted once, both are
    prefixes, so each position's counts and sums come from prefix sums (no ``n_tok x n_pos`` block).
    """
    feats = np.asarray(features, dtype=np.int64)
    positions = np.asarray(stats_all.positions)
    inside = positions < context
    n_f, n_p = len(feats), len(positions)
    own_n, own_inside = np.zeros(n_f, dtype=np.int64), np.zeros(n_f)
    own_mean, spur_share, spur_mean = (
        np.zeros((n_f, n_p)),
        np.zeros((n_f, n_p)),
        np.full((n_f, n_p), np.nan),
    )
    if n_f:
        tok = torch.tensor(
            np.asarray(stats_all.tokens), dtype=torch.long
        )  # copies: the grid's arrays may be read-only
        a_all, b_all = additive_parts(
            emb,
            sae.subset(torch.tensor(feats)),
            tok,
            torch.tensor(positions, dtype=torch.long),
            torch.float64,
        )
        a_all, b_all = to_numpy(a_all, np.float64), to_numpy(b_all, np.float64)
        cut = to_numpy(sae.cut(torch.float64), np.float64)[feats]
    for j in range(n_f):
        a = np.sort(a_all[:, j])  # ascending
        b = b_all[:, j]
        n = len(a)
        above = np.concatenate(
            [[0.0], np.cumsum(a[::-1])]
        )  # above[k]: sum of the k largest token parts
        # tokens with a > x: n - searchsorted(a, x, "right")
        k_own = (
            int(n - np.searchsorted(a, cut[j] - b[inside].max(), side="right"))
            if inside.any()
            else 0
        )
        k_fire = n - np.searchsorted(a, cut[j] - b, side="right")
        k_own_fire = np.minimum(
            k_fire, k_own
        )  # own tokens firing at p: the largest min(k_fire, k_own)
        own_n[j] = k_own
        if k_own:
            own_mean[j] = (above[k_own_fire] + k_own_fire * b) / k_own
            own_inside[j] = float(own_mean[j][inside].mean()) if inside.any() else float("nan")
        k_spur = k_fire - k_own_fire
        spur_share[j] = k_spur / n
        spur_sum = above[k_fire] - above[k_own_fire] + k_spur * b
        spur_mean[j] = np.where(k_spur > 0, spur_sum / np.maximum(k_spur, 1), np.nan)
    return OwnAndSpurious(feats, positions, own_n, own_mean, own_inside, spur_share, spur_mean)


def spurious_examples(
    emb: Embeddings,
    sae: SAE,
    never: NeverFiring,
    kinds: np.ndarray,
    context: int,
    n_pos: int,
    top: int = 20,
    b_pos: torch.Tensor | None = None,
) -> pd.DataFrame:
    """The ``top`` strongest (feature, token, position) firings past the context by a token that
    never fires it inside. ``b_pos``: the position parts of positions ``0..n_pos-1`` ``[n_pos,
    d_sae]`` when the caller has them."""
    feats = np.nonzero(np.isfinite(never.value))[0]
    if len(feats) == 0 or n_pos <= context:
        return pd.DataFrame(columns=SPURIOUS_COLUMNS)
    rows = []
    cut = to_numpy(sae.cut(torch.float64))
    for f0 in range(0, len(feats), 4096):
        fs = feats[f0 : f0 + 4096]
        b = (
            additive_parts(
                emb, sae.subset(torch.as_tensor(fs)), torch.arange(1), torch.arange(context, n_pos)
            )[1]
            if b_pos is None
            else b_pos[context:n_pos, torch.as_tensor(fs, device=b_pos.device)]
        )
        b = to_numpy(b)  # [n_past, F], float32: its argmax is the float64 copy's
        j = b.argmax(0)
        act = never.value[fs] + b[j, np.arange(len(fs))].astype(np.float64)
        for i in np.nonzero(act > cut[fs])[0]:
            rows.append((float(act[i]), int(fs[i]), int(never.token[fs[i]]), context + int(j[i])))
    rows.sort(key=lambda r: (-r[0], r[1]))
    return pd.DataFrame(
        [
            {
                "feature": f,
                "kind": kinds[f],
                "token": emb.token_str(t),
                "token_id": t,
                "position": p,
                "activation": v,
            }
            for v, f, t, p in rows[:top]
        ],
        columns=SPURIOUS_COLUMNS,
    )


@dataclass
class SampleAnalysis:
    """Per-position results that need reconstruction (a stated token sample at every position).

    ``per_position`` has the columns of ``posfeat.analyses.evaluation.EVAL_COLUMNS`` plus
    ``pc_error_share``, ``addback_fvu``, ``semantic_spread`` and ``semantic_deviation``.
    """

    per_position: pd.DataFrame
    addback_offset: np.ndarray


@torch.no_grad()
def sample_analysis(
    emb: Embeddings,
    sae: SAE,
    sample: TokenSample,
    positions: torch.Tensor,
    kinds: np.ndarray,
    pca: PCA,
    context: int,
    *,
    n_pcs: int = 3,
    seed: int = 0,
    progress: bool = False,
) -> SampleAnalysis:
    """Reconstruction metrics, error attribution to the W_pos principal subspace, the add-back test
    and semantic spread, in one pass over the sample at every position.

    * ``pc_error_share``: share of ``sum ||x - x_hat||^2`` lying in the span of the top ``n_pcs``
    components of W_pos;
    * ``addback_fvu``: FVU of ``decode(f * non_positional) + W_pos[p] + m``, where the constant
    ``m`` is
      the mean residual inside the context (fitted there). With ``r = x - decode(f * non_positional)
      - W_pos[p]``,
      ``sum ||r - m||^2 = sum ||r||^2 - 2 m . sum r + n ||m||^2`` per position, so one pass
      suffices;
    * ``semantic_spread``: mean over semantic features and tokens of ``|f - in-context mean of f for
    that
      token|`` at each position; with ``m >= 0`` that is ``(sum m + sum over non-zero f of (|f - m|
      - m)) / (n_tok n_sem)``
      (every pair, firing or not: it mixes noise with spurious firing and shrinks as pairs that
      never fire are added);
    * ``semantic_deviation``: the same deviation over the (token, semantic feature) pairs that fire
    inside the context
      only, divided by their summed in-context mean: how far features stray, on the tokens they fire
      on, as a share
      of their own in-context activation (the semantic_break finding's statistic;
      ``DeviationSums.firing_pairs``).
    """
    grid = SampleGrid(emb, sae, sample.ids)
    dev, n = grid.dev, len(sample)
    denom = token_spread(sample, emb)
    P = torch.as_tensor(pca.components[:n_pcs], dtype=torch.float32, device=dev)
    pos_feats = torch.as_tensor(np.nonzero(kinds == "positional")[0], dtype=torch.long, device=dev)
    sem = torch.as_tensor(np.nonzero(kinds == "semantic")[0], dtype=torch.long, device=dev)
    deviation = DeviationSums(grid, context, sem)
    # numba's closed form takes every position at once (each feature's prefix sums made once, not
    # once per chunk): the chunks' position parts of the semantic features are kept until then
    rows = np.empty((len(sem), len(positions)), np.float32) if deviation.fused else None
    parts, r_sum, r_sq, spread, firing = [], [], [], [], []
    bar = progress_bar(
        total=len(positions), desc="reconstruction", unit="position", enabled=progress
    )
    done = 0
    for sums in chunk_sums(grid, positions, pos_feats, P):
        pc = to_numpy(sums.positions)
        met = chunk_metrics(
            sums, denom, torch.as_tensor(random_cosines(emb.d_model, n, pc, seed), device=dev)
        )
        r_sum.append(sums.r_sum)
        r_sq.append(sums.r_sq)
        if rows is not None:
            rows[:, done : done + len(pc)] = deviation.rows(sums.chunk.b)
        else:
            spread.append(deviation(sums.chunk))
            firing.append(deviation.firing_pairs(sums.chunk, seed=seed))
        done += len(pc)
        tot = met["fvu"] * denom
        parts.append(
            pd.DataFrame(
                {
                    "position": pc,
                    "in_context": pc < context,
                    **{k: to_numpy(v) for k, v in met.items()},
                    "pc_error_share": to_numpy(
                        torch.where(tot > 0, sums.pc / tot.clamp(min=1e-300), torch.nan)
                    ),
                }
            )
        )
        bar.update(len(pc))
    bar.close()
    if rows is not None:
        spread, firing = [deviation.spread_at(rows)], [deviation.pairs_at(rows, seed=seed)]
    pair_dev, pair_total = torch.cat([f[0] for f in firing]), firing[0][1]  # the same total each
    df = pd.concat(parts, ignore_index=True)
    df["semantic_spread"] = to_numpy(torch.cat(spread) / max(1, n * len(sem)))
    df["semantic_deviation"] = to_numpy(
        pair_dev / pair_total if pair_total > 0 else torch.full_like(pair_dev, float("nan"))
    )
    r_sum_t, r_sq_t = torch.cat(r_sum), torch.cat(r_sq)
    inside = (positions < context).to(dev)
    offset = r_sum_t[inside].sum(0) / max(1, n * int(inside.sum()))
    ab = r_sq_t - 2 * (r_sum_t @ offset) + n * offset.pow(2).sum()
    df["addback_fvu"] = to_numpy(ab.clamp(min=0) / denom)
    return SampleAnalysis(df, to_numpy(offset))
