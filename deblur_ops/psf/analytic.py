"""PSF models for photography, microscopy and astronomy, and normalisation/centring utilities.

Every generator follows the conventions of :mod:`deblur_ops.psf`: odd sizes, centre at index
``shape // 2``, sum 1, convolution convention; 2D arrays are (H, W), 3D arrays (D, H, W).
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from ..validation import integer_at_least, odd_size, positive_float

__all__ = [
    "airy_psf",
    "born_wolf_psf",
    "camera_shake_psfs",
    "camera_shake_trajectory",
    "center_psf",
    "gaussian_psf",
    "gaussian_psf_physical",
    "moffat_psf",
    "normalize_psf",
]

# First zero of J1: the Airy pattern [2 J1(v)/v]^2 vanishes first at v = 3.8317 (r = 0.61 lambda/NA).
_J1_FIRST_ZERO = 3.8317059702075125

GAUSSIAN_FWHM_PER_SIGMA = 2 * math.sqrt(2 * math.log(2))


def _odd_cover(radius: float) -> int:
    """Smallest odd size whose half-width reaches ``radius`` pixels."""
    return 2 * math.ceil(radius) + 1


def _pixel_grid(shape: Sequence[int], oversample: int) -> list[torch.Tensor]:
    """Centred sample coordinates (float64, pixels) with ``oversample``^d samples per pixel."""
    axes = []
    for n in shape:
        sub = (torch.arange(oversample, dtype=torch.float64) + 0.5) / oversample - 0.5
        centres = torch.arange(n, dtype=torch.float64) - n // 2
        axes.append((centres[:, None] + sub[None, :]).reshape(-1))
    return list(torch.meshgrid(*axes, indexing="ij"))


def _bin(samples: torch.Tensor, oversample: int) -> torch.Tensor:
    """Average ``oversample``^d sub-pixel samples into pixels (approximate pixel integration)."""
    if oversample == 1:
        return samples
    shape = []
    for n in samples.shape:
        shape += [n // oversample, oversample]
    x = samples.reshape(shape)
    return x.mean(dim=tuple(range(1, 2 * samples.dim(), 2)))


def _finish(psf: torch.Tensor, dtype) -> torch.Tensor:
    return (psf / psf.sum()).to(dtype)


def normalize_psf(psf) -> torch.Tensor:
    """Scale a PSF so that it sums to 1 (energy-preserving blur).

    Args:
        psf: array-like (any shape) of finite values with a non-zero sum.

    Returns:
        Tensor of the same shape and floating dtype (float32 unless given float64).

    Raises:
        ValueError: NaN/Inf values or a zero sum.

    Example:
        >>> normalize_psf(torch.tensor([1.0, 2.0, 1.0])).tolist()
        [0.25, 0.5, 0.25]
    """
    t = torch.as_tensor(psf)
    if not t.is_floating_point():
        t = t.float()
    if t.numel() == 0:
        raise ValueError("psf is empty; pass at least one element")
    if not bool(torch.isfinite(t).all()):
        raise ValueError("psf contains NaN or Inf; clean it first, e.g. torch.nan_to_num(psf)")
    total = t.sum()
    if float(total) == 0:
        raise ValueError("psf sums to 0, so it cannot be normalised; a PSF needs positive total energy")
    return t / total


def center_psf(psf) -> torch.Tensor:
    """Move a PSF's centre of mass to the central pixel of an odd-sized array, without cropping.

    All-zero borders are trimmed, the centroid is rounded to the nearest pixel and the array is
    zero-padded so that this pixel lands at ``shape // 2`` (a whole-pixel move, so the PSF's shape
    itself is not resampled). The result is normalised to sum 1.

    Args:
        psf: (H, W) or (D, H, W) array-like, non-negative with a positive sum.

    Returns:
        Tensor with odd sizes, centroid within half a pixel of ``shape // 2``.

    Example:
        >>> c = center_psf(torch.tensor([[0.0, 0.0, 1.0, 1.0]]))
        >>> c.shape, c[0].tolist()
        (torch.Size([1, 3]), [0.0, 0.5, 0.5])
    """
    t = normalize_psf(psf)
    if t.dim() not in (2, 3):
        raise ValueError(f"psf must have shape (H, W) or (D, H, W), got shape {tuple(t.shape)}")
    if bool((t < 0).any()):
        raise ValueError("psf has negative values; centring uses the centre of mass of a non-negative PSF")
    for d in range(t.dim()):
        other = [i for i in range(t.dim()) if i != d]
        nonzero = torch.nonzero(t.abs().sum(dim=other)).flatten()
        t = t.narrow(d, int(nonzero[0]), int(nonzero[-1] - nonzero[0]) + 1)
    pads = []
    for d, n in enumerate(t.shape):
        other = [i for i in range(t.dim()) if i != d]
        marginal = t.double().sum(dim=other)
        centre = int(round(float((marginal * torch.arange(n, dtype=torch.float64)).sum())))
        half = max(centre, n - 1 - centre)
        pads.append((half - centre, half - (n - 1 - centre)))
    flat = [p for before_after in reversed(pads) for p in before_after]
    return torch.nn.functional.pad(t, flat)


def gaussian_psf(sigma, size=None, *, angle_deg: float = 0.0, dtype=torch.float32) -> torch.Tensor:
    """Gaussian PSF, isotropic or anisotropic, 2D or 3D, sampled at pixel centres.

    Args:
        sigma: standard deviation in pixels: a number (isotropic 2D), ``(sigma_y, sigma_x)``
            (2D) or ``(sigma_z, sigma_y, sigma_x)`` (3D). FWHM = 2.3548 sigma.
        size: odd side (2D) or odd sizes per axis; default covers 4 sigma on each side.
        angle_deg: rotation of the (y, x) axes counter-clockwise (rows pointing down), so that
            ``sigma_x`` lies along ``angle_deg``; used in the (H, W) plane of 3D PSFs too.
        dtype: floating dtype of the result.

    Returns:
        (H, W) or (D, H, W) tensor summing to 1.

    Example:
        >>> g = gaussian_psf(1.5)
        >>> g.shape, round(float(g.sum()), 6)
        (torch.Size([13, 13]), 1.0)
    """
    sig = (sigma, sigma) if np.ndim(sigma) == 0 else tuple(sigma)
    if len(sig) not in (2, 3):
        raise ValueError(f"sigma must be a number, (sigma_y, sigma_x) or (sigma_z, sigma_y, sigma_x), got {sigma!r}")
    sig = tuple(positive_float(s, "sigma") for s in sig)
    angle = float(angle_deg)
    if not math.isfinite(angle):
        raise ValueError(f"angle_deg must be finite, got {angle_deg!r}")
    # The rotated covariance's extent along each array axis bounds the support.
    sy, sx = sig[-2], sig[-1]
    c, s = math.cos(math.radians(angle)), math.sin(math.radians(angle))
    extent = [math.hypot(sx * s, sy * c), math.hypot(sx * c, sy * s)]
    if len(sig) == 3:
        extent = [sig[0]] + extent
    shape = _shape_arg(size, len(sig), [_odd_cover(4 * e) for e in extent])
    grid = _pixel_grid(shape, 1)
    row, col = grid[-2], grid[-1]
    # Coordinates along the rotated axes; rows point down, so "up" is -row.
    along = col * c - row * s
    across = col * s + row * c
    q = (along / sx) ** 2 + (across / sy) ** 2
    if len(sig) == 3:
        q = q + (grid[0] / sig[0]) ** 2
    return _finish(torch.exp(-0.5 * q), dtype)


def gaussian_psf_physical(fwhm, voxel_size, size=None, *, dtype=torch.float32) -> torch.Tensor:
    """Gaussian PSF given by its FWHM in physical units, sampled at a (possibly anisotropic) voxel size.

    A first-order model of a widefield or confocal PSF (FWHM in µm, e.g. lateral 0.25, axial 0.8)
    or of seeing (FWHM in arcsec with pixel scale in arcsec per pixel): sigma per axis is
    FWHM / (2.3548 voxel size), so coarser voxels along an axis give fewer, wider samples.

    Args:
        fwhm: one number (isotropic) or one per axis, (z, y, x) or (y, x), in the unit of ``voxel_size``.
        voxel_size: one number or one per axis, same order and unit; sets the dimension (2D/3D)
            together with ``fwhm`` (a single number for both means 2D).
        size: odd sizes per axis (default: 4 sigma each side).
        dtype: floating dtype of the result.

    Returns:
        (H, W) or (D, H, W) tensor summing to 1.

    Example:
        >>> gaussian_psf_physical((0.8, 0.25, 0.25), (0.3, 0.1, 0.1)).shape
        torch.Size([11, 11, 11])
    """
    from .prepare import voxel_size_tuple

    nd = max([len(v) for v in (fwhm, voxel_size) if np.ndim(v) == 1] + [2])
    widths = voxel_size_tuple(fwhm, nd, "fwhm")
    steps = voxel_size_tuple(voxel_size, nd)
    return gaussian_psf(tuple(w / GAUSSIAN_FWHM_PER_SIGMA / d for w, d in zip(widths, steps)), size, dtype=dtype)


def _shape_arg(size, nd: int, default: list[int]) -> tuple[int, ...]:
    if size is None:
        return tuple(default)
    sizes = (size,) * nd if np.ndim(size) == 0 else tuple(size)
    if len(sizes) != nd:
        raise ValueError(f"size must be one odd number or {nd} odd numbers, got {size!r}")
    return tuple(odd_size(s) for s in sizes)


def moffat_psf(fwhm: float, beta: float = 2.5, size: int | None = None, *, pixel_scale: float | None = None,
               oversample: int = 3, dtype=torch.float32) -> torch.Tensor:
    """Moffat PSF of astronomical seeing: (1 + r^2 / alpha^2)^(-beta).

    A. F. J. Moffat, "A theoretical investigation of focal stellar images in the photographic
    emulsion", A&A 3, 1969. alpha = FWHM / (2 sqrt(2^(1/beta) - 1)); beta -> inf tends to a
    Gaussian, beta ~ 2.5-4.8 fits ground-based seeing.

    Args:
        fwhm: full width at half maximum: pixels, or the unit of ``pixel_scale`` (seeing in arcsec).
        beta: power-law index, > 1 (so that the PSF has finite energy).
        pixel_scale: size of a pixel on the sky (e.g. arcsec per pixel); None: ``fwhm`` is in pixels.
        size: odd side; default covers the radius where the profile drops to 1e-4 of its peak.
        oversample: sub-pixel samples per axis averaged into each pixel (>= 1).
        dtype: floating dtype of the result.

    Returns:
        (size, size) tensor summing to 1.

    Example:
        >>> moffat_psf(4.0, 3.0, 21).shape
        torch.Size([21, 21])
    """
    fwhm = positive_float(fwhm, "fwhm")
    if pixel_scale is not None:
        fwhm = fwhm / positive_float(pixel_scale, "pixel_scale")
    beta = positive_float(beta, "beta")
    if beta <= 1:
        raise ValueError(f"beta must be > 1 (the Moffat profile has infinite energy otherwise), got {beta}")
    oversample = integer_at_least(oversample, "oversample", 1)
    alpha = fwhm / (2 * math.sqrt(2 ** (1 / beta) - 1))
    reach = alpha * math.sqrt(1e-4 ** (-1 / beta) - 1)
    side = odd_size(size) if size is not None else _odd_cover(min(reach, 8 * fwhm))
    row, col = _pixel_grid((side, side), oversample)
    samples = (1 + (row**2 + col**2) / alpha**2) ** (-beta)
    return _finish(_bin(samples, oversample), dtype)


def _optics(wavelength, na, pixel_size, refractive_index=None) -> tuple[float, float, float]:
    wavelength = positive_float(wavelength, "wavelength")
    na = positive_float(na, "na")
    pixel_size = positive_float(pixel_size, "pixel_size")
    if refractive_index is not None and na >= refractive_index:
        raise ValueError(f"na must be smaller than the refractive index of the immersion medium "
                         f"({refractive_index}), got na={na}")
    return wavelength, na, pixel_size


def airy_psf(wavelength: float, na: float, pixel_size: float, size: int | None = None, *,
             oversample: int = 3, dtype=torch.float32) -> torch.Tensor:
    """In-focus widefield PSF of a circular aperture: the Airy pattern [2 J1(v) / v]^2.

    v = 2 pi NA r / wavelength (Born & Wolf, Principles of Optics, §8.5.2); its first zero is at
    r = 0.61 wavelength / NA (the Rayleigh radius; 1.22 wavelength / NA across).

    Args:
        wavelength: emission wavelength, same unit as ``pixel_size`` (e.g. micrometres).
        na: numerical aperture of the objective.
        pixel_size: pixel pitch in the sample plane, same unit as ``wavelength``.
        size: odd side; default covers four Rayleigh radii.
        oversample: sub-pixel samples per axis averaged into each pixel (>= 1).
        dtype: floating dtype of the result.

    Returns:
        (size, size) tensor summing to 1.

    Example:
        >>> airy_psf(0.5, 1.4, 0.05).shape
        torch.Size([37, 37])
    """
    wavelength, na, pixel_size = _optics(wavelength, na, pixel_size)
    oversample = integer_at_least(oversample, "oversample", 1)
    rayleigh = _J1_FIRST_ZERO / (2 * math.pi) * wavelength / na / pixel_size
    side = odd_size(size) if size is not None else _odd_cover(4 * rayleigh)
    row, col = _pixel_grid((side, side), oversample)
    v = 2 * math.pi * na / wavelength * pixel_size * torch.hypot(row, col)
    safe = torch.where(v > 0, v, torch.ones_like(v))
    amplitude = torch.where(v > 0, 2 * torch.special.bessel_j1(safe) / safe, torch.ones_like(v))
    return _finish(_bin(amplitude**2, oversample), dtype)


def born_wolf_psf(wavelength: float, na: float, refractive_index: float, pixel_size: float | None = None,
                  z_step: float | None = None, shape=None, *, voxel_size=None, oversample: int = 3,
                  dtype=torch.float32) -> torch.Tensor:
    """3D widefield PSF of the Born & Wolf scalar model (no aberrations, paraxial defocus).

    h(r, z) = |integral_0^1 J0(k NA r rho) exp(-i k z NA^2 rho^2 / (2 n)) rho d rho|^2 with
    k = 2 pi / wavelength (Born & Wolf, Principles of Optics, §8.8; the "Born & Wolf" model of
    Kirshner et al., J. Microsc. 249, 2013). At z = 0 it is the Airy pattern; on the axis its
    first zero is at z = 2 n wavelength / NA^2. The integral is evaluated with Gauss-Legendre
    quadrature on a fine radial grid and interpolated to the pixels.

    Args:
        wavelength: emission wavelength (same unit as ``pixel_size`` and ``z_step``).
        na: numerical aperture, < ``refractive_index``.
        refractive_index: refractive index n of the immersion medium.
        pixel_size: lateral pixel pitch in the sample (or give ``voxel_size``).
        z_step: axial distance between planes (or give ``voxel_size``).
        shape: odd ``(D, H, W)`` or None (default: two axial zeros deep, four Rayleigh radii wide,
            in voxels of the given size, so an axis with coarser voxels gets fewer of them).
        voxel_size: ``(dz, dy, dx)`` in the unit of ``wavelength``, instead of ``pixel_size`` and
            ``z_step``; anisotropic voxels (e.g. (0.3, 0.1, 0.1) µm) sample the same physical PSF.
        oversample: lateral sub-pixel samples per axis averaged into each pixel (>= 1).
        dtype: floating dtype of the result.

    Returns:
        (D, H, W) tensor summing to 1, focal plane at index D//2.

    Example:
        >>> born_wolf_psf(0.5, 1.2, 1.33, 0.1, 0.25, (9, 15, 15)).shape
        torch.Size([9, 15, 15])
    """
    n = positive_float(refractive_index, "refractive_index")
    if voxel_size is not None:
        if pixel_size is not None or z_step is not None:
            raise ValueError("give either voxel_size=(dz, dy, dx) or pixel_size and z_step, not both")
        from .prepare import voxel_size_tuple

        z_step, dy, dx = voxel_size_tuple(voxel_size, 3)
    elif pixel_size is None or z_step is None:
        raise ValueError("born_wolf_psf needs the sampling: voxel_size=(dz, dy, dx), or pixel_size and z_step")
    else:
        dy = dx = pixel_size
    wavelength, na, _ = _optics(wavelength, na, min(dy, dx), n)
    dy, dx = positive_float(dy, "pixel_size"), positive_float(dx, "pixel_size")
    z_step = positive_float(z_step, "z_step")
    oversample = integer_at_least(oversample, "oversample", 1)
    rayleigh = _J1_FIRST_ZERO / (2 * math.pi) * wavelength / na
    axial_zero = 2 * n * wavelength / na**2 / z_step
    if shape is None:
        shape = (_odd_cover(2 * axial_zero), _odd_cover(4 * rayleigh / dy), _odd_cover(4 * rayleigh / dx))
    else:
        shape = _shape_arg(shape, 3, [])
    depth, height, width = shape
    k = 2 * math.pi / wavelength
    z = (torch.arange(depth, dtype=torch.float64) - depth // 2) * z_step
    row, col = _pixel_grid((height, width), oversample)
    radius = torch.hypot(row * dy, col * dx)
    # The radial profile is smooth, so a grid 8x finer than the sub-pixel samples loses nothing.
    step = min(dy, dx) / oversample / 8
    r_grid = torch.arange(0, float(radius.max()) + 2 * step, step, dtype=torch.float64)
    # Enough nodes to resolve the fastest oscillation of the integrand (Bessel and defocus phase).
    phase_max = k * float(z.abs().max()) * na**2 / (2 * n)
    nodes = max(64, math.ceil(k * na * float(r_grid[-1]) / math.pi + phase_max / math.pi) * 4)
    x, w = np.polynomial.legendre.leggauss(nodes)
    rho = torch.from_numpy((x + 1) / 2)
    weight = torch.from_numpy(w / 2) * rho
    bessel = torch.special.bessel_j0(k * na * r_grid[:, None] * rho[None, :])  # (R, Q)
    phase = -k * z[:, None] * na**2 * rho[None, :] ** 2 / (2 * n)  # (D, Q)
    real = (torch.cos(phase) * weight) @ bessel.T  # (D, R)
    imag = (torch.sin(phase) * weight) @ bessel.T
    profile = real**2 + imag**2
    position = radius.reshape(-1) / step
    low = position.floor().long().clamp(max=len(r_grid) - 2)
    frac = position - low
    planes = profile[:, low] * (1 - frac) + profile[:, low + 1] * frac  # (D, pixels)
    planes = planes.reshape(depth, height * oversample, width * oversample)
    binned = torch.stack([_bin(p, oversample) for p in planes])
    return _finish(binned, dtype)


def camera_shake_trajectory(n_samples: int = 2000, max_length: float = 60.0, anxiety: float | None = None,
                            *, seed: int | None = None) -> torch.Tensor:
    """Random camera-shake trajectory of G. Boracchi and A. Foi (2012).

    "Modeling the performance of image restoration from motion blur", IEEE TIP 21(8), §II: a
    particle moves at constant speed ``max_length / (n_samples - 1)`` per step; its velocity is
    perturbed at every step by a Gaussian term, an inertial (centripetal) pull back towards the
    origin and, with probability ``freq_big_shakes * anxiety``, an impulsive shake that roughly
    reverses the direction. The model's own random hyper-parameters (centripetal 0-0.7, Gaussian
    term 0-10, impulsive-shake frequency 0-0.2, initial direction) are drawn from the same
    generator, so one ``seed`` fixes the whole trajectory.

    Args:
        n_samples: number of time samples (>= 2).
        max_length: total path length in pixels.
        anxiety: amount of shake in [0, 1]; default drawn uniformly in [0, 0.1) as in the paper's code.
        seed: seed of the random generator (None: fresh randomness).

    Returns:
        (n_samples, 2) float64 tensor of (row, col) positions in pixels, starting at (0, 0).

    Example:
        >>> t = camera_shake_trajectory(500, 20.0, seed=0)
        >>> t.shape, round(float((t[1:] - t[:-1]).norm(dim=1).sum()), 6)
        (torch.Size([500, 2]), 20.0)
    """
    if isinstance(n_samples, bool) or int(n_samples) != n_samples or n_samples < 2:
        raise ValueError(f"n_samples must be an integer >= 2, got {n_samples!r}")
    n_samples = int(n_samples)
    max_length = positive_float(max_length, "max_length")
    rng = np.random.default_rng(seed)
    if anxiety is None:
        anxiety = 0.1 * rng.random()
    anxiety = float(anxiety)
    if not 0 <= anxiety <= 1:
        raise ValueError(f"anxiety must be in [0, 1], got {anxiety}")
    centripetal = 0.7 * rng.random()
    gaussian_term = 10 * rng.random()
    freq_big_shakes = 0.2 * rng.random()
    speed = max_length / (n_samples - 1)
    velocity = complex(np.exp(1j * 2 * np.pi * rng.random())) * (anxiety if anxiety > 0 else speed)
    x = np.zeros(n_samples, dtype=np.complex128)
    for t in range(n_samples - 1):
        impulse = 0j
        if rng.random() < freq_big_shakes * anxiety:
            impulse = 2 * velocity * np.exp(1j * (np.pi + (rng.random() - 0.5)))
        noise = gaussian_term * complex(rng.standard_normal(), rng.standard_normal())
        velocity = velocity + impulse + anxiety * (noise - centripetal * x[t]) * speed
        velocity = velocity / abs(velocity) * speed
        x[t + 1] = x[t] + velocity
    # The paper's complex positions are x + i y with y pointing down the rows.
    return torch.from_numpy(np.stack([x.imag, x.real], axis=1))


def camera_shake_psfs(trajectory, size: int | None = None, exposures=(0.01, 0.1, 0.5, 1.0), *,
                      center: bool = True, dtype=torch.float32) -> torch.Tensor:
    """PSFs of a camera-shake trajectory for several exposure times (Boracchi & Foi 2012, §II).

    The PSF for exposure fraction T is the time the particle spends at each position during
    [0, T] of the trajectory's duration, splatted onto the pixel grid with bilinear weights
    (which keep the centre of mass exactly).

    Args:
        trajectory: (N, 2) positions (row, col) in pixels, e.g. from :func:`camera_shake_trajectory`.
        size: odd side of the PSFs; default the smallest that holds the whole trajectory.
        exposures: increasing fractions in (0, 1] of the trajectory's duration.
        center: put each PSF's centre of mass exactly at ``size // 2`` (else the whole
            trajectory's centre of mass is there and short exposures are off-centre, as a
            real exposure that starts at the shutter opening would be).
        dtype: floating dtype of the result.

    Returns:
        (len(exposures), size, size) tensor, each PSF summing to 1.

    Example:
        >>> traj = camera_shake_trajectory(1000, 15.0, seed=3)
        >>> camera_shake_psfs(traj, 31, (0.5, 1.0)).shape
        torch.Size([2, 31, 31])
    """
    traj = torch.as_tensor(trajectory, dtype=torch.float64)
    if traj.dim() != 2 or traj.shape[1] != 2 or traj.shape[0] < 2:
        raise ValueError(f"trajectory must have shape (N >= 2, 2) of (row, col) positions, got {tuple(traj.shape)}")
    if not bool(torch.isfinite(traj).all()):
        raise ValueError("trajectory contains NaN or Inf")
    times = [float(t) for t in np.atleast_1d(exposures)]
    if not times or any(not (0 < t <= 1) for t in times) or sorted(times) != times:
        raise ValueError(f"exposures must be increasing fractions in (0, 1], got {exposures!r}")
    n = traj.shape[0]
    extent = float((traj - traj.mean(0)).abs().max())
    side = odd_size(size) if size is not None else _odd_cover(extent + 2)
    psfs = []
    for t_end in times:
        # Sample i stands for the time interval [i, i+1) of n; weight = its overlap with [0, T n].
        weight = (t_end * n - torch.arange(n, dtype=torch.float64)).clamp(0, 1)
        used = traj[weight > 0]
        w = weight[weight > 0]
        mean = (w[:, None] * used).sum(0) / w.sum() if center else traj.mean(0)
        pos = used - mean + side // 2
        if bool((pos < 0).any() or (pos > side - 1).any()):
            raise ValueError(f"the trajectory does not fit into size {side}; pass a larger size "
                             f"or leave size=None")
        base = pos.floor().clamp(max=side - 2).long()
        frac = pos - base
        psf = torch.zeros(side, side, dtype=torch.float64)
        for dr in (0, 1):
            for dc in (0, 1):
                share = (frac[:, 0] if dr else 1 - frac[:, 0]) * (frac[:, 1] if dc else 1 - frac[:, 1])
                psf.index_put_((base[:, 0] + dr, base[:, 1] + dc), w * share, accumulate=True)
        psfs.append(psf / psf.sum())
    return torch.stack(psfs).to(dtype)
