"""The bundled pair's outputs are fixed: every CSV and every ``summary.json`` entry but the run's
own (timings, the command line, the time it was made) hash to the digests stored in
``tests/data/bundled_outputs.json``.

A refactor must leave them byte-identical. A deliberate change of a number or a column updates the
store with ``python tests/meta/test_bundled_digest.py --update`` and says why in its commit."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import pytest

STORE = Path(__file__).resolve().parents[1] / "data" / "bundled_outputs.json"
RUN_OWN = ("timings", "command", "created")  # what differs between two runs of the same code

pytestmark = [pytest.mark.realmodel, pytest.mark.slow]


def digests(folder: Path) -> dict[str, str]:
    """sha256 of each CSV's bytes and of each summary.json entry (its JSON text as written, entry by
    entry)."""
    out = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("*.csv"))}
    summary = json.loads((folder / "summary.json").read_text())
    for key, value in summary.items():
        if key not in RUN_OWN:
            text = json.dumps(value, indent=1, allow_nan=True)
            out[f"summary.json:{key}"] = hashlib.sha256(text.encode()).hexdigest()
    return out


def bundled_outputs(folder: Path) -> Path:
    from posfeat import analyze, load_pair

    return analyze(*load_pair(), progress=False).save(folder / "out")


def test_bundled_outputs_are_unchanged(tmp_path, stub_figures):
    got = digests(bundled_outputs(tmp_path))
    want = json.loads(STORE.read_text())
    changed = sorted(k for k in set(got) | set(want) if got.get(k) != want.get(k))
    assert not changed, (
        f"the bundled pair's outputs changed in {changed}; if that is deliberate, run "
        f"`python tests/meta/test_bundled_digest.py --update` and say why in the commit"
    )


def test_the_digest_sees_a_changed_number(tmp_path, stub_figures):
    out = bundled_outputs(tmp_path)
    before = digests(out)
    summary = json.loads((out / "summary.json").read_text())
    summary["counts"] = {**summary["counts"], "positional": summary["counts"]["positional"] + 1}
    (out / "summary.json").write_text(json.dumps(summary))
    with (out / "features.csv").open("a") as f:
        f.write("\n")
    after = digests(out)
    assert {k for k in before if before[k] != after[k]} == {"features.csv", "summary.json:counts"}


if __name__ == "__main__" and sys.argv[1:] == ["--update"]:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        STORE.write_text(json.dumps(digests(bundled_outputs(Path(tmp))), indent=1) + "\n")
    print(f"wrote {STORE}")
