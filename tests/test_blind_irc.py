"""Method "blind-irc" (paper 004's networks in a pipeline that deblurs): Motion-Net's blur length sets
the kernel's support, the L0 MAP estimator fits the kernel, IRC-Net restores; ``deblur run`` writes
the kernel and what Motion-Net saw. Its gain on an unseen photo is tested with method "blind"'s in
test_blind.py."""
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
from deblur_ops.models.methods import MOTION_SUPPORT, TV_IRC_NOISE_FACTOR, blind_scale, estimate_motion
from deblur_ops.psf import estimate_psf, linear_motion_kernel


def _padded(kernel: torch.Tensor, side: int) -> torch.Tensor:
    pad = (side - kernel.shape[-1]) // 2
    return torch.nn.functional.pad(kernel, (pad, pad, pad, pad))


def _observed(image="horse", length=9, angle=30, side=13, size=96, seed=0):
    _, observed = degrade(image, _padded(linear_motion_kernel(length, angle), side), 0.01, size, seed)
    return observed.astype(np.float32)


def test_motion_net_sets_the_support_and_the_data_fit_the_kernel():
    observed = _observed()
    kernel, info = deblur_ops.estimate_psf_motion_net(observed, 31)
    field = estimate_motion(observed)
    length = float(field.length.median())
    assert info["motion_length"] == pytest.approx(length)
    expected = min(31, max(5, int(round(MOTION_SUPPORT[0] * length + MOTION_SUPPORT[1])) | 1))
    assert info["support"] == expected and kernel.shape == (expected, expected)
    assert 0 <= info["motion_angle"] < 180
    np.testing.assert_array_equal(kernel, estimate_psf(observed, expected, source="edges"))
    small, info = deblur_ops.estimate_psf_motion_net(observed, 5)  # psf_size bounds the support
    assert info["support"] == 5 and small.shape == (5, 5)
    with pytest.raises(ValueError, match="psf_size must be an odd integer"):
        deblur_ops.estimate_psf_motion_net(observed, 8)
    with pytest.raises(ValueError, match="psf_size 33 is too large for a 96x96 image"):
        deblur_ops.estimate_psf_motion_net(observed, 33)


def test_blind_irc_restores_with_irc_net_at_three_times_the_noise():
    observed = _observed(seed=1)
    kernel, _ = deblur_ops.estimate_psf_motion_net(observed, 13)
    scale = np.float32(blind_scale(observed))
    restored = deblur_ops.deblur(observed, method="blind-irc", psf_size=13, noise_sigma=0.01)
    expected = deblur_ops.deblur(observed / scale, kernel, method="irc-net",
                                 noise_sigma=TV_IRC_NOISE_FACTOR * 0.01 / scale) * scale
    assert np.abs(restored - expected).max() < 1e-5
    flat = np.full((48, 48), 0.25, np.float32)
    assert np.array_equal(deblur_ops.deblur(flat, method="blind-irc"), flat)
    with pytest.raises(ValueError, match="pass psf=None"):
        deblur_ops.deblur(observed, np.ones((3, 3), np.float32) / 9, method="blind-irc")


def test_end_to_end_network_is_kept():
    from deblur_ops.models.pretrained import load_pretrained

    observed = _observed(size=48)
    with torch.no_grad():
        expected = load_pretrained("blind-irc")(torch.from_numpy(observed)[None, None], noise_sigma=0.01)[0, 0]
    restored = deblur_ops.deblur(observed, method="blind-irc", end_to_end="blind-irc", noise_sigma=0.01)
    assert np.abs(restored - expected.numpy()).max() < 1e-5


def _deblur(*args, cwd):
    return subprocess.run([sys.executable, "-m", "deblur_ops", *args], cwd=cwd, capture_output=True, text=True)


def test_deblur_run_blind_irc_writes_the_kernel_and_the_motion(tmp_path):
    observed = _observed("text", seed=2)
    tifffile.imwrite(tmp_path / "shaky.tif", (np.clip(observed, 0, 1) * 65535).astype(np.uint16))
    done = _deblur("run", "shaky.tif", "sharp.tif", "--method", "blind-irc", "--param", "psf_size=13", "--quiet",
                   cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["method"] == "blind-irc (estimated PSF, then irc-net)"
    assert summary["psf_estimated"] == "sharp_psf.tif" and summary["psf_size"] == summary["support"] <= 13
    assert summary["motion_length"] >= 1 and 0 <= summary["motion_angle"] < 180
    kernel = tifffile.imread(tmp_path / "sharp_psf.tif")
    assert kernel.shape == (summary["support"],) * 2 and abs(kernel.sum() - 1) < 1e-5
    picture = tifffile.imread(tmp_path / "shaky.tif").astype(np.float32) / 65535
    in_memory = np.clip(deblur_ops.deblur(picture, method="blind-irc", psf_size=13), 0, 1)
    assert np.abs(tifffile.imread(tmp_path / "sharp.tif") / 65535 - in_memory).max() < 3e-3
    # The end-to-end network estimates no kernel: none is written.
    done = _deblur("run", "shaky.tif", "e2e.tif", "--method", "blind-irc", "--param", "end_to_end=blind-irc",
                   "--quiet", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "e2e.tif").exists() and not (tmp_path / "e2e_psf.tif").exists()


def test_deblur_run_blind_irc_refuses_a_stack_and_names_the_alternatives(tmp_path):
    tifffile.imwrite(tmp_path / "stack.tif", np.random.default_rng(0).random((3, 64, 64), dtype=np.float32))
    refused = _deblur("run", "stack.tif", "out.tif", "--method", "blind-irc", "--quiet", cwd=tmp_path)
    assert refused.returncode != 0 and "--psf" in refused.stderr and "end_to_end=blind-irc" in refused.stderr
    assert not (tmp_path / "out.tif").exists()
    done = _deblur("run", "stack.tif", "out.tif", "--method", "blind-irc", "--param", "end_to_end=blind-irc",
                   "--quiet", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert tifffile.imread(tmp_path / "out.tif").shape == (3, 64, 64)
