"""What the user surfaces can offer: each method's tunable parameters and the generated PSF models.

The CLI and the napari plugin build their options from these lists (read from the functions'
signatures), so a method or PSF model added to the package shows up in both without UI edits.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass

import numpy as np

from ..psf import analytic as psf_models
from ..psf import linear_motion_kernel
from ..restore import get_method

# Keyword arguments that are plumbing (hooks, array options), not knobs a user sets from a form.
_NOT_USER_PARAMETERS = {"callback", "dtype"}


@dataclass(frozen=True)
class Parameter:
    """A user-settable parameter of a method or PSF model.

    Attributes:
        name: keyword name.
        default: default value; None means "chosen automatically" (or required, see ``required``).
        required: whether the function has no default for it.
    """

    name: str
    default: object
    required: bool


def _parameters(function, skip_leading: int) -> list[Parameter]:
    found = []
    for p in list(inspect.signature(function).parameters.values())[skip_leading:]:
        if p.name in _NOT_USER_PARAMETERS or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        required = p.default is inspect.Parameter.empty
        found.append(Parameter(p.name, None if required else p.default, required))
    return found


def method_parameters(method: str) -> list[Parameter]:
    """The keyword parameters of restoration method ``method`` that a user can set.

    Args:
        method: a name from :func:`deblur_ops.methods`.

    Raises:
        ValueError: unknown method.

    Example:
        >>> [p.name for p in method_parameters("richardson_lucy")][:2]
        ['iterations', 'acceleration']
    """
    return _parameters(get_method(method).function, skip_leading=2)


def _born_wolf(wavelength: float = 0.52, na: float = 1.2, refractive_index: float = 1.33,
               pixel_size: float = 0.1, z_step: float = 0.25, shape=None):
    return psf_models.born_wolf_psf(wavelength, na, refractive_index, pixel_size, z_step, shape)


def _airy(wavelength: float = 0.52, na: float = 1.2, pixel_size: float = 0.1, size=None):
    return psf_models.airy_psf(wavelength, na, pixel_size, size)


def _gaussian(sigma: float = 2.0, size=None, angle_deg: float = 0.0):
    return psf_models.gaussian_psf(sigma, size, angle_deg=angle_deg)


def _moffat(fwhm: float = 4.0, beta: float = 3.0, size=None):
    return psf_models.moffat_psf(fwhm, beta, size)


def _motion(length: float = 15.0, angle: float = 0.0, size=None):
    return linear_motion_kernel(length, angle, size)


# Defaults make every model usable with no argument (a form shows them as initial values);
# optics are in micrometres.
PSF_MODELS = {
    "gaussian": _gaussian,
    "airy": _airy,
    "born_wolf": _born_wolf,
    "moffat": _moffat,
    "motion": _motion,
}


def psf_parameters(model: str) -> list[Parameter]:
    """The parameters of PSF model ``model`` with their defaults.

    Raises:
        ValueError: unknown model.

    Example:
        >>> [p.name for p in psf_parameters("motion")]
        ['length', 'angle', 'size']
    """
    _check_model(model)
    return _parameters(PSF_MODELS[model], skip_leading=0)


def _check_model(model: str) -> None:
    if model not in PSF_MODELS:
        raise ValueError(f"unknown PSF model {model!r}; choose one of {sorted(PSF_MODELS)}")


# The largest PSF side a generated model may have: larger ones are typos (a length of 1e9 px
# asked the allocator for exabytes) and no image a PSF can sensibly blur needs them.
MAX_PSF_SIDE = 4097


def _check_extent(model: str, params: dict) -> None:
    """Refuse parameters whose PSF would exceed :data:`MAX_PSF_SIDE`, before anything is allocated."""
    # Sides the models choose by default: a motion line spans its length, a Gaussian about 8 sigma,
    # a Moffat profile (beta >= ~1.5) about 8 FWHM.
    extents = {"length": 1.0, "sigma": 8.0, "fwhm": 8.0}
    for name, per_unit in extents.items():
        value = params.get(name)
        if isinstance(value, (int, float)) and abs(value) * per_unit > MAX_PSF_SIDE:
            raise ValueError(f"{model} PSF with {name}={value:g} would be about {abs(value) * per_unit:.3g} px wide, "
                             f"more than the {MAX_PSF_SIDE} px limit; check the units (pixels)")
    for name in ("size", "shape"):
        value = params.get(name)
        sides = [value] if isinstance(value, (int, float)) else list(value or [])
        if any(isinstance(v, (int, float)) and v > MAX_PSF_SIDE for v in sides):
            raise ValueError(f"{model} PSF {name}={value} exceeds the {MAX_PSF_SIDE} px limit per side")


def make_psf(model: str, **params) -> np.ndarray:
    """A generated PSF as a float32 NumPy array summing to 1.

    Args:
        model: a key of :data:`PSF_MODELS`: ``gaussian`` (sigma, size, angle_deg), ``airy``
            (wavelength, na, pixel_size, size), ``born_wolf`` (3D: wavelength, na,
            refractive_index, pixel_size, z_step, shape), ``moffat`` (fwhm, beta, size),
            ``motion`` (length, angle, size).
        **params: the model's parameters; missing ones take the defaults of :func:`psf_parameters`.

    Raises:
        ValueError: unknown model or parameter, or a parameter the model rejects.

    Example:
        >>> make_psf("gaussian", sigma=1.5).shape
        (13, 13)
    """
    _check_model(model)
    known = {p.name for p in psf_parameters(model)}
    unknown = sorted(set(params) - known)
    if unknown:
        raise ValueError(f"PSF model {model!r} does not take {unknown}; it takes {sorted(known)}")
    _check_extent(model, params)
    return np.ascontiguousarray(PSF_MODELS[model](**params).numpy(), dtype=np.float32)
