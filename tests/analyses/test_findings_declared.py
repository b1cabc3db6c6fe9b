"""Each finding is declared once (issue 28): its key is spelled in its own module only, every reader
iterates over ``posfeat.analyses.findings.REGISTRY``, and ``FindingRules`` is the union of the
findings' own rule fields."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd

import posfeat
from posfeat.analyses import findings as F  # noqa: N812
from posfeat.analyses.findings.base import CommonRules, Finding

SRC = Path(posfeat.__file__).resolve().parent

#: Strings spelled like a finding's key that name something else, each with what it names. A new
# entry needs a reason.
OTHER_NAMESPACES = {
    ("helix", "outputs/figures.py"): "the figure figures/helix.png",
    ("helix", "outputs/interactive.py"): "the interactive helix figure's div id",
    ("helix", "outputs/report.py"): "the figure figures/helix.png in the report's section 1",
    (
        "disjoint",
        "analyses/nulls.py",
    ): "the random dictionary's draws of the disjoint share, summary.json['nulls']",
}


def _string_constants(path: Path) -> set[str]:
    """The module's string constants, but for names of other things: ``__all__`` (a function
    ``helix`` computes the finding ``helix``) and a Finding's ``figures=`` (the figure ``helix``
    shows the finding ``helix``)."""
    tree = ast.parse(path.read_text())
    skip = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets
        ):
            skip |= {id(n) for n in ast.walk(node.value)}
        if isinstance(node, ast.keyword) and node.arg == "figures":
            skip |= {id(n) for n in ast.walk(node.value)}
    return {
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip
    }


def _module_path(finding: Finding) -> str:
    return finding.compute.__module__.removeprefix("posfeat.").replace(".", "/") + ".py"


def test_each_finding_key_is_spelled_in_its_own_module_only():
    constants = {
        p.relative_to(SRC).as_posix(): _string_constants(p) for p in sorted(SRC.rglob("*.py"))
    }
    for finding in F.REGISTRY:
        where = {path for path, strings in constants.items() if finding.key in strings}
        others = {path for (key, path) in OTHER_NAMESPACES if key == finding.key}
        assert where - others == {_module_path(finding)}, finding.key
        assert others <= where, (
            f"{others - where} no longer spell {finding.key!r}: drop them from OTHER_NAMESPACES"
        )


def test_the_registry_declares_every_finding_once_in_order():
    assert tuple(f.key for f in F.REGISTRY) == F.FINDINGS
    assert len(set(F.FINDINGS)) == len(F.FINDINGS)
    assert len({_module_path(f) for f in F.REGISTRY}) == len(F.REGISTRY)  # one module per finding
    assert all(isinstance(f, Finding) and f.title and f.note_says and f.number for f in F.REGISTRY)
    assert F.REGISTRY.index(F.HELIX) < F.REGISTRY.index(
        F.DECODER_TRACES_HELIX
    )  # the trace reads the helix's verdict


def test_rule_fields_are_the_findings_own_each_declared_once():
    common = {f.name for f in dataclasses.fields(CommonRules)}
    own = [
        [f.name for f in dataclasses.fields(finding.rules) if f.name not in common]
        for finding in F.REGISTRY
    ]
    flat = [name for names in own for name in names]
    assert len(flat) == len(set(flat)), "a rule field is declared by two findings"
    assert list(F.FindingRules().as_dict()) == [
        *common,
        *flat,
    ]  # summary.json["rules"] keeps its order
    for finding in F.REGISTRY:
        defaults = dataclasses.asdict(finding.rules())
        assert {k: v for k, v in F.FindingRules().as_dict().items() if k in defaults} == defaults


def test_every_finding_is_shown_in_one_report_section_and_its_figures_exist():
    from posfeat.outputs.figures import FIGURES
    from posfeat.outputs.interactive import INTERACTIVE
    from posfeat.outputs.report import SECTIONS, section_findings

    shown = [key for number in range(1, len(SECTIONS) + 1) for key in section_findings(number)]
    assert sorted(shown) == sorted(F.FINDINGS)
    for finding in F.REGISTRY:
        assert set(finding.figures) <= set(FIGURES) | set(INTERACTIVE), finding.key


def test_a_finding_added_to_the_registry_reaches_every_reader(monkeypatch):
    """What docs/design.md's worked example does: a new Finding in the registry is computed, tabled
    and titled."""

    def compute(x, r, earlier):
        verdict = "reproduced" if len(x.features) > 1 else "not reproduced"
        return {
            "verdict": verdict,
            "value": {"rows": len(x.features)},
            "null": None,
            "note_value": "many rows",
            "test": f"rows > 1 at p < {r.null_alpha}",
            "evidence": f"{len(x.features)} rows.",
        }

    planted = Finding(
        key="planted_rows",
        number="8",
        title="Planted: the tables have rows",
        note_says="many rows",
        rules=CommonRules,
        compute=compute,
        headline=lambda v, n: (f"{v['rows']} rows", "none"),
        section=5,
    )
    monkeypatch.setattr(F, "REGISTRY", (planted,))  # alone: the others need real tables
    features = pd.DataFrame({"feature": [0, 1], "kind": ["dead", "dead"]})
    out = F.compute_findings(features, pd.DataFrame({"position": []}), 4, np.zeros(3), (1, 3), "x")
    assert list(out) == ["planted_rows"] and out["planted_rows"]["verdict"] == "reproduced"
    table = F.markdown_table({"planted_rows": out["planted_rows"]})
    assert "| Planted: the tables have rows | **reproduced** | 2 rows | none | many rows |" in table
