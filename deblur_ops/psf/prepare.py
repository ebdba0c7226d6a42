"""One preparation path for measured or generated PSFs, used by every entry point.

Real PSFs come as the acquisition software writes them: the size of the image with even sides
(DeconvolutionLab2, flowdec and the EPFL data sets put the centre at index ``N // 2``), on a
background pedestal, a few pixels off-centre, larger than the image, or sampled at another voxel
size. :func:`prepare_psf` turns any of them into what the restoration methods take: odd sizes,
centre at ``shape // 2``, non-negative, sum 1, sampled at the image's voxel size.
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
import torch

__all__ = ["fourier_shift", "prepare_psf", "psf_centroid", "resample_psf", "voxel_size_tuple"]

# Thresholds of the warnings (fractions): a PSF this far off-centre, or with this much energy at
# its border or cut by the image size, restores a shifted or wrong image without failing.
OFF_CENTRE_FRACTION = 0.10
TRUNCATION_FRACTION = 0.01


def voxel_size_tuple(value, ndim: int, name: str = "voxel_size") -> tuple[float, ...]:
    """A voxel size as ``ndim`` positive floats: a number (isotropic) or one value per axis.

    Example:
        >>> voxel_size_tuple(0.1, 3), voxel_size_tuple((0.3, 0.1, 0.1), 3)
        ((0.1, 0.1, 0.1), (0.3, 0.1, 0.1))
    """
    values = (value,) * ndim if np.ndim(value) == 0 else tuple(value)
    if len(values) != ndim:
        raise ValueError(f"{name} must be one number or {ndim} numbers (z, y, x order; y, x for 2D), "
                         f"got {value!r}")
    out = []
    for v in values:
        try:
            f = float(v)
        except (TypeError, ValueError):
            raise ValueError(f"{name} must hold numbers, got {value!r}") from None
        if not (math.isfinite(f) and f > 0):
            raise ValueError(f"{name} must be finite and > 0 in every axis (e.g. micrometres), got {value!r}")
        out.append(f)
    return tuple(out)


def _as_psf(psf) -> torch.Tensor:
    if isinstance(psf, torch.Tensor):
        t = psf.detach().cpu()
    else:
        try:
            t = torch.from_numpy(np.array(psf, dtype=np.float64))
        except (TypeError, ValueError):
            raise TypeError(f"psf must be an array (NumPy, torch or nested lists), got {type(psf).__name__}") from None
    if t.is_complex() or t.dtype == torch.bool:
        raise ValueError(f"psf must hold real numbers, got dtype {t.dtype}")
    t = t.to(torch.float64)
    if t.dim() not in (2, 3):
        raise ValueError(f"psf must have shape (kh, kw) or (kd, kh, kw), got shape {tuple(t.shape)}; "
                         f"squeeze singleton axes (e.g. numpy.squeeze(psf)) first")
    if t.numel() == 0:
        raise ValueError(f"psf is empty (shape {tuple(t.shape)})")
    if not bool(torch.isfinite(t).all()):
        raise ValueError("psf contains NaN or Inf; clean it first, e.g. numpy.nan_to_num(psf)")
    return t


def _border(t: torch.Tensor) -> torch.Tensor:
    """The voxels of the outer one-voxel shell."""
    mask = torch.zeros_like(t, dtype=torch.bool)
    for d in range(t.dim()):
        mask.narrow(d, 0, 1).fill_(True)
        mask.narrow(d, t.shape[d] - 1, 1).fill_(True)
    return t[mask]


def psf_centroid(psf) -> tuple[float, ...]:
    """Centre of mass (index units, per axis) of a non-negative array with a positive sum.

    Example:
        >>> psf_centroid(torch.tensor([[0.0, 1.0, 3.0]]))
        (0.0, 1.75)
    """
    t = torch.as_tensor(psf, dtype=torch.float64)
    total = float(t.sum())
    if not total > 0:
        raise ValueError("psf has no positive energy, so it has no centroid")
    out = []
    for d, n in enumerate(t.shape):
        other = [i for i in range(t.dim()) if i != d]
        marginal = t.sum(dim=other) if other else t
        out.append(float((marginal * torch.arange(n, dtype=torch.float64)).sum()) / total)
    return tuple(out)


def _peak(t: torch.Tensor) -> tuple[float, ...]:
    """Sub-pixel peak: the maximum voxel refined per axis by a parabola through the logarithms of it
    and its two neighbours (exact for a Gaussian peak, close for an Airy or Moffat core)."""
    index = np.unravel_index(int(torch.argmax(t)), tuple(t.shape))
    out = []
    for d, i in enumerate(index):
        if 0 < i < t.shape[d] - 1:
            around = [float(t[tuple(index[:d]) + (j,) + tuple(index[d + 1:])]) for j in (i - 1, i, i + 1)]
            if min(around) > 0:
                around = [math.log(a) for a in around]
            curvature = around[0] - 2 * around[1] + around[2]
            out.append(float(i) + (0.5 * (around[0] - around[2]) / curvature if curvature < 0 else 0.0))
        else:
            out.append(float(i))
    return tuple(out)


def fourier_shift(array, shift: Sequence[float]) -> torch.Tensor:
    """Shift an array by ``shift`` voxels per axis (sub-voxel), zero-filled, without wrap-around.

    The whole-voxel part moves the samples; the remaining fraction (|f| <= 0.5) multiplies the
    spectrum by a phase ramp exp(-2 pi i k f / N) on an array padded by two voxels each side, so
    what leaves one side does not come back on the other. A band-limited PSF keeps its shape;
    a sharp one gets faint ringing (clip negatives afterwards if it must stay non-negative).

    Args:
        array: real (..., *spatial) tensor or array; ``shift`` covers the last ``len(shift)`` axes.
        shift: voxels per axis, positive towards higher indices.

    Returns:
        float64 tensor of the input's shape.

    Example:
        >>> fourier_shift(torch.tensor([0.0, 1.0, 0.0, 0.0]), [1.0]).tolist()
        [0.0, 0.0, 1.0, 0.0]
    """
    t = torch.as_tensor(array, dtype=torch.float64)
    nd = len(shift)
    if nd > t.dim():
        raise ValueError(f"shift has {nd} axes but the array only {t.dim()}")
    pad = 2
    dims = tuple(range(t.dim() - nd, t.dim()))
    out = torch.nn.functional.pad(t, [pad, pad] * nd)
    whole = [round(float(s)) for s in shift]
    fraction = [float(s) - w for s, w in zip(shift, whole)]
    if any(f != 0 for f in fraction):
        spectrum = torch.fft.fftn(out, dim=dims)
        for d, f in zip(dims, fraction):
            freq = torch.fft.fftfreq(out.shape[d], dtype=torch.float64)
            ramp = torch.exp(-2j * math.pi * freq * f)
            view = [1] * out.dim()
            view[d] = -1
            spectrum = spectrum * ramp.reshape(view)
        out = torch.fft.ifftn(spectrum, dim=dims).real
    result = torch.zeros_like(t)
    source, target = [slice(None)] * t.dim(), [slice(None)] * t.dim()
    for d, w in zip(dims, whole):
        n = t.shape[d]
        # Padded index p holds original position p - pad, which lands at p - pad + w.
        lo, hi = max(0, w), min(n, n + w)
        if lo >= hi:
            return result
        target[d] = slice(lo, hi)
        source[d] = slice(lo - w + pad, hi - w + pad)
    result[tuple(target)] = out[tuple(source)]
    return result


def _resample_matrix(n_in: int, ratio: float) -> torch.Tensor:
    """(n_out, n_in) weights that resample one axis; ``ratio`` = output voxel / input voxel.

    Input centre n_in // 2 maps to output centre n_out // 2 (n_out odd). Coarsening (ratio >= 1):
    each output voxel receives the overlap of every input voxel with its extent (box integration,
    which conserves flux exactly and does not alias a narrow PSF). Refining (ratio < 1): linear
    interpolation scaled by the ratio (the interpolant's integral over the smaller voxel).
    """
    centre = n_in // 2
    reach = max(centre, n_in - 1 - centre) + 0.5
    half = max(0, math.floor(reach / ratio - 0.5 + 1e-9))
    x = centre + (torch.arange(2 * half + 1, dtype=torch.float64) - half) * ratio
    i = torch.arange(n_in, dtype=torch.float64)
    if ratio >= 1:
        lo = torch.maximum(x[:, None] - ratio / 2, i[None, :] - 0.5)
        hi = torch.minimum(x[:, None] + ratio / 2, i[None, :] + 0.5)
        return (hi - lo).clamp(min=0)
    return ratio * (1 - (x[:, None] - i[None, :]).abs()).clamp(min=0)


def resample_psf(psf, psf_voxel_size, voxel_size) -> torch.Tensor:
    """Resample a centred PSF from ``psf_voxel_size`` to ``voxel_size``, preserving its flux.

    Separable per axis (see the weights in the Notes); the centre voxel ``N // 2`` stays the
    centre, the output has odd sizes and covers the same physical extent. The result is scaled
    so that its sum equals the input's.

    Notes:
        Coarsening an axis integrates the input over each output voxel (box/area weights, like
        ``torch.nn.functional.interpolate(mode="area")`` for non-integer factors); refining it
        interpolates linearly. Both are linear in the PSF, so a PSF generated on a fine grid and
        coarsened equals, up to pixel integration, the same model sampled at the coarse voxels.

    Args:
        psf: (kh, kw) or (kd, kh, kw), centre at ``N // 2``.
        psf_voxel_size: the PSF's voxel size, a number or one value per axis (z, y, x), any unit.
        voxel_size: the target voxel size, same unit.

    Returns:
        float64 tensor, odd sizes.

    Example:
        >>> p = resample_psf(torch.ones(1, 3), (1.0, 1.0), (1.0, 0.5))
        >>> p.shape, float(p.sum())
        (torch.Size([1, 5]), 3.0)
    """
    t = _as_psf(psf)
    source = voxel_size_tuple(psf_voxel_size, t.dim(), "psf_voxel_size")
    target = voxel_size_tuple(voxel_size, t.dim(), "voxel_size")
    total = t.sum()
    out = t
    for d, (a, b) in enumerate(zip(source, target)):
        if a == b:
            continue
        matrix = _resample_matrix(out.shape[d], b / a)
        out = torch.movedim(torch.tensordot(matrix, torch.movedim(out, d, 0), dims=1), 0, d)
    if out is not t and float(out.sum()) != 0:
        out = out * (total / out.sum())
    return out


def _pad_to_odd(t: torch.Tensor) -> torch.Tensor:
    # An even side N with its centre at N // 2 gains one zero at the end: the new side N + 1 is odd
    # and its centre (N + 1) // 2 = N // 2 is the same voxel.
    pads = []
    for n in reversed(t.shape):
        pads += [0, 1 if n % 2 == 0 else 0]
    return torch.nn.functional.pad(t[None], pads)[0] if any(pads) else t


def _crop_centred(t: torch.Tensor, halves: Sequence[int]) -> torch.Tensor:
    for d, h in enumerate(halves):
        c = t.shape[d] // 2
        t = t.narrow(d, c - h, 2 * h + 1)
    return t


def _energy_halves(t: torch.Tensor, energy: float) -> list[int]:
    """Per-axis half-widths of the centred box that keeps at least ``energy`` of the flux.

    Each axis may lose (1 - energy) / ndim of its marginal, so the box loses at most 1 - energy.
    """
    total = float(t.sum())
    allowed = (1 - energy) / t.dim() * total
    halves = []
    for d, n in enumerate(t.shape):
        other = [i for i in range(t.dim()) if i != d]
        marginal = t.sum(dim=other)
        c = n // 2
        half = c
        for h in range(c + 1):
            inside = float(marginal[c - h:c + h + 1].sum())
            if total - inside <= allowed:
                half = h
                break
        halves.append(half)
    return halves


def prepare_psf(psf, *, image_shape=None, voxel_size=None, psf_voxel_size=None, center: str = "none",
                background=None, crop_energy: float | None = 0.999, normalize: bool = True,
                warn_truncated: bool = True, return_info: bool = False, dtype=torch.float32):
    """Make any measured or generated PSF fit for the restoration methods.

    Steps, in order: (1) background: subtract ``background`` (a value, or ``"auto"``: the median
    of the border voxels, a bead crop's pedestal) and clip negative values to 0; (2) odd sizes: an
    even side N, whose centre is index N // 2 (the DeconvolutionLab2 / flowdec convention, see
    :mod:`deblur_ops.psf`), gains one zero row/column at its end, which keeps that centre;
    (3) centring: ``"peak"`` (sub-voxel parabolic peak) or ``"centroid"`` (centre of mass) is moved
    to ``N // 2`` by :func:`fourier_shift` (negative ringing clipped); (4) resampling from
    ``psf_voxel_size`` to ``voxel_size`` (:func:`resample_psf`, flux-preserving); (5) cropping the
    support to the centred box that keeps ``crop_energy`` of the flux, and to at most the image size
    (the largest odd size <= each image side); (6) normalisation to sum 1.

    Warnings (``UserWarning`` with the numbers) flag what would silently spoil a restoration: a
    centroid more than 10 % of the PSF's size away from its centre while ``center="none"``; more
    than 1 % of the energy on the border voxels (a truncated PSF; for 3D PSFs the lateral faces
    only, since a widefield PSF carries the same energy in every plane); more than 1 % of the
    energy cut off by the image size.

    Args:
        psf: (kh, kw) or (kd, kh, kw) array or tensor, any sizes (even or odd).
        image_shape: spatial shape of the image the PSF will restore (its last ``psf.ndim`` axes
            are used); bounds the PSF's size.
        voxel_size: the image's voxel size (z, y, x; y, x for 2D), a number or one per axis, e.g. µm.
        psf_voxel_size: the PSF's voxel size, same unit; needs ``voxel_size``.
        center: ``"none"`` (trust the file's centre at N // 2), ``"peak"`` or ``"centroid"``.
        background: None, ``"auto"`` or a number subtracted before clipping.
        crop_energy: fraction of the flux to keep when cropping, in (0, 1]; None: no energy crop.
        normalize: scale to sum 1.
        warn_truncated: warn when more than 1 % of the energy is on the border voxels; turn off for
            compact kernels that end at their border by design (a horizontal motion line).
        return_info: also return a dict of what was done (background, shift, resampling, energy).
        dtype: floating dtype of the result.

    Returns:
        Tensor with odd sizes, centre at ``shape // 2``, non-negative (sum 1 when ``normalize``);
        with ``return_info``, ``(psf, info)``.

    Raises:
        ValueError: wrong dimensions, NaN/Inf, no positive energy after background removal, bad
            voxel sizes, unknown ``center`` or ``background``.
        TypeError: psf of an unsupported type.

    Example:
        >>> even = torch.zeros(4, 4); even[2, 2] = 1.0  # DL2 convention: centre at index 4 // 2
        >>> p = prepare_psf(even, crop_energy=None)
        >>> p.shape, float(p[2, 2])
        (torch.Size([5, 5]), 1.0)
    """
    t = _as_psf(psf)
    nd = t.dim()
    if center not in ("none", "peak", "centroid"):
        raise ValueError(f"center must be 'none', 'peak' or 'centroid', got {center!r}")
    if crop_energy is not None and not (0 < float(crop_energy) <= 1):
        raise ValueError(f"crop_energy must be in (0, 1] or None, got {crop_energy!r}")
    if psf_voxel_size is not None and voxel_size is None:
        raise ValueError("psf_voxel_size needs voxel_size (the image's) to resample the PSF to; pass both")
    target_voxel = voxel_size_tuple(voxel_size, nd) if voxel_size is not None else None
    source_voxel = voxel_size_tuple(psf_voxel_size, nd, "psf_voxel_size") if psf_voxel_size is not None else None
    limits = None
    if image_shape is not None:
        shape = tuple(int(s) for s in image_shape)
        if len(shape) < nd or min(shape) < 1:
            raise ValueError(f"image_shape must give at least the {nd} spatial sizes of the image, got {image_shape!r}")
        limits = [n if n % 2 else n - 1 for n in shape[-nd:]]
    info: dict = {"input_shape": tuple(t.shape)}

    if background is None:
        level = 0.0
    elif isinstance(background, str):
        if background != "auto":
            raise ValueError(f"background must be None, 'auto' or a number, got {background!r}")
        level = float(_border(t).median())
    else:
        level = float(background)
        if not math.isfinite(level):
            raise ValueError(f"background must be finite, got {background!r}")
    info["background"] = level
    t = (t - level).clamp(min=0)
    if not float(t.sum()) > 0:
        raise ValueError(f"psf has no positive energy after removing the background {level:g} and clipping "
                         f"negatives; check the file (a PSF must have a positive sum)")

    t = _pad_to_odd(t)
    centre = tuple(n // 2 for n in t.shape)
    centroid = psf_centroid(t)
    offset = tuple(c - m for c, m in zip(centroid, centre))
    info["centroid_offset"] = offset
    if center == "none":
        far = [abs(o) / n for o, n in zip(offset, t.shape)]
        if max(far) > OFF_CENTRE_FRACTION:
            warnings.warn(f"the PSF's centre of mass is {tuple(round(o, 2) for o in offset)} voxels from its "
                          f"centre index {centre} (more than {OFF_CENTRE_FRACTION:.0%} of its size "
                          f"{tuple(t.shape)}); the restoration will be shifted. Pass center='peak' or "
                          f"'centroid' to re-centre it", UserWarning, stacklevel=2)
        info["shift"] = (0.0,) * nd
    else:
        found = _peak(t) if center == "peak" else centroid
        shift = tuple(c - f for c, f in zip(centre, found))
        t = fourier_shift(t, shift).clamp(min=0)
        info["shift"] = shift

    shell = _border(t) if nd == 2 else _lateral_shell(t)
    border_fraction = float(shell.sum()) / float(t.sum())
    info["border_energy"] = border_fraction
    if warn_truncated and border_fraction > TRUNCATION_FRACTION:
        warnings.warn(f"{border_fraction:.1%} of the PSF's energy lies on its border voxels (more than "
                      f"{TRUNCATION_FRACTION:.0%}): it looks truncated, and the restoration will miss its wings. "
                      f"Measure or generate a larger PSF, or subtract its background (background='auto')",
                      UserWarning, stacklevel=2)

    if source_voxel is not None and source_voxel != target_voxel:
        t = resample_psf(t, source_voxel, target_voxel)
        info["resampled"] = (source_voxel, target_voxel)

    total = float(t.sum())
    halves = [n // 2 for n in t.shape]
    if crop_energy is not None:
        halves = [min(h, e) for h, e in zip(halves, _energy_halves(t, float(crop_energy)))]
    if limits is not None:
        allowed = [min(h, n // 2) for h, n in zip(halves, limits)]
        lost = 1 - float(_crop_centred(t, allowed).sum()) / total
        if lost > TRUNCATION_FRACTION and any(a < h for a, h in zip(allowed, halves)):
            warnings.warn(f"the PSF {tuple(t.shape)} is larger than the image {tuple(limits)} allows; cropping it "
                          f"around its centre loses {lost:.1%} of its energy", UserWarning, stacklevel=2)
        halves = allowed
    t = _crop_centred(t, halves)
    info["energy_kept"] = float(t.sum()) / total
    if normalize:
        t = t / t.sum()
    t = t.to(dtype)
    info["shape"] = tuple(t.shape)
    return (t, info) if return_info else t


def _lateral_shell(t: torch.Tensor) -> torch.Tensor:
    """Voxels on the four lateral faces of a (D, H, W) array (every plane's outer ring)."""
    mask = torch.zeros_like(t, dtype=torch.bool)
    mask[:, 0], mask[:, -1], mask[:, :, 0], mask[:, :, -1] = True, True, True, True
    return t[mask]
