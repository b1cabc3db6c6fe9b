"""Length generalisation: what happens to an SAE past the context it was trained on.

* reconstruction per position over all of W_pos, against a random vector of the input's norm
  and the zero reconstruction (:mod:`posfeat.evaluation`);
* positional features extended past the context and the "apparent position" they signal;
* semantic features past the context: spread of their activation within vs beyond the context
  (on the token sample), and spurious firing, computed exactly on the whole vocabulary for
  separable SAEs: feature ``i`` fires on token ``t`` at position ``p`` but at no position inside
  the context iff ``a[t, i] + b[p, i] > cut[i] >= a[t, i] + max_{q < context} b[q, i]``;
* attribution of the error past the context: its share inside the span of the top principal
  components of W_pos, and the add-back test (drop positional features, add the true W_pos row).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from .embeddings import Embeddings
from .evaluation import position_metrics, token_spread
from .grid_stats import GridStats, additive_parts
from .helix import PCA
from .reconstruction import TokenSample, enumerate_activations, enumerate_reconstructions
from .sae import SAE

SPURIOUS_COLUMNS = ["feature", "kind", "token", "token_id", "position", "activation"]


def apparent_position(stats_all: GridStats, positional: np.ndarray, peak: np.ndarray, context: int, min_fire: float = 0.5) -> pd.DataFrame:
    """Per position, the activation-weighted mean peak position of the positional features firing there.

    ``positional``: indices of positional features; ``peak``: their peak positions within the context.
    """
    rows = []
    mean = stats_all.mean_by_position[positional]
    fire = stats_all.fire_by_position[positional]
    for j, p in enumerate(stats_all.positions):
        on = fire[:, j] >= min_fire
        w = mean[on, j]
        rows.append({"position": int(p), "in_context": bool(p < context), "n_positional_firing": int(on.sum()),
                     "apparent_position": float((w * peak[on]).sum() / w.sum()) if w.sum() > 0 else float("nan")})
    return pd.DataFrame(rows)


@torch.no_grad()
def spurious_firing(emb: Embeddings, sae: SAE, kinds: np.ndarray, context: int, positions: np.ndarray, *, device: str = "cpu",
                    top: int = 20, feature_chunk: int = 512) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Exact spurious firing over the whole vocabulary (separable SAEs).

    Returns ``per_position`` (columns ``position``, ``spurious_per_token``: mean over all tokens of
    the number of features firing there that never fire on that token inside the context, and
    ``spurious_pairs``) and ``examples`` (the ``top`` strongest spurious (feature, token) pairs,
    columns ``SPURIOUS_COLUMNS``).
    """
    tok = torch.arange(emb.d_vocab)
    pos = torch.as_tensor(positions, dtype=torch.long)
    cut = sae.cut(torch.float32, device)
    counts = np.zeros(len(pos))
    best: list[tuple[float, int, int, int]] = []
    for f0 in range(0, sae.d_sae, feature_chunk):
        f1 = min(f0 + feature_chunk, sae.d_sae)
        sub = sae.subset(slice(f0, f1))
        a, b_ctx = additive_parts(emb, sub, tok, torch.arange(context), device)
        _, b = additive_parts(emb, sub, tok[:1], pos, device)
        M = b_ctx.max(0).values  # [F]
        c = cut[f0:f1]
        cand = (b > M[None, :]).any(0).nonzero().flatten()  # only these can fire spuriously
        if cand.numel() == 0:
            continue
        a_s = a[:, cand].T.contiguous().sort(dim=1).values  # [C, n_tok]
        hi = torch.searchsorted(a_s, (c[cand] - M[cand])[:, None], right=True)  # #a <= cut - M
        lo = torch.searchsorted(a_s, (c[cand][:, None] - b[:, cand].T).contiguous(), right=True)  # [C, n_pos]: #a <= cut - b_p
        n = (hi - lo).clamp(min=0)  # tokens with cut - b_p < a <= cut - M
        counts += n.sum(0).double().cpu().numpy()
        has = (n.sum(1) > 0).nonzero().flatten()
        for ci in has.tolist():
            j = int(b[:, cand[ci]].argmax())
            if int(n[ci, j]) == 0:
                continue
            fi = int(cand[ci])
            col = a[:, fi]
            ok = (col + b[j, fi] > c[fi]) & (col <= c[fi] - M[fi])
            t = int(torch.where(ok, col, torch.full_like(col, -torch.inf)).argmax())
            best.append((float(col[t] + b[j, fi]), f0 + fi, t, int(pos[j])))
    best.sort(reverse=True)
    per_pos = pd.DataFrame({"position": pos.numpy(), "spurious_per_token": counts / emb.d_vocab, "spurious_pairs": counts})
    ex = pd.DataFrame([{"feature": f, "kind": kinds[f], "token": emb.token_str(t), "token_id": t, "position": p, "activation": v}
                       for v, f, t, p in best[:top]], columns=SPURIOUS_COLUMNS)
    return per_pos, ex


@dataclass
class SampleAnalysis:
    """Per-position results that need reconstruction (a stated token sample at every position).

    ``per_position`` has the columns of ``posfeat.evaluation.EVAL_COLUMNS`` plus ``pc_error_share``,
    ``addback_fvu`` and ``semantic_spread``.
    """

    per_position: pd.DataFrame
    addback_offset: np.ndarray


@torch.no_grad()
def sample_analysis(emb: Embeddings, sae: SAE, sample: TokenSample, positions: torch.Tensor, kinds: np.ndarray, pca: PCA,
                    context: int, *, n_pcs: int = 3, device: str = "cpu", seed: int = 0) -> SampleAnalysis:
    """Reconstruction metrics, error attribution to the W_pos principal subspace, the add-back test and
    semantic spread, in one pass over the sample at every position (plus a cheap in-context pre-pass).

    * ``pc_error_share``: share of ``sum ||x - x_hat||^2`` lying in the span of the top ``n_pcs``
      components of W_pos;
    * ``addback_fvu``: FVU of ``decode(f * non_positional) + W_pos[p] + m``, where the constant
      ``m`` is the mean residual inside the context (fitted there), so that only what the
      positional features do past the context is replaced by the true position. With
      ``r = x - decode(f * non_positional) - W_pos[p]``, ``sum ||r - m||^2 = sum ||r||^2 - 2 m . sum r + n ||m||^2``
      per position, so one pass suffices;
    * ``semantic_spread``: mean over semantic features and tokens of ``|f - in-context mean of f
      for that token|`` at each position.
    """
    tok = sample.ids
    denom = token_spread(sample, emb)
    gen = torch.Generator().manual_seed(seed)
    P = torch.as_tensor(pca.components[:n_pcs], dtype=torch.float32, device=device)  # [k, d]
    pos_feats = torch.as_tensor(np.nonzero(kinds == "positional")[0], dtype=torch.long, device=device)
    sem = torch.as_tensor(np.nonzero(kinds == "semantic")[0], dtype=torch.long, device=device)
    W_dec_pos = sae.W_dec.to(device)[pos_feats]  # [n_positional, d]
    W_pos = emb.W_pos.to(device)
    sem_mean = torch.zeros(len(tok), len(sem), dtype=torch.float64, device=device)
    ctx_pos = positions[positions < context]
    if len(sem) and len(ctx_pos):  # pre-pass: each token's in-context mean of each semantic feature (no decode)
        for _, _, f in enumerate_activations(emb, sae, tok, ctx_pos, device=device):
            sem_mean += f[..., sem].double().sum(1)
        sem_mean /= len(ctx_pos)
    parts, r_sum, r_sq = [], [], []
    for pc, x, f, x_hat in enumerate_reconstructions(emb, sae, tok, positions, device=device):
        m = position_metrics(x, f, x_hat, denom, gen)
        err = x - x_hat
        in_pc = (err @ P.T).double().pow(2).sum(-1).sum(0)
        tot = err.double().pow(2).sum(-1).sum(0)
        r = (x - x_hat + f[..., pos_feats] @ W_dec_pos - W_pos[pc][None]).double()  # x - decode(f * non_positional) - W_pos[p]
        r_sum.append(r.sum(0))  # [n_chunk, d]
        r_sq.append(r.pow(2).sum(-1).sum(0))  # [n_chunk]
        spread = (f[..., sem].double() - sem_mean[:, None, :]).abs().mean((0, 2)) if len(sem) else torch.zeros(len(pc), dtype=torch.float64)
        parts.append(pd.DataFrame({"position": pc.cpu().numpy(), "in_context": (pc < context).cpu().numpy(),
                                   **{k: v.cpu().numpy() for k, v in m.items()},
                                   "pc_error_share": torch.where(tot > 0, in_pc / tot.clamp(min=1e-300), torch.nan).cpu().numpy(),
                                   "semantic_spread": spread.cpu().numpy()}))
    df = pd.concat(parts, ignore_index=True)
    r_sum_t, r_sq_t = torch.cat(r_sum), torch.cat(r_sq)
    inside = (positions < context).to(device)
    n = len(tok)
    offset = r_sum_t[inside].sum(0) / max(1, n * int(inside.sum()))
    ab = r_sq_t - 2 * (r_sum_t @ offset) + n * offset.pow(2).sum()
    df["addback_fvu"] = (ab.clamp(min=0) / denom).cpu().numpy()
    return SampleAnalysis(df, offset.cpu().numpy())
