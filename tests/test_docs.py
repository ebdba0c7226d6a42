"""Run the Examples in every docstring of the package, found by walking it (so that a new module's
examples run without anyone adding it to a list). Modules are imported normally, so op registrations
happen once."""
import doctest
import importlib
import pkgutil

import pytest

import deblur_ops


def _examples(module) -> int:
    finder = doctest.DocTestFinder()
    return sum(len(t.examples) for t in finder.find(module))


def _modules() -> list[str]:
    names = []
    for info in pkgutil.walk_packages(deblur_ops.__path__, prefix="deblur_ops."):
        if info.name.rsplit(".", 1)[-1] in {"_C", "__main__"}:
            continue
        if _examples(importlib.import_module(info.name)):
            names.append(info.name)
    return sorted(names)


MODULES = _modules()


def test_walk_finds_the_package():
    assert {"deblur_ops.ops.nu_conv", "deblur_ops.psf.analytic", "deblur_ops.apps.stack",
            "deblur_ops.restore.irc", "deblur_ops.models.rgdm", "deblur_ops.restore.nu_cg",
            "deblur_ops.train.losses", "deblur_ops.models.wiener_stack_net"} <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0, f"{result.failed} docstring example(s) failed in {name}"


# --- README and docs/: every Python snippet in the README runs, every `deblur` command line in the
# README and docs/ parses with the real CLI (so a renamed command or option fails here).

import re  # noqa: E402
import shlex  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DOC_FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"```(\w+)\n(.*?)```", re.S)


def _blocks(path: Path, language: str) -> list[str]:
    return [body for lang, body in FENCE.findall(path.read_text()) if lang == language]


def _commands(text: str) -> list[str]:
    """`deblur ...` command lines of bash blocks, continuation lines joined, comments dropped."""
    joined = text.replace("\\\n", " ")
    lines = []
    for line in joined.splitlines():
        for part in re.split(r"&&|;", line.split(" #")[0]):
            part = part.strip()
            if part.startswith("deblur "):
                lines.append(part)
    return lines


DOC_COMMANDS = [(p.name, c) for p in DOC_FILES for b in _blocks(p, "bash") for c in _commands(b)]


def test_docs_have_commands():
    assert any(name == "README.md" for name, _ in DOC_COMMANDS)


@pytest.mark.parametrize("where, command", DOC_COMMANDS, ids=[f"{n}:{c[:60]}" for n, c in DOC_COMMANDS])
def test_documented_command_parses(where, command, monkeypatch):
    from deblur_ops.apps import cli

    argv = shlex.split(command)[1:]
    try:
        cli.build_parser().parse_args(argv)
    except SystemExit as exit_:
        pytest.fail(f"{where}: `{command}` does not parse (exit {exit_.code})")


@pytest.mark.parametrize("index", range(len(_blocks(ROOT / "README.md", "python"))))
def test_readme_python_snippet_runs(index, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = _blocks(ROOT / "README.md", "python")[index]
    exec(compile(code, f"README.md python block {index}", "exec"), {"__name__": "__readme__"})
