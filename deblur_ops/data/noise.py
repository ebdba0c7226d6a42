"""No-reference noise estimation and regularisation-parameter selection."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .. import validation as v
from ..boundary import pad_for_fft

# Immerkaer's mask: the difference of two Laplacians, which cancels image structure up to
# second order so what remains is mostly noise.
_IMMERKAER = torch.tensor([[1.0, -2.0, 1.0], [-2.0, 4.0, -2.0], [1.0, -2.0, 1.0]])


def estimate_noise_sigma(image: torch.Tensor) -> torch.Tensor:
    """Standard deviation of additive white Gaussian noise, per (batch, channel) plane.

    J. Immerkaer, "Fast noise variance estimation", CVIU 64(2), 1996:
    sigma = sqrt(pi/2) / (6 (H-2)(W-2)) * sum |image * M|.

    Args:
        image: (B, C, H, W), H and W >= 3.

    Returns:
        (B, C) tensor of sigma estimates.
    """
    if image.dim() != 4 or image.shape[-1] < 3 or image.shape[-2] < 3:
        raise ValueError(f"image must have shape (B, C, H>=3, W>=3), got {tuple(image.shape)}")
    b, c, h, w = image.shape
    mask = _IMMERKAER.to(image.dtype).to(image.device)[None, None]
    response = F.conv2d(image.reshape(b * c, 1, h, w), mask).abs()
    sigma = response.sum(dim=(1, 2, 3)) * math.sqrt(math.pi / 2) / (6 * (h - 2) * (w - 2))
    return sigma.reshape(b, c)


def noise_sigma_per_item(image: torch.Tensor, noise_sigma) -> torch.Tensor:
    """The given noise level, or Immerkaer's estimate averaged over channels and (3D) planes: (B,).

    Args:
        image: (B, C, H, W) or (B, C, D, H, W).
        noise_sigma: None (estimate), a number, or one value per batch item (B,) or (B, C).
    """
    if noise_sigma is not None:
        return v.per_item(noise_sigma, "noise_sigma", image).reshape(-1)
    b, h, w = image.shape[0], image.shape[-2], image.shape[-1]
    if h < 3 or w < 3:
        raise ValueError(f"estimating the noise needs planes of at least 3x3, got {h}x{w}; pass noise_sigma")
    return estimate_noise_sigma(image.reshape(b, -1, h, w)).mean(1)


def select_wiener_snr(blurred: torch.Tensor, psf: torch.Tensor, snr_db,
                      sigma: torch.Tensor | float | None = None, *,
                      regularizer: str = "identity") -> torch.Tensor:
    """Pick, per batch item, the Wiener-stack SNR with the least expected restoration error.

    The expected squared error of the Wiener estimate G Y for filter j is, per frequency,
    |1 - G_j K|^2 S_x + N sigma^2 |G_j|^2. The image spectrum S_x is modelled as the power law
    A / |f|^2 of natural images (Field 1987; van der Schaaf & van Hateren 1996), with A fitted
    robustly on the frequencies the PSF passes (|K|^2 > 1/2) from |Y|^2 - N sigma^2. This needs
    no ground truth, only the noise level (estimated from ``blurred`` when not given), and it errs
    towards over-regularising rather than amplifying noise.

    Args:
        blurred: (B, C, H, W) or (B, C, D, H, W) observation.
        psf: PSF as for :func:`deblur_ops.wiener_stack`.
        snr_db: the N candidate SNRs (1-D).
        sigma: noise standard deviation (float, or per batch item (B,) / (B, C)); estimated
            with :func:`estimate_noise_sigma` on 2D images when None.
        regularizer: ``"identity"`` or ``"laplacian"``, the R of the Wiener filters compared.

    Returns:
        (B,) long tensor of indices into ``snr_db``.
    """
    v.require_tensor(blurred, "blurred")
    nd = v.image_spatial_dims(blurred, "blurred")
    v.require_float(blurred, "blurred")
    psf = v.batched_psf(psf, blurred)
    snr = v.as_1d_float(snr_db, "snr_db", blurred).double()
    v.require_choice(regularizer, "regularizer", ("identity", "laplacian"))
    b = blurred.shape[0]
    if sigma is None:
        if nd != 2:
            raise ValueError("sigma must be given for 3D images (the estimator is 2D)")
        sigma = estimate_noise_sigma(blurred)
    sig = torch.as_tensor(sigma, dtype=torch.float64, device=blurred.device)
    sig2 = (sig.reshape(b, -1).mean(1) if sig.dim() else sig.expand(b)) ** 2  # (B,)

    padded, _ = pad_for_fft(blurred.double(), tuple(psf.shape[1:]))
    spatial = tuple(padded.shape[2:])
    dims = tuple(range(-nd, 0))
    n = math.prod(spatial)
    power = (torch.fft.fftn(padded, dim=dims).abs() ** 2).sum(1)  # (B, *S), summed over channels
    kernel = F.pad(psf.double(), [p for size, k in zip(reversed(spatial), reversed(psf.shape[1:]))
                                  for p in (0, size - k)])
    otf = torch.fft.fftn(torch.roll(kernel, [-(k // 2) for k in psf.shape[1:]], dims), dim=dims)
    k2 = otf.abs() ** 2  # (P, *S)
    freqs = torch.meshgrid(*[torch.fft.fftfreq(s, dtype=torch.float64, device=blurred.device)
                             for s in spatial], indexing="ij")
    f2 = sum(f**2 for f in freqs).clamp(min=1.0 / n)
    channels = blurred.shape[1]
    noise_power = n * sig2.reshape((b,) + (1,) * nd) * channels
    clean = (power - noise_power).clamp(min=0) * f2 / k2.clamp(min=1e-12)
    reliable = (k2 > 0.5).expand_as(clean) & (f2 > 1.0 / n)
    amplitude = torch.stack([c[m].median() if m.any() else c.median() for c, m in zip(clean, reliable)])
    prior = amplitude.reshape((b,) + (1,) * nd) / f2  # (B, *S)
    lambdas = torch.pow(10.0, -snr / 10)
    reg = sum(2 - 2 * torch.cos(2 * math.pi * f) for f in freqs) ** 2 if regularizer == "laplacian" else 1.0
    risks = []
    for lam in lambdas:
        gain = otf.conj() / (k2 + lam * reg)
        risk = ((1 - gain * otf).abs() ** 2 * prior + noise_power * gain.abs() ** 2)
        risks.append(risk.flatten(1).sum(1))
    return torch.stack(risks, 1).argmin(1)
