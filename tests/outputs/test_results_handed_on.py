"""Results are handed on as objects, not read back (issue 28): an analysis' headline numbers are one
typed object whose dict view summary.json holds, saving an analysis leaves it as it was, and a sweep
returns what it wrote (its summary, sentence and placement), which the CLI prints without reading
summary.json."""

from __future__ import annotations

import copy
import dataclasses
import json

from posfeat import analyze
from posfeat.analyses.headline import AnalysisSummary
from posfeat.experiments.aggregate import width_sentence
from posfeat.experiments.config import ExecutorConfig, WidthSweepConfig
from posfeat.experiments.sweeps import WidthSweep, run_widths
from posfeat.outputs.write import dump_json

from helpers import planted_pair, random_pair


def _text(x: object) -> str:
    return json.dumps(x, sort_keys=True, default=str, allow_nan=True)


def test_saving_an_analysis_leaves_it_as_it_was(tmp_path, stub_figures):
    emb, sae, _ = planted_pair()
    an = analyze(emb, sae, tokens_sample=24, progress=False)
    summary, timings, findings = (
        copy.deepcopy(an.summary),
        dict(an.timings),
        copy.deepcopy(an.findings),
    )
    out = an.save(tmp_path / "out", command="posfeat analyze --planted")
    assert (
        _text(an.summary) == _text(summary)
        and an.timings == timings
        and _text(an.findings) == _text(findings)
    )
    written = json.loads((out / "summary.json").read_text())
    assert written["command"] == "posfeat analyze --planted"
    assert set(written["timings"]) == {*timings, "figures", "report"}
    assert list(written)[-2:] == ["command", "created"] and list(written)[: len(summary)] == list(
        summary
    )
    # the typed headline numbers are what summary.json holds, in its order; Analysis.summary is
    # their dict view
    assert isinstance(an.numbers, AnalysisSummary) and list(summary) == [
        f.name for f in dataclasses.fields(AnalysisSummary)
    ]
    assert (
        an.numbers.fvu_in_context == an.summary["fvu_in_context"]
        and an.numbers.findings is an.findings
    )
    assert {
        k: v for k, v in written.items() if k not in ("timings", "command", "created")
    } == json.loads(dump_json({k: v for k, v in an.numbers.as_dict().items() if k != "timings"}))
    assert "posfeat analyze --planted" in (out / "report.html").read_text()


def test_a_width_sweep_returns_what_it_wrote(tmp_path):
    emb, _ = random_pair(d_vocab=48, n_ctx=16, d_model=6)
    cfg = WidthSweepConfig(context=10, d_sae=(8, 16, 32), seeds=1, tokens=30, curve_points=0)
    recipe = WidthSweepConfig.recipe(steps=60, batch=64, l1=0.05, lr=3e-3)
    got = run_widths(
        emb,
        cfg,
        recipe,
        ExecutorConfig(),
        out=tmp_path / "w",
        token_weights=None,
        command="sweep",
        model_name=None,
        progress=False,
        force=False,
        num_cpus=None,
    )
    assert isinstance(got, WidthSweep) and got.folder == (tmp_path / "w").resolve()
    assert (
        dump_json(got.summary) == (tmp_path / "w" / "summary.json").read_text()
    )  # summary.json is the object, written once
    assert got.sentence == width_sentence(got.statistics, [8, 16, 32], 1)
    assert got.placement == {k: got.summary[k] for k in got.placement}
    assert list(got.table.d_sae) == [8, 16, 32]
