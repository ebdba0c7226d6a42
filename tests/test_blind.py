"""Blind deblurring: estimate_psf, method "blind", `deblur run --method blind`, `deblur evaluate --blind`."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import tifffile
import torch

import deblur_ops
from deblur_ops.apps.evaluate import degrade
from deblur_ops.apps.evaluate_blind import aligned_sse, evaluate_blind, shake_kernel
from deblur_ops.psf import estimate_psf, linear_motion_kernel

from .conftest import requires_cuda


def _aligned_ncc(a: torch.Tensor, b: torch.Tensor, shift: int = 3) -> float:
    """Best normalised cross-correlation of two same-size kernels over integer shifts."""
    a, b = torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)
    best = 0.0
    for dr in range(-shift, shift + 1):
        for dc in range(-shift, shift + 1):
            moved = torch.roll(a, (dr, dc), (0, 1))
            best = max(best, float((moved * b).sum() / (a.norm() * b.norm())))
    return best


def _padded(kernel: torch.Tensor, side: int) -> torch.Tensor:
    pad = (side - kernel.shape[-1]) // 2
    return torch.nn.functional.pad(kernel, (pad, pad, pad, pad))


# Cases where the estimator works today: a piecewise-constant picture with strong edges. On natural
# photos with 1 % noise its kernels are much less accurate (docs/methods.md, `deblur evaluate --blind`).
@pytest.mark.parametrize("kernel,noise", [(("line", 9, 30), 0.0), (("shake", 13, 3), 0.005), (("shake", 13, 4), 0.0)])
def test_estimate_recovers_the_kernel(kernel, noise):
    side = 15
    true = _padded(linear_motion_kernel(kernel[1], kernel[2]), side) if kernel[0] == "line" \
        else _padded(shake_kernel(kernel[1], kernel[2]), side)
    _, observed = degrade("shepp_logan_phantom", true, noise, 128, 0)
    estimate = estimate_psf(observed, side)
    assert estimate.shape == (side, side)
    assert estimate.dtype == np.float32 and (estimate >= 0).all()
    assert abs(float(estimate.sum()) - 1) < 1e-5
    assert _aligned_ncc(torch.from_numpy(estimate), true) >= 0.8


def test_adaptive_support_finds_a_small_blur_in_a_large_support():
    """A generous ``size`` is safe: on a training photo ("horse", never an evaluation image) with
    a compact shake kernel, the single large support spreads the estimate over itself while the
    adaptive search keeps a support near the blur's extent."""
    true = _padded(shake_kernel(9, 2), 25)
    _, observed = degrade("horse", true, 0.01, 128, 0)
    adaptive = estimate_psf(observed, 25)
    fixed = estimate_psf(observed, 25, adaptive_support=False)
    assert adaptive.shape == fixed.shape == (25, 25)
    assert _aligned_ncc(torch.from_numpy(adaptive), true) >= 0.8
    assert _aligned_ncc(torch.from_numpy(adaptive), true) > _aligned_ncc(torch.from_numpy(fixed), true)
    # Zero outside the support it kept (at most 19 px here, the ladder's step below 25).
    rows, cols = np.nonzero(adaptive)
    assert max(np.ptp(rows), np.ptp(cols)) < 19


@pytest.mark.parametrize("image,seed", [("horse", 2), ("clock", 4)])
def test_kernel_sparsity_prior_concentrates_a_compact_blur(image, seed):
    """On one large support (no adaptive search) a compact shake kernel estimated from a training
    photo spreads over the support; the sparsity prior sum |k|^0.5 (at its default weight, weakened
    on this 25 px support) keeps it concentrated and closer to the true one (measured: 39 and 18
    taps against 222 and 161, correlation 0.65 / 0.37 against 0.47 / 0.08)."""
    true = _padded(shake_kernel(9, seed), 25)
    _, observed = degrade(image, true, 0.01, 128, 0)
    sparse = estimate_psf(observed, 25, adaptive_support=False)
    dense = estimate_psf(observed, 25, adaptive_support=False, sparsity=0)
    assert (sparse > 0).sum() * 3 < (dense > 0).sum()
    assert _aligned_ncc(torch.from_numpy(sparse), true) > _aligned_ncc(torch.from_numpy(dense), true) + 0.1


@pytest.mark.parametrize("sparsity", [-0.1, float("nan"), "much", True])
def test_estimate_checks_sparsity(sparsity):
    with pytest.raises(ValueError, match="sparsity must be a finite number >= 0"):
        estimate_psf(np.random.rand(48, 48).astype(np.float32), 5, sparsity=sparsity)


def test_estimate_is_shift_invariant_up_to_centring():
    true = _padded(shake_kernel(11, 5), 13)
    _, observed = degrade("shepp_logan_phantom", true, 0.005, 140, 1)
    a = estimate_psf(observed[:128, :128], 13)
    b = estimate_psf(observed[3:131, 2:130], 13)  # the same scene moved by (3, 2) px (and 3 px of new border)
    assert _aligned_ncc(torch.from_numpy(a), torch.from_numpy(b)) >= 0.8
    # Centred: the centre of mass within half a pixel of the middle wherever the support allows.
    for k in (a, b):
        idx = np.arange(13)
        assert abs(float((k.sum(1) * idx).sum()) - 6) <= 0.5 and abs(float((k.sum(0) * idx).sum()) - 6) <= 0.5


@pytest.mark.parametrize("image,noise", [("shepp_logan_phantom", 0.005), ("brick", 0.01)])
def test_a_rotated_or_flipped_picture_gets_the_rotated_or_flipped_kernel(image, noise):
    """The estimate does not depend on the picture's orientation: the start kernel is symmetric,
    the L0 prior thresholds each difference alone, and the salient edges are picked by centred
    gradients in orientation bins told apart by comparisons. (With Pan et al.'s two-tap start and
    paired forward differences, the transposed picture of the first case got a kernel correlating
    0.90 with the original's.) Measured: within 1e-6 and 0.006. Rounding can still tip a near-tie
    between two supports: coffee under the same blur chose 15 px as it is and 11 px in every other
    orientation (kernels 0.07 apart), so this is not a bound for every picture."""
    true = _padded(shake_kernel(13, 3), 15)
    _, observed = degrade(image, true, noise, 128, 0)
    base = estimate_psf(observed, 15)
    moves = [(np.transpose, np.transpose), (lambda a: np.rot90(a, 1), lambda k: np.rot90(k, -1)),
             (lambda a: np.rot90(a, 2), lambda k: np.rot90(k, 2)), (np.fliplr, np.fliplr), (np.flipud, np.flipud)]
    for forward, back in moves:
        moved = np.ascontiguousarray(forward(observed) if observed.ndim == 2 else np.stack(
            [forward(observed[..., c]) for c in range(observed.shape[-1])], -1))
        kernel = back(estimate_psf(moved, 15))
        assert np.abs(kernel - base).max() < 0.01


def test_estimate_types_devices_and_colour():
    true = _padded(linear_motion_kernel(7, 0), 11)
    _, observed = degrade("shepp_logan_phantom", true, 0.005, 96, 2)
    as_tensor = estimate_psf(torch.from_numpy(observed), 11)
    assert isinstance(as_tensor, torch.Tensor) and as_tensor.shape == (11, 11)
    colour = estimate_psf(np.stack([observed] * 3, -1), 11)
    assert np.allclose(colour, as_tensor.numpy(), atol=1e-5)
    kernel, latent = estimate_psf(observed, 11, return_latent=True)
    assert latent.shape == observed.shape


def test_large_images_are_estimated_on_their_richest_window():
    """On an image larger than ``window`` the kernel comes from the window richest in edges of every
    orientation: the same kernel as estimating on that crop, and still the right one."""
    from deblur_ops.psf.estimate import _best_window

    true = _padded(shake_kernel(11, 5), 13)
    _, observed = degrade("shepp_logan_phantom", true, 0.005, 128, 1)
    rng = np.random.default_rng(0)
    canvas = (0.3 + 0.005 * rng.standard_normal((200, 260))).astype(np.float32)  # flat, noisy surroundings
    canvas[40:168, 110:238] = observed
    top, left, h, w = _best_window(torch.from_numpy(canvas).double(), 128, 13)
    assert (h, w) == (128, 128) and abs(top - 40) <= 16 and abs(left - 110) <= 16
    windowed, latent = estimate_psf(canvas, 13, window=128, return_latent=True)
    assert latent.shape == (128, 128)
    # the same up to the [0, 1] scaling, which comes from the whole frame's percentiles
    crop = estimate_psf(canvas[top:top + h, left:left + w], 13, window=None)
    np.testing.assert_allclose(windowed, crop, atol=5e-3)  # measured: 3e-3
    assert _aligned_ncc(torch.from_numpy(windowed), true) >= 0.8
    # a window under three times the size is widened; a tiny or non-integer one is refused
    assert estimate_psf(canvas, 13, window=20, adaptive_support=False).shape == (13, 13)
    for bad in (8, 100.5, True):
        with pytest.raises(ValueError, match="window must be None .* or an integer >= 16"):
            estimate_psf(canvas, 13, window=bad)


def test_estimate_reports_each_pyramid_level_and_stops_when_the_callback_raises():
    from deblur_ops.psf.estimate import estimate_steps

    true = _padded(linear_motion_kernel(7, 0), 11)
    _, observed = degrade("shepp_logan_phantom", true, 0.005, 96, 2)
    calls = []
    kernel = estimate_psf(observed, 11, callback=lambda done, total: calls.append((done, total)))
    total = estimate_steps(observed.shape, 11)
    assert calls == [(i, total) for i in range(1, total + 1)]
    np.testing.assert_array_equal(kernel, estimate_psf(observed, 11))  # reporting changes nothing

    class Stop(Exception):
        pass

    def stop_at_3(done, _total):
        calls.append(done)
        if done == 3:
            raise Stop

    calls.clear()
    with pytest.raises(Stop):
        estimate_psf(observed, 11, callback=stop_at_3)
    assert calls == [1, 2, 3]
    with pytest.raises(TypeError, match="callback must be a function callback.done, total., got int"):
        estimate_psf(observed, 11, callback=3)


@pytest.mark.parametrize("image,size,message", [
    (np.full((64, 64), 0.3, np.float32), 11, "constant"),
    (np.random.rand(12, 40).astype(np.float32), 3, "at least 16x16"),
    (np.random.rand(48, 64).astype(np.float32), 17, "too large"),
    (np.random.rand(64, 64).astype(np.float32), 10, "odd integer"),
    (np.random.rand(64, 64).astype(np.float32), 0, "odd integer"),
    (np.random.rand(4, 32, 32).astype(np.float32)[..., :5], 5, "shape"),
])
def test_estimate_bad_input_says_what_to_do(image, size, message):
    with pytest.raises(ValueError, match=message):
        estimate_psf(image, size)


def test_estimate_refuses_nan():
    image = np.random.rand(32, 32).astype(np.float32)
    image[3, 3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        estimate_psf(image, 5)


# "astronaut" is a held-out evaluation image: never used to train or tune anything. A moderate linear
# motion: measured 22.74 dB blurred, "blind" 24.66 dB (+1.3 with admm_tv), "blind-irc" 24.47 dB (the
# end-to-end network it replaced did not deblur).
@pytest.mark.parametrize("method,margin", [("blind", 0.5), ("blind-irc", 1.0)])
def test_blind_methods_are_listed_and_beat_the_blurred_input_on_an_unseen_photo(method, margin):
    assert method in deblur_ops.methods()
    true = _padded(linear_motion_kernel(11, 30), 13)
    clean, observed = degrade("astronaut", true, 0.01, 160, 0)
    restored = deblur_ops.deblur(observed, method=method, psf_size=13)
    inner = (slice(13, -13),) * 2
    psnr = lambda x: 10 * np.log10(1 / np.mean((np.clip(x, 0, 1)[inner] - clean[inner]) ** 2))  # noqa: E731
    assert psnr(restored) > psnr(observed) + margin


def test_blind_method_checks_its_arguments():
    with pytest.raises(ValueError, match="estimates the blur itself"):
        deblur_ops.models.methods.blind(torch.rand(1, 1, 32, 32), np.ones((3, 3)))
    with pytest.raises(ValueError, match="takes a PSF"):
        deblur_ops.deblur(np.random.rand(48, 48).astype(np.float32), method="blind", psf_size=5,
                          nonblind="autoencoder")
    with pytest.raises(ValueError, match="noise_sigma is passed to nonblind 'tv-irc', 'irc-net', 'admm_tv', 'nu_cg' only"):
        deblur_ops.deblur(np.random.rand(48, 48).astype(np.float32), method="blind", psf_size=5,
                          nonblind="richardson_lucy", noise_sigma=0.01)
    flat = np.full((48, 48), 0.5, np.float32)
    assert np.allclose(deblur_ops.deblur(flat, method="blind", psf_size=5), flat)


def _deblur(*args, cwd):
    return subprocess.run([sys.executable, "-m", "deblur_ops", *args], cwd=cwd, capture_output=True, text=True)


def test_deblur_run_blind_writes_the_kernel_beside_the_output(tmp_path):
    true = _padded(linear_motion_kernel(9, 30), 13)
    _, observed = degrade("text", true, 0.005, 96, 0)
    tifffile.imwrite(tmp_path / "shaky.tif", (np.clip(observed, 0, 1) * 65535).astype(np.uint16))
    done = _deblur("run", "shaky.tif", "sharp.tif", "--method", "blind", "--param", "psf_size=13", "--quiet",
                   cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["psf_estimated"] == "sharp_psf.tif" and summary["psf_size"] == 13
    assert summary["method"] == "blind (estimated PSF, then tv-irc)"  # the in-memory method's default
    kernel = tifffile.imread(tmp_path / "sharp_psf.tif")
    assert kernel.shape == (13, 13) and abs(kernel.sum() - 1) < 1e-5
    written = tifffile.imread(tmp_path / "sharp.tif")
    assert written.dtype == np.uint16
    # The same restoration as method "blind" of the picture in [0, 1]: the 16-bit units do not change it.
    picture = tifffile.imread(tmp_path / "shaky.tif").astype(np.float32) / 65535
    in_memory = np.clip(deblur_ops.deblur(picture, method="blind", psf_size=13), 0, 1)
    assert np.abs(written / 65535 - in_memory).max() < 3e-3
    # A rerun replaces its own outputs; a foreign file in the kernel's place is kept.
    assert _deblur("run", "shaky.tif", "sharp.tif", "--method", "blind", "--param", "psf_size=13", "--quiet",
                   cwd=tmp_path).returncode == 0
    tifffile.imwrite(tmp_path / "other_psf.tif", np.ones((3, 3), np.float32))
    refused = _deblur("run", "shaky.tif", "other.tif", "--method", "blind", "--quiet", cwd=tmp_path)
    assert refused.returncode != 0 and "other_psf.tif" in refused.stderr
    assert not (tmp_path / "other.tif").exists()


def test_kernel_sparsity_reaches_method_blind_and_deblur_run(tmp_path):
    """``sparsity`` is passed through: method "blind" restores with estimate_psf(..., sparsity) and
    ``deblur run --param sparsity=0`` writes that estimator's kernel."""
    from deblur_ops.models.methods import blind_scale

    true = _padded(linear_motion_kernel(9, 30), 13)
    _, observed = degrade("text", true, 0.005, 96, 0)
    observed = observed.astype(np.float32)
    plain = estimate_psf(observed, 13, sparsity=0)
    assert not np.allclose(plain, estimate_psf(observed, 13))  # the prior changes this estimate
    scale = blind_scale(observed)
    expected = deblur_ops.deblur(observed / scale, plain, method="tv-irc") * scale
    restored = deblur_ops.deblur(observed, method="blind", psf_size=13, sparsity=0)
    assert np.abs(restored - expected).max() < 1e-5
    tifffile.imwrite(tmp_path / "shaky.tif", observed)
    done = _deblur("run", "shaky.tif", "sharp.tif", "--method", "blind", "--param", "psf_size=13", "--param",
                   "sparsity=0", "--quiet", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert np.abs(tifffile.imread(tmp_path / "sharp_psf.tif") - plain).max() < 1e-6
    refused = _deblur("run", "shaky.tif", "bad.tif", "--method", "blind", "--param", "sparsity=-1", "--quiet",
                      cwd=tmp_path)
    assert refused.returncode != 0 and "sparsity must be a finite number >= 0" in refused.stderr
    assert not (tmp_path / "bad.tif").exists()


def test_region_estimates_the_kernel_from_part_of_the_picture(tmp_path):
    """``region`` (method "blind", ``deblur run --param region=``): the kernel comes from that part
    only and restores the whole picture; the summary says which part; bad regions are refused
    with what to do, and nothing is written."""
    from deblur_ops.models.methods import blind_region, blind_scale

    true = _padded(linear_motion_kernel(9, 30), 13)
    _, observed = degrade("text", true, 0.005, 96, 0)
    observed = observed.astype(np.float32)
    part = estimate_psf(observed[10:90, 4:60], 13)
    assert not np.allclose(part, estimate_psf(observed, 13))  # another part, another estimate
    scale = blind_scale(observed)
    expected = deblur_ops.deblur(observed / scale, part, method="tv-irc") * scale
    restored = deblur_ops.deblur(observed, method="blind", psf_size=13, region="10:90,4:60")
    assert restored.shape == observed.shape and np.abs(restored - expected).max() < 1e-5
    assert blind_region(((10, 90), (4, 60)), (96, 96), 13) == (slice(10, 90), slice(4, 60))
    assert blind_region(":,:", (96, 96), 13) == (slice(0, 96), slice(0, 96))

    tifffile.imwrite(tmp_path / "shaky.tif", observed)
    done = _deblur("run", "shaky.tif", "sharp.tif", "--method", "blind", "--param", "psf_size=13", "--param",
                   "region=10:90,4:60", "--quiet", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1])["psf_region"] == [[10, 90], [4, 60]]
    assert np.abs(tifffile.imread(tmp_path / "sharp_psf.tif") - part).max() < 1e-6
    for region, message in (("10:40,4:60", "is 30 x 56 px: a 13 px kernel needs at least 39 px along each side"),
                            ("0:120,0:60", "must lie inside the 96 x 96 image"),
                            ("60:10,0:60", "each start before its end"),
                            ("rows 10 to 90", "region must be 'top:bottom,left:right'")):
        refused = _deblur("run", "shaky.tif", "bad.tif", "--method", "blind", "--param", "psf_size=13", "--param",
                          f"region={region}", "--quiet", cwd=tmp_path)
        assert refused.returncode != 0 and message in refused.stderr, refused.stderr
        assert not (tmp_path / "bad.tif").exists() and not (tmp_path / "bad_psf.tif").exists()
    refused = _deblur("run", "shaky.tif", "bad.tif", "--method", "blind-irc", "--param", "region=10:90,4:60",
                      "--quiet", cwd=tmp_path)
    assert refused.returncode != 0 and "region is a parameter of method 'blind'" in refused.stderr
    assert not (tmp_path / "bad.tif").exists()
    with pytest.raises(ValueError, match="region and psf_grid exclude each other"):
        deblur_ops.deblur(observed, method="blind", psf_size=13, region="10:90,4:60", psf_grid="2x2")


def test_deblur_run_blind_with_nan_pixels(tmp_path):
    true = _padded(linear_motion_kernel(9, 30), 13)
    _, observed = degrade("shepp_logan_phantom", true, 0.005, 96, 0)
    observed[10, 20] = np.nan
    tifffile.imwrite(tmp_path / "dead.tif", observed.astype(np.float32))
    refused = _deblur("run", "dead.tif", "out.tif", "--method", "blind", "--param", "psf_size=13", cwd=tmp_path)
    assert refused.returncode != 0 and "1 NaN" in refused.stderr and "--nan" in refused.stderr
    masked = _deblur("run", "dead.tif", "out.tif", "--method", "blind", "--param", "psf_size=13", "--nan", "mask",
                     "--quiet", cwd=tmp_path)
    assert masked.returncode == 0, masked.stderr
    out = tifffile.imread(tmp_path / "out.tif")
    assert np.isnan(out[10, 20]) and np.isfinite(np.delete(out.ravel(), 10 * 96 + 20)).all()
    # The kernel estimated over the filled pixel is the kernel of the clean observation, up to noise.
    filled = observed.copy()
    filled[10, 20] = np.median(np.delete(observed.ravel(), 10 * 96 + 20))
    kernel = tifffile.imread(tmp_path / "out_psf.tif")
    assert _aligned_ncc(torch.from_numpy(kernel), torch.from_numpy(estimate_psf(filled, 13))) > 0.99


def test_deblur_run_blind_refuses_psf_options_and_stacks(tmp_path):
    tifffile.imwrite(tmp_path / "stack.tif", np.random.rand(3, 48, 48).astype(np.float32))
    with_psf = _deblur("run", "stack.tif", "out.tif", "--method", "blind", "--psf-model", "gaussian", "--sigma", "2",
                       cwd=tmp_path)
    assert with_psf.returncode != 0 and "is blind" in with_psf.stderr
    stack = _deblur("run", "stack.tif", "out.tif", "--method", "blind", cwd=tmp_path)
    assert stack.returncode != 0 and "2D (or colour) image" in stack.stderr
    no_psf = _deblur("run", "stack.tif", "out.tif", "--method", "wiener", cwd=tmp_path)
    assert no_psf.returncode != 0 and "--psf" in no_psf.stderr
    assert not (tmp_path / "out.tif").exists()


def test_shake_kernel_and_aligned_sse():
    for side in (11, 35):
        k = shake_kernel(side, 7)
        assert k.shape == (side, side) and abs(float(k.sum()) - 1) < 1e-6 and (k >= 0).all()
        assert torch.equal(k, shake_kernel(side, 7))
    with pytest.raises(ValueError, match="odd"):
        shake_kernel(12, 0)
    # span: the same trajectory scaled to reach side // 2 - 1 px from its mean, so it spans the support.
    for seed in range(5):
        compact, spanning = shake_kernel(35, seed), shake_kernel(35, seed, span=True)
        extent = lambda k: max(np.ptp(np.nonzero(k.numpy())[0]), np.ptp(np.nonzero(k.numpy())[1]))  # noqa: E731
        assert 17 <= extent(spanning) <= 34 and extent(compact) <= extent(spanning)
        assert abs(float(spanning.sum()) - 1) < 1e-6
    a = np.random.default_rng(0).random((30, 30))
    assert aligned_sse(np.roll(a, (1, -2), (0, 1)), a, 5) == 0.0


def test_evaluate_blind_report():
    report = evaluate_blind(["blind", "blind:nonblind=irc-net", "madn"], ["camera"], [11], size=64, span=True)
    assert report["protocol"]["name"] == "blind_span" and report["protocol"]["span"] is True
    methods = [s["method"] for s in report["summary"]]
    assert methods == ["blurred", "irc-net (true kernel)", "blind", "blind:nonblind=irc-net", "madn"]
    truth = next(s for s in report["summary"] if s["method"] == "irc-net (true kernel)")
    assert truth["median_ratio"] == 1.0
    for s in report["summary"][2:]:
        assert s["median_ratio"] > 0 and np.isfinite(s["psnr"])
    with pytest.raises(ValueError, match="not a blind method"):
        evaluate_blind(["wiener"], ["camera"], [11], size=64)
    done = _deblur("evaluate", "--span-kernels", "--methods", "blind", cwd=".")
    assert done.returncode != 0 and "add --blind" in done.stderr


def test_estimate_checks_adaptive_support():
    with pytest.raises(ValueError, match="adaptive_support must be True or False"):
        estimate_psf(np.random.rand(48, 48).astype(np.float32), 5, adaptive_support="yes")


def test_blind_restores_with_tv_irc_by_default():
    true = _padded(linear_motion_kernel(7, 45), 9)
    _, observed = degrade("horse", true, 0.01, 64, 3)  # a training image
    kernel = estimate_psf(observed, 9)
    lo, hi = np.quantile(observed.astype(np.float64), [0.001, 0.999])  # restored on the picture's range
    scale = np.float32(hi - lo)
    assert np.allclose(deblur_ops.deblur(observed, method="blind", psf_size=9),
                       deblur_ops.deblur(observed / scale, kernel, method="tv-irc") * scale, atol=1e-5)
    assert np.allclose(deblur_ops.deblur(observed, method="blind", psf_size=9, nonblind="admm_tv"),
                       deblur_ops.deblur(observed / scale, kernel, method="admm_tv", isotropic=True) * scale, atol=1e-5)
    assert np.allclose(deblur_ops.deblur(observed, method="blind", psf_size=9, nonblind="irc-net"),
                       deblur_ops.deblur(observed / scale, kernel, method="irc-net") * scale, atol=1e-5)


def test_normalised_sparsity():
    from deblur_ops.psf import normalised_sparsity

    step = np.zeros((32, 32))
    step[:, 16:] = 1
    assert normalised_sparsity(step, 2) == pytest.approx(28 ** 0.5)  # 28 unit gradients: l1 / l2 = 28 / sqrt(28)
    assert normalised_sparsity(step * 7 + 3, 2) == pytest.approx(normalised_sparsity(step, 2))
    assert normalised_sparsity(np.ones((8, 8))) == float("inf")
    with pytest.raises(ValueError, match="2D"):
        normalised_sparsity(np.ones((2, 8, 8)))
    with pytest.raises(ValueError, match="no interior"):
        normalised_sparsity(np.ones((8, 8)), 4)


def test_blind_does_not_depend_on_the_units():
    """A 16-bit file read as 0..65535 gets the restoration of the same picture in [0, 1] (the default
    TV weight follows the data's units, so method "blind" restores on the picture's range)."""
    true = _padded(linear_motion_kernel(7, 45), 9)
    _, observed = degrade("horse", true, 0.01, 64, 3)  # a training image
    unit = deblur_ops.deblur(observed, method="blind", psf_size=9)
    counts = deblur_ops.deblur(observed * 65535, method="blind", psf_size=9) / 65535
    assert np.abs(unit - counts).max() < 2e-3 and np.abs(unit - counts).mean() < 2e-4
    noise = deblur_ops.deblur(observed * 65535, method="blind", psf_size=9, noise_sigma=0.01 * 65535) / 65535
    assert np.abs(noise - deblur_ops.deblur(observed, method="blind", psf_size=9, noise_sigma=0.01)).max() < 2e-3


def test_shake_kernel_fits_its_support_for_every_seed():
    """A lopsided path, rasterised about its centre of mass, used to leave the support (side 23,
    seed 536 raised); it is shrunk to fit now."""
    for side in (11, 23, 35):
        for seed in range(0, 600, 7):
            kernel = shake_kernel(side, seed)
            assert kernel.shape == (side, side) and abs(float(kernel.sum()) - 1) < 1e-5
    assert shake_kernel(23, 536).shape == (23, 23)


def test_tv_irc_is_the_mean_of_tv_and_irc_net_at_three_times_the_noise():
    from deblur_ops.data.noise import noise_sigma_per_item

    true = _padded(linear_motion_kernel(7, 30), 9)
    _, observed = degrade("horse", true, 0.01, 64, 5)  # a training image
    observed = observed.astype(np.float32)
    kernel = true.numpy()
    mean = deblur_ops.deblur(observed, kernel, method="tv-irc", noise_sigma=0.02)
    tv = deblur_ops.deblur(observed, kernel, method="admm_tv", isotropic=True, noise_sigma=0.02)
    irc = deblur_ops.deblur(observed, kernel, method="irc-net", noise_sigma=0.06)
    assert np.abs(mean - 0.5 * (tv + irc)).max() < 1e-5
    sigma = float(noise_sigma_per_item(torch.from_numpy(observed)[None, None], None)[0])
    estimated = deblur_ops.deblur(observed, kernel, method="tv-irc")
    assert np.abs(estimated - deblur_ops.deblur(observed, kernel, method="tv-irc", noise_sigma=sigma)).max() < 1e-5
    with pytest.raises(ValueError, match="2D images"):
        deblur_ops.deblur(np.random.rand(8, 32, 32).astype(np.float32), np.ones((3, 3, 3)) / 27, method="tv-irc")
    # refine=True: plug-and-play steps started from that mean, at twice the noise level.
    from deblur_ops.restore import pnp

    refined = deblur_ops.deblur(observed, kernel, method="tv-irc", noise_sigma=0.02, refine=True)
    batch = torch.from_numpy(observed)[None, None]
    manual = pnp(batch, true, noise_sigma=0.04, init=torch.from_numpy(mean)[None, None], start_sigma=0.04,
                 data_weight=0.3, iterations=6)[0, 0].numpy()
    assert np.abs(refined - manual).max() < 1e-5 and np.abs(refined - mean).max() > 1e-3
    with pytest.raises(ValueError, match="refine must be True or False"):
        deblur_ops.deblur(observed, kernel, method="tv-irc", refine="yes")


def test_kernel_rms_radius_and_the_near_sharp_caution():
    from deblur_ops.psf.estimate import NEAR_SHARP_RADIUS, kernel_rms_radius, near_sharp_warning

    delta = np.zeros((5, 5), np.float32)
    delta[2, 2] = 1
    assert kernel_rms_radius(delta) == 0 and near_sharp_warning(delta) is None
    line = linear_motion_kernel(9, 0).numpy()  # 9 taps along a row: sqrt((9^2 - 1) / 12) px
    assert kernel_rms_radius(line) == pytest.approx(np.sqrt(80 / 12), rel=0.05)
    assert near_sharp_warning(line) is None
    blob = np.zeros((7, 7))
    blob[2:5, 2:5] = 1  # a 3 x 3 box: radius sqrt(4/3) px, inside the range
    assert NEAR_SHARP_RADIUS[0] < kernel_rms_radius(blob) < NEAR_SHARP_RADIUS[1]
    assert "may be nearly sharp" in near_sharp_warning(torch.from_numpy(blob))
    with pytest.raises(ValueError, match="positive, finite sum"):
        kernel_rms_radius(np.zeros((3, 3)))
    with pytest.raises(ValueError, match="must be 2D"):
        kernel_rms_radius(np.ones(3))


def test_a_sharp_photo_is_flagged_by_blind_and_deblur_run(tmp_path):
    """An unblurred photo (1 % noise): its estimated kernel is the picture's own edge softness
    (RMS radius about 1.35 px), and blind deblurring of such pictures tends to over-sharpen them, so
    method blind warns and deblur run's summary carries the caution; a real 9 px shake does not."""
    from deblur_ops.psf.estimate import kernel_rms_radius

    delta = torch.zeros(3, 3)
    delta[1, 1] = 1
    _, sharp = degrade("immunohistochemistry", delta, 0.01, 96, 0)
    sharp = sharp.astype(np.float32)
    assert 0.5 < kernel_rms_radius(estimate_psf(sharp, 15)) < 1.5
    with pytest.warns(UserWarning, match="may be nearly sharp"):
        deblur_ops.deblur(sharp, method="blind", psf_size=15)
    tifffile.imwrite(tmp_path / "sharp.tif", sharp)
    done = _deblur("run", "sharp.tif", "out.tif", "--method", "blind", "--param", "psf_size=15", "--quiet", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert 0.5 < summary["kernel_rms_radius"] < 1.5 and "may be nearly sharp" in summary["caution"]
    assert "deblur run: the estimated blur is small" in done.stderr

    true = _padded(linear_motion_kernel(9, 30), 13)
    _, shaky = degrade("text", true, 0.005, 96, 0)
    tifffile.imwrite(tmp_path / "shaky.tif", shaky.astype(np.float32))
    done = _deblur("run", "shaky.tif", "out2.tif", "--method", "blind", "--param", "psf_size=13", "--quiet",
                   cwd=tmp_path)
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["kernel_rms_radius"] > 1.5 and "caution" not in summary and "nearly sharp" not in done.stderr


@pytest.mark.parametrize("width", [1, 3, 7, 35])
@pytest.mark.parametrize("dim", [0, 1])
def test_running_min_matches_a_window_by_window_minimum(width, dim):
    """The three-pass running minimum (van Herk / Gil-Werman) against the direct one, wrapping
    around, on lengths that are and are not multiples of the window."""
    from deblur_ops.psf.estimate import _running_min

    x = torch.rand(37, 50, dtype=torch.float64)
    half = width // 2
    n = x.shape[dim]
    direct = torch.stack([x.index_select(dim, torch.arange(i - half, i + half + 1) % n).amin(dim) for i in range(n)], dim)
    assert torch.equal(_running_min(x, width, dim), direct)


def test_dark_target_zeroes_only_dark_pixels_under_the_threshold():
    """The dark channel's L0 step: a pixel that is the minimum of some window and whose square is
    under the threshold goes to 0; every other pixel keeps its value."""
    from deblur_ops.psf.estimate import _dark_target

    x = torch.full((20, 20), 0.8, dtype=torch.float64)
    x[5, 5] = 0.1    # the minimum of its windows, dark: set to 0
    x[14, 14] = 0.5  # the minimum of the windows that miss (5, 5), too bright: kept
    expected = x.clone()
    expected[5, 5] = 0
    assert torch.equal(_dark_target(x, 5, threshold=0.1), expected)
    # A dark pixel that is no window's minimum (every window holding it holds a darker one) is kept.
    y = torch.full((20, 20), 0.05, dtype=torch.float64)
    y[10, 10] = 0.2
    expected = torch.zeros_like(y)
    expected[10, 10] = 0.2
    assert torch.equal(_dark_target(y, 5, threshold=0.1), expected)


def test_otsu_splits_two_classes():
    from deblur_ops.psf.estimate import _otsu

    values = torch.cat([torch.full((500,), 0.1), torch.full((500,), 0.7)])
    threshold = _otsu(values)
    assert 0.1 <= threshold < 0.7


@pytest.mark.parametrize("dark", [-1.0, float("inf"), "yes", True])
def test_estimate_checks_dark_channel(dark):
    with pytest.raises(ValueError, match="dark_channel must be a finite number >= 0"):
        estimate_psf(np.random.rand(48, 48).astype(np.float32), 5, dark_channel=dark)


def test_the_dark_channel_prior_estimates_and_reaches_method_blind_and_deblur_run(tmp_path):
    """``dark_channel`` (off by default) adds an L0 prior on the latent's dark channel; the estimate
    with it still finds the blur of a picture with large dark regions, and it is passed through by
    method "blind" and ``deblur run --param dark_channel=...``. (It was added for this picture with
    a 9 px line at 30 degrees, where the gradient prior alone reached 0.64 and the prior 0.95; since
    the estimator's steps are symmetric in the picture's axes the gradient prior alone finds that
    one (1.0) and the prior brings it to 0.71, so a 7 px line at 45 degrees is used: 0.995 with and
    without it.)"""
    from deblur_ops.models.methods import blind_scale

    true = _padded(linear_motion_kernel(7, 45), 13)
    _, observed = degrade("horse", true, 0.005, 96, 0)  # a dark silhouette on white: a training image
    observed = observed.astype(np.float32)
    dark = estimate_psf(observed, 13, dark_channel=1.0)
    assert _aligned_ncc(torch.from_numpy(dark), true) >= 0.9
    assert np.abs(dark - estimate_psf(observed, 13)).max() > 1e-6  # the prior is applied
    scale = blind_scale(observed)
    expected = deblur_ops.deblur(observed / scale, dark, method="tv-irc") * scale
    assert np.abs(deblur_ops.deblur(observed, method="blind", psf_size=13, dark_channel=1.0) - expected).max() < 1e-5
    tifffile.imwrite(tmp_path / "shaky.tif", observed)
    refused = _deblur("run", "shaky.tif", "bad.tif", "--method", "blind", "--param", "dark_channel=-1", "--quiet",
                      cwd=tmp_path)
    assert refused.returncode != 0 and "dark_channel must be a finite number >= 0" in refused.stderr
    assert not (tmp_path / "bad.tif").exists()


@requires_cuda
def test_estimate_and_method_blind_on_cuda_agree_with_the_cpu():
    """The estimator runs on the GPU (every step is torch; only the kernel's fragment labelling goes
    through the CPU) and finds the CPU's kernel: the same alternation, rounded in another order (a
    1e-6 relative perturbation of this picture moved the CPU estimate by under 0.001 in correlation)."""
    true = _padded(shake_kernel(13, 3), 15)
    _, observed = degrade("shepp_logan_phantom", true, 0.005, 128, 0)
    picture = torch.from_numpy(observed)
    cpu = estimate_psf(picture, 15)
    gpu = estimate_psf(picture.cuda(), 15)
    assert gpu.device.type == "cuda" and gpu.dtype == torch.float32 and gpu.shape == (15, 15)
    assert bool((gpu >= 0).all()) and abs(float(gpu.sum()) - 1) < 1e-5
    assert _aligned_ncc(gpu.cpu(), cpu) >= 0.98 and _aligned_ncc(gpu.cpu(), true) >= 0.8
    as_array = estimate_psf(observed, 15, device="cuda")  # NumPy in, estimated on the GPU, NumPy out
    assert isinstance(as_array, np.ndarray) and _aligned_ncc(torch.from_numpy(as_array), cpu) >= 0.98
    # The dark-channel prior's running minimum and Otsu histogram on the GPU.
    dark = estimate_psf(picture.cuda(), 15, dark_channel=1.0)
    assert _aligned_ncc(dark.cpu(), estimate_psf(picture, 15, dark_channel=1.0)) >= 0.95
    restored = deblur_ops.deblur(picture.cuda(), method="blind", psf_size=15)
    assert restored.device.type == "cuda" and restored.shape == picture.shape
    assert bool(torch.isfinite(restored).all())
    on_cpu = deblur_ops.deblur(picture, method="blind", psf_size=15)
    assert float((restored.cpu() - on_cpu).abs().mean()) < 0.01
