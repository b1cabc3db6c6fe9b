"""The dense CPU kernel equals a plain numpy statement of its sums, bit for bit, across many runs of
tokens.

The grid tests hold the whole engine to the enumeration on tiny grids, where every feature's tokens
fit in one run of the kernel (:data:`~posfeat.engine.kernel.RUN`). Here a feature's tokens span
several runs whose firing share changes from run to run, so both paths of the kernel (branch-free
for a run after one that fired often, one pass for a quiet one) and the switch between them are
taken; cells holding more thresholds than the unrolled compares (ties) take the scan."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from posfeat.engine import kernel

pytestmark = pytest.mark.skipif(not kernel.HAVE_NUMBA, reason="the numba kernels need numba")


@np.errstate(invalid="ignore")  # inf - inf and 0 * inf: NaN, as in the kernel
def reference(
    at: np.ndarray, s: np.ndarray, pb: np.ndarray, shift: np.ndarray, k: int, lim: np.ndarray
) -> dict[str, np.ndarray]:
    """The kernel's outputs by definition: each token's bucket (thresholds strictly below it),
    float64 sums per bucket in
    token order (bucket 0: count and sum only), the top ``k`` sums over positions (the earlier token
    first among ties), the largest value at or below ``lim`` (the first token among ties)."""
    F, T = at.shape
    P = s.shape[1]
    acc = np.zeros((F, P + 1, 4))
    out = {
        "lo": np.zeros((F, T), np.int32),
        "tok_sum": np.zeros((F, T)),
        "top_val": np.zeros((F, min(k, T))),
        "top_idx": np.zeros((F, min(k, T)), np.int64),
        "below_val": np.full(F, -np.inf),
        "below_idx": np.full(F, -1),
    }
    for f in range(F):
        lo = np.where(
            np.isnan(at[f]), 0, np.searchsorted(s[f], at[f], side="left")
        )  # NaN fires nowhere
        w = at[f].astype(np.float64)
        u = w - shift[f]
        for j, x in ((0, np.ones(T)), (1, u), (2, u * u)):
            np.add.at(acc[f, :, j], lo, x)  # in token order, bucket by bucket
        acc[f, 0, 2] = 0.0
        ts = np.where(lo > 0, lo * w + pb[f, lo], 0.0)
        order = np.lexsort((np.arange(T), -ts))[: min(k, T)]
        out["lo"][f], out["tok_sum"][f], out["top_val"][f], out["top_idx"][f] = (
            lo,
            ts,
            ts[order],
            order,
        )
        below = np.flatnonzero(at[f] <= lim[f])
        if (
            below.size and w[below].max() > -np.inf
        ):  # a value above -inf (the kernel starts from -inf and needs a larger one)
            first = below[np.argmax(w[below])]
            out["below_val"][f], out["below_idx"][f] = w[first], first
    out["acc"] = acc
    return out


@st.composite
def rows(draw):
    """Token rows whose firing share changes from run to run, with thresholds that tie (one cell, or
    many, holding several) and token values equal to thresholds."""
    F, P = draw(st.integers(1, 3)), draw(st.integers(1, 40))
    shares = draw(
        st.lists(st.sampled_from([0.0, 0.01, 0.3, 0.9, 1.0]), min_size=1, max_size=4)
    )  # firing share per run
    T = kernel.RUN * (len(shares) - 1) + draw(st.integers(1, kernel.RUN))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    integer = draw(st.booleans())
    s = np.sort(rng.integers(-3, 4, (F, P)) if integer else rng.normal(size=(F, P)), axis=1).astype(
        dtype
    )
    if draw(st.booleans()):
        s[0, :] = s[0, 0]  # every threshold equal: one cell holds all
    cluster = np.empty(0, dtype)
    if P > 1 and draw(
        st.booleans()
    ):  # m distinct thresholds a few ulps apart, in one cell (the unrolled compares' limit)
        m = draw(st.integers(2, min(P, kernel.PAD + 1)))
        cluster = np.array([s[-1, 0]] * m, dtype)
        for j in range(1, m):
            cluster[j] = np.nextafter(cluster[j - 1], np.inf)
        s[-1, :m] = cluster
        s[-1] = np.sort(s[-1])
    at = np.empty((F, T), dtype)
    for r, share in enumerate(shares):
        n = len(at[0, r * kernel.RUN : (r + 1) * kernel.RUN])
        fires = rng.random((F, n)) < share
        above = s[:, -1:] + rng.random((F, n)) * 2 - 1.5  # around and above the thresholds
        below = s[:, :1] - rng.random((F, n)) * 3
        at[:, r * kernel.RUN : r * kernel.RUN + n] = np.where(fires, above, below)
    if integer:
        at = np.round(at).astype(dtype)  # values equal to thresholds
    if draw(
        st.booleans()
    ):  # values no weight should give, which the kernel must still handle as the definition does
        at[:, rng.integers(0, T, size=min(T, 8))] = rng.choice(
            [np.nan, np.inf, -np.inf, 0.0, -0.0], size=(F, min(T, 8))
        )
    at[:, rng.integers(0, T, size=min(T, 5))] = s[
        :, [0]
    ]  # some exactly at the lowest threshold: they fire nowhere
    near = np.concatenate(
        [cluster, np.nextafter(cluster, np.inf)]
    )  # at each clustered threshold, and one ulp above
    at[-1, rng.integers(0, T, size=near.size)] = near
    pb = np.concatenate([np.zeros((F, 1)), np.cumsum(rng.normal(size=(F, P)), axis=1)], axis=1)
    lim = s[:, 0] + rng.normal(size=F)
    finite = np.where(np.isfinite(at), at.astype(np.float64), np.nan)
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a row of no finite value
        shift = np.nan_to_num(np.nanmean(finite, 1)) + 0.25
    return at, s, pb, shift, lim.astype(dtype), draw(st.integers(1, 30))


@given(rows(), st.integers(1, 3))
def test_dense_kernel_equals_its_definition_bit_for_bit(row, sub):
    """Features given ``sub`` at a time (as the engine's sub-blocks do), with every optional output
    asked for, and without."""
    at, s, pb, shift, lim, k = row
    F, T = at.shape
    ref = reference(at, s, pb, shift, k, lim)
    for extras in (True, False):
        out, lo = None, np.zeros((F, T), np.int32)
        for f0 in range(0, F, sub):
            out = kernel.bucket_sums(
                at[f0 : f0 + sub],
                s,
                pb,
                shift,
                k,
                extras,
                lim if extras else None,
                out=out,
                f0=f0,
                lo_out=lo[f0 : f0 + sub] if extras else None,
            )
        same = [
            k
            for k in ("acc", "top_val", "top_idx")
            + (("tok_sum", "below_val", "below_idx") if extras else ())
            if out[k].tobytes() != ref[k].tobytes()
        ]  # bit for bit: the sign of a zero, NaN where the definition has one
        assert not same and (not extras or np.array_equal(lo, ref["lo"])), same


def test_the_largest_value_below_the_limit_is_the_first_tokens_own():
    """Of tied values at or below the limit the first token wins, with its own value: -0.0 here, not
    the 0.0 after it."""
    at = np.array([[-1.0, -1.0, -0.0, -1.0, 0.0]], np.float32)
    s = np.array([[2.0, 3.0]], np.float32)
    out = kernel.bucket_sums(
        at, s, np.zeros((1, 3)), np.zeros(1), 1, False, np.array([0.5], np.float32)
    )
    assert out["below_idx"][0] == 2 and np.signbit(out["below_val"][0])


def test_thresholds_spanning_more_than_a_float_holds():
    """A feature whose thresholds differ by more than the largest float64 (their span overflows to
    infinity): one cell, scanned, and still the count of thresholds below each value; none written
    outside the table."""
    s = np.array([[-1e308, 1e308, 1e308, 1e308]])
    at = np.array([[1.5e308, -np.inf, 0.0, 1e308, np.inf]])
    lo = np.zeros(at.shape, np.int32)
    kernel.bucket_sums(at, s, np.zeros((1, 5)), np.zeros(1), 1, True, lo_out=lo)
    assert lo.tolist() == [[4, 0, 1, 1, 4]]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_buckets_sixteen_at_a_time_equal_the_count_below(dtype):
    """The bucket pass, 16 values at a time (AVX-512 gathers where the CPU has them,
    :data:`~posfeat.engine.kernel.GATHER`;
    else one by one) and the rest singly: each value's bucket is the number of thresholds strictly
    below it, for every length around a multiple of 16, values at thresholds, one ulp off them,
    signed zeros, infinities and NaN (bucket 0)."""
    rng = np.random.default_rng(7)
    row = np.sort(rng.normal(size=37)).astype(dtype)
    tab = kernel._padded_table(row, kernel.CELLS_PER_THRESHOLD * row.size)
    assert tab[4] < kernel.PAD  # the unrolled compares, not the scan
    special = np.array(
        [np.nan, np.inf, -np.inf, 0.0, -0.0, row[0], row[-1], np.nextafter(row[5], np.inf), row[5]],
        dtype,
    )
    for n in (1, 15, 16, 17, 31, 32, 33, 47):
        vals = rng.normal(size=n).astype(dtype) * 1.5
        vals[: min(n, special.size)] = special[: min(n, special.size)]
        lob = np.full(n, -1, np.int32)
        kernel._buckets_of(vals, n, tab, lob)
        want = np.where(np.isnan(vals), 0, np.searchsorted(row, vals, side="left"))
        np.testing.assert_array_equal(lob, want)


def test_cached_kernels_compiled_from_other_sources_are_dropped(tmp_path):
    """numba checks a cached kernel against its own file only, so a kernel inlining a helper from
    another module would keep the old helper after that module changed (a ``git pull`` into an
    editable install): posfeat stamps its cache folders with a digest of its kernels' sources and
    empties a folder whose stamp differs."""
    from posfeat.engine import kernel as kmod

    package = tmp_path / "posfeat"
    for sub in ("engine", "analyses"):
        (package / sub).mkdir(parents=True)
        (package / sub / "k.py").write_text("@njit\ndef f():\n    return 1\n")
    (package / "analyses" / "plain.py").write_text("x = 1\n")
    digest = kmod.kernel_sources_digest(package)
    (package / "analyses" / "plain.py").write_text("x = 2\n")  # no kernel: the same digest
    assert kmod.kernel_sources_digest(package) == digest
    folders = kmod.cache_folders(package, str(tmp_path / "cache"))
    assert len({f.name for f in folders}) == 2
    for f in folders:
        f.mkdir(parents=True)
        (f / "k.f-1.py311.nbi").write_text("index")
        (f / "k.f-1.py311.1.nbc").write_text("code")
        (f / "keep.cpython-311.pyc").write_text("bytecode")
    assert kmod.drop_stale_kernels(folders, digest) == 4  # no stamp yet: not known to match
    assert all(
        sorted(p.name for p in f.iterdir()) == ["keep.cpython-311.pyc", kmod.STAMP] for f in folders
    )
    (folders[0] / "k.f-1.py311.nbi").write_text("index")
    assert kmod.drop_stale_kernels(folders, digest) == 0  # stamped with these sources: kept
    (package / "engine" / "k.py").write_text("@njit\ndef f():\n    return 2\n")
    changed = kmod.kernel_sources_digest(package)
    assert changed != digest
    assert kmod.drop_stale_kernels(folders, changed) == 1
    assert (folders[0] / kmod.STAMP).read_text() == changed
    beside = kmod.cache_folders(package, None)
    assert beside == [package / "engine" / "__pycache__", package / "analyses" / "__pycache__"]
