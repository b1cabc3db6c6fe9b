"""Model objects in memory load exactly as their saved folders do: tiny transformers GPT-2, OPT and
BERT, and a HookedTransformer stand-in."""

from __future__ import annotations

import types

import numpy as np
import pytest
import torch

from posfeat import PosfeatError, load_embeddings, load_pair
from posfeat.io.sae_folders import write_sae_folder

from helpers import random_pair

transformers = pytest.importorskip("transformers")


def _tiny(kind: str):
    torch.manual_seed(0)
    if kind == "gpt2":
        cfg = transformers.GPT2Config(vocab_size=50, n_positions=20, n_embd=16, n_layer=1, n_head=2)
        return transformers.GPT2LMHeadModel(cfg)
    if kind == "opt":
        cfg = transformers.OPTConfig(
            vocab_size=50,
            max_position_embeddings=20,
            hidden_size=16,
            word_embed_proj_dim=16,
            num_hidden_layers=1,
            num_attention_heads=2,
            ffn_dim=32,
        )
        return transformers.OPTForCausalLM(cfg)
    cfg = transformers.BertConfig(
        vocab_size=50,
        max_position_embeddings=20,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
    )
    return transformers.BertModel(cfg)


@pytest.mark.parametrize("kind", ["gpt2", "opt", "bert"])
def test_transformers_object_equals_its_saved_folder(kind, tmp_path):
    model = _tiny(kind).eval()
    model.save_pretrained(tmp_path / kind, safe_serialization=True)
    from_obj = load_embeddings(model)
    from_dir = load_embeddings(str(tmp_path / kind))
    assert torch.equal(from_obj.W_E, from_dir.W_E) and torch.equal(from_obj.W_pos, from_dir.W_pos)
    assert from_obj.n_ctx == 20 and from_obj.d_vocab == 50
    emb = model.get_input_embeddings().weight.detach()
    if kind == "opt":  # offset of 2 removed, as for checkpoints
        assert torch.equal(from_obj.W_pos, model.model.decoder.embed_positions.weight.detach()[2:])
    if kind == "bert":  # the token-type-0 row joins every token row
        torch.testing.assert_close(
            from_obj.W_E, emb + model.embeddings.token_type_embeddings.weight.detach()[0]
        )
    else:
        assert torch.equal(from_obj.W_E, emb)
    assert from_obj.tokens is None and from_obj.token_str(7) == "<7>"  # no tokenizer attached: ids


def test_transformers_object_with_a_tokenizer_reads_token_strings():
    from tokenizers import Tokenizer, models, pre_tokenizers

    tok = Tokenizer(models.WordLevel({f"w{i}": i for i in range(50)}, unk_token="w0"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    emb = load_embeddings(_tiny("gpt2"), tokenizer=tok)
    assert emb.tokens[:3] == ["w0", "w1", "w2"]


class _Cfg:
    def __init__(self, pet: str = "standard") -> None:
        self.model_name, self.positional_embedding_type, self.original_architecture = (
            "gpt2-small",
            pet,
            "GPT2LMHeadModel",
        )


def _hooked(center: bool, pet: str = "standard"):
    g = torch.Generator().manual_seed(0)
    W_E, W_pos = torch.randn(50, 16, generator=g), torch.randn(20, 16, generator=g)
    if center:
        W_E, W_pos = W_E - W_E.mean(1, keepdim=True), W_pos - W_pos.mean(1, keepdim=True)
    return types.SimpleNamespace(W_E=W_E, W_pos=W_pos, cfg=_Cfg(pet), tokenizer=None)


def test_hooked_transformer_stand_in_records_its_centring():
    centred = load_embeddings(_hooked(True))
    assert centred.centered and "center_writing_weights" in centred.info["centering"]
    raw = _hooked(False)
    loose = load_embeddings(raw)
    assert not loose.centered and torch.equal(loose.W_E, raw.W_E)
    with pytest.raises(PosfeatError, match="rotary positions"):
        load_embeddings(_hooked(True, "rotary"))


def test_load_pair_with_a_model_object_centres_as_the_sae_needs(tmp_path):
    _, sae = random_pair(d_model=16)
    write_sae_folder(sae, tmp_path / "s", {"model_name": "gpt2", "center_writing_weights": True})
    obj = _hooked(False)
    emb, _ = load_pair(obj, str(tmp_path / "s"))
    assert emb.centered
    np.testing.assert_allclose(
        emb.W_E.numpy(), (obj.W_E - obj.W_E.mean(1, keepdim=True)).numpy(), atol=1e-6
    )
    emb2, _ = load_pair(_hooked(True), str(tmp_path / "s"))
    assert emb2.centered


def test_an_unknown_object_is_one_sentence():
    with pytest.raises(PosfeatError, match="not a model posfeat can read"):
        load_embeddings(object())


# ---------------------------------------------------------------- model objects everywhere (issue
# 19)
def _sae_for(tmp_path, d_model: int = 16, context: int = 10, **kw):
    from posfeat import SAE

    g = torch.Generator().manual_seed(3)
    sae = SAE.from_arrays(
        torch.randn(d_model, 24, generator=g),
        torch.randn(24, d_model, generator=g),
        torch.randn(24, generator=g) - 0.5,
        torch.zeros(d_model),
        context_size=context,
        hook_name="blocks.0.hook_resid_pre",
        name="s",
        **kw,
    )
    write_sae_folder(sae, tmp_path / "sae", {"model_name": ""})
    return str(tmp_path / "sae")


def test_every_function_that_takes_a_model_takes_a_model_object(tmp_path):
    """Was: analyze(transformers_model, sae) raised AttributeError: 'GPT2LMHeadModel' object has no
    attribute 'd_model'."""
    from posfeat import (
        analyze,
        compare_saes,
        feature_stats,
        prompt,
        reconstruction_by_position,
        sample_tokens,
        train_sae,
    )
    from posfeat.experiments.sweeps import sweep_context, sweep_widths

    model = _tiny("gpt2").eval()
    folder = _sae_for(tmp_path)
    emb, sae = load_pair(load_embeddings(model), folder)
    an = analyze(model, folder, tokens_sample=32)
    assert an.features.equals(analyze(emb, sae, tokens_sample=32).features)
    np.testing.assert_array_equal(
        feature_stats(model, folder, range(10)).mean_by_position,
        feature_stats(emb, sae, range(10)).mean_by_position,
    )
    sample = sample_tokens(emb, 16, seed=0)
    assert reconstruction_by_position(model, folder, sample).equals(
        reconstruction_by_position(emb, sae, sample)
    )
    assert len(compare_saes(folder, folder, model).status_a) == 24
    pr = prompt((model, folder), [1, 2, 3])
    np.testing.assert_array_equal(
        pr.activations, sae.encode(emb.inputs(torch.tensor([1, 2, 3]), torch.arange(3))).numpy()
    )
    res = train_sae(model, d_sae=8, context=10, steps=3, batch=16, progress=False)
    assert res.sae.d_in == 16
    common = {"steps": 3, "batch": 16, "seeds": 1, "tokens": 16, "progress": False}
    assert (
        len(
            sweep_widths(
                model, context=10, widths=(4, 8), out=tmp_path / "w", curve_points=0, **common
            )
        )
        == 2
    )
    assert len(sweep_context(model, folder, contexts=(12,), out=tmp_path / "c", **common)) > 0


def _refused(model, tmp_path, scheme: str) -> None:
    from posfeat import analyze

    with pytest.raises(PosfeatError, match=scheme) as err:
        load_embeddings(model)
    assert "posfeat can read" not in str(err.value)
    with pytest.raises(PosfeatError, match=scheme):
        analyze(model, _sae_for(tmp_path))


def test_rotary_and_alibi_models_are_refused_naming_their_scheme(tmp_path):
    """Was: a rotary HookedTransformer got "A HookedTransformer object is not a model posfeat can
    read"."""
    tl = pytest.importorskip("transformer_lens")
    for pet, scheme in (("rotary", "rotary"), ("alibi", "ALiBi"), ("shortformer", "shortformer")):
        try:
            cfg = tl.HookedTransformerConfig(
                n_layers=1,
                d_model=16,
                n_ctx=20,
                d_head=8,
                d_vocab=50,
                act_fn="relu",
                positional_embedding_type=pet,
            )
            model = tl.HookedTransformer(cfg)
        except Exception:  # a scheme this TransformerLens cannot build: the others still count
            continue
        _refused(model, tmp_path, scheme)
    llama = transformers.LlamaForCausalLM(
        transformers.LlamaConfig(
            vocab_size=50,
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=2,
            max_position_embeddings=20,
        )
    )
    _refused(llama, tmp_path, "rotary")
    bloom = transformers.BloomForCausalLM(
        transformers.BloomConfig(vocab_size=50, hidden_size=16, n_layer=1, n_head=2)
    )
    _refused(bloom, tmp_path, "ALiBi")


def test_sae_trained_from_an_unnamed_object_records_its_source_never_a_guessed_hub_name(
    tmp_path, offline_cache, capsys
):
    """Was: an SAE trained on GPT2LMHeadModel(GPT2Config()) recorded model_name "gpt2", so posfeat
    analyze --sae went to the hub."""
    import json

    from posfeat import train_sae
    from posfeat.cli import main

    res = train_sae(
        _tiny("gpt2"), d_sae=8, context=10, steps=3, batch=16, progress=False, out=tmp_path / "s"
    )
    cfg = json.loads((tmp_path / "s" / "cfg.json").read_text())
    record = cfg["posfeat_training"]["embeddings"]
    assert cfg["model_name"] == "" and cfg["metadata"]["model_name"] == ""
    assert (
        "GPT2LMHeadModel" in record["source"]
        and "unnamed" in record["source"]
        and record["loadable"] is False
    )
    assert res.sae.meta.model_name in (None, "")
    with pytest.raises(PosfeatError, match="pass that model"):
        load_pair(None, tmp_path / "s")
    assert main(["analyze", "--sae", str(tmp_path / "s"), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "--model" in err and "Cannot get" not in err  # asks for the model; never tries the hub
    # a named source is recorded as its name
    named = train_sae(
        load_embeddings(str(_saved_gpt2(tmp_path))),
        d_sae=8,
        context=10,
        steps=3,
        batch=16,
        progress=False,
    )
    assert named.sae.meta.model_name == str((tmp_path / "gpt2").resolve())


def _saved_gpt2(tmp_path):
    _tiny("gpt2").save_pretrained(tmp_path / "gpt2", safe_serialization=True)
    return tmp_path / "gpt2"
