"""deblur-ops: custom PyTorch ops for learned image deconvolution.

Public ops (compiled CPU/CUDA kernels when the extension is built, pure PyTorch otherwise):
``wiener_stack``, ``learnable_shrink``, ``nu_conv`` (and the module ``LearnableShrink``).
``backend()`` says which implementation each op uses; ``deblur_ops.reference`` holds the
pure-PyTorch oracles. ``deblur(image, psf, method=...)`` restores an image with any registered
method; ``methods()`` lists them; ``estimate_psf(image, size)`` estimates an unknown blur kernel.
"""
from importlib import metadata as _metadata

from . import boundary, psf, reference
from ._extension import backend
from .api import deblur, methods
from .ops import LearnableShrink, learnable_shrink, nu_conv, wiener_stack

from . import models  # noqa: E402  (registers the learned restoration methods)
from .models.methods import estimate_motion, estimate_psf_motion_net  # noqa: E402
from .psf.estimate import estimate_psf  # noqa: E402

try:  # one source of truth: the version in pyproject.toml, as installed
    __version__ = _metadata.version("deblur-ops")
except _metadata.PackageNotFoundError:  # a source tree on sys.path without an install
    __version__ = "unknown"

__all__ = [
    "LearnableShrink",
    "backend",
    "boundary",
    "deblur",
    "estimate_motion",
    "estimate_psf",
    "estimate_psf_motion_net",
    "learnable_shrink",
    "methods",
    "models",
    "nu_conv",
    "psf",
    "reference",
    "wiener_stack",
]
