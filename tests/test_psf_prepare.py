"""prepare_psf: even (DeconvolutionLab2 / flowdec) sizes, centring, background, crop, resampling, warnings."""
import warnings

import numpy as np
import pytest
import torch

import deblur_ops
from deblur_ops.psf import (PSFGrid, born_wolf_psf, fourier_shift, gaussian_psf, gaussian_psf_physical,
                            prepare_psf, psf_centroid, resample_psf)
from deblur_ops.psf.prepare import _crop_centred


def _rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def test_even_side_keeps_its_centre_at_n_over_2():
    even = torch.zeros(4, 6, 8)
    even[2, 3, 4] = 1.0
    p = prepare_psf(even, crop_energy=None)
    assert tuple(p.shape) == (5, 7, 9)
    assert float(p[2, 3, 4]) == 1.0  # N // 2 of the even side is (N + 1) // 2 of the padded one


def test_even_image_sized_psf_restores_like_skimage():
    """An image-sized, even PSF centred at N/2 (DL2 convention) through deblur() and scikit-image.

    scipy.signal.convolve(mode="same"), which skimage.restoration.richardson_lucy uses, takes the
    centre of a kernel of even side K at index (K - 1) // 2 = K/2 - 1 for the blur, and (through the
    mirrored kernel) K/2 for the correlation, so skimage given the even PSF itself runs a shifted,
    non-adjoint pair. Given the odd PSF that prepare_psf makes (centre K/2 kept), skimage and
    deblur_ops agree to float32 precision (measured rel. L2 4.4e-7); given the raw even PSF it
    differs by 42 % and lies farther from the truth.
    """
    from scipy.signal import convolve
    from skimage import restoration

    rng = np.random.default_rng(0)
    n = 32
    clean = np.full((n, n), 0.1)
    clean[rng.integers(6, 26, 12), rng.integers(6, 26, 12)] = 1.0
    yy, xx = np.mgrid[0:n, 0:n]
    psf_even = np.exp(-((yy - n // 2) ** 2 + (xx - n // 2) ** 2) / (2 * 1.5**2))
    psf_even /= psf_even.sum()
    odd = prepare_psf(psf_even, crop_energy=None).double().numpy()
    assert odd.shape == (33, 33) and np.unravel_index(odd.argmax(), odd.shape) == (16, 16)
    blurred = convolve(clean, odd, mode="same")
    ours = deblur_ops.deblur(blurred.astype(np.float32), psf_even.astype(np.float32), method="richardson_lucy",
                             iterations=20, padding="zeros", init=0.5)
    skimage_odd = restoration.richardson_lucy(blurred, odd, num_iter=20, clip=False)
    skimage_even = restoration.richardson_lucy(blurred, psf_even, num_iter=20, clip=False)
    assert _rel(ours, skimage_odd) < 1e-5
    assert _rel(ours, skimage_even) > 0.3
    assert _rel(ours, clean) < _rel(skimage_even, clean)


@pytest.mark.parametrize("center", ["centroid", "peak"])
@pytest.mark.parametrize("shift", [(0.3, -0.4), (0.45, 0.2, -0.35)])
def test_recentring_recovers_a_subpixel_shift(center, shift):
    sigma = (1.5, 2.0) if len(shift) == 2 else (1.2, 1.5, 2.0)
    size = (25, 25) if len(shift) == 2 else (15, 21, 21)
    truth = gaussian_psf(sigma, size).double()
    moved = fourier_shift(truth, shift)
    centre = [n // 2 for n in size]
    assert np.allclose(psf_centroid(moved), np.add(centre, shift), atol=1e-3)
    p, info = prepare_psf(moved, center=center, crop_energy=None, return_info=True)
    # Measured: centroid within 4e-9 px, peak within 2e-8 px (Gaussian: the log-parabola is exact).
    assert np.abs(np.subtract(psf_centroid(p), centre)).max() < 0.05
    assert np.allclose(info["shift"], [-s for s in shift], atol=0.05)
    assert _rel(p.double(), truth) < 1e-3


def test_background_pedestal_is_removed():
    truth = gaussian_psf(2.0, 31).double()
    measured = truth * 1000 + 40.0
    p, info = prepare_psf(measured, background="auto", crop_energy=None, return_info=True)
    assert info["background"] == pytest.approx(40.0, abs=1e-9)
    np.testing.assert_allclose(p.double().numpy(), truth.numpy(), atol=1e-6)
    # Without removal the pedestal is a third of the flux: the PSF would be far too wide.
    assert _rel(prepare_psf(measured, crop_energy=None).double(), truth) > 0.5
    given = prepare_psf(measured, background=40.0, crop_energy=None).double()
    np.testing.assert_allclose(given.numpy(), truth.numpy(), atol=1e-6)


def test_crop_keeps_the_requested_energy_and_fits_the_image():
    wide = gaussian_psf(2.0, 61).double()
    p, info = prepare_psf(wide, crop_energy=0.999, return_info=True)
    assert p.shape[0] < 25 and info["energy_kept"] >= 0.999
    p, info = prepare_psf(wide, image_shape=(3, 64, 20), crop_energy=None, return_info=True)
    assert tuple(p.shape) == (61, 19)


def test_warnings_say_what_is_wrong():
    psf = gaussian_psf(1.5, 31).double()
    with pytest.warns(UserWarning, match=r"centre of mass is \(5\.0, 0\.0\) voxels"):
        prepare_psf(fourier_shift(psf, [5.0, 0.0]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        prepare_psf(fourier_shift(psf, [5.0, 0.0]), center="centroid")  # re-centring repairs it quietly
    with pytest.warns(UserWarning, match=r"% of the PSF's energy lies on its border"):
        prepare_psf(gaussian_psf(4.0, 9))
    with pytest.warns(UserWarning, match=r"larger than the image .* loses"):
        prepare_psf(gaussian_psf(4.0, 41), image_shape=(9, 9))


def test_resampling_preserves_flux_and_matches_direct_sampling():
    fine = born_wolf_psf(0.52, 1.0, 1.33, voxel_size=(0.1, 0.05, 0.05), shape=(41, 61, 61)).double() * 7.0
    coarse = resample_psf(fine, (0.1, 0.05, 0.05), (0.2, 0.1, 0.1))
    assert float(coarse.sum()) == pytest.approx(float(fine.sum()), rel=1e-12)
    assert tuple(coarse.shape) == (19, 29, 29)
    direct = born_wolf_psf(0.52, 1.0, 1.33, voxel_size=(0.2, 0.1, 0.1), shape=(21, 31, 31)).double()
    direct = _crop_centred(direct, [n // 2 for n in coarse.shape])
    # Measured 0.040: the resampling integrates over each coarse voxel, the model samples planes.
    assert _rel(coarse / coarse.sum(), direct / direct.sum()) < 0.05
    refined = resample_psf(born_wolf_psf(0.52, 1.0, 1.33, voxel_size=(0.2, 0.1, 0.1), shape=(21, 31, 31)),
                           (0.2, 0.1, 0.1), (0.1, 0.05, 0.05))
    direct = born_wolf_psf(0.52, 1.0, 1.33, voxel_size=(0.1, 0.05, 0.05), shape=tuple(refined.shape)).double()
    assert _rel(refined / refined.sum(), direct) < 0.15  # measured 0.107 (linear interpolation)
    g = resample_psf(gaussian_psf_physical(0.4, 0.05, 41), 0.05, 0.13)
    assert _rel(g / g.sum(), gaussian_psf_physical(0.4, 0.13, g.shape[-1])) < 0.05  # measured 0.041


def test_deblur_resamples_a_psf_measured_at_another_voxel_size():
    image = np.random.default_rng(1).random((12, 40, 40)).astype(np.float32)
    fine = born_wolf_psf(0.52, 1.0, 1.33, voxel_size=(0.1, 0.05, 0.05), shape=(15, 21, 21))
    expected = deblur_ops.deblur(image, resample_psf(fine, (0.1, 0.05, 0.05), (0.3, 0.1, 0.1)).float().numpy(),
                                 method="wiener")
    got = deblur_ops.deblur(image, fine.numpy(), method="wiener", voxel_size=(0.3, 0.1, 0.1),
                            psf_voxel_size=(0.1, 0.05, 0.05))
    np.testing.assert_allclose(got, expected, atol=1e-6)


def test_psf_grid_takes_even_psfs_in_the_same_convention():
    psfs = torch.zeros(2, 2, 4, 6)
    psfs[..., 2, 3] = 1.0
    grid = PSFGrid(psfs)
    assert tuple(grid.psfs.shape) == (2, 2, 5, 7) and bool((grid.psfs[..., 2, 3] == 1).all())


@pytest.mark.parametrize("kwargs, error, message", [
    ({"psf": np.ones(5)}, ValueError, r"shape \(kh, kw\) or \(kd, kh, kw\)"),
    ({"psf": np.zeros((5, 5))}, ValueError, "no positive energy"),
    ({"psf": -np.ones((5, 5))}, ValueError, "no positive energy"),
    ({"psf": np.full((5, 5), np.nan)}, ValueError, "NaN or Inf"),
    ({"psf": np.ones((5, 5)), "voxel_size": (0.1, -0.1), "psf_voxel_size": 0.1}, ValueError, "> 0 in every axis"),
    ({"psf": np.ones((5, 5)), "voxel_size": (0.1, 0.1, 0.1)}, ValueError, "one number or 2 numbers"),
    ({"psf": np.ones((5, 5)), "psf_voxel_size": 0.1}, ValueError, "needs voxel_size"),
    ({"psf": np.ones((5, 5)), "center": "middle"}, ValueError, "center must be"),
    ({"psf": np.ones((5, 5)), "background": "median"}, ValueError, "background must be"),
    ({"psf": np.ones((5, 5)), "crop_energy": 1.5}, ValueError, "crop_energy"),
    ({"psf": "psf.tif"}, TypeError, "psf must be an array"),
])
def test_bad_input_gives_named_errors(kwargs, error, message):
    with pytest.raises(error, match=message):
        prepare_psf(**kwargs)
