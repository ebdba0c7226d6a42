import math

import numpy as np
import pytest
import scipy.special
import torch

from deblur_ops import psf


def half_max_width(profile: np.ndarray) -> float:
    """FWHM of a 1-D peak by linear interpolation of the half-maximum crossings."""
    peak = int(np.argmax(profile))
    half = profile[peak] / 2
    right = peak + np.argmax(profile[peak:] < half)
    left = peak - np.argmax(profile[peak::-1] < half)
    r = right - 1 + (profile[right - 1] - half) / (profile[right - 1] - profile[right])
    l_ = left + 1 - (profile[left + 1] - half) / (profile[left + 1] - profile[left])
    return r - l_


def covariance(p: torch.Tensor) -> np.ndarray:
    a = p.double().numpy()
    coords = np.stack(np.meshgrid(*[np.arange(n) - n // 2 for n in a.shape], indexing="ij")).reshape(a.ndim, -1)
    w = a.reshape(-1)
    mean = coords @ w
    centred = coords - mean[:, None]
    return (centred * w) @ centred.T


class TestGaussian:
    def test_sum_symmetry_and_fwhm(self):
        g = psf.gaussian_psf(3.0)
        assert g.shape == (25, 25)
        assert float(g.sum()) == pytest.approx(1.0, abs=1e-6)
        assert torch.equal(g, g.flip(0)) and torch.allclose(g, g.T)
        assert half_max_width(g[12].double().numpy()) == pytest.approx(2 * math.sqrt(2 * math.log(2)) * 3.0, rel=0.01)

    def test_rotated_anisotropic_covariance(self):
        sy, sx, angle = 1.5, 4.0, 30.0
        g = psf.gaussian_psf((sy, sx), angle_deg=angle, size=41)
        t = math.radians(angle)
        # (row, col) direction of the x axis rotated counter-clockwise with rows pointing down.
        along, across = np.array([-math.sin(t), math.cos(t)]), np.array([math.cos(t), math.sin(t)])
        expected = sx**2 * np.outer(along, along) + sy**2 * np.outer(across, across)
        np.testing.assert_allclose(covariance(g), expected, atol=2e-3)

    def test_3d(self):
        g = psf.gaussian_psf((2.0, 1.0, 1.5))
        assert g.shape == (17, 9, 13)
        np.testing.assert_allclose(covariance(g), np.diag([4.0, 1.0, 2.25]), atol=2e-3)

    def test_bad_input(self):
        with pytest.raises(ValueError, match="sigma"):
            psf.gaussian_psf(-1)
        with pytest.raises(ValueError, match="odd"):
            psf.gaussian_psf(1.0, size=8)

    @pytest.mark.parametrize("size,hint", [(8, 9), (0, 1), (-3, 1), (2.5, 3)])
    def test_size_hint_is_a_size_the_check_accepts(self, size, hint):
        with pytest.raises(ValueError, match=f"use e.g. size={hint}$"):
            psf.gaussian_psf(1.0, size=size)
        assert psf.gaussian_psf(1.0, size=hint).shape == (hint, hint)


class TestMoffat:
    def test_fwhm_and_profile(self):
        m = psf.moffat_psf(8.0, 3.0, 61, oversample=1)
        assert float(m.sum()) == pytest.approx(1.0, abs=1e-6)
        assert torch.allclose(m, m.T) and torch.equal(m, m.flip(1))
        row = m[30].double().numpy()
        assert half_max_width(row) == pytest.approx(8.0, rel=0.01)
        alpha = 8.0 / (2 * math.sqrt(2 ** (1 / 3) - 1))
        r = np.arange(-30, 31)
        np.testing.assert_allclose(row / row[30], (1 + (r / alpha) ** 2) ** -3.0, rtol=1e-5)

    def test_beta_must_exceed_one(self):
        with pytest.raises(ValueError, match="beta"):
            psf.moffat_psf(4.0, 1.0)


class TestAiry:
    def test_first_zero_and_bessel_profile(self):
        wavelength, na, pixel = 0.5, 1.0, 0.01
        a = psf.airy_psf(wavelength, na, pixel, 101, oversample=1).double().numpy()
        row = a[50, 50:]
        zero = 20 + int(np.argmin(row[20:45]))
        assert abs(zero - 0.61 * wavelength / na / pixel) <= 1  # 30.5 px; 1.22 lambda/NA across
        v = 2 * np.pi * na / wavelength * pixel * np.arange(1, 51)
        np.testing.assert_allclose(row[1:] / row[0], (2 * scipy.special.j1(v) / v) ** 2, atol=1e-6)
        assert float(a.sum()) == pytest.approx(1.0)

    def test_bad_input(self):
        with pytest.raises(ValueError, match="wavelength"):
            psf.airy_psf(0, 1.0, 0.1)


class TestBornWolf:
    def test_focal_plane_is_airy_and_axial_zero(self):
        wavelength, na, n, pixel = 0.5, 1.0, 1.33, 0.05
        axial_zero = 2 * n * wavelength / na**2
        z_step = axial_zero / 4
        b = psf.born_wolf_psf(wavelength, na, n, pixel, z_step, (13, 41, 41), oversample=1).double()
        assert float(b.sum()) == pytest.approx(1.0)
        focal = b[6] / b[6].sum()
        airy = psf.airy_psf(wavelength, na, pixel, 41, oversample=1).double()
        np.testing.assert_allclose(focal.numpy(), airy.numpy(), atol=2e-3 * float(airy.max()))
        # On the axis the paraxial integral is [sin(a/2) / (a/2)]^2 with a = k z NA^2 / (2n).
        z = (np.arange(13) - 6) * z_step
        a = 2 * np.pi / wavelength * z * na**2 / (2 * n)
        expected = np.sinc(a / 2 / np.pi) ** 2
        np.testing.assert_allclose((b[:, 20, 20] / b[6, 20, 20]).numpy(), expected, atol=1e-4)
        assert float(b[2, 20, 20] / b[6, 20, 20]) < 1e-4 and float(b[10, 20, 20] / b[6, 20, 20]) < 1e-4
        assert torch.allclose(b, b.flip(0)) and torch.allclose(b, b.transpose(1, 2))

    def test_na_above_refractive_index(self):
        with pytest.raises(ValueError, match="refractive index"):
            psf.born_wolf_psf(0.5, 1.4, 1.33, 0.1, 0.2)


class TestCameraShake:
    def test_trajectory_length_and_seed(self):
        a = psf.camera_shake_trajectory(800, 25.0, seed=7)
        b = psf.camera_shake_trajectory(800, 25.0, seed=7)
        c = psf.camera_shake_trajectory(800, 25.0, seed=8)
        assert torch.equal(a, b) and not torch.equal(a, c)
        assert float((a[1:] - a[:-1]).norm(dim=1).sum()) == pytest.approx(25.0, rel=1e-9)
        assert torch.equal(a[0], torch.zeros(2, dtype=torch.float64))

    def test_psfs_sum_and_centroid(self):
        traj = psf.camera_shake_trajectory(1000, 40.0, anxiety=0.05, seed=3)
        psfs = psf.camera_shake_psfs(traj, 63, (0.1, 0.5, 1.0)).double()
        assert psfs.shape == (3, 63, 63)
        np.testing.assert_allclose(psfs.sum((1, 2)).numpy(), 1.0, rtol=1e-6)
        rows = torch.arange(63, dtype=torch.float64)
        for p in psfs:
            assert float((p.sum(1) * rows).sum()) == pytest.approx(31, abs=1e-5)
            assert float((p.sum(0) * rows).sum()) == pytest.approx(31, abs=1e-5)
        # A longer exposure covers more of the path.
        assert int((psfs[0] > 0).sum()) < int((psfs[1] > 0).sum()) < int((psfs[2] > 0).sum())

    def test_straight_path_is_linear_motion(self):
        cols = torch.linspace(0, 10, 4001, dtype=torch.float64)
        traj = torch.stack([torch.zeros_like(cols), cols], 1)
        p = psf.camera_shake_psfs(traj, 11, (1.0,))[0].double()
        expected = psf.linear_motion_kernel(10, 0, size=11).double()
        np.testing.assert_allclose(p.numpy(), expected.numpy(), atol=1e-3)

    def test_bad_exposures(self):
        traj = psf.camera_shake_trajectory(100, 10.0, seed=0)
        with pytest.raises(ValueError, match="exposures"):
            psf.camera_shake_psfs(traj, 21, (0.5, 0.2))
        with pytest.raises(ValueError, match="does not fit"):
            psf.camera_shake_psfs(psf.camera_shake_trajectory(100, 60.0, anxiety=0.0, seed=0), 5)


class TestUtilities:
    def test_normalize(self):
        np.testing.assert_allclose(psf.normalize_psf(np.array([1.0, 3.0])).numpy(), [0.25, 0.75])
        with pytest.raises(ValueError, match="sums to 0"):
            psf.normalize_psf(torch.zeros(3))
        with pytest.raises(ValueError, match="NaN"):
            psf.normalize_psf(torch.tensor([1.0, float("nan")]))

    def test_center_moves_mass_to_middle(self):
        off = torch.zeros(9, 9)
        off[1, 6] = 2.0
        off[2, 6] = 2.0
        c = psf.center_psf(off)
        assert c.shape[0] % 2 == 1 and c.shape[1] == 1
        assert float(c[c.shape[0] // 2, 0]) == 0.5 and float(c.sum()) == 1.0
        g = psf.gaussian_psf(1.0, size=9)
        shifted = torch.nn.functional.pad(g, (0, 4, 3, 0))
        assert torch.allclose(psf.center_psf(shifted), g / g.sum())
