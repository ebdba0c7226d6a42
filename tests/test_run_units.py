"""`deblur run` in physical units: voxel sizes read from file metadata, PSFs resampled or sampled at
them, ImageJ metadata kept."""
import json

import numpy as np
import pytest
import tifffile
from astropy.io import fits

from deblur_ops.apps import io
from deblur_ops.apps.cli import main
from deblur_ops.psf import gaussian_psf_physical, prepare_psf


def _imagej(path, data, voxel):
    tifffile.imwrite(path, data.astype(np.float32), imagej=True, resolution=(1 / voxel[1], 1 / voxel[2]),
                     metadata={"spacing": voxel[0], "unit": "micron", "axes": "ZYX"})


def test_voxel_sizes_are_read_from_imagej_ome_zarr_and_fits(tmp_path):
    _imagej(tmp_path / "a.tif", np.zeros((3, 8, 8)), (0.3, 0.1, 0.1))
    assert io.read_voxel_size(tmp_path / "a.tif")[:2] == ((0.3, pytest.approx(0.1), pytest.approx(0.1)), "um")
    tifffile.imwrite(tmp_path / "b.tif", np.zeros((8, 8), np.float32), resolution=(2000.0, 2000.0),
                     resolutionunit="CENTIMETER")  # 2000 px/cm = 5 um
    assert io.read_voxel_size(tmp_path / "b.tif")[0] == (pytest.approx(5.0), pytest.approx(5.0))
    tifffile.imwrite(tmp_path / "c.tif", np.zeros((8, 8), np.float32))
    assert io.read_voxel_size(tmp_path / "c.tif") is None

    import zarr
    group = zarr.open_group(str(tmp_path / "d.ome.zarr"), mode="w")
    group.create_array("0", shape=(2, 4, 4), dtype="f4")
    group.attrs["multiscales"] = [{"axes": [{"name": "z", "type": "space", "unit": "micrometer"},
                                            {"name": "y", "type": "space", "unit": "nanometer"},
                                            {"name": "x", "type": "space", "unit": "nanometer"}],
                                   "datasets": [{"path": "0", "coordinateTransformations": [
                                       {"type": "scale", "scale": [0.5, 65.0, 65.0]}]}]}]
    assert io.read_voxel_size(tmp_path / "d.ome.zarr")[0] == pytest.approx((0.5, 0.065, 0.065))

    header = fits.Header({"CDELT1": -1e-4, "CDELT2": 1e-4})  # degrees: 0.36 arcsec/px
    fits.PrimaryHDU(np.zeros((4, 4), np.float32), header=header).writeto(tmp_path / "e.fits")
    assert io.read_voxel_size(tmp_path / "e.fits")[:2] == (pytest.approx((0.36, 0.36)), "arcsec")
    header = fits.Header({"CD1_1": 0.0, "CD1_2": 2e-4, "CD2_1": 2e-4, "CD2_2": 0.0})  # rotated 90 degrees
    fits.PrimaryHDU(np.zeros((4, 4), np.float32), header=header).writeto(tmp_path / "f.fits")
    assert io.read_voxel_size(tmp_path / "f.fits")[0] == pytest.approx((0.72, 0.72))


def test_a_psf_file_at_another_voxel_size_is_resampled_and_imagej_metadata_kept(tmp_path, capsys):
    rng = np.random.default_rng(0)
    stack = rng.random((9, 24, 24)).astype(np.float32)
    _imagej(tmp_path / "stack.tif", stack, (0.3, 0.1, 0.1))
    # The same Gaussian (FWHM 0.3 um lateral, 0.9 um axial) sampled at 0.15 x 0.05 x 0.05 um, even-sized.
    measured = gaussian_psf_physical(fwhm=(0.9, 0.3, 0.3), voxel_size=(0.15, 0.05, 0.05)).numpy()
    even = np.zeros(tuple(s + 1 for s in measured.shape), np.float32)
    even[:-1, :-1, :-1] = measured
    _imagej(tmp_path / "psf.tif", even, (0.15, 0.05, 0.05))
    argv = ["run", str(tmp_path / "stack.tif"), str(tmp_path / "out.tif"), "--psf", str(tmp_path / "psf.tif"),
            "--method", "wiener", "--param", "balance=0.01", "--quiet"]
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["voxel_size"] == "0.3, 0.1, 0.1 um (ImageJ TIFF resolution and spacing)"
    assert summary["psf_voxel_size"].startswith("0.15, 0.05, 0.05 um") and "resampled" in summary["psf_voxel_size"]
    # Reference: the PSF resampled in Python (prepare_psf), given at the stack's voxel size.
    resampled = prepare_psf(even, voxel_size=(0.3, 0.1, 0.1), psf_voxel_size=(0.15, 0.05, 0.05), crop_energy=None)
    assert resampled.shape[0] < even.shape[0] // 2 + 2  # half as many planes: the PSF really was resampled
    _imagej(tmp_path / "resampled.tif", resampled.numpy(), (0.3, 0.1, 0.1))
    assert main(["run", str(tmp_path / "stack.tif"), str(tmp_path / "ref.tif"), "--psf", str(tmp_path / "resampled.tif"),
                 "--method", "wiener", "--param", "balance=0.01", "--quiet"]) == 0
    got, want = tifffile.imread(tmp_path / "out.tif"), tifffile.imread(tmp_path / "ref.tif")
    np.testing.assert_allclose(got, want, atol=1e-5 * np.abs(want).max())
    # Told that the PSF has the stack's voxel size, it is used as sampled: twice too wide, another result.
    assert main(argv + ["--psf-voxel-size", "0.3,0.1,0.1", "--overwrite"]) == 0
    assert np.abs(tifffile.imread(tmp_path / "out.tif") - want).max() > 0.1 * np.abs(want).max()
    with tifffile.TiffFile(tmp_path / "ref.tif") as tif:
        assert tif.imagej_metadata["spacing"] == pytest.approx(0.3) and tif.series[0].axes == "ZYX"
    assert io.read_voxel_size(tmp_path / "ref.tif")[0] == pytest.approx((0.3, 0.1, 0.1))


def test_optical_psf_models_sample_at_the_files_voxel_size(tmp_path, capsys):
    _imagej(tmp_path / "stack.tif", np.random.default_rng(1).random((9, 32, 32)), (0.25, 0.1, 0.1))
    assert main(["run", str(tmp_path / "stack.tif"), str(tmp_path / "out.tif"), "--psf-model", "born_wolf",
                 "--wavelength", "0.52", "--na", "1.2", "--refractive-index", "1.33", "--shape", "9,15,15",
                 "--method", "wiener", "--param", "balance=0.01", "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "--pixel-size 0.1 from the voxel size" in err and "--z-step 0.25 from the voxel size" in err
    with pytest.raises(SystemExit):
        main(["run", "a.tif", "b.tif", "--voxel-size", "0.3,x", "--psf-model", "gaussian", "--sigma", "1"])


def test_multi_extension_fits_keeps_every_hdu_and_restores_the_chosen_one(tmp_path):
    rng = np.random.default_rng(2)
    primary = fits.PrimaryHDU(header=fits.Header({"OBJECT": "M51", "EXPTIME": 300.0}))
    sci = fits.ImageHDU(rng.random((32, 32)).astype(np.float32), name="SCI", header=fits.Header({"CDELT1": 1e-4}))
    dq = fits.ImageHDU(np.zeros((32, 32), np.int16), name="DQ")
    table = fits.BinTableHDU.from_columns([fits.Column(name="star", format="J", array=np.arange(3))], name="CAT")
    fits.HDUList([primary, sci, dq, table]).writeto(tmp_path / "in.fits")
    args = ["run", str(tmp_path / "in.fits"), str(tmp_path / "out.fits"), "--psf-model", "gaussian", "--sigma", "1",
            "--method", "wiener", "--param", "balance=0.01", "--quiet"]
    assert main(args) == 0
    with fits.open(tmp_path / "out.fits") as out, fits.open(tmp_path / "in.fits") as original:
        assert [h.name for h in out] == ["PRIMARY", "SCI", "DQ", "CAT"]
        assert out[0].header["OBJECT"] == "M51" and out[0].header["EXPTIME"] == 300.0
        assert out[1].header["CDELT1"] == 1e-4 and "deblur-ops" in str(out[1].header["HISTORY"])
        assert not np.allclose(out[1].data, original[1].data)  # the first image HDU was restored
        np.testing.assert_array_equal(out[2].data, original[2].data)
        assert list(out[3].data["star"]) == [0, 1, 2]
    # --hdu picks another image HDU by name; an unknown one is a one-line error naming the HDUs.
    assert main(args[:3] + ["--hdu", "DQ", "--output-dtype", "float32"] + args[3:] + ["--overwrite"]) == 0
    with fits.open(tmp_path / "out.fits") as out, fits.open(tmp_path / "in.fits") as original:
        np.testing.assert_array_equal(out[1].data, original[1].data)
    assert main(args[:3] + ["--hdu", "NOPE"] + args[3:] + ["--overwrite"]) == 2


@pytest.mark.parametrize("chunks", [None, "32,32"])
def test_nan_pixels_are_refused_filled_or_masked(tmp_path, chunks, capsys):
    image = np.random.default_rng(3).random((32, 32)).astype(np.float32)
    image[5, 7] = np.nan
    image[20, 3] = np.inf
    fits.PrimaryHDU(image).writeto(tmp_path / "in.fits")
    base = ["run", str(tmp_path / "in.fits"), "--psf-model", "gaussian", "--sigma", "1", "--method", "wiener",
            "--param", "balance=0.01", "--quiet"] + (["--chunks", chunks] if chunks else [])
    if chunks is None:  # in memory the whole image is checked first; chunks are checked by the methods
        assert main(base[:2] + [str(tmp_path / "refused.fits")] + base[2:]) == 2
        assert "--nan fill" in capsys.readouterr().err
    out_format = "zarr" if chunks else "fits"
    assert main(base[:2] + [str(tmp_path / f"fill.{out_format}")] + base[2:] + ["--nan", "fill"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["nan_pixels"] == 2
    assert main(base[:2] + [str(tmp_path / f"mask.{out_format}")] + base[2:] + ["--nan", "mask"]) == 0
    read = (lambda p: io.read_image(p).data) if chunks is None else (lambda p: np.asarray(io.read_image(p).data))
    filled, masked = np.asarray(read(tmp_path / f"fill.{out_format}")), np.asarray(read(tmp_path / f"mask.{out_format}"))
    assert np.isfinite(filled).all()
    assert np.isnan(masked[5, 7]) and np.isnan(masked[20, 3]) and np.isfinite(np.delete(masked.ravel(), [5 * 32 + 7, 20 * 32 + 3])).all()
    # Away from the filled pixels, fill and mask give the same restoration.
    np.testing.assert_allclose(masked[10:16, 10:30], filled[10:16, 10:30], rtol=1e-6)


def test_ome_tiff_metadata_is_written_back(tmp_path):
    tifffile.imwrite(tmp_path / "in.ome.tif", np.random.default_rng(4).random((3, 24, 24)).astype(np.float32),
                     ome=True, metadata={"axes": "ZYX", "PhysicalSizeX": 0.1, "PhysicalSizeY": 0.1,
                                         "PhysicalSizeZ": 0.3, "Name": "cells"})
    assert main(["run", str(tmp_path / "in.ome.tif"), str(tmp_path / "out.ome.tif"), "--psf-model", "gaussian",
                 "--sigma", "1", "--method", "wiener", "--param", "balance=0.01", "--quiet"]) == 0
    with tifffile.TiffFile(tmp_path / "out.ome.tif") as tif:
        assert tif.is_ome and 'Name="cells"' in tif.ome_metadata and tif.series[0].axes == "ZYX"
    assert io.read_voxel_size(tmp_path / "out.ome.tif")[0] == pytest.approx((0.3, 0.1, 0.1))


def test_a_psf_grid_file_runs_the_spatially_varying_richardson_lucy(tmp_path, capsys):
    import deblur_ops
    from deblur_ops.data import scenes
    from deblur_ops.psf import PSFGrid

    sample = scenes.astronomy_field((64, 64), stars=12)
    fits.PrimaryHDU(sample.blurred).writeto(tmp_path / "field.fits")
    fits.PrimaryHDU(sample.psf.astype(np.float32)).writeto(tmp_path / "grid.fits")  # (3, 3, k, k)
    assert main(["run", str(tmp_path / "field.fits"), str(tmp_path / "out.fits"), "--psf", str(tmp_path / "grid.fits"),
                 "--param", "iterations=5", "--quiet"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["method"] == "sv_richardson_lucy" and summary["psf"] == "PSFGrid (3, 3)"
    want = deblur_ops.deblur(sample.blurred, PSFGrid(sample.psf.astype(np.float32).astype(np.float64)),
                             method="sv_richardson_lucy", iterations=5)
    np.testing.assert_allclose(fits.getdata(tmp_path / "out.fits"), want, rtol=1e-5, atol=1e-4)
    assert main(["run", str(tmp_path / "field.fits"), str(tmp_path / "c.zarr"), "--psf", str(tmp_path / "grid.fits"),
                 "--chunks", "32,32", "--quiet"]) == 2
    assert "cannot be used with --chunks" in capsys.readouterr().err
