"""analyze: planted structure is recovered, the helix number, outputs, determinism, bad input."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from posfeat import analyze, positional_pca
from posfeat.cli import main
from posfeat.outputs.figures import FIGURES

from helpers import GPT2_WPE, planted_pair

OUTPUT_FILES = [
    "features.csv",
    "by_position.csv",
    "spurious_examples.csv",
    "summary.json",
    "report.html",
]


def test_planted_features_are_recovered():
    emb, sae, truth = planted_pair()
    an = analyze(emb, sae, tokens_sample=64)
    f = an.features.set_index("feature")
    for feat, (kind, where) in truth.items():
        assert f.at[feat, "kind"] == kind, (feat, f.loc[feat].to_dict())
        if kind == "positional":
            assert (
                abs(f.at[feat, "span_start"] - where[0]) <= 1
                and abs(f.at[feat, "span_end"] - where[1]) <= 1
            )
        else:
            assert emb.token_str(where) == f.at[feat, "top_tokens"].split(" | ")[0]
    assert an.summary["counts"]["positional"] == 5 and an.summary["counts"]["semantic"] == 3
    assert an.summary["disjoint_fraction"] == 1.0
    # a helix in 3 dimensions: the top 3 PCs explain everything
    assert an.summary["pca_top3_variance"] == pytest.approx(1.0, abs=1e-6)


def test_pca_on_real_gpt2_wpe():
    if not GPT2_WPE.exists():
        pytest.skip(f"{GPT2_WPE} not present")
    W = np.load(GPT2_WPE)
    pca = positional_pca(W, range(1, 64))
    assert round(pca.top(3), 3) == 0.973
    assert pca.components.shape[1] == 768 and np.allclose(
        pca.components[:3] @ pca.components[:3].T, np.eye(3), atol=1e-8
    )
    np.testing.assert_allclose(pca.mean, W[1:64].mean(0), atol=1e-6)


def _analyze(model, sae, out, *extra):
    return main(
        [
            "analyze",
            "--model",
            str(model),
            "--sae",
            str(sae),
            "--out",
            str(out),
            "--tokens-sample",
            "40",
            *extra,
        ]
    )


def test_analyze_cli_writes_everything_and_is_deterministic(planted_dirs, tmp_path):
    model, sae = planted_dirs
    assert _analyze(model, sae, tmp_path / "a") == 0
    out = tmp_path / "a"
    for name in OUTPUT_FILES:
        assert (out / name).is_file(), name
    for name in FIGURES:
        assert (out / "figures" / f"{name}.png").stat().st_size > 1000, name
    feats = pd.read_csv(out / "features.csv")
    summary = json.loads((out / "summary.json").read_text())
    # summary numbers agree with features.csv
    assert summary["counts"] == {
        k: int((feats.kind == k).sum()) for k in ("positional", "semantic", "mixed", "dead")
    }
    live = feats[feats.kind != "dead"]
    frac = float(
        (np.maximum(live.position_share.fillna(0), live.token_share.fillna(0)) >= 0.9).mean()
    )
    assert summary["disjoint_fraction"] == pytest.approx(frac)
    for key in (
        "model",
        "sae",
        "centered",
        "context_size",
        "pca_top3_variance",
        "fvu_in_context",
        "fvu_past_context",
        "addback_error_removed",
        "posfeat_version",
        "command",
    ):
        assert key in summary
    assert summary["command"].startswith("posfeat analyze")
    # same arguments, same results
    assert _analyze(model, sae, tmp_path / "b") == 0
    assert (out / "features.csv").read_bytes() == (tmp_path / "b" / "features.csv").read_bytes()
    s2 = json.loads((tmp_path / "b" / "summary.json").read_text())
    for s in (summary, s2):
        s.pop("created")
        s.pop(
            "timings"
        )  # seconds per stage (issue 11): the one part of summary.json that is not deterministic
        s["command"] = s["command"].replace(str(tmp_path / "b"), str(out))
    assert summary == s2


def test_report_includes_sweep_sections(planted_dirs, tmp_path, capsys):
    model, sae = planted_dirs
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    (sweep / "section.html").write_text(
        "<section><h2>Feature splitting with width</h2>marker-1234</section>"
    )
    assert _analyze(model, sae, tmp_path / "r", "--include-sweep", str(sweep)) == 0
    assert "marker-1234" in (tmp_path / "r" / "report.html").read_text()
    capsys.readouterr()
    (
        tmp_path / "not-a-sweep"
    ).mkdir()  # a folder beside the output (one holding it is refused as an input)
    assert (
        _analyze(model, sae, tmp_path / "r2", "--include-sweep", str(tmp_path / "not-a-sweep")) == 2
    )
    assert "has no section.html" in capsys.readouterr().err
    assert not (tmp_path / "r2").exists()


def test_feature_card(planted_dirs, capsys):
    model, sae = planted_dirs
    assert main(["feature", "1", "--model", str(model), "--sae", str(sae)]) == 0
    out = capsys.readouterr().out
    assert "positional" in out and "|" in out and "top tokens" in out


@pytest.mark.parametrize(
    ("case", "needle"),
    [
        ("exists", "already exists"),
        ("unwritable", "Cannot write"),
        ("positions", "--positions 99"),
        ("token", "not in the vocabulary"),
        ("feature", "out of range"),
    ],
)
def test_analyze_bad_input(case, needle, planted_dirs, tmp_path, capsys):
    model, sae = planted_dirs
    out = tmp_path / "prev"
    out.mkdir()
    (out / "features.csv").write_text("previous")
    if case == "exists":
        code = _analyze(model, sae, out)
    elif case == "unwritable":
        (tmp_path / "file").write_text("x")
        code = _analyze(model, sae, tmp_path / "file" / "out")
    elif case == "positions":
        code = _analyze(model, sae, tmp_path / "o", "--positions", "99")
    elif case == "token":
        code = _analyze(model, sae, tmp_path / "o", "--token", "definitely-not-a-token")
    else:
        code = main(["feature", "999", "--model", str(model), "--sae", str(sae)])
    assert code == 2
    err = capsys.readouterr().err
    assert (
        err.startswith("posfeat: error:")
        and needle in err
        and "Traceback" not in err
        and err.strip().count("\n") == 0
    )
    assert (out / "features.csv").read_text() == "previous"
    assert not (tmp_path / "o").exists()
    assert not [
        p for p in tmp_path.iterdir() if p.name.startswith(".")
    ]  # no temporary folders left


def test_spurious_firing_is_exact():
    """Spurious counts from the exact counts equal brute-force counting over the grid; examples are
    genuine."""
    from posfeat.analyses.classification import classify
    from posfeat.analyses.length import spurious_counts, spurious_examples
    from posfeat.engine.grid_stats import feature_stats, grid_statistics

    from helpers import random_pair

    emb, sae = random_pair(d_vocab=30, n_ctx=14, d_model=6, d_sae=12, seed=5)
    ctx = 6
    kinds = classify(feature_stats(emb, sae, range(ctx)))
    (stats_all,), never = grid_statistics(
        emb, sae, [range(14)], never_firing_context=ctx, feature_chunk=5
    )
    per_pos, by_feature = spurious_counts(stats_all, ctx, kinds)
    examples = spurious_examples(emb, sae, never, kinds, ctx, 14)
    f = sae.encode(emb.W_E[:, None, :] + emb.W_pos[None]) > 0  # [T, P, F]
    ever_in = f[:, :ctx].any(1)  # [T, F]
    want = (f & ~ever_in[:, None, :]).sum((0, 2)).double() / emb.d_vocab
    np.testing.assert_allclose(per_pos.spurious_per_token.to_numpy(), want.numpy(), atol=1e-12)
    pairs = (f & ~ever_in[:, None, :]).sum((0, 1))  # per feature
    np.testing.assert_array_equal(
        by_feature.set_index("feature").spurious_pairs.reindex(range(12), fill_value=0).to_numpy(),
        pairs.numpy(),
    )
    assert len(examples) > 0
    for r in examples.itertuples():
        assert bool(f[r.token_id, r.position, r.feature]) and not bool(
            ever_in[r.token_id, r.feature]
        )


def test_eval_fvu_definition():
    from posfeat.analyses.evaluation import reconstruction_by_position
    from posfeat.engine.sample import sample_tokens

    from helpers import random_pair

    emb, sae = random_pair(d_vocab=20, n_ctx=6)
    sample = sample_tokens(emb, 50)
    df = reconstruction_by_position(emb, sae, sample)
    x = emb.W_E[:, None, :] + emb.W_pos[None]
    err = (x - sae(x)).double().pow(2).sum(-1)  # [T, P]
    base = (x - x.mean(0, keepdim=True)).double().pow(2).sum(-1)
    np.testing.assert_allclose(df.fvu.to_numpy(), (err.sum(0) / base.sum(0)).numpy(), rtol=1e-5)
    np.testing.assert_allclose(
        df.l0.to_numpy(), (sae.encode(x) > 0).double().sum(-1).mean(0).numpy(), rtol=1e-6
    )
    np.testing.assert_allclose(
        df.zero_fvu.to_numpy(), (x.double().pow(2).sum(-1).sum(0) / base.sum(0)).numpy(), rtol=1e-5
    )
    assert torch.equal(sample.ids, torch.arange(20))


def test_sparse_and_dense_chunks_equal_the_encoder(monkeypatch):
    """The sample grid's reconstruction (sparse entries or a dense buffer) equals sae(x) computed
    directly."""
    import posfeat.engine.sample as sample_mod
    from posfeat.engine.sample import SampleGrid

    from helpers import random_pair

    emb, sae = random_pair(d_vocab=30, n_ctx=9, d_sae=200, d_model=10, seed=3)
    tokens = torch.arange(30)
    x = emb.W_E[:, None, :] + emb.W_pos[None]
    want = sae(x)
    for dense_from in (0.0, 1.0):  # every chunk dense, every chunk sparse
        monkeypatch.setattr(sample_mod, "DENSE_FROM", dense_from)
        grid = SampleGrid(emb, sae, tokens)
        got = torch.cat([c.x_hat.clone() for c in grid.chunks(torch.arange(9), step=4)], dim=1)
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)  # float32 sums of 200 terms
