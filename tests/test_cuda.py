"""On a CUDA GPU, the engine, the analysis, eval and training agree with the CPU (skipped without a
GPU).

Counts are equal; floats agree to float32 tolerance (the GEMMs run in different orders)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from posfeat import analyze, feature_stats, reconstruction_by_position, sample_tokens, train_sae

from helpers import planted_pair, random_pair

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


def test_feature_stats_cuda_equals_cpu():
    emb, sae = random_pair(d_vocab=300, n_ctx=40, d_model=16, d_sae=64, seed=1)
    cpu = feature_stats(emb, sae, dtype=torch.float64)
    gpu = feature_stats(emb.to("cuda"), sae.to("cuda"), dtype=torch.float64)
    np.testing.assert_array_equal(cpu.fire_by_position, gpu.fire_by_position)
    for name in (
        "mean_by_position",
        "std_by_position",
        "position_share",
        "token_share",
        "top_token_means",
    ):
        np.testing.assert_allclose(
            getattr(gpu, name), getattr(cpu, name), rtol=1e-6, atol=1e-9, err_msg=name
        )


@pytest.mark.parametrize("backend", ["triton", "torch"])
def test_grid_kernels_on_cuda_equal_cpu(backend):
    """The fused Triton kernel (chosen by backend="auto" on CUDA) and the plain-torch path, compiled
    on the GPU."""
    emb, sae = random_pair(d_vocab=500, n_ctx=64, d_model=16, d_sae=96, seed=2)
    cpu = feature_stats(emb, sae, dtype=torch.float64)
    gpu = feature_stats(
        emb.to("cuda"), sae.to("cuda"), dtype=torch.float64, backend=backend, feature_chunk=40
    )
    np.testing.assert_array_equal(cpu.fire_by_position, gpu.fire_by_position)
    for name in (
        "mean_by_position",
        "std_by_position",
        "pre_mean_by_position",
        "position_share",
        "token_share",
        "top_token_means",
    ):
        np.testing.assert_allclose(
            getattr(gpu, name), getattr(cpu, name), rtol=1e-6, atol=1e-9, err_msg=name
        )
    np.testing.assert_allclose(
        gpu.mean_by_token([0, 5]), cpu.mean_by_token([0, 5]), rtol=1e-6, atol=1e-9
    )


def test_analyze_and_eval_cuda_equal_cpu():
    emb, sae, _ = planted_pair()
    a = analyze(emb, sae, tokens_sample=32)
    b = analyze(emb.to("cuda"), sae.to("cuda"), tokens_sample=32)
    assert a.summary["counts"] == b.summary["counts"] and b.summary["device"].startswith("cuda")
    assert list(a.features.kind) == list(b.features.kind) and list(a.features.runs) == list(
        b.features.runs
    )
    np.testing.assert_allclose(a.by_position.fvu, b.by_position.fvu, rtol=1e-4)
    np.testing.assert_array_equal(a.by_position.spurious_pairs, b.by_position.spurious_pairs)
    sample = sample_tokens(emb, 32)
    ec, eg = (
        reconstruction_by_position(emb, sae, sample),
        reconstruction_by_position(emb.to("cuda"), sae.to("cuda"), sample),
    )
    np.testing.assert_allclose(ec.l0, eg.l0)
    np.testing.assert_allclose(ec.fvu, eg.fvu, rtol=1e-4)


def test_a_few_training_steps_on_cuda_track_the_cpu():
    emb, _ = random_pair(d_vocab=64, n_ctx=16, d_model=8)
    kw = {
        "d_sae": 32,
        "context": 12,
        "steps": 50,
        "batch": 128,
        "l1": 0.05,
        "lr": 3e-3,
        "progress": False,
    }
    a = train_sae(emb, **kw)
    b = train_sae(emb.to("cuda"), **kw)
    assert b.sae.device.type == "cuda"
    assert abs(a.log[-1]["fvu"] - b.log[-1]["fvu"]) < 0.05 * a.log[-1]["fvu"] + 1e-3
