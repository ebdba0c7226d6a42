"""napari plugin: the "Spatially varying PSF" widget (PSF stack, picked stars, motion field; cancel)."""
import numpy as np
import pytest
import torch

napari = pytest.importorskip("napari")
pytest.importorskip("pytestqt")

from deblur_ops import deblur  # noqa: E402
from deblur_ops.data import scenes as samples  # noqa: E402
from deblur_ops.psf import MotionField, PSFGrid, psf_grid_from_points  # noqa: E402

# Small enough for a few seconds per restoration on 2 CPU cores; FWHM 2-4 px keeps the PSFs short.
SAMPLE = samples.astronomy_field(shape=(128, 128), fwhm_range=(2.0, 4.0), stars=60)
PEAK = np.unravel_index(np.argmax(SAMPLE.clean), SAMPLE.clean.shape)
STAGES = 5


def _isolated_stars(sample, radius=7):
    """The brightest star of each image quadrant with no other star within ``radius`` (row, col)."""
    ys, xs = np.nonzero(sample.clean > 1500)  # stars are single pixels of >= 2000 counts; galaxies stay below
    height, width = sample.clean.shape
    picks = []
    for top in (False, True):
        for left in (False, True):
            inside = [(sample.clean[y, x], y, x) for y, x in zip(ys, xs)
                      if (y >= height // 2) == top and (x >= width // 2) == left
                      and radius <= y < height - radius and radius <= x < width - radius
                      and np.sum((abs(ys - y) <= radius) & (abs(xs - x) <= radius)) == 1]
            picks.append(max(inside)[1:])
    return np.array(picks, dtype=float)


def _sv_widget(viewer, source, method="irc", **params):
    from napari_deblur._sv_widget import SpatiallyVaryingWidget

    widget = SpatiallyVaryingWidget(viewer)
    widget.image.value = viewer.layers["stars"]
    widget.source.value = source
    widget.method.value = method
    for name, value in params.items():
        widget.method_params[name].value = value
    return widget


def _viewer_with_sample(make_napari_viewer, data=SAMPLE.blurred):
    viewer = make_napari_viewer()
    viewer.add_image(data.copy(), name="stars", scale=(0.5, 0.5), translate=(3.0, 4.0))
    viewer.add_image(SAMPLE.psf, name="PSF grid stack", visible=False)
    return viewer


def test_method_chooser_lists_only_spatially_varying_methods(make_napari_viewer, manifest):
    from deblur_ops.restore import METHODS
    from napari_deblur._sv_widget import MOTION, POINTS, RAMP

    widget = _sv_widget(_viewer_with_sample(make_napari_viewer), "PSF stack layer", method="nu_cg")
    assert set(widget.method.choices) == {n for n, m in METHODS.items() if m.spatially_varying} >= {"irc", "nu_cg"}
    assert "wiener" not in widget.method.choices
    shown = lambda *fields: [not field.native.isHidden() for field in fields]  # noqa: E731
    motion_fields = (widget.length, widget.end_length, widget.ramp_axis)
    assert shown(widget.psf_layer, widget.points, widget.crop, *motion_fields) == [True] + [False] * 5
    widget.source.value = POINTS
    assert shown(widget.psf_layer, widget.points, widget.crop, *motion_fields) == [False, True, True] + [False] * 3
    widget.source.value = MOTION
    assert shown(*motion_fields) == [True, False, False]
    widget.motion.value = RAMP
    assert shown(*motion_fields) == [True, True, True]


def test_restore_with_the_psf_stack_layer(make_napari_viewer, run_to_end, manifest):
    from napari_deblur._sv_widget import STACK

    viewer = _viewer_with_sample(make_napari_viewer)
    widget = _sv_widget(viewer, STACK, stages=STAGES)
    side = SAMPLE.psf.shape[-1]
    viewer.add_image(SAMPLE.psf.reshape(9, side, side), name="flat PSF stack", visible=False)
    widget.psf_layer.value = viewer.layers["flat PSF stack"]
    np.testing.assert_array_equal(widget.psf().psfs.numpy(), SAMPLE.psf)  # row-major with 3 x 3 grid fields
    widget.psf_layer.value = viewer.layers["PSF grid stack"]
    widget.preview_grid()
    mosaic = viewer.layers["stars PSF grid"].data
    assert mosaic.shape == (3 * side + 2, 3 * side + 2)
    np.testing.assert_allclose(mosaic[:side, :side], SAMPLE.psf[0, 0] / SAMPLE.psf[0, 0].max(), rtol=1e-5)
    run_to_end(widget)
    output = widget.last_result
    expected = deblur(SAMPLE.blurred, PSFGrid(SAMPLE.psf), method="irc", stages=STAGES)
    np.testing.assert_allclose(output.data, expected, rtol=1e-4, atol=1e-2)
    np.testing.assert_allclose(output.scale, (0.5, 0.5))
    np.testing.assert_allclose(output.translate, (3.0, 4.0))
    # Measured: the brightest star's peak goes from 1736 to 3790 counts (truth 38921); PSNR +0.2 dB.
    assert output.data[PEAK] > 2.0 * SAMPLE.blurred[PEAK]
    psnr = lambda x: 10 * np.log10(SAMPLE.clean.max() ** 2 / np.mean((x - SAMPLE.clean) ** 2))  # noqa: E731
    assert psnr(output.data) > psnr(SAMPLE.blurred) + 0.1
    np.testing.assert_array_equal(viewer.layers["stars"].data, SAMPLE.blurred)


def test_restore_with_stars_picked_in_a_points_layer(make_napari_viewer, run_to_end, manifest):
    from napari_deblur._sv_widget import POINTS

    viewer = _viewer_with_sample(make_napari_viewer)
    stars = _isolated_stars(SAMPLE)
    # Points placed in world coordinates (the image has scale 0.5 and translate (3, 4)).
    viewer.add_points(stars * 0.5 + (3.0, 4.0), name="picked")
    widget = _sv_widget(viewer, POINTS, stages=STAGES)
    widget.points.value = viewer.layers["picked"]
    widget.crop.value = 15
    widget.grid_rows.value = widget.grid_cols.value = 2
    measured = widget.psf()
    reference = psf_grid_from_points(SAMPLE.blurred, stars, 15, (2, 2))
    np.testing.assert_allclose(measured.psfs.numpy(), reference.psfs.numpy())
    widget.preview_grid()
    assert viewer.layers["stars PSF grid"].data.shape == (31, 31)
    run_to_end(widget)
    result = widget.last_result.data
    np.testing.assert_allclose(result, deblur(SAMPLE.blurred, reference, method="irc", stages=STAGES),
                               rtol=1e-4, atol=1e-2)
    # Measured: 1736 -> 3449 counts at the brightest star, which was not one of the picked ones
    # (4872 before irc capped its preconditioner's gain, at a higher rms error: 550 against 544).
    assert result[PEAK] > 1.8 * SAMPLE.blurred[PEAK]
    np.testing.assert_array_equal(viewer.layers["stars"].data, SAMPLE.blurred)


def test_restore_with_stars_found_in_the_image(make_napari_viewer, run_to_end, manifest):
    """No picking: the widget finds the stars, shows them, and restores with their PSF grid."""
    from napari_deblur._sv_widget import FOUND

    from deblur_ops.psf import psf_grid_from_point_sources

    viewer = _viewer_with_sample(make_napari_viewer)
    widget = _sv_widget(viewer, FOUND, method="sv_richardson_lucy", iterations=10)
    assert widget.crop.native.isVisibleTo(widget) and not widget.points.native.isVisibleTo(widget)
    widget.crop.value = 15
    widget.grid_rows.value = widget.grid_cols.value = 2
    reference, positions, report, _ = psf_grid_from_point_sources(SAMPLE.blurred, 15, (2, 2))
    widget.preview_grid()
    np.testing.assert_allclose(widget.psf().psfs.numpy(), reference.psfs.numpy())
    marks = viewer.layers["stars PSF sources"]
    np.testing.assert_array_equal(marks.data, positions[report.used])
    np.testing.assert_allclose(marks.scale, (0.5, 0.5))
    np.testing.assert_allclose(marks.translate, (3.0, 4.0))
    assert f"from {len(report.used)} stars (marked in 'stars PSF sources')" in widget.status.value
    stars = np.argwhere(SAMPLE.clean > 1500)
    assert all(np.abs(stars - p).max(1).min() <= 2 for p in marks.data)  # every mark on a star
    widget.preview_grid()  # again: the marks are replaced, not added
    assert [layer.name for layer in viewer.layers].count("stars PSF sources") == 1
    run_to_end(widget)
    np.testing.assert_allclose(widget.last_result.data, deblur(SAMPLE.blurred, reference, method="sv_richardson_lucy",
                                                               iterations=10), rtol=1e-4, atol=1e-2)
    assert widget.last_result.data[PEAK] > 1.5 * SAMPLE.blurred[PEAK]
    np.testing.assert_array_equal(viewer.layers["stars"].data, SAMPLE.blurred)
    # A field without stars: the error says what to do instead.
    viewer.add_image(np.ones((64, 64), np.float32), name="flat")
    widget.image.value = viewer.layers["flat"]
    assert widget.psf is not None
    with pytest.raises(ValueError, match="Mark stars yourself"):
        widget.psf()


def test_motion_ramp_field_preview_and_restore(make_napari_viewer, run_to_end, manifest):
    from napari_deblur._sv_widget import MOTION, RAMP

    scene = samples.motion_blurred_photo(size=64, noise_sigma=0.0).clean
    field = MotionField.linear((64, 64), (3.0, 0.0), (9.0, 60.0), axis="y")
    blurred = field.blur(torch.from_numpy(scene)).numpy()
    viewer = _viewer_with_sample(make_napari_viewer, blurred)
    widget = _sv_widget(viewer, MOTION, stages=STAGES)
    widget.motion.value = RAMP
    widget.length.value, widget.angle.value = 3.0, 0.0
    widget.end_length.value, widget.end_angle.value = 9.0, 60.0
    widget.ramp_axis.value = "y"
    widget.preview_grid()
    np.testing.assert_allclose(viewer.layers["stars PSF grid"].data, field.psf_grid((3, 3)).mosaic())
    run_to_end(widget)
    result = widget.last_result.data
    np.testing.assert_allclose(result, deblur(blurred, field, method="irc", stages=STAGES), rtol=1e-4, atol=1e-4)
    error = lambda x: np.mean((x - scene) ** 2)  # noqa: E731
    assert error(result) < 0.5 * error(blurred)  # measured: 0.40 of the blurred image's MSE (no noise)


def test_cancel_leaves_no_layer_and_input_unchanged(make_napari_viewer, qtbot, manifest):
    from napari_deblur._sv_widget import STACK

    stack = np.stack([SAMPLE.blurred] * 6)
    viewer = _viewer_with_sample(make_napari_viewer, stack)
    widget = _sv_widget(viewer, STACK, stages=STAGES)
    widget.psf_layer.value = viewer.layers["PSF grid stack"]
    widget.run()
    with qtbot.waitSignal(widget.worker.aborted, timeout=60_000):
        widget.cancel()
    qtbot.waitUntil(lambda: widget.run_button.enabled, timeout=60_000)
    assert widget.last_result is None and not [layer for layer in viewer.layers if "[irc" in layer.name]
    assert "cancelled" in widget.status.value
    np.testing.assert_array_equal(viewer.layers["stars"].data, stack)

