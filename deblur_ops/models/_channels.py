"""Running a network trained on C-channel images on images with other channel counts."""
from __future__ import annotations

import torch

from ..validation import check_channels


def fold_channels(image: torch.Tensor, psf: torch.Tensor, channels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Fit (B, C, H, W) and its PSF (P, kh, kw), P in {1, B}, to a network that takes ``channels``.

    A single-channel network restores every colour channel on its own with the item's PSF:
    (B, C, H, W) becomes (B * C, 1, H, W) and the PSF is repeated per channel. Reshape the output
    back with ``out.reshape(image.shape)``.

    Returns:
        The batch for the network and its PSF, (kh, kw) when shared or one per new batch item.

    Raises:
        ValueError: the network takes several channels and the image has another count.

    Example:
        >>> x, k = fold_channels(torch.rand(2, 3, 8, 8), torch.ones(1, 3, 3) / 9, 1)
        >>> x.shape, k.shape
        (torch.Size([6, 1, 8, 8]), torch.Size([6, 3, 3]))
    """
    check_channels(image, channels)
    b, c = image.shape[:2]
    if c == channels:
        return image, psf[0] if psf.shape[0] == 1 else psf
    kernels = psf.expand(b, *psf.shape[1:]) if psf.shape[0] == 1 else psf
    return image.reshape(b * c, 1, *image.shape[2:]), kernels.repeat_interleave(c, 0)
