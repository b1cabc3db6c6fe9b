"""SAE architectures: the table in posfeat.core.archs is the one source of what an architecture is
and how cfg.json names it."""

from __future__ import annotations

import ast
import json

import pytest
import torch

from posfeat import SAE, PosfeatError, read_sae_folder, write_sae_folder
from posfeat.core.archs import (
    ARCHITECTURES,
    Architecture,
    BatchTopK,
    Gated,
    JumpReLU,
    ReLU,
    TopK,
    architecture,
    architecture_from_cfg,
    from_params,
    trainable,
)
from posfeat.io.config_values import ConfigFile
from posfeat.training.config import ARCHS, TrainConfig

from helpers import REPO, random_pair

SRC = REPO / "src" / "posfeat"
NATIVE = [name for name, cls in ARCHITECTURES.items() if cls.native]


def _pair(name: str, d_sae: int = 16):
    return random_pair(d_sae=d_sae, threshold=name == "jumprelu", k=4 if name == "topk" else None)


def _cfg(**data) -> ConfigFile:
    return ConfigFile(data, "cfg.json")


def test_the_table_holds_each_architecture_once_under_its_own_name():
    assert list(ARCHITECTURES) == ["relu", "topk", "jumprelu", "gated", "batchtopk"]
    assert all(
        issubclass(cls, Architecture) and cls.name == name for name, cls in ARCHITECTURES.items()
    )
    spellings = [pair for cls in ARCHITECTURES.values() for pair in cls.SAELENS]
    assert len(spellings) == len(set(spellings)), "two architectures claim one cfg.json spelling"
    assert NATIVE == ["relu", "topk", "jumprelu"]


def test_trainable_architectures_come_from_the_table():
    assert trainable() == ARCHS == ("relu", "topk")
    assert TrainConfig.__dataclass_fields__["arch"].metadata["choices"] == ARCHS
    assert (
        TrainConfig.__dataclass_fields__["arch"].metadata["help"]
        == "activation: relu (L1 penalty) or topk"
    )
    with pytest.raises(PosfeatError, match=r"arch=jumprelu is unknown; use relu or topk\."):
        TrainConfig(d_sae=8, context=4, arch="jumprelu").validate(None)
    with pytest.raises(PosfeatError, match="invalid for a TopK SAE of width 8"):
        TrainConfig(d_sae=8, context=4, arch="topk", k=9).validate(None)


@pytest.mark.parametrize("name", NATIVE)
def test_each_architecture_round_trips_through_cfg_json(tmp_path, name):
    emb, sae = _pair(name)
    assert sae.architecture == name and isinstance(sae.arch, ARCHITECTURES[name])
    folder = write_sae_folder(sae, tmp_path / name)
    cfg = json.loads((folder / "cfg.json").read_text())
    assert cfg["architecture"] == sae.arch.saelens_name == ARCHITECTURES[name].SAELENS[0][0]
    assert architecture_from_cfg(_cfg(**cfg), "here")[0] is ARCHITECTURES[name]
    back = read_sae_folder(folder)
    assert back.architecture == name and back.k == sae.k and back.separable == sae.separable
    assert (back.threshold is None) == (sae.threshold is None)
    if sae.threshold is not None:
        assert torch.equal(back.threshold, sae.threshold)
    x = emb.W_E[:, None, :] + emb.W_pos[None, :, :]
    assert torch.equal(back.encode(x), sae.encode(x))
    assert torch.equal(back.cut(), sae.cut())


@pytest.mark.parametrize("name", NATIVE)
def test_sae_attributes_read_the_architecture(name):
    _, sae = _pair(name)
    params = sae.arch.params()
    assert sae.k == params.get("k") and (sae.threshold is None) == ("threshold" not in params)
    assert sae.to("cpu") is sae
    pre = torch.randn(5, sae.d_sae)
    assert torch.equal(sae.activate(pre), sae.arch.activate(pre))
    assert torch.equal(sae.arch.activate_(pre.clone()), sae.arch.activate(pre))
    if sae.separable:
        assert sae.subset([1, 3]).architecture == name
    else:
        with pytest.raises(PosfeatError, match="TopK SAE cannot be restricted"):
            sae.subset([1, 3])


@pytest.mark.parametrize(
    "architecture_, activation_fn, expected",
    [
        (None, None, ReLU),  # before sae_lens 6, no architecture key: standard ReLU
        ("standard", None, ReLU),
        ("standard", "relu", ReLU),
        ("relu", "relu", ReLU),
        ("Standard", "ReLU", ReLU),  # case does not matter
        ("topk", None, TopK),
        ("TopK", "relu", TopK),
        ("standard", "topk", TopK),  # before sae_lens 6: a standard SAE with a topk activation
        ("jumprelu", None, JumpReLU),
        ("gated", None, Gated),
    ],
)
def test_saelens_spellings_map_to_their_architecture(architecture_, activation_fn, expected):
    data = {"k": 3} if expected is TopK else {}
    if architecture_ is not None:
        data["architecture"] = architecture_
    if activation_fn is not None:
        data["activation_fn_str"] = activation_fn
    cls, params = architecture_from_cfg(_cfg(**data), "here")
    assert cls is expected and params == ({"k": 3} if expected is TopK else {})


def test_topk_reads_k_from_the_activation_kwargs_of_old_configs_and_refuses_none():
    cfg = _cfg(architecture="standard", activation_fn_str="topk", activation_fn_kwargs={"k": 7})
    assert architecture_from_cfg(cfg, "here") == (TopK, {"k": 7})
    with pytest.raises(PosfeatError, match=r"TopK SAE but its cfg\.json gives no k"):
        architecture_from_cfg(_cfg(architecture="topk"), "here")


def test_refusals_are_one_sentence_naming_what_is_refused():
    with pytest.raises(
        PosfeatError, match=r"'batchtopk'.*save_inference_model .*JumpReLU SAE it becomes"
    ):
        architecture_from_cfg(_cfg(architecture="batchtopk"), "here")
    with pytest.raises(
        PosfeatError,
        match=r"activation_fn 'tanh-relu'.* standard SAE; use a ReLU, TopK, JumpReLU or gated "
        r"SAE\.$",
    ):
        architecture_from_cfg(_cfg(architecture="standard", activation_fn_str="tanh-relu"), "here")
    with pytest.raises(PosfeatError) as err:
        architecture_from_cfg(_cfg(architecture="abstopk"), "here")
    message = str(err.value)
    assert message == (
        "here has architecture 'abstopk', which posfeat does not read (it reads sae_lens's "
        "standard, topk, jumprelu "
        "and gated SAEs, and batchtopk ones as saved); convert it to one of those."
    )


def test_an_unknown_name_is_one_sentence_naming_it_and_the_known_ones():
    assert architecture("topk") is TopK
    with pytest.raises(PosfeatError) as err:
        architecture("abstopk")
    message = str(err.value)
    assert (
        "'abstopk'" in message
        and all(name in message for name in ARCHITECTURES)
        and message.count(".") == 1
    )
    assert "\n" not in message and message.endswith(".")


def test_parameters_choose_the_architecture():
    assert type(from_params()) is ReLU
    assert type(from_params(k=3, threshold=None)) is TopK and from_params(k=3).params() == {"k": 3}
    assert type(from_params(threshold=torch.zeros(2))) is JumpReLU
    with pytest.raises(PosfeatError, match="not both"):
        from_params(k=3, threshold=torch.zeros(2))
    with pytest.raises(
        PosfeatError, match="k is 0; it must be an integer between 1 and d_sae = 16"
    ):
        random_pair(k=0)
    assert BatchTopK.saved_as is JumpReLU and not BatchTopK.native and not Gated.native


def test_an_sae_built_in_python_takes_the_same_arguments_as_before():
    _, relu = random_pair()
    sae = SAE(relu.W_enc, relu.W_dec, relu.b_enc, relu.b_dec, None, 5)
    assert sae.architecture == "topk" and sae.k == 5 and sae.threshold is None and not sae.separable
    assert "architecture='topk'" in repr(sae) and repr(sae.arch) == "TopK(k=5)"


# ---------------------------------------------------------------- the rule stays kept
def _spellings() -> set[str]:
    """Every name an architecture goes by: posfeat's, and sae_lens's architecture and activation_fn
    values."""
    words = {cls.name for cls in ARCHITECTURES.values()}
    words |= {w for cls in ARCHITECTURES.values() for pair in cls.SAELENS for w in pair if w}
    return {w.lower() for w in words}


#: string literals outside core/archs that are equal to an architecture's name but mean something
# else
NOT_ARCHITECTURES = {
    ("io/model_objects.py", "standard"),  # TransformerLens's positional_embedding_type
}


def _outside_archs():
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC).as_posix()
        if not rel.startswith("core/archs/"):
            yield rel, ast.parse(path.read_text())


def test_no_architecture_name_is_spelled_outside_its_module():
    """Architecture names appear as string literals only in posfeat/core/archs: everything else asks
    the table or ``sae.arch`` (a new architecture is then one module and one line in the table)."""
    words = _spellings()
    found = [
        f"{rel}:{node.lineno} {node.value!r}"
        for rel, tree in _outside_archs()
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and node.value.lower() in words
        and (rel, node.value) not in NOT_ARCHITECTURES
    ]
    assert found == []


def test_no_architecture_is_told_by_its_parameters_outside_its_module():
    """No ``sae.k is None`` or ``sae.threshold is not None`` to tell an architecture apart (ask
    ``sae.arch``)."""
    found = []
    for rel, tree in _outside_archs():
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Compare)
                and isinstance(node.left, ast.Attribute)
                and node.left.attr in ("k", "threshold")
                and any(isinstance(op, (ast.Is, ast.IsNot)) for op in node.ops)
            ):
                found.append(f"{rel}:{node.lineno} {ast.unparse(node)}")
    assert found == []
