"""The fast path equals the brute-force reference on every field, for every case hypothesis can
find."""

from __future__ import annotations

from unittest import mock

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from posfeat import SAE, Embeddings, PosfeatError, brute_force_stats, feature_stats
from posfeat.engine import additive
from posfeat.engine.additive import have_triton
from posfeat.engine.grid_stats import grid_statistics

FIELDS = [
    "mean_by_position",
    "std_by_position",
    "fire_by_position",
    "pre_mean_by_position",
    "mean",
    "fire",
    "positional_score",
    "token_score",
    "top_token_means",
]
SHARES = ["position_share", "token_share", "interaction_share"]


def assert_stats_equal(a, b) -> None:
    for name in FIELDS:
        np.testing.assert_allclose(
            getattr(a, name), getattr(b, name), rtol=1e-5, atol=1e-9, err_msg=name
        )
    for name in SHARES:
        x, y = getattr(a, name), getattr(b, name)
        assert np.array_equal(np.isnan(x), np.isnan(y)), name
        np.testing.assert_allclose(
            np.nan_to_num(x), np.nan_to_num(y), rtol=0, atol=1e-4, err_msg=name
        )
    np.testing.assert_array_equal(a.positions, b.positions)
    np.testing.assert_array_equal(a.tokens, b.tokens)


def assert_token_means_equal(fast, ref) -> None:
    """Every token's mean per feature, and the top tokens as tokens with those means (ties may come
    in any order, so tokens are checked through their means)."""
    feats = list(range(len(fast.mean)))
    ref_means = ref.mean_by_token(feats)
    np.testing.assert_allclose(fast.mean_by_token(feats), ref_means, rtol=1e-5, atol=1e-9)
    cols = np.searchsorted(fast.tokens, fast.top_tokens)
    np.testing.assert_allclose(
        np.take_along_axis(ref_means, cols, 1), fast.top_token_means, rtol=1e-5, atol=1e-9
    )


@st.composite
def instances(draw):
    d_vocab = draw(st.integers(1, 30))
    n_ctx = draw(st.integers(1, 12))
    d_model = draw(st.integers(1, 6))
    d_sae = draw(st.integers(1, 9))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    integer = draw(st.booleans())  # small integers make exact ties (a + b == cut) happen
    if integer:
        W_E = rng.integers(-2, 3, size=(d_vocab, d_model)).astype(np.float64)
        W_pos = rng.integers(-2, 3, size=(n_ctx, d_model)).astype(np.float64)
        W_enc = rng.integers(-1, 2, size=(d_model, d_sae)).astype(np.float64)
        b_enc = rng.integers(-2, 3, size=d_sae).astype(np.float64)
    else:
        W_E = rng.normal(size=(d_vocab, d_model))
        W_pos = rng.normal(size=(n_ctx, d_model))
        W_enc = rng.normal(size=(d_model, d_sae))
        b_enc = rng.normal(size=d_sae)
    if draw(st.booleans()) and d_vocab > 1:  # duplicated tokens: equal token values
        W_E[-1] = W_E[0]
    if draw(st.booleans()):  # a feature that never fires, and one that always fires
        b_enc[0] = -1e6
        if d_sae > 1:
            b_enc[-1] = 1e6
    jump = draw(st.booleans())
    threshold = (
        rng.integers(0, 3, size=d_sae).astype(np.float64)
        if (jump and integer)
        else (rng.random(d_sae) if jump else None)
    )
    b_dec = np.zeros(d_model) if integer else rng.normal(size=d_model) * 0.1
    emb = Embeddings(W_E, W_pos)
    sae = SAE.from_arrays(
        W_enc,
        rng.normal(size=(d_sae, d_model)),
        b_enc,
        b_dec,
        threshold=threshold,
        apply_b_dec_to_input=draw(st.booleans()),
    )
    positions = None
    if draw(st.booleans()):
        positions = sorted(
            set(draw(st.lists(st.integers(0, n_ctx - 1), min_size=1, max_size=n_ctx)))
        )
    tokens = None
    if draw(st.booleans()):
        tokens = sorted(
            set(draw(st.lists(st.integers(0, d_vocab - 1), min_size=1, max_size=d_vocab)))
        )
    return emb, sae, positions, tokens


@given(
    instances(),
    st.sampled_from(["numba", "torch"]),
    st.integers(1, 4),
    st.integers(1, 60),
    st.booleans(),
)
def test_fast_path_matches_brute_force(inst, backend, chunk, sub_elems, screen):
    """Small CPU sub-blocks (``sub_elems // n_tok`` features, at least one) make a block span
    several, as at GPT-2's size; the numba path with and without its bfloat16 screen."""
    emb, sae, positions, tokens = inst
    with (
        mock.patch.object(additive, "SUB_ELEMS", sub_elems),
        mock.patch.object(additive, "SCREEN_ELEMS", sub_elems),
    ):
        fast = feature_stats(
            emb,
            sae,
            positions,
            tokens=tokens,
            top_k_tokens=5,
            dtype=torch.float64,
            backend=backend,
            feature_chunk=chunk,
            screen=screen,
        )
    ref = brute_force_stats(emb, sae, positions, tokens=tokens, top_k_tokens=5)
    assert fast.method == "additive" and ref.method == "enumeration"
    assert_stats_equal(fast, ref)
    assert_token_means_equal(fast, ref)
    n_tok = len(tokens) if tokens else emb.d_vocab
    assert fast.mean_by_token([0]).shape == (1, n_tok)


@given(
    instances(), st.integers(1, 4), st.booleans(), st.sampled_from([torch.float64, torch.float32])
)
def test_never_firing_matches_enumeration(inst, chunk, screen, dtype):
    """The largest token part that fires at no position of the context, per feature (screened or
    not)."""
    emb, sae, positions, _ = inst
    ctx = 1 + (len(positions) if positions else emb.n_ctx) // 2
    (_,), never = grid_statistics(
        emb,
        sae,
        [range(emb.n_ctx)],
        never_firing_context=ctx,
        feature_chunk=chunk,
        screen=screen,
        dtype=dtype,
    )
    x = emb.W_E.double() - (sae.b_dec.double() if sae.apply_b_dec_to_input else 0)
    a = (
        (x @ sae.W_enc.double() + sae.b_enc.double()).to(dtype).double()
    )  # [T, F]: the token parts, at the working precision
    pre = sae.encode_pre((emb.W_E[:, None, :] + emb.W_pos[None, :ctx]).double())
    silent = ~(sae.activate(pre) > 0).any(1)  # [T, F]: fires nowhere inside
    want = torch.where(silent, a, torch.full_like(a, float("-inf"))).max(0).values
    tol = (
        1e-12 if dtype == torch.float64 else 1e-5
    )  # token parts round differently (one GEMM, one dot product): equal to resolution
    np.testing.assert_allclose(never.value, want.numpy(), rtol=tol, atol=tol)
    for f in np.nonzero(never.token >= 0)[0]:
        assert never.value[f] == pytest.approx(float(a[never.token[f], f]), rel=1e-6, abs=1e-6)


@pytest.mark.slow  # Triton's interpreter: about 20 s for the ci profile's 30 examples on 2 cores
@given(instances(), st.integers(1, 4))
def test_triton_kernel_matches_brute_force(inst, chunk):
    """The fused GPU kernel: compiled on a CUDA GPU when there is one, else run through Triton's
    interpreter."""
    if (
        not have_triton()
    ):  # not importorskip: Triton must be first imported by posfeat, which selects its interpreter
        pytest.skip("triton is not installed")
    emb, sae, positions, tokens = inst
    if torch.cuda.is_available():
        emb, sae = emb.to("cuda"), sae.to("cuda")
    fast = feature_stats(
        emb,
        sae,
        positions,
        tokens=tokens,
        top_k_tokens=5,
        dtype=torch.float64,
        backend="triton",
        feature_chunk=chunk,
    )
    ref = brute_force_stats(emb, sae, positions, tokens=tokens, top_k_tokens=5)
    assert_stats_equal(fast, ref)
    assert_token_means_equal(fast, ref)


def test_float32_default_matches_reference(tiny):
    emb, sae = tiny
    assert_stats_equal(feature_stats(emb, sae), brute_force_stats(emb, sae))


def test_topk_goes_through_enumeration(caplog):
    from helpers import random_pair

    emb, sae = random_pair(k=3)
    with caplog.at_level("WARNING"):
        fast = feature_stats(emb, sae, dtype=torch.float64)
    assert "not separable" in caplog.text
    assert fast.method == "enumeration"
    assert_stats_equal(fast, brute_force_stats(emb, sae))


def test_variance_decomposition_matches_its_definition(tiny):
    """The shares equal the textbook two-way ANOVA of the dense activation grid."""
    emb, sae = tiny
    s = feature_stats(emb, sae, dtype=torch.float64)
    grid = sae.encode(emb.W_E.double()[:, None, :] + emb.W_pos.double()[None])  # [T, P, F]
    Y = grid.numpy()
    m = Y.mean((0, 1))
    row = Y.mean(1) - m  # token effects [T, F]
    col = Y.mean(0) - m  # position effects [P, F]
    var = Y.var((0, 1))
    live = var > 0
    np.testing.assert_allclose(s.token_share[live], ((row**2).mean(0) / var)[live], atol=1e-9)
    np.testing.assert_allclose(s.position_share[live], ((col**2).mean(0) / var)[live], atol=1e-9)
    np.testing.assert_allclose(s.std_by_position, Y.std(0).T, atol=1e-9)
    np.testing.assert_allclose(s.positional_score, Y.mean(0).max(0), atol=1e-9)


def test_subset_sae_gives_the_same_statistics(tiny):
    emb, sae = tiny
    full = feature_stats(emb, sae, dtype=torch.float64)
    part = feature_stats(emb, sae.subset([3, 7]), dtype=torch.float64)
    for name in [*FIELDS, *SHARES]:
        np.testing.assert_allclose(
            getattr(part, name), getattr(full, name)[[3, 7]], rtol=1e-12, atol=1e-12, err_msg=name
        )
    from helpers import random_pair

    with pytest.raises(PosfeatError, match="TopK"):
        random_pair(k=2)[1].subset([0])


def test_additive_feature_has_no_interaction():
    """A feature that always fires is exactly additive: interaction share 0."""
    g = torch.Generator().manual_seed(1)
    emb = Embeddings(torch.randn(20, 4, generator=g), torch.randn(7, 4, generator=g))
    sae = SAE.from_arrays(
        torch.randn(4, 1, generator=g),
        torch.randn(1, 4, generator=g),
        torch.tensor([100.0]),
        torch.zeros(4),
    )
    s = feature_stats(emb, sae, dtype=torch.float64)
    assert s.fire[0] == 1.0
    assert s.interaction_share[0] == pytest.approx(0.0, abs=1e-9)
    assert s.position_share[0] + s.token_share[0] == pytest.approx(1.0, abs=1e-9)


def test_dead_feature_has_nan_shares():
    emb = Embeddings(np.ones((5, 3)), np.ones((4, 3)))
    sae = SAE.from_arrays(np.ones((3, 2)), np.ones((2, 3)), np.array([-100.0, 1.0]), np.zeros(3))
    s = feature_stats(emb, sae)
    assert s.fire[0] == 0 and np.isnan(s.position_share[0]) and np.isnan(s.token_share[0])
    assert np.isnan(s.position_share[1])  # constant feature (all inputs equal)


@pytest.mark.parametrize(
    ("build", "needle"),
    [
        (
            lambda: feature_stats(
                Embeddings(np.ones((4, 3)), np.ones((2, 3))),
                SAE.from_arrays(np.ones((5, 2)), np.ones((2, 5)), np.ones(2), np.ones(5)),
            ),
            "d_model",
        ),
        (lambda: Embeddings(np.array([[np.nan, 1.0]]), np.ones((2, 2))), "W_E"),
        (
            lambda: SAE.from_arrays(
                np.ones((3, 2)), np.ones((2, 3)), np.ones(2), np.ones(3), threshold=np.ones(5)
            ),
            "threshold",
        ),
        (
            lambda: feature_stats(
                Embeddings(np.ones((4, 3)), np.ones((2, 3))),
                SAE.from_arrays(np.ones((3, 2)), np.ones((2, 3)), np.ones(2), np.ones(3)),
                positions=[],
            ),
            "empty",
        ),
        (
            lambda: SAE.from_arrays(np.ones((3, 2)), np.ones((3, 2)), np.ones(2), np.ones(3)),
            "W_dec",
        ),
        (lambda: Embeddings(np.ones((4, 3)), np.ones((2, 5))), "W_pos"),
    ],
)
def test_bad_input_raises_value_error_naming_the_array(build, needle):
    with pytest.raises(ValueError, match=needle) as info:
        build()
    assert isinstance(info.value, PosfeatError)
    assert "(" in str(info.value) or "empty" in str(info.value)  # shapes are named


@pytest.mark.parametrize("bias, screened", [(-3.0, True), (0.0, False)])
def test_auto_screen_runs_on_sparse_saes_only_and_changes_nothing(bias, screened):
    """``screen=None`` screens when a sample of features and tokens says few token values may fire
    (a sparse SAE), not for a dense one; either way the statistics are the dense path's."""
    from posfeat.engine import screen as scr_mod

    rng = np.random.default_rng(3)
    emb = Embeddings(rng.normal(size=(400, 16)), rng.normal(size=(24, 16)) * 0.3)
    sae = SAE.from_arrays(
        rng.normal(size=(16, 40)) / 4, rng.normal(size=(40, 16)), np.full(40, bias), np.zeros(16)
    )
    shares = []
    real = scr_mod.estimate_share

    def spy(*a, **k):
        shares.append(real(*a, **k))
        return shares[-1]

    with (
        mock.patch("posfeat.engine.grid_stats.bf16_fast", return_value=True),
        mock.patch("posfeat.engine.grid_stats.estimate_share", spy),
        mock.patch.object(
            scr_mod.Screen, "candidates_of", autospec=True, side_effect=scr_mod.Screen.candidates_of
        ) as used,
        mock.patch.object(additive, "SUB_ELEMS", 400 * 5),
        mock.patch.object(additive, "SCREEN_ELEMS", 400 * 5),
    ):
        (auto, _), never = grid_statistics(
            emb,
            sae,
            [range(12), range(24)],
            never_firing_context=12,
            token_top_k=3,
            dtype=torch.float64,
        )
    (dense, _), never_d = grid_statistics(
        emb,
        sae,
        [range(12), range(24)],
        never_firing_context=12,
        token_top_k=3,
        dtype=torch.float64,
        screen=False,
    )
    assert len(shares) == 1 and (shares[0] <= scr_mod.MAX_CANDIDATE_SHARE) == screened, shares
    assert used.called == screened
    assert_stats_equal(auto, dense)
    np.testing.assert_allclose(never.value, never_d.value, rtol=1e-12)
    np.testing.assert_array_equal(auto.token_top.feature, dense.token_top.feature)


def test_screen_over_many_token_runs_matches_enumeration():
    """More tokens than one run of the screen's kernels (``TOP_RUN``) and many steps of its exact
    dot products (``EXACT_RUN``): the run and step boundaries, which the small instances above never
    cross."""
    from posfeat.engine.kernel import TOP_RUN
    from posfeat.engine.screen import EXACT_RUN

    rng = np.random.default_rng(5)
    n_tok = 2 * TOP_RUN + 3 * EXACT_RUN + 7
    emb = Embeddings(rng.normal(size=(n_tok, 8)), rng.normal(size=(10, 8)) * 0.3)
    sae = SAE.from_arrays(
        rng.normal(size=(8, 12)) / 3, rng.normal(size=(12, 8)), np.full(12, -1.5), np.zeros(8)
    )
    (fast, _), never = grid_statistics(
        emb,
        sae,
        [range(6), range(10)],
        never_firing_context=6,
        token_top_k=3,
        dtype=torch.float64,
        screen=True,
    )
    (dense, _), never_d = grid_statistics(
        emb,
        sae,
        [range(6), range(10)],
        never_firing_context=6,
        token_top_k=3,
        dtype=torch.float64,
        screen=False,
    )
    ref = brute_force_stats(emb, sae, range(6), top_k_tokens=20)
    assert (
        fast.fire.min() > 0 and fast.fire.max() < 0.5
    )  # sparse: most token values are screened out
    assert_stats_equal(fast, ref)
    assert_token_means_equal(fast, ref)
    np.testing.assert_allclose(never.value, never_d.value, rtol=1e-12)
    np.testing.assert_array_equal(never.token, never_d.token)
    np.testing.assert_allclose(fast.token_top.mean, dense.token_top.mean, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("n_tok", [1, 15, 17, 23, 24, 40])
def test_cpu_token_parts_come_from_one_feature_major_gemm(n_tok):
    """The CPU token parts are ``x @ W + b`` for the features asked, the transposed view of a
    feature-major buffer that one GEMM over every token fills (no GEMM of a few rows, which BLAS
    computes another way and can round differently)."""
    from posfeat.engine import grid_stats

    g = torch.Generator().manual_seed(n_tok)
    x, W, b = (
        torch.randn(n_tok, 8, generator=g),
        torch.randn(8, 6, generator=g),
        torch.randn(6, generator=g),
    )
    cols = []
    real = torch.addmm

    def spy(bias, m1, m2, **kw):
        cols.append(m2.shape[1])
        return real(bias, m1, m2, **kw)

    with mock.patch.object(grid_stats.torch, "addmm", spy):
        parts = grid_stats._TokenParts(x)(W, b, 1, 5)
    assert parts.shape == (n_tok, 4) and parts.T.is_contiguous()
    torch.testing.assert_close(parts, x @ W[:, 1:5] + b[1:5])
    assert cols == [n_tok]


@pytest.mark.parametrize("offset", [-0.3, 0.0, 0.3])
def test_the_share_estimate_counts_the_screen_kernels_candidates(offset):
    """The estimate (torch, so a dense SAE's first run compiles no screen kernel) counts what the
    screen kernel takes as candidates on the same sample, from few to many."""
    from posfeat.engine import screen as scr_mod

    if not scr_mod.HAVE_NUMBA:
        pytest.skip("the screen kernel is numba's")
    g = torch.Generator().manual_seed(4)
    x = torch.randn(3000, 24, generator=g)
    W, bias = torch.randn(24, 40, generator=g) / 5, torch.randn(40, generator=g) * 0.1
    row0 = torch.rand(40, generator=g) + offset
    share = scr_mod.estimate_share(x, W, bias, row0)
    idx = (
        torch.randperm(3000, generator=torch.Generator().manual_seed(0))[: scr_mod.ESTIMATE_TOKENS]
        .sort()
        .values
    )
    tok = scr_mod.ScreenInputs.tokens(x[idx])
    blk = scr_mod.ScreenInputs.block(tok, W, bias)
    bits = torch.mm(blk.x_bf, blk.wt_bf.T).view(torch.int16).numpy().view(np.uint16)  # [n, F]
    n, F = bits.shape
    far = np.zeros(n, dtype=np.bool_)
    far[tok["far"]] = True
    cand_n = np.empty(F, np.int64)
    scr_mod._screen_kernel(
        bits,
        *blk.bound(0, F),
        row0.double().numpy() - blk.bias,
        blk.token_terms(0, F),
        far,
        scr_mod.tile_of(F),
        np.empty((F, n), np.int32),
        cand_n,
        np.empty(F),
        np.empty((F, n), np.int32),
        np.empty(F, np.int64),
    )
    assert 0 < cand_n.sum() < F * n or offset != 0.0
    assert share == float(cand_n.sum()) / (F * n)


@pytest.mark.parametrize("offset", [-0.5, 0.0, 0.4])
def test_the_screen_kernels_first_test_changes_nothing(offset):
    """The screen kernel's float32 first test (skip a value below ``_v_floor``) gives the
    candidates, the band and the sure bound of testing every value in full (terms of +inf: no value
    skipped), with tokens of outlying norm (tested in full, and not weakening the others' test), a
    feature whose floor is NaN, and NaN, infinite and zero products; on a partial tile."""
    from posfeat.engine import screen as scr_mod

    if not scr_mod.HAVE_NUMBA:
        pytest.skip("the screen kernel is numba's")
    g = torch.Generator().manual_seed(7)
    n, d, F = 2500, 24, 45
    x = torch.randn(n, d, generator=g)
    x[::500] *= 40.0  # outliers of norm: in far
    W, bias = torch.randn(d, F, generator=g) / 5, torch.randn(F, generator=g) * 0.1
    tok = scr_mod.ScreenInputs.tokens(x)
    blk = scr_mod.ScreenInputs.block(tok, W, bias)
    approx = torch.mm(blk.x_bf, blk.wt_bf.T)
    approx[3, 0], approx[4, 1], approx[5, 2], approx[6, 3] = torch.nan, torch.inf, -torch.inf, 0.0
    bits = approx.view(torch.int16).numpy().view(np.uint16)
    far = np.zeros(n, dtype=np.bool_)
    far[tok["far"]] = True
    assert far[::500].all() and far.sum() <= 2 * scr_mod.OUTLIERS
    floor = torch.rand(F, generator=g).double().numpy() * 2 + offset
    floor[7] = np.nan
    results = []
    for terms in (blk.token_terms(0, F), np.full(F, np.inf)):
        out = (
            np.full((F, n), -1, np.int32),
            np.empty(F, np.int64),
            np.empty(F),
            np.full((F, n), -1, np.int32),
            np.empty(F, np.int64),
        )
        scr_mod._screen_kernel(bits, *blk.bound(0, F), floor, terms, far, 32, *out)
        results.append(out)
    for fast, full in zip(*results):
        np.testing.assert_array_equal(fast, full)
    cand_n, band_n = results[0][1], results[0][4]
    assert 0 < cand_n.sum() < F * n and band_n.sum() > 0


def test_the_rounding_norms_kernel_gives_torchs_norms():
    """:func:`_norms` by numba and by torch: the same bfloat16 rows (values that round to a
    subnormal set to +0, of either sign; NaN and infinite kept), the same norms to float64 rounding
    (both raised by 1e-6 above the exact ones), NaN where a row holds one."""
    from posfeat.engine import screen as scr_mod

    if not scr_mod.HAVE_NUMBA:
        pytest.skip("the kernel is numba's")
    g = torch.Generator().manual_seed(3)
    m = torch.randn(300, 40, generator=g)
    m[0, :4] = torch.tensor([1e-39, -1e-39, 1.1e-38, 3e38])
    m[1, 0], m[2, 3] = torch.nan, torch.inf
    h1, e1, n1 = scr_mod._norms(m)
    h2, e2, n2 = scr_mod._norms(m, kernel=False)
    assert torch.equal(h1.view(torch.int16), h2.view(torch.int16))
    assert h1.view(torch.int16)[0, :2].tolist() == [0, 0]
    np.testing.assert_allclose(e1, e2, rtol=1e-12)
    np.testing.assert_allclose(n1, n2, rtol=1e-12)
    assert np.isnan(e1[1]) and np.isnan(n1[1]) and np.isinf(n1[2])
    hd = h1[3:].double()
    exact_err = (m[3:].double() - hd).norm(dim=1).numpy()
    assert (e1[3:] > exact_err).all() and (n1[3:] > hd.norm(dim=1).numpy()).all()
