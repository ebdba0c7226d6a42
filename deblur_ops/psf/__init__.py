"""Point-spread functions: analytic models, the motion bank of paper 004, inverse filters and
spatially varying fields.

Conventions (shared by the whole package): a PSF is centred at index ``shape // 2`` and acts by
convolution; angles are in degrees counter-clockwise from the image's +x (column) axis as displayed,
rows pointing down (0° horizontal, 90° vertical, 45° rising to the right); a motion length is the
full extent of the line in pixels.

- :mod:`.analytic`: Gaussian, Moffat, Airy, Born-Wolf, camera-shake PSFs; normalising and centring.
- :mod:`.motion`: linear motion kernels, the 511-filter bank, per-pixel weights into the bank.
- :mod:`.inverse`: finite-support inverse filters of a bank (eqs. 10-14) and their disk cache.
- :mod:`.exact`: the exact per-pixel line blur (continuous length and angle) for making data.
- :mod:`.fields`: :class:`MotionField`, :class:`PSFGrid` (spatially varying blur) and their weights.
"""
from ..boundary import psf_to_otf
from . import analytic, exact, fields, inverse, motion
from .analytic import *  # noqa: F401,F403
from .exact import *  # noqa: F401,F403
from .fields import *  # noqa: F401,F403
from .inverse import *  # noqa: F401,F403
from .motion import *  # noqa: F401,F403

__all__ = sorted({"psf_to_otf", *fields.__all__, *inverse.__all__, *analytic.__all__, *exact.__all__, *motion.__all__})
