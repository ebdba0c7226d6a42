"""Spatially varying blur: per-pixel motion fields and grids of measured PSFs (scatter model)."""
from __future__ import annotations

import math
import warnings

import numpy as np
import torch

from ..ops.nu_conv import nu_conv
from .exact import line_kernels
from .motion import linear_motion_kernel, motion_bank, motion_grid, motion_weights

__all__ = ["MotionField", "PSFGrid", "grid_weights", "psf_grid_from_point_sources", "psf_grid_from_points"]

# Threshold of the per-node outlier test of psf_grid_from_points (stars against their node's median).
NODE_MIN_CORRELATION = 0.85


def _grid_shape(grid_shape) -> tuple[int, int]:
    """(gy, gx) as two positive ints, or a ValueError that says what came."""
    try:
        gy, gx = (int(g) for g in grid_shape)
    except (TypeError, ValueError):
        raise ValueError(f"grid_shape must be (gy, gx), got {grid_shape!r}") from None
    if gy < 1 or gx < 1:
        raise ValueError(f"grid_shape must be positive, got {(gy, gx)}")
    return gy, gx


def grid_weights(grid_shape, image_shape, *, dtype=torch.float32, device=None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Bilinear weights of a regular gy x gx grid of PSFs measured across the field of view.

    PSF (i, j) sits at row i (H-1)/(gy-1), column j (W-1)/(gx-1) (a single row or column of PSFs
    sits at 0 and covers the whole axis) and is filter ``i * gx + j`` of the bank
    ``psfs.reshape(gy * gx, kh, kw)``. Use with :func:`deblur_ops.nu_conv` in ``"scatter"`` mode
    to blur a scene with the interpolated, spatially varying PSF.

    Args:
        grid_shape: (gy, gx), the number of PSF rows and columns, each >= 1.
        image_shape: (H, W) of the image.
        dtype: floating dtype of the weights.
        device: device of the results.

    Returns:
        idx (1, 4, H, W) int64 and weights (1, 4, H, W) summing to 1 over dim 1.

    Examples:
        >>> idx, w = grid_weights((2, 2), (3, 3))
        >>> idx[0, :, 1, 1].tolist(), w[0, :, 1, 1].tolist()
        ([0, 1, 2, 3], [0.25, 0.25, 0.25, 0.25])
    """
    try:
        gy, gx = (int(v) for v in grid_shape)
        H, W = (int(v) for v in image_shape)
    except (TypeError, ValueError):
        raise ValueError(f"grid_shape and image_shape must be pairs of integers, got "
                         f"{grid_shape!r} and {image_shape!r}") from None
    if min(gy, gx, H, W) < 1:
        raise ValueError(f"grid_shape and image_shape must be positive, got {(gy, gx)} and "
                         f"{(H, W)}")

    def axis(n_nodes: int, n: int):
        pos = torch.arange(n, dtype=torch.float64, device=device)
        t = pos * ((n_nodes - 1) / (n - 1)) if n > 1 else pos
        i0 = t.floor().long().clamp(0, max(n_nodes - 2, 0))
        return i0, (i0 + 1).clamp(max=n_nodes - 1), (t - i0).clamp(0, 1)

    r0, r1, fy = axis(gy, H)
    c0, c1, fx = axis(gx, W)
    fy, fx = fy[:, None], fx[None, :]
    idx = torch.stack([r0[:, None] * gx + c0, r0[:, None] * gx + c1,
                       r1[:, None] * gx + c0, r1[:, None] * gx + c1])
    weights = torch.stack([(1 - fy) * (1 - fx), (1 - fy) * fx, fy * (1 - fx), fy * fx])
    return idx[None], weights[None].to(dtype)


def _as_float64(value, name: str, ndim: int, shape_text: str) -> torch.Tensor:
    """A finite float64 CPU copy of an array or tensor with ``ndim`` dims, or a clear error."""
    if isinstance(value, np.ndarray):
        value = torch.from_numpy(np.ascontiguousarray(value))
    if not isinstance(value, torch.Tensor):
        raise ValueError(f"{name} must be a NumPy array or torch tensor of shape {shape_text}, got "
                         f"{type(value).__name__}; convert with numpy.asarray")
    if value.is_complex() or value.dtype == torch.bool:
        raise ValueError(f"{name} must hold real numbers, got dtype {value.dtype}")
    if value.dim() != ndim or value.numel() == 0:
        raise ValueError(f"{name} must have shape {shape_text}, got {tuple(value.shape)}")
    t = value.detach().to("cpu", torch.float64)
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} contains {int((~torch.isfinite(t)).sum())} NaN or Inf value(s); "
                         f"clean it first, e.g. numpy.nan_to_num")
    return t


def _blur_with(psf, image: torch.Tensor, padding: str) -> torch.Tensor:
    if not isinstance(image, torch.Tensor) or not image.is_floating_point() or image.dim() not in (2, 4):
        raise ValueError(f"image must be a floating (H, W) or (B, C, H, W) tensor, got "
                         f"{type(image).__name__} of shape {tuple(getattr(image, 'shape', ()))}")
    x = image[None, None] if image.dim() == 2 else image
    bank, idx, weights = psf.nu_conv_inputs(tuple(x.shape[-2:]), dtype=x.dtype, device=x.device)
    y = nu_conv(x.contiguous(), bank, idx, weights, mode="scatter", padding=padding)
    return y[0, 0] if image.dim() == 2 else y


class MotionField:
    """Spatially varying linear motion blur: each scene point is smeared by its own line.

    Per pixel p the PSF is the linear motion (length(p), angle(p)) of :func:`linear_motion_kernel`,
    approximated as in paper 004 §2.2 (eq. 17) by bilinear interpolation between the 4 nearest
    filters of a motion bank (exact at its nodes). The blur is the scatter model (the PSF belongs to
    the scene point), applied by :func:`deblur_ops.nu_conv` in ``"scatter"`` mode.

    Two banks (``bank``):

    - ``"paper"`` (default): paper 004's grid, odd lengths 1, 3, ... and angles 0, 6, ..., 174
      degrees (511 filters up to 35 px). A blend of lines 2 px and 6 degrees apart is not the line
      in between: against :func:`exact_motion_blur` this model scores 48.7-52.1 dB (noise-free
      PSNR) on the camera-motion fields of ``deblur evaluate --nonuniform``.
    - ``"fine"``: lengths 1, 2, 3, ... and angles 0, 2, ..., 178 degrees (3061 nodes up to 35 px),
      of which only the filters the field's weights use are built (813 for a 256² camera-motion
      field of 1-17 px, 2212 for one of 1-33 px). 52.8-59.6 dB on the same fields: the model
      error is well below noise of sigma 0.01 (40 dB) for the solvers that use this blur
      (``nu_cg``, ``irc``, ``sv_richardson_lucy``), which run about twice as long with it (NU-Conv
      works along runs of pixels sharing a filter; see docs/methods.md). IRC-Net takes only the
      length and angle maps and always uses its own, learned paper bank.

    Args:
        length: (H, W) motion lengths in pixels (full extent of the line), each >= 1.
        angle: (H, W) angles in degrees, counter-clockwise from +x with rows pointing down
            (taken modulo 180).
        bank: ``"paper"`` or ``"fine"``.

    Raises:
        ValueError: maps that are not 2D arrays of the same shape, NaN/Inf, lengths < 1, an
            unknown bank.

    Example:
        >>> import torch
        >>> field = MotionField(torch.full((32, 32), 9.0), torch.zeros(32, 32))
        >>> field.shape, field.blur(torch.rand(32, 32)).shape
        ((32, 32), torch.Size([32, 32]))
        >>> from deblur_ops.psf import exact_motion_blur
        >>> x = torch.rand(48, 48, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
        >>> length, angle = torch.full_like(x, 6.5), torch.full_like(x, 31.0)  # between paper nodes
        >>> exact = exact_motion_blur(x, length, angle)
        >>> def psnr(y): return round(-10 * math.log10(float(((y - exact) ** 2).mean())))
        >>> [psnr(MotionField(length, angle, bank=b).blur(x)) for b in MotionField.BANKS]
        [40, 48]
    """

    spatially_varying = True
    BANKS = ("paper", "fine")
    ANGLES = tuple(range(0, 180, 6))
    FINE_ANGLES = tuple(range(0, 180, 2))

    def __init__(self, length, angle, *, bank: str = "paper"):
        if bank not in self.BANKS:
            raise ValueError(f"MotionField bank must be one of {self.BANKS} (paper 004's 511 filters, or 1 px / "
                             f"2 degree steps), got {bank!r}")
        self.bank_kind = bank
        self.length = _as_float64(length, "MotionField length", 2, "(H, W)")
        self.angle = _as_float64(angle, "MotionField angle", 2, "(H, W)")
        if self.length.shape != self.angle.shape:
            raise ValueError(f"MotionField length and angle maps must have the same shape (H, W), got "
                             f"{tuple(self.length.shape)} and {tuple(self.angle.shape)}")
        if float(self.length.min()) < 1:
            raise ValueError(f"MotionField lengths must be >= 1 pixel (1 = no blur), got minimum "
                             f"{float(self.length.min())}; clip with numpy.maximum(length, 1)")
        longest = math.ceil(float(self.length.max()) - 1e-9)
        self.max_length = max(3, longest + (1 - longest % 2))  # odd, so the bank holds every line
        self._bank = None
        self._fine_inputs = None

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.length.shape)

    @classmethod
    def from_camera_motion(cls, shape, translation=(0.0, 0.0), rotation_deg: float = 0.0,
                           centre=None) -> "MotionField":
        """The smooth field of a camera that translates and rolls during the exposure.

        A pixel p moves by t + phi R(p - c) (small-angle in-plane rotation phi about c, R the
        90-degree rotation), so the blur lines vary smoothly in length and direction across the
        image as in the synthetic non-uniform test sets of paper 004 (Table 3).

        Args:
            shape: (H, W) of the image.
            translation: (dx, dy) image displacement in pixels over the exposure (x right, y up).
            rotation_deg: in-plane rotation over the exposure, degrees counter-clockwise.
            centre: (row, col) of the rotation axis; default the image centre.

        Returns:
            MotionField with length |displacement| (at least 1) and its direction as the angle.

        Example:
            >>> f = MotionField.from_camera_motion((5, 5), translation=(4.0, 0.0))
            >>> float(f.length[2, 2]), float(f.angle[2, 2])
            (4.0, 0.0)
        """
        try:
            H, W = (int(n) for n in shape)
            dx, dy = (float(t) for t in translation)
            phi = math.radians(float(rotation_deg))
        except (TypeError, ValueError):
            raise ValueError(f"shape must be (H, W), translation (dx, dy) and rotation_deg a number, "
                             f"got {shape!r}, {translation!r}, {rotation_deg!r}") from None
        if min(H, W) < 1 or not all(math.isfinite(t) for t in (dx, dy, phi)):
            raise ValueError(f"shape must be positive and the motion finite, got {shape!r}, "
                             f"{translation!r}, {rotation_deg!r}")
        cy, cx = ((H - 1) / 2, (W - 1) / 2) if centre is None else (float(c) for c in centre)
        row, col = torch.meshgrid(torch.arange(H, dtype=torch.float64),
                                  torch.arange(W, dtype=torch.float64), indexing="ij")
        up, right = cy - row, col - cx  # y up, as the angle convention counts counter-clockwise
        move_x = dx - phi * up
        move_y = dy + phi * right
        length = torch.hypot(move_x, move_y).clamp(min=1)
        angle = torch.rad2deg(torch.atan2(move_y, move_x)).remainder(180)
        return cls(length, angle)

    @classmethod
    def constant(cls, shape, length: float, angle: float) -> "MotionField":
        """The same linear motion (length, angle) at every pixel of an (H, W) image.

        Example:
            >>> f = MotionField.constant((4, 6), 9.0, 30.0)
            >>> f.shape, float(f.length[3, 5]), float(f.angle[0, 0])
            ((4, 6), 9.0, 30.0)
        """
        return cls.linear(shape, (length, angle), (length, angle))

    @classmethod
    def linear(cls, shape, start, end, axis: str = "x") -> "MotionField":
        """Motion that changes linearly from ``start`` to ``end`` = (length, angle) across the image.

        The first column (``axis="x"``) or row (``axis="y"``) has ``start``, the last ``end``; length
        and angle are interpolated separately, the angle without wrapping (10 -> 170 sweeps through
        90; give 10 -> -10 for the short way through 0).

        Args:
            shape: (H, W) of the image.
            start: (length, angle) at the first column / row; length >= 1 pixel, angle in degrees.
            end: (length, angle) at the last column / row.
            axis: ``"x"`` (left to right) or ``"y"`` (top to bottom).

        Example:
            >>> f = MotionField.linear((2, 3), (1.0, 0.0), (5.0, 90.0))
            >>> f.length[0].tolist(), f.angle[1].tolist()
            ([1.0, 3.0, 5.0], [0.0, 45.0, 90.0])
        """
        try:
            H, W = (int(n) for n in shape)
            (l0, a0), (l1, a1) = ((float(v) for v in pair) for pair in (start, end))
        except (TypeError, ValueError):
            raise ValueError(f"shape must be (H, W) and start, end (length, angle) pairs of numbers, got "
                             f"{shape!r}, {start!r}, {end!r}") from None
        if min(H, W) < 1:
            raise ValueError(f"shape must be positive (H, W), got {shape!r}")
        if axis not in ("x", "y"):
            raise ValueError(f"axis must be 'x' (along columns) or 'y' (along rows), got {axis!r}")
        n = W if axis == "x" else H
        t = torch.linspace(0, 1, n, dtype=torch.float64) if n > 1 else torch.zeros(1, dtype=torch.float64)
        t = t[None, :].expand(H, W) if axis == "x" else t[:, None].expand(H, W)
        return cls(l0 + (l1 - l0) * t, a0 + (a1 - a0) * t)

    def psf_grid(self, grid_shape) -> "PSFGrid":
        """The motion kernels at a gy x gx grid of positions (as :func:`grid_weights` places them), to show.

        Each kernel is :func:`linear_motion_kernel` at that pixel's (length, angle), all of side
        :attr:`max_length`.

        Example:
            >>> MotionField.constant((9, 9), 5.0, 0.0).psf_grid((2, 2)).psfs[1, 1, 2].tolist()
            [0.2, 0.2, 0.2, 0.2, 0.2]
        """
        gy, gx = _grid_shape(grid_shape)
        H, W = self.shape
        rows = [round(i * (H - 1) / (gy - 1)) if gy > 1 else 0 for i in range(gy)]
        cols = [round(j * (W - 1) / (gx - 1)) if gx > 1 else 0 for j in range(gx)]
        return PSFGrid(torch.stack([torch.stack([
            linear_motion_kernel(float(self.length[y, x]), float(self.angle[y, x]), self.max_length,
                                 dtype=torch.float64) for x in cols]) for y in rows]))

    def with_bank(self, bank: str) -> "MotionField":
        """The same length and angle maps blurred through ``bank`` (``"paper"`` or ``"fine"``).

        Example:
            >>> MotionField.constant((4, 4), 7.0, 10.0).with_bank("fine").bank_kind
            'fine'
        """
        return MotionField(self.length, self.angle, bank=bank)

    def crop(self, rows: slice, cols: slice) -> "MotionField":
        """The field of the pixels ``[rows, cols]``, with the same bank."""
        return MotionField(self.length[rows, cols], self.angle[rows, cols], bank=self.bank_kind)

    def bank(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The motion bank (F, L, L) (L = :attr:`max_length`) and its (F, 2) (length, angle) grid.

        For ``"fine"``, only the filters this field's weights use, in the order its idx counts them.
        """
        if self.bank_kind == "fine":
            return self._fine()[:2]
        if self._bank is None:
            self._bank = motion_bank(range(1, self.max_length + 1, 2), self.ANGLES, self.max_length,
                                     dtype=torch.float64)
        return self._bank

    def _fine(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Used filters, their grid, idx into them and weights on the fine grid (built once)."""
        if self._fine_inputs is None:
            grid = motion_grid(range(1, self.max_length + 1), self.FINE_ANGLES)
            idx, weights = motion_weights(self.length, self.angle, grid)
            used, idx = torch.unique(idx, return_inverse=True)
            # line_kernels is linear_motion_kernel batched: the nodes' filters, each built once.
            filters = line_kernels(grid[used, 0], grid[used, 1], self.max_length)
            self._fine_inputs = filters, grid[used], idx, weights
        return self._fine_inputs

    def nu_conv_inputs(self, image_shape, *, dtype=torch.float32, device=None
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """bank (F, L, L), idx (1, 4, H, W) and weights (1, 4, H, W) for :func:`deblur_ops.nu_conv`.

        Raises:
            ValueError: ``image_shape`` differs from the maps' (H, W).
        """
        if tuple(int(n) for n in image_shape) != self.shape:
            raise ValueError(f"MotionField maps are {self.shape} but the image is {tuple(image_shape)}; "
                             f"give one length and angle per pixel")
        if self.bank_kind == "fine":
            bank, _, idx, weights = self._fine()
        else:
            bank, grid = self.bank()
            idx, weights = motion_weights(self.length, self.angle, grid)
        return (bank.to(dtype=dtype, device=device), idx.to(device),
                weights.to(dtype=dtype, device=device))

    def blur(self, image: torch.Tensor, *, padding: str = "reflect") -> torch.Tensor:
        """Blur ``image`` (H, W) or (B, C, H, W) with this field (scatter model), same size."""
        return _blur_with(self, image, padding)


class PSFGrid:
    """PSFs measured on a regular gy x gx grid of field positions, bilinearly interpolated between.

    Node (i, j) sits at row i (H-1)/(gy-1), column j (W-1)/(gx-1), corners included (see
    :func:`grid_weights`). The blur is the scatter model y = sum_k psfs_k * (w_k x): each scene
    point is blurred by the weighted mix of the 4 PSFs around it.

    Args:
        psfs: (gy, gx, kh, kw) array or tensor, PSFs centred at (kh//2, kw//2); an even side gets
            one zero row/column at its end (same centre), so the stored PSFs are odd-sized.

    Raises:
        ValueError: wrong number of dims, NaN/Inf, a PSF that sums to zero.

    Example:
        >>> import torch
        >>> grid = PSFGrid(torch.ones(2, 3, 5, 5) / 25)
        >>> grid.grid_shape, round(grid.blur(torch.ones(16, 16))[8, 8].item(), 5)
        ((2, 3), 1.0)
    """

    spatially_varying = True

    def __init__(self, psfs):
        self.psfs = _as_float64(psfs, "PSFGrid psfs", 4, "(gy, gx, kh, kw)")
        kh, kw = self.psfs.shape[2:]
        # Even sides follow the package's convention (centre at k // 2, as DeconvolutionLab2 and
        # flowdec store PSFs): one zero row/column at the end makes them odd around the same centre,
        # as deblur_ops.psf.prepare_psf does for single PSFs.
        self.psfs = torch.nn.functional.pad(self.psfs, (0, 1 - kw % 2, 0, 1 - kh % 2))
        sums = self.psfs.sum((-2, -1))
        if bool((sums.abs() < 1e-12).any()):
            raise ValueError("every PSF of a PSFGrid must have a non-zero sum (a PSF of zeros "
                             "erases the scene); check the measured PSFs")

    @property
    def grid_shape(self) -> tuple[int, int]:
        return tuple(self.psfs.shape[:2])

    @classmethod
    def from_stack(cls, psfs, grid_shape=None) -> "PSFGrid":
        """A grid from a (gy, gx, kh, kw) array, or from an (n, kh, kw) stack in row-major grid order.

        Args:
            psfs: (gy, gx, kh, kw), or (gy * gx, kh, kw) with ``grid_shape``.
            grid_shape: (gy, gx) for a 3D stack; must match the first two axes of a 4D one.

        Example:
            >>> PSFGrid.from_stack(torch.ones(6, 3, 3), (2, 3)).grid_shape
            (2, 3)
        """
        shape = tuple(getattr(psfs, "shape", ()))
        if len(shape) == 4 and grid_shape in (None, shape[:2]):
            return cls(psfs)
        if len(shape) != 3:
            raise ValueError(f"psfs must have shape (gy, gx, kh, kw) or (n, kh, kw), got {shape}")
        try:
            gy, gx = (int(g) for g in grid_shape)
        except (TypeError, ValueError):
            raise ValueError(f"an (n, kh, kw) stack needs grid_shape=(gy, gx), got {grid_shape!r}") from None
        if gy < 1 or gx < 1 or gy * gx != shape[0]:
            raise ValueError(f"grid_shape {(gy, gx)} holds {gy * gx} PSFs but the stack has {shape[0]}; "
                             f"give gy * gx = {shape[0]}")
        return cls(psfs.reshape(gy, gx, *shape[1:]))

    def mosaic(self, gap: int = 1) -> np.ndarray:
        """The PSFs tiled as they sit on the field, each scaled to peak 1, ``gap`` zero pixels apart.

        Example:
            >>> PSFGrid(torch.ones(2, 3, 5, 5)).mosaic().shape
            (11, 17)
        """
        if int(gap) != gap or gap < 0:
            raise ValueError(f"gap must be an integer >= 0, got {gap!r}")
        gy, gx, kh, kw = self.psfs.shape
        gap = int(gap)
        tiles = self.psfs / self.psfs.abs().amax((-2, -1), keepdim=True)
        out = np.zeros((gy * (kh + gap) - gap, gx * (kw + gap) - gap), np.float32)
        for i in range(gy):
            for j in range(gx):
                out[i * (kh + gap):i * (kh + gap) + kh, j * (kw + gap):j * (kw + gap) + kw] = tiles[i, j].numpy()
        return out

    def nu_conv_inputs(self, image_shape, *, dtype=torch.float32, device=None
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """bank (gy gx, kh, kw), idx (1, 4, H, W) and weights (1, 4, H, W) for :func:`deblur_ops.nu_conv`."""
        gy, gx, kh, kw = self.psfs.shape
        idx, weights = grid_weights((gy, gx), image_shape, dtype=dtype, device=device)
        return self.psfs.reshape(gy * gx, kh, kw).to(dtype=dtype, device=device), idx, weights

    def blur(self, image: torch.Tensor, *, padding: str = "reflect") -> torch.Tensor:
        """Blur ``image`` (H, W) or (B, C, H, W) with the interpolated PSFs (scatter model), same size."""
        return _blur_with(self, image, padding)


def _node_members(report, shape, grid_shape) -> dict[tuple[int, int], list[int]]:
    """The used points of ``report`` by their nearest grid node (node (i, j) at row i (H-1)/(gy-1),
    column j (W-1)/(gx-1), as in :func:`grid_weights`)."""
    (H, W), (gy, gx) = shape, grid_shape
    members: dict[tuple[int, int], list[int]] = {}
    for index in report.used:
        row, col = report.centres[index]
        node = (min(max(round(row * (gy - 1) / (H - 1)), 0), gy - 1) if gy > 1 and H > 1 else 0,
                min(max(round(col * (gx - 1) / (W - 1)), 0), gx - 1) if gx > 1 and W > 1 else 0)
        members.setdefault(node, []).append(index)
    return members


def psf_grid_from_point_sources(image, size: int, grid_shape, *, threshold: float = 10.0, max_sources: int = 300,
                                min_sources: int = 3, min_correlation: float = 0.85):
    """A :class:`PSFGrid` of a star field from the stars it finds itself (blind, spatially varying).

    The sources of :func:`deblur_ops.psf.find_point_sources` are measured as in
    :func:`deblur_ops.psf.psf_from_point_sources` (robust centre, unclipped registered crops,
    saturated ones left out); each belongs to its nearest grid node, is compared with its node's
    median crop (the PSF varies across the field, so not with all stars') and the node's PSF is
    the median of its crops (the mean for one or two). A node without a usable star gets the
    inverse-distance-weighted (power 2) average of all of them.

    Args:
        image: (H, W) array or tensor (background need not be subtracted).
        size: odd side of the PSFs, larger than their visible wings.
        grid_shape: (gy, gx) nodes.
        threshold, max_sources: detection (see :func:`deblur_ops.psf.find_point_sources`).
        min_sources: fewest usable stars in all (>= 1).
        min_correlation: threshold of each node's median-crop test.

    Returns:
        ``(grid, positions, report, filled)``: the PSFGrid (gy, gx, size, size), the candidates'
        positions, a :class:`deblur_ops.psf.PointsReport` on them, and the nodes filled from the others.

    Raises:
        ValueError: bad arguments, or fewer than ``min_sources`` usable stars (the message says why).

    Example:
        >>> yy, xx = np.mgrid[0:96, 0:96]
        >>> spots = [(20, 20), (20, 75), (75, 20), (75, 75), (48, 48)]
        >>> field = sum(np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / 8.0) for y, x in spots)
        >>> grid, positions, report, filled = psf_grid_from_point_sources(field, 15, (2, 2))
        >>> grid.grid_shape, len(report.used), filled
        ((2, 2), 5, [])
    """
    from .points import PointsReport, find_point_sources, inverse_distance_fill, reject_unlike_core, source_crops

    img = _as_float64(image, "image", 2, "(H, W)")
    if isinstance(size, bool) or int(size) != size or size < 3 or size % 2 == 0:
        raise ValueError(f"size must be an odd integer >= 3 (the PSF is centred at size // 2), got {size!r}")
    if isinstance(min_sources, bool) or not isinstance(min_sources, (int, np.integer)) or min_sources < 1:
        raise ValueError(f"min_sources must be an integer >= 1, got {min_sources!r}")
    size = int(size)
    gy, gx = _grid_shape(grid_shape)
    positions = find_point_sources(img, size, threshold=threshold, max_sources=max_sources)
    report = PointsReport()
    crops = source_crops(img, positions, (size, size), report)
    report.used = sorted(crops)
    for group in _node_members(report, img.shape, (gy, gx)).values():
        reject_unlike_core(crops, group, report, float(min_correlation))
    report.used = sorted(crops)
    if len(report.used) < min_sources:
        raise ValueError(f"too few usable stars for a PSF grid (need {min_sources}): {len(positions)} candidate(s) "
                         f"{threshold:g} noise sigmas above the background with a {size}x{size} crop inside the "
                         f"image; {report.summary()}")
    nodes = _node_members(report, img.shape, (gy, gx))
    positions_used = np.array([report.centres[i] for i in report.used])
    stack = torch.stack([crops[i] for i in report.used])
    H, W = img.shape
    grid, filled = [], []
    for i in range(gy):
        for j in range(gx):
            members = [crops[k] for k in nodes.get((i, j), [])]
            if members:
                together = torch.stack(members)
                grid.append(together.median(dim=0).values if len(members) >= 3 else together.mean(0))
                continue
            where = np.array([i * (H - 1) / max(gy - 1, 1), j * (W - 1) / max(gx - 1, 1)])
            grid.append(inverse_distance_fill(positions_used, stack, where))
            filled.append((i, j))
    psfs = torch.stack(grid).clamp(min=0).reshape(gy, gx, size, size)
    return PSFGrid(psfs / psfs.sum((-2, -1), keepdim=True)), positions, report, filled


def psf_grid_from_points(image, points, size: int, grid_shape, *, subpixel: bool = True, background="auto",
                         reject: bool = True, return_report: bool = False):
    """Measure a :class:`PSFGrid` from isolated stars or beads picked in an image.

    Every point is measured as in :func:`deblur_ops.psf.psf_from_points`: a size x size crop,
    re-centred on the star, local background (median of the crop's border) subtracted, negatives
    clipped, registered to sub-pixel precision, normalised to sum 1, and left out with a reason
    when it is saturated, a doublet, outside the image or (with three or more stars on a node)
    unlike its node's median star. Each point
    belongs to the grid node nearest to it (node (i, j) at row i (H-1)/(gy-1), column
    j (W-1)/(gx-1), as in :func:`grid_weights`); the PSFs of a node's points are averaged. A node
    with no point is filled with the inverse-distance-weighted (power 2) average of all measured
    stars, and a ``UserWarning`` names these nodes, so a 3 x 3 grid works on a field whose
    corners have no usable star.

    Args:
        image: (H, W) array or tensor, background-subtracted or not.
        points: (n, 2) positions as (row, col) pixel coordinates of the image.
        size: odd side of the PSFs, larger than the visible wings; the crop's border should be sky.
        grid_shape: (gy, gx).
        subpixel, background, reject: as in :func:`deblur_ops.psf.psf_from_points`.
        return_report: also return the :class:`deblur_ops.psf.PointsReport` and the filled nodes.

    Returns:
        PSFGrid of shape (gy, gx, size, size), each PSF summing to 1; with ``return_report``,
        ``(grid, report, filled)`` where ``filled`` lists the nodes filled from the others.

    Raises:
        ValueError: bad shapes, an even size, or no usable point (the message gives each
            point's reason, e.g. a crop that leaves the image or has nothing above its background).

    Example:
        >>> yy, xx = np.mgrid[0:41, 0:41]
        >>> star = np.exp(-((yy - 20) ** 2 + (xx - 20) ** 2) / 8.0)
        >>> grid = psf_grid_from_points(star, [(20, 20)], 9, (1, 1))
        >>> grid.grid_shape, round(float(grid.psfs.sum()), 6)
        ((1, 1), 1.0)
    """
    from .points import inverse_distance_fill, measure_points, reject_unlike

    img = _as_float64(image, "image", 2, "(H, W)")
    if isinstance(points, str):
        raise ValueError(f"points must be (n, 2) numbers (row, col), got {points!r}")
    if int(size) != size or size < 3 or size % 2 == 0:
        raise ValueError(f"size must be an odd integer >= 3 (the PSF is centred at size // 2), got {size!r}")
    gy, gx = _grid_shape(grid_shape)
    H, W = img.shape
    # The PSF varies across the field, so stars are compared with the median of their own node only.
    crops, report = measure_points(img, points, int(size), subpixel=subpixel, background=background, reject=reject,
                                   min_correlation=None)
    members = _node_members(report, (H, W), (gy, gx))
    if reject:
        for group in members.values():
            reject_unlike(crops, group, report, NODE_MIN_CORRELATION)
        report.used = sorted(crops)
    if not crops:
        raise ValueError(f"no usable star for the PSF grid: {report.summary()}")
    nodes = {node: [crops[i] for i in group if i in crops] for node, group in members.items()}
    nodes = {node: psfs for node, psfs in nodes.items() if psfs}
    positions = np.array([report.centres[i] for i in report.used])
    stack = torch.stack([crops[i] for i in report.used])
    filled = []
    grid = []
    for i in range(gy):
        for j in range(gx):
            if (i, j) in nodes:
                grid.append(torch.stack(nodes[i, j]).mean(0))
                continue
            where = np.array([i * (H - 1) / max(gy - 1, 1), j * (W - 1) / max(gx - 1, 1)])
            grid.append(inverse_distance_fill(positions, stack, where))
            filled.append((i, j))
    if filled:
        warnings.warn(f"grid nodes {filled} have no usable star nearest to them; their PSFs are the "
                      f"inverse-distance-weighted average of the {len(report.used)} measured stars. Pick stars "
                      f"near them for a measured PSF ({len(report.rejected)} point(s) rejected)", UserWarning,
                      stacklevel=2)
    psfs = torch.stack(grid).reshape(gy, gx, int(size), int(size))
    result = PSFGrid(psfs / psfs.sum((-2, -1), keepdim=True))
    return (result, report, filled) if return_report else result
