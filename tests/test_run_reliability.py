"""Reliability of the application layer: faults found by fault injection (issue 16), one test each.

Each test pins a promise of ``deblur run`` (README, "What `deblur run` promises") or of the
library under it: no data loss, no unsafe unpickling, no crash on flat frames or concurrent
caches, clear errors.
"""
import contextlib
import threading

import numpy as np
import pytest
import tifffile
import torch

import deblur_ops
from deblur_ops.apps.cli import main
from deblur_ops.psf import inverse as inverse_module
from deblur_ops.psf import motion_bank


# --- item 6: the inverse-filter disk cache --------------------------------------------------------------

def test_inverse_filter_cache_threads_do_not_collide(tmp_path, monkeypatch):
    monkeypatch.setenv("DEBLUR_OPS_CACHE", str(tmp_path))
    bank, _ = motion_bank(lengths=[1, 5], angles=[0, 90], size=7)
    expected = inverse_module.inverse_filters(bank, 15, cache=False)
    # Every writer finishes its temporary file before any renames it: the worst interleaving, every time.
    barrier = threading.Barrier(4, timeout=30)
    real_save = torch.save

    def save_then_wait(*args, **kwargs):
        real_save(*args, **kwargs)
        barrier.wait()

    monkeypatch.setattr(torch, "save", save_then_wait)
    results, errors = [None] * 4, []

    def work(i):
        try:
            results[i] = inverse_module.inverse_filters(bank, 15)
        except Exception as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    for r in results:
        torch.testing.assert_close(r, expected, rtol=0, atol=0)
    assert [p.name for p in tmp_path.iterdir() if p.suffix == ".tmp"] == []
    torch.testing.assert_close(inverse_module.inverse_filters(bank, 15), expected, rtol=0, atol=0)


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04 cut short", b"not a torch file at all"])
def test_corrupt_inverse_filter_cache_is_recomputed(tmp_path, monkeypatch, content):
    monkeypatch.setenv("DEBLUR_OPS_CACHE", str(tmp_path))
    bank, _ = motion_bank(lengths=[1, 5], angles=[0, 90], size=7)
    expected = inverse_module.inverse_filters(bank, 15, cache=False)
    inverse_module.inverse_filters(bank, 15)
    (cached,) = tmp_path.iterdir()
    cached.write_bytes(content)
    torch.testing.assert_close(inverse_module.inverse_filters(bank, 15), expected, rtol=0, atol=0)
    torch.testing.assert_close(torch.load(cached, weights_only=True).float(), expected, rtol=0, atol=0)


# --- item 5: no unpickling of arbitrary objects -----------------------------------------------------------

class _Payload:
    """Unpickling this opens (creates) the marker file: proof that a file ran code when loaded."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture
def malicious(tmp_path):
    """(file, marker): a torch file whose unpickling would create ``marker``."""
    path, marker = tmp_path / "evil.pt", tmp_path / "PWNED"
    torch.save({"model": _Payload(marker), "format": _Payload(marker)}, path)
    assert not marker.exists()
    return path, marker


def test_checkpoint_resume_refuses_a_malicious_pickle(malicious, tmp_path, capsys):
    path, marker = malicious
    argv = ["train", "irc", "--steps", "1", "--batch-size", "1", "--patch", "24", "--quiet",
            "--out", str(tmp_path / "w.pt"), "--checkpoint", str(path), "--resume",
            "--set", "stages=1", "--set", "inner_steps=1", "--set", "max_length=5", "--set", "train_max_length=5",
            "--set", "psf_size=5"]
    assert main(argv) == 2
    assert not marker.exists()
    assert "refusing to unpickle" in capsys.readouterr().err


def test_weight_loading_paths_refuse_a_malicious_pickle(malicious, tmp_path, capsys):
    from deblur_ops.models import IRCNet
    from deblur_ops.models.pretrained import load_weights, read_weights

    path, marker = malicious
    with pytest.raises(ValueError, match="refusing to unpickle"):
        read_weights(path)  # what `deblur models` and every pretrained load go through
    with pytest.raises(ValueError, match="refusing to unpickle"):
        load_weights(path, IRCNet)
    with pytest.raises(ValueError, match="refusing to unpickle"):
        deblur_ops.deblur(np.zeros((32, 32), np.float32), np.ones((3, 3)) / 9, method="irc-net", weights=str(path))
    image = tmp_path / "in.tif"
    tifffile.imwrite(image, np.random.rand(32, 32).astype(np.float32))
    assert main(["run", str(image), str(tmp_path / "out.tif"), "--method", "irc-net", "--param",
                 f"weights={path}", "--psf-model", "motion", "--length", "5", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "evil.pt" in err and "Traceback" not in err
    assert main(["evaluate", "--methods", f"irc-net:weights={path}", "--kernels", "motion:5:0", "--images",
                 "camera", "--size", "32", "--repeats", "1"]) == 2
    assert "evil.pt" in capsys.readouterr().err
    assert not marker.exists()


def test_inverse_filter_cache_refuses_a_malicious_pickle(malicious, tmp_path, monkeypatch):
    path, marker = malicious
    cache = tmp_path / "cache"
    monkeypatch.setenv("DEBLUR_OPS_CACHE", str(cache))
    bank, _ = motion_bank(lengths=[1, 5], angles=[0, 90], size=7)
    expected = inverse_module.inverse_filters(bank, 15)
    (cached,) = cache.iterdir()
    cached.write_bytes(path.read_bytes())
    torch.testing.assert_close(inverse_module.inverse_filters(bank, 15), expected, rtol=0, atol=0)
    assert not marker.exists()


# --- item 7: blank and constant frames ----------------------------------------------------------------

@pytest.mark.parametrize("value", [0.0, 0.5])
def test_flat_frame_restores_to_itself_with_every_method(small_models, value):
    from deblur_ops.api import METHODS
    from deblur_ops.psf import linear_motion_kernel

    frame = np.full((32, 32), value, np.float32)
    psf = linear_motion_kernel(5, 30).numpy()
    for name in deblur_ops.methods():
        out = deblur_ops.deblur(frame, psf if METHODS[name].needs_psf else None, method=name, device="cpu")
        np.testing.assert_allclose(out, frame, rtol=1e-4, atol=0, err_msg=name)


@pytest.mark.parametrize("method", ["admm_tv", "irc", "nu_cg"])
def test_noise_derived_weight_is_valid_on_a_constant_frame(method):
    from deblur_ops.psf import linear_motion_kernel
    from deblur_ops.restore import get_method
    from deblur_ops.data.noise import noise_sigma_per_item

    frame = torch.full((1, 1, 32, 32), 0.5)
    sigma = noise_sigma_per_item(frame, None)
    assert 0 < float(sigma) <= torch.finfo(torch.float32).eps  # the rounding level, not 0
    out = get_method(method).function(frame, linear_motion_kernel(5, 30))
    # irc's truncated inverse filters pass the mean with a few per cent of error; the others exactly
    torch.testing.assert_close(out, frame, rtol=0, atol=5e-2 if method == "irc" else 1e-4)


def test_one_blank_slice_does_not_abort_a_stack():
    from deblur_ops.apps.stack import deblur_stack
    from deblur_ops.psf import gaussian_psf

    rng = np.random.default_rng(0)
    stack = rng.random((3, 32, 32)).astype(np.float32)
    stack[1] = 0.0
    out = deblur_stack(stack, gaussian_psf(1.0).numpy(), method="admm_tv", device="cpu")
    np.testing.assert_array_equal(out[1], 0.0)
    expected = deblur_ops.deblur(stack[0], gaussian_psf(1.0).numpy(), method="admm_tv", device="cpu")
    np.testing.assert_allclose(out[0], expected, rtol=0, atol=1e-6)


# --- items 9 and 15: the automatic Wiener balance -----------------------------------------------------------

def _brute_force_snr_pick(blurred, psf, snr_db, sigma, regularizer="identity"):
    """The expected-risk argmin of select_wiener_snr evaluated the long way: full complex float64 spectrum,
    every candidate, the power-law prior with the measured mean at f = 0."""
    import math

    from deblur_ops.boundary import pad_for_fft

    padded, _ = pad_for_fft(blurred.double(), tuple(psf.shape))
    h, w = padded.shape[-2:]
    n = h * w
    power = (torch.fft.fft2(padded).abs() ** 2).sum(1)[0]
    kernel = torch.zeros(h, w, dtype=torch.float64)
    kernel[:psf.shape[0], :psf.shape[1]] = psf.double()
    otf = torch.fft.fft2(torch.roll(kernel, (-(psf.shape[0] // 2), -(psf.shape[1] // 2)), (0, 1)))
    k2 = otf.abs() ** 2
    fy, fx = torch.meshgrid(torch.fft.fftfreq(h, dtype=torch.float64), torch.fft.fftfreq(w, dtype=torch.float64),
                            indexing="ij")
    f2 = (fy**2 + fx**2).clamp(min=1.0 / n)
    noise = n * sigma**2 * blurred.shape[1]
    clean = (power - noise).clamp(min=0) * f2 / k2.clamp(min=1e-12)
    reliable = (k2 > 0.5) & (f2 > 1.0 / n)
    prior = clean[reliable].median() / f2
    prior[0, 0] = (power[0, 0] - noise).clamp(min=0) / k2[0, 0]
    reg = ((2 - 2 * torch.cos(2 * math.pi * fy)) + (2 - 2 * torch.cos(2 * math.pi * fx))) ** 2 \
        if regularizer == "laplacian" else torch.ones_like(k2)
    risks = []
    for lam in 10 ** (-torch.as_tensor(snr_db, dtype=torch.float64) / 10):
        gain = otf.conj() / (k2 + lam * reg)
        risks.append(float(((1 - gain * otf).abs() ** 2 * prior + noise * gain.abs() ** 2).sum()))
    return int(np.argmin(risks)), risks


@pytest.mark.parametrize("value", [0.5, 60000.0])
def test_automatic_wiener_keeps_a_flat_frame(value):
    from deblur_ops.data.noise import select_wiener_snr
    from deblur_ops.psf import linear_motion_kernel
    from deblur_ops.restore.wiener import SNR_CANDIDATES_DB, wiener

    frame = torch.full((1, 1, 48, 48), value)
    psf = linear_motion_kernel(7, 30)
    out = wiener(frame, psf)  # the restore function itself, not deblur()'s flat-frame pass-through
    torch.testing.assert_close(out, frame, rtol=1e-4, atol=0)
    pick = int(select_wiener_snr(frame, psf, SNR_CANDIDATES_DB))
    assert SNR_CANDIDATES_DB[pick] == max(SNR_CANDIDATES_DB)  # nothing to regularise: the weakest


@pytest.mark.parametrize("regularizer", ["identity", "laplacian"])
@pytest.mark.parametrize("sigma", [0.002, 0.02])
def test_wiener_snr_selection_matches_brute_force_risk(regularizer, sigma):
    from deblur_ops.data import images
    from deblur_ops.data.noise import select_wiener_snr
    from deblur_ops.psf import linear_motion_kernel

    clean = torch.tensor(images.sample_image("camera", size=96), dtype=torch.float32)
    assert clean.ndim == 2
    psf = linear_motion_kernel(9, 30)
    blurred = torch.nn.functional.conv2d(clean[None, None], psf.flip(0, 1)[None, None], padding=4)
    blurred = blurred + sigma * torch.randn(blurred.shape, generator=torch.Generator().manual_seed(0))
    snr = torch.arange(0.0, 81.0)
    pick = int(select_wiener_snr(blurred, psf, snr, sigma, regularizer=regularizer))
    expected, risks = _brute_force_snr_pick(blurred, psf, snr, sigma, regularizer)
    # the binned risk may pick a neighbour where two candidates' risks are within the bins' 2 % resolution
    assert abs(pick - expected) <= 1
    assert risks[pick] <= risks[expected] * 1.005


# --- items 1 and 2: the input is never written, the output appears only complete --------------------------

zarr = pytest.importorskip("zarr")
fits = pytest.importorskip("astropy.io.fits")

GAUSS = ["--psf-model", "gaussian", "--sigma", "1", "--param", "balance=0.01", "--quiet"]


def _stack(shape=(4, 32, 32)):
    return np.random.default_rng(0).random(shape).astype(np.float32)


def _write_input(path, data):
    if path.suffix == ".zarr":
        zarr.open_array(str(path), mode="w", shape=data.shape, chunks=(1,) + data.shape[1:], dtype=data.dtype)[...] = data
    elif path.suffix == ".fits":
        fits.PrimaryHDU(data).writeto(path)
    else:
        tifffile.imwrite(path, data)


def _read(path):
    return np.asarray(zarr.open(str(path), mode="r")) if path.suffix == ".zarr" else \
        (fits.getdata(path) if path.suffix == ".fits" else tifffile.imread(path))


@pytest.mark.parametrize("suffix", [".zarr", ".tif", ".fits"])
def test_output_that_is_the_input_is_refused(tmp_path, capsys, suffix):
    data = _stack()
    source = tmp_path / f"s{suffix}"
    _write_input(source, data)
    link = tmp_path / f"link{suffix}"
    link.symlink_to(source)
    for output in (source, link):
        assert main(["run", str(source), str(output), *GAUSS]) == 2
        assert "is the input" in capsys.readouterr().err
        np.testing.assert_array_equal(_read(source), data)
    if suffix == ".zarr":
        assert main(["run", str(source), str(source / "inner.zarr"), *GAUSS]) == 2
        assert "is the input" in capsys.readouterr().err


@pytest.mark.parametrize("suffix", [".zarr", ".tif", ".fits"])
def test_existing_output_is_replaced_only_if_ours_or_with_overwrite(tmp_path, capsys, suffix):
    source = tmp_path / "in.tif"
    tifffile.imwrite(source, _stack())
    output = tmp_path / f"out{suffix}"
    if suffix == ".zarr":
        output.mkdir()
        (output / "precious.txt").write_text("user data")
    else:
        output.write_bytes(b"user data")
    assert main(["run", str(source), str(output), *GAUSS]) == 2
    assert "not written by `deblur run`" in capsys.readouterr().err
    assert (output / "precious.txt").read_text() == "user data" if suffix == ".zarr" else \
        output.read_bytes() == b"user data"
    assert main(["run", str(source), str(output), *GAUSS, "--overwrite"]) == 0
    first = _read(output)
    assert main(["run", str(source), str(output), *GAUSS, "--param", "balance=0.1"]) == 0  # ours: replaced
    assert not np.array_equal(_read(output), first)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_failed_write_keeps_the_previous_output_and_leaves_no_temporary(tmp_path, monkeypatch):
    from deblur_ops.apps import io

    source = tmp_path / "in.tif"
    tifffile.imwrite(source, _stack())
    output = tmp_path / "out.tif"
    assert main(["run", str(source), str(output), *GAUSS]) == 0
    before = output.read_bytes()
    real = io.write_image

    def write_half_then_fail(path, data, like=None):
        real(path, data[:1], like)
        raise OSError("disk full")

    monkeypatch.setattr(io, "write_image", write_half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        from deblur_ops.apps.run import run
        run(source, output, np.ones((3, 3)), balance=0.1, progress=False)
    assert output.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.tif", "out.tif"]


def test_missing_output_folder_is_reported_before_restoring(tmp_path, capsys, monkeypatch):
    from deblur_ops.apps import stack

    source = tmp_path / "in.tif"
    tifffile.imwrite(source, _stack())
    monkeypatch.setattr(stack, "deblur", lambda *a, **k: pytest.fail("restored before checking the output"))
    assert main(["run", str(source), str(tmp_path / "no" / "such" / "out.tif"), *GAUSS]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_sigint_leaves_no_complete_looking_output_and_resume_finishes(tmp_path):
    import json
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    data = np.random.default_rng(1).random((40, 32, 32)).astype(np.float32)
    source, output, reference = tmp_path / "in.zarr", tmp_path / "out.zarr", tmp_path / "ref.zarr"
    zarr.open_array(str(source), mode="w", shape=data.shape, chunks=(1, 32, 32), dtype=data.dtype)[...] = data
    # 40 chunks written in 5 batches of 8; a few Richardson-Lucy iterations each, so that the signal
    # lands after the first batch and before the last.
    argv = ["--psf-model", "gaussian", "--sigma", "1", "--method", "richardson_lucy", "--param", "iterations=10",
            "--quiet", "--device", "cpu"]
    command = [sys.executable, "-m", "deblur_ops", "run", str(source), str(output), *argv]
    root = Path(__file__).resolve().parents[1]
    # SIGINT as a terminal's Ctrl-C delivers it: a pytest started in the background by a shell without
    # job control inherits SIGINT ignored, and so would the run (Python keeps an ignored SIGINT ignored).
    process = subprocess.Popen(command, cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    partial = tmp_path / ".partial.out.zarr"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None:
        if partial.exists():
            with contextlib.suppress(Exception):
                if zarr.open(str(partial), mode="r").attrs["deblur_ops"]["done_batches"]:
                    break
        time.sleep(0.05)
    assert process.poll() is None, "the run finished before it could be interrupted"
    process.send_signal(signal.SIGINT)
    process.communicate(timeout=120)
    assert process.returncode != 0
    assert not output.exists()
    mark = zarr.open(str(partial), mode="r").attrs["deblur_ops"]
    assert mark["complete"] is False and 0 < len(mark["done_batches"]) < mark["batches"]
    with pytest.raises(ValueError, match="incomplete output"):
        from deblur_ops.apps import io
        io.read_image(partial)
    resumed = subprocess.run(command + ["--resume"], cwd=root, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout.strip().splitlines()[-1])["resumed_batches"] == len(mark["done_batches"])
    assert main(["run", str(source), str(reference), *argv]) == 0
    np.testing.assert_array_equal(np.asarray(zarr.open(str(output), mode="r")),
                                  np.asarray(zarr.open(str(reference), mode="r")))
    assert not partial.exists()
    assert zarr.open(str(output), mode="r").attrs["deblur_ops"]["complete"] is True


# --- items 14 and 16: resources and errors -----------------------------------------------------------------

def test_unreadable_inputs_end_in_one_line_naming_the_file(tmp_path, capsys):
    import imageio.v3 as iio

    png = tmp_path / "cut.png"
    iio.imwrite(png, (np.random.default_rng(0).random((64, 64)) * 255).astype(np.uint8))
    png.write_bytes(png.read_bytes()[:200])
    garbage = tmp_path / "garbage.fits"
    garbage.write_bytes(b"SIMPLE  = not really" * 50)
    store = tmp_path / "broken.zarr"
    _write_input(store, _stack())
    chunk = next(p for p in sorted(store.rglob("*")) if p.is_file() and p.name != "zarr.json" and ".z" not in p.name)
    chunk.write_bytes(chunk.read_bytes()[:20])
    for path in (png, garbage, store):
        assert main(["run", str(path), str(tmp_path / f"out_{path.stem}.tif"), *GAUSS]) == 2
        err = capsys.readouterr().err
        assert path.name in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_huge_generated_psf_is_refused_before_allocating(tmp_path, capsys):
    source = tmp_path / "in.tif"
    tifffile.imwrite(source, _stack((32, 32)))
    assert main(["run", str(source), str(tmp_path / "o.tif"), "--psf-model", "motion", "--length", "1e9",
                 "--quiet"]) == 2
    assert "4097 px limit" in capsys.readouterr().err
    assert main(["run", str(source), str(tmp_path / "o.tif"), "--psf-model", "airy", "--wavelength", "0.5",
                 "--na", "1.4", "--pixel-size", "1e-6", "--quiet"]) == 2
    assert "4097 px limit" in capsys.readouterr().err
    # A PSF larger than the image is cropped to it (as scikit-image and deblur() accept it), with a warning.
    with pytest.warns(UserWarning, match="larger than the image"):
        assert main(["run", str(source), str(tmp_path / "o.tif"), "--psf-model", "motion", "--length", "41",
                     "--quiet"]) == 0


@pytest.mark.parametrize("form", [["--chunks", "-1,16,16"], ["--chunks=-1,16,16"]])
def test_chunks_with_a_whole_axis_parse_in_both_forms(tmp_path, form):
    source = tmp_path / "in.tif"
    data = _stack((3, 32, 32))
    tifffile.imwrite(source, data)
    output = tmp_path / "out.zarr"
    assert main(["run", str(source), str(output), *GAUSS, "--halo", "4,4", *form]) == 0
    assert zarr.open(str(output), mode="r").chunks == (3, 16, 16)


def test_wiener_stack_names_a_string_snr():
    with pytest.raises(TypeError, match="snr_db"):
        deblur_ops.wiener_stack(torch.rand(1, 1, 16, 16), torch.ones(3, 3) / 9, snr_db="10")


# --- item 4 (part): clipping to an integer dtype is reported ------------------------------------------------

def test_clipped_pixels_are_counted_and_reported(tmp_path, capsys):
    import json

    from deblur_ops.apps import io

    image = np.zeros((32, 32), np.uint8)
    image[8:24, 8:24] = 255  # a sharpening restoration overshoots 255 at the edges and 0 outside them
    source = tmp_path / "in.tif"
    tifffile.imwrite(source, image)
    assert main(["run", str(source), str(tmp_path / "o.tif"), *GAUSS]) == 0
    captured = capsys.readouterr()
    summary = json.loads(captured.out.strip().splitlines()[-1])
    restored = deblur_ops.deblur(image.astype(np.float32), deblur_ops.psf.gaussian_psf(1.0).numpy(),
                                 method="wiener", balance=0.01, device="cpu")
    expected = int(np.count_nonzero((np.rint(restored) < 0) | (np.rint(restored) > 255)))
    assert summary["clipped_pixels"] == expected > 0
    assert f"{expected} pixels fell outside the uint8 range" in captured.err
    assert io.clipped_count(np.array([-0.4, 255.4, 255.6]), np.uint8) == 1


def test_irc_net_restores_large_images_in_tiles_close_to_the_whole(small_models, monkeypatch):
    # Item 15: IRC-Net's peak memory is ~110x its input (1024^2 grey: +469 MiB); above TILE_SIDE^2
    # pixels it works on overlapping tiles. Measured on a 1200x1300 photo with the shipped network:
    # 35.06 dB tiled vs 35.07 dB whole, peak +288 vs +483 MiB.
    from deblur_ops.models import methods
    from deblur_ops.psf import MotionField, linear_motion_kernel

    from deblur_ops.data import sample_image
    from deblur_ops.data.degrade import blur

    picture = torch.from_numpy(sample_image("camera")[100:220, 150:286].copy())[None, None]
    image = blur(picture, linear_motion_kernel(5, 30)) + 0.01 * torch.randn(1, 1, 120, 136)
    for psf in (linear_motion_kernel(5, 30), MotionField.linear((120, 136), (3.0, 0.0), (7.0, 90.0))):
        whole = methods.irc_net(image, psf, weights="irc-motion")
        sizes = []
        real = methods._in_tiles

        def spy(run, img, kernel):
            return real(lambda tile, p: sizes.append(tuple(tile.shape[-2:])) or run(tile, p), img, kernel)

        monkeypatch.setattr(methods, "TILE_SIDE", 64)
        monkeypatch.setattr(methods, "_in_tiles", spy)
        tiled = methods.irc_net(image, psf, weights="irc-motion")
        monkeypatch.undo()
        assert len(sizes) > 4 and max(h * w for h, w in sizes) < image.shape[-2] * image.shape[-1]
        inner = (..., slice(8, -8), slice(8, -8))
        assert float((tiled - whole)[inner].abs().mean()) < 5e-3
        assert float((tiled - whole).abs().max()) < 0.1
