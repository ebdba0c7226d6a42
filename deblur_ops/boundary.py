"""Boundary handling for FFT-based restoration: keep circular wrap-around from causing ringing.

``pad_for_fft`` reflects the image outwards by at least the PSF size and up to a fast FFT length;
``edge_taper`` blends the borders with a circularly blurred copy so the image becomes quasi-periodic
(the approach of MATLAB's ``edgetaper``); ``crop`` undoes the padding.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

PADDINGS = ("reflect", "edge_taper", "circular")


def next_fast_len(n: int) -> int:
    """Smallest m >= n whose only prime factors are 2, 3 and 5 (fast for pocketfft and cuFFT)."""
    m = max(1, int(n))
    while True:
        r = m
        for p in (2, 3, 5):
            while r % p == 0:
                r //= p
        if r == 1:
            return m
        m += 1


def reflect_dim(x: torch.Tensor, dim: int, before: int, after: int) -> torch.Tensor:
    """Mirror ``x`` along ``dim`` by ``before`` and ``after`` samples (edge not repeated, as
    ``numpy.pad(mode="reflect")``), for any margin: a size-1 dim is repeated."""
    # torch's reflect needs pad < size; grow in steps so that any margin works on small images.
    while before > 0 or after > 0:
        n = x.shape[dim]
        b, a = min(before, n - 1), min(after, n - 1)
        if n == 1:
            return x.expand(*x.shape[:dim], before + after + 1, *x.shape[dim + 1:]).contiguous()
        parts = []
        if b:
            parts.append(x.narrow(dim, 1, b).flip(dim))
        parts.append(x)
        if a:
            parts.append(x.narrow(dim, n - 1 - a, a).flip(dim))
        x = torch.cat(parts, dim)
        before, after = before - b, after - a
    return x


def fft_pads(spatial: tuple[int, ...], ksize: tuple[int, ...]) -> list[tuple[int, int]]:
    """(before, after) margins per spatial dim: at least the PSF size, rounded up to a fast length."""
    pads = []
    for n, k in zip(spatial, ksize):
        total = next_fast_len(n + 2 * k) - n
        pads.append((total // 2, total - total // 2))
    return pads


def pad_for_fft(x: torch.Tensor, ksize: tuple[int, ...]) -> tuple[torch.Tensor, list[tuple[int, int]]]:
    """Reflect-pad the trailing ``len(ksize)`` dims of ``x``; returns the padded tensor and margins."""
    nd = len(ksize)
    pads = fft_pads(tuple(x.shape[-nd:]), ksize)
    for d, (before, after) in enumerate(pads):
        x = reflect_dim(x, x.dim() - nd + d, before, after)
    return x, pads


def crop(x: torch.Tensor, pads: list[tuple[int, int]]) -> torch.Tensor:
    nd = len(pads)
    for d, (before, after) in enumerate(pads):
        dim = x.dim() - nd + d
        x = x.narrow(dim, before, x.shape[dim] - before - after)
    return x


def psf_to_otf(psf: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """rfftn of ``psf`` (..., *k) zero-padded to ``shape`` with its centre k//2 moved to the origin."""
    nd = len(shape)
    ksize = psf.shape[-nd:]
    pad = []
    for n, k in zip(reversed(shape), reversed(ksize)):
        pad += [0, n - k]
    padded = F.pad(psf, pad)
    shifted = torch.roll(padded, shifts=[-(k // 2) for k in ksize], dims=list(range(-nd, 0)))
    return torch.fft.rfftn(shifted, dim=tuple(range(-nd, 0)))


def edge_taper(x: torch.Tensor, psf: torch.Tensor) -> torch.Tensor:
    """Blend the borders of ``x`` (..., *S) with ``x`` circularly blurred by ``psf`` (P, *k).

    The weight of the blurred copy is the normalised autocorrelation of the PSF's projection on each
    axis, placed around the wrap point, so that the result joins smoothly across opposite borders.
    """
    nd = psf.dim() - 1
    spatial = tuple(x.shape[-nd:])
    dims = tuple(range(-nd, 0))
    otf = psf_to_otf(psf, spatial)
    view = (psf.shape[0],) + (1,) * (x.dim() - nd - 1) + otf.shape[1:]
    blurred = torch.fft.irfftn(torch.fft.rfftn(x, dim=dims) * otf.reshape(view), s=spatial, dim=dims)
    alpha = torch.ones(spatial, dtype=x.dtype, device=x.device)
    for d in range(nd):
        other = [i + 1 for i in range(nd) if i != d]
        proj = psf.abs().sum(dim=other).mean(0) if other else psf.abs().mean(0)
        n = spatial[d]
        spec = torch.fft.rfft(proj, n=n)
        autocorr = torch.fft.irfft(spec * spec.conj(), n=n)
        beta = autocorr / autocorr.max()
        shape = [1] * nd
        shape[d] = n
        alpha = alpha * (1 - beta).reshape(shape)
    return alpha * x + (1 - alpha) * blurred
