"""The fused CPU kernels of the additive fast path (numba), compiled once and cached on disk.

:func:`bucket_sums`: for each feature (in parallel) and each token, the token's bucket among the
feature's sorted thresholds, three float64 accumulations into that bucket and a check against the
feature's top-k. A lookup table of 16 cells per threshold gives the thresholds below a token's cell;
those of its own cell (nearly always at most three) are counted by three compares. Tokens go in runs
of :data:`RUN`: after a run where many fired, the buckets of the next are found in one pass and
summed in a second, neither branching on the data (a mispredicted branch per token cost more than
the rest of its work); after a quiet run, one pass with a branch on "fires nowhere" (then nearly
always
taken one way): such a token is only counted, the others are bucketed and summed as before. The
sums are added in token order either way, so the result does not depend on the path. It takes the
token parts of a few features at a time, right after the GEMM that made them, so they are read
while still in cache. Nothing of size ``n_tok`` is written unless asked for.

:func:`position_sums`: suffix sums over the buckets give, for every position, the exact count, sum
and variance of the activations over tokens, and the variance over tokens of each token's mean over
positions (a token in bucket ``j`` sums to ``j a + pb[j]`` over positions), in parallel over
features."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import stat
import tempfile
from pathlib import Path
from typing import no_type_check

import numpy as np

try:  # numba is a dependency, but the torch path works without it
    import numba
    from llvmlite import ir
    from numba import float64, int32, njit, prange, types, uint64
    from numba.core import cgutils
    from numba.extending import intrinsic

    HAVE_NUMBA = True
except ImportError:  # pragma: no cover - exercised only where numba is missing
    HAVE_NUMBA = False

log = logging.getLogger(__name__)


def _writable_folder(folder: Path) -> bool:
    """``folder`` exists (or could be made) and this process can create files in it."""
    probe = folder if folder.is_dir() else folder.parent
    return probe.is_dir() and os.access(probe, os.W_OK | os.X_OK)


def _own_private_folder(folder: Path) -> bool:
    """``folder`` is made (0700) or found as a real folder of this user's that no one else can
    write: numba loads what it finds in its cache, so a folder another user could fill is never
    used."""
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = os.lstat(folder)
    except OSError:
        return False
    return (
        stat.S_ISDIR(st.st_mode)
        and st.st_uid == os.geteuid()
        and not st.st_mode & 0o022
        and os.access(folder, os.W_OK | os.X_OK)
    )


def numba_cache_dir() -> tuple[bool, str | None]:
    """``(cache on, folder)``: where numba's compiled kernels are kept, for any user and any
    install.

    ``NUMBA_CACHE_DIR`` when set (the user's choice); else numba's own place beside the sources when
    this process can write there (folder None); else, for a read-only install,
    ``$XDG_CACHE_HOME/posfeat/numba``, ``$HOME/.cache/posfeat/numba`` or
    ``<temp>/posfeat-numba-<uid>``, the first that is this user's own and writable; with none of
    them, no cache (the kernels are compiled in each process, a few seconds).
    ``POSFEAT_NUMBA_CACHE=0`` turns the cache off. Numba would otherwise stop every engine command
    with "cannot cache function" (or, with no HOME, write a folder named ``~`` into the current
    folder)."""
    if os.environ.get("POSFEAT_NUMBA_CACHE", "1") == "0":
        return False, None
    if os.environ.get("NUMBA_CACHE_DIR"):
        return True, os.environ["NUMBA_CACHE_DIR"]
    package = Path(__file__).resolve().parents[1]
    if all(_writable_folder(package / sub / "__pycache__") for sub in ("engine", "analyses")):
        return True, None
    candidates = []
    for var, tail in (
        ("XDG_CACHE_HOME", ("posfeat", "numba")),
        ("HOME", (".cache", "posfeat", "numba")),
    ):
        base = os.environ.get(var, "")
        if base and os.path.isabs(base):
            candidates.append(Path(base, *tail))
    candidates.append(Path(tempfile.gettempdir()) / f"posfeat-numba-{os.geteuid()}")
    for folder in candidates:
        if _own_private_folder(folder):
            return True, str(folder)
    return False, None


#: Whether numba's kernels are cached on disk, and where when not beside the sources (see
# :func:`numba_cache_dir`).
NUMBA_CACHE, NUMBA_CACHE_DIR = numba_cache_dir() if HAVE_NUMBA else (False, None)
if HAVE_NUMBA:
    if NUMBA_CACHE_DIR is not None:
        numba.config.CACHE_DIR = NUMBA_CACHE_DIR
        if not os.environ.get("NUMBA_CACHE_DIR"):
            log.info(
                "posfeat's install is read-only: numba's compiled kernels are cached in %s",
                NUMBA_CACHE_DIR,
            )
    elif not NUMBA_CACHE and os.environ.get("POSFEAT_NUMBA_CACHE", "1") != "0":
        log.info(
            "posfeat's install is read-only and no cache folder of this user's is writable: numba's "
            "kernels are "
            "compiled in each run (set NUMBA_CACHE_DIR to keep them)"
        )


#: The file in each cache folder naming the kernels' sources its files were compiled from.
STAMP = "posfeat-kernels.sha256"


def kernel_sources_digest(package: Path | None = None) -> str:
    """sha256 of the source files of ``posfeat.engine`` and ``posfeat.analyses`` that define numba
    kernels or the helpers they inline (an edit elsewhere leaves the cache alone)."""
    package = package or Path(__file__).resolve().parents[1]
    h = hashlib.sha256()
    for sub in ("engine", "analyses"):
        for path in sorted((package / sub).glob("*.py")):
            text = path.read_bytes()
            if b"@njit" in text or b"@intrinsic" in text:
                h.update(str(path.relative_to(package)).encode() + b"\0" + text + b"\0")
    return h.hexdigest()


def cache_folders(package: Path | None = None, cache_dir: str | None = None) -> list[Path]:
    """The folders numba keeps posfeat's compiled kernels in: beside the sources, or under
    ``cache_dir`` as numba names them there."""
    package = package or Path(__file__).resolve().parents[1]
    if cache_dir is None:
        return [package / sub / "__pycache__" for sub in ("engine", "analyses")]
    from numba.core.caching import _CacheLocator

    return [
        # numba names a folder there by the sources' folder alone (any file in it names the same)
        Path(
            cache_dir, _CacheLocator.get_suitable_cache_subpath(str(package / sub / "__init__.py"))
        )
        for sub in ("engine", "analyses")
    ]


def drop_stale_kernels(folders: list[Path], digest: str) -> int:
    """Remove numba's cached kernels from ``folders`` where they were compiled from other sources
    than ``digest`` names (:data:`STAMP`), and stamp the folders; returns how many files went.

    numba checks a cached kernel against its own file only: a kernel that inlines a helper from
    another module (``extremes`` uses ``screen._dots``) would keep the old helper after that module
    changed, as after a ``git pull`` into an editable install."""
    gone = 0
    for folder in folders:
        stamp = folder / STAMP
        try:
            if stamp.read_text() == digest:
                continue
        except OSError:
            pass
        if not folder.is_dir():
            continue
        for path in folder.iterdir():
            if path.suffix in (".nbi", ".nbc"):
                with contextlib.suppress(OSError):
                    path.unlink()
                    gone += 1
        with contextlib.suppress(OSError):
            stamp.write_text(digest)
    return gone


if NUMBA_CACHE:
    try:
        _gone = drop_stale_kernels(
            cache_folders(cache_dir=NUMBA_CACHE_DIR), kernel_sources_digest()
        )
    except (OSError, ImportError) as _err:  # pragma: no cover - an unreadable install
        log.info("could not check numba's cached kernels against posfeat's sources: %s", _err)
    else:
        if _gone:
            log.info("posfeat's sources changed: %d cached kernel files dropped", _gone)


def _host_gathers() -> bool:
    """Whether numba compiles for this CPU (no ``NUMBA_CPU_NAME``) and it has AVX-512 (``avx512f``:
    16-lane gathers)."""
    if not HAVE_NUMBA or numba.config.CPU_NAME:
        return False
    try:
        from llvmlite import binding

        return binding.get_host_cpu_features().get("avx512f", False)
    except Exception:  # pragma: no cover - an llvmlite without the query
        return False


#: Whether the kernels find buckets 16 token values at a time with AVX-512 gathers
# (:func:`_buckets16`): on the AVX-512 Xeon the dense kernel's bucket pass (60% of its time before)
# went from 3.6 to 2.4 ns per token value and thread.
GATHER = _host_gathers()
#: Token values per gathered step.
GATHER_LANES = 16

#: Tokens per run of the token-top merge (a few KB of each feature's row; the run's top lists fit in
# L2).
TOP_RUN = 2048

#: Cells per threshold of the per-feature lookup table that finds each token's bucket (most cells
# hold no threshold).
CELLS_PER_THRESHOLD = 16

#: Thresholds compared with each token value after its cell's look-up, plus one (the dense kernel's
# padding): a cell of at most ``PAD - 1`` thresholds (nearly all, at 16 cells per threshold) needs
# no loop.
PAD = 4

#: Tokens per run of the dense kernel (their buckets in one pass, then their sums: a few KB, in L1).
RUN = 1024

#: Spare rows of the dense kernel's local table, taking bucket 0's stores in turn (a power of two).
SPARE = 8

#: Share of a run's tokens that must fire for the next run to take the branch-free path (below it, a
# branch on "fires nowhere" is nearly always predicted, and one pass is cheaper than two).
DENSE_SHARE = 0.125

if HAVE_NUMBA:

    @njit(cache=NUMBA_CACHE, boundscheck=False, nogil=True)
    @no_type_check
    def _cell(x, first, scale, C):  # pragma: no cover
        """The cell ``int((x - first) * scale)`` of a threshold or token value, clamped to ``0 ..
        C`` (NaN: 0). A monotone function of ``x`` (clamping keeps it so), with no branch but the
        NaN test, which finite inputs never take."""
        c = min(max((float64(x) - first) * scale, 0.0), float64(C))  # vmaxsd/vminsd
        if c != c:
            c = 0.0
        return uint64(c)

    @njit(cache=NUMBA_CACHE, boundscheck=False, nogil=True)
    @no_type_check
    def _cell_starts(row, C):  # pragma: no cover
        """``start[c]``: thresholds of sorted ``row`` whose cell (:func:`_cell`) is below ``c`` (``c
        = 0..C+1``), ``first`` and ``scale`` of that cell function, and the most thresholds one cell
        holds.

        The cell of a value is a monotone function of it, computed the same way for thresholds and
        token values, so a value's bucket is ``start[c]`` plus the thresholds of its own cell below
        it: exact, with no rounding slack. A span that is zero, too small to divide, infinite or NaN
        gives one cell (a linear scan, still exact)."""
        P = row.shape[0]
        first = float64(row[0])
        span = float64(row[P - 1]) - first
        scale = C / span if 0.0 < span < np.inf else 0.0
        if not scale < 1e300:
            scale = 0.0
        start = np.zeros(C + 2, np.int32)
        for i in range(P):
            start[_cell(row[i], first, scale, C) + uint64(1)] += 1
        most = 0
        for c in range(C + 1):
            most = max(
                most, start[c + 1]
            )  # cell c's own count, before the sum below makes it a start
            start[c + 1] += start[c]
        return start, first, scale, most

    @njit(cache=NUMBA_CACHE, boundscheck=False, nogil=True)
    @no_type_check
    def _push_top(topv, topi, ts, t):  # pragma: no cover
        """Insert token ``t`` with sum ``ts`` into one feature's top K (sums descending, earlier
        tokens first among ties); returns the new K-th sum."""
        K = topv.shape[0]
        j = K - 1
        while j > 0 and topv[j - 1] < ts:
            topv[j] = topv[j - 1]
            topi[j] = topi[j - 1]
            j -= 1
        topv[j] = ts
        topi[j] = t
        return topv[K - 1]

    @njit(cache=NUMBA_CACHE, boundscheck=False, nogil=True)
    @no_type_check
    def _bucket_of(row, start, first, scale, v):  # pragma: no cover
        """The bucket of a token value ``v`` that fires somewhere (``v > row[0]``): how many of the
        sorted thresholds ``row`` lie below it, found through the feature's cell table
        (:func:`_cell_starts`)."""
        P = row.shape[0]
        if v > row[P - 1]:
            return P
        c = _cell(v, first, scale, start.shape[0] - 2)
        lo = start[c]
        end = start[c + uint64(1)]
        while lo < end and row[lo] < v:
            lo += 1
        return lo

    @njit(cache=NUMBA_CACHE, boundscheck=False, nogil=True)
    @no_type_check
    def _merge_token(topv, topi, topvar, t, feat, n, w, pbn, pb2n, P):  # pragma: no cover
        """Token ``t``'s top list (means largest first, the lower feature first among ties) offered
        feature ``feat``, where the token fires at ``n`` of the ``P`` positions with token part
        ``w`` (``pbn``, ``pb2n``: the sums of those positions' parts and of their squares); features
        it does not activate are not offered."""
        K = topv.shape[1]
        mean = (n * w + pbn) / P
        if n == 0 or not (mean > topv[t, K - 1] and mean > 0.0):
            return
        j = K - 1
        while j > 0 and topv[t, j - 1] < mean:
            topv[t, j] = topv[t, j - 1]
            topi[t, j] = topi[t, j - 1]
            topvar[t, j] = topvar[t, j - 1]
            j -= 1
        topv[t, j] = mean
        topi[t, j] = feat
        topvar[t, j] = (n * w * w + 2.0 * w * pbn + pb2n) / P - mean * mean

    @njit(cache=NUMBA_CACHE, boundscheck=False, nogil=True)
    @no_type_check
    def _padded_table(row, C):  # pragma: no cover
        """:func:`_cell_starts` of ``row`` with, in place of the row, the row followed by
        :data:`PAD` infinities (so every look-up past its end finds none below)."""
        P = row.shape[0]
        start, first, scale, most = _cell_starts(row, C)
        rowp = np.empty(P + PAD, row.dtype)
        for i in range(P):  # a loop, not a slice copy (whose error message costs seconds of
            rowp[i] = row[i]  # compiling)
        rowp[P:] = np.inf
        return start, first, scale, rowp, most

    if GATHER:

        @intrinsic
        def _buckets16(
            typingctx, vals, k, start, rowp, first, scale, cmax, lob
        ):  # pragma: no cover - compiled
            """``lob[k:k+16]``: the buckets of ``vals[k:k+16]`` as :func:`_buckets_of`'s three
            compares find them, with
            AVX-512 gathers: the cells in float64 as :func:`_cell` computes them (the same
            operations, so the same cells), ``start`` at them, then the next three thresholds from
            there. ``vals``, ``rowp``: float32 or float64 (both
            contiguous), ``start``: int32, ``lob``: int32."""
            if not (
                isinstance(vals, types.Array)
                and vals.layout == "C"
                and vals.dtype in (types.float32, types.float64)
                and isinstance(rowp, types.Array)
                and rowp.dtype == vals.dtype
                and rowp.layout == "C"
                and isinstance(start, types.Array)
                and start.dtype == types.int32
                and start.layout == "C"
                and isinstance(lob, types.Array)
                and lob.dtype == types.int32
                and lob.layout == "C"
            ):
                return None
            sig = types.void(vals, k, start, rowp, types.float64, types.float64, types.float64, lob)

            def codegen(context, builder, signature, args):
                W = GATHER_LANES
                f64, i32, i64 = ir.DoubleType(), ir.IntType(32), ir.IntType(64)
                el = ir.FloatType() if signature.args[0].dtype == types.float32 else f64
                data = [
                    context.make_array(signature.args[j])(context, builder, args[j]).data
                    for j in (0, 2, 3, 7)
                ]
                vals_p, start_p, rowp_p, lob_p = data
                kk = builder.sext(args[1], i64) if args[1].type != i64 else args[1]

                def vec(t, n=W):
                    return ir.VectorType(t, n)

                def splat(x, n=W):
                    u = builder.insert_element(
                        ir.Constant(vec(x.type, n), ir.Undefined), x, ir.Constant(i32, 0)
                    )
                    return builder.shuffle_vector(
                        u,
                        ir.Constant(vec(x.type, n), ir.Undefined),
                        ir.Constant(vec(i32, n), [0] * n),
                    )

                def gather(base, idx, t, n):  # n lanes of type t at base[idx] (int32 indices)
                    kind = {(32, "i"): "dpi", (32, "f"): "dps", (64, "f"): "dpd"}[
                        (64 if t == f64 else 32, "i" if t == i32 else "f")
                    ]
                    i8p = ir.IntType(8).as_pointer()
                    mask = ir.Constant(vec(ir.IntType(1), n), [1] * n)
                    fnty = ir.FunctionType(vec(t, n), [vec(t, n), i8p, vec(i32, n), mask.type, i32])
                    fn = cgutils.get_or_insert_function(
                        builder.module, fnty, f"llvm.x86.avx512.mask.gather.{kind}.512"
                    )
                    return builder.call(
                        fn,
                        [
                            ir.Constant(vec(t, n), ir.Undefined),
                            builder.bitcast(base, i8p),
                            idx,
                            mask,
                            ir.Constant(i32, 4 if t != f64 else 8),
                        ],
                    )

                v = builder.load(
                    builder.bitcast(builder.gep(vals_p, [kk]), vec(el).as_pointer()),
                    align=4 if el != f64 else 8,
                )
                d = builder.fpext(v, vec(f64)) if el != f64 else v
                c = builder.fmul(
                    builder.fsub(d, splat(args[4])), splat(args[5])
                )  # no contraction: _cell's two roundings
                zero = ir.Constant(vec(f64), [0.0] * W)
                c = builder.select(
                    builder.fcmp_ordered(">", c, zero), c, zero
                )  # below 0, -0.0 and NaN: cell 0
                cm = splat(args[6])
                c = builder.select(builder.fcmp_ordered("<", c, cm), c, cm)
                st = gather(start_p, builder.fptoui(c, vec(i32)), i32, W)
                out = st
                half = W // 2
                for j in range(PAD - 1):
                    idx = builder.add(st, ir.Constant(vec(i32), [j] * W))
                    if el == f64:  # 8 doubles a gather: two halves, joined
                        lo_idx = builder.shuffle_vector(
                            idx, idx, ir.Constant(vec(i32, half), list(range(half)))
                        )
                        hi_idx = builder.shuffle_vector(
                            idx, idx, ir.Constant(vec(i32, half), list(range(half, W)))
                        )
                        r = builder.shuffle_vector(
                            gather(rowp_p, lo_idx, f64, half),
                            gather(rowp_p, hi_idx, f64, half),
                            ir.Constant(vec(i32), list(range(W))),
                        )
                    else:
                        r = gather(rowp_p, idx, el, W)
                    out = builder.add(out, builder.zext(builder.fcmp_ordered("<", r, v), vec(i32)))
                builder.store(
                    out, builder.bitcast(builder.gep(lob_p, [kk]), vec(i32).as_pointer()), align=4
                )
                return context.get_dummy_value()

            return sig, codegen

    else:

        @njit(cache=NUMBA_CACHE, boundscheck=False, nogil=True)
        @no_type_check
        def _buckets16(vals, k, start, rowp, first, scale, cmax, lob):  # pragma: no cover
            """:func:`_buckets16` where the CPU has no AVX-512 gathers: the same buckets, one value
            at a time."""
            C = start.shape[0] - 2
            for j in range(k, k + GATHER_LANES):
                v = vals[j]
                st = uint64(start[_cell(v, first, scale, C)])
                lob[j] = (
                    st
                    + int32(rowp[st] < v)
                    + int32(rowp[st + uint64(1)] < v)
                    + int32(rowp[st + uint64(2)] < v)
                )

    @njit(cache=NUMBA_CACHE, boundscheck=False, nogil=True)
    @no_type_check
    def _buckets_of(vals, n, tab, lob):  # pragma: no cover
        """The bucket of each token value ``vals[:n]`` (thresholds of the table's row strictly below
        it; ``tab``: :func:`_padded_table`) into ``lob``, with no
        branch on the data: a value's cell (:func:`_cell`) gives the thresholds of lower cells, and
        the ones of its own cell below it are counted by comparing it with the next ``PAD - 1``
        thresholds from there (three compares; those of higher cells, and the padding, lie above
        it), 16 values at a time with AVX-512 gathers where the CPU has them (:data:`GATHER`). Cells
        of more thresholds are scanned instead."""
        start, first, scale, rowp, most = tab
        C = start.shape[0] - 2
        one = uint64(1)
        two = uint64(2)
        if most < PAD:
            k0 = 0
            while (
                k0 + GATHER_LANES <= n
            ):  # 16 values at a time (:func:`_buckets16`), then the rest one by one
                _buckets16(vals, k0, start, rowp, first, scale, float64(C), lob)
                k0 += GATHER_LANES
            for k in range(k0, n):
                v = vals[k]
                st = uint64(start[_cell(v, first, scale, C)])
                lob[k] = (
                    st + int32(rowp[st] < v) + int32(rowp[st + one] < v) + int32(rowp[st + two] < v)
                )
        else:
            for k in range(n):
                v = vals[k]
                lo = uint64(start[_cell(v, first, scale, C)])
                while rowp[lo] < v:
                    lo += one
                lob[k] = lo

    @njit(cache=NUMBA_CACHE, boundscheck=False, nogil=True)
    @no_type_check
    def _run_extras(
        vals, t0, n, lob, tsb, limf, best, besti, lo_row, ts_row, want_lim, want_lo, want_tok_sum
    ):  # pragma: no cover
        """What the dense kernel gives only when asked, for one run of tokens (a pass of its own, so
        the sums' pass has no
        branch on these flags): the largest token value at or below ``limf`` (the first among ties;
        returned with its token), each token's bucket and its sum over positions."""
        # loops, not slice copies (whose error message costs seconds of compiling)
        if want_lo:
            for k in range(n):
                lo_row[t0 + k] = lob[k]
        if want_tok_sum:
            for k in range(n):
                ts_row[t0 + k] = tsb[k]
        # the run's largest value at or below the limit (two chains of maxima), then its
        # first token
        if want_lim:
            m0 = -np.inf
            m1 = -np.inf
            for k in range(0, n - 1, 2):
                m0 = max(m0, float64(vals[k]) if vals[k] <= limf else -np.inf)
                m1 = max(m1, float64(vals[k + 1]) if vals[k + 1] <= limf else -np.inf)
            if n % 2:
                m0 = max(m0, float64(vals[n - 1]) if vals[n - 1] <= limf else -np.inf)
            top = max(m0, m1)
            if top > best:
                for k in range(n):
                    if vals[k] <= limf and float64(vals[k]) == top:
                        return float64(
                            vals[k]
                        ), t0 + k  # its own value (of two zeros, top may hold the other sign)
        return best, besti

    @njit(cache=NUMBA_CACHE, boundscheck=False, nogil=True)
    @no_type_check
    def _tally(loc, j, u):  # pragma: no cover
        """Count, sum and sum of squares of the shifted token value ``u`` into row ``j`` of a local
        bucket table (four values a row)."""
        q = uint64(4) * uint64(j)
        loc[q] += 1.0
        loc[q + uint64(1)] += u
        loc[q + uint64(2)] += u * u

    @njit(cache=NUMBA_CACHE, boundscheck=False, nogil=True)
    @no_type_check
    def _add_buckets(acc, f, loc):  # pragma: no cover
        """Add a local table's buckets ``1 ..`` (count, sum, sum of squares; four values a bucket)
        into ``acc[f]``."""
        for j in range(1, acc.shape[1]):
            acc[f, j, 0] += loc[4 * j]
            acc[f, j, 1] += loc[4 * j + 1]
            acc[f, j, 2] += loc[4 * j + 2]

    @njit(cache=NUMBA_CACHE, boundscheck=False, nogil=True)
    @no_type_check
    def _run_dense(
        vals, t0, n, tab, loc, pbf, sh, n0, u0, tmin, topv, topi, lob, tsb
    ):  # pragma: no cover
        """One run of tokens of a feature that fires often: their buckets first
        (:func:`_buckets_of`), then their sums in token order with no branch on the data but a new
        top token (rare). Bucket 0's sums stay in registers (``n0, u0``, returned with the new
        ``tmin``) and the spare rows of ``loc`` take its stores in turn."""
        _buckets_of(vals, n, tab, lob)
        spare = uint64(
            tab[3].shape[0] - PAD + 1
        )  # P + 1 (tab[3]: the padded row): the first spare row of loc
        for k in range(n):
            t = t0 + k
            lo = uint64(lob[k])
            w = float64(vals[k])
            u = w - sh
            z = lo == 0
            n0 += 1.0 if z else 0.0
            u0 += u if z else 0.0
            _tally(loc, (spare + uint64(t & (SPARE - 1))) if z else lo, u)
            ts = pbf[lo] + (
                0.0 if z else float64(lo) * w
            )  # pb[0] = 0; this form compiles to a select
            tsb[k] = ts
            if ts > tmin:
                tmin = _push_top(topv, topi, ts, t)
        return n0, u0, tmin

    @njit(cache=NUMBA_CACHE, boundscheck=False, nogil=True)
    @no_type_check
    def _run_sparse(
        vals, t0, n, tab, loc, pbf, sh, n0, u0, tmin, topv, topi, lob, tsb
    ):  # pragma: no cover
        """:func:`_run_dense` for a run where few tokens fire: one pass, whose branch on "fires
        nowhere" is nearly always taken one way; such a token is only counted, the others are
        bucketed and summed. The same sums, in the same order."""
        start, first, scale, rowp, _ = tab
        row = rowp[: rowp.shape[0] - PAD]
        r0 = row[0]
        for k in range(n):
            t = t0 + k
            v = vals[k]
            w = float64(v)
            lo = 0
            ts = 0.0
            if not v > r0:  # fires at no position
                n0 += 1.0
                u0 += w - sh
            else:
                lo = _bucket_of(row, start, first, scale, v)
                _tally(loc, uint64(lo), w - sh)
                ts = float64(lo) * w + pbf[lo]
            lob[k] = lo
            tsb[k] = ts
            if ts > tmin:
                tmin = _push_top(topv, topi, ts, t)
        return n0, u0, tmin

    @njit(parallel=True, cache=NUMBA_CACHE, boundscheck=False, nogil=True)
    @no_type_check
    def _bucket_kernel(
        at,
        f0,
        s,
        pb,
        shift,
        lim,
        acc,
        topv,
        topi,
        tok_sum,
        want_tok_sum,
        want_lim,
        below_v,
        below_i,
        lo_out,
        want_lo,
    ):  # pragma: no cover
        """Rows ``f0 ..`` of the outputs from the token parts ``at`` ``[F, T]`` of those features (a
        block small enough to be in cache); with ``want_lo``, each token's bucket into ``lo_out[i,
        t]`` (0: it fires nowhere). Each feature's tokens go in runs of :data:`RUN`, through
        :func:`_run_dense` after a run where more than :data:`DENSE_SHARE` of them fired, else
        :func:`_run_sparse` (the same sums either way)."""
        F, T = at.shape
        P = s.shape[1]
        K = topv.shape[1]
        for i in prange(F):
            f = f0 + i
            tab = _padded_table(s[f], CELLS_PER_THRESHOLD * P)
            loc = np.zeros(
                (P + 1 + SPARE) * 4
            )  # count, sum, sum of squares (and a pad) per bucket, then the spare rows
            lob = np.empty(RUN, np.int32)
            tsb = np.empty(RUN)
            ai, pbf, sh = at[i], pb[f], shift[f]
            best, besti, tmin = below_v[f], below_i[f], topv[f, K - 1]
            # tokens in bucket 0 (below every threshold: they fire nowhere, their sum
            # over positions is 0)
            n0 = 0.0
            u0 = 0.0
            dense = True
            for t0 in range(0, T, RUN):
                n = min(RUN, T - t0)
                quiet = n0
                vals = ai[t0 : t0 + n]
                if dense:
                    n0, u0, tmin = _run_dense(
                        vals, t0, n, tab, loc, pbf, sh, n0, u0, tmin, topv[f], topi[f], lob, tsb
                    )
                else:
                    n0, u0, tmin = _run_sparse(
                        vals, t0, n, tab, loc, pbf, sh, n0, u0, tmin, topv[f], topi[f], lob, tsb
                    )
                dense = n - (n0 - quiet) > DENSE_SHARE * n
                if want_lim or want_lo or want_tok_sum:
                    best, besti = _run_extras(
                        vals,
                        t0,
                        n,
                        lob,
                        tsb,
                        lim[f],
                        best,
                        besti,
                        lo_out[i] if want_lo else lo_out[0],
                        tok_sum[f] if want_tok_sum else tok_sum[0],
                        want_lim,
                        want_lo,
                        want_tok_sum,
                    )
            _add_buckets(acc, f, loc)
            acc[f, 0, 0] += n0
            acc[f, 0, 1] += u0
            below_v[f] = best
            below_i[f] = besti

    @njit(parallel=True, cache=NUMBA_CACHE, boundscheck=False, nogil=True)
    @no_type_check
    def _position_kernel(
        acc, order, bsorted, shift, pb, n_tok, count, psum, var, tok_var
    ):  # pragma: no cover
        F, P = order.shape
        cnt = acc[:, :, 0]
        s1 = acc[:, :, 1]
        s2 = acc[:, :, 2]
        for f in prange(F):
            c = 0.0
            a1 = 0.0
            a2 = 0.0
            for j in range(
                P - 1, -1, -1
            ):  # tokens in buckets above j fire at the j-th position in firing order
                c += cnt[f, j + 1]
                a1 += s1[f, j + 1]
                a2 += s2[f, j + 1]
                p = order[f, j]
                k = shift[f] + bsorted[f, j]
                q = c / n_tok
                m1 = a1 / n_tok
                v = a2 / n_tok - m1 * m1 + 2.0 * k * m1 * (1.0 - q) + k * k * q * (1.0 - q)
                count[f, p] = c
                psum[f, p] = a1 + k * c
                var[f, p] = v if v > 0.0 else 0.0
            # each token's sum over positions is ts = j u + c_j in bucket j (u: shifted token value,
            # c_j = j shift + pb[j]); its variance over tokens from the buckets' sums, around the
            # mean (no per-token work, no cancellation)
            tot = 0.0
            for j in range(P + 1):
                tot += j * s1[f, j] + cnt[f, j] * (j * shift[f] + pb[f, j])
            mean = tot / n_tok
            sq = 0.0
            for j in range(P + 1):
                d = j * shift[f] + pb[f, j] - mean
                sq += j * j * s2[f, j] + 2.0 * j * d * s1[f, j] + cnt[f, j] * d * d
            tv = sq / n_tok / (P * P)
            tok_var[f] = tv if tv > 0.0 else 0.0


if HAVE_NUMBA:

    @njit(parallel=True, cache=NUMBA_CACHE, boundscheck=False, nogil=True)
    @no_type_check
    def _token_top_kernel(at, lo, g0, pb, pb2, topv, topi, topvar):  # pragma: no cover
        """Each token's top features so far by exact mean over the set's ``P`` positions (largest
        first, the lower feature first among ties; only features it activates), updated with
        features ``g0 ..`` (rows of ``at``, ``lo``, ``pb``, ``pb2``). Tokens go in runs of
        :data:`TOP_RUN`, one run per thread at a time, each run read row by row (contiguous, so
        prefetched) while its tokens' lists stay in cache."""
        F, T = at.shape
        P = pb.shape[1] - 1
        for run in prange((T + TOP_RUN - 1) // TOP_RUN):
            for i in range(F):
                for t in range(run * TOP_RUN, min(T, run * TOP_RUN + TOP_RUN)):
                    n = lo[i, t]
                    if n > 0:  # fires at some of the positions
                        _merge_token(
                            topv,
                            topi,
                            topvar,
                            t,
                            g0 + i,
                            n,
                            float64(at[i, t]),
                            pb[i, n],
                            pb2[i, n],
                            P,
                        )


def token_top_merge(
    at: np.ndarray,
    lo: np.ndarray,
    g0: int,
    pb: np.ndarray,
    pb2: np.ndarray,
    mean: np.ndarray,
    feature: np.ndarray,
    var: np.ndarray,
) -> None:
    """Update each token's top features (``mean``, ``feature``, ``var`` ``[n_tok, k]``, in place)
    with the features ``g0 .. g0 + len(at)``: ``at`` their token parts ``[F, n_tok]``, ``lo`` each
    token's bucket from :func:`bucket_sums` (``want_lo``), ``pb``/``pb2`` prefix sums of their
    position parts and of their squares in firing order ``[F, n_pos + 1]``."""
    _token_top_kernel(
        at, lo, int(g0), np.ascontiguousarray(pb), np.ascontiguousarray(pb2), mean, feature, var
    )


def set_threads(n: int | None) -> None:
    """Use ``n`` threads in the numba kernels (None: numba's default, all cores)."""
    if HAVE_NUMBA:
        numba.set_num_threads(
            numba.config.NUMBA_NUM_THREADS
            if n is None
            else max(1, min(int(n), numba.config.NUMBA_NUM_THREADS))
        )


_NO_LO = np.zeros((1, 1), np.int32)


def new_sums(FB: int, P: int, T: int, top_k: int, want_tok_sum: bool) -> dict[str, np.ndarray]:
    """The outputs :func:`bucket_sums` fills for a block of ``FB`` features, ``P`` positions and
    ``T`` tokens, empty."""
    k = min(top_k, T)
    return {
        "acc": np.zeros((FB, P + 1, 4)),
        "top_val": np.full((FB, k), -np.inf),
        "top_idx": np.full((FB, k), -1, dtype=np.int64),
        "tok_sum": np.empty((FB, T) if want_tok_sum else (1, 1)),
        "below_val": np.full(FB, -np.inf),
        "below_idx": np.full(FB, -1, np.int64),
    }


def bucket_sums(
    at: np.ndarray,
    s: np.ndarray,
    pb: np.ndarray,
    shift: np.ndarray,
    top_k: int,
    want_tok_sum: bool,
    lim: np.ndarray | None = None,
    *,
    out: dict[str, np.ndarray] | None = None,
    f0: int = 0,
    lo_out: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Bucket token values among sorted thresholds, and keep each feature's top tokens on the way
    (see module docstring).

    Args:
        at: ``Float[ndarray, "F n_tok"]`` token parts of the pre-activation of features ``f0 ..
            f0+F`` of the block.
        s: ``Float[ndarray, "F_block n_pos"]`` each feature's thresholds, sorted ascending (same
            dtype as ``at``).
        pb: ``Float64[ndarray, "F_block n_pos+1"]`` prefix sums of the position parts in that order.
        shift: ``Float64[ndarray, "F_block"]`` subtracted from token values before summing (near
            their mean, so that sums of squares do not cancel).
        top_k: how many tokens with the highest mean to keep.
        want_tok_sum: also return each token's sum over positions.
        lim: ``[F_block]`` (dtype of ``at``): also return ``below_val, below_idx``, the largest
            token value ``<= lim`` and its token (``-inf`` and -1 when none).
        out: the block's outputs from an earlier call (``f0 > 0``), filled further; None: new ones.
        f0: the first feature of ``at`` in the block.
        lo_out: ``Int32[ndarray, "F n_tok"]``: also write each token's bucket there (0: it fires at
            no position).

    Returns ``acc`` ``[F_block, n_pos+1, 4]`` (count, sum, sum of squares of shifted token values
    per
    bucket, and a pad: one cache line's half per bucket); ``top_val, top_idx`` ``[F_block,
    min(top_k, n_tok)]`` (top values are sums over positions); ``tok_sum`` ``[F_block, n_tok]`` when
    asked. Call it with consecutive slices of the block's features (each feature's whole row of
    token values at once), then :func:`position_sums`."""
    T = at.shape[1]
    FB, P = s.shape
    if out is None:
        out = new_sums(FB, P, T, top_k, want_tok_sum)
    lim_arr = (
        np.full(FB, -np.inf, dtype=at.dtype)
        if lim is None
        else np.ascontiguousarray(lim, dtype=at.dtype)
    )
    _bucket_kernel(
        at,
        f0,
        np.ascontiguousarray(s),
        np.ascontiguousarray(pb),
        np.ascontiguousarray(shift, dtype=np.float64),
        lim_arr,
        out["acc"],
        out["top_val"],
        out["top_idx"],
        out["tok_sum"],
        want_tok_sum,
        lim is not None,
        out["below_val"],
        out["below_idx"],
        _NO_LO if lo_out is None else lo_out,
        lo_out is not None,
    )
    return out


def position_sums(
    sums: dict[str, np.ndarray],
    order: np.ndarray,
    bsorted: np.ndarray,
    shift: np.ndarray,
    pb: np.ndarray,
    n_tok: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``count, sum, var`` ``Float64[ndarray, "F n_pos"]`` at every position, and ``tok_var``
    ``[F]`` (population variance over tokens of their mean over positions), from
    :func:`bucket_sums`'s buckets.

    ``order[f, j]``: the position of the ``j``-th smallest threshold; ``bsorted``: the position
    parts in that order; ``pb``: their prefix sums."""
    F, P = order.shape
    count, psum, var, tok_var = np.empty((F, P)), np.empty((F, P)), np.empty((F, P)), np.empty(F)
    _position_kernel(
        sums["acc"],
        np.ascontiguousarray(order, dtype=np.int64),
        np.ascontiguousarray(bsorted, dtype=np.float64),
        np.ascontiguousarray(shift, dtype=np.float64),
        np.ascontiguousarray(pb, dtype=np.float64),
        float(n_tok),
        count,
        psum,
        var,
        tok_var,
    )
    return count, psum, var, tok_var
