"""The first run after an install: the numba kernels of the reconstruction and of the feature cards'
histograms compiled in a second process, ahead of use.

numba compiles posfeat's kernels the first time they run and keeps them in its disk cache (see
:mod:`posfeat.engine.kernel`); on a fresh install that is most of the first ``posfeat analyze``. The
grid statistics' kernels are needed at once, the reconstruction's only after the grid statistics are
done. So :func:`start` (called by ``posfeat analyze`` once the pair is loaded) finds whether the
reconstruction's kernels are in the cache yet and, where they are not, says so on one line and
starts ``python -m posfeat.analyses.warmup``: a process that runs
:func:`~posfeat.analyses.length.sample_analysis` once on a tiny random pair of the same dtypes,
compiling those kernels into the cache on a second core while this process compiles and runs the
grid statistics'. :func:`wait` (called by :func:`~posfeat.analyses.analysis.analyze` before the
reconstruction) waits for it, so nothing is compiled twice; the kernels then load from the cache.
The helper's failure costs only time (this process compiles whatever the cache lacks, as before),
and it is ended if this process ends first."""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import select
import subprocess
import sys
import time

log = logging.getLogger(__name__)

_helper: subprocess.Popen[bytes] | None = None


def _kernels_cached(logits: bool = True) -> bool:
    """Whether the reconstruction's kernel (and with ``logits`` the logit effects' selection kernel)
    is in numba's disk cache (or no cache is kept: nothing to share)."""
    from ..engine.kernel import HAVE_NUMBA, NUMBA_CACHE

    if not (HAVE_NUMBA and NUMBA_CACHE):
        return True
    from ..engine import extremes
    from . import reconstruction_kernel as kernels

    try:
        index = [  # numba's own path for each function's cache index
            k._cache._cache_file._index_path
            for k in (kernels._recon_kernel, *([extremes._select_kernel] if logits else []))
        ]
    except AttributeError:  # another numba: assume cached, compile here as before
        return True
    return all(os.path.exists(i) for i in index)


def start(progress: bool = True, logits: bool = True) -> bool:
    """Start compiling the reconstruction's kernels in a second process when they are not cached and
    a second core exists; returns whether it started. One line on standard error says so.
    ``logits``: whether the run will need the logit effects' kernels (a model with an unembedding);
    without, the second process leaves them out (2.9 s of compiling on the AVX-512 Xeon)."""
    global _helper
    if (
        _helper is not None
        or (os.cpu_count() or 1) < 2
        or os.environ.get("POSFEAT_WARMUP", "1") == "0"
        or _kernels_cached(logits)
    ):
        return False
    try:
        _helper = subprocess.Popen(
            [sys.executable, "-m", "posfeat.analyses.warmup", *([] if logits else ["--no-logits"])],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,  # one line as each group of kernels is in the cache
            stderr=subprocess.DEVNULL,
            env={**os.environ, "POSFEAT_WARMUP": "0"},
        )
    except OSError as err:
        log.info(
            "could not start the kernel warm-up process (%s); the kernels are compiled in this one",
            err,
        )
        return False
    atexit.register(_end)
    if progress:
        print(
            "posfeat: compiling numba's kernels, once after an install (2 processes)",
            file=sys.stderr,
            flush=True,
        )
    return True


#: The groups of kernels the warm-up process compiles, in its order; it prints each name once that
# group is in numba's cache.
GROUPS = ("reconstruction", "cards")


def wait(until: str | None = None, timeout: float = 600.0) -> None:
    """Wait for the warm-up process, if one was started (a no-op otherwise): until it says the
    group ``until`` (:data:`GROUPS`) is compiled, or, without one, until it ends. The reconstruction
    needs only its own kernels: it does not wait for the cards' (needed at the report)."""
    global _helper
    if _helper is None:
        return
    t0 = time.monotonic()
    if until is not None and _helper.stdout is not None and os.name != "nt":  # select: no pipes
        # on Windows, which waits for the process to end instead
        fd, buf, said = _helper.stdout.fileno(), b"", False
        while not said and time.monotonic() - t0 < timeout:
            ready, _, _ = select.select([fd], [], [], timeout - (time.monotonic() - t0))
            chunk = os.read(fd, 4096) if ready else b""
            if not chunk:
                break  # the process ended without saying so (or the time is up): see below
            buf += chunk
            said = until.encode() in buf.split(b"\n")
        if said:
            log.info(
                "kernel warm-up: %s compiled after %.1f s of waiting", until, time.monotonic() - t0
            )
            return
    try:
        rc = _helper.wait(max(0.0, timeout - (time.monotonic() - t0)))  # what is left of it
        log.info(
            "kernel warm-up process ended (%s) after %.1f s of waiting", rc, time.monotonic() - t0
        )
    except subprocess.TimeoutExpired:
        _end()
    _helper = None


def _end() -> None:
    if _helper is not None and _helper.poll() is None:
        with contextlib.suppress(OSError):
            _helper.kill()
            _helper.wait(5)


def warm(logits: bool = True) -> None:
    """Run the nulls' kernel, the reconstruction, the cards' exact histograms and (with ``logits``)
    their logit effects' selection once on a tiny random pair shaped like a real one (float32,
    ReLU, b_dec subtracted, positions past the SAE's context), so their kernels land in numba's
    cache."""
    import numpy as np
    import torch

    from ..core.embeddings import Embeddings
    from ..core.sae import SAE
    from ..engine.extremes import _exact, _most_extreme
    from ..engine.histogram import _edge_counts, activation_histograms
    from ..engine.sample import sample_tokens
    from .helix import positional_pca
    from .length import sample_analysis
    from .nulls import _profile_std

    g = torch.Generator().manual_seed(0)
    d_vocab, n_ctx, d_model, d_sae, context = 64, 24, 16, 32, 12
    emb = Embeddings(
        torch.randn(d_vocab, d_model, generator=g),
        torch.randn(n_ctx, d_model, generator=g),
        name="warm-up",
    )
    sae = SAE.from_arrays(
        torch.randn(d_model, d_sae, generator=g),
        torch.randn(d_sae, d_model, generator=g),
        torch.randn(d_sae, generator=g) - 0.5,
        torch.randn(d_model, generator=g) * 0.1,
        context_size=context,
        hook_name="blocks.0.hook_resid_pre",
        name="warm-up",
    )
    # the nulls' kernel first: the main process needs it before the reconstruction's
    a, b = torch.randn(4, 8, generator=g), torch.randn(6, 8, generator=g)
    _profile_std(a, b, (a[:, None, :] + b[None, :, :]).relu_())
    kinds = np.array(["positional", "semantic", "mixed", "dead"] * (d_sae // 4))
    pca = positional_pca(emb.W_pos, range(1, context))
    sample = sample_tokens(emb, 16, seed=0)
    sample_analysis(emb, sae, sample, torch.arange(n_ctx), kinds, pca, context, seed=0)
    print(GROUPS[0], flush=True)  # the main process may start its reconstruction
    # the report's feature cards (last, needed last): their histograms and their logit effects'
    # selection of each row's extremes
    activation_histograms(emb, sae, context)
    for n_tok in (8, 4):  # both of its counting kernels (2 positions x 3 edges: 6 queries)
        _edge_counts(*(torch.randn(2, n, generator=g) for n in (n_tok, 2, 3)))
    if logits:
        _most_extreme(torch.randn(256, 4, generator=g).bfloat16(), 64)
        _exact(torch.randn(64, 16, generator=g), torch.randn(4, 16, generator=g), torch.zeros(4, 8))
    print(GROUPS[1], flush=True)


if __name__ == "__main__":
    warm(logits="--no-logits" not in sys.argv[1:])
