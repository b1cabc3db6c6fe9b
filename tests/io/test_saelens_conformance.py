"""SAELens conformance: every architecture and cfg.json option sae_lens 6.x writes, built and saved
by sae_lens itself.

For each, posfeat either encodes and decodes exactly as ``sae_lens`` does (to 1e-6 of the output's
scale, on the layer-0 grid ``W_E[t] + W_pos[p]`` and on inputs off it), or refuses in one sentence
naming the option. Both the saved folder (``read_sae_folder``) and the in-memory object
(``load_sae(obj)``) are checked. Needs the ``saelens`` extra, which ``scripts/test`` installs.
"""

from __future__ import annotations

import logging
import warnings

import pytest
import torch

from posfeat import PosfeatError, load_pair, load_sae, read_sae_folder

from helpers import random_pair

sae_lens = pytest.importorskip("sae_lens")
from sae_lens import SAE as LensSAE  # noqa: E402, N811
from sae_lens.saes import (  # noqa: E402
    BatchTopKTrainingSAE,
    BatchTopKTrainingSAEConfig,
    GatedSAE,
    GatedSAEConfig,
    JumpReLUSAE,
    JumpReLUSAEConfig,
    StandardSAE,
    StandardSAEConfig,
    TopKSAE,
    TopKSAEConfig,
    TopKTrainingSAE,
    TopKTrainingSAEConfig,
)
from sae_lens.saes.sae import SAEMetadata  # noqa: E402

D_IN, D_SAE, VOCAB, CTX = 16, 48, 40, 12
HOOK = "blocks.0.hook_resid_pre"


def _meta(hook: str = HOOK, **extra) -> SAEMetadata:
    return SAEMetadata(model_name="tiny", hook_name=hook, context_size=8, **extra)


def _randomise(sae, seed: int = 0) -> None:
    """Every parameter random (sae_lens initialises biases at zero, which would hide mistakes)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sae.named_parameters():
            r = torch.randn(p.shape, generator=g, dtype=torch.float64)
            if name == "threshold":
                r = r.abs() * 0.5  # some features pass it, some do not
            elif name == "W_dec":
                r = r * (
                    0.3 + torch.rand(p.shape[0], 1, generator=g, dtype=torch.float64) * 2
                )  # unequal decoder norms
            elif name in ("b_enc", "b_gate", "b_mag"):
                r = r * 0.5 - 0.3
            elif name == "r_mag":
                r = r * 0.3
            p.copy_(r.to(p.dtype))


def _inputs(seed: int = 1) -> dict[str, torch.Tensor]:
    """The whole layer-0 grid of a random model, and random inputs off it."""
    emb, _ = random_pair(d_vocab=VOCAB, n_ctx=CTX, d_model=D_IN, seed=seed)
    grid = (emb.W_E[:, None, :] + emb.W_pos[None, :, :]).reshape(-1, D_IN)
    off = torch.randn(300, D_IN, generator=torch.Generator().manual_seed(seed + 7)) * 2
    return {"grid": grid, "off-grid": off}


def _close(ours: torch.Tensor, ref: torch.Tensor, what: str) -> None:
    ours, ref = ours.double(), ref.detach().double()
    scale = max(1.0, float(ref.abs().max()))
    err = float((ours - ref).abs().max())
    assert err <= 1e-6 * scale, f"{what}: max difference {err:.3g} (scale {scale:.3g})"


def _conforms(ours, ref, dtype: torch.dtype = torch.float32) -> None:
    """posfeat's encode and decode equal sae_lens's on the grid and off it; the support is the
    same."""
    for kind, x in _inputs().items():
        with torch.no_grad():
            f_ref = ref.encode(x.to(dtype))
            f = ours.encode(x)
            _close(f, f_ref, f"encode on {kind}")
            assert torch.equal(f > 0, f_ref > 0), f"support on {kind}"
            _close(ours.decode(f), ref.decode(f_ref), f"decode on {kind}")
            _close(ours.forward(x), ref.decode(ref.encode(x.to(dtype))), f"forward on {kind}")


def _saved(sae, tmp_path, name: str = "sae", inference: bool = False):
    folder = tmp_path / name
    (sae.save_inference_model if inference else sae.save_model)(folder)
    return folder


def _both(lens_sae, tmp_path, **kw):
    """posfeat from the folder sae_lens wrote, posfeat from the object, and sae_lens's own load of
    the folder."""
    folder = _saved(lens_sae, tmp_path)
    return read_sae_folder(folder, **kw), load_sae(lens_sae, **kw), LensSAE.load_from_disk(folder)


def _quiet(fn, *args, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sae_lens's advice on model_from_pretrained_kwargs
        return fn(*args, **kw)


# ---------------------------------------------------------------- architectures read exactly
@pytest.mark.parametrize("apply_b_dec", [True, False])
def test_standard(tmp_path, apply_b_dec):
    lens = StandardSAE(
        StandardSAEConfig(
            d_in=D_IN, d_sae=D_SAE, apply_b_dec_to_input=apply_b_dec, metadata=_meta()
        )
    )
    _randomise(lens)
    folder_sae, obj_sae, loaded = _both(lens, tmp_path)
    for ours in (folder_sae, obj_sae):
        assert ours.architecture == "relu" and ours.apply_b_dec_to_input is apply_b_dec
        assert ours.hook_name == HOOK and ours.context_size == 8
        _conforms(ours, loaded)


@pytest.mark.parametrize("rescale", [False, True])
def test_topk_with_and_without_rescale_acts_by_decoder_norm(tmp_path, rescale):
    lens = TopKSAE(
        TopKSAEConfig(
            d_in=D_IN, d_sae=D_SAE, k=6, rescale_acts_by_decoder_norm=rescale, metadata=_meta()
        )
    )
    _randomise(lens)
    folder_sae, obj_sae, loaded = _both(lens, tmp_path)
    assert loaded.cfg.rescale_acts_by_decoder_norm is rescale
    for ours in (folder_sae, obj_sae):
        assert ours.architecture == "topk" and ours.k == 6
        _conforms(ours, loaded)
        assert (
            any("rescale_acts_by_decoder_norm" in n for n in ours.cfg.get("posfeat_read", []))
            is rescale
        )
    # the friction point: read as a plain TopK SAE, the activations differ (so the test above
    # can fail)
    if rescale:
        plain = TopKSAE(TopKSAEConfig(d_in=D_IN, d_sae=D_SAE, k=6, metadata=_meta()))
        plain.load_state_dict(lens.state_dict())
        x = _inputs()["off-grid"]
        with torch.no_grad():
            assert float((plain.encode(x) - loaded.encode(x)).abs().max()) > 1e-2


def test_topk_as_the_trainer_saves_it(tmp_path):
    """TopKTrainingSAE.save_inference_model folds the decoder norms and keeps
    rescale_acts_by_decoder_norm: true."""
    lens = TopKTrainingSAE(TopKTrainingSAEConfig(d_in=D_IN, d_sae=D_SAE, k=5, metadata=_meta()))
    _randomise(lens)
    folder = _saved(lens, tmp_path, inference=True)
    loaded = LensSAE.load_from_disk(folder)
    assert loaded.cfg.architecture() == "topk" and loaded.cfg.rescale_acts_by_decoder_norm
    _conforms(read_sae_folder(folder), loaded)


def test_jumprelu(tmp_path):
    lens = JumpReLUSAE(JumpReLUSAEConfig(d_in=D_IN, d_sae=D_SAE, metadata=_meta()))
    _randomise(lens)
    folder_sae, obj_sae, loaded = _both(lens, tmp_path)
    for ours in (folder_sae, obj_sae):
        assert ours.architecture == "jumprelu"
        _conforms(ours, loaded)


def test_gated_is_read_as_the_jumprelu_sae_it_equals(tmp_path):
    lens = GatedSAE(GatedSAEConfig(d_in=D_IN, d_sae=D_SAE, metadata=_meta()))
    _randomise(lens)
    folder_sae, obj_sae, loaded = _both(lens, tmp_path)
    for ours in (folder_sae, obj_sae):
        assert ours.architecture == "jumprelu" and any(
            "gated" in n for n in ours.cfg["posfeat_read"]
        )
        _conforms(ours, loaded)


@pytest.mark.parametrize("rescale", [True, False])
def test_batchtopk_as_saved(tmp_path, rescale):
    """sae_lens saves a BatchTopK SAE for inference as a JumpReLU SAE with one threshold for all
    features."""
    lens = BatchTopKTrainingSAE(
        BatchTopKTrainingSAEConfig(
            d_in=D_IN, d_sae=D_SAE, k=4, rescale_acts_by_decoder_norm=rescale, metadata=_meta()
        )
    )
    _randomise(lens)
    lens.topk_threshold = torch.tensor(0.8, dtype=torch.double)
    folder = _saved(lens, tmp_path, inference=True)
    loaded = LensSAE.load_from_disk(folder)
    assert loaded.cfg.architecture() == "jumprelu"
    ours = read_sae_folder(folder)
    assert ours.architecture == "jumprelu"
    _conforms(ours, loaded)
    # saved as a training checkpoint instead, it is refused by name
    lens.save_model(tmp_path / "training")
    with pytest.raises(PosfeatError, match=r"'batchtopk'.*save_inference_model"):
        read_sae_folder(tmp_path / "training")


# ---------------------------------------------------------------- options
@pytest.mark.parametrize("dtype", ["float32", "float64", "bfloat16", "float16"])
def test_dtypes(tmp_path, dtype):
    """posfeat holds every SAE in float32: float32 and float64 SAEs agree with sae_lens computing in
    their own dtype; bfloat16 and float16 weights are read exactly, so they agree with sae_lens
    loading the same folder in float32."""
    lens = StandardSAE(StandardSAEConfig(d_in=D_IN, d_sae=D_SAE, dtype=dtype, metadata=_meta()))
    _randomise(lens)
    folder_sae, obj_sae, native = _both(lens, tmp_path)
    low = dtype in ("bfloat16", "float16")
    ref = LensSAE.load_from_disk(tmp_path / "sae", dtype="float32") if low else native
    for ours in (folder_sae, obj_sae):
        assert torch.equal(ours.W_enc, native.W_enc.float()) or dtype == "float64"
        _conforms(ours, ref, torch.float32 if low else getattr(torch, dtype))


@pytest.mark.parametrize("norm", ["none", "expected_average_only_in"])
def test_normalize_activations_read(tmp_path, norm, caplog):
    """'expected_average_only_in' without its factor: sae_lens's load_from_disk applies no scaling,
    and neither does posfeat (with a warning)."""
    lens = StandardSAE(
        StandardSAEConfig(d_in=D_IN, d_sae=D_SAE, normalize_activations=norm, metadata=_meta())
    )
    _randomise(lens)
    with caplog.at_level(logging.WARNING, logger="posfeat"):
        folder_sae, obj_sae, loaded = _both(lens, tmp_path)
    warned = [r for r in caplog.records if "expected_average_only_in" in r.getMessage()]
    assert len(warned) == (2 if norm != "none" else 0)  # once per load (folder, object)
    for ours in (folder_sae, obj_sae):
        _conforms(ours, loaded)


@pytest.mark.parametrize("norm", ["constant_norm_rescale", "layer_norm", "covariance_whitening"])
def test_normalize_activations_refused(tmp_path, norm):
    lens = StandardSAE(
        StandardSAEConfig(d_in=D_IN, d_sae=D_SAE, normalize_activations=norm, metadata=_meta())
    )
    _randomise(lens)
    folder = _saved(lens, tmp_path)
    for load in (lambda: read_sae_folder(folder), lambda: load_sae(lens)):
        with pytest.raises(PosfeatError, match=f"normalize_activations '{norm}'") as err:
            load()
        assert str(err.value).count(". ") == 0  # one sentence
    if (
        norm != "covariance_whitening"
    ):  # sae_lens really does transform the input: reading it as 'none' would differ
        plain = StandardSAE(StandardSAEConfig(d_in=D_IN, d_sae=D_SAE, metadata=_meta()))
        plain.load_state_dict(lens.state_dict())
        x = _inputs()["off-grid"]
        with torch.no_grad():
            assert float((plain.encode(x) - lens.encode(x)).abs().max()) > 1e-3


def test_hook_names(tmp_path):
    lens = StandardSAE(
        StandardSAEConfig(d_in=D_IN, d_sae=D_SAE, metadata=_meta("blocks.3.hook_resid_pre"))
    )
    _randomise(lens)
    folder = _saved(lens, tmp_path)
    with pytest.raises(PosfeatError, match=r"blocks\.3\.hook_resid_pre"):
        read_sae_folder(folder)
    with pytest.raises(PosfeatError, match=r"blocks\.3\.hook_resid_pre"):
        load_sae(lens)
    ours = read_sae_folder(
        folder, allow_any_hook=True
    )  # read anyway: still exactly sae_lens's numbers
    assert ours.hook_name == "blocks.3.hook_resid_pre"
    _conforms(ours, LensSAE.load_from_disk(folder))


def test_hook_z_refused(tmp_path):
    lens = StandardSAE(
        StandardSAEConfig(
            d_in=D_IN,
            d_sae=D_SAE,
            reshape_activations="hook_z",
            metadata=_meta("blocks.0.attn.hook_z"),
        )
    )
    folder = _saved(lens, tmp_path)
    with pytest.raises(PosfeatError, match="reshape_activations 'hook_z'"):
        read_sae_folder(folder)


@pytest.mark.parametrize(
    "kwargs, centred",
    [
        ({"center_writing_weights": True}, True),
        ({"center_writing_weights": False}, False),
        ({}, False),
        ({"fold_ln": True, "center_unembed": True}, False),
    ],
)
def test_model_from_pretrained_kwargs_centring(tmp_path, kwargs, centred):
    """sae_lens loads the model with from_pretrained_no_processing(**model_from_pretrained_kwargs):
    centred only when it says so."""
    lens = _quiet(
        StandardSAE,
        StandardSAEConfig(
            d_in=D_IN, d_sae=D_SAE, metadata=_meta(model_from_pretrained_kwargs=kwargs)
        ),
    )
    _randomise(lens)
    folder_sae, obj_sae, loaded = _quiet(_both, lens, tmp_path)
    for ours in (folder_sae, obj_sae):
        assert ours.meta.centered is centred
        _conforms(ours, loaded)


def test_centring_mismatch_warns_or_fails_with_strict(tmp_path, caplog):
    """A centred model with an SAE trained uncentred: one warning line; an error with strict=True.
    Matching pairs are silent."""
    emb, _ = random_pair(d_vocab=VOCAB, n_ctx=CTX, d_model=D_IN)
    lens = _quiet(
        StandardSAE,
        StandardSAEConfig(
            d_in=D_IN,
            d_sae=D_SAE,
            metadata=_meta(model_from_pretrained_kwargs={"center_writing_weights": False}),
        ),
    )
    _randomise(lens)
    folder = _saved(lens, tmp_path)
    with caplog.at_level(logging.WARNING, logger="posfeat"):
        load_pair(emb, folder)
        assert not caplog.records
        e2, _ = load_pair(emb.center(), folder)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "\n" not in lines[0] and "centred" in lines[0] and e2.centered
    with pytest.raises(PosfeatError, match="centred"):
        load_pair(emb.center(), folder, strict=True)
    with pytest.raises(PosfeatError, match="center"):
        load_pair(emb, folder, center=True, strict=True)


@pytest.mark.parametrize("arch", ["abstopk", "transcoder", "matching_pursuit"])
def test_other_architectures_refused_by_name(tmp_path, arch):
    from sae_lens.registry import get_sae_class

    cls, cfg_cls = get_sae_class(arch)
    extra = {"d_out": D_IN, "apply_b_dec_to_input": False} if "transcoder" in arch else {}
    try:
        lens = cls(cfg_cls(d_in=D_IN, d_sae=D_SAE, metadata=_meta(), **extra))
    except (
        Exception
    ) as err:  # an architecture this sae_lens cannot build this small: nothing to check
        pytest.skip(f"sae_lens cannot build {arch}: {err}")
    folder = _saved(lens, tmp_path)
    with pytest.raises(PosfeatError, match=f"architecture '{arch}'"):
        read_sae_folder(folder)
