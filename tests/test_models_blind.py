"""The blind learned models: paper 002's autoencoder and paper 003's MADN (generator + discriminator)."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import deblur_ops
from deblur_ops.models._blind import run_blind
from deblur_ops.models.pretrained import PRETRAINED, load_pretrained
from deblur_ops.models.autoencoder import DeblurAutoencoder, autoencoder
from deblur_ops.models.madn import (MADN, MADNDiscriminator, MADNGenerator, NestedResBlock, image_pyramid, madn,
                                    sobel_gradient_map)
from deblur_ops.restore import get_method
from deblur_ops.train.datasets import SyntheticBlur
from deblur_ops.train.madn import (MADNLossWeights, madn_discriminator_loss, madn_generator_loss, madn_optimizers,
                                   madn_train_step)

TINY_AE = {"filters": (4, 8), "latent_channels": 4}
TINY_G = {"width": 4, "res_blocks": 2}
TINY_D = {"patch": 32, "widths": (4, 4, 4, 4, 4), "dense": 8}


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny_data():
    return {c: SyntheticBlur(patch=32, psf_size=7, max_length=5, channels=c, seed=0) for c in (1, 3)}


def _perturb(module: torch.nn.Module) -> None:
    # The residual networks start with zero output layers, which pass no gradient on at step 0.
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.01 * torch.randn_like(p))


def _grads_reach_every_parameter(module: torch.nn.Module) -> list:
    """Names of the parameters whose gradient is missing or zero."""
    return [name for name, p in module.named_parameters() if p.grad is None or not bool(p.grad.abs().sum() > 0)]


class Identity(torch.nn.Module):
    channels = 1

    def forward(self, x):
        return x


class TestRunBlind:
    def test_padding_folding_and_range_mapping_are_undone(self):
        image = torch.rand(2, 3, 13, 22) * 255
        out = run_blind(Identity(), image, multiple=16, margin=16)
        torch.testing.assert_close(out, image)

    def test_the_network_sees_unit_range_multiples_and_one_channel(self):
        seen = []

        class Spy(Identity):
            def forward(self, x):
                seen.append(x)
                return x

        run_blind(Spy(), torch.rand(1, 3, 5, 9) * 4 - 1, multiple=8, margin=2)
        x = seen[0]
        assert x.shape == (3, 1, 16, 16) and float(x.min()) >= 0 and float(x.max()) <= 1

    @pytest.mark.parametrize("bad, match", [(torch.rand(4, 4), r"\(B, C, H, W\)"),
                                            (torch.rand(1, 1, 2, 4, 4), "volumes"),
                                            (torch.zeros(1, 1, 4, 4, dtype=torch.int64), "float32"),
                                            (torch.full((1, 1, 4, 4), float("nan")), "NaN")])
    def test_bad_input(self, bad, match):
        with pytest.raises(ValueError, match=match):
            run_blind(Identity(), bad, multiple=4)

    def test_channel_mismatch(self):
        net = Identity()
        net.channels = 3
        with pytest.raises(ValueError, match="takes 1 or 3 channels"):
            run_blind(net, torch.rand(1, 2, 8, 8), multiple=4)


class TestDeblurAutoencoder:
    @pytest.mark.parametrize("channels", [1, 3])
    def test_shape(self, channels):
        net = DeblurAutoencoder(channels, **TINY_AE)
        assert net(torch.rand(2, channels, 12, 20)).shape == (2, channels, 12, 20)
        assert run_blind(net, torch.rand(1, channels, 11, 17), multiple=net.multiple).shape == (1, channels, 11, 17)

    def test_latent_is_smaller_than_the_input(self):
        net = DeblurAutoencoder(3, filters=(8, 8, 8), latent_channels=16)
        z = net.encode(torch.rand(1, 3, 32, 32))
        assert z.shape == (1, 16, 4, 4) and z.numel() < 3 * 32 * 32

    @pytest.mark.parametrize("residual", [False, True])
    def test_gradients_reach_every_parameter(self, residual):
        net = DeblurAutoencoder(1, residual=residual, **TINY_AE)
        _perturb(net)
        (net(torch.rand(2, 1, 16, 16)) - torch.rand(2, 1, 16, 16)).square().mean().backward()
        assert _grads_reach_every_parameter(net) == []

    def test_output_in_unit_range_without_residual(self):
        with torch.no_grad():
            out = DeblurAutoencoder(1, **TINY_AE)(torch.randn(1, 1, 8, 8) * 10)
        assert float(out.min()) > 0 and float(out.max()) < 1

    def test_untrained_residual_network_is_the_identity(self):
        x = torch.rand(1, 1, 8, 8)
        torch.testing.assert_close(DeblurAutoencoder(1, residual=True, **TINY_AE)(x), x)

    def test_tiny_training_run_lowers_the_loss(self, tiny_data):
        torch.manual_seed(0)
        net = DeblurAutoencoder(1, **TINY_AE)
        batch = tiny_data[1].batch(4)
        opt = torch.optim.Adam(net.parameters(), 1e-2)
        losses = []
        for _ in range(30):
            opt.zero_grad()
            loss = F.mse_loss(net(batch["blurry"]), batch["sharp"])
            loss.backward()
            opt.step()
            losses.append(loss.item())
        assert losses[-1] < 0.5 * losses[0]

    @pytest.mark.parametrize("kwargs, match", [({"kernel_size": 4}, "odd"), ({"filters": ()}, "non-empty"),
                                               ({"latent_channels": 0}, ">= 1")])
    def test_bad_config(self, kwargs, match):
        with pytest.raises(ValueError, match=match):
            DeblurAutoencoder(**kwargs)

    @pytest.mark.parametrize("shape, match", [((1, 3, 8, 8), r"\(B, 1, H, W\)"), ((1, 1, 8, 10), "multiples of 4")])
    def test_bad_input(self, shape, match):
        with pytest.raises(ValueError, match=match):
            DeblurAutoencoder(1, **TINY_AE)(torch.rand(shape))


class TestMADNGenerator:
    @pytest.mark.parametrize("channels", [1, 3])
    def test_shapes(self, channels):
        g = MADNGenerator(channels, **TINY_G)
        out = g.outputs(torch.rand(2, channels, 32, 48))
        assert out.image.shape == out.gradient.shape == (2, channels, 32, 48)
        assert [tuple(s.shape) for s in out.scales] == [(2, channels, 8, 12), (2, channels, 16, 24),
                                                        (2, channels, 32, 48)]
        assert run_blind(g, torch.rand(1, channels, 19, 7), multiple=g.multiple).shape == (1, channels, 19, 7)

    def test_untrained_generator_is_the_identity(self):
        x = torch.rand(2, 1, 32, 16)
        out = MADNGenerator(1, **TINY_G).outputs(x)
        torch.testing.assert_close(out.image, x)
        for level, blurred in zip(out.scales, image_pyramid(x)):
            torch.testing.assert_close(level, blurred)

    def test_nested_residual_block_is_equation_9(self):
        block = NestedResBlock(3)
        p = torch.rand(1, 3, 6, 6)
        r1, r2 = block.first, block.second
        torch.testing.assert_close(block(p), p + r1(p) + r2(p + r1(p)))

    def test_sobel_gradient_map_matches_scipy(self):
        from scipy import ndimage

        image = np.random.default_rng(0).random((9, 11))
        gx = ndimage.sobel(image, axis=1, mode="nearest") / 8
        gy = ndimage.sobel(image, axis=0, mode="nearest") / 8
        expected = np.sqrt(gx ** 2 + gy ** 2 + 1e-6)
        got = sobel_gradient_map(torch.from_numpy(image)[None, None])[0, 0].numpy()
        np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-9)

    def test_pyramid_of_a_constant_is_constant(self):
        for level in image_pyramid(torch.full((1, 1, 16, 16), 0.3)):
            torch.testing.assert_close(level, torch.full_like(level, 0.3))

    def test_pixel_loss_is_equation_12(self):
        g = MADNGenerator(1, width=2, res_blocks=0)
        blurry, sharp = torch.rand(2, 1, 16, 16), torch.rand(2, 1, 16, 16)
        out = g.outputs(blurry)
        weights = MADNLossWeights(pixel=1, gradient_content=0, image_content=0, scale_weights=(1, 2, 3))
        total, terms = madn_generator_loss(out, sharp, None, weights)
        expected = 0
        for w, estimate, size in zip((1, 2, 3), out.scales, (4, 8, 16)):
            target = F.interpolate(sharp, size=(size, size), mode="bicubic", antialias=size < 16, align_corners=False)
            expected = expected + w * ((estimate - target) ** 2).sum() / (2 * estimate.numel())
        torch.testing.assert_close(total, expected)

    @pytest.mark.parametrize("kwargs, match", [({"res_blocks": 3}, "even"), ({"width": 0}, ">= 1")])
    def test_bad_config(self, kwargs, match):
        with pytest.raises(ValueError, match=match):
            MADNGenerator(**kwargs)

    @pytest.mark.parametrize("shape, match", [((1, 1, 24, 32), "multiples of 16"), ((32, 32), r"\(B, 1, H, W\)")])
    def test_bad_input(self, shape, match):
        with pytest.raises(ValueError, match=match):
            MADNGenerator(1, **TINY_G)(torch.rand(shape))


class TestMADNDiscriminator:
    @pytest.mark.parametrize("channels", [1, 3])
    def test_output_in_open_unit_interval(self, channels):
        d = MADNDiscriminator(channels, **TINY_D)
        x = torch.cat([torch.rand(3, channels, 32, 32), torch.zeros(1, channels, 32, 32),
                       torch.full((1, channels, 32, 32), 5.0)])
        p = d(x)
        assert p.shape == (5,) and bool(((p > 0) & (p < 1)).all())
        torch.testing.assert_close(p, torch.sigmoid(d.logits(x)))

    def test_table_1_layers(self):
        d = MADNDiscriminator()
        convs = [m for m in d.features if isinstance(m, torch.nn.Conv2d)]
        assert [c.out_channels for c in convs] == [64, 64, 64, 64, 128, 128, 256, 256, 512, 512, 1, 1]
        assert [c.stride[0] for c in convs] == [1, 2] * 5 + [1, 1]
        assert [c.kernel_size[0] for c in convs] == [3] * 10 + [1, 1]
        slopes = {m.negative_slope for m in d.modules() if isinstance(m, torch.nn.LeakyReLU)}
        assert slopes == {0.2}
        assert [m.out_features for m in d.classifier if isinstance(m, torch.nn.Linear)] == [1024, 1]

    def test_bad_input(self):
        with pytest.raises(ValueError, match=r"\(B, 1, 32, 32\)"):
            MADNDiscriminator(**TINY_D)(torch.rand(1, 1, 64, 64))
        with pytest.raises(ValueError, match="multiple of 32"):
            MADNDiscriminator(patch=48)


class TestMADNTraining:
    def _gan(self, channels=1):
        torch.manual_seed(0)
        return MADN({"channels": channels, **TINY_G}, TINY_D)

    def test_gradients_reach_every_parameter(self):
        gan = self._gan()
        _perturb(gan)
        blurry, sharp = torch.rand(2, 1, 32, 32), torch.rand(2, 1, 32, 32)
        out = gan.generator.outputs(blurry)
        madn_generator_loss(out, sharp, gan.discriminator)[0].backward()
        assert _grads_reach_every_parameter(gan.generator) == []
        gan.zero_grad()
        madn_discriminator_loss(gan.discriminator, gan.generator.outputs(blurry), sharp).backward()
        assert _grads_reach_every_parameter(gan.discriminator) == []
        assert all(p.grad is None for p in gan.generator.parameters())  # D's loss leaves G alone

    @torch.no_grad()
    def test_adversarial_terms_are_log_d(self):
        gan = self._gan()
        _perturb(gan)
        d = gan.discriminator
        blurry, sharp = torch.rand(2, 1, 32, 32), torch.rand(2, 1, 32, 32)
        out = gan.generator.outputs(blurry)
        _, terms = madn_generator_loss(out, sharp, d)
        expected = -(torch.log(d(out.image)).mean() + torch.log(d(out.gradient)).mean())
        assert terms["adversarial"] == pytest.approx(float(expected), rel=1e-5)
        l_d = madn_discriminator_loss(d, out, sharp)
        expected_d = -(torch.log(d(sharp)).mean() + torch.log(1 - d(out.image)).mean()
                       + torch.log(d(sobel_gradient_map(sharp))).mean() + torch.log(1 - d(out.gradient)).mean())
        assert float(l_d) == pytest.approx(float(expected_d), rel=1e-5)

    @pytest.mark.parametrize("channels", [1, 3])
    def test_tiny_training_run_lowers_the_loss(self, channels, tiny_data):
        gan = self._gan(channels)
        batch = tiny_data[channels].batch(2)
        g_opt, d_opt = madn_optimizers(gan, generator_lr=1e-3, discriminator_lr=1e-3)
        first = madn_train_step(gan, batch, g_opt, d_opt)
        for _ in range(15):
            last = madn_train_step(gan, batch, g_opt, d_opt)
        assert last["generator"] < 0.8 * first["generator"]
        assert last["gradient_content"] < 0.5 * first["gradient_content"]
        assert np.isfinite(last["discriminator"])

    def test_paper_settings(self):
        gan = MADN()
        g_opt, d_opt = madn_optimizers(gan)
        assert g_opt.param_groups[0]["lr"] == 1e-4 and d_opt.param_groups[0]["lr"] == 4e-4
        assert g_opt.param_groups[0]["betas"] == (0.9, 0.999) and g_opt.param_groups[0]["eps"] == 1e-8
        w = MADNLossWeights()
        assert (w.adversarial, w.gradient_content, w.image_content, w.pixel, w.gradient_l1, w.image_l1) == \
            (0.05, 0.5, 1.0, 0.01, 0.01, 1.0)
        assert gan.generator.config() == {"channels": 1, "width": 64, "res_blocks": 4, "residual": True}
        params = sum(p.numel() for p in gan.parameters())
        assert params > 29_000_000  # the paper: "more than 29 million"


class TestShippedWeights:
    @pytest.mark.parametrize("name, kind", [("autoencoder", DeblurAutoencoder), ("madn", MADNGenerator)])
    def test_load(self, name, kind):
        net = load_pretrained(name)
        assert isinstance(net, kind) and not net.training and net.channels == 1
        assert PRETRAINED[name].path.stat().st_size < 2_000_000
        info = net.trained_info
        assert info["validation_psnr"] > info["validation_input_psnr"]

    @pytest.mark.parametrize("method", ["autoencoder", "madn"])
    def test_registered_as_blind(self, method):
        assert get_method(method).needs_psf is False

    @pytest.mark.parametrize("method", ["autoencoder", "madn"])
    def test_grey_and_colour_of_odd_sizes(self, method):
        grey = np.random.default_rng(0).random((23, 37), dtype=np.float32)
        colour = np.random.default_rng(1).random((19, 26, 3), dtype=np.float32)
        assert deblur_ops.deblur(grey, method=method).shape == grey.shape
        out = deblur_ops.deblur(colour, method=method)
        assert out.shape == colour.shape
        # colour channels go through the grey network one by one
        np.testing.assert_allclose(out[..., 1], deblur_ops.deblur(colour[..., 1], method=method), atol=1e-5)

    @pytest.mark.parametrize("method", ["autoencoder", "madn"])
    def test_a_given_psf_is_ignored(self, method):
        from deblur_ops.psf import linear_motion_kernel

        image = np.random.default_rng(0).random((32, 32), dtype=np.float32)
        np.testing.assert_array_equal(deblur_ops.deblur(image, linear_motion_kernel(5, 0).numpy(), method=method),
                                      deblur_ops.deblur(image, method=method))

    @pytest.mark.parametrize("method", ["autoencoder", "madn"])
    def test_beats_the_blurred_input_on_motion_blur(self, method):
        from deblur_ops.apps.evaluate import degrade, make_kernel

        clean, observed = degrade("camera", make_kernel("motion:13:45"), 0.01, 128, seed=0)
        restored = deblur_ops.deblur(observed, method=method).clip(0, 1)
        mse = lambda x: float(((x - clean) ** 2).mean())  # noqa: E731
        assert mse(restored) < mse(observed)

    @pytest.mark.parametrize("function", [autoencoder, madn])
    def test_bad_input(self, function):
        with pytest.raises(TypeError, match="torch.Tensor"):
            function(np.zeros((1, 1, 8, 8), dtype=np.float32))
        with pytest.raises(ValueError, match="volumes"):
            function(torch.rand(1, 1, 4, 8, 8))
        with pytest.raises(ValueError, match="registered name"):
            function(torch.rand(1, 1, 8, 8), weights="no-such-weights")
