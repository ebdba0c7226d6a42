"""Non-blind learned models: WienerStackNet (paper 001) and RGDM (paper 000), their baselines, SSIM loss."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import deblur_ops
from deblur_ops import psf as psf_lib
from deblur_ops.data import sample_image
from deblur_ops.data.degrade import blur
from deblur_ops.data.metrics import psnr as psnr_db
from deblur_ops.models import RGDM, WienerStackNet, load_pretrained
from deblur_ops.models.pretrained import WEIGHTS_DIR
from deblur_ops.restore.baselines import MaskedBlur, bilateral_filter, gradient_descent, wiener_bilateral
from deblur_ops.train.losses import SSIMLoss, image_loss, ssim, ssim_loss, ssim_map
from deblur_ops.train.rgdm import recursive_loss


def _image(seed=0, shape=(1, 1, 32, 32)):
    """A smooth random scene (blurred noise), values in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(*shape, generator=g)
    return F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="reflect"), 3, stride=1)


def _pair(seed=0, shape=(2, 1, 32, 32), psf=None, noise=0.005):
    sharp = _image(seed, shape)
    k = psf_lib.linear_motion_kernel(5, 30) if psf is None else psf
    g = torch.Generator().manual_seed(seed + 1)
    blurry = blur(sharp, k) + noise * torch.randn(sharp.shape, generator=g)
    return sharp, blurry, k


def _all_parameters_get_gradients(model, out):
    model.zero_grad()
    out.square().mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not bool(p.grad.abs().sum() > 0)]
    assert not missing, f"no gradient reaches {missing}"


# ---------------------------------------------------------------- SSIM loss

class TestSSIM:
    @pytest.mark.parametrize("gaussian", [True, False])
    def test_matches_skimage(self, gaussian):
        from skimage.metrics import structural_similarity

        a = sample_image("camera", size=80).astype(np.float64)
        b = np.clip(a + 0.05 * np.random.default_rng(0).standard_normal(a.shape), 0, 1)
        ours = float(ssim(torch.from_numpy(b)[None, None], torch.from_numpy(a)[None, None], gaussian=gaussian))
        theirs = structural_similarity(a, b, data_range=1.0, gaussian_weights=gaussian,
                                       use_sample_covariance=not gaussian)
        assert abs(ours - theirs) < 1e-6

    def test_loss_zero_for_identical_and_differentiable(self):
        x = torch.rand(2, 3, 20, 20)
        assert float(ssim_loss(x, x)) == pytest.approx(0.0, abs=1e-6)
        y = x.clone().requires_grad_(True)
        loss = SSIMLoss()(y + 0.1 * torch.randn_like(x), x)
        loss.backward()
        assert loss > 0 and bool(y.grad.abs().sum() > 0)
        assert ssim_map(x, x).shape == (2, 3, 10, 10)

    def test_image_loss_kinds(self):
        assert isinstance(image_loss("l2"), torch.nn.MSELoss)
        assert isinstance(image_loss("ssim"), SSIMLoss)
        with pytest.raises(ValueError, match="loss must be one of"):
            image_loss("l1")

    def test_bad_input(self):
        with pytest.raises(ValueError, match="same shape"):
            ssim(torch.rand(1, 1, 16, 16), torch.rand(1, 1, 16, 17))
        with pytest.raises(ValueError, match="larger than the image"):
            ssim(torch.rand(1, 1, 8, 8), torch.rand(1, 1, 8, 8))
        with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
            ssim(torch.rand(16, 16), torch.rand(16, 16))


# ---------------------------------------------------------------- bilateral filter

def test_bilateral_filter_matches_direct_sum():
    x = torch.rand(1, 2, 9, 8, dtype=torch.float64)
    window, sc, ss = 5, 0.2, 2.0
    r = window // 2
    padded = F.pad(x, (r, r, r, r), mode="replicate")[0]
    expected = torch.zeros_like(x[0])
    for i in range(9):
        for j in range(8):
            num, den = 0.0, 0.0
            for di in range(-r, r + 1):
                for dj in range(-r, r + 1):
                    q = padded[:, i + r + di, j + r + dj]
                    colour = ((q - x[0, :, i, j]) ** 2).sum() / (2 * sc ** 2)
                    w = torch.exp(-(di * di + dj * dj) / (2 * ss ** 2) - colour)
                    num, den = num + w * q, den + w
            expected[:, i, j] = num / den
    assert torch.allclose(bilateral_filter(x, window=window, sigma_color=sc, sigma_space=ss)[0], expected, atol=1e-12)
    with pytest.raises(ValueError, match="window must be a positive odd integer"):
        bilateral_filter(x, window=4)


# ---------------------------------------------------------------- WienerStackNet

class TestWienerStackNet:
    def test_paper_configuration(self):
        net = WienerStackNet()
        # paper 001 §1.2: 15 SNRs, "from 9 dB to 65 dB, in steps of 4 dB"
        assert net.in_channels == 48 and net.snr_db.tolist() == [float(s) for s in range(9, 66, 4)]
        assert len(net.blocks) == 12 and net.head.out_channels == 64 and net.head.kernel_size == (5, 5)
        assert net.tail.out_channels == 3

    @pytest.mark.parametrize("channels", [1, 3])
    def test_output_shape_odd_sizes(self, channels):
        net = WienerStackNet(channels=channels, width=6, blocks=1, kernel_size=3, residual_snr_db=17.0, bilateral=True)
        out = net(torch.rand(2, channels, 23, 19), torch.ones(2, 5, 5) / 25)
        assert out.shape == (2, channels, 23, 19)

    def test_features_are_the_wiener_stack_and_the_image(self):
        net = WienerStackNet(channels=3, width=4, blocks=0)
        y, k = torch.rand(1, 3, 20, 20), torch.ones(3, 3) / 9
        feats = net.features(y, k)
        stack = deblur_ops.wiener_stack(y, k)
        assert feats.shape == (1, 48, 20, 20)
        assert torch.allclose(feats[:, :45], stack.flatten(1, 2)) and torch.equal(feats[:, 45:], y)

    def test_gradients_reach_every_parameter(self):
        net = WienerStackNet(channels=1, width=4, blocks=2, kernel_size=3, residual_snr_db=17.0, bilateral=True)
        _all_parameters_get_gradients(net, net(torch.rand(1, 1, 16, 16), torch.ones(3, 3) / 9))

    @pytest.mark.parametrize("loss", ["l2", "ssim"])
    def test_tiny_training_lowers_the_loss(self, loss):
        torch.manual_seed(0)
        sharp, blurry, k = _pair(0, (2, 1, 24, 24))
        net = WienerStackNet(channels=1, width=8, blocks=1, kernel_size=3, residual_snr_db=17.0)
        criterion = image_loss(loss)
        opt = torch.optim.Adam(net.parameters(), lr=1e-3)
        losses = []
        for _ in range(15):
            opt.zero_grad()
            value = criterion(net(blurry, k), sharp)
            value.backward()
            opt.step()
            losses.append(float(value.detach()))
        assert losses[-1] < 0.8 * losses[0]

    def test_bad_config_and_input(self):
        with pytest.raises(ValueError, match="kernel_size must be odd"):
            WienerStackNet(kernel_size=4)
        with pytest.raises(ValueError, match="residual_snr_db must be None or one of"):
            WienerStackNet(residual_snr_db=10.0)
        net = WienerStackNet(channels=1, width=4, blocks=0)
        with pytest.raises(ValueError, match=r"shape \(B, 1, H, W\)"):
            net(torch.rand(1, 3, 16, 16), torch.ones(3, 3) / 9)
        with pytest.raises(ValueError, match="odd"):
            net(torch.rand(1, 1, 16, 16), torch.ones(4, 4) / 16)


# ---------------------------------------------------------------- RGDM

class TestRGDM:
    def test_data_gradient_matches_autograd_of_valid_convolution(self):
        """grad f from the FFT operator equals autograd of ||conv_valid(x) - y||^2 / 2 (direct convolution)."""
        g = torch.Generator().manual_seed(3)
        y = torch.rand(2, 1, 14, 13, dtype=torch.float64, generator=g)
        k = torch.rand(2, 5, 3, dtype=torch.float64, generator=g)
        op = MaskedBlur(y, k)
        x = torch.rand(op.start.shape, dtype=torch.float64, generator=g, requires_grad=True)
        # The image region's pixels see x on [-k//2, +k//2] around them: a valid correlation with the flipped PSF.
        (top, _), (left, _) = op.pads
        window = x[..., top - 2:top + 14 + 2, left - 1:left + 13 + 1]
        blurred = torch.cat([F.conv2d(window[i:i + 1], k[i].flip(-1, -2)[None, None]) for i in range(2)])
        (0.5 * ((blurred - y) ** 2).sum()).backward()
        assert torch.allclose(op.gradient(x.detach()), x.grad, atol=1e-10)

    def test_untrained_model_is_gradient_descent(self):
        """H = D = identity at the start; with R's and the side channels' small outputs removed, exactly GD."""
        model = RGDM(channels=3, width=8, kernel_size=3, train_steps=4)
        with torch.no_grad():
            model.regularizer.layers[-1].weight.zero_()
            for unit in (model.gradient_adjuster, model.preconditioner):
                unit.layers[-1].weight[6:] = 0
        g = torch.Generator().manual_seed(5)
        y, k = torch.rand(2, 3, 20, 23, generator=g), torch.rand(2, 5, 3, generator=g)
        k = k / k.sum((1, 2), keepdim=True)
        with torch.no_grad():
            assert torch.allclose(model(y, k)[-1], gradient_descent(y, k, 4), atol=1e-6)

    @pytest.mark.parametrize("channels", [1, 3])
    def test_output_shape_odd_sizes(self, channels):
        model = RGDM(channels=channels, width=6, kernel_size=3, train_steps=2)
        estimates = model(torch.rand(2, channels, 21, 17), torch.ones(2, 5, 3) / 15)
        assert len(estimates) == 2 and all(e.shape == (2, channels, 21, 17) for e in estimates)
        x, steps = model.restore(torch.rand(1, channels, 15, 19), torch.ones(3, 3) / 9, max_steps=3)
        assert x.shape == (1, channels, 15, 19) and int(steps) <= 3

    def test_paper_configuration(self):
        model = RGDM(channels=3, width=64)
        kinds = [type(m).__name__ for m in model.regularizer.layers]
        assert kinds == ["Conv2d", "ReLU", "Conv2d", "ReLU", "ConvTranspose2d", "ReLU", "ConvTranspose2d"]
        assert model.regularizer.layers[0].in_channels == 3 and model.preconditioner.layers[-1].out_channels == 3

    def test_gradients_reach_every_parameter(self):
        model = RGDM(channels=1, width=4, kernel_size=3, train_steps=2)
        _all_parameters_get_gradients(model, model(torch.rand(1, 1, 16, 16), torch.ones(3, 3) / 9)[-1])

    def test_tiny_training_lowers_the_loss(self):
        torch.manual_seed(0)
        sharp, blurry, k = _pair(1, (2, 1, 24, 24))
        model = RGDM(channels=1, width=8, kernel_size=3, train_steps=3)
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        losses = []
        for _ in range(15):
            opt.zero_grad()
            value = recursive_loss(model(blurry, k), sharp)
            value.backward()
            opt.step()
            losses.append(float(value.detach()))
        assert losses[-1] < 0.9 * losses[0]

    def test_stopping_rule_stops_when_the_update_vanishes(self):
        model = RGDM(channels=1, width=4, kernel_size=3)
        torch.nn.init.zeros_(model.preconditioner.layers[-1].weight)  # D == 0: x_{t+1} == x_t
        y = torch.rand(2, 1, 16, 16)
        x, steps = model.restore(y, torch.ones(3, 3) / 9, max_steps=50, tol=1e-6)
        assert steps.tolist() == [1, 1] and torch.allclose(x, y)
        _, steps = model.restore(y, torch.ones(3, 3) / 9, max_steps=7, tol=0)
        assert steps.tolist() == [7, 7]

    def test_gradient_descent_sharpens_noiseless_blur(self):
        sharp, blurry, k = _pair(2, (1, 1, 40, 40), noise=0.0)
        psnr = [psnr_db(x, sharp) for x in
                (blurry, gradient_descent(blurry, k[None], 5), gradient_descent(blurry, k[None], 50))]
        assert psnr[0] < psnr[1] < psnr[2]

    def test_bad_input(self):
        model = RGDM(channels=1, width=4)
        with pytest.raises(ValueError, match=r"shape \(B, 1, H, W\)"):
            model(torch.rand(1, 2, 16, 16), torch.ones(3, 3) / 9)
        with pytest.raises(ValueError, match="max_steps must be a positive integer"):
            model.restore(torch.rand(1, 1, 16, 16), torch.ones(3, 3) / 9, max_steps=0)
        with pytest.raises(ValueError, match="tol must be"):
            model.restore(torch.rand(1, 1, 16, 16), torch.ones(3, 3) / 9, tol=-1.0)
        with pytest.raises(ValueError, match="larger than the image"):
            model(torch.rand(1, 1, 8, 8), torch.ones(9, 9) / 81)
        with pytest.raises(ValueError, match="kernel_size must be odd"):
            RGDM(kernel_size=2)
        with pytest.raises(ValueError, match="width must be at least 2 \\* channels"):
            RGDM(channels=3, width=4)


# ---------------------------------------------------------------- shipped weights and methods

@pytest.mark.parametrize("name, cls", [("wiener-stack-net", WienerStackNet), ("rgdm", RGDM)])
def test_shipped_weights_load(name, cls):
    model = load_pretrained(name)
    assert isinstance(model, cls) and not model.training and model.channels == 1
    info = model.trained_info
    assert info["validation_psnr"] > info["validation_input_psnr"]
    assert info["validation_baseline_psnr"] < (info.get("validation_restore_psnr") or info["validation_psnr"])
    assert (WEIGHTS_DIR / f"{name}.pt").stat().st_size < 2 * 2**20


@pytest.mark.parametrize("method", ["wiener-stack-net", "rgdm", "wiener-bilateral", "gradient-descent"])
def test_methods_grey_and_rgb_any_size(method):
    k = psf_lib.linear_motion_kernel(7, 45).numpy()
    grey = deblur_ops.deblur(np.random.rand(37, 29).astype(np.float32), k, method=method)
    colour = np.random.rand(27, 33, 3).astype(np.float32)
    rgb = deblur_ops.deblur(colour, k, method=method)
    assert grey.shape == (37, 29) and rgb.shape == (27, 33, 3) and np.isfinite(rgb).all()
    if method in ("wiener-stack-net", "rgdm"):  # the grey network restores each colour channel on its own
        first = deblur_ops.deblur(np.ascontiguousarray(colour[..., 0]), k, method=method)
        assert np.allclose(rgb[..., 0], first, atol=1e-5)


def test_learned_models_beat_blur_and_baselines_on_an_evaluate_case():
    from deblur_ops.apps.evaluate import _scores, degrade, make_kernel

    k = make_kernel("motion:13:45")
    clean, observed = degrade("camera", k, 0.01, 96, 0)
    score = {m: _scores(deblur_ops.deblur(observed, k.numpy(), method=m), clean)[0]
             for m in ("wiener-stack-net", "wiener-bilateral", "rgdm")}
    blurred = _scores(observed, clean)[0]
    steps = int(load_pretrained("rgdm").restore(torch.from_numpy(observed)[None, None], k)[1])
    gd = _scores(deblur_ops.deblur(observed, k.numpy(), method="gradient-descent", steps=steps), clean)[0]
    assert score["wiener-stack-net"] > max(blurred, score["wiener-bilateral"])
    assert score["rgdm"] > max(blurred, gd)


def test_rgdm_stopping_rule_stops_early_on_an_easy_case():
    sharp, blurry, k = _pair(4, (1, 1, 48, 48), psf=psf_lib.gaussian_psf(1.0), noise=0.003)
    model = load_pretrained("rgdm")
    with torch.no_grad():
        _, steps = model.restore(blurry, k)
    assert int(steps) < 50


def test_method_bad_input():
    k = psf_lib.linear_motion_kernel(5, 0)
    with pytest.raises(ValueError, match="2D images"):
        deblur_ops.deblur(np.random.rand(8, 16, 16).astype(np.float32), np.ones((3, 3, 3), np.float32) / 27,
                          method="rgdm")
    with pytest.raises(ValueError, match="needs a psf"):
        deblur_ops.deblur(np.random.rand(16, 16), method="wiener-stack-net")
    with pytest.raises(ValueError, match="NaN"):
        deblur_ops.deblur(np.full((16, 16), np.nan), k.numpy(), method="wiener-stack-net")
    with pytest.raises(ValueError, match="steps must be a positive integer"):
        deblur_ops.deblur(np.random.rand(16, 16), k.numpy(), method="gradient-descent", steps=0)
    with pytest.raises(ValueError, match="snr_db must be a finite number"):
        wiener_bilateral(torch.rand(1, 1, 16, 16), k, snr_db=float("inf"))
    with pytest.raises(ValueError, match="bilateral must be None, True or False"):
        deblur_ops.deblur(np.random.rand(16, 16), k.numpy(), method="wiener-stack-net", bilateral="yes")


@pytest.mark.parametrize("name", ["deblur_ops.models.wiener_stack_net", "deblur_ops.models.rgdm",
                                  "deblur_ops.restore.baselines", "deblur_ops.train.losses",
                                  "deblur_ops.models._channels"])
def test_docstring_examples(name):
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
