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
