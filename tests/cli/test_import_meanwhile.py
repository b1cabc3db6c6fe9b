"""``posfeat analyze`` imports its writers (matplotlib, plotly) on a second thread while the engine
runs: what it reads before the work (an output folder's kinds) must not pull them in, and an error
of that import is the main thread's to raise, not a traceback printed from the thread."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

from posfeat.cli.commands import import_meanwhile


def test_output_kinds_are_read_without_the_drawing_libraries():
    code = (
        "import sys, posfeat.outputs, posfeat.outputs.kinds as k; "
        "print(k.ANALYZE.name, 'matplotlib' in sys.modules, 'plotly' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["analyze", "False", "False"]


def test_import_meanwhile_imports_and_leaves_errors_to_the_main_thread(
    tmp_path, monkeypatch, capsys
):
    (tmp_path / "posfeat_test_good_mod.py").write_text("X = 1\n")
    (tmp_path / "posfeat_test_bad_mod.py").write_text("raise ValueError('boom')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in ("posfeat_test_good_mod", "posfeat_test_bad_mod"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    import_meanwhile("posfeat_test_good_mod").join()
    assert sys.modules["posfeat_test_good_mod"].X == 1
    import_meanwhile("posfeat_test_bad_mod").join()
    assert "posfeat_test_bad_mod" not in sys.modules
    assert capsys.readouterr().err == ""  # nothing printed from the thread
    with pytest.raises(ValueError, match="boom"):
        importlib.import_module("posfeat_test_bad_mod")


def test_a_missing_package_makes_the_import_happen_at_once(tmp_path, monkeypatch):
    """Where a package the module needs is not installed, the import is made on the calling thread
    before any work, so its error comes first (a missing matplotlib stops ``posfeat analyze`` before
    the analysis, not after it)."""
    (tmp_path / "posfeat_test_needy_mod.py").write_text("import posfeat_test_absent_pkg\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "posfeat_test_needy_mod", raising=False)
    with pytest.raises(ModuleNotFoundError, match="posfeat_test_absent_pkg"):
        import_meanwhile("posfeat_test_needy_mod", needs=("posfeat_test_absent_pkg",))
    monkeypatch.setitem(sys.modules, "posfeat_test_hidden_pkg", None)  # hidden, as tests hide one
    (tmp_path / "posfeat_test_fine_mod.py").write_text("Y = 2\n")
    monkeypatch.delitem(sys.modules, "posfeat_test_fine_mod", raising=False)
    assert import_meanwhile("posfeat_test_fine_mod", needs=("posfeat_test_hidden_pkg",)) is None
    assert sys.modules["posfeat_test_fine_mod"].Y == 2  # imported at once, on this thread
