"""Point-spread functions and their spectra.

Conventions (shared by the whole package): a PSF is centred at index ``shape // 2`` and acts by
convolution; angles are in degrees counter-clockwise from the image's +x (column) axis as displayed,
rows pointing down (0° horizontal, 90° vertical, 45° rising to the right); a motion length is the
full extent of the line in pixels.
"""
from __future__ import annotations

import math

import torch

from .boundary import psf_to_otf

__all__ = ["linear_motion_kernel", "psf_to_otf"]


def linear_motion_kernel(length: float, angle_deg: float, size: int | None = None, *,
                         dtype=torch.float32) -> torch.Tensor:
    """Anti-aliased linear-motion PSF, centred in a ``size`` x ``size`` array, summing to 1.

    Each pixel weighs ``max(0, 1 - d)`` with ``d`` its distance to the segment of length
    ``length - 1`` through the centre (so a horizontal line of odd length L covers exactly L pixels
    equally, and length 1 is a delta), like MATLAB's ``fspecial('motion')``.

    Args:
        length: full extent of the line in pixels, >= 1.
        angle_deg: direction in degrees, counter-clockwise from +x with rows pointing down.
        size: odd side of the output; default the smallest odd size that holds the line.
        dtype: floating dtype of the result.

    Returns:
        (size, size) tensor.

    Examples:
        >>> k = linear_motion_kernel(5, 0)
        >>> k.shape, float(k.sum()), k[2].tolist()
        (torch.Size([5, 5]), 1.0, [0.2, 0.2, 0.2, 0.2, 0.2])
    """
    length, angle = float(length), float(angle_deg)
    if not (math.isfinite(length) and length >= 1):
        raise ValueError(f"length must be a finite number >= 1 (pixels), got {length}")
    if not math.isfinite(angle):
        raise ValueError(f"angle_deg must be finite, got {angle}")
    half = (length - 1) / 2
    theta = math.radians(angle)
    dx, dy = math.cos(theta), -math.sin(theta)  # rows point down: a rising line has dy < 0
    needed = 2 * math.ceil(max(abs(half * dx), abs(half * dy)) - 1e-9) + 1
    if size is None:
        size = needed
    if int(size) != size or size < 1 or size % 2 == 0:
        raise ValueError(f"size must be a positive odd integer, got {size}")
    if size < needed:
        raise ValueError(
            f"a line of length {length} at {angle} degrees needs size >= {needed}, got {size}"
        )
    c = size // 2
    coords = torch.arange(size, dtype=torch.float64) - c
    row, col = torch.meshgrid(coords, coords, indexing="ij")
    along = (col * dx + row * dy).clamp(-half, half)
    dist = torch.hypot(col - along * dx, row - along * dy)
    kernel = (1 - dist).clamp(min=0)
    return (kernel / kernel.sum()).to(dtype)


from .psf_models import *  # noqa: E402,F401,F403  (Gaussian, Airy, Born-Wolf, Moffat, camera shake)
from .psf_models import __all__ as _models_all  # noqa: E402

__all__ += _models_all
