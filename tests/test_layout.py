"""The package's layout: no import cycle, models/ independent of train/, and the registries' contents.

The import graph is built from the source with ``ast`` (every ``import`` and ``from ... import``,
relative or absolute, at module level or inside functions), so a cycle hidden in a function-level
import is found as well. An import of ``a.b.c`` also runs the package ``__init__`` of ``a.b`` (and
``a``); those implicit edges count too, except to the importer's own packages, which Python has
always started to import before the importer itself.
"""
import ast
import json
import subprocess
import sys
from pathlib import Path

import deblur_ops

ROOT = Path(deblur_ops.__file__).parent
# Built from csrc/ by setup.py; a compiled module with no Python source and no imports of the package.
COMPILED = {"deblur_ops._C"}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _sources() -> dict[str, Path]:
    return {_module_name(p): p for p in ROOT.rglob("*.py")}


def _packages_above(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def _imported(node, package: str, known: set[str]) -> list[str]:
    """The deblur_ops modules one import statement names (a name imported from a package is the
    submodule when there is one, else the package whose namespace holds it)."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    elif isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:
            parts = package.split(".")
            base = ".".join(parts[:len(parts) - node.level + 1] + ([node.module] if node.module else []))
        names = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
    else:
        return []
    found = []
    for name in names:
        if name.split(".")[0] != "deblur_ops":
            continue
        while name not in known:  # ``import deblur_ops.x.y`` of an attribute: its module
            name = name.rpartition(".")[0]
        found.append(name)
    return found


def import_graph() -> dict[str, set[str]]:
    """module -> the deblur_ops modules that importing it runs (named ones and their packages)."""
    sources = _sources()
    known = set(sources) | COMPILED
    graph = {name: set() for name in known}
    for name, path in sources.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            for target in _imported(node, package, known):
                implicit = [p for p in _packages_above(target) if p not in _packages_above(name)]
                graph[name].update(t for t in [target, *implicit] if t != name)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan's algorithm)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_cycle_finder_sees_a_cycle_through_a_function_level_import(tmp_path):
    fake = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(fake) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
    source = "def f():\n    from ..train import loop\n"
    node = next(n for n in ast.walk(ast.parse(source)) if isinstance(n, ast.ImportFrom))
    assert _imported(node, "deblur_ops.models", {"deblur_ops.train", "deblur_ops.train.loop"}) == \
        ["deblur_ops.train.loop"]


def test_the_graph_holds_the_known_edges():
    graph = import_graph()
    assert "deblur_ops.models.rgdm" in graph["deblur_ops.train.rgdm"]
    assert "deblur_ops.restore" in graph["deblur_ops.models.rgdm"]  # through ..restore.baselines
    assert "deblur_ops.models.blind_irc" in graph["deblur_ops.models.methods"]  # a function-level import


def test_no_import_cycle():
    assert cycles(import_graph()) == []


def test_models_do_not_import_train():
    graph = import_graph()
    offending = {m: sorted(t for t in targets if t == "deblur_ops.train" or t.startswith("deblur_ops.train."))
                 for m, targets in graph.items() if m == "deblur_ops.models" or m.startswith("deblur_ops.models.")}
    assert {m: t for m, t in offending.items() if t} == {}


# The registries as they were before the recipes left the model files (issue 15); moving code must
# not add or lose an entry (sv_richardson_lucy, tv-irc, pnp and irc-pnp are the methods added since, on purpose).
METHODS = ["admm_tv", "autoencoder", "blind", "blind-irc", "gradient-descent", "irc", "irc-net", "irc-pnp", "madn", "nu_cg", "pnp", "rgdm",
           "richardson_lucy", "sv_richardson_lucy", "tv-irc", "wiener", "wiener-bilateral", "wiener-stack-net"]
RECIPES = ["autoencoder", "blind", "irc", "madn", "motion", "rgdm", "wiener-stack-net"]
PRETRAINED = ["autoencoder", "blind-irc", "irc-motion", "madn", "motion-net", "rgdm", "wiener-stack-net"]


def test_registries_after_importing_the_package():
    # A new interpreter, so that nothing this session imported fills a registry: methods and weights
    # must be there after ``import deblur_ops`` alone, the recipes after ``import deblur_ops.train``.
    code = ("import contextlib, io, json, deblur_ops\n"
            "methods, pretrained = sorted(deblur_ops.methods()), sorted(deblur_ops.models.PRETRAINED)\n"
            "import deblur_ops.train\n"
            "recipes = sorted(deblur_ops.train.RECIPES)\n"
            "from deblur_ops.apps.cli import main\n"
            "listing = io.StringIO()\n"
            "with contextlib.redirect_stdout(listing):\n"
            "    main(['train', '--list'])\n"
            "print(json.dumps([methods, pretrained, recipes, [line.split()[0] for line in listing.getvalue().splitlines()]]))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT.parent)
    methods, pretrained, recipes, listed = json.loads(done.stdout)
    assert methods == METHODS
    assert pretrained == PRETRAINED
    assert recipes == RECIPES
    assert listed == RECIPES  # what `deblur train --list` shows


# Private modules every subpackage may use: the compiled extension and its loader.
SHARED_PRIVATE = {"deblur_ops._extension", "deblur_ops._C"}


def _is_private(part: str) -> bool:
    return part.startswith("_") and not part.startswith("__")


def _owner_package(dotted: str, packages: set[str]) -> str | None:
    """The package a private name lives in (``a.b._mod.x`` -> ``a.b``; ``a.b.mod._x`` -> ``a.b``),
    or None when nothing on the path is private or the private part is shared."""
    parts = dotted.split(".")
    for i, part in enumerate(parts):
        if _is_private(part):
            if ".".join(parts[:i + 1]) in SHARED_PRIVATE:
                return None
            holder = ".".join(parts[:i])
            return holder if holder in packages else holder.rpartition(".")[0]
    return None


def private_imports(roots=(ROOT, ROOT.parent / "napari_deblur")) -> list[str]:
    """``module: dotted.name`` for every underscore name a module takes from another package:
    ``from pkg._private import x``, ``from pkg.mod import _x``, ``import pkg._private`` and
    ``mod._x`` on a module bound by an import (``from .. import boundary; boundary._x``)."""
    sources = {}
    for root in roots:
        for path in root.rglob("*.py"):
            parts = list(path.relative_to(root.parent).with_suffix("").parts)
            sources[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    packages = {name for name, path in sources.items() if path.name == "__init__.py"}
    known = set(sources) | COMPILED
    found = []
    for name, path in sorted(sources.items()):
        package = name if name in packages else name.rpartition(".")[0]
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        modules = {}  # local name -> deblur_ops module it is bound to
        used = []
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")
                    base = ".".join(parts[:len(parts) - node.level + 1] + ([node.module] if node.module else []))
                for alias in node.names:
                    used.append(f"{base}.{alias.name}")
                    if f"{base}.{alias.name}" in known:
                        modules[alias.asname or alias.name] = f"{base}.{alias.name}"
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    used.append(alias.name)
                    if alias.asname and alias.name in known:
                        modules[alias.asname] = alias.name
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in modules
                    and _is_private(node.attr)):
                used.append(f"{modules[node.value.id]}.{node.attr}")
        for dotted in used:
            owner = _owner_package(dotted, packages)
            if owner is not None and owner != package and dotted.split(".")[0] in ("deblur_ops", "napari_deblur"):
                found.append(f"{name}: {dotted}")
    return sorted(set(found))


def test_private_import_finder_sees_every_form(tmp_path):
    files = {"__init__.py": "", "boundary.py": "def _reflect_dim(): ...\n", "_extension.py": "",
             "restore/__init__.py": "", "restore/_common.py": "def check(): ...\n",
             "restore/wiener.py": "from ._common import check\nfrom .. import _extension\n",
             "models/__init__.py": "",
             "models/a.py": "from ..restore._common import check\n",
             "models/b.py": "from ..boundary import _reflect_dim\n",
             "models/c.py": "from .. import boundary\n\ndef f():\n    return boundary._reflect_dim()\n",
             "models/d.py": "import deblur_ops.restore._common\n",
             "models/e.py": "from ..restore import wiener\nfrom .._extension import load\n"}
    for name, text in files.items():
        (tmp_path / "deblur_ops" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "deblur_ops" / name).write_text(text)
    assert private_imports([tmp_path / "deblur_ops"]) == [
        "deblur_ops.models.a: deblur_ops.restore._common.check",
        "deblur_ops.models.b: deblur_ops.boundary._reflect_dim",
        "deblur_ops.models.c: deblur_ops.boundary._reflect_dim",
        "deblur_ops.models.d: deblur_ops.restore._common"]


def test_no_module_imports_a_private_name_of_another_package():
    """Helpers one package shares with another are public (e.g. in :mod:`deblur_ops.validation`)."""
    assert private_imports() == []
