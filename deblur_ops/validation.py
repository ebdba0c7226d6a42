"""Checks at the public boundary. Every message says what was expected, what came, and how to fix it."""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

FLOAT_DTYPES = (torch.float32, torch.float64)
# Smallest image side the learned paper-004 models take (IRC-Net, Motion-Net, BlindIRC); the
# evaluation crops and the napari motion widget use the same bound.
MIN_IMAGE_SIDE = 16


def is_compiling() -> bool:
    """Data-dependent checks (NaN, all-zero) are skipped while torch.compile traces."""
    return torch.compiler.is_compiling()


def require_tensor(value, name: str) -> torch.Tensor:
    """``value`` if it is a torch.Tensor, else a TypeError naming ``name``."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(
            f"{name} must be a torch.Tensor, got {type(value).__name__}; "
            f"convert with torch.as_tensor({name}, dtype=torch.float32)"
        )
    return value


def require_float(t: torch.Tensor, name: str) -> None:
    """A ValueError unless ``t`` is float32 or float64."""
    if t.dtype not in FLOAT_DTYPES:
        raise ValueError(
            f"{name} must be float32 or float64, got {t.dtype}; convert with {name}.float()"
        )


def require_nonempty(t: torch.Tensor, name: str) -> None:
    """A ValueError if ``t`` has no element."""
    if t.numel() == 0:
        raise ValueError(f"{name} is empty (shape {tuple(t.shape)}); pass at least one element")


def require_finite(t: torch.Tensor, name: str) -> None:
    """A ValueError counting the NaN/Inf values of ``t``, if any (skipped while compiling)."""
    if is_compiling():
        return
    if bool(torch.isfinite(t).all()):  # count only on failure: the int64 count is ~15% slower
        return
    bad = (~torch.isfinite(t)).sum().item()
    raise ValueError(
        f"{name} contains {bad} NaN or Inf value(s); clean it first, e.g. "
        f"torch.nan_to_num({name})"
    )


def require_same_device(t: torch.Tensor, name: str, ref: torch.Tensor, ref_name: str) -> None:
    """A ValueError unless ``t`` is on the device of ``ref``."""
    if t.device != ref.device:
        raise ValueError(
            f"{name} is on {t.device} but {ref_name} is on {ref.device}; "
            f"move both to one device, e.g. {name}.to({ref_name}.device)"
        )


def require_choice(value, name: str, choices: Sequence[str]) -> str:
    """``value`` if it is one of ``choices``, else a ValueError listing them."""
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
    """A pair (xmin, xmax) of finite numbers with xmin < xmax, as floats."""
    try:
        lo, hi = (float(v) for v in value_range)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a pair (xmin, xmax) of numbers, got {value_range!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ValueError(f"{name} must be finite with xmin < xmax, got ({lo}, {hi})")
    return lo, hi


def resolve_device(device, image) -> torch.device:
    """The device a user's ``device`` argument names; ``"auto"`` is the tensor's CUDA device, else
    CUDA when available, else the CPU. A ValueError for an unknown name or a missing CUDA device."""
    if device == "auto":
        if isinstance(image, torch.Tensor) and image.device.type != "cpu":
            return image.device
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' was requested but no CUDA device is available; use device='auto' or 'cpu'")
    return resolved


def as_float_tensor(value, name: str, device: torch.device) -> torch.Tensor:
    """A user's NumPy array or tensor as a finite, non-empty float32 tensor on ``device`` (detached).

    Raises:
        TypeError: neither a NumPy array nor a tensor.
        ValueError: complex or bool values, no element, NaN or Inf.
    """
    if isinstance(value, torch.Tensor):
        t = value.detach()
    elif isinstance(value, np.ndarray):
        t = torch.from_numpy(np.ascontiguousarray(value))
    else:
        raise TypeError(f"{name} must be a NumPy array or a torch tensor, got {type(value).__name__}; "
                        f"convert with numpy.asarray({name})")
    if t.is_complex() or t.dtype == torch.bool:
        raise ValueError(f"{name} must hold real numbers, got dtype {t.dtype}")
    if t.numel() == 0:
        raise ValueError(f"{name} is empty (shape {tuple(t.shape)}); pass at least one element")
    t = t.to(device=device, dtype=torch.float32)
    if not bool(torch.isfinite(t).all()):
        bad = int((~torch.isfinite(t)).sum())
        raise ValueError(f"{name} contains {bad} NaN or Inf value(s); clean it first, e.g. numpy.nan_to_num({name})")
    return t


def check_inputs(image, psf) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate a (B, C, *S) image and its PSF; returns the image and the PSF as (P, *k) (see
    :func:`batched_psf`)."""
    require_tensor(image, "image")
    image_spatial_dims(image)
    require_float(image, "image")
    require_nonempty(image, "image")
    require_finite(image, "image")
    return image, batched_psf(psf, image)


def check_image_2d(image: torch.Tensor, name: str) -> None:
    """A ValueError naming the method ``name`` unless ``image`` is a batch of 2D images (B, C, H, W)."""
    if image.dim() != 4:
        raise ValueError(f"{name} restores 2D images (B, C, H, W), got shape {tuple(image.shape)}")


def check_channels(image: torch.Tensor, channels: int) -> None:
    """A ValueError unless a network that takes ``channels`` can restore ``image`` (B, C, H, W): the
    same C, or a single-channel network (which restores every channel on its own)."""
    c = image.shape[1]
    if c != channels and channels != 1:
        raise ValueError(f"this network takes {channels}-channel images, got an image with {c} channels "
                         f"(shape {tuple(image.shape)})")


def check_positive(value, name: str, *, integer: bool = False, allow_zero: bool = False) -> float:
    """A Python number (not a bool) that is finite and > 0 (>= 0 with ``allow_zero``), as a float,
    or as an int with ``integer`` (which also requires a whole value)."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value >= 0 if allow_zero else value > 0) and (not integer or int(value) == value)
    if not ok:
        kind = "an integer" if integer else "a finite number"
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be {kind} {bound}, got {value!r}")
    return int(value) if integer else float(value)


def positive_int(value, name: str) -> int:
    """``value`` if it is an int >= 1 (not a bool), else a ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def positive_float(value, name: str) -> float:
    """Anything ``float()`` accepts (NumPy scalars, 0-d tensors, numbers) that is finite and > 0, as a
    float: the physical parameters of the PSF models."""
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a positive number, got {value!r}") from None
    if not (math.isfinite(x) and x > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return x


def integer_at_least(value, name: str, minimum: int) -> int:
    """A whole number >= ``minimum`` (an int or an integral float such as 3.0, not a bool), as an int."""
    if isinstance(value, bool) or int(value) != value or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def odd_size(size, name: str = "size") -> int:
    """A positive odd whole number (a PSF side, centre at ``size // 2``), as an int; the error
    suggests the nearest valid odd size."""
    if isinstance(size, bool) or int(size) != size or size < 1 or size % 2 == 0:
        raise ValueError(f"{name} must be a positive odd integer (centre at size//2), got {size!r}; "
                         f"use e.g. {name}={max(1, 2 * (int(size) // 2) + 1)}")
    return int(size)


def check_callback(callback) -> None:
    """A ValueError unless ``callback`` is None or callable (as ``callback(i, estimate)``)."""
    if callback is not None and not callable(callback):
        raise ValueError(f"callback must be callable as callback(i, estimate) or None, got {type(callback).__name__}")


def per_item(value, name: str, like: torch.Tensor) -> torch.Tensor:
    """A number, or one value per batch item, as a (B, 1, ..., 1) tensor broadcastable to ``like``;
    (B, C) values are averaged over C. A ValueError for other shapes, NaN/Inf or negative values."""
    t = torch.as_tensor(value, dtype=like.dtype, device=like.device)
    b = like.shape[0]
    if t.dim() == 2 and t.shape[0] == b:
        t = t.mean(1)
    if t.dim() > 1 or (t.dim() == 1 and t.shape[0] not in (1, b)):
        raise ValueError(f"{name} must be a number or have shape ({b},) or ({b}, C), got shape {tuple(t.shape)}")
    if not bool(torch.isfinite(t).all()) or bool((t < 0).any()):
        raise ValueError(f"{name} must be finite and >= 0, got {value!r}")
    return t.reshape((-1,) + (1,) * (like.dim() - 1)).expand((b,) + (1,) * (like.dim() - 1))
