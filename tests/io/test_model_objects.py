"""Model objects in memory load exactly as their saved folders do: tiny transformers GPT-2, OPT and BERT, and a HookedTransformer stand-in."""

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
        cfg = transformers.OPTConfig(vocab_size=50, max_position_embeddings=20, hidden_size=16, word_embed_proj_dim=16, num_hidden_layers=1,
                                     num_attention_heads=2, ffn_dim=32)
        return transformers.OPTForCausalLM(cfg)
    cfg = transformers.BertConfig(vocab_size=50, max_position_embeddings=20, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                  intermediate_size=32)
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
        torch.testing.assert_close(from_obj.W_E, emb + model.embeddings.token_type_embeddings.weight.detach()[0])
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
        self.model_name, self.positional_embedding_type, self.original_architecture = "gpt2-small", pet, "GPT2LMHeadModel"


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
    np.testing.assert_allclose(emb.W_E.numpy(), (obj.W_E - obj.W_E.mean(1, keepdim=True)).numpy(), atol=1e-6)
    emb2, _ = load_pair(_hooked(True), str(tmp_path / "s"))
    assert emb2.centered


def test_an_unknown_object_is_one_sentence():
    with pytest.raises(PosfeatError, match="not a model posfeat can read"):
        load_embeddings(object())
