"""`deblur run` on every file format, the stack helpers, and the out-of-core (Zarr + dask) path."""
import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

pytest.importorskip("dask")
zarr = pytest.importorskip("zarr")
tifffile = pytest.importorskip("tifffile")
fits = pytest.importorskip("astropy.io.fits")

import dask.array as da  # noqa: E402
import imageio.v3 as iio  # noqa: E402
import torch  # noqa: E402

from deblur_ops.apps import catalog, io, stack  # noqa: E402
from deblur_ops.data import scenes as samples  # noqa: E402
from deblur_ops.apps.cli import main  # noqa: E402


def psnr(estimate, clean, data_range):
    mse = float(np.mean((np.asarray(estimate, np.float64) - clean) ** 2))
    return 10 * np.log10(data_range**2 / mse)


@pytest.fixture(scope="module")
def photo():
    return samples.motion_blurred_photo(size=128, length=9, angle=30, noise_sigma=0.005)


MOTION = ["--psf-model", "motion", "--length", "9", "--angle", "30", "--quiet"]


def run_cli(*args):
    assert main(["run", *map(str, args)]) == 0


def test_png_round_trip_keeps_uint8_and_improves_psnr(tmp_path, photo):
    observed = np.clip(np.rint(photo.blurred * 255), 0, 255).astype(np.uint8)
    iio.imwrite(tmp_path / "in.png", observed)
    run_cli(tmp_path / "in.png", tmp_path / "out.png", *MOTION, "--method", "richardson_lucy")
    restored = iio.imread(tmp_path / "out.png")
    assert restored.shape == observed.shape and restored.dtype == np.uint8
    assert psnr(restored, photo.clean * 255, 255) > psnr(observed, photo.clean * 255, 255) + 2.0


def test_jpeg_photo_keeps_its_exif_and_profile_and_is_marked_as_ours(tmp_path, capsys):
    """A camera JPEG (colour, EXIF with orientation and camera, an ICC profile, 300 dpi) restores
    into a JPEG that keeps them, is sharper than the input, and carries the EXIF Software mark by
    which a rerun may replace it; a foreign JPEG in the output's place is refused, and a 16-bit
    input is refused as a JPEG output before any work."""
    from PIL import Image, ImageCms

    colour = samples.motion_blurred_photo("astronaut", size=96, length=9, angle=30, noise_sigma=0.0)
    observed = np.clip(np.rint(colour.blurred * 255), 0, 255).astype(np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees to view
    exif[0x0110] = "Shaky Cam 3000"  # Model
    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    Image.fromarray(observed).save(tmp_path / "in.jpg", quality=98, subsampling=0, exif=exif.tobytes(),
                                   icc_profile=profile, dpi=(300, 300))
    assert not io.written_by_deblur(tmp_path / "in.jpg")
    source = io.read_image(tmp_path / "in.jpg")
    assert source.format == "jpeg" and source.rgb and source.data.dtype == np.uint8
    run_cli(tmp_path / "in.jpg", tmp_path / "out.jpg", *MOTION, "--method", "richardson_lucy")
    with Image.open(tmp_path / "out.jpg") as written:
        restored = np.asarray(written)
        tags = written.getexif()
        assert written.info["icc_profile"] == profile and tuple(round(d) for d in written.info["dpi"]) == (300, 300)
    assert tags[0x0112] == 6 and tags[0x0110] == "Shaky Cam 3000" and tags[0x0131] == io.SOFTWARE
    assert restored.shape == observed.shape and restored.dtype == np.uint8
    clean = colour.clean * 255
    assert psnr(restored[8:-8, 8:-8], clean[8:-8, 8:-8], 255) > psnr(observed[8:-8, 8:-8], clean[8:-8, 8:-8], 255) + 2
    assert io.written_by_deblur(tmp_path / "out.jpg")
    run_cli(tmp_path / "in.jpg", tmp_path / "out.jpg", *MOTION, "--method", "wiener")  # ours: replaced

    (tmp_path / "foreign.jpg").write_bytes((tmp_path / "in.jpg").read_bytes())
    capsys.readouterr()
    assert main(["run", str(tmp_path / "in.jpg"), str(tmp_path / "foreign.jpg"), *MOTION]) == 2
    assert "exists and was not written by `deblur run`" in capsys.readouterr().err
    assert (tmp_path / "foreign.jpg").read_bytes() == (tmp_path / "in.jpg").read_bytes()
    tifffile.imwrite(tmp_path / "deep.tif", observed.astype(np.uint16) * 257, photometric="rgb")
    assert main(["run", str(tmp_path / "deep.tif"), str(tmp_path / "deep.jpg"), *MOTION]) == 2
    assert "JPEG holds 8-bit pictures, but the output would be uint16" in capsys.readouterr().err
    assert not (tmp_path / "deep.jpg").exists()
    # A stack, or a picture with an alpha channel, cannot become a JPEG: refused before any work,
    # the blind estimate included.
    tifffile.imwrite(tmp_path / "stack.tif", np.repeat(observed[None, ..., 0], 3, 0))
    assert main(["run", str(tmp_path / "stack.tif"), str(tmp_path / "stack.jpg"), *MOTION]) == 2
    assert "JPEG holds one (H, W) picture or one colour picture, but the output would have shape (3, 96, 96)" in \
        capsys.readouterr().err
    iio.imwrite(tmp_path / "alpha.png", np.dstack([observed, np.full(observed.shape[:2], 255, np.uint8)]))
    assert main(["run", str(tmp_path / "alpha.png"), str(tmp_path / "alpha.jpg"), "--method", "blind", "--quiet"]) == 2
    assert "(and PNG or TIFF for an alpha channel)" in capsys.readouterr().err
    assert not (tmp_path / "stack.jpg").exists() and not (tmp_path / "alpha.jpg").exists()
    assert not (tmp_path / "alpha_psf.tif").exists()


def test_16_bit_colour_png_keeps_its_depth_and_chunks_and_is_marked(tmp_path, photo, capsys):
    """A 16-bit RGB PNG (which Pillow, imageio's reader, reads as 8 bits) is read and written at
    16 bits; its resolution and text chunks travel to the output, which carries the Software text
    by which a rerun may replace it; a foreign PNG in the output's place is refused."""
    import struct

    import png

    gains = np.array([1.0, 0.8, 0.6])  # three channels blurred alike (a flip would turn the motion)
    clean, observed = photo.clean[..., None] * gains, photo.blurred[..., None] * gains
    observed = np.clip(np.rint(observed * 65535), 0, 65535).astype(np.uint16)
    written = tmp_path / "plain.png"
    with open(written, "wb") as f:
        png.Writer(128, 128, greyscale=False, bitdepth=16).write(f, observed.reshape(128, -1))
    chunks = io._png_chunks(written.read_bytes())
    extra = [(b"pHYs", struct.pack(">IIB", 11811, 11811, 1)), (b"tEXt", b"Title\x00bench shot 7")]
    blob = io._PNG_SIGNATURE + b"".join(io._png_chunk(k, d) for k, d in chunks[:1] + extra + chunks[1:])
    (tmp_path / "in.png").write_bytes(blob)
    source = io.read_image(tmp_path / "in.png")
    assert source.data.dtype == np.uint16 and source.rgb and np.array_equal(source.data, observed)
    assert not io.written_by_deblur(tmp_path / "in.png")

    run_cli(tmp_path / "in.png", tmp_path / "out.png", *MOTION, "--method", "richardson_lucy")
    restored = io.read_image(tmp_path / "out.png")
    assert restored.data.dtype == np.uint16 and restored.data.shape == observed.shape
    assert len(np.unique(restored.data)) > 256  # 16 bits, not 8 scaled up
    out_chunks = dict(io._png_chunks((tmp_path / "out.png").read_bytes()))
    assert out_chunks[b"pHYs"] == extra[0][1] and restored.metadata["png_chunks"] == extra
    assert io.written_by_deblur(tmp_path / "out.png")
    assert psnr(restored.data, clean * 65535, 65535) > psnr(observed, clean * 65535, 65535) + 2
    run_cli(tmp_path / "in.png", tmp_path / "out.png", *MOTION, "--method", "wiener")  # ours: replaced

    (tmp_path / "foreign.png").write_bytes(blob)
    capsys.readouterr()
    assert main(["run", str(tmp_path / "in.png"), str(tmp_path / "foreign.png"), *MOTION]) == 2
    assert "exists and was not written by `deblur run`" in capsys.readouterr().err
    assert (tmp_path / "foreign.png").read_bytes() == blob


def test_rgb_png_each_channel_restored_like_grey(tmp_path):
    colour = samples.motion_blurred_photo("astronaut", size=96, length=9, angle=30, noise_sigma=0.0)
    observed = np.clip(np.rint(colour.blurred * 255), 0, 255).astype(np.uint8)
    iio.imwrite(tmp_path / "in.png", observed)
    run_cli(tmp_path / "in.png", tmp_path / "out.tif", *MOTION, "--method", "richardson_lucy",
            "--output-dtype", "float32")
    restored = tifffile.imread(tmp_path / "out.tif")
    assert restored.shape == observed.shape and restored.dtype == np.float32
    # Independent reference: the green channel restored on its own as a grey image.
    green = io.ImageFile(observed[..., 1], "png")
    from deblur_ops import deblur

    expected = deblur(green.data.astype(np.float32), colour.psf, method="richardson_lucy")
    np.testing.assert_allclose(restored[..., 1], expected, atol=1e-3)


def test_tiff_keeps_resolution_dtype_and_improves_psnr(tmp_path, photo):
    tifffile.imwrite(tmp_path / "in.tif", photo.blurred, resolution=(4.0, 2.0), resolutionunit="CENTIMETER")
    run_cli(tmp_path / "in.tif", tmp_path / "out.tif", *MOTION, "--method", "wiener", "--param", "balance=0.03")
    with tifffile.TiffFile(tmp_path / "out.tif") as tif:
        restored = tif.asarray()
        tags = tif.pages[0].tags
        assert tags["XResolution"].value == (4, 1) and tags["YResolution"].value == (2, 1)
        assert tags["ResolutionUnit"].value == tifffile.RESUNIT.CENTIMETER
    assert restored.shape == photo.blurred.shape and restored.dtype == np.float32
    assert psnr(restored, photo.clean, 1) > psnr(photo.blurred, photo.clean, 1) + 2.0


def test_fits_cube_keeps_header_and_matches_slice_wise_deblur(tmp_path, photo):
    cube = np.stack([photo.blurred, photo.blurred.T]).astype(">f4")  # FITS is big-endian
    header = fits.Header({"OBJECT": "M51", "EXPTIME": 30.0, "BUNIT": "adu"})
    fits.PrimaryHDU(cube, header=header).writeto(tmp_path / "in.fits")
    run_cli(tmp_path / "in.fits", tmp_path / "out.fits", *MOTION, "--method", "richardson_lucy",
            "--param", "iterations=10")
    with fits.open(tmp_path / "out.fits") as hdus:
        restored, out_header = hdus[0].data, hdus[0].header
        assert out_header["OBJECT"] == "M51" and out_header["EXPTIME"] == 30.0 and out_header["BUNIT"] == "adu"
        assert "deblur run" in str(out_header["HISTORY"])
        assert restored.shape == cube.shape and restored.dtype.kind == "f" and restored.dtype.itemsize == 4
    from deblur_ops import deblur

    second = deblur(np.ascontiguousarray(photo.blurred.T), photo.psf, method="richardson_lucy", iterations=10)
    np.testing.assert_allclose(restored[1], second, atol=1e-4)


def test_ome_zarr_keeps_attributes_and_improves_psnr(tmp_path, photo):
    group = zarr.open_group(tmp_path / "in.ome.zarr", mode="w")
    multiscales = [{"version": "0.4", "axes": [{"name": "t", "type": "time"},
                                                {"name": "y", "type": "space", "unit": "micrometer"},
                                                {"name": "x", "type": "space", "unit": "micrometer"}],
                    "datasets": [{"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [1, 0.2, 0.2]}]},
                                 {"path": "1", "coordinateTransformations": [{"type": "scale", "scale": [1, 0.4, 0.4]}]}]}]
    group.attrs["multiscales"] = multiscales
    stack_in = np.stack([photo.blurred] * 3)
    level = group.create_array("0", shape=stack_in.shape, chunks=(1, 64, 64), dtype="f4")
    level[...] = stack_in
    run_cli(tmp_path / "in.ome.zarr", tmp_path / "out.ome.zarr", *MOTION, "--method", "richardson_lucy",
            "--param", "iterations=15")
    out = io.read_image(tmp_path / "out.ome.zarr")
    assert out.metadata["component"] == "0"
    assert out.metadata["group_attrs"]["multiscales"][0]["axes"] == multiscales[0]["axes"]
    assert [d["path"] for d in out.metadata["group_attrs"]["multiscales"][0]["datasets"]] == ["0"]
    restored = out.data.compute()
    assert restored.shape == stack_in.shape and restored.dtype == np.float32
    assert psnr(restored[2], photo.clean, 1) > psnr(photo.blurred, photo.clean, 1) + 2.0


def test_widefield_volume_restored_in_3d_with_generated_born_wolf(tmp_path):
    sample = samples.widefield_volume()
    tifffile.imwrite(tmp_path / "wf.tif", sample.blurred)
    run_cli(tmp_path / "wf.tif", tmp_path / "wf_rl.tif", "--psf-model", "born_wolf", "--shape", "15,31,31",
            "--method", "richardson_lucy", "--param", "iterations=20", "--quiet")
    restored = tifffile.imread(tmp_path / "wf_rl.tif")
    assert restored.shape == sample.blurred.shape
    correlation = lambda x: np.corrcoef(x.ravel(), sample.clean.ravel())[0, 1]  # noqa: E731
    # Measured 0.32 blurred, 0.77 restored: the beads and filaments get their sharpness back.
    assert correlation(sample.blurred) < 0.4 and correlation(restored) > 0.65


def test_scheduler_address_runs_on_dask_distributed(tmp_path, photo):
    distributed = pytest.importorskip("distributed")
    source = zarr.open_array(tmp_path / "in.zarr", mode="w", shape=(2, 128, 128), chunks=(1, 64, 64), dtype="f4")
    source[...] = np.stack([photo.blurred, photo.blurred.T])
    run_cli(tmp_path / "in.zarr", tmp_path / "local.zarr", *MOTION, "--method", "richardson_lucy")
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=False,
                                  dashboard_address=None) as cluster:
        run_cli(tmp_path / "in.zarr", tmp_path / "cluster.zarr", *MOTION, "--method", "richardson_lucy",
                "--scheduler", cluster.scheduler_address)
    np.testing.assert_array_equal(zarr.open_array(tmp_path / "cluster.zarr", mode="r")[...],
                                  zarr.open_array(tmp_path / "local.zarr", mode="r")[...])


def test_stack_helpers_loop_axes_and_errors():
    assert stack.loop_axes_for((4, 3, 32, 32), 2) == (0, 1)
    assert stack.loop_axes_for((4, 8, 32, 32), 3) == (0,)
    assert stack.loop_axes_for((8, 32, 32, 3), 2, rgb=True) == (0,)
    assert stack.loop_axes_for((32, 8, 32), 2, loop_axes=[1]) == (1,)
    with pytest.raises(ValueError, match="needs 2"):
        stack.loop_axes_for((4, 3, 32, 32), 2, loop_axes=[0])
    with pytest.raises(ValueError, match="colour axis"):
        stack.loop_axes_for((32, 32, 3), 2, rgb=True, loop_axes=[2])
    psf = catalog.make_psf("gaussian", sigma=1.0)
    with pytest.raises(ValueError, match="smaller than the halo"):
        stack.deblur_dask(da.zeros((64, 64), chunks=8), psf)


@pytest.mark.parametrize("rgb", [False, True], ids=["grey", "rgb"])
def test_blind_method_without_psf_restores_every_plane(small_models, rgb):
    """psf=None (a blind method): the blocks are 2D planes, each restored by the model on its own."""
    rng = np.random.default_rng(0)
    shape = (2, 2, 24, 32) + ((3,) if rgb else ())
    volume = rng.random(shape, dtype=np.float32)
    assert stack.loop_axes_for(shape, None, rgb=rgb) == (0, 1)
    assert stack.block_count(shape, None, rgb=rgb) == 4
    # The end-to-end network: one forward pass per plane, compared to the model itself.
    out = stack.deblur_stack(volume, None, method="blind-irc", rgb=rgb, noise_sigma=0.01, end_to_end="blind-irc")
    model = small_models["blind-irc"]
    for t, z in np.ndindex(2, 2):
        plane = torch.from_numpy(volume[t, z])
        batch = plane.permute(2, 0, 1)[None] if rgb else plane[None, None]
        with torch.no_grad():
            expected = model(batch, noise_sigma=0.01)[0]
        expected = expected.permute(1, 2, 0) if rgb else expected[0]
        np.testing.assert_allclose(out[t, z], expected.numpy(), atol=1e-5)


def test_psf_none_errors_name_the_fix():
    with pytest.raises(ValueError, match="needs a psf"):
        next(stack.iter_deblur_stack(np.zeros((2, 16, 16), np.float32), None, method="wiener"))
    with pytest.raises(ValueError, match="blind method in memory"):
        stack.deblur_dask(da.zeros((2, 64, 64), chunks=32), None, method="blind-irc")


def test_slicing_along_a_middle_axis_matches_a_manual_loop():
    rng = np.random.default_rng(0)
    volume = rng.random((24, 5, 20), dtype=np.float32)
    psf = catalog.make_psf("gaussian", sigma=1.0)
    from deblur_ops import deblur

    out = stack.deblur_stack(volume, psf, method="richardson_lucy", loop_axes=[1], iterations=5)
    for i in range(5):
        np.testing.assert_allclose(out[:, i], deblur(volume[:, i], psf, method="richardson_lucy", iterations=5),
                                   atol=1e-6)


def test_psf_file_and_model_are_exclusive(tmp_path, photo, capsys):
    tifffile.imwrite(tmp_path / "in.tif", photo.blurred)
    assert main(["run", str(tmp_path / "in.tif"), str(tmp_path / "o.tif"), "--quiet"]) == 2
    assert "give --psf FILE or --psf-model MODEL" in capsys.readouterr().err
    tifffile.imwrite(tmp_path / "psf.tif", photo.psf)
    assert main(["run", str(tmp_path / "in.tif"), str(tmp_path / "o.tif"), "--psf", str(tmp_path / "psf.tif"),
                 *MOTION]) == 2
    assert "not both" in capsys.readouterr().err
    run_cli(tmp_path / "in.tif", tmp_path / "a.tif", "--psf", tmp_path / "psf.tif", "--quiet")
    run_cli(tmp_path / "in.tif", tmp_path / "b.tif", *MOTION)
    np.testing.assert_allclose(tifffile.imread(tmp_path / "a.tif"), tifffile.imread(tmp_path / "b.tif"), atol=1e-6)


# Out of core. RL with 20 iterations, a Gaussian PSF (sigma 2, 17 x 17) and 6-radius halos.
# Tolerance: max |chunked - in memory| <= 1e-4 on data in [0, 1] in the overlap-valid region,
# i.e. one halo away from the stack's border (measured 2.9e-6; see deblur_ops.apps.stack.HALO_RADII).
GAUSSIAN = ["--psf-model", "gaussian", "--sigma", "2", "--quiet"]
TOLERANCE = 1e-4


def test_chunked_zarr_matches_in_memory_on_overlap_valid_region(tmp_path):
    picture = samples.motion_blurred_photo("camera", size=256, length=1, noise_sigma=0.0).clean
    clean = np.stack([picture, picture[::-1].copy(), picture.T.copy()])
    psf = catalog.make_psf("gaussian", sigma=2)
    blurred = samples.fft_convolve(torch.from_numpy(clean), torch.from_numpy(psf)).numpy()
    source = zarr.open_array(tmp_path / "in.zarr", mode="w", shape=blurred.shape, chunks=(1, 64, 64), dtype="f4")
    source[...] = blurred
    run_cli(tmp_path / "in.zarr", tmp_path / "out.zarr", *GAUSSIAN, "--method", "richardson_lucy",
            "--param", "iterations=20")
    chunked = zarr.open_array(tmp_path / "out.zarr", mode="r")[...]
    in_memory = stack.deblur_stack(blurred, psf, method="richardson_lucy", iterations=20)
    halo = stack.halo_width(psf.shape)[0]
    valid = (slice(None), slice(halo, -halo), slice(halo, -halo))
    error = np.abs(chunked - in_memory)[valid].max()
    print(f"chunked vs in memory: max |difference| {error:.2e} on the overlap-valid region")
    assert error <= TOLERANCE, f"max |chunked - in memory| = {error:.2e} on the valid region"
    assert psnr(chunked[valid], clean[valid], 1) > psnr(blurred[valid], clean[valid], 1) + 1.0


# Peak RSS from VmHWM, the high-water mark of this process image: ru_maxrss would also count the
# forked pytest process before exec (Linux keeps the larger of the two across execve).
_MEASURE = textwrap.dedent("""
    import json, sys
    from deblur_ops.apps.cli import main
    rc = main(sys.argv[1:])
    with open("/proc/self/status") as status:
        peak_kib = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
    print(json.dumps({"rc": rc, "peak_mib": peak_kib / 1024}))
""")


def _peak_rss_mib(*args) -> float:
    result = subprocess.run([sys.executable, "-c", _MEASURE, "run", *map(str, args)], capture_output=True,
                            text=True, check=True)
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["rc"] == 0
    return report["peak_mib"]


def _write_stack(path, slices: int, side: int, chunk: int):
    target = zarr.open_array(path, mode="w", shape=(slices, side, side), chunks=(1, chunk, chunk), dtype="f4")
    rng = np.random.default_rng(0)
    for i in range(slices):
        target[i] = rng.random((side, side), dtype=np.float32)
    return target.nbytes / 2**20


# The budget above the interpreter's own footprint (torch, dask, zarr loaded and one chunk run).
MEMORY_BUDGET_MIB = 160


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads the peak RSS from /proc (Linux)")
def test_out_of_core_peak_memory_stays_under_cap(tmp_path):
    wiener = [*GAUSSIAN, "--method", "wiener", "--param", "balance=0.01"]
    _write_stack(tmp_path / "small.zarr", 1, 256, 256)
    baseline = _peak_rss_mib(tmp_path / "small.zarr", tmp_path / "small_out.zarr", *wiener)
    size_mib = _write_stack(tmp_path / "big.zarr", 384, 512, 256)
    cap = baseline + MEMORY_BUDGET_MIB
    assert size_mib > MEMORY_BUDGET_MIB * 2, "the stack must be larger than the memory budget"
    peak = _peak_rss_mib(tmp_path / "big.zarr", tmp_path / "big_out.zarr", *wiener)
    print(f"out-of-core: stack {size_mib:.0f} MiB in + {size_mib:.0f} MiB out, baseline {baseline:.0f} MiB, "
          f"peak {peak:.0f} MiB, cap {cap:.0f} MiB")
    assert peak < cap
    out = zarr.open_array(tmp_path / "big_out.zarr", mode="r")
    assert out.shape == (384, 512, 512) and out.dtype == np.float32
    assert np.isfinite(out[383]).all() and float(np.abs(out[383]).max()) > 0
