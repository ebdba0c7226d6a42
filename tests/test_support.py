"""PSF construction, boundary handling, forward model, metrics and noise estimation."""
import math

import numpy as np
import pytest
import torch
from scipy import signal

from deblur_ops import boundary
from deblur_ops.data import degrade, metrics, noise
from deblur_ops.psf import linear_motion_kernel, psf_to_otf
from deblur_ops.reference import DEFAULT_SNR_DB


class TestLinearMotionKernel:
    def test_horizontal_line_covers_length_pixels(self):
        k = linear_motion_kernel(7, 0, 9)
        assert k.shape == (9, 9)
        np.testing.assert_allclose(k[4, 1:8].numpy(), np.full(7, 1 / 7), rtol=1e-6)
        assert float(k.sum()) == pytest.approx(1.0, abs=1e-6)
        assert float(k[4, 0]) == 0 and float(k[3].abs().sum()) == 0

    def test_vertical_and_diagonal_orientation(self):
        vertical = linear_motion_kernel(5, 90)
        np.testing.assert_allclose(vertical[:, 2].numpy(), np.full(5, 0.2), rtol=1e-6)
        rising = linear_motion_kernel(9, 45, 9)
        # 45 deg rises to the right: with rows pointing down, top-right and bottom-left are lit.
        assert rising[1, 7] > 0.05 and rising[7, 1] > 0.05
        assert rising[1, 1] == 0 and rising[7, 7] == 0
        torch.testing.assert_close(rising, rising.flip(0).flip(1))  # symmetric about the centre

    def test_length_one_is_delta_and_angle_period_180(self):
        delta = linear_motion_kernel(1, 37)
        assert delta.shape == (1, 1) and float(delta[0, 0]) == 1
        torch.testing.assert_close(linear_motion_kernel(11, 20, 15), linear_motion_kernel(11, 200, 15))

    def test_centroid_is_centre(self):
        k = linear_motion_kernel(14, 33, 17, dtype=torch.float64)
        idx = torch.arange(17, dtype=torch.float64)
        assert float((k.sum(1) * idx).sum()) == pytest.approx(8, abs=1e-9)
        assert float((k.sum(0) * idx).sum()) == pytest.approx(8, abs=1e-9)

    @pytest.mark.parametrize("args,match", [((0, 0), "length must be"), ((float("nan"), 0), "length must be"),
                                            ((5, float("inf")), "angle_deg must be finite"),
                                            ((5, 0, 4), "positive odd"), ((9, 0, 5), "needs size >= 9")])
    def test_bad_input(self, args, match):
        with pytest.raises(ValueError, match=match):
            linear_motion_kernel(*args)


class TestBoundary:
    def test_next_fast_len(self):
        assert [boundary.next_fast_len(n) for n in (1, 7, 11, 97, 1086)] == [1, 8, 12, 100, 1125]

    @pytest.mark.parametrize("n,before,after", [(6, 2, 3), (5, 9, 12), (1, 3, 2), (2, 5, 0)])
    def test_reflect_matches_numpy(self, n, before, after):
        x = torch.arange(float(n)).reshape(1, n)
        got = boundary.reflect_dim(x, 1, before, after)
        want = np.pad(x.numpy(), ((0, 0), (before, after)), mode="reflect" if n > 1 else "edge")
        np.testing.assert_array_equal(got.numpy(), want)

    def test_pad_then_crop_round_trips_and_reaches_fast_lengths(self):
        x = torch.rand(2, 1, 37, 50)
        padded, pads = boundary.pad_for_fft(x, (9, 5))
        for size in padded.shape[-2:]:
            assert boundary.next_fast_len(size) == size
        assert all(b >= 9 for b, _ in pads[:1]) and all(b >= 5 for b, _ in pads[1:])
        torch.testing.assert_close(boundary.crop(padded, pads), x)

    def test_psf_to_otf_of_centred_delta_is_one(self):
        delta = torch.zeros(1, 5, 3)
        delta[0, 2, 1] = 1
        otf = psf_to_otf(delta, (8, 9))
        torch.testing.assert_close(otf, torch.ones(1, 8, 5, dtype=torch.complex64))

    def test_edge_taper_keeps_interior_and_periodises_borders(self):
        x = torch.linspace(0, 1, 64).reshape(1, 1, 1, 64).expand(1, 1, 64, 64).contiguous()
        psf = torch.ones(1, 1, 9) / 9
        tapered = boundary.edge_taper(x, psf)
        torch.testing.assert_close(tapered[..., 20:44], x[..., 20:44])
        jump_before = (x[..., 0] - x[..., -1]).abs().mean()
        jump_after = (tapered[..., 0] - tapered[..., -1]).abs().mean()
        assert jump_after < 0.2 * jump_before


class TestForwardModel:
    @pytest.mark.parametrize("ksize", [(5, 3), (1, 7)])
    def test_blur_matches_scipy_convolve(self, ksize):
        rng = np.random.default_rng(0)
        image, psf = rng.random((20, 17)), rng.random(ksize)
        got = degrade.blur(torch.tensor(image)[None, None], torch.tensor(psf), padding="zeros")
        np.testing.assert_allclose(got[0, 0].numpy(), signal.convolve(image, psf, "same"), rtol=1e-12)

    def test_noise_is_reproducible_with_seed_and_has_requested_sigma(self):
        x = torch.zeros(1, 1, 256, 256, dtype=torch.float64)
        a = degrade.add_gaussian_noise(x, 0.05, seed=3)
        torch.testing.assert_close(a, degrade.add_gaussian_noise(x, 0.05, seed=3))
        assert float(a.std()) == pytest.approx(0.05, rel=0.02)

    def test_psnr(self):
        ref = torch.zeros(1, 1, 4, 4)
        assert metrics.psnr(ref + 0.1, ref) == pytest.approx(20.0)
        assert metrics.psnr(ref, ref) == math.inf


class TestNoise:
    @pytest.mark.parametrize("sigma", [0.005, 0.02, 0.05])
    def test_estimate_on_smooth_image(self, sigma):
        yy, xx = torch.meshgrid(torch.linspace(0, 1, 256), torch.linspace(0, 1, 256), indexing="ij")
        clean = (0.5 + 0.3 * torch.sin(6 * xx) * torch.cos(4 * yy))[None, None].double()
        noisy = degrade.add_gaussian_noise(clean, sigma, seed=0)
        assert float(noise.estimate_noise_sigma(noisy)) == pytest.approx(sigma, rel=0.05)

    def test_selected_snr_falls_as_noise_rises(self):
        from deblur_ops.data import sample_image, to_batch

        sharp = to_batch(sample_image("camera", size=128)).double()
        psf = linear_motion_kernel(9, 30, dtype=torch.float64)
        picks = []
        for sigma in (0.001, 0.01, 0.05):
            blurred = degrade.add_gaussian_noise(degrade.blur(sharp, psf), sigma, seed=0)
            picks.append(int(noise.select_wiener_snr(blurred, psf, DEFAULT_SNR_DB)[0]))
        assert picks[0] > picks[1] > picks[2]
