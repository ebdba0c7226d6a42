"""Pure-PyTorch references of every custom op, with the public signatures.

They are the fallback when the compiled extension (or its kernel for a device) is missing, and the
oracle the tests compare the kernels with. They favour clarity over speed and memory.
"""
from __future__ import annotations

import math

import torch

from . import validation as v
from .boundary import PADDINGS, crop, edge_taper, pad_for_fft, psf_to_otf

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


def wiener_stack_pipeline(image, psf, snr_db, regularizer, padding, core):
    """Validation, boundary handling and cropping around a Wiener-stack ``core``."""
    v.require_tensor(image, "image")
    v.image_spatial_dims(image)
    v.require_float(image, "image")
    v.require_nonempty(image, "image")
    v.require_choice(regularizer, "regularizer", REGULARIZERS)
    v.require_choice(padding, "padding", PADDINGS)
    psf = v.batched_psf(psf, image)
    v.require_finite(image, "image")
    snr = v.as_1d_float(DEFAULT_SNR_DB if snr_db is None else snr_db, "snr_db", image)
    if padding == "reflect":
        padded, pads = pad_for_fft(image, tuple(psf.shape[1:]))
        out = crop(core(padded, psf, snr, regularizer), pads)
        # With dynamic shapes the cropped view's strides are products of symbolic padded lengths,
        # and Inductor's range analysis of their ratios fails (ValueRangeError) when it checks
        # the output's stride order; a dense output has plain strides.
        return out.contiguous() if v.is_compiling() else out
    if padding == "edge_taper":
        image = edge_taper(image, psf)
    return core(image, psf, snr, regularizer)


def wiener_stack(image: torch.Tensor, psf: torch.Tensor, snr_db=None, *,
                 regularizer: str = "identity", padding: str = "reflect") -> torch.Tensor:
    """Pure-PyTorch :func:`deblur_ops.wiener_stack` (same signature and result)."""
    return wiener_stack_pipeline(image, psf, snr_db, regularizer, padding, wiener_stack_core)


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


def validate_shrink(x, values, value_range) -> tuple[float, float]:
    v.require_tensor(x, "x")
    v.require_tensor(values, "values")
    v.require_float(x, "x")
    if x.dim() < 2:
        raise ValueError(f"x must have shape (B, C, ...), got shape {tuple(x.shape)}")
    if values.dim() != 2 or values.shape[0] != x.shape[1] or values.shape[1] < 2:
        raise ValueError(
            f"values must have shape (C, n_knots) = ({x.shape[1]}, n >= 2) for x of shape "
            f"{tuple(x.shape)}, got shape {tuple(values.shape)}"
        )
    if values.dtype != x.dtype:
        raise ValueError(f"values dtype {values.dtype} must match x dtype {x.dtype}; use values.to(x.dtype)")
    v.require_same_device(values, "values", x, "x")
    v.require_finite(values, "values")
    v.require_finite(x, "x")
    xmin, xmax = v.value_range_pair(value_range)
    require_range_representable(xmin, xmax, values.shape[1], x.dtype)
    return xmin, xmax


def require_range_representable(xmin: float, xmax: float, n_knots: int, dtype: torch.dtype) -> None:
    """The kernels compute x - xmin and the knot density (n - 1) / (xmax - xmin) in x's dtype:
    a range that overflows or collapses there would give Inf/NaN (e.g. (-1e38, 3e38) in float32).
    Skipped while torch.compile traces (the rounding test is a tensor op); the kernels check it too."""
    if v.is_compiling():
        return
    info = torch.finfo(dtype)
    ok = max(abs(xmin), abs(xmax)) <= info.max
    if ok:
        lo, hi = torch.tensor([xmin, xmax], dtype=dtype)
        density = (n_knots - 1) / (xmax - xmin)
        ok = bool(lo < hi) and math.isfinite(float(hi - lo)) and density <= info.max
        ok = ok and float(torch.tensor(density, dtype=dtype)) > 0
    if not ok:
        raise ValueError(
            f"value_range ({xmin}, {xmax}) with {n_knots} knots is not representable in {dtype}: "
            f"xmin, xmax, the width xmax - xmin and the knot density (n_knots - 1) / width must be "
            f"finite and non-zero in x's dtype; rescale x and the range, or use float64"
        )


def learnable_shrink(x: torch.Tensor, values: torch.Tensor, value_range) -> torch.Tensor:
    """Pure-PyTorch :func:`deblur_ops.learnable_shrink` (same signature and result)."""
    xmin, xmax = validate_shrink(x, values, value_range)
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


def validate_nu_conv(x, bank, idx, weights, mode: str, padding: str) -> None:
    """Checks of :func:`deblur_ops.nu_conv`'s inputs; raises ValueError/TypeError with a fix."""
    for t, name in ((x, "x"), (bank, "bank"), (idx, "idx"), (weights, "weights")):
        v.require_tensor(t, name)
    v.require_choice(mode, "mode", NU_CONV_MODES)
    v.require_choice(padding, "padding", NU_CONV_PADDINGS)
    v.require_float(x, "x")
    if x.dim() != 4:
        raise ValueError(
            f"x must have shape (B, C, H, W), got shape {tuple(x.shape)}; add missing batch/channel "
            f"dims with x[None, None] or x[None]"
        )
    v.require_nonempty(x, "x")
    if bank.dim() != 3 or bank.shape[0] < 1:
        raise ValueError(
            f"bank must have shape (F, kh, kw) with F >= 1 filters, got shape {tuple(bank.shape)}; "
            f"stack the filters with torch.stack(filters)"
        )
    if bank.shape[1] % 2 == 0 or bank.shape[2] % 2 == 0:
        raise ValueError(
            f"bank filter sizes must be odd so that the centre is a pixel, got (kh, kw) = "
            f"{tuple(bank.shape[1:])}; pad the filters with a row/column of zeros"
        )
    if bank.dtype != x.dtype:
        raise ValueError(f"bank dtype {bank.dtype} must match x dtype {x.dtype}; use bank.to(x.dtype)")
    B, _, H, W = x.shape
    for t, name in ((idx, "idx"), (weights, "weights")):
        v.require_same_device(t, name, x, "x")
        if t.dim() != 4 or t.shape[0] not in (1, B) or tuple(t.shape[2:]) != (H, W) or t.shape[1] < 1:
            raise ValueError(
                f"{name} must have shape (B or 1, K, H, W) = ({B} or 1, K >= 1, {H}, {W}) for x of "
                f"shape {tuple(x.shape)}, got shape {tuple(t.shape)}"
            )
    v.require_same_device(bank, "bank", x, "x")
    if idx.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"idx must be int32 or int64, got {idx.dtype}; use idx.long()")
    if weights.dtype != x.dtype:
        raise ValueError(
            f"weights dtype {weights.dtype} must match x dtype {x.dtype}; use weights.to(x.dtype)"
        )
    if idx.shape[1] != weights.shape[1]:
        raise ValueError(
            f"idx and weights must have the same K, got idx shape {tuple(idx.shape)} and weights "
            f"shape {tuple(weights.shape)}"
        )
    if not v.is_compiling():
        lo, hi = int(idx.min()), int(idx.max())
        if lo < 0 or hi >= bank.shape[0]:
            raise ValueError(
                f"idx values must lie in [0, {bank.shape[0] - 1}] (bank has {bank.shape[0]} "
                f"filters), got range [{lo}, {hi}]; clamp or remap idx"
            )
    v.require_finite(weights, "weights")
    v.require_finite(bank, "bank")


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
    """Pure-PyTorch :func:`deblur_ops.nu_conv` (same signature and result)."""
    validate_nu_conv(x, bank, idx, weights, mode, padding)
    return nu_conv_core(x, bank, idx, weights, mode, padding)
