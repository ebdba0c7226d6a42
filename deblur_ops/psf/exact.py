"""The exact forward model of spatially varying linear motion, for making data.

:class:`~deblur_ops.psf.MotionField` blurs through a bank: each pixel's line is the bilinear blend
of the 4 nearest bank lines (paper 004 eq. 17). A blend of two lines of different lengths or angles
is not the line in between, so that model has an error of its own. Training and evaluating a
solver on data made through the solver's own model hides that error (the "inverse crime"). This
module blurs with the line each pixel really has: every source pixel p spreads its value along
:func:`~deblur_ops.psf.linear_motion_kernel` (length(p), angle(p)) at its continuous length and
angle (the scatter model ``y(p + q) += x(p) k_p(q)``), so the two models agree exactly where the
field sits on bank nodes and differ by the interpolation error elsewhere.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["exact_motion_blur", "line_kernels"]

_TORCH_PAD = {"zeros": "constant", "reflect": "reflect", "replicate": "replicate", "circular": "circular"}


def line_kernels(length: torch.Tensor, angle_deg: torch.Tensor, size: int) -> torch.Tensor:
    """Anti-aliased line PSFs for many (length, angle) pairs at once, each summing to 1.

    The batched form of :func:`~deblur_ops.psf.linear_motion_kernel` (same formula: a unit-width
    tent around the segment), in the dtype of ``length``.

    Args:
        length: (N,) full line lengths in pixels, each >= 1.
        angle_deg: (N,) angles in degrees, counter-clockwise from +x, rows pointing down.
        size: odd side of the kernels; must hold the longest line.

    Returns:
        (N, size, size) kernels.

    Examples:
        >>> import torch
        >>> from deblur_ops.psf import linear_motion_kernel
        >>> k = line_kernels(torch.tensor([7.3], dtype=torch.float64), torch.tensor([33.0], dtype=torch.float64), 9)
        >>> bool(torch.allclose(k[0], linear_motion_kernel(7.3, 33.0, 9, dtype=torch.float64)))
        True
    """
    c = size // 2
    coords = torch.arange(size, dtype=length.dtype, device=length.device) - c
    row, col = coords.view(1, size, 1), coords.view(1, 1, size)
    half = ((length - 1) / 2).view(-1, 1, 1)
    theta = torch.deg2rad(angle_deg).view(-1, 1, 1)
    dx, dy = torch.cos(theta), -torch.sin(theta)  # rows point down: a rising line has dy < 0
    along = torch.maximum(torch.minimum(col * dx + row * dy, half), -half)
    kernel = (1 - torch.hypot(col - along * dx, row - along * dy)).clamp(min=0)
    return kernel / kernel.sum((-2, -1), keepdim=True)


def exact_motion_blur(image: torch.Tensor, length, angle, *, padding: str = "reflect",
                      rows_per_chunk: int | None = None) -> torch.Tensor:
    """Blur with each pixel's own line (continuous length and angle), the scatter model.

    ``y(p + q) = sum_p x(p) k_{length(p), angle(p)}(q)``: each scene point is smeared by its own
    anti-aliased line. Outside the image the scene and the field are extended by ``padding``
    (as :func:`deblur_ops.nu_conv` does in scatter mode), and the result is cropped to the image.
    Work and memory grow with the pixel count times the square of the longest line; rows are
    processed in chunks to bound memory.

    Args:
        image: (H, W) or (B, C, H, W) floating tensor.
        length: (H, W) lengths in pixels (>= 1), tensor or array.
        angle: (H, W) angles in degrees.
        padding: ``"zeros"``, ``"reflect"``, ``"replicate"`` or ``"circular"``.
        rows_per_chunk: source rows per chunk (default: about 64 MB of kernels per chunk).

    Returns:
        The blurred image, the shape and dtype of ``image``.

    Raises:
        ValueError: wrong shapes or types, lengths < 1, NaN/Inf, unknown padding.

    Examples:
        >>> import torch
        >>> x = torch.zeros(9, 9); x[4, 4] = 1.0
        >>> y = exact_motion_blur(x, torch.full((9, 9), 5.0), torch.zeros(9, 9), padding="zeros")
        >>> [round(v, 3) for v in y[4].tolist()]
        [0.0, 0.0, 0.2, 0.2, 0.2, 0.2, 0.2, 0.0, 0.0]
    """
    if not isinstance(image, torch.Tensor) or not image.is_floating_point() or image.dim() not in (2, 4):
        raise ValueError(f"image must be a floating (H, W) or (B, C, H, W) tensor, got "
                         f"{type(image).__name__} of shape {tuple(getattr(image, 'shape', ()))}")
    if padding not in _TORCH_PAD:
        raise ValueError(f"padding must be one of zeros, reflect, replicate, circular, got {padding!r}")
    x = image[None, None] if image.dim() == 2 else image
    B, C, H, W = x.shape
    maps = []
    for value, name in ((length, "length"), (angle, "angle")):
        t = torch.as_tensor(value, dtype=torch.float64).detach().cpu()
        if t.shape != (H, W):
            raise ValueError(f"{name} must have the image's shape {(H, W)}, got {tuple(t.shape)}")
        if not bool(torch.isfinite(t).all()):
            raise ValueError(f"{name} contains NaN or Inf values")
        maps.append(t)
    length_map, angle_map = maps
    if float(length_map.min()) < 1:
        raise ValueError(f"length must be >= 1 pixel everywhere, got a minimum of {float(length_map.min())}")
    half = (float(length_map.max()) - 1) / 2
    r = math.ceil(half - 1e-9)
    size = 2 * r + 1
    mode = _TORCH_PAD[padding]
    if padding == "reflect" and r >= min(H, W):
        raise ValueError(f"reflect padding needs lines shorter than the image: longest {float(length_map.max())} "
                         f"px on a {H}x{W} image; use padding='zeros'")
    # Pad the scene and the field the same way, so points outside the frame blur into it.
    xp = F.pad(x, (r, r, r, r), mode=mode) if r else x
    field = torch.stack([length_map, angle_map])[None].to(x.device)
    fp = F.pad(field, (r, r, r, r), mode="replicate" if padding == "zeros" else mode)[0] if r else field[0]
    Hp, Wp = xp.shape[-2:]
    out = x.new_zeros(B, C, Hp + 2 * r, Wp + 2 * r)
    if rows_per_chunk is None:
        rows_per_chunk = max(1, (64 << 20) // (8 * Wp * size * size * max(1, B * C)))
    for r0 in range(0, Hp, rows_per_chunk):
        r1 = min(Hp, r0 + rows_per_chunk)
        # Kernels in the image's dtype: float32 halves the time (training data), float64 stays exact.
        k = line_kernels(fp[0, r0:r1].reshape(-1).to(x.dtype), fp[1, r0:r1].reshape(-1).to(x.dtype), size)
        # (B, C, n) values times (n, S*S) kernels -> fold's columns (B, C*S*S, n)
        src = xp[:, :, r0:r1].reshape(B, C, 1, -1)
        cols = (src * k.reshape(1, 1, -1, size * size).transpose(-1, -2)).reshape(B, C * size * size, -1)
        part = F.fold(cols, output_size=(r1 - r0 + 2 * r, Wp + 2 * r), kernel_size=size)
        out[:, :, r0:r1 + 2 * r] += part
    # out index i holds padded position i - r, i.e. image position i - 2r
    y = out[:, :, 2 * r:2 * r + H, 2 * r:2 * r + W]
    return y[0, 0] if image.dim() == 2 else y
