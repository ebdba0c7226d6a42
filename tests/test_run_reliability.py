"""Reliability of the application layer: faults found by fault injection (issue 16), one test each.

Each test pins a promise of ``deblur run`` (README, "What `deblur run` promises") or of the
library under it: no data loss, no unsafe unpickling, no crash on flat frames or concurrent
caches, clear errors.
"""
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
    from deblur_ops.restore._common import noise_sigma_per_item

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
