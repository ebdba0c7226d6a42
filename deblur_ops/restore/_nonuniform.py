"""The blur operator shared by the spatially varying methods: uniform PSF, MotionField or PSFGrid.

Whatever the PSF description, the blur becomes one NU-Conv filter bank with per-pixel indices and
weights (paper 004 eq. 17), so ``nu_cg`` and ``irc`` treat uniform and non-uniform blur alike. The
unknown image lives on a larger domain than the observation, and only the observed pixels enter the
data term (``mask``): scene points outside the image that blur into it are unknowns like any other,
so the borders neither ring nor meet the zero boundary of the exactly adjoint ``scatter``/``gather``
pair. (Reflected data would not do as observations: mirroring flips the direction of a motion blur.)
The reflection-extended observation is only the starting point.
"""
from __future__ import annotations

import torch

from .. import validation as v
from ..boundary import crop, pad_for_fft
from ..ops.nu_conv import nu_conv_unchecked, validate_nu_conv


def _extend(t: torch.Tensor, pads: list[tuple[int, int]]) -> torch.Tensor:
    """Replicate the border of the last two dims of ``t`` (any dtype, also the int64 indices)."""
    for dim, (before, after) in zip((-2, -1), pads):
        n = t.shape[dim]
        positions = (torch.arange(-before, n + after, device=t.device)).clamp(0, n - 1)
        t = t.index_select(t.dim() + dim, positions)
    return t


class BlurOperator:
    """A = the (possibly spatially varying) blur on the reflect-extended domain of ``image``.

    Args:
        image: (B, C, H, W) float tensor, validated.
        psf: a (kh, kw) / (B, kh, kw) tensor, or an object with ``spatially_varying = True`` and
            ``nu_conv_inputs(image_shape, dtype=, device=)`` (``psf.MotionField``, ``psf.PSFGrid``).
        margin: extension on each side in pixels; default the blur filter size.

    Attributes:
        bank (F, kh, kw), idx and weights (B or 1, K, H', W') on the extended domain, data (the
        observation extended by reflection), mask (1, 1, H', W'): 1 on the observed pixels, pads.
    """

    def __init__(self, image: torch.Tensor, psf, margin: int | None = None):
        v.require_tensor(image, "image")
        if image.dim() != 4:
            raise ValueError(f"spatially varying methods take 2D images (B, C, H, W), got shape "
                             f"{tuple(image.shape)}; for volumes use wiener, richardson_lucy or admm_tv")
        v.require_float(image, "image")
        v.require_nonempty(image, "image")
        v.require_finite(image, "image")
        shape = tuple(image.shape[-2:])
        if getattr(psf, "spatially_varying", False):
            bank, idx, weights = psf.nu_conv_inputs(shape, dtype=image.dtype, device=image.device)
        else:
            bank = v.batched_psf(psf, image)
            count = bank.shape[0]
            idx = torch.arange(count, device=image.device).reshape(count, 1, 1, 1).expand(count, 1, *shape)
            weights = torch.ones(count, 1, *shape, dtype=image.dtype, device=image.device)
        ksize = max(bank.shape[-2:])
        if 2 * (ksize // 2) >= min(shape):
            raise ValueError(f"the PSF ({tuple(bank.shape[-2:])}) must be smaller than the image "
                             f"{shape}; crop the PSF or use a larger image")
        self.bank = bank.contiguous()
        self.data, self.pads = pad_for_fft(image, (margin or ksize,) * 2)
        self.idx = _extend(idx, self.pads).contiguous()
        self.weights = _extend(weights, self.pads).contiguous()
        self.mask = torch.zeros_like(self.data[:1, :1])
        crop(self.mask, self.pads).fill_(1)
        # Checked once here; the solvers then call NU-Conv every iteration without re-scanning them.
        validate_nu_conv(self.data, self.bank, self.idx, self.weights, "scatter", "zeros")
        self.flipped = self.bank.flip(-2, -1).contiguous()

    def blur(self, x: torch.Tensor) -> torch.Tensor:
        """k * x, scatter model (the PSF belongs to the scene point); x of the extended domain's shape."""
        return nu_conv_unchecked(x, self.bank, self.idx, self.weights, "scatter", "zeros")

    def adjoint(self, r: torch.Tensor) -> torch.Tensor:
        """A^T r: gather with the flipped filters, the exact adjoint of :meth:`blur` (zero padding)."""
        return nu_conv_unchecked(r, self.flipped, self.idx, self.weights, "gather", "zeros")

    def crop(self, x: torch.Tensor) -> torch.Tensor:
        return crop(x, self.pads)
