"""PSFs in physical units: anisotropic voxels, Gibson-Lanni through psfmodels, beads and stars."""
import warnings

import numpy as np
import pytest

from deblur_ops.apps import catalog
from deblur_ops.data import scenes
from deblur_ops.psf import (born_wolf_psf, fourier_shift, gaussian_psf, gaussian_psf_physical, gibson_lanni_psf,
                            moffat_psf, psf_from_points, psf_grid_from_points)

psfmodels = pytest.importorskip("psfmodels")


def _corr(a, b):
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    return float(np.corrcoef(a, b)[0, 1])


def _axial_fwhm(psf):
    """FWHM (in planes) of the on-axis profile, linearly interpolated at half maximum."""
    d, h, w = psf.shape
    line = np.asarray(psf[:, h // 2, w // 2], np.float64)
    half = line.max() / 2
    c = int(line.argmax())
    right = next(i for i in range(c, d) if line[i] < half)
    left = next(i for i in range(c, -1, -1) if line[i] < half)
    r = right - 1 + (line[right - 1] - half) / (line[right - 1] - line[right])
    lo = left + 1 - (line[left + 1] - half) / (line[left + 1] - line[left])
    return r - lo


def test_anisotropic_voxels_sample_the_same_physical_psf():
    iso = born_wolf_psf(0.52, 1.2, 1.33, voxel_size=(0.1, 0.1, 0.1), shape=(31, 21, 21)).double()
    aniso = born_wolf_psf(0.52, 1.2, 1.33, voxel_size=(0.3, 0.1, 0.1), shape=(11, 21, 21)).double()
    every_third = iso[::3]
    # The 0.3 um planes are exactly every third 0.1 um plane (measured max difference 2e-8 of the peak).
    np.testing.assert_allclose((aniso / aniso.sum()).numpy(), (every_third / every_third.sum()).numpy(),
                               atol=1e-6 * float(aniso.max() / aniso.sum()))
    ratio = _axial_fwhm(aniso) / _axial_fwhm(iso)
    assert ratio == pytest.approx(1 / 3, rel=0.05)
    # The default shape follows the physical extent too: 15 planes at 0.3 um, 41 at 0.1 um.
    assert born_wolf_psf(0.52, 1.2, 1.33, voxel_size=(0.3, 0.1, 0.1)).shape[0] == 15
    assert born_wolf_psf(0.52, 1.2, 1.33, voxel_size=(0.1, 0.1, 0.1)).shape[0] == 41


def test_physical_gaussian_and_moffat():
    g = gaussian_psf_physical((0.9, 0.3, 0.3), (0.3, 0.1, 0.1), (7, 11, 11))
    sigma = 0.3 / 0.1 / (2 * np.sqrt(2 * np.log(2)))
    np.testing.assert_allclose(g.numpy(), gaussian_psf((sigma * 1.0, sigma, sigma), (7, 11, 11)).numpy(), atol=1e-7)
    np.testing.assert_allclose(moffat_psf(1.2, 3.0, 21, pixel_scale=0.3).numpy(), moffat_psf(4.0, 3.0, 21).numpy())


@pytest.mark.parametrize("model", ["scalar", "vectorial"])
def test_gibson_lanni_equals_psfmodels_called_directly(model):
    ours = gibson_lanni_psf((11, 21, 21), (0.2, 0.08, 0.08), wavelength_um=0.6, na=1.3, immersion_ri=1.515,
                            sample_ri=1.38, coverslip_ri=1.52, coverslip_thickness_um=170, working_distance_um=130,
                            depth_um=8.0, model=model)
    direct = psfmodels.make_psf(11, 21, dxy=0.08, dz=0.2, pz=8.0, NA=1.3, wvl=0.6, ns=1.38, ni=1.515, ni0=1.515,
                                tg=170, tg0=170, ng=1.52, ng0=1.52, ti0=130, model=model)
    np.testing.assert_allclose(ours.double().numpy(), direct / direct.sum(), atol=1e-7)


def test_confocal_equals_psfmodels_and_is_narrower():
    ours = gibson_lanni_psf((9, 21, 21), (0.15, 0.05, 0.05), wavelength_um=0.52, na=1.4, confocal=True,
                            pinhole_au=1.0, excitation_wavelength_um=0.488, model="vectorial")
    direct = psfmodels.confocal_psf(9, 21, pinhole_au=1.0, dxy=0.05, dz=0.15, NA=1.4, ex_wvl=0.488, em_wvl=0.52,
                                    ns=1.33, ni=1.515, ni0=1.515, model="vectorial")
    np.testing.assert_allclose(ours.double().numpy(), direct / direct.sum(), atol=1e-7)
    widefield = gibson_lanni_psf((9, 21, 21), (0.15, 0.05, 0.05), wavelength_um=0.52, na=1.4, model="vectorial")
    assert float(ours.max()) > float(widefield.max())


def test_matched_index_limit_is_born_wolf():
    # Born-Wolf is paraxial in defocus, Gibson-Lanni is not: they agree closely at moderate NA/n
    # (measured: NA 0.8 in water, 3D correlation 0.9965, relative L2 0.081) and in the focal plane
    # at any NA (NA 1.2, correlation 0.999996), but not in 3D at NA 1.2 (correlation 0.965).
    shape, voxels = (21, 41, 41), (0.2, 0.05, 0.05)
    gl = gibson_lanni_psf(shape, voxels, wavelength_um=0.52, na=0.8, immersion_ri=1.33, sample_ri=1.33,
                          coverslip_ri=1.33, depth_um=0.0)
    bw = born_wolf_psf(0.52, 0.8, 1.33, voxel_size=voxels, shape=shape)
    assert _corr(gl, bw) > 0.99
    assert np.linalg.norm(gl - bw) / np.linalg.norm(bw) < 0.1
    gl = gibson_lanni_psf(shape, voxels, wavelength_um=0.52, na=1.2, immersion_ri=1.33, sample_ri=1.33,
                          coverslip_ri=1.33, depth_um=0.0)
    bw = born_wolf_psf(0.52, 1.2, 1.33, voxel_size=voxels, shape=shape)
    assert _corr(gl[10], bw[10]) > 0.9999


def test_index_mismatch_makes_the_psf_axially_asymmetric():
    # An oil objective focused 10 um deep into water: spherical aberration, so the PSF is no longer
    # symmetric about its focal plane (matched index: symmetric to rounding).
    matched = gibson_lanni_psf((21, 21, 21), (0.2, 0.1, 0.1), na=1.4, sample_ri=1.515, depth_um=10.0).numpy()
    mismatched = gibson_lanni_psf((21, 21, 21), (0.2, 0.1, 0.1), na=1.4, sample_ri=1.33, depth_um=10.0).numpy()
    assert np.abs(matched - matched[::-1]).max() < 1e-3 * matched.max()
    assert np.abs(mismatched - mismatched[::-1]).max() > 0.1 * mismatched.max()


@pytest.mark.parametrize("kwargs, message", [
    ({"shape": (10, 21, 21)}, "odd positive integers"),
    ({"voxel_size": (0.2, 0.1, 0.05)}, "dy == dx"),
    ({"voxel_size": (0.2, -0.1, -0.1)}, "> 0 in every axis"),
    ({"na": 1.6}, "smaller than immersion_ri"),
    ({"depth_um": -1.0}, "depth_um must be >= 0"),
    ({"model": "paraxial"}, "model must be one of"),
])
def test_gibson_lanni_bad_input(kwargs, message):
    args = {"shape": (9, 15, 15), "voxel_size": (0.2, 0.1, 0.1), **kwargs}
    with pytest.raises(ValueError, match=message):
        gibson_lanni_psf(args.pop("shape"), args.pop("voxel_size"), **args)


def test_catalog_models_carry_units():
    for model in ("gibson_lanni", "vectorial", "confocal", "born_wolf", "gaussian_um", "moffat_seeing"):
        for p in catalog.psf_parameters(model):
            assert p.description, (model, p.name)
    units = {p.name: p.description for p in catalog.psf_parameters("gibson_lanni")}
    assert "µm" in units["wavelength"] and "µm" in units["depth"] and "µm" in units["pixel_size"]
    assert "arcsec" in {p.name: p.description for p in catalog.psf_parameters("moffat_seeing")}["seeing"]
    psf = catalog.make_psf("gibson_lanni", shape=(9, 15, 15), depth=5.0)
    direct = gibson_lanni_psf((9, 15, 15), (0.25, 0.1, 0.1), depth_um=5.0).numpy()
    np.testing.assert_allclose(psf, direct)


def _bead_image():
    truth = gaussian_psf((1.6, 2.2), 21, angle_deg=30).double()
    positions = [(30.3, 30.6), (30.8, 90.2), (31.1, 130.4), (80.5, 40.7), (80.2, 120.9), (130.6, 30.1),
                 (129.7, 80.4)]
    image = np.full((160, 160), 100.0)
    for y, x in positions:
        iy, ix = int(round(y)), int(round(x))
        image[iy - 10:iy + 11, ix - 10:ix + 11] += 5e4 * fourier_shift(truth, [y - iy, x - ix]).numpy()
    for y, x in [(128, 130), (132, 131)]:  # a doublet, 4 pixels apart
        image[y - 10:y + 11, x - 10:x + 11] += 4e4 * truth.numpy()
    image = np.random.default_rng(1).poisson(image).astype(float)
    image[70:91, 70:91] += 3e5 * truth.numpy()
    image = np.minimum(image, 0.5 * image.max())  # the camera clips the brightest bead: a flat top
    return image, positions + [(130, 130.5), (80, 80)], truth / truth.sum()


def test_psf_from_beads_rejects_the_doublet_and_the_saturated_bead():
    image, points, truth = _bead_image()
    psf, report = psf_from_points(image, points, 21)
    assert report.used == list(range(7))
    assert set(report.rejected) == {7, 8}
    assert report.rejected[7].startswith("doublet") and report.rejected[8].startswith("saturated")
    # Measured relative L2 to the truth: 0.038 (sub-pixel registration), 0.063 (whole pixels),
    # 0.099 (no rejection: the doublet and the clipped bead averaged in).
    error = float((psf.double() - truth).norm() / truth.norm())
    assert error < 0.05
    kept_all, _ = psf_from_points(image, points, 21, reject=False)
    assert float((kept_all.double() - truth).norm() / truth.norm()) > 1.5 * error
    whole, _ = psf_from_points(image, points[:7], 21, subpixel=False)
    assert float((whole.double() - truth).norm() / truth.norm()) > 1.3 * error


def test_psf_from_beads_in_3d():
    truth = gaussian_psf((2.0, 1.3, 1.3), (13, 11, 11)).double()
    volume = np.full((40, 60, 60), 10.0)
    for z, y, x in [(12.4, 15.2, 20.6), (25.7, 40.3, 30.1), (20.0, 30.5, 45.5)]:
        iz, iy, ix = int(round(z)), int(round(y)), int(round(x))
        shifted = fourier_shift(truth, [z - iz, y - iy, x - ix]).numpy()
        volume[iz - 6:iz + 7, iy - 5:iy + 6, ix - 5:ix + 6] += 1e4 * shifted
    psf, report = psf_from_points(volume, [(12, 15, 21), (26, 40, 30), (20, 31, 45)], (13, 11, 11))
    assert report.used == [0, 1, 2]
    assert float((psf.double() - truth).norm() / truth.norm()) < 0.02


def test_no_usable_point_lists_the_reasons():
    with pytest.raises(ValueError, match="(?s)no usable point.*leaves the"):
        psf_from_points(np.ones((30, 30)), [(2, 2)], 9)
    with pytest.raises(ValueError, match=r"shape \(n, 3\)"):
        psf_from_points(np.ones((5, 30, 30)), [(2, 2)], 9)
    with pytest.raises(ValueError, match="odd integer"):
        psf_from_points(np.ones((30, 30)), [(15, 15)], 8)


def _isolated_stars(sample, radius=10, brighter_than=4000):
    # Stars are single pixels of >= 2000 counts; one picks the bright ones for a PSF.
    ys, xs = np.nonzero(sample.clean > 1500)
    keep = sample.clean[ys, xs] > brighter_than
    return np.array([(y, x) for y, x, bright in zip(ys, xs, keep)
                     if bright and np.sum((abs(ys - y) <= radius) & (abs(xs - x) <= radius)) == 1], float)


def test_three_by_three_grid_on_the_plugins_astronomy_sample():
    sample = scenes.astronomy_field()  # the plugin's sample: 256 x 256, 3 x 3 Moffat grid
    stars = _isolated_stars(sample)
    with pytest.warns(UserWarning, match=r"grid nodes \[.*\] have no usable star"):
        grid, report, filled = psf_grid_from_points(sample.blurred, stars, 21, (3, 3), return_report=True)
    assert grid.grid_shape == (3, 3) and filled and len(report.used) >= 9
    k = sample.psf.shape[-1] // 2
    # Measured correlations 0.906-0.979 (the filled nodes 0.932-0.958) with the true node PSFs' centres;
    # with faint stars too (> 1500 counts) one noisy star alone on a corner node gives 0.77.
    for i in range(3):
        for j in range(3):
            truth = sample.psf[i, j][k - 10:k + 11, k - 10:k + 11]
            assert _corr(grid.psfs[i, j], truth) > 0.9, (i, j)


def test_node_without_a_star_is_filled_from_the_others():
    image = np.zeros((80, 80))
    image[20:31, 20:31] = 1e3 * gaussian_psf(1.5, 11).numpy()
    with pytest.warns(UserWarning, match=r"grid nodes \[\(1, 0\)\] have no usable star"):
        grid = psf_grid_from_points(image, [(25, 25)], 11, (2, 1))
    np.testing.assert_allclose(grid.psfs[1, 0].numpy(), grid.psfs[0, 0].numpy())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        psf_grid_from_points(image, [(25, 25)], 11, (1, 1))


def test_microscopy_protocol_lists_methods_by_name_and_skips_unknown_ones():
    from deblur_ops.apps.evaluate import evaluate_protocol, protocol_markdown

    report = evaluate_protocol("microscopy", ["richardson_lucy", "richardson_lucy:psf=born_wolf",
                                              "method_from_another_branch", "irc"], shape=(16, 40, 40))
    rows = {r["method"]: r for r in report["results"]}
    assert list(rows) == ["observed", "richardson_lucy", "richardson_lucy:psf=born_wolf"]
    skipped = {s["method"]: s["reason"] for s in report["skipped"]}
    assert skipped["method_from_another_branch"] == "not available in this build"
    assert "2D" in skipped["irc"]
    # Measured at this size: observed 27.16 dB, RL with the Gibson-Lanni PSF 27.50 dB, RL with the
    # matched-index Born-Wolf PSF of the same optics 27.15 dB (the aberration it ignores costs it).
    assert rows["richardson_lucy"]["psnr"] > rows["observed"]["psnr"]
    assert rows["richardson_lucy"]["psnr"] > rows["richardson_lucy:psf=born_wolf"]["psnr"]
    assert "| richardson_lucy | true |" in protocol_markdown(report)


def test_astronomy_protocol_scores_photometry_and_the_varying_psf_wins_it():
    # The clipped [0, 1] PSNR hides the stars (they saturate the 99.5th percentile); the aperture
    # photometry error measures them. Recorded at 96x96: sv_richardson_lucy 0.077, central-PSF RL 0.305.
    from deblur_ops.apps.evaluate import evaluate_protocol, protocol_markdown

    report = evaluate_protocol("astronomy", ["richardson_lucy", "sv_richardson_lucy"], shape=(96, 96))
    rows = {r["method"]: r for r in report["results"]}
    assert {"psnr_full", "photometry"} <= set(rows["observed"])
    assert rows["sv_richardson_lucy"]["photometry"] < 0.5 * rows["richardson_lucy"]["photometry"]
    assert rows["richardson_lucy"]["photometry"] < rows["observed"]["photometry"]
    assert rows["sv_richardson_lucy"]["psnr_full"] > rows["richardson_lucy"]["psnr_full"]
    assert "photometry error" in protocol_markdown(report)
