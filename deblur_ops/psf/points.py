"""A PSF measured from beads (microscopy) or stars (astronomy): registered, cleaned, averaged crops."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from .prepare import fourier_shift, prepare_psf

__all__ = ["PointsReport", "psf_from_points"]

# A second local maximum this bright (relative to the crop's peak) and at least this far from it
# makes a doublet: two beads or stars whose average is not the PSF.
DOUBLET_LEVEL = 0.25
DOUBLET_DISTANCE = 3
# Voxels above this fraction of the peak define the centre used for registration: the centre of
# mass of the whole crop would be pulled towards the crop's centre by the clipped noise.
CORE_LEVEL = 0.05


@dataclass
class PointsReport:
    """Which points made the PSF and why the others did not.

    Attributes:
        used: indices (into ``points``) of the crops that were averaged.
        rejected: index -> reason, for every point left out.
        centres: index -> measured sub-voxel centre (image coordinates) of every registered point.
    """

    used: list[int] = field(default_factory=list)
    rejected: dict[int, str] = field(default_factory=dict)
    centres: dict[int, tuple[float, ...]] = field(default_factory=dict)

    def summary(self) -> str:
        """One line per rejected point, after a count."""
        lines = [f"{len(self.used)} point(s) used, {len(self.rejected)} rejected"]
        lines += [f"  point {i}: {why}" for i, why in sorted(self.rejected.items())]
        return "\n".join(lines)


def _as_image(image) -> torch.Tensor:
    if isinstance(image, torch.Tensor):
        t = image.detach().cpu().to(torch.float64)
    else:
        try:
            t = torch.from_numpy(np.array(image, dtype=np.float64))
        except (TypeError, ValueError):
            raise TypeError(f"image must be an array or tensor, got {type(image).__name__}") from None
    if t.dim() not in (2, 3):
        raise ValueError(f"image must have shape (H, W) or (D, H, W), got shape {tuple(t.shape)}")
    if not bool(torch.isfinite(t).all()):
        raise ValueError("image contains NaN or Inf; clean it first, e.g. numpy.nan_to_num(image)")
    return t


def _as_points(points, nd: int) -> np.ndarray:
    try:
        pts = np.asarray(points.cpu() if isinstance(points, torch.Tensor) else points, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"points must be (n, {nd}) numbers ((z,) row, col), got {points!r}") from None
    if pts.ndim != 2 or pts.shape[1] != nd or len(pts) == 0:
        raise ValueError(f"points must have shape (n, {nd}) with n >= 1 (coordinates of a {nd}D image), "
                         f"got shape {pts.shape}")
    if not np.isfinite(pts).all():
        raise ValueError("points contain NaN or Inf")
    return pts


def _sizes(size, nd: int) -> tuple[int, ...]:
    sizes = (size,) * nd if np.ndim(size) == 0 else tuple(size)
    if len(sizes) != nd or any(isinstance(s, bool) or int(s) != s or s < 3 or s % 2 == 0 for s in sizes):
        raise ValueError(f"size must be an odd integer >= 3 or {nd} of them (the PSF is centred at size // 2), "
                         f"got {size!r}")
    return tuple(int(s) for s in sizes)


def _local_maxima(crop: torch.Tensor) -> torch.Tensor:
    """(k, nd) indices of voxels not smaller than any of their neighbours (3^nd neighbourhood)."""
    pool = torch.nn.functional.max_pool2d if crop.dim() == 2 else torch.nn.functional.max_pool3d
    pooled = pool(crop[None, None], 3, stride=1, padding=1)[0, 0]
    return torch.nonzero((crop == pooled) & (crop > 0))


def _measure(img, position, sizes, background, level, subpixel):
    """A registered, background-free crop around ``position`` (sum 1), its centre and a rejection reason.

    The crop is None when the point cannot be measured; a reason with a crop (saturated, doublet)
    only counts when outliers are rejected.
    """
    halves = [s // 2 for s in sizes]
    centre = [int(round(p)) for p in position]

    def crop_at(c):
        if any(ci - h < 0 or ci + h >= n for ci, h, n in zip(c, halves, img.shape)):
            return None
        return img[tuple(slice(ci - h, ci + h + 1) for ci, h in zip(c, halves))]

    def clean(crop):
        if background == "auto":
            return crop - crop[~_interior_mask(crop)].median()
        return crop - (0.0 if background is None else float(background))

    # A click a few voxels off cuts the wings into the border; re-crop around the measured centre
    # (twice is enough for clicks within a FWHM or so).
    for _ in range(3):
        crop = crop_at(centre)
        if crop is None:
            where = ", ".join(f"{p:.1f}" for p in position)
            return None, None, (f"its {'x'.join(map(str, sizes))} crop around ({where}) leaves the "
                                f"{'x'.join(map(str, img.shape))} image")
        signal = clean(crop).clamp(min=0)
        peak = float(signal.max())
        if not peak > 0:
            return None, None, "nothing above its background in the crop (not on a star or bead)"
        core = torch.where(signal >= CORE_LEVEL * peak, signal, torch.zeros_like(signal))
        local = _centre_of_mass(core)
        moved = [round(m - h) for m, h in zip(local, halves)]
        if not any(moved):
            break
        centre = [c + m for c, m in zip(centre, moved)]
    reason = None
    at_max = int((crop >= level - 1e-6 * abs(level)).sum())
    if at_max >= 2:
        reason = f"saturated: {at_max} voxels at the image maximum {level:g} (a flat top)"
    # A second peak must also stand 5 noise sigmas (robust sigma of the crop's border) above the
    # background: on faint stars, noise alone makes local maxima at a quarter of the peak.
    raw_border = clean(crop).flatten()[~_interior_mask(crop).flatten()]
    noise = 1.4826 * float((raw_border - raw_border.median()).abs().median())
    strongest = torch.tensor(np.unravel_index(int(torch.argmax(signal)), tuple(signal.shape)))
    for m in _local_maxima(signal):
        value = float(signal[tuple(m.tolist())])
        distance = int((m - strongest).abs().max())
        if reason is None and distance >= DOUBLET_DISTANCE and value >= max(DOUBLET_LEVEL * peak, 5 * noise):
            reason = f"doublet: a second peak at {value / peak:.0%} of the first, {distance} voxels away"
    image_centre = tuple(c - h + m for c, h, m in zip(centre, halves, local))
    if subpixel:
        signal = fourier_shift(signal, [h - m for h, m in zip(halves, local)]).clamp(min=0)
    return signal / signal.sum(), image_centre, reason


def _interior_mask(t: torch.Tensor) -> torch.Tensor:
    mask = torch.zeros_like(t, dtype=torch.bool)
    mask[tuple(slice(1, -1) for _ in range(t.dim()))] = True
    return mask


def _centre_of_mass(t: torch.Tensor) -> list[float]:
    total = float(t.sum())
    out = []
    for d, n in enumerate(t.shape):
        other = [i for i in range(t.dim()) if i != d]
        out.append(float((t.sum(dim=other) * torch.arange(n, dtype=t.dtype)).sum()) / total)
    return out


def measure_points(image, points, size, *, subpixel: bool = True, background="auto", reject: bool = True,
                   saturation: float | None = None, min_correlation: float | None = 0.85):
    """Registered crops of every usable point: (crops dict index -> tensor, report). See :func:`psf_from_points`."""
    img = _as_image(image)
    nd = img.dim()
    pts = _as_points(points, nd)
    sizes = _sizes(size, nd)
    if not (background is None or background == "auto" or isinstance(background, (int, float))):
        raise ValueError(f"background must be None, 'auto' or a number, got {background!r}")
    if min_correlation is not None and not -1 <= float(min_correlation) <= 1:
        raise ValueError(f"min_correlation must be in [-1, 1], got {min_correlation!r}")
    level = float(img.max()) if saturation is None else float(saturation)
    report = PointsReport()
    crops = {}
    for index, position in enumerate(pts):
        crop, centre, reason = _measure(img, position, sizes, background, level, subpixel)
        if reason is not None and (reject or crop is None):
            report.rejected[index] = reason
            continue
        crops[index] = crop
        report.centres[index] = centre
    if reject and min_correlation is not None:
        reject_unlike(crops, list(crops), report, min_correlation)
    report.used = sorted(crops)
    return crops, report


def reject_unlike(crops: dict, group: list[int], report: PointsReport, min_correlation: float) -> None:
    """Drop from ``crops`` the members of ``group`` (>= 3 of them) unlike the group's median crop."""
    if len(group) < 3:
        return
    median = torch.stack([crops[i] for i in group]).median(dim=0).values.flatten()
    for index in group:
        r = float(torch.corrcoef(torch.stack([crops[index].flatten(), median]))[0, 1])
        if not (r >= min_correlation):
            report.rejected[index] = (f"correlation {r:.2f} with the median crop is below {min_correlation} "
                                      f"(a neighbour, a galaxy or a cosmic ray in the crop)")
            del crops[index]


def psf_from_points(image, points, size, *, subpixel: bool = True, background="auto", reject: bool = True,
                    saturation: float | None = None, min_correlation: float = 0.85):
    """Average registered crops of isolated beads or stars into one 2D or 3D PSF.

    Each point gives a crop of ``size`` around it, re-centred (up to three times) on the centre
    of mass of its core (voxels above 5 % of the crop's peak), so a click a few voxels off works.
    The local background (median of the crop's border voxels with ``"auto"``) is subtracted and
    negatives are clipped; with ``subpixel`` the crop is moved by :func:`fourier_shift` so that
    its core's centre of mass lands exactly on the central voxel. Crops are normalised to sum 1
    and averaged.

    With ``reject``, a point is left out, and the report says why, when its crop leaves the
    image; has nothing above the background; is saturated (two or more voxels at the image
    maximum, or at ``saturation``: a flat top); is a doublet (a second local maximum at >= 25 % of
    the peak, >= 3 voxels from it); or, with three or more crops, correlates with the median crop
    below ``min_correlation``. Without ``reject`` only the first two are left out (they cannot be
    measured).

    Args:
        image: (H, W) or (D, H, W) array or tensor.
        points: (n, 2) or (n, 3) positions in voxel coordinates ((z,) row, col).
        size: odd crop size (one, or one per axis): larger than the visible wings, so that the
            crop's border is background.
        subpixel: register each crop to sub-voxel precision (else to the nearest voxel).
        background: ``"auto"``, a number, or None (the image is background-free).
        reject: leave outliers out (see above).
        saturation: the detector's saturation level (default: the image maximum).
        min_correlation: threshold of the median-crop test.

    Returns:
        ``(psf, report)``: the PSF (odd sizes, sum 1, float32 tensor) and a :class:`PointsReport`.

    Raises:
        ValueError: bad shapes or sizes, or no usable point (the message lists the reasons).

    Example:
        >>> yy, xx = np.mgrid[0:41, 0:41]
        >>> beads = sum(np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / 4.0) for y, x in [(10, 10), (30, 28)])
        >>> psf, report = psf_from_points(beads, [(10, 10), (30, 28)], 9)
        >>> psf.shape, report.used
        (torch.Size([9, 9]), [0, 1])
    """
    crops, report = measure_points(image, points, size, subpixel=subpixel, background=background,
                                   reject=reject, saturation=saturation, min_correlation=min_correlation)
    if not crops:
        raise ValueError(f"no usable point for the PSF: {report.summary()}")
    mean = torch.stack([crops[i] for i in report.used]).mean(0)
    return prepare_psf(mean, crop_energy=None, warn_truncated=False), report


def inverse_distance_fill(positions: np.ndarray, values: torch.Tensor, target: np.ndarray,
                          power: float = 2.0) -> torch.Tensor:
    """Inverse-distance-weighted average of ``values`` (n, ...) measured at ``positions`` (n, d) at ``target`` (d,)."""
    distance = np.linalg.norm(positions - target[None], axis=1)
    if np.any(distance == 0):
        return values[int(np.argmin(distance))]
    weights = torch.from_numpy(distance ** -power).to(values.dtype)
    weights = weights / weights.sum()
    return (weights.reshape((-1,) + (1,) * (values.dim() - 1)) * values).sum(0)
