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
