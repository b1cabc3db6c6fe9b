"""Regenerates every figure under docs/figures/ from the code, so that no figure in the docs is
staler than the code.

    python scripts/docs_figures.py                    # redraw docs/figures/*.png and
    docs/figures/manifest.json
    python scripts/docs_figures.py --check            # redraw into a temporary folder; exit 1 if
    docs/figures differs
    python scripts/docs_figures.py --store-sweep DIR  # keep what a finished sweep's figures need in
    docs/figures/data/

Where each figure comes from:

* the analysis figures: ``posfeat.analyze`` on the bundled pair (all-MiniLM-L6-v2 +
  posfeat/minilm-l0-res-2048, the defaults of ``posfeat analyze``), drawn by
  ``posfeat.outputs.figures``;
* ``report_first_screen.png``: that analysis' report.html in headless Chromium (playwright and
  Debian's chromium, as the browser tests use), 1280 x 900;
* the sweep figures (``width_*``, ``context_fvu``): the stored results of the sweeps of
  docs/conjectures.md in ``docs/figures/data/{widths,context}.json`` (what a finished sweep folder
  holds that its figures need: every run's row, the splitting profiles, the count during training,
  the first seed's FVU by position), drawn by ``posfeat.outputs.sweep_section``, the code the sweep itself
  draws with. ``--store-sweep`` writes them from a finished sweep folder.

PNG bytes differ between matplotlib and Chromium versions, so ``--check`` does not compare them. It
compares, for every figure: the set of files; each image's size; and a fingerprint of what drew it,
kept in ``manifest.json``: every text the figure shows (titles, labels, legends; not tick labels,
which depend on the layout engine), every artist's kind, colour and style, and the count, mean,
spread and range of its data (compared to a relative 1e-3, so a last-digit difference between
machines passes and any change of data does not). For the screenshot, the text of the report's first
screen (title, pairs, findings at a glance). The committed PNGs must also be near the redrawn ones,
pixel by pixel (at most 10% of pixels off by more than 64 levels), which binds each PNG to the
manifest without asking for identical rendering.

Not yet checked (``PENDING``): the four sweep figures, until the sweeps' results are stored in
docs/figures/data/; --check names them on every run."""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs" / "figures"
DATA = DOCS / "data"
MANIFEST = DOCS / "manifest.json"
#: The analysis figures the docs show (docs/findings.md, README.md).
ANALYSIS_FIGURES = (
    "apparent_position",
    "disjointness",
    "extended_profiles",
    "helix",
    "length_generalisation",
    "positional_profiles",
    "positional_score",
    "semantic_breakage",
    "semantic_profiles",
    "sinusoid",
    "token_features",
    "wpos_similarity",
)
SWEEP_FIGURES = {
    "widths": ("width_counts", "width_splitting", "width_steps"),
    "context": ("context_fvu",),
}
#: Sweep figures in docs/figures whose sweep results are not stored in docs/figures/data/ yet:
# --check names them as not checked (and fails once their results are stored and they are still
# listed). Empty it by storing the sweeps (--store-sweep).
PENDING: dict[str, str] = {}
SCREEN = "report_first_screen"
SCREEN_SIZE = (1280, 900)
RTOL = 1e-3
PIXEL_LEVELS, PIXEL_SHARE = 64, 0.10


# ---------------------------------------------------------------------------- fingerprints
def _colour(c: Any) -> str:
    from matplotlib.colors import to_hex

    try:
        arr = np.asarray(c, dtype=float)
        if arr.ndim == 2:
            return ",".join(to_hex(row, keep_alpha=True) for row in arr[:4]) + (
                f"+{len(arr) - 4}" if len(arr) > 4 else ""
            )
        return to_hex(c, keep_alpha=True)
    except (ValueError, TypeError):
        return str(c)


def _stats(values: Any) -> list[float]:
    """Count, mean, standard deviation, minimum and maximum of the finite values (NaN for none)."""
    a = np.asarray(values, dtype=float).ravel()
    finite = a[np.isfinite(a)]
    if not len(finite):
        return [float(len(a)), math.nan, math.nan, math.nan, math.nan]
    return [
        float(len(a)),
        float(finite.mean()),
        float(finite.std()),
        float(finite.min()),
        float(finite.max()),
    ]


def fingerprint(fig: Any) -> dict[str, Any]:
    """What a matplotlib figure shows, independent of how a matplotlib version lays it out or
    renders it (module docstring)."""
    texts: list[str] = []
    artists: list[list[Any]] = []

    def text(t: Any) -> None:
        if t is not None and t.get_visible() and t.get_text().strip():
            texts.append(f"{t.get_text()} @{t.get_fontsize():g}")

    if fig._suptitle is not None:
        text(fig._suptitle)
    for t in fig.texts:
        text(t)
    legends = list(fig.legends)
    for ax in fig.axes:
        for t in (
            ax.title,
            ax._left_title,
            ax._right_title,
            ax.xaxis.label,
            ax.yaxis.label,
            *ax.texts,
        ):
            text(t)
        if hasattr(ax, "zaxis"):
            text(ax.zaxis.label)
        if ax.get_legend() is not None:
            legends.append(ax.get_legend())
        for ln in ax.get_lines():
            x, y = ln.get_data()
            artists.append(
                [
                    "line",
                    _colour(ln.get_color()),
                    ln.get_linestyle(),
                    f"{ln.get_linewidth():g}",
                    str(ln.get_marker()),
                    *_stats(x),
                    *_stats(y),
                ]
            )
        for c in ax.collections:
            offsets = getattr(c, "_offsets3d", None)
            offsets = (
                np.column_stack([np.asarray(v, dtype=float) for v in offsets])
                if offsets is not None
                else c.get_offsets()
            )
            paths = (
                [p.vertices for p in c.get_paths()]
                if not len(offsets) or len(c.get_paths()) > 1
                else []
            )
            verts = np.concatenate(paths) if paths else np.zeros((0, 2))
            artists.append(
                [
                    "collection",
                    type(c).__name__,
                    _colour(c.get_facecolor()),
                    _colour(c.get_edgecolor()),
                    *_stats(offsets),
                    *_stats(verts),
                    *_stats(c.get_array() if c.get_array() is not None else []),
                ]
            )
        for im in ax.images:
            artists.append(
                [
                    "image",
                    im.get_cmap().name,
                    *[float(v) for v in im.get_clim()],
                    *_stats(im.get_array()),
                ]
            )
        for p in ax.patches:
            bbox = p.get_bbox() if hasattr(p, "get_bbox") else None
            artists.append(
                [
                    "patch",
                    type(p).__name__,
                    _colour(p.get_facecolor()),
                    *(
                        [float(v) for v in (bbox.x0, bbox.y0, bbox.x1, bbox.y1)]
                        if bbox is not None
                        else []
                    ),
                ]
            )
    for lg in legends:
        text(lg.get_title())
        for t in lg.get_texts():
            text(t)
    return {"texts": texts, "artists": artists}


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=RTOL, abs_tol=1e-9)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return a == b


# ---------------------------------------------------------------------------- drawing
def _png_size(path: Path) -> list[int]:
    from PIL import Image

    with Image.open(path) as im:
        return list(im.size)


def _save(fig: Any, path: Path) -> dict[str, Any]:
    from posfeat.outputs.figures import save_figure

    save_figure(fig, path)
    return {"size": _png_size(path), **fingerprint(fig)}


def _sweep_data(kind: str) -> dict[str, Any] | None:
    path = DATA / f"{kind}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def draw_sweeps(out: Path) -> dict[str, dict[str, Any]]:
    """The sweep figures from docs/figures/data/ (none for a sweep whose results are not stored)."""
    import pandas as pd

    from posfeat.experiments import aggregate as agg
    from posfeat.outputs.sweep_section import context_figure_object, width_figure_objects

    made: dict[str, dict[str, Any]] = {}
    out.mkdir(parents=True, exist_ok=True)
    w = _sweep_data("widths")
    if w is not None:
        runs = pd.DataFrame(w["runs"])
        split = {**w["split"], "widths": {int(k): v for k, v in w["split"]["widths"].items()}}
        figs = width_figure_objects(
            w["name"],
            agg.width_table(runs),
            runs,
            agg.width_statistics(runs, w["context"]),
            split,
            pd.DataFrame(w["curve"]),
            w["context"],
        )
        made.update({name: _save(fig, out / f"{name}.png") for name, fig in figs.items()})
    c = _sweep_data("context")
    if c is not None:
        fig = context_figure_object(
            c["title"],
            [(lab, np.asarray(v, float)) for lab, v in c["curves"]],
            c["original_context"],
        )
        made["context_fvu"] = _save(fig, out / "context_fvu.png")
    return made


def draw_analysis(out: Path, screenshot: bool) -> dict[str, dict[str, Any]]:
    """The analysis figures of the bundled pair and, when ``screenshot``, its report's first
    screen."""
    import posfeat
    from posfeat.outputs.figures import FIGURES

    an = posfeat.analyze(*posfeat.load_pair(), progress=False)
    made = {name: _save(FIGURES[name][0](an), out / f"{name}.png") for name in ANALYSIS_FIGURES}
    if screenshot:
        with tempfile.TemporaryDirectory() as tmp:
            report = an.save(Path(tmp) / "run") / "report.html"
            made[SCREEN] = _screenshot(report, out / f"{SCREEN}.png")
    return made


def chromium() -> str | None:
    """Debian's chromium, when it and playwright are installed."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return None
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _screenshot(report: Path, path: Path) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=chromium(),
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
        )
        page = browser.new_page(viewport={"width": SCREEN_SIZE[0], "height": SCREEN_SIZE[1]})
        page.goto(report.as_uri(), wait_until="load")
        page.wait_for_selector("body[data-explorer=ready]", timeout=60000)
        page.screenshot(path=str(path))
        shown = [
            page.inner_text("h1"),
            page.inner_text(".pairs"),
            page.locator("h2:has-text('Findings at a glance') + table").inner_text(),
        ]
        browser.close()
    return {"size": _png_size(path), "texts": [" ".join(t.split()) for t in shown], "artists": []}


def draw_all(out: Path, screenshot: bool = True) -> dict[str, dict[str, Any]]:
    out.mkdir(parents=True, exist_ok=True)
    return {**draw_analysis(out, screenshot), **draw_sweeps(out)}


# ---------------------------------------------------------------------------- checking
def _pixels_off(a: Path, b: Path) -> float:
    """Share of pixels of two same-sized PNGs whose colour differs by more than PIXEL_LEVELS in some
    channel."""
    from PIL import Image

    with Image.open(a) as ia, Image.open(b) as ib:
        x, y = (
            np.asarray(ia.convert("RGB"), dtype=np.int16),
            np.asarray(ib.convert("RGB"), dtype=np.int16),
        )
    return float((np.abs(x - y).max(axis=2) > PIXEL_LEVELS).mean())


def check(out: Path, made: dict[str, dict[str, Any]], screenshot: bool) -> list[str]:
    """What differs between docs/figures (and its manifest) and the figures just drawn into ``out``;
    empty when nothing does."""
    problems = []
    manifest = json.loads(MANIFEST.read_text()) if MANIFEST.is_file() else {}
    committed = {p.stem for p in DOCS.glob("*.png")}
    expected = set(made) | ({SCREEN} if not screenshot and SCREEN in manifest else set())
    for name, kind in sorted(PENDING.items()):
        if (DATA / f"{kind}.json").is_file():
            problems.append(
                f"{name}.png: its sweep's results are stored now; take it out of PENDING in "
                "scripts/docs_figures.py"
            )
        elif name in committed:
            print(
                f"not checked: {name}.png (the {kind} sweep's results are not stored; "
                "scripts/docs_figures.py --store-sweep DIR)"
            )
    for name in sorted(committed - expected - set(PENDING)):
        problems.append(f"{name}.png is in docs/figures but no code draws it")
    for name in sorted(expected - committed):
        problems.append(f"{name}.png is drawn but not in docs/figures")
    if set(manifest) != expected:
        problems.append(
            f"manifest.json lists {sorted(manifest)}, the figures drawn are {sorted(expected)}"
        )
    for name in sorted(set(made) & committed):
        new, old = made[name], manifest.get(name)
        if _png_size(DOCS / f"{name}.png") != new["size"]:
            problems.append(
                f"{name}.png: {_png_size(DOCS / f'{name}.png')} px committed, {new['size']} drawn"
            )
            continue
        if old is None or not _same(old, json.loads(json.dumps(new))):
            problems.append(
                f"{name}.png: what the code draws now differs from what drew the committed figure ("
                f"{_first_difference(old, new)})"
            )
        elif (
            name != SCREEN
            and (off := _pixels_off(DOCS / f"{name}.png", out / f"{name}.png")) > PIXEL_SHARE
        ):
            problems.append(f"{name}.png: {off:.0%} of its pixels differ from the redrawn figure's")
    return problems


def _first_difference(old: dict[str, Any] | None, new: dict[str, Any]) -> str:
    if old is None:
        return "not in manifest.json"
    for key in ("size", "texts", "artists"):
        a, b = old.get(key), json.loads(json.dumps(new[key]))
        if not _same(a, b):
            if isinstance(a, list) and isinstance(b, list):
                for i, (x, y) in enumerate(zip(a, b)):
                    if not _same(x, y):
                        return f"{key}[{i}]: {str(x)[:120]!r} committed, {str(y)[:120]!r} now"
                return f"{key}: {len(a)} committed, {len(b)} now"
            return f"{key}: {a} committed, {b} now"
    return "?"


# ---------------------------------------------------------------------------- storing a sweep's
# results
def store_sweep(folder: Path, model: Any = "minilm") -> Path:
    """docs/figures/data/{widths,context}.json from a finished sweep folder: what its figures need,
    nothing trained or re-run. ``model``: the width sweep's model (anything
    :func:`posfeat.load_embeddings` accepts), for the splitting profiles."""
    import pandas as pd
    import torch

    import posfeat
    from posfeat.io.sae_folders import read_sae_folder

    summary = json.loads((folder / "summary.json").read_text())
    runs = pd.read_csv(folder / "runs.csv")
    if "status" in runs:
        runs = runs[runs.status == "done"].drop(columns=["status", "error"])
    DATA.mkdir(parents=True, exist_ok=True)
    if "d_sae" in runs.columns:
        context, first = int(summary["context"]), int(summary["seeds"][0])
        emb = posfeat.load_embeddings(model)
        ref = summary["splitting_reference"]
        widths: dict[str, list[dict[str, Any]]] = {}
        for w, feats in summary["splitting_matches"].items():
            widths[w] = []
            if feats:
                sae = read_sae_folder(folder / f"d_sae_{w}" / f"seed_{first}", allow_any_hook=True)
                st = posfeat.feature_stats(emb, sae.subset(torch.as_tensor(feats)), range(context))
                widths[w] = [
                    {
                        "feature": int(f),
                        "peak": int(st.positions[st.mean_by_position[i].argmax()]),
                        "profile": [float(v) for v in st.mean_by_position[i]],
                    }
                    for i, f in enumerate(feats)
                ]
        data = {
            "name": summary["model"],
            "context": context,
            "command": summary.get("command"),
            "runs": runs.to_dict(orient="records"),
            "split": {**ref, "widths": widths},
            "curve": summary.get("positional_by_step", []),
        }
        path = DATA / "widths.json"
    else:
        first = int(summary["seeds"][0])
        curves = []
        for sub in sorted(
            p for p in folder.iterdir() if (p / f"seed_{first}" / "run.json").is_file()
        ):
            rec = json.loads((sub / f"seed_{first}" / "run.json").read_text())
            curves.append((rec["label"], [float(v) for v in rec["row"]["fvu_by_position"]]))
        order = {lab: i for i, lab in enumerate(dict.fromkeys(runs.sae))}
        curves.sort(key=lambda c: order.get(c[0], len(order)))
        data = {
            "title": f"{summary['model']} x {summary['sae']}",
            "original_context": int(summary["original_context"]),
            "command": summary.get("command"),
            "curves": curves,
        }
        path = DATA / "context.json"
    path.write_text(json.dumps(data, indent=1) + "\n")
    return path


# ---------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--check",
        action="store_true",
        help="redraw into a temporary folder (or --out) and compare with docs/figures",
    )
    ap.add_argument("--out", type=Path, help="where --check draws (default: a temporary folder)")
    ap.add_argument(
        "--no-screenshot",
        action="store_true",
        help="leave report_first_screen.png out (no Chromium)",
    )
    ap.add_argument(
        "--store-sweep",
        type=Path,
        metavar="DIR",
        help="store a finished sweep's figure data in docs/figures/data/",
    )
    ap.add_argument(
        "--model",
        default="minilm",
        help="the width sweep's model, for --store-sweep (default minilm)",
    )
    args = ap.parse_args(argv)
    if args.store_sweep:
        print(f"wrote {store_sweep(args.store_sweep, args.model)}")
        return 0
    screenshot = not args.no_screenshot
    if screenshot and chromium() is None:
        if os.environ.get("CI"):
            print(
                "playwright or Debian's chromium is missing (scripts/test installs them)",
                file=sys.stderr,
            )
            return 2
        print("no Chromium here: report_first_screen.png is left as it is", file=sys.stderr)
        screenshot = False
    if args.check:
        out = args.out or Path(tempfile.mkdtemp(prefix="docs-figures-"))
        problems = check(out, draw_all(out, screenshot), screenshot)
        for p in problems:
            print(p)
        if problems:
            print(
                "docs/figures is stale: run python scripts/docs_figures.py and commit docs/figures/",
                file=sys.stderr,
            )
        return 1 if problems else 0
    with tempfile.TemporaryDirectory() as tmp:
        made = draw_all(Path(tmp), screenshot)
        for name in made:
            shutil.copyfile(Path(tmp) / f"{name}.png", DOCS / f"{name}.png")
    old = json.loads(MANIFEST.read_text()) if MANIFEST.is_file() else {}
    manifest = {
        **({SCREEN: old[SCREEN]} if not screenshot and SCREEN in old else {}),
        **json.loads(json.dumps(made)),
    }
    MANIFEST.write_text(json.dumps(dict(sorted(manifest.items())), indent=1) + "\n")
    digest = hashlib.sha256(MANIFEST.read_bytes()).hexdigest()[:12]
    print(f"wrote {len(made)} figures and manifest.json ({digest}) into {DOCS.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
