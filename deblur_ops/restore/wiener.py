"""Wiener / Tikhonov deconvolution through the fused Wiener-stack op with one SNR."""
from __future__ import annotations

import math

import torch

from .. import validation as v
from ..boundary import PADDINGS as WIENER_PADDINGS
from ..data.noise import noise_sigma_per_item, select_wiener_snr
from ..ops import wiener_stack
from ..reference import REGULARIZERS
from ..validation import check_inputs, check_positive
from ._common import data_scale
from .registry import register

# Candidate SNRs (dB) for choosing the balance from the noise level; 1 dB apart is finer than
# the PSNR differences that matter, and 0..80 dB spans noise-dominated to noiseless data.
SNR_CANDIDATES_DB = tuple(float(s) for s in range(0, 81))


@register("wiener", "Wiener/Tikhonov filter (identity or Laplacian), balance given or chosen from the noise level")
def wiener(image: torch.Tensor, psf: torch.Tensor, *, balance: float | None = None,
           noise_sigma=None, regularizer: str = "identity", padding: str = "reflect") -> torch.Tensor:
    r"""Wiener deconvolution :math:`X = \overline{K} Y / (|K|^2 + \lambda |R|^2)`.

    Model y = k * x + n. ``balance`` is lambda (skimage's ``balance``); when it is not given it is
    chosen, per batch item, as the candidate SNR with the least expected squared error under a
    1/f^2 image spectrum and white noise of level ``noise_sigma`` (estimated with Immerkaer's
    method when not given; see :func:`deblur_ops.data.noise.select_wiener_snr`). The filter runs as the
    fused Wiener-stack op of paper 001 with one SNR, 10 log10(1 / lambda) dB.

    Args:
        image: (B, C, H, W) or (B, C, D, H, W) float tensor.
        psf: (kh, kw) / (kd, kh, kw), or one per batch item (B, ...); odd sizes, not larger than
            the image; used as given (normalise it to sum 1 for a flux-preserving result).
        balance: lambda > 0, or None to choose it from the noise level.
        noise_sigma: noise standard deviation (number, (B,) or (B, C)); None estimates it.
        regularizer: ``"identity"`` (classical Wiener) or ``"laplacian"`` (skimage's default).
        padding: ``"reflect"``, ``"edge_taper"`` or ``"circular"`` (see :func:`deblur_ops.wiener_stack`).

    Returns:
        Tensor of the image's shape and dtype.

    Raises:
        ValueError: bad shapes, NaN/Inf, an even, all-zero or too large PSF, lambda <= 0, unknown options.

    Example:
        >>> import torch
        >>> image = torch.rand(1, 1, 64, 64)
        >>> wiener(image, torch.ones(5, 5) / 25, balance=1e-2).shape
        torch.Size([1, 1, 64, 64])

    References:
        - N. Wiener. Extrapolation, Interpolation, and Smoothing of Stationary Time Series. MIT Press, 1949.
        - A. Gilbert, S. Messinger, A. Patel. Non-Blind Image Deblurring using Neural Networks. Course project
          report, year not stated (paper 001 in docs/references.md).
        - J. Immerkaer. Fast noise variance estimation. CVIU 64(2), 300-302, 1996.
    """
    image, psf = check_inputs(image, psf)
    # The op and the selector take one shared PSF unbatched, or one per batch item.
    kernel = psf[0] if psf.shape[0] == 1 else psf
    v.require_choice(regularizer, "regularizer", REGULARIZERS)
    v.require_choice(padding, "padding", WIENER_PADDINGS)
    if balance is not None:
        snr_db = torch.full((image.shape[0],), -10 * math.log10(check_positive(balance, "balance")),
                            dtype=torch.float64)
    else:
        # The choice depends on the signal-to-noise ratio only: made on the image scaled to [-1, 1], so
        # that its power spectrum cannot overflow (a float32 image of 1e30 chose another balance).
        scale = data_scale(image)
        unit = image / scale
        sigma = (noise_sigma_per_item(unit, None) if noise_sigma is None
                 else noise_sigma_per_item(image, noise_sigma) / scale.reshape(-1))
        candidates = torch.tensor(SNR_CANDIDATES_DB, dtype=image.dtype, device=image.device)
        picks = select_wiener_snr(unit, kernel, candidates, sigma, regularizer=regularizer)
        snr_db = candidates[picks].cpu()
    if bool((snr_db == snr_db[0]).all()):
        return wiener_stack(image, kernel, snr_db[:1], regularizer=regularizer, padding=padding)[:, 0]
    per_psf = psf if psf.shape[0] > 1 else psf.expand(image.shape[0], *psf.shape[1:])
    return torch.cat([
        wiener_stack(image[i:i + 1], per_psf[i], snr_db[i:i + 1], regularizer=regularizer,
                     padding=padding)[:, 0]
        for i in range(image.shape[0])
    ])
