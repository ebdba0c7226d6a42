"""Point-spread functions: analytic models, the motion bank of paper 004, spatially varying fields.

Conventions (shared by the whole package): a PSF is centred at index ``shape // 2`` and acts by
convolution; angles are in degrees counter-clockwise from the image's +x (column) axis as displayed,
rows pointing down (0° horizontal, 90° vertical, 45° rising to the right); a motion length is the
full extent of the line in pixels.
"""
from .motion import *  # noqa: F401,F403
from .motion import _GRADIENT_PRIORS, __all__  # noqa: F401
