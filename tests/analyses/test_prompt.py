"""Prompts: each token's features at its position, exactly W_E[t] + W_pos[p] through the SAE;
DataFrame, notebook view, terminal table."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from posfeat import PosfeatError, Prompt, analyze, prompt
from posfeat.analyses.classification import classify
from posfeat.analyses.prompts import PROMPT_COLUMNS, TOKEN_COLUMNS
from posfeat.cli import main
from posfeat.engine.grid_stats import feature_stats

from helpers import planted_pair, random_pair


def _word_tokenizer(words: list[str]):
    from tokenizers import Tokenizer, models, pre_tokenizers

    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token=words[0]))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return tok


def test_activations_are_exactly_the_sae_on_each_token_at_its_position():
    emb, sae = random_pair(d_sae=32)
    ids = [3, 17, 3, 0, 25]
    pr = prompt((emb, sae), ids, top=None)
    want = sae.encode(emb.W_E[torch.tensor(ids)] + emb.W_pos[torch.arange(len(ids))]).numpy()
    np.testing.assert_array_equal(pr.activations, want)
    assert (
        pr.activations[0].tolist() != pr.activations[2].tolist()
    )  # same token, another position: other features
    df = pr.table
    assert list(df.columns) == PROMPT_COLUMNS and list(pr.tokens.columns) == TOKEN_COLUMNS
    assert len(df) == int((want > 0).sum())  # every active feature, no other
    for p, rows in df.groupby("position"):
        assert (np.diff(rows.activation.to_numpy()) <= 0).all() and (rows.token_id == ids[p]).all()
        assert set(rows.feature) == set(np.flatnonzero(want[p] > 0))
    top = prompt((emb, sae), ids, top=2).table
    assert top.groupby("position").size().max() <= 2


def test_positional_features_are_marked_as_the_grid_classifies_them():
    emb, sae, truth = planted_pair()
    ids = list(range(20))
    pr = prompt((emb, sae), ids, top=None)
    active = np.flatnonzero((pr.activations > 0).any(0))
    kinds = classify(feature_stats(emb, sae, range(sae.context_size)))
    assert len(active) and (pr.kinds[active] == kinds[active]).all()
    df = pr.table
    assert (
        (df.positional == (df.kind == "positional")).all()
        and df.positional.any()
        and (~df.positional).any()
    )
    planted = {f for f, (k, _) in truth.items() if k == "positional"}
    assert set(df.feature[df.positional]) <= planted | set(np.flatnonzero(kinds == "positional"))
    # from an Analysis: its own classification, every feature classified
    an = analyze(emb, sae, tokens_sample=32)
    pa = an.prompt(ids)
    assert (pa.kinds == an.features.kind.to_numpy()).all() and np.array_equal(
        pa.activations, pr.activations
    )


def test_positions_past_the_context_are_marked_everywhere():
    emb, sae = random_pair(n_ctx=12)  # the SAE's context is 6
    pr = prompt((emb, sae), list(range(10)))
    assert pr.context == 6 and pr.in_context.tolist() == [True] * 6 + [False] * 4
    assert (pr.table.in_context == (pr.table.position < 6)).all()
    lines = pr.lines()
    rows = [ln for ln in lines[2:] if ln[:4].strip().isdigit()]
    assert [r[4] == "*" for r in rows] == [False] * 6 + [True] * 4
    assert "past the SAE's training context (6 positions)" in lines[-1]
    view = pr.html()
    assert view.count("dashed") == 4 + 1  # four tokens, and the caption saying so
    short = prompt((emb, sae), [1, 2])
    assert "past" not in "\n".join(short.lines()) and "dashed" not in short.html()


def test_text_is_tokenised_by_the_given_tokenizer_and_errors_are_one_sentence():
    emb, sae = random_pair()
    words = [f"tok{i}" for i in range(40)]
    pr = prompt((emb, sae), "tok5 tok7 tok5", tokenizer=_word_tokenizer(words))
    assert pr.token_ids.tolist() == [5, 7, 5] and pr.token_strs == ["tok5", "tok7", "tok5"]
    with pytest.raises(PosfeatError, match="came without a tokenizer"):
        prompt((emb, sae), "tok5")  # built in memory: no tokenizer to find
    with pytest.raises(PosfeatError, match="12 positions"):
        prompt((emb, sae), list(range(13)))
    with pytest.raises(PosfeatError, match="outside the vocabulary"):
        prompt((emb, sae), [40])
    with pytest.raises(PosfeatError, match="no tokens"):
        prompt((emb, sae), [])
    with pytest.raises(PosfeatError, match="top"):
        prompt((emb, sae), [1], top=0)


def test_prepend_bos_follows_the_sae_config():
    emb, sae = random_pair()
    words = ["<|endoftext|>", *(f"tok{i}" for i in range(1, 40))]
    tok = _word_tokenizer(words)
    assert prompt((emb, sae), "tok3", tokenizer=tok).token_ids.tolist() == [3]
    sae.cfg["metadata"] = {"prepend_bos": True}  # as SAELens records it
    assert prompt((emb, sae), "tok3", tokenizer=tok).token_ids.tolist() == [0, 3]
    assert prompt((emb, sae), "tok3", tokenizer=tok, prepend_bos=False).token_ids.tolist() == [3]


def test_notebook_view_colours_by_the_chosen_feature_and_escapes_tokens():
    emb, sae = random_pair(d_sae=32)
    emb.tokens[4] = "<script>alert(1)</script>"
    pr = prompt((emb, sae), [4, 9, 4, 2])
    assert (
        isinstance(pr, Prompt)
        and pr._repr_html_() == pr.html()
        and str(pr) == "\n".join(pr.lines())
    )
    assert "<script>" not in pr.html() and "&lt;script&gt;" in pr.html()
    f = int(np.argmax(pr.activations.max(0)))
    view = pr.colour(f).html()
    col = pr.activations[:, f]
    assert f"feature #{f}" in view and view.count("rgba(255,102,0,1.000)") == int(
        (col == col.max()).sum()
    )
    assert view.count("rgba(255,102,0,0.000)") == int((col <= 0).sum())
    with pytest.raises(PosfeatError, match="not in this SAE"):
        pr.colour(10_000)


def test_topk_sae_prompt_is_exact_and_says_features_are_not_classified_here():
    emb, sae = random_pair(k=3)
    pr = prompt((emb, sae), [1, 2, 3])
    assert ((pr.activations > 0).sum(1) <= 3).all()
    assert any("not classified" in n for n in pr.lines())
    assert (pr.table.kind == "").all()


@pytest.mark.realmodel
def test_cli_prompt_on_the_bundled_pair_prints_each_token_and_its_features(capsys):
    assert main(["prompt", "The cat sat on the mat", "--device", "cpu"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "8 tokens" in out[0] and "top 10" in out[0]
    rows = out[2:10]
    assert [r.split()[1] for r in rows] == [
        "'[CLS]'",
        "'the'",
        "'cat'",
        "'sat'",
        "'on'",
        "'the'",
        "'mat'",
        "'[SEP]'",
    ]
    for r in rows:
        assert "#" in r and 1 <= r.count("#") <= 10  # each token's features with activations
    assert any(" P" in r for r in rows)  # positional ones marked
    assert main(["prompt", "x", "--top", "0"]) == 2
