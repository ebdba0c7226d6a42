"""Shared pieces of the FFT-based methods: input checks, the boundary-extended domain, gradients."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .. import validation as v
from ..boundary import crop, next_fast_len, pad_for_fft, psf_to_otf

# "zeros" reproduces scipy/skimage's mode='same' convolution (the scene is zero outside the image).
PADDINGS = ("reflect", "circular", "zeros")


def check_inputs(image, psf) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate a (B, C, *S) image and its PSF; returns the image and the PSF as (P, *k)."""
    v.require_tensor(image, "image")
    v.image_spatial_dims(image)
    v.require_float(image, "image")
    v.require_nonempty(image, "image")
    v.require_finite(image, "image")
    return image, v.batched_psf(psf, image)


def data_scale(image: torch.Tensor) -> torch.Tensor:
    """max |image| per batch item as (B, 1, ..., 1), 1 for an all-zero item.

    Dividing by it brings any finite image into [-1, 1], where the squares, norms and FFT sums of
    the iterative methods cannot overflow (a float32 image of magnitude 1e30 overflowed to NaN).
    """
    peak = image.abs().amax(dim=tuple(range(1, image.dim())), keepdim=True)
    return torch.where(peak > 0, peak, torch.ones_like(peak))


def require_finite_result(result: torch.Tensor, method: str) -> torch.Tensor:
    """Raise instead of returning NaN/Inf that a method produced from finite inputs."""
    if not bool(torch.isfinite(result).all()):
        raise FloatingPointError(
            f"{method} produced NaN or Inf values from finite inputs (an overflow of the input's "
            f"dtype); pass float64 input, or rescale the image and pass weight= explicitly"
        )
    return result


def check_positive(value, name: str, *, integer: bool = False, allow_zero: bool = False) -> float:
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


def check_image_2d(image: torch.Tensor, name: str) -> None:
    """A ValueError naming the method ``name`` unless ``image`` is a batch of 2D images (B, C, H, W)."""
    if image.dim() != 4:
        raise ValueError(f"{name} restores 2D images (B, C, H, W), got shape {tuple(image.shape)}")


def check_callback(callback) -> None:
    if callback is not None and not callable(callback):
        raise ValueError(f"callback must be callable as callback(i, estimate) or None, got {type(callback).__name__}")


def per_item(value, name: str, like: torch.Tensor) -> torch.Tensor:
    """A number, or one value per batch item, as a (B, 1, ..., 1) tensor broadcastable to ``like``."""
    t = torch.as_tensor(value, dtype=like.dtype, device=like.device)
    b = like.shape[0]
    if t.dim() == 2 and t.shape[0] == b:
        t = t.mean(1)
    if t.dim() > 1 or (t.dim() == 1 and t.shape[0] not in (1, b)):
        raise ValueError(f"{name} must be a number or have shape ({b},) or ({b}, C), got shape {tuple(t.shape)}")
    if not bool(torch.isfinite(t).all()) or bool((t < 0).any()):
        raise ValueError(f"{name} must be finite and >= 0, got {value!r}")
    return t.reshape((-1,) + (1,) * (like.dim() - 1)).expand((b,) + (1,) * (like.dim() - 1))


def noise_sigma_per_item(image: torch.Tensor, noise_sigma) -> torch.Tensor:
    """The given noise level, or Immerkaer's estimate averaged over channels and (3D) planes: (B,).

    The estimate is at least the rounding error of the item's values (float epsilon times its
    largest magnitude, or epsilon for an all-zero item): a blank or constant frame estimates
    exactly 0, and a zero noise level would give the noise-derived weights of the TV methods
    the invalid value 0 (and IRC-Net's shrinkage a 0/0).
    """
    if noise_sigma is not None:
        return per_item(noise_sigma, "noise_sigma", image).reshape(-1)
    from ..data.noise import estimate_noise_sigma

    b, h, w = image.shape[0], image.shape[-2], image.shape[-1]
    if h < 3 or w < 3:
        raise ValueError(f"estimating the noise needs planes of at least 3x3, got {h}x{w}; pass noise_sigma")
    estimate = estimate_noise_sigma(image.reshape(b, -1, h, w)).mean(1)
    magnitude = image.detach().abs().reshape(b, -1).amax(1)
    floor = torch.finfo(image.dtype).eps * torch.where(magnitude > 0, magnitude, torch.ones_like(magnitude))
    return torch.maximum(estimate, floor)


class FFTDomain:
    """The image extended for a boundary mode, and fast convolutions with the PSF on it.

    ``reflect`` pads by at least the PSF size (to a fast FFT length) so that the circular wrap of
    the FFT falls into the mirrored margin, not across the image; ``circular`` uses the image as
    is; ``zeros`` pads with zeros far enough that nothing wraps, which is scipy's ``mode="same"``.

    Args:
        image: (B, C, *S).
        psf: (P, *k) with P in {1, B}.
        padding: one of :data:`PADDINGS`.
    """

    def __init__(self, image: torch.Tensor, psf: torch.Tensor, padding: str):
        v.require_choice(padding, "padding", PADDINGS)
        nd = psf.dim() - 1
        ksize = tuple(psf.shape[1:])
        spatial = tuple(image.shape[2:])
        self.mask = None
        if padding == "reflect":
            self.data, self.pads = pad_for_fft(image, ksize)
        elif padding == "circular":
            self.data, self.pads = image, [(0, 0)] * nd
        else:
            self.pads = [(0, next_fast_len(n + k - 1) - n) for n, k in zip(spatial, ksize)]
            flat = [p for before_after in reversed(self.pads) for p in before_after]
            self.data = F.pad(image, flat)
            self.mask = F.pad(torch.ones_like(image[:1, :1]), flat)
        self.shape = tuple(self.data.shape[2:])
        self.dims = tuple(range(-nd, 0))
        otf = psf_to_otf(psf, self.shape)
        self.otf = otf.reshape((otf.shape[0], 1) + otf.shape[1:])  # (P, 1, *F) broadcasts over C

    def spectrum(self, x: torch.Tensor) -> torch.Tensor:
        return torch.fft.rfftn(x, dim=self.dims)

    def spatial(self, spectrum: torch.Tensor) -> torch.Tensor:
        return torch.fft.irfftn(spectrum, s=self.shape, dim=self.dims)

    def blur(self, x: torch.Tensor) -> torch.Tensor:
        return self.spatial(self.spectrum(x) * self.otf)

    def blur_adjoint(self, x: torch.Tensor) -> torch.Tensor:
        return self.spatial(self.spectrum(x) * self.otf.conj())

    def restrict(self, x: torch.Tensor) -> torch.Tensor:
        """Zero outside the image for ``zeros`` padding (the unknowns live on the image only)."""
        return x if self.mask is None else x * self.mask

    def crop(self, x: torch.Tensor) -> torch.Tensor:
        return crop(x, self.pads)


def gradient(x: torch.Tensor, nd: int) -> list[torch.Tensor]:
    """Circular forward differences x[i+1] - x[i] along each of the last ``nd`` dims."""
    return [torch.roll(x, -1, dims=d) - x for d in range(-nd, 0)]


def divergence(fields: list[torch.Tensor]) -> torch.Tensor:
    """Minus the adjoint of :func:`gradient`: backward differences summed over the dims."""
    nd = len(fields)
    return sum(f - torch.roll(f, 1, dims=d) for f, d in zip(fields, range(-nd, 0)))


def gradient_otfs(shape: tuple[int, ...], dtype, device) -> list[torch.Tensor]:
    """rfftn transfer functions of :func:`gradient` on a grid of ``shape``: exp(i w_d) - 1."""
    nd = len(shape)
    delta = torch.zeros(shape, dtype=dtype, device=device)
    delta[(0,) * nd] = 1
    return [torch.fft.rfftn(g, dim=tuple(range(-nd, 0))) for g in gradient(delta, nd)]
