"""Run the Examples in the public docstrings (on the already imported modules, so that op
registrations happen once)."""
import doctest
import importlib

import pytest

MODULES = ["deblur_ops.ops.wiener_stack", "deblur_ops.ops.learnable_shrink", "deblur_ops.ops.nu_conv",
           "deblur_ops.psf", "deblur_ops.psf_models", "deblur_ops.api", "deblur_ops.restore.wiener",
           "deblur_ops.restore.richardson_lucy", "deblur_ops.restore.admm_tv", "deblur_ops.evaluate",
           "deblur_ops.catalog", "deblur_ops.stack", "deblur_ops.io", "deblur_ops.samples"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0, f"{name} has no docstring examples"
    assert result.failed == 0, f"{result.failed} docstring example(s) failed in {name}"
