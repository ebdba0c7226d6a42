import json
import statistics

import numpy as np
import pytest
import scipy.signal
import torch
from skimage.metrics import peak_signal_noise_ratio

from deblur_ops.apps import evaluate as ev
from deblur_ops.apps.cli import main
from deblur_ops.data import sample_image
from deblur_ops.psf import linear_motion_kernel


def test_make_kernel_specs():
    assert torch.equal(ev.make_kernel("motion:9:30"), linear_motion_kernel(9, 30))
    assert ev.make_kernel("gaussian:1.5").shape == (13, 13)
    assert float(ev.make_kernel("moffat:4:3").sum()) == pytest.approx(1.0)
    assert float(ev.make_kernel("shake:2:20").sum()) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="unknown kernel kind"):
        ev.make_kernel("disk:3")
    with pytest.raises(ValueError, match="needs 2..2 numbers"):
        ev.make_kernel("motion:9")


def test_parse_method():
    assert ev.parse_method("admm_tv") == ("admm_tv", {})
    assert ev.parse_method("richardson_lucy:iterations=5,padding=zeros,init=0.5") == (
        "richardson_lucy", {"iterations": 5, "padding": "zeros", "init": 0.5})
    with pytest.raises(ValueError, match="choose from"):
        ev.parse_method("lucy")


def test_degrade_is_valid_convolution_of_a_larger_crop():
    kernel = linear_motion_kernel(7, 45)
    clean, observed = ev.degrade("camera", kernel, 0.0, 40, seed=0)
    big = sample_image("camera", size=46).astype(np.float64)
    expected = scipy.signal.convolve2d(big, kernel.double().numpy(), mode="valid")
    np.testing.assert_allclose(observed, expected, atol=1e-5)
    np.testing.assert_array_equal(clean, big[3:-3, 3:-3].astype(np.float32))


def test_evaluate_report_and_files(tmp_path):
    report = ev.evaluate(["wiener", "richardson_lucy:iterations=5", "skimage_richardson_lucy:num_iter=5"],
                         ["motion:7:0", "gaussian:1"], ["camera", "coins"], [0.01], size=48, repeats=1)
    rows = report["results"]
    assert len(rows) == 2 * 2 * 4
    clean, observed = ev.degrade("coins", ev.make_kernel("gaussian:1"), 0.01, 48, seed=1001)
    blurred_row = next(r for r in rows if r["method"] == "blurred" and r["image"] == "coins" and r["kernel"] == "gaussian:1")
    assert blurred_row["psnr"] == pytest.approx(peak_signal_noise_ratio(clean, np.clip(observed, 0, 1), data_range=1.0))
    table = report["summary"]["0.01"]
    mine = [r["psnr"] for r in rows if r["method"] == "wiener"]
    assert table["wiener"]["psnr"] == pytest.approx(statistics.fmean(mine))
    assert table["wiener"]["psnr_per_kernel"][0] == pytest.approx(
        statistics.fmean(r["psnr"] for r in rows if r["method"] == "wiener" and r["kernel"] == "motion:7:0"))
    assert table["wiener"]["psnr"] > table["blurred"]["psnr"]
    assert all(r["seconds"] > 0 for r in rows if r["method"] != "blurred")
    text = ev.markdown(report)
    assert "| method | k1 | k2 | PSNR | SSIM | s/image |" in text and "| richardson_lucy:iterations=5 |" in text
    paths = ev.save(report, tmp_path)
    assert json.loads(paths[0].read_text())["summary"] == json.loads(json.dumps(report["summary"]))
    assert paths[1].read_text().startswith("Images camera, coins")


def test_richardson_lucy_matches_skimage_on_the_same_data():
    """Our RL in skimage's set-up against skimage on the observation clipped at 0 (RL's Poisson
    model needs y >= 0; skimage would let the estimate go negative where the noise is)."""
    report = ev.evaluate(["richardson_lucy:padding=zeros,init=0.5,iterations=10",
                          "skimage_richardson_lucy:nonnegative=true,num_iter=10", "skimage_richardson_lucy:num_iter=10"],
                         ["motion:9:45"], ["astronaut", "camera"], [0.02], size=48, repeats=1)
    rows = {(r["method"], r["image"]): r["psnr"] for r in report["results"]}
    for image in ("astronaut", "camera"):
        ours = rows["richardson_lucy:padding=zeros,init=0.5,iterations=10", image]
        assert ours == pytest.approx(rows["skimage_richardson_lucy:nonnegative=true,num_iter=10", image], abs=1e-3)
    assert rows["skimage_richardson_lucy:num_iter=10", "astronaut"] != pytest.approx(
        rows["skimage_richardson_lucy:nonnegative=true,num_iter=10", "astronaut"], abs=1e-3)
    with pytest.raises(ValueError, match="takes num_iter and nonnegative"):
        ev.evaluate(["skimage_richardson_lucy:iterations=3"], ["motion:5:0"], ["camera"], [0.01], size=32, repeats=1)


def test_cli_evaluate_writes_json(tmp_path, capsys):
    out = tmp_path / "r.json"
    code = main(["evaluate", "--methods", "admm_tv", "--kernels", "motion:5:90", "--images", "text",
                 "--size", "32", "--repeats", "1", "--json", str(out)])
    assert code == 0
    assert "| admm_tv |" in capsys.readouterr().out
    assert json.loads(out.read_text())["protocol"]["methods"] == ["admm_tv"]


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown images"):
        ev.evaluate(["wiener"], ["motion:5:0"], ["nonexistent"], size=32)
    with pytest.raises(ValueError, match="noise levels"):
        ev.evaluate(["wiener"], ["motion:5:0"], ["camera"], [-0.1], size=32)
    with pytest.raises(ValueError, match=r"size must be an integer >= 16, got 8$"):
        ev.evaluate(["wiener"], ["motion:5:0"], ["camera"], size=8)
    with pytest.raises(ValueError, match=r"repeats must be an integer >= 1, got 0$"):
        ev.evaluate(["wiener"], ["motion:5:0"], ["camera"], size=32, repeats=0)
    assert main(["evaluate", "--methods", "nope", "--size", "32"]) == 2


def test_field_observations_use_the_exact_model_unless_asked_for_the_bank():
    from deblur_ops.psf import exact_motion_blur

    clean, exact, field = ev.degrade_field("camera", "field:2", 0.0, 32, seed=0)
    _, bank, _ = ev.degrade_field("camera", "field:2", 0.0, 32, seed=0, forward="bank")
    margin = ev.make_field("field:2", (32, 32)).max_length
    full = ev.make_field("field:2", (32 + 2 * margin,) * 2)
    big = ev.to_batch(ev._grey(ev.sample_image("camera", size=32 + 2 * margin)))
    expected = exact_motion_blur(big, full.length, full.angle)[0, 0, margin:margin + 32, margin:margin + 32]
    np.testing.assert_allclose(exact, expected.numpy(), atol=1e-6)
    assert 1e-5 < np.abs(exact - bank).max() < 0.05  # the bank's interpolation error, small but there
    with pytest.raises(ValueError, match="forward must be one of"):
        ev.degrade_field("camera", "field:2", 0.0, 32, seed=0, forward="scatter")
    # the model error the report records is the noise-free PSNR between those two observations
    mse = float(((exact - bank) ** 2).mean())
    assert ev.field_model_error("camera", "field:2", 32) == pytest.approx(10 * np.log10(1 / mse), abs=0.01)


def test_field_report_records_the_bank_model_error():
    report = ev.evaluate(["irc"], ["field:2"], ["camera", "coins"], [0.0, 0.01], size=32, repeats=1)
    errors = report["model_error_db"]
    assert [(e["kernel"], e["image"]) for e in errors] == [("field:2", "camera"), ("field:2", "coins")]
    assert errors[0]["psnr"] == pytest.approx(ev.field_model_error("camera", "field:2", 32))
    assert "Model error of the solvers' MotionField" in ev.markdown(report)
    assert "model_error_db" not in ev.evaluate(["wiener"], ["motion:5:0"], ["camera"], [0.01], size=32, repeats=1)


def test_field_bank_option_gives_the_solvers_the_fine_bank_and_reports_both_model_errors():
    _, _, field = ev.degrade_field("camera", "field:2", 0.0, 32, seed=0, bank="fine")
    assert field.bank_kind == "fine"
    report = ev.evaluate(["nu_cg"], ["field:2"], ["camera"], [0.01], size=32, repeats=1, field_bank="fine")
    assert report["protocol"]["field_bank"] == "fine"
    (error,) = report["model_error_db"]
    assert error["psnr"] == pytest.approx(ev.field_model_error("camera", "field:2", 32, "paper"))
    assert error["psnr_fine"] == pytest.approx(ev.field_model_error("camera", "field:2", 32, "fine"))
    assert error["psnr_fine"] > error["psnr"]
    text = ev.markdown(report)
    assert "511-filter bank k1" in text and "fine bank (1 px, 2 degree steps) k1" in text
    assert "The solvers used the fine bank." in text
    with pytest.raises(ValueError, match="field_bank must be one of"):
        ev.evaluate(["nu_cg"], ["field:2"], ["camera"], size=32, field_bank="finer")
    from deblur_ops.apps.cli import build_parser

    assert build_parser().parse_args(["evaluate", "--nonuniform", "--field-bank", "fine"]).field_bank == "fine"


class TestShakeField:
    """``shakefield:SEED``: spatially varying camera shake made by the exact trajectory model."""

    def test_spec_parses_and_bad_specs_are_named(self):
        assert ev.is_shake_field("shakefield:3") and not ev.is_field("shakefield:3")
        trajectory, scale, rotation = ev.make_shake_field("shakefield:3", (40, 50))
        assert trajectory.shape == (ev.SHAKEFIELD_SAMPLES, 2) and scale.shape == rotation.shape == (40, 50)
        # the same spec gives the same field; the path has the protocol's length
        torch.testing.assert_close(ev.make_shake_field("shakefield:3", (40, 50))[1], scale, atol=0, rtol=0)
        assert float((trajectory[1:] - trajectory[:-1]).norm(dim=1).sum()) == pytest.approx(ev.SHAKEFIELD_LENGTH)
        assert float(scale.max() - scale.min()) > 0 or float(rotation.max() - rotation.min()) > 0
        for bad in ("shakefield:x", "shakefield:", "shakefield:-1"):
            with pytest.raises(ValueError, match="looks like shakefield:SEED"):
                ev.make_shake_field(bad, (8, 8))

    def test_observation_is_the_exact_trajectory_blur_and_methods_get_the_centre_psf(self):
        from deblur_ops.psf import exact_trajectory_blur

        size = 40
        clean, observed = ev.degrade_shake_field("camera", "shakefield:2", 0.0, size, seed=0)
        trajectory, _, _ = ev.make_shake_field("shakefield:2", (1, 1))
        margin = ev._shake_reach(trajectory)
        _, scale, rotation = ev.make_shake_field("shakefield:2", (size + 2 * margin,) * 2)
        inner = (slice(margin, margin + size),) * 2
        # Blurring the clean crop alone is exact away from its border (beyond the blur's reach); the finer
        # time step differs from the observation's by the sampling error only.
        expected = exact_trajectory_blur(torch.from_numpy(clean).double(), trajectory, scale[inner], rotation[inner],
                                         padding="zeros", step=0.02).numpy()
        r = margin
        np.testing.assert_allclose(observed[r:-r, r:-r], expected[r:-r, r:-r], atol=1e-4)
        # the centre PSF is the exact model's PSF where the maps are (1, 0): the trajectory as it is
        k = ev.shake_field_centre_psf("shakefield:2")
        assert k.shape[0] % 2 == 1 and float(k.sum()) == pytest.approx(1.0, abs=1e-5)
        kr = k.shape[0] // 2
        point = torch.zeros(k.shape, dtype=torch.float64)
        point[kr, kr] = 1.0
        torch.testing.assert_close(k.double(), exact_trajectory_blur(point, trajectory * 1.0, padding="zeros"),
                                   atol=1e-6, rtol=0)

    def test_evaluate_scores_methods_with_the_centre_psf(self):
        report = ev.evaluate(["wiener", "nu_cg:iterations=2"], ["shakefield:1"], ["camera"], [0.01], size=48,
                             repeats=1)
        rows = {r["method"]: r for r in report["results"]}
        assert set(rows) == {"blurred", "wiener", "nu_cg:iterations=2"}
        assert all(np.isfinite(r["psnr"]) for r in rows.values())
        # wiener's score is that of wiener given the centre PSF (the noise level it estimates itself)
        from deblur_ops import deblur

        clean, observed = ev.degrade_shake_field("camera", "shakefield:1", 0.01, 48, seed=0)
        estimate = deblur(observed, ev.shake_field_centre_psf("shakefield:1").numpy(), method="wiener")
        assert rows["wiener"]["psnr"] == pytest.approx(ev._scores(np.asarray(estimate), clean)[0], abs=1e-6)
