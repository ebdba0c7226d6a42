"""Pure-PyTorch references of every custom op, with the public signatures: maths only.

They are the oracle the tests compare the kernels with, and their ``*_core`` functions are the
fallback when the compiled extension (or its kernel for a device) is missing. They favour clarity
over speed and memory, and check nothing: the public ops in :mod:`deblur_ops.ops` validate their
inputs before calling a kernel or a core, so a bug in a check cannot hide on both sides of a test.
"""
from __future__ import annotations

import math

import torch

from .boundary import crop, edge_taper, pad_for_fft, psf_to_otf

DEFAULT_SNR_DB = tuple(range(9, 66, 4))  # paper 001: 15 SNRs, 9..65 dB in steps of 4
REGULARIZERS = ("identity", "laplacian")


def laplacian_power(shape: tuple[int, ...], dtype=torch.float64, device=None) -> torch.Tensor:
    """|R|^2 of the discrete Laplacian on the rfftn grid of ``shape``: (sum_d 2 - 2 cos w_d)^2."""
    nd = len(shape)
    acc = torch.zeros((), dtype=torch.float64, device=device)
    for d, n in enumerate(shape):
        m = n // 2 + 1 if d == nd - 1 else n
        w = torch.arange(m, dtype=torch.float64, device=device) * (2 * math.pi / n)
        view = [1] * nd
        view[d] = m
        acc = acc + (2 - 2 * torch.cos(w)).reshape(view)
    return (acc * acc).to(dtype)


def wiener_stack_core(image: torch.Tensor, psf: torch.Tensor, snr_db: torch.Tensor,
                      regularizer: str) -> torch.Tensor:
    """The op itself on an already padded image: (B,C,*S), psf (P,*k), snr_db (N) -> (B,N,C,*S).

    X_j = conj(K) Y / (|K|^2 + lambda_j |R|^2), lambda_j = 10^(-snr_db_j / 10) (paper 001).
    """
    spatial = tuple(image.shape[2:])
    dims = tuple(range(-len(spatial), 0))
    image_f = torch.fft.rfftn(image, dim=dims)  # (B, C, *F)
    otf = psf_to_otf(psf, spatial)  # (P, *F)
    lambdas = torch.pow(10.0, -snr_db.to(image.dtype) / 10)
    lam = lambdas.reshape((1, -1) + (1,) * len(spatial))
    if regularizer == "laplacian":
        reg = laplacian_power(spatial, image.dtype, image.device)
    else:
        reg = torch.ones((), dtype=image.dtype, device=image.device)
    denom = (otf.real**2 + otf.imag**2).unsqueeze(1) + lam * reg  # (P, N, *F)
    safe = torch.where(denom > 0, denom, torch.ones_like(denom))
    gain = torch.where(denom > 0, otf.conj().unsqueeze(1) / safe, torch.zeros_like(safe))
    spectra = gain.unsqueeze(2) * image_f.unsqueeze(1)  # (B, N, C, *F)
    return torch.fft.irfftn(spectra, s=spatial, dim=dims)


def wiener_stack(image: torch.Tensor, psf: torch.Tensor, snr_db=None, *,
                 regularizer: str = "identity", padding: str = "reflect") -> torch.Tensor:
    """The maths of :func:`deblur_ops.wiener_stack` on valid inputs (the oracle: no input checks)."""
    if psf.dim() == image.dim() - 2:
        psf = psf[None]
    snr = torch.as_tensor(DEFAULT_SNR_DB if snr_db is None else snr_db, dtype=image.dtype,
                          device=image.device).reshape(-1)
    if padding == "reflect":
        padded, pads = pad_for_fft(image, tuple(psf.shape[1:]))
        return crop(wiener_stack_core(padded, psf, snr, regularizer), pads)
    if padding == "edge_taper":
        image = edge_taper(image, psf)
    return wiener_stack_core(image, psf, snr, regularizer)


def learnable_shrink_core(x: torch.Tensor, values: torch.Tensor, xmin: float,
                          xmax: float) -> torch.Tensor:
    """Piecewise-linear interpolation of ``values`` (C, n) at ``x`` (B, C, ...), slope 1 outside."""
    channels, n = values.shape
    inv_step = (n - 1) / (xmax - xmin)
    inside = (x >= xmin) & (x <= xmax)
    t = torch.where(inside, (x - xmin) * inv_step, torch.zeros_like(x))
    seg = t.floor().clamp(0, n - 2)
    frac = t - seg
    shape = (1, channels) + (1,) * (x.dim() - 2)
    base = torch.arange(channels, device=x.device).reshape(shape) * n + seg.long()
    flat = values.reshape(-1)
    v0, v1 = flat[base], flat[base + 1]
    inner = v0 + frac * (v1 - v0)
    above = values[:, -1].reshape(shape) + (x - xmax)
    below = values[:, 0].reshape(shape) + (x - xmin)
    return torch.where(inside, inner, torch.where(x > xmax, above, below))


def learnable_shrink(x: torch.Tensor, values: torch.Tensor, value_range) -> torch.Tensor:
    """The maths of :func:`deblur_ops.learnable_shrink` on valid inputs (the oracle: no input checks)."""
    xmin, xmax = (float(a) for a in value_range)
    return learnable_shrink_core(x, values, xmin, xmax)


NU_CONV_MODES = ("gather", "scatter")
NU_CONV_PADDINGS = ("zeros", "reflect", "replicate", "circular")


def pad_index(n: int, r: int, padding: str, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Source index and validity of each position of ``[-r, n + r)`` along an axis of length ``n``.

    ``reflect`` mirrors about the edge pixels without repeating them (like ``F.pad``) and keeps
    mirroring periodically when ``r >= n``, so any filter size works on any image size.

    Returns:
        (n + 2r,) int64 indices in ``[0, n)`` and a bool mask, False where ``padding="zeros"``
        reads outside the image.
    """
    pos = torch.arange(-r, n + r, device=device)
    valid = torch.ones_like(pos, dtype=torch.bool)
    if padding == "zeros":
        valid = (pos >= 0) & (pos < n)
        src = pos.clamp(0, n - 1)
    elif padding == "replicate":
        src = pos.clamp(0, n - 1)
    elif padding == "circular":
        src = pos.remainder(n)
    elif n == 1:
        src = torch.zeros_like(pos)
    else:
        period = 2 * (n - 1)
        m = pos.remainder(period)
        src = torch.where(m >= n, period - m, m)
    return src, valid


def _pad_field(t: torch.Tensor, rows, cols, fill_invalid: bool) -> torch.Tensor:
    (ri, rv), (ci, cv) = rows, cols
    out = t.index_select(-2, ri).index_select(-1, ci)
    if fill_invalid:
        out = out * (rv[:, None] & cv[None, :]).to(out.dtype)
    return out


def nu_conv_core(x: torch.Tensor, bank: torch.Tensor, idx: torch.Tensor, weights: torch.Tensor,
                 mode: str, padding: str) -> torch.Tensor:
    """Non-uniform convolution as a loop over the filter taps; peak memory O((B+K) C H W).

    Both modes read ``x`` on the padded canvas ``xp`` and sum, over the taps (a, b) of the flipped
    filters, ``c_ab * xp`` shifted: for gather the coefficient belongs to the output pixel, for
    scatter to the (padded) source pixel, whose filter is that of the image pixel it copies.
    """
    B, _, H, W = x.shape
    _, kh, kw = bank.shape
    rh, rw = kh // 2, kw // 2
    rows = pad_index(H, rh, padding, x.device)
    cols = pad_index(W, rw, padding, x.device)
    xp = _pad_field(x, rows, cols, padding == "zeros")
    flat = bank.flip(-2, -1).reshape(bank.shape[0], kh * kw)
    idx = idx.long()
    if mode == "scatter":
        idx = _pad_field(idx, rows, cols, False)
        weights = _pad_field(weights, rows, cols, padding == "zeros")
    y = x.new_zeros(x.shape)
    for a in range(kh):
        for b in range(kw):
            coef = (weights * flat[:, a * kw + b][idx]).sum(1, keepdim=True)
            window = xp[:, :, a:a + H, b:b + W]
            if mode == "gather":
                y = y + coef * window
            else:
                y = y + (coef * xp)[:, :, a:a + H, b:b + W]
    return y


def nu_conv(x: torch.Tensor, bank: torch.Tensor, idx: torch.Tensor, weights: torch.Tensor, *,
            mode: str = "gather", padding: str = "zeros") -> torch.Tensor:
    """The maths of :func:`deblur_ops.nu_conv` on valid inputs (the oracle: no input checks)."""
    return nu_conv_core(x, bank, idx, weights, mode, padding)


def richardson_lucy_ratio_(blurred: torch.Tensor, observed: torch.Tensor, background: torch.Tensor | None,
                           floor: float) -> None:
    """blurred <- observed / max(blurred + background, floor), in place (Richardson-Lucy's y / (H x + b))."""
    if background is not None:
        blurred.add_(background)
    torch.div(observed, blurred.clamp_(min=floor), out=blurred)


def richardson_lucy_update_(correction: torch.Tensor, estimate: torch.Tensor, factor: torch.Tensor | None) -> None:
    """correction <- estimate * max(correction, 0) * factor, in place; factor (P, 1, *S) broadcasts
    over (B, C, *S) (Richardson-Lucy's x H^T(y / (H x + b)) / H^T 1)."""
    correction.clamp_(min=0)
    if factor is not None:
        correction.mul_(factor)
    correction.mul_(estimate)
