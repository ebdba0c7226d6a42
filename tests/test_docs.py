"""Run the Examples in the public docstrings (on the already imported modules, so that op
registrations happen once)."""
import doctest
import importlib

import pytest

MODULES = ["deblur_ops.ops.wiener_stack", "deblur_ops.ops.learnable_shrink", "deblur_ops.ops.nu_conv",
           "deblur_ops.psf", "deblur_ops.psf_models", "deblur_ops.api", "deblur_ops.restore.wiener",
           "deblur_ops.restore.richardson_lucy", "deblur_ops.restore.admm_tv", "deblur_ops.evaluate",
           "deblur_ops.catalog", "deblur_ops.stack", "deblur_ops.io", "deblur_ops.samples",
           "deblur_ops.restore.irc", "deblur_ops.restore.registry", "deblur_ops.train", "deblur_ops.train.data",
           "deblur_ops.train.loop", "deblur_ops.models.pretrained", "deblur_ops.models.irc_net",
           "deblur_ops.models.motion_net", "deblur_ops.models.blind_irc", "deblur_ops.models.methods",
           "deblur_ops.models._blind", "deblur_ops.models.autoencoder", "deblur_ops.models.madn"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0, f"{name} has no docstring examples"
    assert result.failed == 0, f"{result.failed} docstring example(s) failed in {name}"
