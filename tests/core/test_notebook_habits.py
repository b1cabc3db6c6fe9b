"""Notebook and terminal habits: a short repr with a rich HTML view, plotly figures with text/html,
--version, a light import."""

from __future__ import annotations

import subprocess
import sys

import pytest

from posfeat import __version__, analyze
from posfeat.cli import main

from helpers import REPO, planted_pair


@pytest.fixture(scope="module")
def an():
    emb, sae, _ = planted_pair()
    return analyze(emb, sae, tokens_sample=20, progress=False)


def test_repr_is_short_and_html_is_rich(an):
    text = repr(an)
    assert len(text.encode()) < 2048
    assert an.emb.name in text and "positional" in text and all(k in text for k in an.findings)
    html = an._repr_html_()
    assert "<table>" in html and all(f["verdict"] in html for f in an.findings.values())


@pytest.mark.parametrize("name", ["helix_interactive", "profiles_interactive"])
def test_plotly_figures_also_give_text_html(an, name):
    bundle = an.figure(name)._repr_mimebundle_()
    assert (
        "text/html" in bundle and "plotly" in bundle["text/html"] and "<div" in bundle["text/html"]
    )


def test_version_flag(capsys):
    assert (
        main(["--version"]) == 0
    )  # main returns argparse's exit status (it handles every exit itself)
    assert capsys.readouterr().out.strip() == f"posfeat {__version__}"


def test_cli_parser_and_import_posfeat_load_no_heavy_module():
    code = (
        "import sys, posfeat, posfeat.cli; posfeat.cli.build_parser().format_help(); "
        "posfeat.PosfeatError; "
        "print(sorted(m for m in ('torch', 'scipy', 'matplotlib', 'pandas', 'plotly') if m in "
        "sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
        env={"PYTHONPATH": str(REPO / "src"), "PATH": "/usr/bin:/bin"},
    ).stdout
    assert out.strip() == "[]"


def test_lazy_names_resolve_like_eager_ones():
    import posfeat
    import posfeat.core
    from posfeat.outputs import results

    assert posfeat.analyze is results.analyze and "analyze" in dir(posfeat)
    assert posfeat.outputs.__name__ == "posfeat.outputs"  # subpackages too
    with pytest.raises(AttributeError):
        posfeat.no_such_name  # noqa: B018
    assert posfeat.core.Embeddings.__name__ == "Embeddings"


def test_the_quickstart_notebook_has_an_id_per_cell_in_the_file():
    """nbformat 4.5 requires a unique id per cell; nbformat.read fills missing ones in silently, so
    the file itself is read."""
    import json

    nb = json.loads((REPO / "examples" / "quickstart.ipynb").read_text())
    ids = [cell.get("id") for cell in nb["cells"]]
    assert (
        (nb["nbformat"], nb["nbformat_minor"]) >= (4, 5) and all(ids) and len(set(ids)) == len(ids)
    )
