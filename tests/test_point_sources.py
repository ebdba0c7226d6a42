"""Blind PSFs of star fields and bead images: find_point_sources, psf_from_point_sources, and
estimate_psf / method "blind" / `deblur run --method blind` reading the PSF from point sources."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import tifffile
import torch

import deblur_ops
from deblur_ops.data import sample_image
from deblur_ops.data.scenes import astronomy_field
from deblur_ops.psf import estimate_psf, find_point_sources, psf_from_point_sources

from .conftest import requires_cuda


def _ncc(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()))


def _true_psf(sample, side: int) -> np.ndarray:
    k = np.asarray(sample.psf[0, 0], np.float64)
    k = np.pad(k, max(0, (side - k.shape[-1]) // 2))
    c = k.shape[-1] // 2
    k = k[c - side // 2:c + side // 2 + 1, c - side // 2:c + side // 2 + 1]
    return k / k.sum()


@pytest.fixture(scope="module")
def star_field():
    """Stars and galaxies under uniform Moffat seeing (FWHM 4 px), sky and read noise, 160 x 160."""
    return astronomy_field((160, 160), (1, 1), stars=60, galaxies=6, fwhm_range=(4.0, 4.0), seed=22)


def test_find_point_sources_brightest_first_isolated_and_inside():
    yy, xx = np.mgrid[0:80, 0:80]
    spots = [(3.0, 40, 40), (1.0, 15, 15), (2.0, 60, 20), (5.0, 2, 70)]  # the last one too near the border
    image = sum(a * np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / 6.0) for a, y, x in spots)
    image = image + np.random.default_rng(0).normal(0, 0.01, image.shape)
    assert find_point_sources(image, 11).tolist() == [[40, 40], [60, 20], [15, 15]]
    assert find_point_sources(image, 11, max_sources=2).tolist() == [[40, 40], [60, 20]]
    assert find_point_sources(image, 11, threshold=150).tolist() == [[40, 40], [60, 20]]  # 1.0 is ~100 sigma
    # Two sources within one box: only the brighter one is a source (its crop would hold both).
    pair = np.exp(-((yy - 40) ** 2 + (xx - 40) ** 2) / 6.0) + 0.5 * np.exp(-((yy - 40) ** 2 + (xx - 46) ** 2) / 6.0)
    assert find_point_sources(pair, 15).tolist() == [[40, 40]]
    assert find_point_sources(np.ones((40, 40)), 9).shape == (0, 2)


def test_find_point_sources_in_a_bead_stack():
    zz, yy, xx = np.mgrid[0:24, 0:48, 0:48]
    beads = sum(np.exp(-((zz - z) ** 2 / 8 + ((yy - y) ** 2 + (xx - x) ** 2) / 3.0)) for z, y, x in [(12, 12, 12), (11, 34, 30)])
    assert sorted(find_point_sources(beads, (9, 11, 11)).tolist()) == [[11, 34, 30], [12, 12, 12]]


@pytest.mark.parametrize("kwargs, match", [({"threshold": 0}, "threshold"), ({"max_sources": 0}, "max_sources"),
                                           ({"size": 8}, "odd"), ({"size": 41}, "larger than the image")])
def test_find_point_sources_refuses_bad_arguments(kwargs, match):
    args = {"size": 9, **kwargs}
    with pytest.raises(ValueError, match=match):
        find_point_sources(np.random.rand(32, 32), args.pop("size"), **args)


def test_psf_from_point_sources_matches_the_seeing(star_field):
    psf, positions, report = psf_from_point_sources(star_field.blurred, 25)
    assert psf.shape == (25, 25) and abs(float(psf.sum()) - 1) < 1e-5 and bool((psf >= 0).all())
    assert len(report.used) >= 5 and set(report.used) | set(report.rejected) == set(range(len(positions)))
    assert _ncc(psf, _true_psf(star_field, 25)) > 0.98


def test_psf_from_point_sources_says_why_when_there_are_too_few():
    photo = sample_image("camera", size=96)
    with pytest.raises(ValueError, match="too few usable point sources"):
        psf_from_point_sources(photo, 15, min_sources=50)
    with pytest.raises(ValueError, match="min_sources"):
        psf_from_point_sources(photo, 15, min_sources=0)


def test_estimate_psf_reads_a_star_field_from_its_stars(star_field):
    kernel, source = estimate_psf(star_field.blurred.astype(np.float32), 25, return_source=True)
    assert source == "points"
    assert kernel.shape == (25, 25) and kernel.dtype == np.float32
    assert _ncc(kernel, _true_psf(star_field, 25)) > 0.98
    # The edge estimator on the same field is worse: the seeing is no sharp-edged blur.
    edges = estimate_psf(star_field.blurred.astype(np.float32), 25, source="edges")
    assert _ncc(edges, _true_psf(star_field, 25)) < _ncc(kernel, _true_psf(star_field, 25))
    k, latent, source = estimate_psf(torch.from_numpy(star_field.blurred), 25, return_latent=True, return_source=True)
    assert latent is None and source == "points" and isinstance(k, torch.Tensor)


@requires_cuda
def test_estimate_psf_reads_a_star_field_on_cuda(star_field):
    """The point-source path measures on the CPU and hands the PSF back on the picture's device."""
    cpu = estimate_psf(torch.from_numpy(star_field.blurred), 25)
    kernel, source = estimate_psf(torch.from_numpy(star_field.blurred).cuda(), 25, return_source=True)
    assert source == "points" and kernel.device.type == "cuda" and kernel.dtype == torch.float32
    assert torch.allclose(kernel.cpu(), cpu, atol=1e-6)


def test_auto_reads_a_textured_photo_from_its_edges():
    """A shake-blurred brick wall is darkish (median 14 % of its range) and its texture has look-alike
    local maxima; read from them, its restoration lost 13 dB. It is no star field: most of it is no sky."""
    from deblur_ops.apps.evaluate import degrade
    from deblur_ops.apps.evaluate_blind import shake_kernel
    from deblur_ops.psf.estimate import _is_star_field

    _, observed = degrade("brick", shake_kernel(15, 543), 0.01, 255, 8)
    y = torch.from_numpy(observed).double()
    lo, hi = torch.quantile(y.flatten(), torch.tensor([0.001, 0.999], dtype=y.dtype)).tolist()
    y = (y - lo) / (hi - lo)
    assert float(y.median()) < 0.2  # dark enough for the first, median-only rule
    assert not _is_star_field(y)
    field = astronomy_field((128, 128), (1, 1), stars=40, galaxies=4, fwhm_range=(3.0, 3.0), seed=5).blurred
    f = torch.from_numpy(field).double()
    lo, hi = torch.quantile(f.flatten(), torch.tensor([0.001, 0.999], dtype=f.dtype)).tolist()
    assert _is_star_field((f - lo) / (hi - lo))


def test_estimate_psf_source_on_a_photograph():
    picture = sample_image("camera", size=64)
    kernel, source = estimate_psf(picture, 9, adaptive_support=False, return_source=True)
    assert source == "edges" and kernel.shape == (9, 9)
    ramp = np.add.outer(np.linspace(0, 1, 64), np.linspace(0, 1, 64)) + (np.arange(64) > 30)  # no point in it
    with pytest.raises(ValueError, match="source='points'.*too few usable point sources.*source='edges'"):
        estimate_psf(ramp, 9, source="points")
    with pytest.raises(ValueError, match="source must be one of"):
        estimate_psf(picture, 9, source="stars")


def test_method_blind_restores_a_star_field_with_richardson_lucy(star_field):
    observed, clean = star_field.blurred.astype(np.float32), star_field.clean
    scale = np.percentile(clean[clean > 0], 99.5)

    def psnr(x):
        err = (np.clip(x / scale, 0, 1) - np.clip(clean / scale, 0, 1))[16:-16, 16:-16]
        return 10 * np.log10(1 / (err ** 2).mean())

    restored = deblur_ops.deblur(observed, method="blind", psf_size=25)
    kernel = estimate_psf(observed, 25)
    assert np.allclose(restored, deblur_ops.deblur(observed, kernel, method="richardson_lucy"), rtol=1e-4, atol=1e-3)
    assert psnr(restored) > psnr(observed) + 0.4  # +0.65 dB measured; the true PSF gives the same
    true = deblur_ops.deblur(observed, _true_psf(star_field, 25).astype(np.float32), method="richardson_lucy")
    assert psnr(restored) > psnr(true) - 0.3


def test_deblur_run_blind_on_a_star_field_names_richardson_lucy(tmp_path, star_field):
    tifffile.imwrite(tmp_path / "field.tif", star_field.blurred.astype(np.float32))
    done = subprocess.run([sys.executable, "-m", "deblur_ops", "run", "field.tif", "sharp.tif", "--method", "blind",
                           "--param", "psf_size=25", "--quiet"], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["method"] == "blind (estimated PSF, then richardson_lucy)"
    kernel = tifffile.imread(tmp_path / "sharp_psf.tif")
    assert _ncc(kernel, _true_psf(star_field, 25)) > 0.98
    edges = subprocess.run([sys.executable, "-m", "deblur_ops", "run", "field.tif", "edges.tif", "--method", "blind",
                            "--param", "psf_size=25", "--param", "source=edges", "--quiet"], cwd=tmp_path,
                           capture_output=True, text=True)
    assert edges.returncode == 0, edges.stderr
    assert json.loads(edges.stdout.strip().splitlines()[-1])["method"] == "blind (estimated PSF, then tv-irc)"


@pytest.fixture(scope="module")
def varying_field():
    """Seeing that varies over a 3 x 3 grid (FWHM 3 px at the centre, 6 px in the corners), 256 x 256."""
    return astronomy_field((256, 256), (3, 3), stars=120, galaxies=12, seed=4)


def test_psf_grid_from_point_sources_follows_the_varying_seeing(varying_field):
    from deblur_ops.psf import PSFGrid, psf_grid_from_point_sources

    grid, positions, report, filled = psf_grid_from_point_sources(varying_field.blurred, 25, (3, 3))
    assert isinstance(grid, PSFGrid) and grid.grid_shape == (3, 3) and len(report.used) >= 15
    assert torch.allclose(grid.psfs.sum((-2, -1)), torch.ones(3, 3, dtype=grid.psfs.dtype))
    truth = varying_field.psf
    c = truth.shape[-1] // 2
    for i in range(3):
        for j in range(3):
            if (i, j) not in filled:
                assert _ncc(grid.psfs[i, j], truth[i, j, c - 12:c + 13, c - 12:c + 13]) > 0.85
    # The centre node is sharper than the corners, as the seeing is.
    assert float(grid.psfs[1, 1].max()) > 1.5 * float(grid.psfs[0, 0].max())
    with pytest.raises(ValueError, match="too few usable stars for a PSF grid"):
        psf_grid_from_point_sources(np.ones((64, 64)), 9, (2, 2))
    with pytest.raises(ValueError, match="odd"):
        psf_grid_from_point_sources(varying_field.blurred, 24, (3, 3))


def test_method_blind_with_a_psf_grid(varying_field):
    from deblur_ops.psf import psf_grid_from_point_sources

    observed = varying_field.blurred.astype(np.float32)
    restored = deblur_ops.deblur(observed, method="blind", psf_size=25, psf_grid="3x3")
    grid = psf_grid_from_point_sources(observed, 25, (3, 3))[0]
    np.testing.assert_allclose(restored, deblur_ops.deblur(observed, grid, method="sv_richardson_lucy"),
                               rtol=1e-4, atol=1e-2)
    with pytest.raises(ValueError, match="psf_grid is measured from point sources"):
        deblur_ops.deblur(observed, method="blind", psf_grid=(3, 3), source="edges")
    with pytest.raises(ValueError, match="nonblind must take a PSF grid"):
        deblur_ops.deblur(observed, method="blind", psf_grid=3, nonblind="richardson_lucy")
    with pytest.raises(ValueError, match="psf_grid must be rows x columns"):
        deblur_ops.deblur(observed, method="blind", psf_grid="three")


def test_deblur_run_blind_writes_the_psf_grid_it_measured(tmp_path, varying_field):
    tifffile.imwrite(tmp_path / "sky.tif", (varying_field.blurred + 300).astype(np.float32))  # a camera offset too
    done = subprocess.run([sys.executable, "-m", "deblur_ops", "run", "sky.tif", "sharp.tif", "--method", "blind",
                           "--param", "psf_size=25", "--param", "psf_grid=3x3", "--quiet"], cwd=tmp_path,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["method"] == "blind (estimated PSF grid, then sv_richardson_lucy)"
    assert summary["psf_grid"] == [3, 3] and summary["psf_estimated"] == "sharp_psf.tif"
    grid = tifffile.imread(tmp_path / "sharp_psf.tif")
    assert grid.shape == (3, 3, 25, 25) and np.allclose(grid.sum((-2, -1)), 1, atol=1e-5)
    # The written grid reads back as --psf and restores the same (Richardson-Lucy does not depend on the units).
    again = subprocess.run([sys.executable, "-m", "deblur_ops", "run", "sky.tif", "again.tif", "--psf", "sharp_psf.tif",
                            "--method", "sv_richardson_lucy", "--quiet"], cwd=tmp_path, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    np.testing.assert_allclose(tifffile.imread(tmp_path / "sharp.tif"), tifffile.imread(tmp_path / "again.tif"),
                               rtol=1e-3, atol=0.5)
