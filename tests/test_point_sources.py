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
    assert json.loads(edges.stdout.strip().splitlines()[-1])["method"] == "blind (estimated PSF, then admm_tv)"
