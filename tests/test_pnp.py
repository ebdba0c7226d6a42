"""Plug-and-play deconvolution (method "pnp") and its torch non-local-means denoiser."""
import numpy as np
import pytest
import torch

import deblur_ops
from deblur_ops.data.images import sample_image
from deblur_ops.data.metrics import psnr
from deblur_ops.restore import admm_tv, nl_means, pnp
from deblur_ops.restore.pnp import _box_sum

from .conftest import requires_cuda


def _blurred(name="coffee", size=96, sigma=0.01, seed=0):
    from deblur_ops.apps.evaluate import degrade
    from deblur_ops.apps.evaluate_blind import shake_kernel

    kernel = shake_kernel(15, seed, span=True)
    clean, observed = degrade(name, kernel, sigma, size, seed)
    return torch.from_numpy(clean)[None, None], torch.from_numpy(observed)[None, None], kernel


def test_nl_means_matches_scikit_image_away_from_the_edges():
    from skimage.restoration import denoise_nl_means

    clean = sample_image("coffee", size=80).mean(-1)
    noisy = clean + 0.05 * np.random.default_rng(0).standard_normal(clean.shape)
    ours = nl_means(torch.from_numpy(noisy)[None, None], 0.05, strength=0.8)[0, 0].numpy()
    theirs = denoise_nl_means(noisy, h=0.8 * 0.05, sigma=0.05, patch_size=5, patch_distance=6, fast_mode=True)
    inner = (slice(10, -10), slice(10, -10))
    # scikit-image's blockwise weights differ from ours by its own patch-window normalisation;
    # the two must agree closely and denoise equally well.
    assert np.abs(ours[inner] - theirs[inner]).mean() < 0.01
    assert abs(psnr(torch.from_numpy(ours[inner]), torch.from_numpy(clean[inner]))
               - psnr(torch.from_numpy(theirs[inner]), torch.from_numpy(clean[inner]))) < 0.5
    assert psnr(torch.from_numpy(ours), torch.from_numpy(clean)) > psnr(torch.from_numpy(noisy), torch.from_numpy(clean)) + 5


def test_nl_means_pairs_offsets_exactly_as_the_direct_sum():
    # The o / -o pairing must equal the plain sum over every offset of the search window.
    torch.manual_seed(0)
    x = torch.rand(2, 3, 30, 34, dtype=torch.float64)
    sigma = torch.tensor([0.1, 0.3], dtype=torch.float64)
    r, s = 1, 3
    m = s + r  # each pixel's patch reaches r, its partners' patches s + r beyond it
    padded = torch.nn.functional.pad(x, (m,) * 4, mode="reflect")
    centre = padded[..., s:-s, s:-s]  # the image grown by r
    num = torch.zeros_like(x)
    den = torch.zeros_like(x[:, :1])
    h, w = x.shape[-2:]
    for dy in range(-s, s + 1):
        for dx in range(-s, s + 1):
            moved = padded[..., s + dy:s + dy + h + 2 * r, s + dx:s + dx + w + 2 * r]
            d = _box_sum((centre - moved).square().mean(1, keepdim=True), r) / (2 * r + 1) ** 2
            wgt = torch.exp(-(d - 2 * sigma.view(-1, 1, 1, 1) ** 2).clamp(min=0) / (0.7 * sigma.view(-1, 1, 1, 1)) ** 2)
            num += wgt * moved[..., r:r + h, r:r + w]
            den += wgt
    got = nl_means(x, sigma, strength=0.7, patch_radius=r, search_radius=s)
    assert torch.allclose(got, num / den, atol=1e-12)


def test_nl_means_keeps_flat_images_and_zero_noise_and_is_differentiable():
    flat = torch.full((1, 3, 24, 24), 0.25, dtype=torch.float64)
    assert torch.equal(nl_means(flat, 0.2), flat)
    x = torch.rand(2, 1, 24, 24, dtype=torch.float64)
    assert torch.equal(nl_means(x, 0.0), x)
    # Scaling image and sigma together scales the result, even where the squares would overflow.
    huge = nl_means(x.float() * 1e30, 0.05 * 1e30) / 1e30
    assert torch.isfinite(huge).all()
    assert torch.allclose(huge, nl_means(x.float(), 0.05), atol=1e-5)
    small = torch.rand(1, 1, 9, 9, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: nl_means(t, 0.3, patch_radius=1, search_radius=2), (small,))


@pytest.mark.parametrize("kwargs,match", [
    (dict(sigma=-0.1), "sigma must be finite and >= 0"),
    (dict(sigma=0.1, strength=0.0), "strength must be a finite number > 0"),
    (dict(sigma=0.1, search_radius=0), "search_radius must be an integer > 0"),
    (dict(sigma=0.1, search_radius=20), "larger than 2 \\* search_radius = 40"),
])
def test_nl_means_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        nl_means(torch.rand(1, 1, 32, 32), **kwargs)
    with pytest.raises(ValueError, match="2D images"):
        nl_means(torch.rand(1, 1, 8, 32, 32), 0.1)


def test_pnp_beats_tv_on_a_textured_photo_with_the_true_kernel():
    clean, observed, kernel = _blurred()
    blurred = psnr(observed, clean)
    ours = psnr(pnp(observed, kernel).clamp(0, 1), clean)
    tv = psnr(admm_tv(observed, kernel).clamp(0, 1), clean)
    # Measured (2026-12-03, 96² coffee, 15 px spanning shake, 1 % noise): blurred 22.9, admm_tv 28.6,
    # pnp 32.8 dB (irc-net 31.3).
    assert ours > blurred + 6
    assert ours > tv + 2


def test_irc_pnp_refines_irc_net_on_texture():
    clean, observed, kernel = _blurred("brick")
    irc = psnr(torch.from_numpy(np.clip(deblur_ops.deblur(observed[0, 0].numpy(), kernel.numpy(), method="irc-net"), 0, 1)),
               clean[0, 0])
    refined = psnr(torch.from_numpy(np.clip(deblur_ops.deblur(observed[0, 0].numpy(), kernel.numpy(), method="irc-pnp"),
                                            0, 1)), clean[0, 0])
    # Measured (2026-12-03, 96² brick, 15 px spanning shake, 1 % noise): irc-net 34.5, irc-pnp 37.0 dB.
    assert refined > irc + 1.5


def test_pnp_flat_frame_units_and_batch():
    kernel = torch.ones(5, 5) / 25
    flat = torch.full((1, 1, 40, 40), 0.3)
    assert torch.allclose(pnp(flat, kernel), flat, atol=1e-6)
    clean, observed, kernel = _blurred(size=64)
    one = pnp(observed, kernel, noise_sigma=0.01)
    # The result follows the data's units (a 16-bit image read as 0..65535 restores the same).
    assert torch.allclose(pnp(observed * 65535, kernel, noise_sigma=0.01 * 65535) / 65535, one, atol=1e-4)
    both = pnp(torch.cat([observed, observed.flip(-1)]), kernel, noise_sigma=0.01)
    assert torch.allclose(both[:1], one, atol=1e-5)


def test_pnp_through_deblur_on_colour_and_bad_input():
    clean = sample_image("coffee", size=64)
    kernel = np.ones((5, 5), np.float32) / 25
    out = deblur_ops.deblur(clean, kernel, method="pnp", iterations=2)
    assert out.shape == clean.shape and np.isfinite(out).all()
    # The channels share the patch distances: three equal channels restore as the grey picture does.
    grey = clean.mean(-1)
    alike = deblur_ops.deblur(np.repeat(grey[..., None], 3, -1), kernel, method="pnp", iterations=2)
    expected = deblur_ops.deblur(grey, kernel, method="pnp", iterations=2)
    for c in range(3):
        np.testing.assert_allclose(alike[..., c], expected, atol=1e-5)
    with pytest.raises(ValueError, match="pnp restores 2D images"):
        pnp(torch.rand(1, 1, 8, 32, 32), torch.ones(3, 3, 3) / 27)
    with pytest.raises(ValueError, match="iterations must be an integer > 0"):
        pnp(torch.rand(1, 1, 32, 32), torch.ones(3, 3) / 9, iterations=0)
    with pytest.raises(ValueError, match="padding"):
        pnp(torch.rand(1, 1, 32, 32), torch.ones(3, 3) / 9, padding="zeros")
    with pytest.raises(ValueError, match="init"):
        pnp(torch.rand(1, 1, 32, 32), torch.ones(3, 3) / 9, init="zeros")
    with pytest.raises(ValueError, match="init must have the image's shape"):
        pnp(torch.rand(1, 1, 32, 32), torch.ones(3, 3) / 9, init=torch.rand(1, 1, 30, 32))


@requires_cuda
def test_pnp_cpu_cuda_parity():
    clean, observed, kernel = _blurred(size=64)
    cpu = pnp(observed.double(), kernel.double(), noise_sigma=0.01)
    gpu = pnp(observed.double().cuda(), kernel.double().cuda(), noise_sigma=0.01).cpu()
    assert torch.allclose(cpu, gpu, atol=1e-8)
