"""Issue 30, item 9: ``positions`` means the same in every entry point (an int N is the count
0..N-1; sets are sorted and unique or refused), and every bad argument of the API raises posfeat's
one-sentence error, which is also the matching built-in exception (``PosfeatTypeError`` is a
``TypeError``, ``PosfeatMemoryError`` a ``MemoryError``)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from posfeat import (
    PosfeatError,
    analyze,
    brute_force_stats,
    feature_card,
    feature_stats,
    positional_pca,
    sample_tokens,
    train_sae,
)
from posfeat.analyses.analysis import study_count
from posfeat.cli.flags import positions_arg
from posfeat.core.errors import PosfeatMemoryError, PosfeatOSError, PosfeatTypeError

from helpers import REPO, random_pair

SRC = REPO / "src"


@pytest.fixture(scope="module")
def pair():
    return random_pair()


def test_an_int_is_a_count_in_every_entry_point(pair):
    """``feature_stats(emb, sae, 5)`` used to study position 5 alone while ``analyze(positions=5)``
    and ``--positions 5``
    meant 0..4: a silent wrong result."""
    emb, sae = pair
    expected = list(range(5))
    assert feature_stats(emb, sae, 5).positions.tolist() == expected
    assert feature_stats(emb, sae, np.int64(5)).positions.tolist() == expected
    assert brute_force_stats(emb, sae, 5).positions.tolist() == expected
    assert list(positions_arg("5", emb.n_ctx)) == expected
    assert study_count(5, emb.n_ctx) == 5 and study_count(range(5), emb.n_ctx) == 5
    assert positional_pca(emb.W_pos, 5).positions.tolist() == expected
    assert feature_stats(emb, sae, tokens=5).tokens.tolist() == expected
    # and the count gives the same numbers as the range it stands for
    np.testing.assert_array_equal(
        feature_stats(emb, sae, 5).mean_by_position,
        feature_stats(emb, sae, range(5)).mean_by_position,
    )


BAD = {
    # positions and tokens: sorted and unique, whole numbers, within the model
    "unsorted": (
        lambda e, s: feature_stats(e, s, [3, 1]),
        PosfeatError,
        r"positions=\[3, 1\] is not in increasing order without repeats",
    ),
    "repeated": (lambda e, s: feature_stats(e, s, [1, 1, 2]), PosfeatError, "without repeats"),
    "repeated tokens": (
        lambda e, s: feature_stats(e, s, tokens=[4, 4]),
        PosfeatError,
        r"tokens=\[4, 4\] is not in increasing order",
    ),
    "brute unsorted": (
        lambda e, s: brute_force_stats(e, s, [2, 0]),
        PosfeatError,
        "without repeats",
    ),
    "float count": (
        lambda e, s: feature_stats(e, s, 5.0),
        PosfeatTypeError,
        "positions=5.0 is not a whole number",
    ),
    "float list": (
        lambda e, s: feature_stats(e, s, [0.5, 1.5]),
        PosfeatTypeError,
        "not whole numbers",
    ),
    "bool": (
        lambda e, s: feature_stats(e, s, True),
        PosfeatTypeError,
        "positions=True is not a count or a set",
    ),
    "string": (
        lambda e, s: feature_stats(e, s, "0:5"),
        PosfeatTypeError,
        "positions='0:5' is not a count or a set",
    ),
    "zero count": (
        lambda e, s: feature_stats(e, s, 0),
        PosfeatError,
        "positions=0 is a count outside 1..12",
    ),
    "count past": (
        lambda e, s: feature_stats(e, s, 13),
        PosfeatError,
        "positions=13 is a count outside 1..12",
    ),
    "past": (lambda e, s: feature_stats(e, s, [0, 12]), PosfeatError, "fall outside 0..11"),
    "2-D": (lambda e, s: feature_stats(e, s, [[0, 1]]), PosfeatError, "give one flat list"),
    "analyze not from 0": (
        lambda e, s: analyze(e, s, positions=range(2, 6), progress=False),
        PosfeatError,
        "is not 0..N-1",
    ),
    "analyze float": (
        lambda e, s: analyze(e, s, positions=5.0, progress=False),
        PosfeatTypeError,
        "not a whole number",
    ),
    "analyze share": (
        lambda e, s: analyze(e, s, positional_share="x", progress=False),
        PosfeatTypeError,
        "positional_share='x' is not a share",
    ),
    "pca unsorted": (
        lambda e, s: positional_pca(e.W_pos, [3, 2, 1]),
        PosfeatError,
        "without repeats",
    ),
    # other arguments
    "top_k negative": (
        lambda e, s: feature_stats(e, s, top_k_tokens=-1),
        PosfeatError,
        "top_k_tokens=-1 is below 0",
    ),
    "top_k string": (
        lambda e, s: feature_stats(e, s, top_k_tokens="a"),
        PosfeatTypeError,
        "top_k_tokens='a' is not a whole number",
    ),
    "feature_chunk": (
        lambda e, s: feature_stats(e, s, feature_chunk=0),
        PosfeatError,
        "feature_chunk=0 is below 1",
    ),
    "dtype": (
        lambda e, s: feature_stats(e, s, dtype="float32"),
        PosfeatTypeError,
        "dtype='float32' is not a floating-point torch dtype",
    ),
    "token_chunk": (
        lambda e, s: brute_force_stats(e, s, token_chunk=0),
        PosfeatError,
        "token_chunk=0 is below 1",
    ),
    "card index": (
        lambda e, s: feature_card(e, s, "a"),
        PosfeatTypeError,
        "Feature 'a' is not a feature index",
    ),
    "sample size": (
        lambda e, s: sample_tokens(e, 2.5),
        PosfeatTypeError,
        "The token sample size is 2.5",
    ),
    "train d_sae": (
        lambda e, s: train_sae(e, d_sae="8", context=4, progress=False),
        PosfeatTypeError,
        "d_sae is '8', not a whole number",
    ),
    # what used to escape as NotImplementedError and TypeError
    "meta": (
        lambda e, s: feature_stats(e.to("meta"), s.to("meta")),
        PosfeatError,
        "on the meta device",
    ),
    "meta analyze": (
        lambda e, s: analyze(e.to("meta"), s.to("meta"), progress=False),
        PosfeatError,
        "on the meta device",
    ),
    "meta train": (
        lambda e, s: train_sae(e.to("meta"), d_sae=8, context=4, steps=2, batch=4, progress=False),
        PosfeatError,
        "on the meta device",
    ),
    "train out int": (
        lambda e, s: train_sae(e, d_sae=8, context=4, steps=2, batch=4, out=123, progress=False),
        PosfeatTypeError,
        r"out=123 is not a path \(its type is int\)",
    ),
    "train out bytes": (
        lambda e, s: train_sae(e, d_sae=8, context=4, steps=2, batch=4, out=b"x", progress=False),
        PosfeatTypeError,
        "its type is bytes",
    ),
    "train out NUL": (
        lambda e, s: train_sae(
            e, d_sae=8, context=4, steps=2, batch=4, out="a\x00b", progress=False
        ),
        PosfeatError,
        "holds a NUL character",
    ),
}


def _outcomes(tmp: Path) -> dict[str, dict]:
    """Every case of ``BAD`` run in a fresh interpreter, as a user runs posfeat: without the
    jaxtyping + beartype checks the tests install (which would answer a wrong type first, with their
    own TypeCheckError)."""
    script = f"""
import importlib.util, json, os, sys
sys.path.insert(0, {str(Path(__file__).resolve().parents[1])!r})
spec = importlib.util.spec_from_file_location("arguments", {str(Path(__file__).resolve())!r})
mod = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mod)
pair = mod.random_pair()
out = {{}}
for case, (call, kind, needle) in mod.BAD.items():
    try:
        call(*pair)
        out[case] = {{"raised": None}}
    except BaseException as err:
        out[case] = {{"raised": [c.__name__ for c in type(err).__mro__], "message": str(err), "left": os.listdir(".")}}
print(json.dumps(out))
"""
    env = {**os.environ, "PYTHONPATH": str(SRC), "PYTHONWARNINGS": "ignore"}
    run = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory):
    return _outcomes(tmp_path_factory.mktemp("arguments"))


@pytest.mark.parametrize("case", list(BAD))
def test_every_bad_argument_is_posfeat_s_error_and_the_matching_builtin(case, outcomes):
    _, kind, needle = BAD[case]
    got = outcomes[case]
    assert got["raised"] is not None, f"{case}: no error"
    assert (
        kind.__name__ in got["raised"]
        and "PosfeatError" in got["raised"]
        and "ValueError" in got["raised"]
    ), got
    if kind is PosfeatTypeError:
        assert "TypeError" in got["raised"], got
    text = got["message"]
    assert re.search(needle, text), text
    assert "\n" not in text and text.rstrip().endswith(".") and text.count(". ") <= 1, (
        text
    )  # one sentence
    assert got["left"] == [], got  # nothing written


def test_posfeat_s_errors_are_the_matching_builtins():
    assert (
        issubclass(PosfeatTypeError, TypeError)
        and issubclass(PosfeatMemoryError, MemoryError)
        and issubclass(PosfeatOSError, OSError)
    )
    for cls in (PosfeatTypeError, PosfeatMemoryError, PosfeatOSError):
        assert issubclass(cls, PosfeatError) and issubclass(cls, ValueError)
    with pytest.raises(TypeError):
        feature_stats(*random_pair(), top_k_tokens=None)
    assert torch.equal(torch.arange(3), torch.arange(3))
