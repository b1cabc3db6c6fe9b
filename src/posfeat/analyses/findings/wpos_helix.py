"""Finding 1: W_pos lies near a helix."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..summaries import null_summary
from .base import (
    CommonRules,
    Finding,
    FindingInputs,
    _beats,
    _drawn,
    _finding,
    _median_of,
    _null_txt,
    _nulls,
    _num,
    _ok,
    _p_txt,
    _pct,
    _undetermined,
    verdict_of,
)


@dataclass(frozen=True)
class HelixRules(CommonRules):
    """The rule fields of :data:`HELIX` (fields of ``FindingRules``, ``--rule NAME=VALUE``)."""

    helix_reproduced: float = 0.8  # top-3 PCs of W_pos rows 1..context-1 explain at least this ...
    helix_partly: float = 0.6  # ... beyond random walks of the rows' step sizes
    helix_smooth: float = 0.5  # consecutive chords of the rows' path: mean cosine at least this


def helix(
    spectrum: np.ndarray,
    first: int,
    last: int,
    r: HelixRules,
    nulls: dict[str, Any] | None = None,
    geometry: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Finding 1: W_pos rows 1..context-1 lie on a one-dimensional helical curve (top 3 PCs explain
    ~95%).

    Two basis-free tests, both needed: (a) low dimensionality beyond diffusion: the top-3 share
    against isotropic random walks with the rows' own step sizes in d_model
    (``nulls["helix_random_walk_top3"]``; a random walk's leading components are cosines, so it
    looks like a helix to the top-3 share alone); (b) a curve traced in order: the rows' path turns
    slowly (``geometry["smoothness"]``: the mean cosine of consecutive chords) against walks made of
    the rows' own steps in a random order (``nulls["helix_shuffled_steps"]``: the same steps, sizes,
    directions and dimensions, no order; diffusion confined to a subspace and clouds in no order
    fail here). Reported beside them: the share of rows whose nearest row on the top 3 PCs is within
    2 positions, and of the steps lying in the top 3 PCs."""
    test = (
        f"top-3 explained variance of W_pos rows {first}..{last} >= {r.helix_reproduced} -> "
        "reproduced, >= "
        f"{r.helix_partly} -> partly; either only when (a) it beats isotropic random walks of the "
        "rows' own step sizes "
        f"and (b) the rows' path turns slowly (consecutive chords' mean cosine >= {r.helix_smooth}) "
        "beyond walks of "
        f"the rows' own steps in a random order, each at p < {r.null_alpha}; else not reproduced"
    )
    spectrum = np.asarray(spectrum, dtype=np.float64)
    top3 = (
        float(np.sum(spectrum[:3]))
        if len(spectrum) and np.isfinite(spectrum).all()
        else float("nan")
    )
    cum = np.cumsum(spectrum[:10])
    n90: int | None = int(np.searchsorted(cum, 0.9) + 1) if len(cum) and cum[-1] >= 0.9 else None
    geo = geometry or {}
    smooth = geo.get("smoothness", float("nan"))
    walk = null_summary(_nulls(nulls, "helix_random_walk_top3"), top3)
    order = null_summary(_nulls(nulls, "helix_shuffled_steps"), smooth)
    value = {
        "top3": top3,
        "smoothness": smooth,
        "curve_share": geo.get("curve_share"),
        "tangent_share": geo.get("tangent_share"),
        "components_for_90": n90,
    }
    null = {"top3_random_walk": walk, "smoothness_shuffled_steps": order}
    note = {"top3": 0.95}
    if not _ok(top3) or not _ok(smooth) or not _drawn(walk) or not _drawn(order):
        return _undetermined(
            value,
            null,
            note,
            test,
            f"W_pos rows {first}..{last} have no variance to decompose or "
            "too few rows (at least 4) for a curve, so the tests could not be computed.",
        )
    low = _beats(walk, r)
    in_order = smooth >= r.helix_smooth and _beats(order, r)
    nxt = ", ".join(_pct(float(v)) for v in spectrum[3:6])
    how_many = (
        f"{n90} components reach 90%" if n90 else "more than 10 components are needed for 90%"
    )
    passed = [name for name, ok in (("(a)", low), ("(b)", in_order)) if ok]
    evidence = (
        f"The top 3 principal components of W_pos rows {first}..{last} explain {_pct(top3)} of "
        "their "
        f"variance (the next: {nxt or 'none'}; {how_many}); isotropic random walks with these rows' "
        "own step "
        f"sizes: {_null_txt(walk)}, so (a) the rows are {'more' if low else 'no more'} concentrated "
        "than "
        f"diffusion. Consecutive chords of the rows' path have a mean cosine of {_num(smooth, 2)}; "
        "the rows' own "
        f"steps in a random order: {_null_txt(order)}, so (b) the rows "
        f"{'are' if in_order else 'are not'} a "
        f"curve traced in order. ({_pct(geo.get('curve_share'))} of rows have their nearest row on "
        "the top 3 PCs "
        f"within 2 positions; {_pct(geo.get('tangent_share'))} of the steps lie in those PCs.) "
        f"{_passing(passed)}; "
        f"rule: top-3 share >= {r.helix_reproduced} reproduced, >= {r.helix_partly} partly, with "
        "both tests "
        "(the note: 95%)."
    )
    ok = low and in_order
    return _finding(
        verdict_of(top3 >= r.helix_reproduced and ok, top3 >= r.helix_partly and ok),
        value,
        null,
        note,
        test,
        evidence,
    )


def _headline(v: dict[str, Any], n: dict[str, Any]) -> tuple[str, str]:
    return (
        f"top-3 share {_num(v.get('top3'))}; path smoothness {_num(v.get('smoothness'), 2)}",
        f"random walks {_median_of(n.get('top3_random_walk'))}{_p_txt(n.get('top3_random_walk'))}; "
        "shuffled "
        f"steps {_median_of(n.get('smoothness_shuffled_steps'), 'rho')}"
        f"{_p_txt(n.get('smoothness_shuffled_steps'))}",
    )


def _compute(x: FindingInputs, r: HelixRules, earlier: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return helix(x.spectrum, x.pca_rows[0], x.pca_rows[1], r, x.nulls, x.geometry)


HELIX = Finding(
    key="helix",
    number="1",
    title="W_pos lies near a helix",
    note_says="0.95: a helix",
    rules=HelixRules,
    compute=_compute,
    headline=_headline,
    section=1,
    figures=("helix_interactive", "helix", "wpos_similarity"),
)


def _passing(passed: list[str]) -> str:
    if len(passed) == 2:
        return "Both tests pass"
    return f"Only {passed[0]} passes" if passed else "Neither test passes"
