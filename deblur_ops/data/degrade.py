"""Forward models used to make blurred test data: convolution with a PSF and additive noise."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .. import validation as v


def blur(image: torch.Tensor, psf: torch.Tensor, *, padding: str = "reflect") -> torch.Tensor:
    """Convolve (B, C, H, W) ``image`` with a (kh, kw) PSF, same-size output (convolution convention).

    Args:
        image: (B, C, H, W) float tensor.
        psf: (kh, kw), odd sizes, centre at (kh//2, kw//2).
        padding: how the image continues outside: ``"reflect"``, ``"replicate"``, ``"circular"``
            or ``"zeros"``.
    """
    v.require_tensor(image, "image")
    if image.dim() != 4:
        raise ValueError(f"image must have shape (B, C, H, W), got {tuple(image.shape)}")
    v.require_float(image, "image")
    psf = v.batched_psf(psf, image)
    if psf.shape[0] != 1:
        raise ValueError(f"blur takes one PSF (kh, kw), got shape {tuple(psf.shape)}")
    v.require_choice(padding, "padding", ("reflect", "replicate", "circular", "zeros"))
    kh, kw = psf.shape[1:]
    pad = (kw // 2, kw // 2, kh // 2, kh // 2)
    mode = "constant" if padding == "zeros" else padding
    padded = F.pad(image, pad, mode=mode)
    channels = image.shape[1]
    weight = psf.flip(-1, -2).expand(channels, 1, kh, kw)  # conv2d correlates: flip for convolution
    return F.conv2d(padded, weight, groups=channels)


def add_gaussian_noise(image: torch.Tensor, sigma: float, *, seed: int | None = None) -> torch.Tensor:
    """``image`` plus white Gaussian noise of standard deviation ``sigma`` (reproducible with seed)."""
    if sigma < 0:
        raise ValueError(f"sigma must be >= 0, got {sigma}")
    gen = torch.Generator(device=image.device)
    if seed is not None:
        gen.manual_seed(seed)
    else:
        gen.seed()
    noise = torch.randn(image.shape, generator=gen, device=image.device, dtype=image.dtype)
    return image + sigma * noise
