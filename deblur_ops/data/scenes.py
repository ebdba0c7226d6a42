"""Synthetic test scenes with known blur, made by code (no download): microscopy, astronomy, photo.

Each generator returns the blurred observation, the PSF that blurred it and the clean scene, so
the CLI, the napari plugin and the tests can score a restoration against the truth.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..psf import analytic as psf_models
from . import SAMPLES, sample_image
from ..psf import MotionField, exact_motion_blur, grid_weights, linear_motion_kernel


@dataclass(frozen=True)
class Sample:
    """A blurred observation with its blur and ground truth.

    Attributes:
        blurred: the observation (float32).
        psf: the PSF that blurred it: (kh, kw), (kd, kh, kw), or (gy, gx, kh, kw) for a PSF
            that varies across the field (bilinearly interpolated between grid nodes, see
            :func:`deblur_ops.psf.grid_weights`).
        clean: the scene before blur and noise (float32, same shape as ``blurred``).
        scale: physical size of a pixel per axis (for viewers), e.g. (z_step, pixel, pixel).
    """

    blurred: np.ndarray
    psf: np.ndarray
    clean: np.ndarray
    scale: tuple[float, ...]


def _positive_int(value, name: str) -> int:
    if isinstance(value, bool) or int(value) != value or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _shape(shape, nd: int, minimum: int) -> tuple[int, ...]:
    try:
        sizes = tuple(int(s) for s in shape)
    except TypeError:
        raise ValueError(f"shape must be {nd} integers, got {shape!r}") from None
    if len(sizes) != nd or min(sizes) < minimum:
        raise ValueError(f"shape must be {nd} integers >= {minimum}, got {shape!r}; e.g. {(minimum * 2,) * nd}")
    return sizes


def fft_convolve(image: torch.Tensor, psf: torch.Tensor) -> torch.Tensor:
    """Same-size linear convolution with zero boundary (the scenes here are dark at the border).

    Args:
        image: (..., *spatial) float tensor; the PSF covers its last ``psf.dim()`` axes.
        psf: odd-sized PSF centred at ``shape // 2``.

    Returns:
        Tensor of the image's shape.
    """
    nd = psf.dim()
    spatial = image.shape[-nd:]
    full = [n + k - 1 for n, k in zip(spatial, psf.shape)]
    dims = tuple(range(-nd, 0))
    product = torch.fft.rfftn(image, full, dim=dims) * torch.fft.rfftn(psf.to(image.dtype), full, dim=dims)
    out = torch.fft.irfftn(product, full, dim=dims)
    index = (Ellipsis,) + tuple(slice(k // 2, k // 2 + n) for n, k in zip(spatial, psf.shape))
    return out[index]


def widefield_volume(shape=(32, 128, 128), *, beads: int = 40, filaments: int = 8, photons: float = 200.0,
                     wavelength: float = 0.52, na: float = 1.2, refractive_index: float = 1.33,
                     pixel_size: float = 0.1, z_step: float = 0.25, seed: int = 0) -> Sample:
    """Beads and filaments in a widefield microscope: Born–Wolf blur and Poisson (shot) noise.

    Args:
        shape: (D, H, W) of the volume, each >= 16.
        beads: number of sub-resolution beads (single bright voxels).
        filaments: number of random smooth 3D filaments.
        photons: expected photon count of the brightest clean voxel (sets the Poisson SNR).
        wavelength, na, refractive_index, pixel_size, z_step: optics of
            :func:`deblur_ops.psf.analytic.born_wolf_psf` (micrometres).
        seed: random seed.

    Returns:
        :class:`Sample` with a (D, H, W) observation in photons, the (kd, kh, kw) PSF (sum 1)
        and scale (z_step, pixel_size, pixel_size).

    Example:
        >>> s = widefield_volume((16, 48, 48), beads=5, filaments=2)
        >>> s.blurred.shape, s.psf.ndim
        ((16, 48, 48), 3)
    """
    depth, height, width = _shape(shape, 3, 16)
    if not photons > 0:
        raise ValueError(f"photons must be > 0, got {photons!r}")
    rng = np.random.default_rng(seed)
    clean = np.zeros((depth, height, width), np.float32)
    margin = np.array([2, 4, 4])
    size = np.array([depth, height, width])
    if min(beads, filaments) < 0:
        raise ValueError(f"beads and filaments must be >= 0, got beads={beads!r}, filaments={filaments!r}")
    points = rng.integers(margin, size - margin, size=(int(beads), 3))
    clean[tuple(points.T)] = 1.0
    for _ in range(filaments):
        # A filament is a smooth random walk: the direction drifts slowly so the curve stays smooth.
        position = rng.uniform(margin, size - margin)
        direction = rng.normal(size=3)
        for _ in range(4 * max(height, width)):
            direction = direction / np.linalg.norm(direction) + 0.15 * rng.normal(size=3)
            direction[0] *= 0.3
            position = position + 0.5 * direction / np.linalg.norm(direction)
            voxel = np.round(position).astype(int)
            if np.any(voxel < 0) or np.any(voxel >= size):
                break
            clean[tuple(voxel)] = 0.5
    psf_shape = (min(depth, 15) | 1, min(height, 31) | 1, min(width, 31) | 1)
    psf = psf_models.born_wolf_psf(wavelength, na, refractive_index, pixel_size, z_step, psf_shape)
    # Beads are brighter than the PSF's spread makes them look: scale so the brightest blurred voxel
    # receives about ``photons`` counts.
    blurred = fft_convolve(torch.from_numpy(clean), psf).clamp_min(0)
    gain = photons / float(blurred.max())
    generator = torch.Generator().manual_seed(seed)
    observed = torch.poisson(blurred * gain + 1.0, generator=generator)
    return Sample(observed.numpy().astype(np.float32), psf.numpy(), clean * np.float32(gain),
                  (z_step, pixel_size, pixel_size))


def astronomy_field(shape=(256, 256), grid=(3, 3), *, stars: int = 120, galaxies: int = 12,
                    fwhm_range=(3.0, 6.0), beta: float = 3.0, sky: float = 20.0, read_noise: float = 3.0,
                    seed: int = 0) -> Sample:
    """Stars and galaxies seen through seeing that varies across the field (Moffat PSFs).

    The PSF at grid node (i, j) is a Moffat profile whose FWHM grows from the field centre to
    the corners (``fwhm_range``), elongated towards the edges like off-axis aberration; between
    nodes the blur is the bilinear interpolation of the node PSFs (as
    :func:`deblur_ops.psf.grid_weights` defines it). Noise: Poisson on the sky + signal, plus
    Gaussian read noise; the returned image has the sky subtracted.

    Args:
        shape: (H, W), each >= 32.
        grid: (gy, gx) PSF grid, each >= 1.
        stars: number of point sources (power-law fluxes).
        galaxies: number of extended sources (elliptical exponential discs).
        fwhm_range: (centre, corner) FWHM in pixels.
        beta: Moffat index (> 1).
        sky: sky background in counts per pixel.
        read_noise: Gaussian read-noise sigma in counts.
        seed: random seed.

    Returns:
        :class:`Sample` with (H, W) blurred counts, a (gy, gx, k, k) PSF grid and scale (1, 1).

    Example:
        >>> s = astronomy_field((64, 64), (2, 2), stars=10, galaxies=1)
        >>> s.psf.shape[:2]
        (2, 2)
    """
    height, width = _shape(shape, 2, 32)
    gy, gx = (_positive_int(g, "grid") for g in grid)
    low, high = (float(f) for f in fwhm_range)
    if not 0 < low <= high:
        raise ValueError(f"fwhm_range must be (centre, corner) with 0 < centre <= corner, got {fwhm_range!r}")
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    clean = np.zeros((height, width), np.float32)
    star_y = rng.integers(4, height - 4, stars)
    star_x = rng.integers(4, width - 4, stars)
    np.add.at(clean, (star_y, star_x), (rng.pareto(1.5, stars) + 1).astype(np.float32) * 2000)
    for _ in range(galaxies):
        cy, cx = rng.uniform(8, height - 8), rng.uniform(8, width - 8)
        radius, ratio, angle = rng.uniform(2, 6), rng.uniform(0.3, 1), rng.uniform(0, np.pi)
        along = (xx - cx) * np.cos(angle) + (yy - cy) * np.sin(angle)
        across = -(xx - cx) * np.sin(angle) + (yy - cy) * np.cos(angle)
        clean += rng.uniform(50, 300) * np.exp(-np.hypot(along, across / ratio) / radius).astype(np.float32)
    side = psf_models.moffat_psf(high, beta).shape[-1]
    nodes = []
    for i in range(gy):
        for j in range(gx):
            # Normalised distance of the node from the field centre: 0 at the centre, 1 at a corner.
            oy = (i / (gy - 1) - 0.5) * 2 if gy > 1 else 0.0
            ox = (j / (gx - 1) - 0.5) * 2 if gx > 1 else 0.0
            reach = min(1.0, float(np.hypot(oy, ox)) / np.sqrt(2))
            fwhm = low + (high - low) * reach
            node = psf_models.moffat_psf(fwhm, beta, side).numpy()
            # Off-axis nodes are stretched towards the edge, like off-axis aberrations.
            stretched = psf_models.gaussian_psf((1.0 + 1.5 * reach * abs(oy), 1.0 + 1.5 * reach * abs(ox)), 7).numpy()
            nodes.append(fft_convolve(torch.from_numpy(node), torch.from_numpy(stretched)).numpy())
    psfs = np.stack(nodes).astype(np.float32)
    psfs /= psfs.sum(axis=(1, 2), keepdims=True)
    idx, weights = grid_weights((gy, gx), (height, width))
    per_node = torch.stack([fft_convolve(torch.from_numpy(clean), torch.from_numpy(p)) for p in psfs])
    blurred = (torch.gather(per_node[None], 1, idx) * weights).sum(1)[0].clamp_min(0).numpy()
    observed = rng.poisson(blurred + sky).astype(np.float32) - sky + rng.normal(0, read_noise, blurred.shape)
    return Sample(observed.astype(np.float32), psfs.reshape(gy, gx, side, side), clean, (1.0, 1.0))


def motion_blurred_photo(name: str = "camera", *, length: float = 21.0, angle: float = 30.0,
                         noise_sigma: float = 0.01, size: int | None = 256, seed: int = 0) -> Sample:
    """A bundled photograph blurred by a known linear camera motion, plus Gaussian noise.

    Args:
        name: a picture from :data:`deblur_ops.data.SAMPLES` (grey or RGB).
        length: motion length in pixels (>= 1).
        angle: motion direction in degrees, counter-clockwise from +x.
        noise_sigma: Gaussian noise sigma on the [0, 1] scale (>= 0).
        size: central crop size, or None for the whole picture.
        seed: random seed of the noise.

    Returns:
        :class:`Sample` with the (H, W) or (H, W, 3) blurred photo, the (k, k) kernel and scale (1, 1).

    Example:
        >>> s = motion_blurred_photo(size=64, length=9)
        >>> s.blurred.shape, s.psf.shape
        ((64, 64), (9, 9))
    """
    if name not in SAMPLES:
        raise ValueError(f"unknown picture {name!r}; choose one of {list(SAMPLES)}")
    if not noise_sigma >= 0:
        raise ValueError(f"noise_sigma must be >= 0, got {noise_sigma!r}")
    clean = sample_image(name, size=size)
    kernel = linear_motion_kernel(length, angle)
    picture = torch.from_numpy(clean)
    channels = picture[None] if picture.dim() == 2 else picture.permute(2, 0, 1)
    padded = torch.nn.functional.pad(channels[None], [kernel.shape[-1] // 2] * 2 + [kernel.shape[-2] // 2] * 2,
                                     mode="reflect")[0]
    blurred = fft_convolve(padded, kernel)[..., kernel.shape[-2] // 2:-(kernel.shape[-2] // 2) or None,
                                           kernel.shape[-1] // 2:-(kernel.shape[-1] // 2) or None]
    blurred = blurred[0] if picture.dim() == 2 else blurred.permute(1, 2, 0)
    rng = np.random.default_rng(seed)
    observed = blurred.numpy() + rng.normal(0, noise_sigma, blurred.shape).astype(np.float32)
    return Sample(observed.astype(np.float32), kernel.numpy(), clean, (1.0, 1.0))


@dataclass(frozen=True)
class MotionFieldSample:
    """A photograph blurred by spatially varying motion, with that motion.

    Attributes:
        blurred: the observation, (H, W) or (H, W, 3) float32.
        field: the per-pixel blur lines (:class:`~deblur_ops.psf.MotionField`, (H, W)).
        clean: the picture before blur and noise.
    """

    blurred: np.ndarray
    field: MotionField
    clean: np.ndarray


def motion_field_photo(name: str = "camera", *, translation=(6.0, 2.0), rotation_deg: float = 2.0,
                       noise_sigma: float = 0.01, size: int = 256, seed: int = 0) -> MotionFieldSample:
    """A bundled photograph blurred by a camera that translates and rolls, plus Gaussian noise.

    Every pixel is smeared by its own line (:func:`~deblur_ops.psf.exact_motion_blur`, continuous
    length and angle), not through the solvers' motion bank, so restoring it with the true field
    does not profit from the bank's interpolation (no inverse crime). The blur is made on a larger
    crop and cut to ``size``, so the borders hold blur from real scene content.

    Args:
        name: a picture from :data:`deblur_ops.data.SAMPLES` (grey or RGB).
        translation, rotation_deg: the camera motion over the exposure
            (:meth:`~deblur_ops.psf.MotionField.from_camera_motion`: (dx, dy) in pixels, x right,
            y up; roll in degrees counter-clockwise about the centre).
        noise_sigma: Gaussian noise sigma on the [0, 1] scale (>= 0).
        size: side of the square result.
        seed: random seed of the noise.

    Returns:
        :class:`MotionFieldSample`.

    Example:
        >>> s = motion_field_photo(size=48, translation=(4.0, 0.0), rotation_deg=1.0)
        >>> s.blurred.shape, s.field.shape, round(float(s.field.length.min()), 1) >= 1
        ((48, 48), (48, 48), True)
    """
    if name not in SAMPLES:
        raise ValueError(f"unknown picture {name!r}; choose one of {list(SAMPLES)}")
    if not noise_sigma >= 0:
        raise ValueError(f"noise_sigma must be >= 0, got {noise_sigma!r}")
    size = _positive_int(size, "size")
    # The field grows away from the centre: draw it on the larger crop, centred the same way; its
    # longest line within the result bounds the margin (as the evaluation protocol's fields).
    margin = MotionField.from_camera_motion((size, size), translation, rotation_deg).max_length
    full = size + 2 * margin
    picture = torch.from_numpy(sample_image(name, size=full))
    if min(picture.shape[:2]) < full:
        raise ValueError(f"picture {name!r} is smaller than size + blur margin = {full}; choose a smaller size")
    field = MotionField.from_camera_motion((full, full), translation, rotation_deg)
    channels = picture[None] if picture.dim() == 2 else picture.permute(2, 0, 1)
    blurred = exact_motion_blur(channels[None].double(), field.length, field.angle)[0].float()
    inner = (slice(margin, margin + size),) * 2
    blurred = blurred[(...,) + inner]
    blurred = blurred[0] if picture.dim() == 2 else blurred.permute(1, 2, 0)
    rng = np.random.default_rng(seed)
    observed = blurred.numpy() + rng.normal(0, noise_sigma, blurred.shape).astype(np.float32)
    return MotionFieldSample(observed.astype(np.float32), MotionField(field.length[inner], field.angle[inner]),
                             picture.numpy()[inner].astype(np.float32))
