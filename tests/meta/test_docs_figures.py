"""docs/figures is what the code draws now: scripts/docs_figures.py --check redraws every figure
(the bundled pair's analysis, the report's first screen in Chromium, the sweeps' stored results) and
compares sizes, fingerprints and pixels."""

from __future__ import annotations

import importlib.util
import os
import sys

import matplotlib

matplotlib.use("Agg")
import numpy as np
import pytest
from matplotlib.figure import Figure

from helpers import REPO


def _script():
    spec = importlib.util.spec_from_file_location(
        "docs_figures", REPO / "scripts" / "docs_figures.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules["docs_figures"] = module
    spec.loader.exec_module(module)
    return module


def _figure(y, title="a title", colour="C0"):
    fig = Figure(figsize=(3, 2))
    ax = fig.subplots()
    ax.plot(np.arange(len(y)), y, color=colour, label="a line")
    ax.set_title(title)
    ax.legend()
    return fig


def test_fingerprint_passes_a_last_digit_and_catches_any_real_change():
    df = _script()
    y = np.linspace(0.1, 2.0, 50)
    same = df.fingerprint(_figure(y))
    assert df._same(same, df.fingerprint(_figure(y * (1 + 1e-7))))  # another machine's last digits
    assert not df._same(same, df.fingerprint(_figure(np.r_[y[:-1], 2.1])))  # one point moved
    assert not df._same(same, df.fingerprint(_figure(y, title="another title")))
    assert not df._same(same, df.fingerprint(_figure(y, colour="C1")))


def test_stored_sweep_results_redraw_the_sweeps_own_figures(tmp_path, monkeypatch):
    """--store-sweep keeps what a finished sweep's figures need; drawn from it, each figure is the
    sweep's own, pixel for pixel."""
    from PIL import Image

    from posfeat.experiments import sweep_context, sweep_widths
    from posfeat.training import train_sae

    from helpers import random_pair

    df = _script()
    monkeypatch.setattr(df, "DATA", tmp_path / "data")
    emb, _ = random_pair(d_vocab=48, n_ctx=16, d_model=6)
    recipe = {"context": 10, "steps": 120, "batch": 64, "l1": 0.05, "lr": 3e-3, "progress": False}
    sweep_widths(
        emb, widths=[8, 16, 32], out=tmp_path / "w", tokens=30, seeds=2, curve_points=3, **recipe
    )
    base = train_sae(emb, d_sae=16, **recipe).sae
    sweep_context(
        emb,
        base,
        contexts=[13, 16],
        out=tmp_path / "c",
        steps=40,
        control_steps=60,
        batch=64,
        tokens=30,
        seeds=1,
        progress=False,
    )
    df.store_sweep(tmp_path / "w", emb)
    df.store_sweep(tmp_path / "c")
    made = df.draw_sweeps(tmp_path / "drawn")
    assert sorted(made) == ["context_fvu", "width_counts", "width_splitting", "width_steps"]
    for name in made:
        sweep = tmp_path / ("c" if name == "context_fvu" else "w") / "figures" / f"{name}.png"
        a, b = (
            np.asarray(Image.open(p).convert("RGB"))
            for p in (sweep, tmp_path / "drawn" / f"{name}.png")
        )
        assert a.shape == b.shape and np.array_equal(a, b), name


@pytest.mark.realmodel
def test_docs_figures_are_what_the_code_draws_now(tmp_path, capsys):
    df = _script()
    if df.chromium() is None and not os.environ.get("CI"):
        pytest.skip("no Chromium here for report_first_screen.png (scripts/test installs it)")
    rc = df.main(["--check", "--out", str(tmp_path)])
    assert rc == 0, capsys.readouterr().out
