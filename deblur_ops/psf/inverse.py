"""Finite-support inverse filters of a filter bank (paper 004 eqs. 10-14), cached on disk."""
from __future__ import annotations

import contextlib
import hashlib
import math
import os
import tempfile
from pathlib import Path

import torch

from ..boundary import next_fast_len, psf_to_otf

__all__ = ["GRADIENT_PRIORS", "cache_dir", "inverse_filters"]

GRADIENT_PRIORS = torch.tensor([[[0, 0, 0], [0, -1, 1], [0, 0, 0]],
                                 [[0, 0, 0], [0, -1, 0], [0, 1, 0]]], dtype=torch.float64)


def cache_dir() -> Path:
    """Where computed filters are cached: ``$DEBLUR_OPS_CACHE`` or ``~/.cache/deblur_ops``."""
    return Path(os.environ.get("DEBLUR_OPS_CACHE") or Path.home() / ".cache" / "deblur_ops")


def inverse_filters(bank: torch.Tensor, size: int, prior_filters: torch.Tensor | None = None,
                    rho: float = 1e-3, snr_db: float = 40.0, *, cache: bool = True,
                    branches: bool = False) -> torch.Tensor:
    r"""Finite-support inverse filters d with d ⋆ k ≈ δ for every filter k of a bank.

    Paper 004 eqs. 10-14: the minimum-norm solution of :math:`\sum_i d_i \star k_i = \delta`,
    with :math:`k_0` the blur and :math:`k_i = \sqrt{\rho}\, g_i` the prior filters, is in the
    Fourier domain :math:`\hat d_0 = \overline{\hat k_0} / (|\hat k_0|^2 + \rho \sum_i |\hat g_i|^2
    + \lambda)` (eq. 14), with :math:`\lambda = 10^{-\mathrm{snr}/10}` a small Tikhonov term for
    frequencies that neither sees. It is computed on a grid several times larger than the
    filters, for the whole bank at once, then cropped to ``size`` x ``size`` around the centre.
    Results are cached on disk per parameter hash (see :func:`cache_dir`).

    Args:
        bank: (F, kh, kw) blur filters (e.g. from :func:`motion_bank`), odd sizes.
        size: odd side of the inverse filters; about three times the blur length or more, as
            the inverse of a motion blur decays slowly along the motion.
        prior_filters: (n, ph, pw) regularisation filters g_i, odd sizes; default the horizontal
            and vertical finite differences.
        rho: weight of the prior, >= 0.
        snr_db: Tikhonov term in dB (larger = weaker).
        cache: read/write the on-disk cache.
        branches: also return the inverse filters of the prior branches,
            :math:`\hat d_i = \sqrt{\rho}\, \overline{\hat g_i} / (\ldots)` (eq. 14 for i >= 1,
            with :math:`k_i = \sqrt{\rho}\, g_i`), which Algorithm 2.1 applies to the prior residuals.

    Returns:
        (F, size, size) tensor in bank's dtype, or (F, 1 + n, size, size) with ``branches``
        (d_0 first); :func:`deblur_ops.nu_conv` applies them in ``"gather"`` mode (each output
        pixel deconvolved with its own local filter).

    Examples:
        >>> from deblur_ops.psf import motion_bank
        >>> bank, _ = motion_bank(lengths=[1, 5], angles=[0, 90], size=7)
        >>> inverse_filters(bank, 15, cache=False).shape
        torch.Size([3, 15, 15])
    """
    if not isinstance(bank, torch.Tensor) or bank.dim() != 3 or not bank.is_floating_point():
        raise ValueError(f"bank must be a floating (F, kh, kw) tensor, got "
                         f"{tuple(getattr(bank, 'shape', ()))}; see motion_bank")
    priors = GRADIENT_PRIORS if prior_filters is None else prior_filters
    if not isinstance(priors, torch.Tensor) or priors.dim() != 3:
        raise ValueError(f"prior_filters must be an (n, ph, pw) tensor, got "
                         f"{tuple(getattr(priors, 'shape', ()))}")
    for name, t in (("bank", bank), ("prior_filters", priors)):
        if t.shape[1] % 2 == 0 or t.shape[2] % 2 == 0:
            raise ValueError(f"{name} sizes must be odd (centre at k // 2), got "
                             f"{tuple(t.shape[1:])}")
    if int(size) != size or size < 1 or size % 2 == 0:
        raise ValueError(f"size must be a positive odd integer, got {size}")
    if not (math.isfinite(rho) and rho >= 0 and math.isfinite(snr_db)):
        raise ValueError(f"rho must be finite and >= 0 and snr_db finite, got {rho}, {snr_db}")
    size = int(size)
    b64 = bank.detach().double().cpu().contiguous()
    p64 = priors.detach().double().cpu().contiguous()
    key = hashlib.sha256()
    for part in (b"inverse_filters-v1", b64.numpy().tobytes(), str(tuple(b64.shape)).encode(),
                 p64.numpy().tobytes(), str(tuple(p64.shape)).encode(),
                 repr((size, float(rho), float(snr_db))).encode(),
                 b"branches" if branches else b""):
        key.update(part)
    path = cache_dir() / f"inverse_filters_{key.hexdigest()[:32]}.pt"
    if cache:
        cached = _read_cache(path, (len(b64), 1 + len(p64)) if branches else (len(b64),), size)
        if cached is not None:
            return cached.to(bank.dtype).to(bank.device)

    n = next_fast_len(2 * max(size, *b64.shape[1:], *p64.shape[1:]) + 1)
    shape = (n, n)
    k_hat = psf_to_otf(b64, shape)  # (F, n, n//2+1)
    g_hat = psf_to_otf(p64, shape)
    denom = k_hat.abs() ** 2 + rho * (g_hat.abs() ** 2).sum(0) + 10 ** (-snr_db / 10)
    numerators = k_hat.conj()
    if branches:
        numerators = torch.cat([numerators[:, None],
                                (math.sqrt(rho) * g_hat.conj())[None].expand(len(b64), -1, -1, -1)], 1)
        denom = denom[:, None]
    d = torch.fft.irfftn(numerators / denom, s=shape, dim=(-2, -1))
    r = size // 2
    d = torch.roll(d, shifts=(r, r), dims=(-2, -1))[..., :size, :size]
    # The exact inverse of a box-like blur is a slowly decaying comb; a Hann taper instead of a hard
    # crop keeps the truncation from adding ringing and a DC error.
    taper = torch.hann_window(size + 2, periodic=False, dtype=torch.float64)[1:-1]
    d = (d * taper[:, None] * taper[None, :]).contiguous()
    if cache:
        _write_cache(path, d)
    return d.to(bank.dtype).to(bank.device)


def _read_cache(path: Path, leading: tuple[int, ...], size: int) -> torch.Tensor | None:
    """The cached filters, or None when the file is missing, unreadable or not what this key needs.

    A file cut short by a killed process, or written by another version, is recomputed and
    replaced rather than failing the restoration that asked for it.
    """
    try:
        d = torch.load(path, weights_only=True)
    except Exception:  # noqa: BLE001 - missing, truncated, foreign or unsafe: all a cache miss
        return None
    expected = leading + (size, size)
    if not isinstance(d, torch.Tensor) or tuple(d.shape) != expected or not bool(torch.isfinite(d).all()):
        return None
    return d


def _write_cache(path: Path, d: torch.Tensor) -> None:
    # A unique temporary name per writer (threads of one process share a pid) and an atomic
    # rename: readers see either no file or a complete one, and concurrent writers of the same
    # key each replace it with identical contents.
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.stem + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(d, f)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
