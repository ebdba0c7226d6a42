"""Checks at the public boundary. Every message says what was expected, what came, and how to fix it."""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch

FLOAT_DTYPES = (torch.float32, torch.float64)


def is_compiling() -> bool:
    """Data-dependent checks (NaN, all-zero) are skipped while torch.compile traces."""
    return torch.compiler.is_compiling()


def require_tensor(value, name: str) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise TypeError(
            f"{name} must be a torch.Tensor, got {type(value).__name__}; "
            f"convert with torch.as_tensor({name}, dtype=torch.float32)"
        )
    return value


def require_float(t: torch.Tensor, name: str) -> None:
    if t.dtype not in FLOAT_DTYPES:
        raise ValueError(
            f"{name} must be float32 or float64, got {t.dtype}; convert with {name}.float()"
        )


def require_nonempty(t: torch.Tensor, name: str) -> None:
    if t.numel() == 0:
        raise ValueError(f"{name} is empty (shape {tuple(t.shape)}); pass at least one element")


def require_finite(t: torch.Tensor, name: str) -> None:
    if is_compiling():
        return
    if bool(torch.isfinite(t).all()):  # count only on failure: the int64 count is ~15% slower
        return
    bad = (~torch.isfinite(t)).sum().item()
    if bad:
        raise ValueError(
            f"{name} contains {bad} NaN or Inf value(s); clean it first, e.g. "
            f"torch.nan_to_num({name})"
        )


def require_same_device(t: torch.Tensor, name: str, ref: torch.Tensor, ref_name: str) -> None:
    if t.device != ref.device:
        raise ValueError(
            f"{name} is on {t.device} but {ref_name} is on {ref.device}; "
            f"move both to one device, e.g. {name}.to({ref_name}.device)"
        )


def require_choice(value, name: str, choices: Sequence[str]) -> str:
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}")
    return value


def image_spatial_dims(image: torch.Tensor, name: str = "image") -> int:
    """Number of spatial dims of a (B, C, H, W) or (B, C, D, H, W) tensor."""
    if image.dim() not in (4, 5):
        raise ValueError(
            f"{name} must have shape (B, C, H, W) or (B, C, D, H, W), got shape "
            f"{tuple(image.shape)}; add missing batch/channel dims with {name}[None, None]"
        )
    return image.dim() - 2


def batched_psf(psf: torch.Tensor, image: torch.Tensor, name: str = "psf") -> torch.Tensor:
    """Validate a PSF for ``image`` and return it as (P, *k) with P in {1, B}, image's dtype."""
    require_tensor(psf, name)
    spatial = image.dim() - 2
    dims = "(kh, kw)" if spatial == 2 else "(kd, kh, kw)"
    if psf.dim() == spatial:
        psf = psf.unsqueeze(0)
    elif psf.dim() != spatial + 1 or psf.shape[0] != image.shape[0]:
        raise ValueError(
            f"{name} must have shape {dims} or (B, {dims[1:]} with B = {image.shape[0]} for an "
            f"image of shape {tuple(image.shape)}, got shape {tuple(psf.shape)}"
        )
    require_float(psf, name)
    require_same_device(psf, name, image, "image")
    ksize = tuple(psf.shape[1:])
    if any(k % 2 == 0 for k in ksize):
        raise ValueError(
            f"{name} sizes must be odd so that its centre is a pixel, got {ksize}; pad it with "
            f"one row/column of zeros or use deblur_ops.psf helpers to build it"
        )
    if any(k > n for k, n in zip(ksize, image.shape[2:])):
        raise ValueError(
            f"{name} of size {ksize} is larger than the image {tuple(image.shape[2:])}; "
            f"crop the PSF or pad the image"
        )
    require_finite(psf, name)
    if not is_compiling():
        if bool((psf.flatten(1).abs().sum(1) == 0).any()):
            raise ValueError(f"{name} is all zeros; a PSF must have non-zero energy (usually sum 1)")
        # A blur passes the mean through with gain sum(psf): at sum <= 0 the Wiener and ADMM
        # denominators vanish at frequency 0 (all-NaN results) and iterative methods diverge.
        sums = psf.flatten(1).double().sum(1)
        bad = ~(torch.isfinite(sums) & (sums > 0))
        if bool(bad.any()):
            item = int(bad.nonzero()[0, 0])
            raise ValueError(
                f"{name} must have a positive, finite sum (usually 1), got sum {float(sums[item]):.6g}"
                + (f" for batch item {item}" if psf.shape[0] > 1 else "")
                + f"; normalise it with {name} / {name}.sum(), or pass the PSF, not a derivative filter"
            )
    return psf.to(image.dtype)


def as_1d_float(value, name: str, like: torch.Tensor) -> torch.Tensor:
    """A number, a sequence or a tensor as a finite 1-D tensor on ``like``'s device and dtype."""
    if isinstance(value, torch.Tensor):
        require_same_device(value, name, like, "image")
        t = value
    else:
        t = torch.as_tensor(value, dtype=like.dtype, device=like.device)
    if t.dim() == 0:
        t = t.reshape(1)
    if t.dim() != 1 or t.numel() == 0:
        raise ValueError(f"{name} must be a non-empty 1-D tensor, got shape {tuple(t.shape)}")
    require_finite(t, name)
    return t.to(device=like.device, dtype=like.dtype)


def value_range_pair(value_range, name: str = "value_range") -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in value_range)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a pair (xmin, xmax) of numbers, got {value_range!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ValueError(f"{name} must be finite with xmin < xmax, got ({lo}, {hi})")
    return lo, hi
