"""Linear motion PSFs, the motion bank of paper 004 §2.2 and per-pixel weights into it. Conventions: see
:mod:`deblur_ops.psf`.
"""
from __future__ import annotations

import math

import torch


__all__ = ["linear_motion_kernel", "motion_bank", "motion_grid", "motion_weights"]


def linear_motion_kernel(length: float, angle_deg: float, size: int | None = None, *,
                         dtype=torch.float32) -> torch.Tensor:
    """Anti-aliased linear-motion PSF, centred in a ``size`` x ``size`` array, summing to 1.

    Each pixel weighs ``max(0, 1 - d)`` with ``d`` its distance to the segment of length
    ``length - 1`` through the centre (so a horizontal line of odd length L covers exactly L pixels
    equally, and length 1 is a delta), like MATLAB's ``fspecial('motion')``.

    Args:
        length: full extent of the line in pixels, >= 1.
        angle_deg: direction in degrees, counter-clockwise from +x with rows pointing down.
        size: odd side of the output; default the smallest odd size that holds the line.
        dtype: floating dtype of the result.

    Returns:
        (size, size) tensor.

    Examples:
        >>> k = linear_motion_kernel(5, 0)
        >>> k.shape, round(float(k.sum()), 6), [round(v, 6) for v in k[2].tolist()]
        (torch.Size([5, 5]), 1.0, [0.2, 0.2, 0.2, 0.2, 0.2])
    """
    length, angle = float(length), float(angle_deg)
    if not (math.isfinite(length) and length >= 1):
        raise ValueError(f"length must be a finite number >= 1 (pixels), got {length}")
    if not math.isfinite(angle):
        raise ValueError(f"angle_deg must be finite, got {angle}")
    half = (length - 1) / 2
    theta = math.radians(angle)
    dx, dy = math.cos(theta), -math.sin(theta)  # rows point down: a rising line has dy < 0
    needed = 2 * math.ceil(max(abs(half * dx), abs(half * dy)) - 1e-9) + 1
    if size is None:
        size = needed
    if int(size) != size or size < 1 or size % 2 == 0:
        raise ValueError(f"size must be a positive odd integer, got {size}")
    if size < needed:
        raise ValueError(
            f"a line of length {length} at {angle} degrees needs size >= {needed}, got {size}"
        )
    c = size // 2
    coords = torch.arange(size, dtype=torch.float64) - c
    row, col = torch.meshgrid(coords, coords, indexing="ij")
    along = (col * dx + row * dy).clamp(-half, half)
    dist = torch.hypot(col - along * dx, row - along * dy)
    kernel = (1 - dist).clamp(min=0)
    return (kernel / kernel.sum()).to(dtype)


def motion_bank(lengths=range(1, 36, 2), angles=range(0, 180, 6), size: int = 35, *,
                dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """The bank of linear-motion PSFs of paper 004 §2.2 and the (length, angle) of each filter.

    Length 1 (a delta, the same for every angle) appears once, first; then every length > 1 at
    every angle, lengths outer. The defaults give the paper's 17 * 30 + 1 = 511 filters.

    Args:
        lengths: increasing motion lengths in pixels, each >= 1.
        angles: increasing angles in degrees within [0, 180).
        size: odd side of every filter; must hold the longest line.
        dtype: floating dtype of the bank.

    Returns:
        bank (F, size, size), each filter summing to 1; grid (F, 2) float64 of (length, angle)
        (angle 0 for the delta).

    Examples:
        >>> bank, grid = motion_bank()
        >>> bank.shape, grid[1].tolist()
        (torch.Size([511, 35, 35]), [3.0, 0.0])
    """
    grid = motion_grid(lengths, angles)
    bank = torch.stack([linear_motion_kernel(float(length), float(angle), size, dtype=torch.float64)
                        for length, angle in grid])
    return bank.to(dtype), grid


def motion_grid(lengths, angles) -> torch.Tensor:
    """The (F, 2) (length, angle) grid of :func:`motion_bank` without its filters.

    For :func:`motion_weights` on a bank too large to build whole: the weights name the nodes a
    field uses, and only their filters need to exist.

    Examples:
        >>> motion_grid([1, 2], [0, 90]).tolist()
        [[1.0, 0.0], [2.0, 0.0], [2.0, 90.0]]
    """
    lengths = [float(v) for v in lengths]
    angles = [float(v) for v in angles]
    if not lengths or any(b <= a for a, b in zip(lengths, lengths[1:])) or lengths[0] < 1:
        raise ValueError(f"lengths must be non-empty, increasing and >= 1, got {lengths}")
    if not angles or any(b <= a for a, b in zip(angles, angles[1:])) or not (
            0 <= angles[0] and angles[-1] < 180):
        raise ValueError(f"angles must be non-empty, increasing and within [0, 180), got {angles}")
    return torch.tensor([(length, 0.0 if length == 1 else angle) for length in lengths for angle in angles
                         if length > 1 or angle == angles[0]], dtype=torch.float64)


def _grid_axes(grid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sorted lengths, sorted angles and the (L, A) table of filter indices of a motion grid."""
    if not isinstance(grid, torch.Tensor) or grid.dim() != 2 or grid.shape[1] != 2:
        raise ValueError(
            f"grid must be the (F, 2) tensor of (length, angle) returned by motion_bank, got "
            f"{type(grid).__name__} of shape {tuple(getattr(grid, 'shape', ()))}"
        )
    grid = grid.detach().double().cpu()
    lengths = torch.unique(grid[:, 0])
    angles = torch.unique(grid[grid[:, 0] > 1, 1]) if bool((grid[:, 0] > 1).any()) else \
        torch.unique(grid[:, 1])
    table = torch.full((len(lengths), len(angles)), -1, dtype=torch.long)
    li = torch.searchsorted(lengths, grid[:, 0].contiguous())
    ai = torch.searchsorted(angles, grid[:, 1].contiguous()).clamp(max=len(angles) - 1)
    order = torch.arange(len(grid))
    delta = grid[:, 0] == 1  # one delta stands for every angle
    table[li[delta]] = order[delta][:, None]
    table[li[~delta], ai[~delta]] = order[~delta]
    if bool((table < 0).any()):
        raise ValueError("grid must hold every (length, angle) pair of its lengths x angles; "
                         "build it with motion_bank")
    if not (0 <= float(angles[0]) and float(angles[-1]) < 180):
        raise ValueError(f"grid angles must lie in [0, 180), got {angles.tolist()}")
    return lengths, angles, table


def _as_maps(t, name: str) -> torch.Tensor:
    if not isinstance(t, torch.Tensor) or not t.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got {type(t).__name__}"
                         f"{'' if not isinstance(t, torch.Tensor) else ' of dtype ' + str(t.dtype)}")
    if t.dim() == 4 and t.shape[1] == 1:
        return t[:, 0]
    if t.dim() == 2:
        return t[None]
    if t.dim() == 3:
        return t
    raise ValueError(f"{name} must have shape (H, W), (B, H, W) or (B, 1, H, W), got "
                     f"{tuple(t.shape)}")


def motion_weights(length_map: torch.Tensor, angle_map: torch.Tensor, grid: torch.Tensor, *,
                   mode: str = "bilinear", temperature: float = 1.0
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Per-pixel filter indices and weights of the 4 motion-grid nodes around a motion field.

    For a motion (l, θ) the nodes are :math:`(l_\pm, θ_\pm)` with :math:`l_- \le l \le l_+` and
    :math:`θ_- \le θ \le θ_+` (paper 004 §2.2). θ wraps at 180° (a line at 179° is next to one at
    0°); l is clamped to the grid. With fractional positions (tl, ta) in [0, 1]^2 between the nodes:

    - ``"bilinear"``: weights (1-tl)(1-ta), (1-tl)ta, tl(1-ta), tl ta;
    - ``"softmax"``: paper 004 eqs. 17-18, :math:`w_i = \mathrm{softmax}(-d_i^2 / T)` with d_i
      the distance to node i in grid units (one length step, one angle step).

    Both are differentiable w.r.t. the maps, so a motion estimator trains through
    :func:`deblur_ops.nu_conv`.

    Args:
        length_map: (H, W), (B, H, W) or (B, 1, H, W) motion lengths in pixels.
        angle_map: same shape, angles in degrees (any real value; taken modulo 180).
        grid: (F, 2) (length, angle) of the bank filters, as returned by :func:`motion_bank`.
        mode: ``"bilinear"`` or ``"softmax"``.
        temperature: softmax temperature T > 0.

    Returns:
        idx (B, 4, H, W) int64 into the bank and weights (B, 4, H, W) in the maps' dtype, summing
        to 1 over dim 1 — the ``idx``/``weights`` of :func:`deblur_ops.nu_conv`.

    Examples:
        >>> bank, grid = motion_bank()
        >>> idx, w = motion_weights(torch.full((1, 1), 4.0), torch.full((1, 1), 3.0), grid)
        >>> grid[idx[0, :, 0, 0]].tolist(), w[0, :, 0, 0].tolist()
        ([[3.0, 0.0], [3.0, 6.0], [5.0, 0.0], [5.0, 6.0]], [0.25, 0.25, 0.25, 0.25])
    """
    if mode not in ("bilinear", "softmax"):
        raise ValueError(f"mode must be 'bilinear' or 'softmax', got {mode!r}")
    if not (math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be a finite number > 0, got {temperature}")
    length = _as_maps(length_map, "length_map")
    angle = _as_maps(angle_map, "angle_map")
    if length.shape != angle.shape or length.device != angle.device:
        raise ValueError(f"length_map and angle_map must match in shape and device, got "
                         f"{tuple(length_map.shape)} on {length_map.device} and "
                         f"{tuple(angle_map.shape)} on {angle_map.device}")
    lengths, angles, table = (t.to(length.device) for t in _grid_axes(grid))
    lengths, angles = lengths.to(length.dtype), angles.to(length.dtype)
    L, A = len(lengths), len(angles)

    length = length.clamp(float(lengths[0]), float(lengths[-1]))
    li = (torch.searchsorted(lengths, length.detach().contiguous(), right=True) - 1).clamp(
        0, max(L - 2, 0))
    lj = (li + 1).clamp(max=L - 1)
    span = torch.where(lj > li, lengths[lj] - lengths[li], torch.ones_like(length))
    tl = (length - lengths[li]) / span

    theta = torch.remainder(angle, 180.0)
    ai = torch.searchsorted(angles, theta.detach().contiguous(), right=True) - 1  # -1: below a_0
    lo = torch.where(ai >= 0, angles[ai.clamp(min=0)], angles[-1] - 180)
    aj = ai + 1
    hi = torch.where(aj < A, angles[aj.clamp(max=A - 1)], angles[0] + 180)
    ta = (theta - lo) / torch.where(hi > lo, hi - lo, torch.ones_like(hi))
    ai, aj = ai.remainder(A), aj.remainder(A)

    idx = torch.stack([table[li, ai], table[li, aj], table[lj, ai], table[lj, aj]], 1)
    corners = ((0, 0), (0, 1), (1, 0), (1, 1))
    if mode == "bilinear":
        weights = torch.stack([(tl if dl else 1 - tl) * (ta if da else 1 - ta)
                               for dl, da in corners], 1)
    else:
        d2 = torch.stack([(tl - dl) ** 2 + (ta - da) ** 2 for dl, da in corners], 1)
        weights = torch.softmax(-d2 / temperature, dim=1)
    return idx, weights
