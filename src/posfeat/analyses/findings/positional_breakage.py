"""Finding 7a: past the context, positional features track the nearest in-context W_pos row."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ..summaries import null_summary, rankdata, spearman
from .base import (
    CommonRules,
    Finding,
    FindingInputs,
    _beats,
    _finding,
    _median_of,
    _no_past,
    _null_txt,
    _num,
    _ok,
    _p_txt,
    _past,
    _pct,
    _undetermined,
    verdict_of,
)


@dataclass(frozen=True)
class PositionalBreakRules(CommonRules):
    """The rule fields of :data:`POSITIONAL_BREAK` (fields of ``FindingRules``, ``--rule
    NAME=VALUE``)."""

    break_firing: float = 0.5  # share of past-context positions where some positional feature fires
    break_track: float = 0.5  # Spearman of apparent position with the nearest in-context W_pos row


BREAK_SHUFFLES = 1000
BREAK_SEED = 0


def _rank_rows(x: np.ndarray) -> np.ndarray:
    """Average ranks along the last axis (ties averaged, as Spearman's)."""
    return np.apply_along_axis(rankdata, -1, x)


def shuffled_tracking(
    app: np.ndarray, near: np.ndarray, n: int = BREAK_SHUFFLES, seed: int = BREAK_SEED
) -> tuple[np.ndarray, np.ndarray]:
    """Spearman and median ``|app - near|`` with ``near`` shuffled across the positions, ``n`` times
    (seeded): the tracking a code would show if the apparent position ignored which row is
    nearest."""
    ok = np.isfinite(app) & np.isfinite(near)
    a, b = app[ok], near[ok]
    if len(a) < 3:
        return np.full(n, np.nan), np.full(n, np.nan)
    rng = np.random.default_rng(seed)
    perm = np.stack([b[rng.permutation(len(b))] for _ in range(n)])
    dist = np.median(np.abs(a[None, :] - perm), axis=1)
    ra, rb = rankdata(a), _rank_rows(perm)
    ra, rb = ra - ra.mean(), rb - rb.mean(axis=1, keepdims=True)
    den = np.sqrt((ra**2).sum() * (rb**2).sum(axis=1))
    rho = np.where(den > 0, (rb @ ra) / np.where(den > 0, den, 1), np.nan)
    return rho, dist


def positional_break(
    by_position: pd.DataFrame,
    context: int,
    r: PositionalBreakRules,
    features: pd.DataFrame | None = None,
) -> dict[str, Any]:
    """Finding 7a: past the context positional features keep firing, and the apparent position
    (their activation-weighted peak) tracks the nearest in-context W_pos row (cosine, full space).

    Null: the same Spearman and median distance with the nearest rows shuffled across the past
    positions (:func:`shuffled_tracking`, :data:`BREAK_SHUFFLES` shuffles, seeded): the Spearman
    must beat the shuffles at ``null_alpha`` and the distance must lie below their ``null_alpha``
    quantile. The true position is reported beside it; it is no null for the distance, since every
    peak lies inside the context and every past position outside."""
    test = (
        "past the context, some positional feature fires (on half of the tokens) at >= "
        f"{r.break_firing} of "
        f"positions and the apparent position tracks the nearest in-context W_pos row (Spearman >= "
        f"{r.break_track} and beyond the same Spearman with the rows shuffled across past "
        "positions, p < "
        f"{r.null_alpha}; median distance below the shuffles', p < {r.null_alpha}) -> reproduced; "
        "firing but not "
        "tracking -> partly; silent -> not reproduced"
    )
    note = "profiles go strange: the SAE thinks it is at an earlier position"
    _, past = _past(by_position, context)
    if not len(past):
        return _no_past("positional breakage", note, test)
    if "n_positional_firing" not in past or not past.n_positional_firing.notna().any():
        return _undetermined(
            None, None, note, test, "the positional code past the context was not computed."
        )
    if features is not None and not (features.kind == "positional").any():
        return _undetermined(
            None, None, note, test, "the SAE has no positional feature, so none can break."
        )
    firing = float((past.n_positional_firing > 0).mean())
    app, near, true = (
        past[c].to_numpy(float) for c in ("apparent_position", "nearest_context_row", "position")
    )
    rho_near, _ = spearman(app, near)
    rho_true, _ = spearman(app, true)
    ok = np.isfinite(app)
    d_near = float(np.median(np.abs(app[ok] - near[ok]))) if ok.any() else float("nan")
    d_true = float(np.median(np.abs(app[ok] - true[ok]))) if ok.any() else float("nan")
    rho_sh, d_sh = shuffled_tracking(app, near)
    rho_null = null_summary(rho_sh, rho_near)
    d_null = null_summary(d_sh, d_near, higher=False)
    value = {
        "past_firing_share": firing,
        "spearman_nearest_row": rho_near,
        "distance_nearest_row": d_near,
        "spearman_true_position": rho_true,
        "distance_true_position": d_true,
    }
    null = {"spearman_nearest_row": rho_null, "distance_nearest_row": d_null}
    fires = firing >= r.break_firing
    ok_rows = np.isfinite(app) & np.isfinite(near)
    constant = (
        fires and ok_rows.sum() >= 3 and (np.ptp(near[ok_rows]) == 0 or np.ptp(app[ok_rows]) == 0)
    )
    if constant:
        return _undetermined(
            value,
            null,
            note,
            test,
            f"some positional feature fires at {_pct(firing)} of past positions, "
            f"but the {'nearest in-context row' if np.ptp(near[ok_rows]) == 0 else 'apparent position'} "
            f"is the same at every one (median distance {_num(d_near)} positions), so tracking "
            "cannot be "
            "told from chance by ranks or by shuffling.",
        )
    if not fires:
        ev = (
            "Past the context the positional features are silent: some fires at only "
            f"{_pct(firing)} of positions "
            f"(rule: >= {_pct(r.break_firing)}), so nothing there says the SAE thinks it is at an "
            "earlier position."
        )
        return _finding("not reproduced", value, null, note, test, ev)
    tracks = (
        _ok(rho_near)
        and rho_near >= r.break_track
        and _beats(rho_null, r)
        and _ok(d_near)
        and _beats(d_null, r)
    )
    ev = (
        f"Past the context some positional feature fires at {_pct(firing)} of positions (a median "
        f"{_num(float(past.n_positional_firing.median()))} at once); the apparent position tracks "
        "the nearest "
        f"in-context W_pos row with Spearman {_num(rho_near, 2)} and a median distance of "
        f"{_num(d_near)} positions; "
        f"null, the rows shuffled across past positions ({BREAK_SHUFFLES} shuffles, seed "
        f"{BREAK_SEED}): Spearman "
        f"{_null_txt(rho_null)}; distance {_null_txt(d_null)}. Against the true position: Spearman "
        f"{_num(rho_true, 2)}, {_num(d_true)} positions away (no null for the distance: peaks lie "
        "inside the "
        f"context). Rule: Spearman >= {r.break_track}, both beyond the shuffles."
    )
    return _finding(verdict_of(fires and tracks, fires), value, null, note, test, ev)


def _headline(v: dict[str, Any], n: dict[str, Any]) -> tuple[str, str]:
    return (
        f"fires at {_pct(v.get('past_firing_share'))}; tracks the nearest in-context row: Spearman "
        f"{_num(v.get('spearman_nearest_row'), 2)}",
        f"shuffled rows {_median_of(n.get('spearman_nearest_row'), 'rho')}"
        f"{_p_txt(n.get('spearman_nearest_row'))}",
    )


def _compute(
    x: FindingInputs, r: PositionalBreakRules, earlier: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    return positional_break(x.by_position, x.context, r, x.features)


POSITIONAL_BREAK = Finding(
    key="positional_break",
    number="7a",
    title="Past the context, positional features track the nearest in-context W_pos row",
    note_says="the SAE thinks it is at an earlier position",
    rules=PositionalBreakRules,
    compute=_compute,
    headline=_headline,
    section=5,
    figures=("apparent_position", "extended_profiles", "profiles_interactive"),
)
