"""Classical restoration methods, one module each, sharing ``method(image, psf, **params) -> Tensor``.

Every method takes (B, C, H, W) or (B, C, D, H, W) torch tensors (CPU or CUDA) and registers
itself in :data:`registry.METHODS`, which :func:`deblur_ops.deblur` dispatches on, when its module
is imported below; the learned methods register when :mod:`deblur_ops.models` is imported (by
``import deblur_ops``). :mod:`.baselines` holds the papers' classical baselines.
"""
from ._nonuniform import BlurOperator
from .admm_tv import admm_tv
from .baselines import gradient_descent_method, wiener_bilateral
from .irc import irc, irc_admm
from .nu_cg import nu_cg
from .pnp import nl_means, pnp
from .registry import METHODS, Method, get_method, register
from .richardson_lucy import richardson_lucy
from .sv_richardson_lucy import sv_richardson_lucy
from .wiener import wiener

__all__ = ["METHODS", "BlurOperator", "Method", "admm_tv", "get_method", "gradient_descent_method", "irc", "irc_admm",
           "nl_means", "nu_cg", "pnp", "register", "richardson_lucy", "sv_richardson_lucy", "wiener", "wiener_bilateral"]
