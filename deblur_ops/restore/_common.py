"""Shared pieces of the FFT-based methods: the boundary-extended domain and gradients (the input
checks are in :mod:`deblur_ops.validation`)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .. import validation as v
from ..boundary import crop, next_fast_len, pad_for_fft, psf_to_otf

# "zeros" reproduces scipy/skimage's mode='same' convolution (the scene is zero outside the image).
PADDINGS = ("reflect", "circular", "zeros")


def data_scale(image: torch.Tensor) -> torch.Tensor:
    """max |image| per batch item as (B, 1, ..., 1), 1 for an all-zero item.

    Dividing by it brings any finite image into [-1, 1], where the squares, norms and FFT sums of
    the iterative methods cannot overflow (a float32 image of magnitude 1e30 overflowed to NaN).
    """
    peak = image.abs().amax(dim=tuple(range(1, image.dim())), keepdim=True)
    return torch.where(peak > 0, peak, torch.ones_like(peak))


def require_finite_result(result: torch.Tensor, method: str) -> torch.Tensor:
    """Raise instead of returning NaN/Inf that a method produced from finite inputs."""
    if not bool(torch.isfinite(result).all()):
        raise FloatingPointError(
            f"{method} produced NaN or Inf values from finite inputs (an overflow of the input's "
            f"dtype); pass float64 input, or rescale the image and pass weight= explicitly"
        )
    return result


class FFTDomain:
    """The image extended for a boundary mode, and fast convolutions with the PSF on it.

    ``reflect`` pads by at least the PSF size (to a fast FFT length) so that the circular wrap of
    the FFT falls into the mirrored margin, not across the image; ``circular`` uses the image as
    is; ``zeros`` pads with zeros far enough that nothing wraps, which is scipy's ``mode="same"``.

    Args:
        image: (B, C, *S).
        psf: (P, *k) with P in {1, B}.
        padding: one of :data:`PADDINGS`.
    """

    def __init__(self, image: torch.Tensor, psf: torch.Tensor, padding: str):
        v.require_choice(padding, "padding", PADDINGS)
        nd = psf.dim() - 1
        ksize = tuple(psf.shape[1:])
        spatial = tuple(image.shape[2:])
        self.mask = None
        if padding == "reflect":
            self.data, self.pads = pad_for_fft(image, ksize)
        elif padding == "circular":
            self.data, self.pads = image, [(0, 0)] * nd
        else:
            self.pads = [(0, next_fast_len(n + k - 1) - n) for n, k in zip(spatial, ksize)]
            flat = [p for before_after in reversed(self.pads) for p in before_after]
            self.data = F.pad(image, flat)
            self.mask = F.pad(torch.ones_like(image[:1, :1]), flat)
        self.shape = tuple(self.data.shape[2:])
        self.dims = tuple(range(-nd, 0))
        otf = psf_to_otf(psf, self.shape)
        self.otf = otf.reshape((otf.shape[0], 1) + otf.shape[1:])  # (P, 1, *F) broadcasts over C

    def spectrum(self, x: torch.Tensor) -> torch.Tensor:
        return torch.fft.rfftn(x, dim=self.dims)

    def spatial(self, spectrum: torch.Tensor) -> torch.Tensor:
        return torch.fft.irfftn(spectrum, s=self.shape, dim=self.dims)

    def blur(self, x: torch.Tensor) -> torch.Tensor:
        return self.spatial(self.spectrum(x) * self.otf)

    def blur_adjoint(self, x: torch.Tensor) -> torch.Tensor:
        return self.spatial(self.spectrum(x) * self.otf.conj())

    def restrict(self, x: torch.Tensor) -> torch.Tensor:
        """Zero outside the image for ``zeros`` padding (the unknowns live on the image only)."""
        return x if self.mask is None else x * self.mask

    def crop(self, x: torch.Tensor) -> torch.Tensor:
        return crop(x, self.pads)


def gradient(x: torch.Tensor, nd: int) -> list[torch.Tensor]:
    """Circular forward differences x[i+1] - x[i] along each of the last ``nd`` dims."""
    return [torch.roll(x, -1, dims=d) - x for d in range(-nd, 0)]


def divergence(fields: list[torch.Tensor]) -> torch.Tensor:
    """Minus the adjoint of :func:`gradient`: backward differences summed over the dims."""
    nd = len(fields)
    return sum(f - torch.roll(f, 1, dims=d) for f, d in zip(fields, range(-nd, 0)))


def gradient_otfs(shape: tuple[int, ...], dtype, device) -> list[torch.Tensor]:
    """rfftn transfer functions of :func:`gradient` on a grid of ``shape``: exp(i w_d) - 1."""
    nd = len(shape)
    delta = torch.zeros(shape, dtype=dtype, device=device)
    delta[(0,) * nd] = 1
    return [torch.fft.rfftn(g, dim=tuple(range(-nd, 0))) for g in gradient(delta, nd)]
