"""No-reference noise estimation and regularisation-parameter selection."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .. import validation as v
from ..boundary import pad_for_fft

# Immerkaer's mask [[1, -2, 1], [-2, 4, -2], [1, -2, 1]]: the difference of two Laplacians, which
# cancels image structure up to second order so what remains is mostly noise.


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
    # The mask is the outer product of [1, -2, 1] with itself: two second differences, which
    # on large images cost a fraction of a 3x3 conv2d (2 s on a 2048^2 frame here).
    rows = image[..., :-2, :] - 2 * image[..., 1:-1, :] + image[..., 2:, :]
    response = (rows[..., :-2] - 2 * rows[..., 1:-1] + rows[..., 2:]).abs()
    sigma = response.sum(dim=(-2, -1)) * math.sqrt(math.pi / 2) / (6 * (h - 2) * (w - 2))
    return sigma


# Range and width of the bins of |K|^2 / |R|^2 over which the Wiener risk is pooled; 0.01 decade
# (2.3 %) is far finer than the 26 % steps of 1 dB candidates.
_Q_RANGE = (1e-14, 1e6)
_Q_BIN_DECADES = 0.01


def noise_sigma_per_item(image: torch.Tensor, noise_sigma) -> torch.Tensor:
    """The given noise level, or Immerkaer's estimate averaged over channels and (3D) planes: (B,).

    The estimate is at least the rounding error of the item's values (float epsilon times its
    largest magnitude, or epsilon for an all-zero item): a blank or constant frame estimates
    exactly 0, and a zero noise level would give the noise-derived weights of the TV methods
    the invalid value 0 (and IRC-Net's shrinkage a 0/0).

    Args:
        image: (B, C, H, W) or (B, C, D, H, W).
        noise_sigma: None (estimate), a number, or one value per batch item (B,) or (B, C).
    """
    if noise_sigma is not None:
        return v.per_item(noise_sigma, "noise_sigma", image).reshape(-1)
    b, h, w = image.shape[0], image.shape[-2], image.shape[-1]
    if h < 3 or w < 3:
        raise ValueError(f"estimating the noise needs planes of at least 3x3, got {h}x{w}; pass noise_sigma")
    estimate = estimate_noise_sigma(image.reshape(b, -1, h, w)).mean(1)
    magnitude = image.detach().abs().reshape(b, -1).amax(1)
    floor = torch.finfo(image.dtype).eps * torch.where(magnitude > 0, magnitude, torch.ones_like(magnitude))
    return torch.maximum(estimate, floor)


def select_wiener_snr(blurred: torch.Tensor, psf: torch.Tensor, snr_db,
                      sigma: torch.Tensor | float | None = None, *,
                      regularizer: str = "identity") -> torch.Tensor:
    """Pick, per batch item, the Wiener-stack SNR with the least expected restoration error.

    The expected squared error of the Wiener estimate G Y for filter j is, per frequency,
    |1 - G_j K|^2 S_x + N sigma^2 |G_j|^2. The image spectrum S_x is modelled as the power law
    A / |f|^2 of natural images (Field 1987; van der Schaaf & van Hateren 1996), with A fitted
    robustly on the frequencies the PSF passes (|K|^2 > 1/2) from |Y|^2 - N sigma^2; at f = 0,
    where the power law says nothing, S_x is the measured mean: (|Y(0)|^2 - N sigma^2) / |K(0)|^2.
    (Without it a flat frame has no modelled signal, every candidate risks 0, and the first,
    strongest one halved the frame.) This needs no ground truth, only the noise level (estimated
    from ``blurred`` when not given), and it errs towards over-regularising rather than
    amplifying noise.

    Cost: one real FFT of the image in float32; the frequencies are then pooled by |K|^2 / |R|^2
    (the only way the risk depends on them besides additive weights) into bins 0.01 decade wide,
    and every candidate is scored on the bins, not on the full spectrum.

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

    padded, _ = pad_for_fft(blurred.float(), tuple(psf.shape[1:]))
    spatial = tuple(padded.shape[2:])
    dims = tuple(range(-nd, 0))
    n = math.prod(spatial)
    power = (torch.fft.rfftn(padded, dim=dims).abs() ** 2).sum(1)  # (B, *half), summed over channels
    del padded
    kernel = F.pad(psf.float(), [p for size, k in zip(reversed(spatial), reversed(psf.shape[1:]))
                                 for p in (0, size - k)])
    k2 = torch.fft.rfftn(torch.roll(kernel, [-(k // 2) for k in psf.shape[1:]], dims), dim=dims).abs() ** 2
    axes = [torch.fft.fftfreq(s, device=blurred.device) for s in spatial[:-1]]
    axes.append(torch.fft.rfftfreq(spatial[-1], device=blurred.device))
    freqs = torch.meshgrid(*axes, indexing="ij")
    f2 = sum(f**2 for f in freqs).clamp(min=1.0 / n)
    # Each column of the half spectrum but the first (and the last of an even length) stands for
    # itself and its mirror image.
    mirrored = torch.full((spatial[-1] // 2 + 1,), 2.0, device=blurred.device)
    mirrored[0] = 1.0
    if spatial[-1] % 2 == 0:
        mirrored[-1] = 1.0
    channels = blurred.shape[1]
    noise_power = (n * sig2 * channels).float().reshape((b,) + (1,) * nd)
    clean = (power - noise_power).clamp(min=0) * f2 / k2.clamp(min=1e-12)
    reliable = (k2 > 0.5).expand_as(clean) & (f2 > 1.0 / n)
    amplitude = torch.stack([c[m].median() if m.any() else c.median() for c, m in zip(clean, reliable)])
    del clean, reliable
    prior = amplitude.reshape((b,) + (1,) * nd) / f2  # (B, *half)
    dc = (slice(None),) + (0,) * nd
    prior[dc] = (power[dc] - noise_power.reshape(b)).clamp(min=0) / k2[dc].clamp(min=1e-12)
    del power
    reg = sum(2 - 2 * torch.cos(2 * math.pi * f) for f in freqs) ** 2 if regularizer == "laplacian" else 1.0
    del freqs, f2
    reg = torch.as_tensor(reg, dtype=torch.float32, device=blurred.device).expand(k2.shape[1:])
    lambdas = torch.pow(10.0, -snr / 10).reshape(-1, 1)  # (N, 1)
    picks = []
    for item in range(b):
        # With q = |K|^2 / R the risk of one frequency is lambda^2 / (q + lambda)^2 S_x
        # + N sigma^2 q / R / (q + lambda)^2: it depends on lambda through q alone, so frequencies are
        # pooled into bins of q (0.01 decade wide) once, and all N candidates are scored on the bins.
        # Where R = 0 (the Laplacian's DC) the risk does not depend on lambda and is left out.
        k2_item = k2[item if k2.shape[0] > 1 else 0]
        used = reg > 0
        q = (k2_item[used] / reg[used]).double().clamp(min=_Q_RANGE[0], max=_Q_RANGE[1])
        weight = mirrored.expand_as(k2_item)[used].double()
        bins = ((q.log10() - math.log10(_Q_RANGE[0])) / _Q_BIN_DECADES).long()
        count = int(bins.max()) + 1

        def pooled(values: torch.Tensor) -> torch.Tensor:
            return torch.zeros(count, dtype=torch.float64, device=q.device).index_add_(0, bins, values)

        mass = pooled(weight)
        signal = pooled(prior[item][used].double() * weight)
        noise = pooled(float(noise_power[item]) * q / reg[used].double() * weight)
        occupied = mass > 0
        q_bin = (pooled(q * weight)[occupied] / mass[occupied]).reshape(1, -1)
        lam = lambdas.to(q.device)
        inverse = 1.0 / (q_bin + lam) ** 2  # (N, bins)
        risks = (lam**2 * inverse) @ signal[occupied] + inverse @ noise[occupied]
        picks.append(risks.argmin())
    return torch.stack(picks).to(blurred.device)
