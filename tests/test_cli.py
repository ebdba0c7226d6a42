import json
import subprocess
import sys

import imageio.v3 as iio
import numpy as np
import pytest

from deblur_ops import _extension
from deblur_ops.apps import bench
from deblur_ops.apps.cli import main


def test_doctor_reports_extension_and_backends(capsys):
    assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    assert "torch" in out and "CUDA" in out
    if _extension.LOADED:
        assert "extension  loaded from" in out
        assert "wiener_stack       extension" in out
    else:
        assert "extension  NOT loaded" in out


def test_module_entry_point_runs():
    result = subprocess.run([sys.executable, "-m", "deblur_ops", "doctor"], capture_output=True, text=True,
                            check=True)
    assert "backends" in result.stdout


def test_demo_improves_psnr_and_writes_side_by_side(tmp_path, capsys):
    out = tmp_path / "demo.png"
    assert main(["demo", "--image", "camera", "--size", "128", "--length", "9", "--output", str(out)]) == 0
    text = capsys.readouterr().out
    blurred = float(text.split("PSNR blurred")[1].split("dB")[0])
    restored = float(text.split("PSNR restored")[1].split("dB")[0])
    assert restored > blurred + 1.0
    picture = iio.imread(out)
    assert picture.shape == (128, 384) and picture.dtype == np.uint8


def test_demo_result_numbers():
    from deblur_ops.apps.demo import run_demo

    result = run_demo("astronaut", size=96, length=7, angle=60, noise_sigma=0.01, output=None)
    assert result.method == "irc-net"
    assert result.estimated_sigma == pytest.approx(0.01, rel=0.2)
    assert result.psnr_restored > result.psnr_blurred + 1.0
    assert result.psnr_wiener_stack > result.psnr_blurred
    assert result.psnr_best_in_stack >= result.psnr_wiener_stack
    assert len(result.psnr_per_snr) == 15
    wiener = run_demo("astronaut", method="wiener", size=96, length=7, angle=60, output=None)
    assert wiener.method == "wiener" and wiener.psnr_restored > wiener.psnr_blurred
    with pytest.raises(ValueError, match="unknown method 'sharpen'"):
        run_demo(method="sharpen", output=None)


def test_bench_tiny_run_writes_reports(tmp_path, capsys):
    report_json = tmp_path / "bench.json"
    args = ["bench", "--size", "48", "--shrink-shape", "1,2,16,16", "--nu-conv-size", "40",
            "--irc-shape", "40,48", "--rl-shape", "14,24,24", "--warmup", "0", "--repeats", "1",
            "--json", str(report_json), "--save", str(tmp_path / "results")]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "| wiener_stack |" in out and "| learnable_shrink |" in out
    report = json.loads(report_json.read_text())
    assert {(r["op"], r["pass_"]) for r in report["rows"]} == {
        ("wiener_stack", "forward"), ("wiener_stack", "forward+backward"),
        ("learnable_shrink", "forward"), ("learnable_shrink", "forward+backward"),
        ("nu_conv", "gather forward"), ("nu_conv", "gather forward+backward"),
        ("nu_conv", "scatter forward"), ("nu_conv", "scatter forward+backward"), ("irc_net", "inference"),
        ("irc", "inference"), ("richardson_lucy", "per iteration"), ("richardson_lucy", "30 iterations"),
        ("richardson_lucy", "per iteration, padding='circular'"),
        ("richardson_lucy", "to the peer's 30-iteration PSNR")}
    fft_bound = next(r for r in report["rows"] if r["op"] == "wiener_stack" and r["pass_"] == "forward")["note"]
    assert fft_bound.startswith("op time / FFT-only time = ")
    irc_rows = [r for r in report["rows"] if r["op"] == "irc"]
    assert len(irc_rows) == 2 and all(r["peer_ms"] > 0 and "eq. 17" in r["peer"] for r in irc_rows)
    assert report["matmul_gflops"] > 0
    for row in report["rows"]:
        if row["op"] == "nu_conv":
            # dense work of one forward: 2 * H * W * K * kh * kw, x4 with the backward
            per_forward = 2 * 40 * 40 * 4 * 31 * 31 / 1e9
            assert row["gflops"] == pytest.approx(per_forward * (4 if "backward" in row["pass_"] else 1))
    for row in report["rows"]:
        assert row["custom_ms"] > 0 and row["reference_ms"] > 0
        assert row["speedup_vs_reference"] == pytest.approx(row["reference_ms"] / row["custom_ms"])
    saved = sorted(p.suffix for p in (tmp_path / "results").iterdir())
    assert saved == [".json", ".md"]


@pytest.mark.parametrize("mode", ["gather", "scatter"])
@pytest.mark.parametrize("batch_field", [1, 2])
def test_nu_conv_by_filter_baseline_is_nu_conv(mode, batch_field):
    import torch

    import deblur_ops

    gen = torch.Generator().manual_seed(5)
    x = torch.rand(2, 3, 17, 22, generator=gen, dtype=torch.float64)
    bank = torch.rand(6, 5, 3, generator=gen, dtype=torch.float64)
    idx = torch.randint(0, 6, (batch_field, 4, 17, 22), generator=gen)
    w = torch.rand(batch_field, 4, 17, 22, generator=gen, dtype=torch.float64)
    torch.testing.assert_close(bench.nu_conv_by_filter(x, bank, idx, w, mode=mode),
                               deblur_ops.reference.nu_conv(x, bank, idx, w, mode=mode))


def test_bench_no_cpu_peers_leaves_out_skimage(tmp_path):
    pytest.importorskip("skimage")
    peers = {}
    for flags in ([], ["--no-cpu-peers"]):
        path = tmp_path / f"bench{len(flags)}.json"
        assert main(["bench", "--ops", "wiener_stack", "--size", "32", "--warmup", "0", "--repeats", "1",
                     *flags, "--json", str(path)]) == 0
        peers[tuple(flags)] = [r["peer"] for r in json.loads(path.read_text())["rows"]]
    assert peers[()] == ["skimage.restoration.wiener x15", None]
    assert peers[("--no-cpu-peers",)] == [None, None]


def test_bench_rejects_unknown_op():
    with pytest.raises(ValueError, match="unknown ops"):
        bench.run(["fft"])


def test_cli_reports_bad_arguments(capsys):
    with pytest.raises(SystemExit):
        main(["bench", "--shrink-shape", "8,x"])
    assert "expected comma-separated integers" in capsys.readouterr().err
    assert main(["demo", "--size", "0", "--output", ""]) == 2
    assert "size must be >= 1" in capsys.readouterr().err


def test_train_lists_recipes_and_trains_a_tiny_model(tmp_path, capsys):
    assert main(["train", "--list"]) == 0
    listed = capsys.readouterr().out
    assert "irc" in listed and "motion" in listed and "blind" in listed
    out = tmp_path / "tiny.pt"
    argv = ["train", "irc", "--steps", "2", "--batch-size", "1", "--patch", "24", "--validate-every", "1",
            "--quiet", "--out", str(out), "--checkpoint", str(tmp_path / "ckpt.pt"),
            "--set", "stages=1", "--set", "inner_steps=1", "--set", "max_length=5", "--set", "train_max_length=5",
            "--set", "psf_size=5"]
    assert main(argv) == 0
    summary = capsys.readouterr().out
    assert "validation_psnr" in summary and out.is_file()
    # resuming a finished run trains no further and writes the same weights again
    assert main(argv + ["--resume"]) == 0
    assert main(["train", "irc", "--set", "width=3", "--steps", "1", "--quiet", "--out", str(out)]) == 2
    assert "unknown --set option(s) ['width']" in capsys.readouterr().err
    assert main(["train", "nope"]) == 2


def test_models_lists_how_each_weight_was_trained(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "irc-motion" in out and "steps" in out and "[not shipped]" not in out
