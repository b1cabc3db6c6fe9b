"""Every command in README.md and docs/*.md names what exists: each ``posfeat`` subcommand and flag
is one the parser knows (argparse introspection, no command is run), each script or file a command
runs is in the repository, and each Python block compiles and uses only names that ``posfeat``
exports. ``mkdocs build --strict`` (scripts/test) checks the links, images and pages."""

from __future__ import annotations

import argparse
import ast
import re
import shlex
from pathlib import Path

import pytest

import posfeat
from posfeat.cli import build_parser

from helpers import REPO

PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)
INLINE = re.compile(r"`((?:posfeat |python [\w./-]+\.py|bash [\w./-]+)[^`]*)`")
FLAG = re.compile(r"(?<![\w-])(--?[A-Za-z][\w-]*)")


def _blocks(lang: tuple[str, ...]) -> list[tuple[Path, str]]:
    return [
        (page, m.group(2))
        for page in PAGES
        for m in FENCE.finditer(page.read_text())
        if m.group(1) in lang
    ]


def _shell_commands() -> list[tuple[str, str]]:
    """(page, one command): bash lines split at ``&&``, ``;`` and pipes, comments dropped; plus
    inline `posfeat ...` spans."""
    out = []
    for page, code in _blocks(("bash", "sh", "shell", "console")):
        for line in code.replace("\\\n", " ").splitlines():
            line = line.strip().removeprefix("$ ")
            tokens = shlex.split(line, comments=True) if line else []
            cmd: list[str] = []
            for tok in [*tokens, "&&"]:
                if tok in ("&&", ";", "|", "||"):
                    if cmd:
                        out.append((page.name, shlex.join(cmd)))
                    cmd = []
                else:
                    cmd.append(tok)
    for page in PAGES:
        out += [
            (page.name, m.group(1).replace("\\|", "|")) for m in INLINE.finditer(page.read_text())
        ]
    return out


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    return next(
        (a.choices for a in parser._actions if isinstance(a, argparse._SubParsersAction)), {}
    )


def _flags(parser: argparse.ArgumentParser) -> set[str]:
    return {s for a in parser._actions for s in a.option_strings}


def check_posfeat(command: str) -> list[str]:
    """Problems with one ``posfeat ...`` command or synopsis: an unknown subcommand or flag."""
    words = command.split()[1:]
    parser, problems, top = build_parser(), [], True
    while words and _subparsers(parser):
        word = words[0]
        if word.startswith("-") and top:  # top-level flags before the subcommand
            if word not in _flags(parser):
                problems.append(f"unknown flag {word}")
            words = words[1:]
            continue
        if word.startswith("<") or word in ("--help", "-h"):  # `posfeat <command> --help`
            return problems
        choices = _subparsers(parser)
        if word not in choices:
            return [*problems, f"unknown command {word!r} (known: {', '.join(choices)})"]
        parser, words, top = choices[word], words[1:], False
    known = _flags(parser)
    return problems + [f"unknown flag {f}" for f in FLAG.findall(" ".join(words)) if f not in known]


def test_the_checker_catches_unknown_commands_and_flags():
    assert check_posfeat("posfeat analyze --out x --force") == []
    assert check_posfeat("posfeat sweep widths --d-sae 128,256 --seeds 3") == []
    assert check_posfeat("posfeat analyse") and check_posfeat("posfeat analyze --no-such-flag")
    assert check_posfeat("posfeat sweep context --d-sae 5")  # context sweeps take no --d-sae


COMMANDS = _shell_commands()


def test_the_docs_have_commands():
    assert sum(c.startswith("posfeat ") for _, c in COMMANDS) >= 10


def check_ray(words: list[str]) -> list[str]:
    """Problems with one ``ray ...`` command: a subcommand or option the installed Ray's CLI does
    not have."""
    from ray.scripts.scripts import cli

    sub = cli.commands.get(words[1]) if len(words) > 1 else None
    if sub is None:
        return [f"unknown ray command {words[1:2]}"]
    known = {o for p in sub.params for o in (*p.opts, *p.secondary_opts)}
    return [
        f"unknown ray flag {w}"
        for w in words[2:]
        if w.startswith("--") and w.split("=")[0] not in known
    ]


def test_the_ray_checker_catches_unknown_flags():
    pytest.importorskip("ray")
    assert check_ray(["ray", "start", "--head", "--port", "6379", "--num-gpus", "4"]) == []
    assert check_ray(["ray", "start", "--no-such-flag"]) and check_ray(["ray", "begin"])


@pytest.mark.parametrize(("page", "command"), COMMANDS, ids=[f"{p}:{c[:60]}" for p, c in COMMANDS])
def test_each_documented_command_names_what_exists(page, command):
    words = shlex.split(command)
    if re.fullmatch(
        r"[A-Z_][A-Z0-9_]*=.*", words[0]
    ):  # VAR=value posfeat ...: the command after the assignments
        while len(words) > 1 and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", words[0]):
            words = words[1:]
        command = shlex.join(words)
    if words[0] == "ray":
        pytest.importorskip("ray")
        assert check_ray(words) == [], f"{page}: {command}"
    elif words[0] == "posfeat":
        assert check_posfeat(command) == [], f"{page}: {command}"
    elif (
        words[0] in ("python", "bash") and len(words) > 1 and not words[1].startswith("-")
    ):  # python path/to/script.py, bash scripts/test
        script = words[1]
        assert (REPO / script).is_file(), f"{page}: {command}: no file {script}"
    elif words[:3] == ["python", "-m", "posfeat.cli.main"]:
        assert check_posfeat("posfeat " + shlex.join(words[3:])) == [], f"{page}: {command}"


PY_BLOCKS = _blocks(("python", "py"))


@pytest.mark.parametrize(
    ("page", "code"), PY_BLOCKS, ids=[f"{p.name}:{i}" for i, (p, _) in enumerate(PY_BLOCKS)]
)
def test_each_python_block_compiles_and_uses_posfeat_names_that_exist(page, code):
    tree = ast.parse(code, filename=page.name)
    used = {
        n.attr
        for n in ast.walk(tree)
        if isinstance(n, ast.Attribute)
        and isinstance(n.value, ast.Name)
        and n.value.id == "posfeat"
    }
    used |= {
        a.name
        for n in ast.walk(tree)
        if isinstance(n, ast.ImportFrom) and n.module == "posfeat"
        for a in n.names
    }
    missing = sorted(name for name in used if not hasattr(posfeat, name))
    assert missing == [], f"{page.name}: posfeat has no {missing}"


def test_readme_is_a_landing_page_whose_links_resolve():
    text = (REPO / "README.md").read_text()
    assert len(text.encode()) < 12 * 1024
    assert (
        "pip install -c constraints.txt -e . && posfeat analyze" in text
        and "bash scripts/test" in text
    )
    links = re.findall(r"\]\(([^)#\s]+)[^)]*\)", text)
    local = [link for link in links if not re.match(r"[a-z]+:", link)]
    assert "docs/figures/report_first_screen.png" in local and "docs/findings.md" in local
    assert [link for link in local if not (REPO / link).exists()] == []
