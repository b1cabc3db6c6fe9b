"""Which features of SAE A reappear, split or vanish in SAE B (two SAEs on the same model).

Features are matched by the cosine similarity of their decoder directions:

* one-to-one by an assignment maximising the total cosine (the Hungarian method while the cosine
  matrix is small enough, otherwise a greedy assignment over each feature's nearest neighbours;
  the summary says which);
* one-to-many for splits: the *children* of a feature ``a`` of A are the features of B whose
  cosine with ``a`` is at least ``threshold`` and with no other feature of A higher.

A feature of A is ``split`` when it has two or more children, ``shared`` when its assigned partner
reaches ``threshold``, else ``unique``; a feature of B is ``unique`` when no feature of A reaches
``threshold`` with it. Kinds and peaks come from each SAE's exact grid statistics when the model
is given.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch

from ..core.embeddings import Embeddings
from ..core.errors import PosfeatError
from ..core.sae import SAE, sae_context
from ..core.tensors import to_numpy
from ..engine.grid_stats import feature_stats
from ..io.sources import as_pair, load_sae
from .classification import KINDS, classify, spans

COMPARE_COLUMNS = [
    "feature_a",
    "feature_b",
    "cosine",
    "kind_a",
    "kind_b",
    "peak_a",
    "peak_b",
    "relation",
]
HUNGARIAN_MAX = 40_000_000  # cosine-matrix entries up to which the exact assignment is used
NEIGHBOURS = 8


@dataclass
class Comparison:
    """The result of :func:`compare_saes`: ``pairs`` (compare.csv), per-feature
    ``status_a``/``status_b``, and ``summary``."""

    pairs: pd.DataFrame
    status_a: pd.DataFrame
    status_b: pd.DataFrame
    summary: dict[str, Any] = field(default_factory=dict)

    def children(self, feature_a: int) -> list[int]:
        """Features of B that feature ``feature_a`` of A splits into (its children, cosine
        first)."""
        sel = self.pairs[
            (self.pairs.feature_a == feature_a) & self.pairs.relation.isin(["match", "split"])
        ]
        return [int(b) for b in sel.sort_values("cosine", ascending=False).feature_b]


def _unit(W: torch.Tensor) -> torch.Tensor:
    W = W.double()
    return W / W.norm(dim=1, keepdim=True).clamp(min=1e-12)


def _assign(
    cos: np.ndarray | None, top_idx: np.ndarray, top_val: np.ndarray
) -> tuple[np.ndarray, np.ndarray, str]:
    """One-to-one pairs (a, b): Hungarian on the full matrix when given, else greedy over the
    nearest neighbours."""
    if cos is not None:
        from scipy.optimize import linear_sum_assignment

        rows, cols = linear_sum_assignment(-cos)
        return rows, cols, "hungarian"
    order = np.argsort(-top_val, axis=None, kind="stable")
    used_a, used_b, ra, rb = set(), set(), [], []
    for flat in order:
        a, j = divmod(int(flat), top_idx.shape[1])
        b = int(top_idx[a, j])
        if a not in used_a and b not in used_b:
            used_a.add(a)
            used_b.add(b)
            ra.append(a)
            rb.append(b)
    return (
        np.array(ra, dtype=np.int64),
        np.array(rb, dtype=np.int64),
        f"greedy over {top_idx.shape[1]} nearest neighbours",
    )


def _kinds_peaks(emb: Embeddings | None, sae: SAE) -> tuple[np.ndarray, np.ndarray]:
    if emb is None:
        return np.full(sae.d_sae, "unknown", dtype=object), np.full(sae.d_sae, -1)
    st = feature_stats(emb, sae.to(emb.device), range(sae_context(sae, emb.n_ctx)))
    return classify(st), spans(st)[0]


def _best_over_a(
    A: torch.Tensor, B: torch.Tensor, k: int, block: int = 4096
) -> tuple[np.ndarray, ...]:
    """For each b: its best a and cosine; for each a: its ``k`` nearest b (indices, cosines).
    Blocked over A."""
    best_a_val = torch.full((B.shape[0],), -2.0, dtype=torch.float64, device=B.device)
    best_a_idx = torch.zeros(B.shape[0], dtype=torch.long, device=B.device)
    top_i, top_v = [], []
    for a0 in range(0, A.shape[0], block):
        c = A[a0 : a0 + block] @ B.T
        v, i = c.max(0)
        better = v > best_a_val
        best_a_val = torch.where(better, v, best_a_val)
        best_a_idx = torch.where(better, i + a0, best_a_idx)
        t = c.topk(min(k, B.shape[0]), dim=1)
        top_i.append(t.indices)
        top_v.append(t.values)
    return (
        to_numpy(best_a_idx),
        to_numpy(best_a_val),
        to_numpy(torch.cat(top_i)),
        to_numpy(torch.cat(top_v)),
    )


def compare_saes(
    sae_a: Any, sae_b: Any, emb: Any = None, *, threshold: float = 0.5, neighbours: int = NEIGHBOURS
) -> Comparison:
    """Match the features of ``sae_a`` and ``sae_b`` (see module docstring); computed on ``sae_a``'s
    device.

    The SAEs may be anything :func:`posfeat.load_sae` accepts, ``emb`` anything
    :func:`posfeat.load_embeddings` accepts."""
    if emb is not None:
        emb, sae_a = as_pair(emb, sae_a)
    sae_a = sae_a if isinstance(sae_a, SAE) else load_sae(sae_a)
    sae_b = sae_b if isinstance(sae_b, SAE) else load_sae(sae_b, device=sae_a.device)
    if sae_a.d_in != sae_b.d_in:
        raise PosfeatError(
            f"SAE A reads d_in {sae_a.d_in} but SAE B reads {sae_b.d_in}; compare two SAEs of the "
            "same model."
        )
    if not -1.0 <= threshold <= 1.0:
        raise PosfeatError(f"threshold {threshold} is not a cosine; give a value between -1 and 1.")
    A, B = _unit(sae_a.W_dec), _unit(sae_b.W_dec.to(sae_a.device))
    best_a, best_a_cos, top_i, top_v = _best_over_a(A, B, neighbours)
    small = A.shape[0] * B.shape[0] <= HUNGARIAN_MAX
    rows, cols, method = _assign(to_numpy(A @ B.T) if small else None, top_i, top_v)
    cos_pair = to_numpy(
        (A[torch.as_tensor(rows, device=A.device)] * B[torch.as_tensor(cols, device=A.device)]).sum(
            1
        )
    )
    kind_a, peak_a = _kinds_peaks(emb, sae_a)
    kind_b, peak_b = _kinds_peaks(emb, sae_b)
    child = best_a_cos >= threshold  # b is a child of best_a[b]
    n_children = np.bincount(best_a[child], minlength=sae_a.d_sae)
    partner = np.full(sae_a.d_sae, -1)
    partner[rows] = cols
    pair_cos = np.full(sae_a.d_sae, np.nan)
    pair_cos[rows] = cos_pair
    status_a = np.where(
        n_children >= 2,
        "split",
        np.where(np.nan_to_num(pair_cos, nan=-2) >= threshold, "shared", "unique"),
    )
    status_b = np.where(best_a_cos >= threshold, "matched", "unique")
    recs = [
        (a, b, c, "match" if c >= threshold else "weak") for a, b, c in zip(rows, cols, cos_pair)
    ]
    assigned = set(zip(rows.tolist(), cols.tolist()))
    for b in np.nonzero(child)[0]:
        a = int(best_a[b])
        if n_children[a] >= 2 and (a, int(b)) not in assigned:
            recs.append((a, int(b), float(best_a_cos[b]), "split"))
    pairs = pd.DataFrame(
        [
            {
                "feature_a": int(a),
                "feature_b": int(b),
                "cosine": float(c),
                "kind_a": kind_a[a],
                "kind_b": kind_b[b],
                "peak_a": int(peak_a[a]),
                "peak_b": int(peak_b[b]),
                "relation": rel,
            }
            for a, b, c, rel in recs
        ],
        columns=COMPARE_COLUMNS,
    ).sort_values(["feature_a", "cosine"], ascending=[True, False], ignore_index=True)
    sa = pd.DataFrame(
        {
            "feature": np.arange(sae_a.d_sae),
            "kind": kind_a,
            "peak": peak_a,
            "status": status_a,
            "children": n_children,
            "partner": partner,
            "cosine": pair_cos,
        }
    )
    sb = pd.DataFrame(
        {
            "feature": np.arange(sae_b.d_sae),
            "kind": kind_b,
            "peak": peak_b,
            "status": status_b,
            "best_a": best_a,
            "cosine": best_a_cos,
        }
    )
    summary = {
        "sae_a": sae_a.name,
        "sae_b": sae_b.name,
        "d_sae_a": sae_a.d_sae,
        "d_sae_b": sae_b.d_sae,
        "threshold": threshold,
        "assignment": method,
        "model": None if emb is None else emb.name,
        "a": {
            k: {
                s: int(((sa.kind == k) & (sa.status == s)).sum())
                for s in ("shared", "split", "unique")
            }
            for k in (*KINDS, "unknown")
            if (sa.kind == k).any()
        },
        "b": {
            k: {s: int(((sb.kind == k) & (sb.status == s)).sum()) for s in ("matched", "unique")}
            for k in (*KINDS, "unknown")
            if (sb.kind == k).any()
        },
    }
    summary["warnings"] = differences(sae_a, sae_b)
    return Comparison(pairs, sa, sb, summary)


def differences(sae_a: SAE, sae_b: SAE) -> list[str]:
    """What makes two SAEs' features hard to compare, in sentences: different training contexts
    (positional features tile different ranges) or widths (features split)."""
    out = []
    ca, cb = sae_a.context_size, sae_b.context_size
    if ca and cb and ca != cb:
        out.append(
            f"SAE A was trained on {ca}-position contexts and SAE B on {cb}: their positional "
            "features tile "
            "different ranges, so positional matches and splits compare unlike things."
        )
    if sae_a.d_sae != sae_b.d_sae:
        out.append(
            f"SAE A has {sae_a.d_sae} features and SAE B {sae_b.d_sae}: features of the narrower "
            "one may be split "
            "in the wider one, which the 'split' status counts."
        )
    return out
