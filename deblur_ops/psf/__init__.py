"""Point-spread functions: analytic models, the motion bank of paper 004, inverse filters and
spatially varying fields.

Conventions (shared by the whole package): a PSF is centred at index ``shape // 2`` and acts by
convolution. This holds for even sides too, as DeconvolutionLab2, flowdec and the EPFL PSFs store
them (a 64-pixel side has its centre at index 32); :func:`prepare_psf` pads such a side with one
zero at its end (65 pixels, centre still 32), and the methods take odd sizes only. Physical sizes
are in the data's unit (µm for microscopy, arcsec for astronomy); voxel sizes are ordered like the
axes, (z, y, x) or (y, x); angles are in degrees counter-clockwise from the image's +x (column) axis as displayed,
rows pointing down (0° horizontal, 90° vertical, 45° rising to the right); a motion length is the
full extent of the line in pixels.

- :mod:`.analytic`: Gaussian, Moffat, Airy, Born-Wolf, camera-shake PSFs; normalising and centring.
- :mod:`.motion`: linear motion kernels, the 511-filter bank, per-pixel weights into the bank.
- :mod:`.inverse`: finite-support inverse filters of a bank (eqs. 10-14) and their disk cache.
- :mod:`.exact`: the exact per-pixel line blur (continuous length and angle) for making data.
- :mod:`.estimate`: :func:`estimate_psf`, the blur kernel of a blurred image estimated from the image alone.
- :mod:`.microscope`: Gibson–Lanni scalar and vectorial, widefield and confocal PSFs (``psfmodels``).
- :mod:`.points`: :func:`psf_from_points`, a PSF averaged from beads or stars, outliers rejected.
- :mod:`.prepare`: :func:`prepare_psf`, the one path from a measured PSF to one the methods take.
- :mod:`.fields`: :class:`MotionField`, :class:`PSFGrid` (spatially varying blur) and their weights.
"""
from ..boundary import psf_to_otf
from . import analytic, estimate, exact, fields, inverse, microscope, motion, points, prepare
from .analytic import *  # noqa: F401,F403
from .estimate import *  # noqa: F401,F403
from .exact import *  # noqa: F401,F403
from .fields import *  # noqa: F401,F403
from .inverse import *  # noqa: F401,F403
from .microscope import *  # noqa: F401,F403
from .motion import *  # noqa: F401,F403
from .points import *  # noqa: F401,F403
from .prepare import *  # noqa: F401,F403

__all__ = sorted({"psf_to_otf", *fields.__all__, *inverse.__all__, *analytic.__all__, *estimate.__all__, *exact.__all__, *motion.__all__,
                  *microscope.__all__, *points.__all__, *prepare.__all__})
