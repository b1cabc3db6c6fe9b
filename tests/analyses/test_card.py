"""The card that explains its feature (issue 29, item 4): exact histogram and top inputs,
pre-activation, the nearest W_pos row, the past context, logit effects where the model has an
unembedding (and why not where it has none), positional cards leading with position and semantic
ones with tokens; the same card from an analysis and from the pair alone."""

from __future__ import annotations

import json

import numpy as np
import pytest

from posfeat import Embeddings, analyze, feature_card
from posfeat.engine.histogram import activation_histograms

from helpers import planted_pair, random_pair


@pytest.fixture(scope="module")
def planted():
    emb, sae, truth = planted_pair()
    return emb, sae, truth, analyze(emb, sae, tokens_sample=16, progress=False)


def _gpt2_like(emb: Embeddings, model_type: str = "gpt2") -> Embeddings:
    return Embeddings(
        emb.W_E, emb.W_pos, tokens=emb.tokens, name=emb.name, info={"model_type": model_type}
    )


def test_the_card_carries_the_exact_histogram_and_top_inputs_of_the_grid(planted):
    """The card shows the report's histogram and top inputs (from the engine's pass, the same
    token parts as its statistics); computed on their own for one feature (a GEMM's token parts,
    rounded otherwise), they agree to that rounding."""
    emb, sae, _truth, an = planted
    report = an.stats_context.histograms
    assert report is not None  # the numba path gave them
    for f in (0, 2, 5):
        card = an.feature(f)
        np.testing.assert_array_equal(card.histogram, report.counts[f])
        assert card.grid_inputs == emb.d_vocab * an.context and card.histogram.sum() == card.firing
        assert card.firing / card.grid_inputs == pytest.approx(
            card.fire, abs=1e-12
        )  # agrees with the engine's exact firing share
        want = [
            (emb.token_str(int(t)), int(p), float(v))
            for t, p, v in zip(report.top_tokens[f], report.top_positions[f], report.top_values[f])
            if t >= 0
        ]
        assert (
            card.top_inputs == want
            and card.top_inputs
            and card.top_inputs[0][2] == pytest.approx(card.histogram_max)
        )
        alone = activation_histograms(emb, sae, an.context, features=np.array([f]))
        assert np.abs(alone.counts[0] - card.histogram).sum() <= 2  # boundary values, if any
        np.testing.assert_allclose(
            alone.top_values[0][: len(want)], [v for *_, v in want], rtol=0, atol=1e-5
        )


def test_positional_cards_lead_with_position_and_semantic_ones_with_tokens(planted):
    _emb, _sae, truth, an = planted
    kinds = an.features.kind
    pos = next(f for f, (k, _) in truth.items() if k == "positional" and kinds[f] == "positional")
    sem = next(f for f, (k, _) in truth.items() if k == "semantic" and kinds[f] == "semantic")
    for f, first in ((pos, "peak position"), (sem, "top tokens")):
        lines = an.feature(f).lines()
        body = [line for line in lines[2:] if line.startswith(("peak position", "top tokens"))]
        assert body[0].startswith(first), lines


def test_nearest_wpos_row_is_the_decoder_nearest_row_and_agrees_between_the_two_cards(planted):
    emb, sae, truth, an = planted
    for f in range(sae.d_sae):
        d = sae.W_dec[f].double()
        Wp = emb.W_pos[: an.context].double()
        cos = (Wp @ d) / (Wp.norm(dim=1) * d.norm())
        alone, from_an = feature_card(emb, sae, f), an.feature(f)
        assert alone.nearest_wpos_row == from_an.nearest_wpos_row == int(cos.argmax())
        assert alone.decoder_cos_wpos == pytest.approx(float(cos.max()), abs=1e-6)
        np.testing.assert_array_equal(alone.histogram, from_an.histogram)
    planted_positional = [f for f, (k, _) in truth.items() if k == "positional"]
    assert all(
        an.feature(f).decoder_cos_wpos > 0.99 for f in planted_positional
    )  # decoders planted along W_pos rows


def test_preactivation_curve_and_past_context(planted):
    emb, sae, _truth, an = planted
    card = an.feature(0)
    b = (emb.W_pos.double() @ sae.W_enc[:, 0].double()).numpy()
    a = (emb.W_E.double() @ sae.W_enc[:, 0].double() + sae.b_enc[0].double()).numpy()
    np.testing.assert_allclose(card.preactivation, a.mean() + b, atol=1e-5)
    assert card.threshold == 0.0
    assert card.past_context.startswith(
        f"past the context (positions {an.context}..{emb.n_ctx - 1})"
    )
    assert "mean pre-activation by position" in str(card) and "nearest W_pos row" in str(card)


def test_logit_effects_go_through_the_tied_unembedding():
    emb, sae = random_pair(d_vocab=40, n_ctx=12, d_sae=6, seed=2)
    card = feature_card(_gpt2_like(emb), sae, 4)
    logits = (sae.W_dec[4] @ emb.W_E.T).numpy()
    assert [t for t, _ in card.logit_top] == [
        emb.token_str(int(t)) for t in np.argsort(-logits)[:10]
    ]
    assert [t for t, _ in card.logit_bottom] == [
        emb.token_str(int(t)) for t in np.argsort(logits)[:10]
    ]
    assert (
        card.logit_top[0][1] == pytest.approx(float(logits.max()), abs=1e-5)
        and card.logit_note is None
    )
    assert "logit effects (W_dec @ W_E^T" in str(card)


@pytest.mark.parametrize("model_type", ["bert", None])
def test_a_model_without_an_unembedding_says_so(model_type):
    emb, sae = random_pair(d_sae=4)
    if model_type:
        emb = _gpt2_like(emb, model_type)
    card = feature_card(emb, sae, 1)
    assert card.logit_top == [] and "without an unembedding" in card.logit_note
    assert "logit effects: none" in str(card)


def test_the_card_as_json_carries_every_new_field(planted):
    emb, _sae, _truth, an = planted
    doc = json.loads(json.dumps(an.feature(1).as_dict()))
    assert (
        sum(doc["histogram"]["counts"]) == doc["histogram"]["firing"]
        and len(doc["histogram"]["edges"]) == len(doc["histogram"]["counts"]) + 1
    )
    assert doc["top_inputs"][0].keys() == {"token", "position", "activation"}
    assert (
        len(doc["preactivation"]) == emb.n_ctx
        and isinstance(doc["nearest_wpos_row"], int)
        and doc["past_context"]
    )
    assert doc["logit_top"] == [] and doc["logit_note"]


def test_topk_cards_say_why_there_is_no_histogram():
    emb, sae = random_pair(k=3, d_sae=8)
    card = feature_card(emb, sae, 2)
    assert (
        card.histogram is None
        and "do not split into token and position parts" in card.histogram_note
    )
    assert "activation histogram: not computed" in str(card)


def test_the_repr_stays_under_one_kilobyte_with_long_names():
    emb, sae = random_pair(d_vocab=30, n_ctx=300, d_sae=4)
    emb = Embeddings(emb.W_E, emb.W_pos, tokens=["x" * 500 for _ in range(30)], name="m" * 2000)
    card = feature_card(emb, sae, 0)
    assert len(repr(card)) < 1024 and len(card.profile) == 300 and "FeatureCard 0" in repr(card)
