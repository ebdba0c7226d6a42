"""A PSF measured from beads (microscopy) or stars (astronomy): registered, cleaned, averaged crops."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from .prepare import fourier_shift, prepare_psf

__all__ = ["PointsReport", "find_point_sources", "psf_from_point_sources", "psf_from_points"]

# A second local maximum this bright (relative to the crop's peak) and at least this far from it
# makes a doublet: two beads or stars whose average is not the PSF.
DOUBLET_LEVEL = 0.25
DOUBLET_DISTANCE = 3
# Voxels above this fraction of the peak define the centre used for registration: the centre of
# mass of the whole crop would be pulled towards the crop's centre by the clipped noise.
CORE_LEVEL = 0.05
# find_point_sources: the Gaussian (sigma in voxels) that the image is smoothed with before its
# peaks are looked for, so that a noise spike is no peak.
DETECTION_SMOOTHING = 1.0


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


def find_point_sources(image, size, *, threshold: float = 10.0, max_sources: int = 100) -> np.ndarray:
    """Isolated point sources (stars, beads) of a 2D image or 3D stack, brightest first.

    A voxel is a source when, in the image smoothed by a Gaussian of 1 voxel, it is the brightest
    voxel of the ``size`` box around it (so no brighter source shares its crop), stands
    ``threshold`` noise sigmas above the background, and its box lies inside the image. The
    background is the image's median and the noise sigma the median absolute deviation around it
    (x 1.4826), both dominated by the empty sky or the space between beads. The positions go to
    :func:`psf_from_point_sources` (or :func:`psf_from_points`), which leave out the saturated
    ones and the extended objects (galaxies, cells) that do not look like the others.

    Args:
        image: (H, W) or (D, H, W) array or tensor.
        size: odd side of the box (one, or one per axis), the crop size of the PSF to measure.
        threshold: detection level in noise sigmas above the background (> 0).
        max_sources: at most this many sources are returned (>= 1), the brightest.

    Returns:
        (n, 2) or (n, 3) int64 positions ((z,) row, col), brightest first; empty when none.

    Example:
        >>> yy, xx = np.mgrid[0:64, 0:64]
        >>> stars = sum(a * np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / 4.0) for a, y, x in [(1, 20, 20), (2, 44, 40)])
        >>> find_point_sources(stars, 15).tolist()
        [[44, 40], [20, 20]]
    """
    img = _as_image(image)
    sizes = _sizes(size, img.dim())
    if not (isinstance(threshold, (int, float)) and not isinstance(threshold, bool) and np.isfinite(threshold)
            and threshold > 0):
        raise ValueError(f"threshold must be a number > 0 (noise sigmas above the background), got {threshold!r}")
    if isinstance(max_sources, bool) or not isinstance(max_sources, (int, np.integer)) or max_sources < 1:
        raise ValueError(f"max_sources must be an integer >= 1, got {max_sources!r}")
    if any(s > n for s, n in zip(sizes, img.shape)):
        raise ValueError(f"size {sizes} is larger than the image {tuple(img.shape)}")
    values = img.flatten()[:: max(1, img.numel() // 2_000_000)]
    background = float(values.median())
    noise = 1.4826 * float((values - background).abs().median())
    spread = float(img.max()) - background
    if not spread > 0:
        return np.zeros((0, img.dim()), np.int64)
    noise = max(noise, 1e-6 * spread)  # a noise-free (synthetic) image
    smooth = _gaussian_smooth(img, DETECTION_SMOOTHING)
    pool = torch.nn.functional.max_pool2d if img.dim() == 2 else torch.nn.functional.max_pool3d
    peaks = smooth == pool(smooth[None, None], sizes, stride=1, padding=[s // 2 for s in sizes])[0, 0]
    peaks &= img - background > threshold * noise
    inside = torch.zeros_like(peaks)
    inside[tuple(slice(s // 2, n - s // 2) for s, n in zip(sizes, img.shape))] = True
    found = torch.nonzero(peaks & inside)
    if len(found) == 0:
        return np.zeros((0, img.dim()), np.int64)
    order = torch.argsort(smooth[tuple(found.T)], descending=True)
    return found[order[:int(max_sources)]].numpy().astype(np.int64)


def source_crops(img: torch.Tensor, positions: np.ndarray, sizes: tuple[int, ...], report: PointsReport) -> dict:
    """Registered crops (sum 1) of detected point sources, index -> tensor; the left-out ones go to
    ``report.rejected`` with the reason, the measured centres to ``report.centres``.

    Each source is centred on the centroid of the 5-voxel box around its peak above the crop's
    background (the centroid of everything above 5 % of the peak, as :func:`psf_from_points`
    re-centres a click, wanders towards the neighbours that a crowded field puts into most crops);
    the crop is cut there without clipping the noise at zero (clipped, the noise of a 31 x 31 crop
    adds a pedestal that outweighs a faint star's flux), its border median subtracted, shifted to
    sub-voxel precision and divided by its flux. Saturated sources (two or more voxels at the image
    maximum) are left out.
    """
    crops = {}
    level = float(img.max())
    halves = [n // 2 for n in sizes]
    for index, position in enumerate(positions):
        box = tuple(slice(int(c) - h, int(c) + h + 1) for c, h in zip(position, halves))
        background = float(img[box][~_interior_mask(img[box])].median())
        near = tuple(slice(int(c) - min(2, h), int(c) + min(2, h) + 1) for c, h in zip(position, halves))
        weights = (img[near] - background).clamp(min=0)
        if not float(weights.sum()) > 0:
            report.rejected[index] = "nothing above its local background"
            continue
        centre = [axis.start + m for axis, m in zip(near, _centre_of_mass(weights))]
        if int((img[box] >= level - 1e-6 * abs(level)).sum()) >= 2:
            report.rejected[index] = f"saturated: voxels at the image maximum {level:g} (a flat top)"
            continue
        nearest = [int(round(c)) for c in centre]
        if any(c - h < 0 or c + h >= n for c, h, n in zip(nearest, halves, img.shape)):
            report.rejected[index] = "its crop around the measured centre leaves the image"
            continue
        raw = img[tuple(slice(c - h, c + h + 1) for c, h in zip(nearest, halves))]
        raw = raw - raw[~_interior_mask(raw)].median()
        raw = fourier_shift(raw, [n - c for n, c in zip(nearest, centre)])
        flux = float(raw.sum())
        if not flux > 0:
            report.rejected[index] = "no flux above its local background"
            continue
        crops[index] = raw / flux
        report.centres[index] = tuple(centre)
    return crops


def reject_unlike_core(crops: dict, group: list[int], report: PointsReport, min_correlation: float) -> None:
    """Drop from ``crops`` the members of ``group`` (>= 3 of them) whose core correlates with the
    group's median crop under ``min_correlation``. The core is where the median crop exceeds 5 %
    of its peak: over the whole crop the noise of the empty border decides the correlation."""
    if len(group) < 3:
        return
    median = torch.stack([crops[i] for i in group]).median(dim=0).values
    core = median >= CORE_LEVEL * float(median.max())
    for index in group:
        r = float(torch.corrcoef(torch.stack([crops[index][core], median[core]]))[0, 1])
        if not (r >= min_correlation):
            report.rejected[index] = (f"correlation {r:.2f} with the median crop's core is below "
                                      f"{min_correlation} (a neighbour, a galaxy or a cosmic ray)")
            del crops[index]


def psf_from_point_sources(image, size, *, threshold: float = 10.0, max_sources: int = 100,
                           min_sources: int = 3, min_correlation: float = 0.85):
    """The PSF of a star field or bead image, from point sources it finds itself (blind).

    :func:`find_point_sources` gives the candidates; each is cropped, its local background
    removed and registered to sub-voxel precision as in :func:`psf_from_points`; saturated ones
    and those unlike the others (correlation with the median crop under ``min_correlation``:
    galaxies, cells, close pairs) are left out, and the PSF is the voxel-wise **median** of the
    remaining crops, so that a fainter neighbour inside one crop does not print into the PSF (in
    a crowded field nearly every crop holds one, and :func:`psf_from_points`'s doublet test would
    leave out most of the stars).

    Args:
        image: (H, W) or (D, H, W) array or tensor (background need not be subtracted).
        size: odd crop size (one, or one per axis): larger than the PSF's visible wings.
        threshold: detection level in noise sigmas (see :func:`find_point_sources`).
        max_sources: at most this many candidates, the brightest.
        min_sources: fewest usable sources for a PSF (>= 1).
        min_correlation: threshold of the median-crop test.

    Returns:
        ``(psf, positions, report)``: the PSF (odd sizes, sum 1, float32 tensor), the candidates'
        (n, nd) positions, and a :class:`PointsReport` on them (indices into ``positions``).

    Raises:
        ValueError: bad arguments, or fewer than ``min_sources`` usable sources (the message says why).

    Example:
        >>> yy, xx = np.mgrid[0:96, 0:96]
        >>> spots = [(20, 20), (20, 70), (70, 25), (72, 74), (46, 47)]
        >>> field = sum(np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / 8.0) for y, x in spots)
        >>> psf, positions, report = psf_from_point_sources(field, 15)
        >>> psf.shape, len(report.used)
        (torch.Size([15, 15]), 5)
    """
    if isinstance(min_sources, bool) or not isinstance(min_sources, (int, np.integer)) or min_sources < 1:
        raise ValueError(f"min_sources must be an integer >= 1, got {min_sources!r}")
    img = _as_image(image)
    sizes = _sizes(size, img.dim())
    positions = find_point_sources(img, sizes, threshold=threshold, max_sources=max_sources)
    report = PointsReport()
    crops = source_crops(img, positions, sizes, report)
    reject_unlike_core(crops, list(crops), report, float(min_correlation))
    report.used = sorted(crops)
    if len(report.used) < min_sources:
        found = (f"{len(positions)} candidate(s) {threshold:g} noise sigmas above the background with a "
                 f"{'x'.join(map(str, sizes))} crop inside the image")
        raise ValueError(f"too few usable point sources for a PSF (need {min_sources}): {found}; "
                         f"{report.summary()}")
    median = torch.stack([crops[i] for i in report.used]).median(dim=0).values.clamp(min=0)
    return prepare_psf(median, crop_energy=None, warn_truncated=False), positions, report


def _gaussian_smooth(img: torch.Tensor, sigma: float) -> torch.Tensor:
    """``img`` convolved along each axis with a Gaussian of ``sigma`` voxels (edges replicated)."""
    radius = int(math.ceil(3 * sigma))
    taps = torch.exp(-torch.arange(-radius, radius + 1, dtype=img.dtype) ** 2 / (2 * sigma ** 2))
    taps = taps / taps.sum()
    out = img
    for axis in range(img.dim()):
        if img.shape[axis] <= radius:
            continue
        moved = out.movedim(axis, -1)
        shape = moved.shape
        line = torch.nn.functional.pad(moved.reshape(1, -1, shape[-1]), (radius, radius), mode="replicate")
        line = torch.nn.functional.conv1d(line.reshape(-1, 1, shape[-1] + 2 * radius), taps[None, None])
        out = line.reshape(shape).movedim(-1, axis)
    return out


def inverse_distance_fill(positions: np.ndarray, values: torch.Tensor, target: np.ndarray,
                          power: float = 2.0) -> torch.Tensor:
    """Inverse-distance-weighted average of ``values`` (n, ...) measured at ``positions`` (n, d) at ``target`` (d,)."""
    distance = np.linalg.norm(positions - target[None], axis=1)
    if np.any(distance == 0):
        return values[int(np.argmin(distance))]
    weights = torch.from_numpy(distance ** -power).to(values.dtype)
    weights = weights / weights.sum()
    return (weights.reshape((-1,) + (1,) * (values.dim() - 1)) * values).sum(0)
