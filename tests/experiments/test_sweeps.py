"""Sweeps on a tiny model (local executor): widths 8, 16, 32 with two seeds; resume after an
interrupted run; counts equal analyze's; the trend test and lack of fit; contexts with both halves
of "repaired"; API and CLI build the same runs."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from posfeat import PosfeatError, analyze, read_sae_folder
from posfeat.cli import main
from posfeat.experiments import parse_ints, power_law, repair_verdict, sweep_context, sweep_widths
from posfeat.experiments.folder import SWEEP_WIDTHS
from posfeat.io.ownership import write_marker
from posfeat.training import train_sae

from helpers import random_pair

RECIPE = {"context": 10, "steps": 120, "batch": 64, "l1": 0.05, "lr": 3e-3, "progress": False}
KW = {**RECIPE, "tokens": 30, "seeds": 2, "curve_points": 3}


def test_width_sweep_resumes_and_matches_analyze(tmp_path):
    emb, _ = random_pair(d_vocab=48, n_ctx=16, d_model=6)
    ref = sweep_widths(emb, widths=[8, 16, 32], out=tmp_path / "ref", **KW)
    assert list(ref.d_sae) == [8, 16, 32] and list(ref.n_seeds) == [2, 2, 2]
    assert {"positional", "positional_sd", "fvu_in_context", "fvu_in_context_sd"} <= set(
        ref.columns
    )
    # interrupt width 16 (first seed) half-way, then run the sweep: 16 resumes from its checkpoint,
    # 8 and 32 are reused
    out = tmp_path / "cut"
    sweep_widths(emb, widths=[8, 32], out=out, **KW)
    with pytest.raises(PosfeatError, match="interrupted"):
        train_sae(emb, d_sae=16, seed=0, out=out / "d_sae_16" / "seed_0", stop_after=60, **RECIPE)
    assert (out / "d_sae_16" / "seed_0.partial" / "checkpoint.safetensors").is_file()
    mtimes = {
        f"d_sae_{w}/seed_{s}": (out / f"d_sae_{w}" / f"seed_{s}" / "sae_weights.safetensors")
        .stat()
        .st_mtime_ns
        for w in (8, 32)
        for s in (0, 1)
    }
    got = sweep_widths(emb, widths=[8, 16, 32], out=out, **KW)
    runs = pd.read_csv(out / "runs.csv")
    assert len(runs) == 6 and set(runs.status) == {"done"}
    assert mtimes == {
        k: (out / k / "sae_weights.safetensors").stat().st_mtime_ns for k in mtimes
    }  # widths 8 and 32 were not retrained
    for w in (8, 16, 32):
        for s in (0, 1):
            a, b = (
                read_sae_folder(tmp_path / "ref" / f"d_sae_{w}" / f"seed_{s}"),
                read_sae_folder(out / f"d_sae_{w}" / f"seed_{s}"),
            )
            assert torch.equal(a.W_enc, b.W_enc) and torch.equal(a.b_enc, b.b_enc), (w, s)
    cols = [
        "positional",
        "semantic",
        "mixed",
        "dead",
        "positional_mean_span",
        "fvu_in_context",
        "l0_in_context",
    ]
    np.testing.assert_allclose(ref[cols].to_numpy(float), got[cols].to_numpy(float), equal_nan=True)
    for row in runs.itertuples():  # every run's counts equal what analyze gives for its saved SAE
        an = analyze(
            emb, read_sae_folder(out / f"d_sae_{row.d_sae}" / f"seed_{row.seed}"), tokens_sample=16
        )
        assert an.summary["counts"] == {
            k: getattr(row, k) for k in ("positional", "semantic", "mixed", "dead")
        }
    summary = json.loads((out / "summary.json").read_text())
    assert summary["widths"] == [8, 16, 32] and summary["seeds"] == [0, 1]
    assert summary["claim"] == "positional count grows with width" and {
        "page",
        "spearman_rho",
        "grows",
    } <= set(summary["trend"])
    assert [e["from"] for e in summary["local_exponents"]] == [8, 16] and summary["ceiling"][
        "positions"
    ] == 10
    assert summary["lack_of_fit"]["df_lack_of_fit"] == 1 and summary["missing"] == []
    fit = summary["power_law"]
    assert fit["points"] >= 2 and (
        fit["alpha_low"] is None or fit["alpha_low"] <= fit["alpha"] <= fit["alpha_high"]
    )
    steps = summary["positional_by_step"]
    assert [r["step"] for r in steps] == [
        40,
        80,
        120,
    ]  # widest SAE, first seed: the count during training
    for f in (
        "widths.csv",
        "runs.csv",
        "section.html",
        "figures/width_counts.png",
        "figures/width_splitting.png",
        "figures/width_steps.png",
    ):
        assert (out / f).is_file(), f
    assert not (tmp_path / "cut.partial").exists() and not (tmp_path / "ref.partial").exists()


def test_power_law_fit_with_interval_and_parsing():
    w = np.array([100.0, 200, 400, 800] * 3)
    fit = power_law(w, 3 * w**0.5)
    assert fit["alpha"] == pytest.approx(0.5) and fit["c"] == pytest.approx(3.0)
    assert fit["alpha_low"] == pytest.approx(0.5) and fit["alpha_high"] == pytest.approx(
        0.5
    )  # no scatter: a point interval
    noisy = power_law(w, 3 * w**0.5 * np.exp(np.random.default_rng(0).normal(0, 0.2, len(w))))
    assert noisy["alpha_low"] < noisy["alpha"] < noisy["alpha_high"]
    assert parse_ints("512,256, 256", "--d-sae") == [256, 512]
    with pytest.raises(PosfeatError, match="comma-separated"):
        parse_ints("a,b", "--d-sae")
    # repaired needs both halves: past-context FVU near the in-context level AND in-context FVU not
    # regressed
    assert repair_verdict(0.1, 0.5, 0.1, 0.1)["verdict"] == "repaired"
    v = repair_verdict(
        0.092, 1.024, 0.086, 0.095
    )  # the bundled sweep's 512 fine-tune: past repaired, in-context +10%
    assert (
        v["verdict"] == "improved"
        and v["past_ok"]
        and not v["in_context_ok"]
        and v["in_context_margin"] == pytest.approx(0.095 / 0.086 - 1)
    )
    assert (
        repair_verdict(0.3, 0.5, 0.1, 0.1)["verdict"] == "improved"
        and repair_verdict(0.6, 0.5, 0.1, 0.1)["verdict"] == "not repaired"
    )
    assert (
        repair_verdict(0.092, 1.0, 0.086, 0.095, in_context_tolerance=0.2)["verdict"] == "repaired"
    )


def test_context_sweep(tmp_path):
    emb, _ = random_pair(d_vocab=48, n_ctx=16, d_model=6)
    base = train_sae(emb, d_sae=16, **RECIPE).sae
    df = sweep_context(
        emb,
        base,
        contexts=[13, 16],
        out=tmp_path / "ctx",
        steps=40,
        control_steps=60,
        batch=64,
        tokens=30,
        seeds=2,
        progress=False,
    )
    assert list(df.sae) == [
        "original",
        "fine-tuned to 13",
        "fine-tuned to 16",
        "from scratch on 16",
    ]
    assert list(df.context) == [10, 13, 16, 16] and list(df.n_seeds) == [2, 2, 2, 2]
    assert (
        df.fvu_past_original_context.notna().all() and df.fvu_past_original_context_sd.notna().all()
    )
    summary = json.loads((tmp_path / "ctx" / "summary.json").read_text())
    assert set(summary["verdicts"]) == {
        "fine-tuned to 13",
        "fine-tuned to 16",
        "from scratch on 16",
    }
    for name, v in summary["repair"].items():  # margins recomputed from the table
        row, first = df[df.sae == name].iloc[0], df.iloc[0]
        assert v["in_context_margin"] == pytest.approx(
            row.fvu_in_original_context / first.fvu_in_original_context - 1
        )
        assert v["past_margin"] == pytest.approx(
            row.fvu_past_original_context / first.fvu_in_original_context - 1
        )
    assert len(pd.read_csv(tmp_path / "ctx" / "runs.csv")) == 8
    with pytest.raises(PosfeatError, match="not longer than the SAE's own context 10"):
        sweep_context(emb, base, contexts=[10, 16], out=tmp_path / "bad", steps=5, progress=False)
    assert not (tmp_path / "bad").exists() and not (tmp_path / "bad.partial").exists()


def test_sweep_cli_bad_input(tmp_path, capsys):
    assert (
        main(["sweep", "widths", "--context", "8", "--d-sae", "x", "--out", str(tmp_path / "o")])
        == 2
    )
    assert "comma-separated" in capsys.readouterr().err


def test_trend_and_lack_of_fit_can_each_come_out_both_ways():
    from posfeat.experiments import lack_of_fit, local_exponents, trend_test
    from posfeat.experiments.aggregate import width_table

    rng = np.random.default_rng(0)
    widths = np.array([100, 200, 400, 800, 1600])

    def runs_of(counts):
        return pd.DataFrame(
            [
                {
                    "d_sae": w,
                    "seed": s,
                    "positional": c[s],
                    "semantic": 0,
                    "mixed": 0,
                    "dead": 0,
                    "positional_mean_span": 1.0,
                    "fvu_in_context": 0.1,
                    "l0_in_context": 1.0,
                }
                for w, c in zip(widths, counts)
                for s in range(3)
            ]
        )

    line = [
        3 * w**0.5 * np.exp(rng.normal(0, 0.05, 3)) for w in widths
    ]  # a power law with seed scatter
    flat = [np.array([20, 22, 21]) + rng.integers(-2, 3, 3) for _ in widths]  # no trend
    bent = [np.array([c, c + 1, c - 1]) for c in (10, 30, 45, 50, 52)]  # grows, then levels off
    t_line, t_flat, t_bent = (
        trend_test(runs_of(line)),
        trend_test(runs_of(flat)),
        trend_test(runs_of(bent)),
    )
    assert t_line["grows"] and t_line["page"]["p"] < 0.01 and t_bent["grows"]
    assert not t_flat["grows"] and t_flat["page"]["p"] > 0.05
    w_all = np.repeat(widths, 3).astype(float)
    v_line, v_bent = np.concatenate(line), np.concatenate(bent).astype(float)
    assert (
        lack_of_fit(w_all, v_line, power_law(w_all, v_line))["p"] > 0.05
    )  # a true power law: no lack of fit
    lof = lack_of_fit(w_all, v_bent, power_law(w_all, v_bent))
    assert lof["p"] < 0.01 and (lof["df_lack_of_fit"], lof["df_pure_error"]) == (3, 10)
    one_seed = trend_test(
        runs_of(line)[lambda d: d.seed == 0]
    )  # Page's L needs two seeds: Spearman alone decides
    assert (
        np.isnan(one_seed["page"]["p"])
        and one_seed["test"].startswith("Spearman")
        and one_seed["grows"]
    )
    ex = [e["exponent"] for e in local_exponents(width_table(runs_of(bent)))]
    assert ex[0] > 1 and ex[-1] < 0.1  # local exponents fall as the curve levels off


def test_api_and_cli_sweeps_build_identical_runs():
    from posfeat.cli.commands import _width_setup
    from posfeat.cli.main import build_parser
    from posfeat.experiments import ContextSweepConfig, WidthSweepConfig, context_plan, width_plan

    args = build_parser().parse_args(
        ["sweep", "widths", "--context", "10", "--d-sae", "16,8", "--out", "x"]
    )
    cfg, recipe = _width_setup(args)
    api = width_plan(WidthSweepConfig(context=10, d_sae=(8, 16)), WidthSweepConfig.recipe())
    assert width_plan(cfg, recipe) == api
    assert (
        api[0].config.l1 == 1.0 and api[0].config.lr == 5e-3 and len(api) == 6
    )  # the sweep's own recipe, both ways
    args = build_parser().parse_args(["sweep", "context", "--contexts", "13,16", "--out", "x"])
    from posfeat.cli.flags import values_of
    from posfeat.training import TrainConfig

    _, base = random_pair(d_vocab=48, n_ctx=16, d_model=6)
    base.meta = base.meta.__class__(**{**base.meta.__dict__, "context_size": 10})
    cli = context_plan(
        ContextSweepConfig(contexts=args.contexts),
        ContextSweepConfig.recipe(
            **values_of(args, TrainConfig, exclude=(*ContextSweepConfig.FIXED, "l1"))
        ),
        base,
    )
    assert cli == context_plan(
        ContextSweepConfig(contexts=(13, 16)), ContextSweepConfig.recipe(), base
    )
    assert dict(cli[1].settings)["steps"] == 500 and dict(cli[1].settings)["lr"] == 1e-3
    assert (
        dict(cli[1].settings)["l1"] == 1.0
    )  # the SAE's own L1 (this one records none: 1), not TrainConfig's default


def test_importing_posfeat_and_a_local_sweep_never_import_ray(tmp_path):
    import subprocess
    import sys

    code = (
        "import sys, posfeat\n"
        "from posfeat.experiments import sweep_widths\n"
        "from helpers import random_pair\n"
        "emb, _ = random_pair(d_vocab=48, n_ctx=16, d_model=6)\n"
        f"sweep_widths(emb, widths=[8, 16], out={str(tmp_path / 'w')!r}, context=10, steps=20, "
        "batch=32, seeds=1, tokens=10, "
        "curve_points=0, progress=False)\n"
        "import posfeat.cli.main\n"
        "print('ray' in sys.modules)\n"
    )
    import os

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(p) for p in sys.path if p])}
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=env,
        cwd=os.path.dirname(__file__) + "/..",
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "False"


def test_statistics_read_a_finished_sweep_of_posfeat_0_2(tmp_path):
    """scripts/sweep_stats.py's reader: a 0.2 runs.csv (no status column) and summary.json are
    enough; nothing is trained."""
    from posfeat.experiments.aggregate import from_folder
    from posfeat.experiments.runner import CONTEXT_COLUMNS, WIDTH_COLUMNS

    w = tmp_path / "w"
    w.mkdir()
    counts = {
        128: [13, 14, 13],
        256: [18, 19, 18],
        512: [30, 32, 29],
        1024: [45, 50, 40],
        2048: [55, 57, 54],
    }
    rows = [
        {c: 0 for c in WIDTH_COLUMNS} | {"d_sae": d, "seed": s, "positional": n}
        for d, ns in counts.items()
        for s, n in enumerate(ns)
    ]
    pd.DataFrame(rows)[WIDTH_COLUMNS].to_csv(w / "runs.csv", index=False)
    (w / "summary.json").write_text(json.dumps({"context": 128}))
    s = from_folder(w)
    assert s["kind"] == "widths" and s["trend"]["grows"] and s["ceiling"]["positions"] == 128
    assert list(s["table"].positional.round(2)) == [13.33, 18.33, 30.33, 45.0, 55.33]
    c = tmp_path / "c"
    c.mkdir()
    rows = []
    for s_ in range(3):
        rows.append(
            {
                "sae": "original",
                "context": 128,
                "seed": s_,
                "fvu_in_original_context": 0.086,
                "fvu_past_original_context": 1.02,
            }
        )
        rows.append(
            {
                "sae": "fine-tuned to 512",
                "context": 512,
                "seed": s_,
                "fvu_in_original_context": 0.095,
                "fvu_past_original_context": 0.092,
            }
        )
    pd.DataFrame(rows).reindex(columns=CONTEXT_COLUMNS).to_csv(c / "runs.csv", index=False)
    (c / "summary.json").write_text(json.dumps({"original_context": 128}))
    v = from_folder(c)["repair"]["fine-tuned to 512"]
    assert v["verdict"] == "improved" and v["in_context_margin"] == pytest.approx(0.095 / 0.086 - 1)


def test_plan_prints_runs_estimates_and_total_without_training(tmp_path, capsys):
    from helpers import write_planted_folders

    model, _ = write_planted_folders(tmp_path)
    args = [
        "sweep",
        "widths",
        "--model",
        str(model),
        "--context",
        "10",
        "--d-sae",
        "8,16,32",
        "--seeds",
        "2",
        "--steps",
        "50",
        "--device",
        "cpu",
        "--plan",
        "--out",
        str(tmp_path / "sw"),
    ]
    assert main(args) == 0
    out = capsys.readouterr().out
    lines = [ln for ln in out.splitlines() if ln.strip().startswith("d_sae_")]
    assert [ln.split()[0] for ln in lines] == [
        f"d_sae_{w}/seed_{s}" for w in (8, 16, 32) for s in (0, 1)
    ]
    assert "6 runs; total" in out and "device-hours on cpu" in out and "fastest of 3 steps" in out
    assert not (tmp_path / "sw").exists() and not (tmp_path / "sw.partial").exists()


def test_local_run_that_fails_is_reported_and_the_rerun_finishes(tmp_path):
    from posfeat.experiments import SweepIncompleteError

    emb, _ = random_pair(d_vocab=48, n_ctx=16, d_model=6)
    kw = {**KW, "steps": 40, "curve_points": 0}
    blocker = tmp_path / "s.partial" / "d_sae_16" / "seed_0.partial"
    blocker.parent.mkdir(parents=True)
    write_marker(
        tmp_path / "s.partial", SWEEP_WIDTHS
    )  # the sweep's own work folder (a user's folder is refused whole)
    blocker.write_text("not a folder")
    with pytest.raises(SweepIncompleteError, match=r"1 of 4 runs failed \(d_sae_16/seed_0"):
        sweep_widths(emb, widths=[8, 16], out=tmp_path / "s", **kw)
    runs = pd.read_csv(tmp_path / "s.partial" / "runs.csv")
    assert (
        list(runs.status) == ["done", "done", "failed", "done"]
        and "not a folder" in runs.error.iloc[2]
    )
    assert (
        json.loads((tmp_path / "s.partial" / "summary.json").read_text())["missing"][0]["run"]
        == "d_sae_16/seed_0"
    )
    blocker.unlink()
    sweep_widths(emb, widths=[8, 16], out=tmp_path / "s", **kw)
    assert (
        list(pd.read_csv(tmp_path / "s" / "runs.csv").status) == ["done"] * 4
        and not (tmp_path / "s.partial").exists()
    )


def test_one_executor_interface_and_one_source_of_its_defaults():
    import inspect

    from posfeat.experiments.config import EXECUTORS, ExecutorConfig
    from posfeat.experiments.executors import (
        EXECUTOR_CLASSES,
        Executor,
        LocalExecutor,
        make_executor,
    )
    from posfeat.experiments.sweeps import sweep_context, sweep_widths

    assert tuple(EXECUTOR_CLASSES) == EXECUTORS and all(
        issubclass(c, Executor) for c in EXECUTOR_CLASSES.values()
    )
    assert isinstance(make_executor(ExecutorConfig()), LocalExecutor)
    for fn in (
        sweep_widths,
        sweep_context,
    ):  # the sweeps' keyword defaults are ExecutorConfig's own
        params = inspect.signature(fn).parameters
        for name in ("executor", "address", "max_retries", "gpu_memory"):
            assert params[name].default == getattr(ExecutorConfig, name), (fn.__name__, name)
