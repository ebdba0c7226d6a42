import numpy as np
import pytest
import torch
from skimage import restoration

import deblur_ops
from deblur_ops import psf as psf_lib
from deblur_ops.data import sample_image, to_batch
from deblur_ops.data.degrade import add_gaussian_noise, blur
from deblur_ops.data.metrics import psnr
from deblur_ops.restore import METHODS, admm_tv, register, richardson_lucy, wiener

SIGMA = 0.01


@pytest.fixture(scope="module")
def motion_case():
    """camera, 96x96, blurred by 11-px motion at 30 degrees without boundary assumptions, 1 % noise."""
    kernel = psf_lib.linear_motion_kernel(11, 30)
    big = to_batch(sample_image("camera", size=96 + 10))
    clean = big[..., 5:-5, 5:-5]
    observed = add_gaussian_noise(blur(big, kernel)[..., 5:-5, 5:-5], SIGMA, seed=0)
    return clean, observed, kernel


def smooth_volume(shape=(20, 40, 40), seed=0) -> torch.Tensor:
    """Random blobs and a box: a (1, 1, D, H, W) test volume in [0, 1]."""
    gen = torch.Generator().manual_seed(seed)
    vol = torch.zeros(shape)
    for _ in range(12):
        centre = [int(torch.randint(4, n - 4, (1,), generator=gen)) for n in shape]
        vol[tuple(slice(c - 2, c + 3) for c in centre)] = float(torch.rand(1, generator=gen))
    vol[5:9, 10:30, 12:16] = 1.0
    return vol[None, None]


def numpy_circular_conv(x: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    padded = np.zeros(x.shape)
    padded[tuple(slice(0, k) for k in kernel.shape)] = kernel
    padded = np.roll(padded, [-(k // 2) for k in kernel.shape], axis=tuple(range(kernel.ndim)))
    return np.real(np.fft.ifftn(np.fft.fftn(x) * np.fft.fftn(padded)))


class TestWiener:
    @pytest.mark.parametrize("regularizer", ["identity", "laplacian"])
    def test_matches_numpy_oracle(self, regularizer):
        image = torch.rand(2, 1, 32, 40, dtype=torch.float64)
        kernel = psf_lib.gaussian_psf((1.0, 2.0), angle_deg=20, dtype=torch.float64)
        got = wiener(image, kernel, balance=3e-3, regularizer=regularizer, padding="circular").numpy()
        shape = (32, 40)
        k = np.zeros(shape)
        k[: kernel.shape[0], : kernel.shape[1]] = kernel.numpy()
        otf = np.fft.fft2(np.roll(k, (-(kernel.shape[0] // 2), -(kernel.shape[1] // 2)), (0, 1)))
        if regularizer == "laplacian":
            lap = np.zeros(shape)
            lap[[0, 0, 0, 1, -1], [0, 1, -1, 0, 0]] = [4, -1, -1, -1, -1]
            reg = np.abs(np.fft.fft2(lap)) ** 2
        else:
            reg = 1.0
        for b in range(2):
            expected = np.real(np.fft.ifft2(np.conj(otf) * np.fft.fft2(image[b, 0].numpy()) / (np.abs(otf) ** 2 + 3e-3 * reg)))
            np.testing.assert_allclose(got[b, 0], expected, atol=1e-10)

    def test_laplacian_matches_skimage(self):
        image = np.random.default_rng(0).random((48, 48))
        kernel = psf_lib.linear_motion_kernel(7, 45, dtype=torch.float64)
        ours = wiener(torch.from_numpy(image)[None, None], kernel, balance=0.05, regularizer="laplacian",
                      padding="circular")[0, 0].numpy()
        theirs = restoration.wiener(image, kernel.numpy(), 0.05, clip=False)
        np.testing.assert_allclose(ours, theirs, atol=1e-8)

    def test_noise_based_balance_is_near_the_best(self, motion_case):
        clean, observed, kernel = motion_case
        chosen = psnr(wiener(observed, kernel, noise_sigma=SIGMA).clamp(0, 1), clean)
        best = max(psnr(wiener(observed, kernel, balance=10 ** (-s / 10)).clamp(0, 1), clean) for s in range(0, 60, 2))
        assert chosen > best - 1.0
        assert chosen > psnr(observed, clean) + 1.0

    def test_reflect_padding_beats_circular_at_borders(self, motion_case):
        clean, observed, kernel = motion_case
        reflect = psnr(wiener(observed, kernel, balance=0.02).clamp(0, 1), clean)
        circular = psnr(wiener(observed, kernel, balance=0.02, padding="circular").clamp(0, 1), clean)
        assert reflect > circular + 2.0

    def test_bad_balance(self, motion_case):
        _, observed, kernel = motion_case
        with pytest.raises(ValueError, match="balance"):
            wiener(observed, kernel, balance=0)


class TestRichardsonLucy:
    @pytest.mark.parametrize("shape,kernel", [
        ((40, 36), psf_lib.linear_motion_kernel(9, 60, dtype=torch.float64)),
        ((10, 24, 20), psf_lib.gaussian_psf((1.0, 1.5, 1.2), dtype=torch.float64)),
    ])
    def test_matches_skimage_in_its_setup(self, shape, kernel):
        rng = np.random.default_rng(1)
        image = rng.random(shape) * 0.8 + 0.1
        theirs = restoration.richardson_lucy(image, kernel.numpy(), num_iter=15, clip=False)
        ours = richardson_lucy(torch.from_numpy(image)[None, None], kernel, iterations=15, padding="zeros",
                               init=0.5)[0, 0].numpy()
        np.testing.assert_allclose(ours, theirs, rtol=1e-9, atol=1e-12)

    def test_circular_matches_numpy_loop(self):
        rng = np.random.default_rng(2)
        image = rng.random((32, 32)) + 0.1
        kernel = psf_lib.gaussian_psf(1.5, dtype=torch.float64).numpy()
        x = image.copy()
        for _ in range(10):
            x = x * numpy_circular_conv(image / numpy_circular_conv(x, kernel), kernel[::-1, ::-1])
        ours = richardson_lucy(torch.from_numpy(image)[None, None], torch.from_numpy(kernel), iterations=10,
                               padding="circular")[0, 0].numpy()
        np.testing.assert_allclose(ours, x, rtol=1e-9)

    def test_recovers_and_stays_non_negative(self, motion_case):
        clean, observed, kernel = motion_case
        calls = []
        out = richardson_lucy(observed, kernel, iterations=30, callback=lambda i, est: calls.append((i, est.shape)))
        assert calls == [(i, observed.shape) for i in range(30)]
        assert float(out.min()) >= 0
        assert psnr(out.clamp(0, 1), clean) > psnr(observed, clean) + 1.0

    def test_biggs_andrews_converges_faster(self):
        clean = smooth_volume((12, 48, 48))[:, :, 6]
        kernel = psf_lib.gaussian_psf(2.0)
        observed = blur(clean, kernel, padding="circular")

        def misfit(x):
            return float((blur(x, kernel, padding="circular") - observed).norm())

        plain = richardson_lucy(observed, kernel, iterations=15, padding="circular")
        fast = richardson_lucy(observed, kernel, iterations=15, padding="circular", acceleration="biggs_andrews")
        assert misfit(fast) < 0.7 * misfit(plain)
        assert float(fast.min()) >= 0

    def test_tv_regularisation_suppresses_noise(self, motion_case):
        clean, observed, kernel = motion_case

        def total_variation(x):
            return float((x[..., 1:, :] - x[..., :-1, :]).abs().sum() + (x[..., 1:] - x[..., :-1]).abs().sum())

        plain = richardson_lucy(observed, kernel, iterations=60, padding="reflect")
        tv = richardson_lucy(observed, kernel, iterations=60, tv_weight=0.01, padding="reflect")
        assert total_variation(tv) < 0.9 * total_variation(plain)
        assert psnr(tv.clamp(0, 1), clean) > psnr(plain.clamp(0, 1), clean)

    def test_negative_psf_is_rejected(self, motion_case):
        _, observed, _ = motion_case
        bad = torch.tensor([[0.0, -0.1, 0.0], [0.3, 0.5, 0.3], [0.0, 0.0, 0.0]])
        with pytest.raises(ValueError, match="non-negative PSF"):
            richardson_lucy(observed, bad)


class TestADMMTV:
    def test_recovers_better_than_wiener(self, motion_case):
        clean, observed, kernel = motion_case
        restored = psnr(admm_tv(observed, kernel).clamp(0, 1), clean)
        assert restored > psnr(observed, clean) + 1.5
        assert restored > psnr(wiener(observed, kernel).clamp(0, 1), clean)

    def test_minimises_the_eq1_objective(self, motion_case):
        clean, observed, kernel = motion_case
        weight = 0.005

        def objective(x):  # paper 004 eq. (1), l = 1, circular model (as the solver uses)
            residual = blur(x, kernel, padding="circular") - observed
            grads = [torch.roll(x, -1, d) - x for d in (-2, -1)]
            return float(0.5 * (residual**2).sum() + weight * sum(g.abs().sum() for g in grads))

        x = admm_tv(observed.double(), kernel.double(), weight=weight, iterations=300, padding="circular")
        assert objective(x) < objective(clean.double())
        assert objective(x) < objective(wiener(observed.double(), kernel.double(), padding="circular"))
        # Close to a stationary point: more iterations barely lower it.
        longer = admm_tv(observed.double(), kernel.double(), weight=weight, iterations=600, padding="circular")
        assert objective(x) - objective(longer) < 1e-3 * objective(x)

    def test_bad_parameters(self, motion_case):
        _, observed, kernel = motion_case
        with pytest.raises(ValueError, match="weight"):
            admm_tv(observed, kernel, weight=-1.0)
        with pytest.raises(ValueError, match="rho_growth"):
            admm_tv(observed, kernel, weight=1e-3, rho_growth=0.5)


@pytest.mark.parametrize("method,margin", [("wiener", 3.0), ("richardson_lucy", 3.0), ("admm_tv", 3.0)])
def test_3d_volume_recovery(method, margin):
    clean = smooth_volume()
    kernel = psf_lib.gaussian_psf((1.5, 1.0, 1.0))
    big = torch.nn.functional.pad(clean, (6,) * 6, mode="replicate")
    spectrum = torch.fft.rfftn(big, dim=(-3, -2, -1)) * deblur_ops.psf.psf_to_otf(kernel, big.shape[2:])
    blurred = torch.fft.irfftn(spectrum, s=big.shape[2:], dim=(-3, -2, -1))[..., 6:-6, 6:-6, 6:-6]
    observed = add_gaussian_noise(blurred, 0.005, seed=3)
    params = {"noise_sigma": 0.005} if method != "richardson_lucy" else {"iterations": 40}
    restored = deblur_ops.deblur(observed[0, 0], kernel, method=method, **params)
    assert restored.shape == clean.shape[2:]
    assert psnr(restored.clamp(0, 1), clean[0, 0]) > psnr(observed, clean) + margin


class TestDeblurAPI:
    def test_numpy_in_numpy_out_all_layouts(self):
        kernel = psf_lib.linear_motion_kernel(7, 0).numpy()
        grey = np.random.default_rng(0).random((40, 48))
        rgb = np.random.default_rng(1).random((40, 48, 3)).astype(np.float32)
        fixed = {"wiener": {"balance": 0.01}, "admm_tv": {"weight": 0.01}, "richardson_lucy": {}}
        for name, params in fixed.items():
            out = deblur_ops.deblur(grey, kernel, method=name)
            assert isinstance(out, np.ndarray) and out.shape == grey.shape and out.dtype == np.float32
            colour = deblur_ops.deblur(rgb, kernel, method=name, **params)
            assert colour.shape == rgb.shape and colour.dtype == np.float32
            channel = deblur_ops.deblur(rgb[..., 1], kernel, method=name, **params)
            np.testing.assert_allclose(colour[..., 1], channel, atol=1e-5)
        volume = torch.rand(8, 16, 16, dtype=torch.float64)
        out = deblur_ops.deblur(volume, psf_lib.gaussian_psf((1.0, 1.0, 1.0), size=5), method="wiener", balance=0.01)
        assert isinstance(out, torch.Tensor) and out.shape == volume.shape and out.dtype == torch.float32

    def test_methods_lists_descriptions(self):
        listed = deblur_ops.methods()
        assert {"wiener", "richardson_lucy", "admm_tv"} <= set(listed)
        assert all(isinstance(d, str) and "\n" not in d and d for d in listed.values())

    def test_unknown_method_lists_valid_names(self):
        with pytest.raises(ValueError, match=r"valid methods are \[.*'admm_tv'.*'richardson_lucy'.*'wiener'"):
            deblur_ops.deblur(np.zeros((16, 16)), np.ones((3, 3)) / 9, method="lucy")

    def test_bad_inputs_give_clear_errors(self):
        image = np.random.default_rng(0).random((16, 16))
        # A PSF larger than the image is cropped around its centre (prepare_psf), with a warning
        # when the crop loses more than 1 % of its energy (here 1 - 15^2/21^2 = 49 %).
        with pytest.warns(UserWarning, match=r"larger than the image .* loses 49\.0%"):
            assert deblur_ops.deblur(image, np.ones((21, 21)) / 441).shape == (16, 16)
        nan_image = image.copy()
        nan_image[3, 3] = np.nan
        with pytest.raises(ValueError, match="NaN"):
            deblur_ops.deblur(nan_image, np.ones((3, 3)) / 9)
        with pytest.raises(ValueError, match="needs a psf"):
            deblur_ops.deblur(image)
        with pytest.raises(ValueError, match="does not take parameter"):
            deblur_ops.deblur(image, np.ones((3, 3)) / 9, method="wiener", iterations=3)
        with pytest.raises(ValueError, match="no positive energy"):
            deblur_ops.deblur(image, np.zeros((3, 3)))
        with pytest.raises(ValueError, match="3D volume"):
            deblur_ops.deblur(np.zeros((8, 16, 16)), np.ones((3, 3)) / 9)
        with pytest.raises(TypeError, match="NumPy array or a torch tensor"):
            deblur_ops.deblur([[1.0, 2.0]], np.ones((1, 1)))

    def test_spatially_varying_psf_routing(self):
        class FakeField:
            spatially_varying = True

        with pytest.raises(ValueError, match="uniform blur only"):
            deblur_ops.deblur(np.zeros((16, 16)), FakeField(), method="admm_tv")

        @register("passthrough_for_test", "returns the image unchanged", spatially_varying=True)
        def passthrough(image, psf):
            assert isinstance(psf, FakeField)
            return image * 2

        try:
            # not a constant image: deblur() returns those as they are, whatever the method
            image = np.arange(64.0).reshape(8, 8)
            out = deblur_ops.deblur(image, FakeField(), method="passthrough_for_test")
            np.testing.assert_array_equal(out, (2 * image).astype(np.float32))
        finally:
            METHODS.pop("passthrough_for_test")


class TestInputScaleAndPSFSum:
    @pytest.mark.parametrize("method", ["wiener", "admm_tv", "richardson_lucy", "nu_cg"])
    def test_zero_sum_psf_is_rejected(self, method):
        # A derivative filter (sum 0) made admm_tv all NaN and diverged elsewhere.
        derivative = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, -1.0], [0.0, 0.0, 0.0]])
        with pytest.raises(ValueError, match=r"psf must have a positive, finite sum .* got sum 0"):
            METHODS[method].function(torch.rand(1, 1, 16, 16), derivative)

    @pytest.mark.parametrize("method,kwargs", [
        ("admm_tv", {"iterations": 10}),
        ("admm_tv", {"iterations": 10, "isotropic": True, "rho_growth": 1.5}),
        ("nu_cg", {"iterations": 3, "cg_iterations": 5}),
    ])
    def test_huge_float32_image_matches_float64(self, method, kwargs):
        # float32 image * 1e30: squares and norms overflowed to NaN before the internal rescaling.
        image = torch.rand(1, 1, 32, 32, generator=torch.Generator().manual_seed(0)) * 1e30
        kernel = torch.ones(5, 5) / 25
        got = METHODS[method].function(image, kernel, **kwargs)
        want = METHODS[method].function(image.double(), kernel.double(), **kwargs)
        assert got.dtype == torch.float32 and bool(torch.isfinite(got).all())
        torch.testing.assert_close(got.double() / 1e30, want / 1e30, rtol=1e-4, atol=1e-4)

    def test_admm_tv_scales_with_the_data_and_the_weight(self):
        image = torch.rand(2, 1, 24, 24, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
        kernel = torch.ones(3, 5, dtype=torch.float64) / 15
        base = admm_tv(image, kernel, weight=2e-3, rho=0.05, iterations=8)
        scaled = admm_tv(image * 1e6, kernel, weight=2e-3 * 1e6, rho=0.05, iterations=8)
        torch.testing.assert_close(scaled / 1e6, base, rtol=1e-9, atol=1e-12)
