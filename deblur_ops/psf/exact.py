"""The exact forward model of spatially varying linear motion, for making data.

:class:`~deblur_ops.psf.MotionField` blurs through a bank: each pixel's line is the bilinear blend
of the 4 nearest bank lines (paper 004 eq. 17). A blend of two lines of different lengths or angles
is not the line in between, so that model has an error of its own. Training and evaluating a
solver on data made through the solver's own model hides that error (the "inverse crime"). This
module blurs with the line each pixel really has: every source pixel p spreads its value along
:func:`~deblur_ops.psf.linear_motion_kernel` (length(p), angle(p)) at its continuous length and
angle (the scatter model ``y(p + q) += x(p) k_p(q)``), so the two models agree exactly where the
field sits on bank nodes and differ by the interpolation error elsewhere.
:func:`exact_trajectory_blur` does the same for camera shake: every pixel follows one continuous
trajectory, scaled and rotated by its own amount (as a camera rotation makes the shake vary across
the frame).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["exact_motion_blur", "exact_trajectory_blur", "line_kernels", "shake_maps", "trajectory_samples"]

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


def _as_image(image) -> torch.Tensor:
    if not isinstance(image, torch.Tensor) or not image.is_floating_point() or image.dim() not in (2, 4):
        raise ValueError(f"image must be a floating (H, W) or (B, C, H, W) tensor, got "
                         f"{type(image).__name__} of shape {tuple(getattr(image, 'shape', ()))}")
    return image[None, None] if image.dim() == 2 else image


def _field_map(value, name: str, shape: tuple[int, int], *, scalar_ok: bool = False) -> torch.Tensor:
    """A finite float64 (H, W) map on the CPU (a number is broadcast where ``scalar_ok``)."""
    t = torch.as_tensor(value, dtype=torch.float64).detach().cpu()
    if scalar_ok and t.dim() == 0:
        t = t.expand(shape)
    if t.shape != shape:
        raise ValueError(f"{name} must have the image's shape {shape}" + (" or be a number" if scalar_ok else "")
                         + f", got {tuple(t.shape)}")
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} contains NaN or Inf values")
    return t


def _scatter(x: torch.Tensor, maps: torch.Tensor, r: int, padding: str, kernels, rows_per_chunk: int | None,
             bytes_per_pixel: int) -> torch.Tensor:
    """``y(p + q) = sum_p x(p) k_p(q)`` with ``k_p = kernels(maps at p)`` of side 2r+1, cropped to x.

    Outside the image the scene and the (m, H, W) maps are extended by ``padding`` (the maps by
    ``replicate`` under ``zeros``), so points outside the frame blur into it, as
    :func:`deblur_ops.nu_conv` does in scatter mode. ``kernels`` takes (m, n) map values and returns
    (n, S, S) kernels in x's dtype; rows go in chunks of about 64 MB (``bytes_per_pixel`` each).
    """
    B, C, H, W = x.shape
    size = 2 * r + 1
    mode = _TORCH_PAD[padding]
    xp = F.pad(x, (r, r, r, r), mode=mode) if r else x
    fp = F.pad(maps[None].to(x.device), (r, r, r, r), mode="replicate" if padding == "zeros" else mode)[0] if r \
        else maps.to(x.device)
    Hp, Wp = xp.shape[-2:]
    out = x.new_zeros(B, C, Hp + 2 * r, Wp + 2 * r)
    if rows_per_chunk is None:
        rows_per_chunk = max(1, (64 << 20) // (Wp * max(bytes_per_pixel, 8 * size * size * max(1, B * C))))
    for r0 in range(0, Hp, rows_per_chunk):
        r1 = min(Hp, r0 + rows_per_chunk)
        k = kernels(fp[:, r0:r1].reshape(fp.shape[0], -1).to(x.dtype))
        # (B, C, n) values times (n, S*S) kernels -> fold's columns (B, C*S*S, n)
        src = xp[:, :, r0:r1].reshape(B, C, 1, -1)
        cols = (src * k.reshape(1, 1, -1, size * size).transpose(-1, -2)).reshape(B, C * size * size, -1)
        part = F.fold(cols, output_size=(r1 - r0 + 2 * r, Wp + 2 * r), kernel_size=size)
        out[:, :, r0:r1 + 2 * r] += part
    # out index i holds padded position i - r, i.e. image position i - 2r
    return out[:, :, 2 * r:2 * r + H, 2 * r:2 * r + W]


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
    x = _as_image(image)
    if padding not in _TORCH_PAD:
        raise ValueError(f"padding must be one of zeros, reflect, replicate, circular, got {padding!r}")
    shape = tuple(x.shape[-2:])
    length_map, angle_map = _field_map(length, "length", shape), _field_map(angle, "angle", shape)
    if float(length_map.min()) < 1:
        raise ValueError(f"length must be >= 1 pixel everywhere, got a minimum of {float(length_map.min())}")
    r = math.ceil((float(length_map.max()) - 1) / 2 - 1e-9)
    if padding == "reflect" and r >= min(shape):
        raise ValueError(f"reflect padding needs lines shorter than the image: longest {float(length_map.max())} "
                         f"px on a {shape[0]}x{shape[1]} image; use padding='zeros'")
    # Kernels in the image's dtype: float32 halves the time (training data), float64 stays exact.
    y = _scatter(x, torch.stack([length_map, angle_map]), r, padding,
                 lambda f: line_kernels(f[0], f[1], 2 * r + 1), rows_per_chunk, 0)
    return y[0, 0] if image.dim() == 2 else y


def trajectory_samples(trajectory, step: float = 0.1, scale: float = 1.0) -> torch.Tensor:
    """Equal-time samples of a piecewise-linear trajectory, centred on their mean.

    The trajectory's N points are taken at equal times (as :func:`camera_shake_trajectory` makes
    them) and joined by straight segments; each segment is cut into m equal-time pieces, m the
    smallest making every piece at most ``step`` px long once scaled by ``scale``, and sampled at
    the pieces' midpoints. The mean is subtracted so the blur does not shift the image.

    Args:
        trajectory: (N >= 2, 2) (row, col) positions in pixels.
        step: longest distance between neighbouring samples, in pixels, at ``scale``.
        scale: the largest scale the samples will be used at.

    Returns:
        ((N - 1) * m, 2) float64 tensor.

    Examples:
        >>> trajectory_samples(torch.tensor([[0.0, 0.0], [0.0, 2.0]]), step=0.5).tolist()
        [[0.0, -0.75], [0.0, -0.25], [0.0, 0.25], [0.0, 0.75]]
    """
    traj = torch.as_tensor(trajectory, dtype=torch.float64).detach().cpu()
    if traj.dim() != 2 or traj.shape[1] != 2 or traj.shape[0] < 2:
        raise ValueError(f"trajectory must have shape (N >= 2, 2) of (row, col) positions, got {tuple(traj.shape)}")
    if not bool(torch.isfinite(traj).all()):
        raise ValueError("trajectory contains NaN or Inf values")
    if not (math.isfinite(step) and step > 0):
        raise ValueError(f"step must be a positive number of pixels, got {step!r}")
    longest = float((traj[1:] - traj[:-1]).norm(dim=1).max()) * float(scale)
    m = max(1, math.ceil(longest / step - 1e-9))
    t = (torch.arange(m, dtype=torch.float64) + 0.5) / m
    samples = (traj[:-1, None] + t[None, :, None] * (traj[1:] - traj[:-1])[:, None]).reshape(-1, 2)
    return samples - samples.mean(0)


def exact_trajectory_blur(image: torch.Tensor, trajectory, scale=1.0, rotation=0.0, *, padding: str = "reflect",
                          step: float = 0.1, rows_per_chunk: int | None = None) -> torch.Tensor:
    """Blur where every pixel follows the same camera-shake trajectory, scaled and rotated by its own
    amount (spatially varying shake), the scatter model.

    Pixel p moves along ``d_p(t) = scale(p) R(rotation(p)) T(t)``, T the trajectory centred on its
    time-average and R a counter-clockwise rotation as displayed. Its PSF is the time-average of a
    unit bilinear tent at ``d_p(t)``, ``k_p(q) = mean_t h(q - d_p(t))`` with
    ``h(u) = max(0, 1 - |u_row|) max(0, 1 - |u_col|)`` (as :func:`camera_shake_psfs` splats its
    samples), which keeps each PSF's sum at 1 and its centre of mass at p; the continuous time
    average is taken on :func:`trajectory_samples` (at most ``step`` px apart). Then
    ``y(p + q) = sum_p x(p) k_p(q)``; outside the image the scene and the maps are extended by
    ``padding``, and the result is cropped to the image.

    A camera that turns about its optical axis while shaking, or whose shake mixes rotation about
    the other axes, moves pixels by amounts and in directions that vary smoothly across the frame:
    smooth ``scale`` and ``rotation`` maps model that.

    Args:
        image: (H, W) or (B, C, H, W) floating tensor.
        trajectory: (N >= 2, 2) (row, col) positions in pixels at equal times, e.g. from
            :func:`camera_shake_trajectory`.
        scale: (H, W) map or a number, >= 0: how much of the trajectory each pixel travels.
        rotation: (H, W) map or a number, degrees counter-clockwise as displayed.
        padding: ``"zeros"``, ``"reflect"``, ``"replicate"`` or ``"circular"``.
        step: longest distance between time samples in pixels at the largest scale; the error of
            the time average falls with its square.
        rows_per_chunk: source rows per chunk (default: about 64 MB per chunk).

    Returns:
        The blurred image, the shape and dtype of ``image``.

    Raises:
        ValueError: wrong shapes or types, negative scales, NaN/Inf, a bad trajectory or step,
            unknown padding, or reflect padding with blur longer than the image.

    Examples:
        >>> import torch
        >>> x = torch.zeros(9, 9, dtype=torch.float64); x[4, 4] = 1.0
        >>> trajectory = torch.tensor([[0.0, -2.0], [0.0, 2.0]])  # 4 px to the right, steadily
        >>> y = exact_trajectory_blur(x, trajectory, padding="zeros", step=0.01)
        >>> [round(v, 3) for v in y[4].tolist()]
        [0.0, 0.0, 0.125, 0.25, 0.25, 0.25, 0.125, 0.0, 0.0]
        >>> turned = exact_trajectory_blur(x, trajectory, rotation=90.0, padding="zeros", step=0.01)
        >>> [round(v, 3) for v in turned[:, 4].tolist()]  # the same blur, vertical
        [0.0, 0.0, 0.125, 0.25, 0.25, 0.25, 0.125, 0.0, 0.0]
    """
    x = _as_image(image)
    if padding not in _TORCH_PAD:
        raise ValueError(f"padding must be one of zeros, reflect, replicate, circular, got {padding!r}")
    shape = tuple(x.shape[-2:])
    scale_map = _field_map(scale, "scale", shape, scalar_ok=True)
    rotation_map = _field_map(rotation, "rotation", shape, scalar_ok=True)
    if float(scale_map.min()) < 0:
        raise ValueError(f"scale must be >= 0 everywhere, got a minimum of {float(scale_map.min())}")
    largest = float(scale_map.max())
    samples = trajectory_samples(trajectory, step, max(largest, 1e-12))
    # Support: the tent reaches 1 px beyond the farthest sample; floor + 1 keeps base + 1 inside.
    r = math.floor(largest * float(samples.norm(dim=1).max())) + 1
    if padding == "reflect" and r >= min(shape):
        raise ValueError(f"reflect padding needs blur shorter than the image: the scaled trajectory reaches {r} px "
                         f"from its centre on a {shape[0]}x{shape[1]} image; use padding='zeros' or a smaller scale")
    size = 2 * r + 1
    path = samples.to(x.device, x.dtype)

    def kernels(f: torch.Tensor) -> torch.Tensor:
        theta = torch.deg2rad(f[1])[:, None]
        cos, sin = torch.cos(theta), torch.sin(theta)
        # Counter-clockwise as displayed with rows pointing down: (row, col) -> (r cos - c sin, c cos + r sin).
        row = f[0][:, None] * (path[:, 0] * cos - path[:, 1] * sin) + r
        col = f[0][:, None] * (path[:, 1] * cos + path[:, 0] * sin) + r
        base_r, base_c = row.floor(), col.floor()
        fr, fc = row - base_r, col - base_c
        index = (base_r * size + base_c).long()
        index = torch.cat([index, index + 1, index + size, index + size + 1], 1)
        weight = torch.cat([(1 - fr) * (1 - fc), (1 - fr) * fc, fr * (1 - fc), fr * fc], 1) / path.shape[0]
        k = torch.zeros(f.shape[1], size * size, dtype=x.dtype, device=x.device)
        return k.scatter_add_(1, index, weight).reshape(-1, size, size)

    y = _scatter(x, torch.stack([scale_map, rotation_map]), r, padding, kernels, rows_per_chunk,
                 4 * 8 * 4 * path.shape[0])
    return y[0, 0] if image.dim() == 2 else y


def shake_maps(shape, direction_deg: float, scale_change: float, rotation_change: float
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Smooth per-pixel scale and rotation maps for :func:`exact_trajectory_blur`.

    The scale changes linearly along ``direction_deg`` (as the shake of a tilted scene, or of a
    camera whose rotation is not about its optical axis, grows towards one side) and the rotation
    linearly across it (as a roll during the shake turns it more far from the axis): with
    ``t, n`` a pixel's coordinates along and across the direction in units of half the longer side
    (-1 .. 1 from the centre to the outer edge of the pixels of a square), ``scale = 1 + scale_change t`` and
    ``rotation = rotation_change n``.

    Args:
        shape: (H, W).
        direction_deg: direction of the scale change, degrees counter-clockwise from +x as displayed.
        scale_change: relative change of the scale from the centre to the edge; the scale must stay
            > 0 over the image (``|scale_change| < 1 / sqrt(2)`` on a square).
        rotation_change: change of the rotation from the centre to the edge, degrees.

    Returns:
        (scale, rotation), two (H, W) float64 maps.

    Raises:
        ValueError: a bad shape, non-finite numbers or a scale that reaches 0.

    Examples:
        >>> scale, rotation = shake_maps((5, 5), 0.0, 0.5, 10.0)
        >>> scale[2].tolist(), rotation[:, 2].tolist()  # scale grows to the right, rotation upwards
        ([0.6, 0.8, 1.0, 1.2, 1.4], [8.0, 4.0, 0.0, -4.0, -8.0])
    """
    try:
        H, W = (int(n) for n in shape)
        numbers = [float(direction_deg), float(scale_change), float(rotation_change)]
    except (TypeError, ValueError):
        raise ValueError(f"shape must be (H, W) and the changes numbers, got {shape!r}, {direction_deg!r}, "
                         f"{scale_change!r}, {rotation_change!r}") from None
    if min(H, W) < 1 or not all(math.isfinite(n) for n in numbers):
        raise ValueError(f"shape must be positive and the changes finite, got {shape!r}, {numbers}")
    half = max(H, W) / 2
    up = ((H - 1) / 2 - torch.arange(H, dtype=torch.float64)) / half
    right = (torch.arange(W, dtype=torch.float64) - (W - 1) / 2) / half
    up, right = torch.meshgrid(up, right, indexing="ij")
    theta = math.radians(numbers[0])
    along = right * math.cos(theta) + up * math.sin(theta)
    across = up * math.cos(theta) - right * math.sin(theta)
    scale = 1 + numbers[1] * along
    if float(scale.min()) <= 0:
        raise ValueError(f"scale_change {numbers[1]} makes the scale reach {float(scale.min()):.3g} <= 0 on a "
                         f"{H}x{W} image; keep |scale_change| below 1 / sqrt(2)")
    return scale, numbers[2] * across
