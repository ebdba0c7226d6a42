"""Registry of restoration methods: name -> function, description and capabilities.

Methods register themselves with :func:`register`, so :func:`deblur_ops.deblur` and
:func:`deblur_ops.methods` (and the CLI and the napari plugin through them) see every method,
including ones added later, without a hand-kept list. The modules that hold methods are imported
in one listed place per package: ``restore/__init__.py`` (classical methods and the papers'
baselines) and ``models/__init__.py`` (learned methods); ``import deblur_ops`` imports both.
"""
from __future__ import annotations

from collections.abc import Callable
import re
from dataclasses import dataclass

_NAME = re.compile(r"[a-z][a-z0-9_]*(-[a-z0-9_]+)*")


@dataclass(frozen=True)
class Method:
    """A registered restoration method.

    Attributes:
        name: the name users pass as ``method=``.
        function: ``function(image, psf, **params) -> Tensor`` on (B, C, H, W) / (B, C, D, H, W).
        description: one line for listings.
        needs_psf: whether a PSF (or PSF description) is required.
        spatially_varying: whether PSF descriptions with ``spatially_varying = True``
            (``psf.MotionField``, ``psf.PSFGrid``) are accepted besides uniform PSF arrays.
    """

    name: str
    function: Callable
    description: str
    needs_psf: bool = True
    spatially_varying: bool = False


METHODS: dict[str, Method] = {}


def register(name: str, description: str, *, needs_psf: bool = True,
             spatially_varying: bool = False) -> Callable[[Callable], Callable]:
    """Decorator that registers ``function`` under ``name``.

    Args:
        name: method name, unique.
        description: one-line description.
        needs_psf: whether the method requires a PSF.
        spatially_varying: whether it accepts spatially varying PSF descriptions.

    Returns:
        The decorator; it returns the function unchanged.

    Raises:
        ValueError: ``name`` is already registered or ``description`` is not one line.

    Example:
        >>> @register("identity_demo", "returns the input")
        ... def identity_demo(image, psf=None):
        ...     return image
        >>> METHODS.pop("identity_demo").description
        'returns the input'
    """
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValueError(f"method name must be lower-case letters, digits, '_' and '-' and start with a letter, "
                         f"like 'admm_tv' or 'irc-net', got {name!r}")
    if name in METHODS:
        raise ValueError(f"a method named {name!r} is already registered; pick another name")
    if not isinstance(description, str) or not description.strip() or "\n" in description:
        raise ValueError(f"description must be one non-empty line, got {description!r}")

    def decorator(function: Callable) -> Callable:
        METHODS[name] = Method(name, function, description, needs_psf, spatially_varying)
        return function

    return decorator


def get_method(name: str) -> Method:
    """The registered method ``name``.

    Raises:
        ValueError: unknown name; the message lists the valid names.

    Example:
        >>> import deblur_ops
        >>> get_method("wiener").needs_psf
        True
    """
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; valid methods are {sorted(METHODS)} "
                         f"(see deblur_ops.methods() for descriptions)")
    return METHODS[name]
