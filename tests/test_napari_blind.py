"""napari plugin: "Estimate PSF" in the Deconvolve widget (issue 20, blind deblurring).

A shaky picture with no known PSF: Estimate PSF writes the kernel into a new layer, which becomes
the PSF layer, and Deconvolve restores with it. One test runs the real estimator on a small
picture; the others put a stand-in for ``estimate_psf`` that records the plane it gets (the slice
on screen, the colour picture, a cancel mid-run).
"""
import threading

import numpy as np
import pytest
import torch

napari = pytest.importorskip("napari")
pytest.importorskip("pytestqt")

from deblur_ops import deblur  # noqa: E402
from deblur_ops.data import sample_image  # noqa: E402
from deblur_ops.psf import linear_motion_kernel  # noqa: E402


def _shaky(side=96):
    """A crop of the brick picture blurred by a horizontal 7 px motion."""
    sharp = torch.from_numpy(sample_image("brick", size=side))
    kernel = linear_motion_kernel(7, 0)
    blurred = torch.nn.functional.conv2d(sharp[None, None], kernel.flip(0, 1)[None, None], padding=3)[0, 0]
    return blurred.numpy()


def _widget(viewer, image):
    from napari_deblur._widget import DeconvolveWidget

    widget = DeconvolveWidget(viewer)
    widget.image.value = viewer.layers[image]
    return widget


def _estimate_to_end(widget, qtbot):
    widget.estimate()
    assert widget.worker is not None and not widget.run_button.enabled
    qtbot.waitUntil(lambda: widget.run_button.enabled, timeout=120_000)


@pytest.fixture
def fake_estimate(monkeypatch):
    """``estimate_psf`` replaced by a recorder returning a fixed centred kernel; its calls as (plane, size, keywords)."""
    import napari_deblur._widget

    calls = []

    def estimate(plane, size, return_source=False, **kwargs):
        calls.append((plane, size, kwargs))
        kernel = np.zeros((size, size), np.float32)
        kernel[size // 2, size // 2 - 1: size // 2 + 2] = 1 / 3
        return (kernel, "edges") if return_source else kernel

    monkeypatch.setattr(napari_deblur._widget, "estimate_psf", estimate)
    return calls


@pytest.fixture
def shown(monkeypatch):
    import napari.utils.notifications

    messages = []
    monkeypatch.setattr(napari.utils.notifications, "show_error", lambda text: messages.append(("error", text)))
    return messages


def test_estimated_kernel_becomes_the_psf_layer_and_deconvolve_uses_it(manifest, make_napari_viewer, qtbot,
                                                                     run_to_end):
    from napari_deblur._widget import HISTORY_KEY, LAYER

    blurred = _shaky()
    viewer = make_napari_viewer()
    viewer.add_image(blurred.copy(), name="brick", scale=(0.5, 0.5))
    widget = _widget(viewer, "brick")
    widget.psf_size.value = 15
    _estimate_to_end(widget, qtbot)

    psf = viewer.layers["brick PSF (estimated, 15 px)"]
    kernel = psf.data
    assert kernel.shape == (15, 15) and kernel.min() >= 0
    assert kernel.sum() == pytest.approx(1.0, abs=1e-5)
    np.testing.assert_array_equal(viewer.layers["brick"].data, blurred)
    assert tuple(psf.scale) == (0.5, 0.5)  # the image's pixel size: no resampling warning, no resampling
    assert psf.metadata[HISTORY_KEY] == ["deblur-ops estimate_psf (size=15, from edges) from 'brick'"]
    assert widget.psf_source.value == LAYER and widget.psf_layer.value is psf
    assert widget.psf_layer.native.isVisibleTo(widget)
    assert widget.status.value == "wrote 'brick PSF (estimated, 15 px)', now the PSF layer"

    # Deconvolve now restores with the estimated kernel.
    method = widget.method.value
    assert method == "richardson_lucy"
    widget.method_params["iterations"].value = 3
    run_to_end(widget)
    result = widget.last_result
    assert result.name == "brick [richardson_lucy 3 it]"
    expected = deblur(blurred, kernel, method="richardson_lucy", iterations=3)
    np.testing.assert_allclose(result.data, expected, rtol=1e-5, atol=1e-6)
    assert "PSF layer 'brick PSF (estimated, 15 px)'" in result.metadata[HISTORY_KEY][-1]


def test_stacks_give_the_slice_on_screen_and_photos_their_colours(manifest, make_napari_viewer, qtbot,
                                                                   fake_estimate):
    rng = np.random.default_rng(0)
    stack = rng.random((4, 40, 48), dtype=np.float32)
    photo = rng.random((40, 48, 4), dtype=np.float32)  # RGBA: the alpha channel is not estimated on
    viewer = make_napari_viewer()
    viewer.add_image(stack, name="stack", scale=(2.0, 0.5, 0.25), translate=(0, 10, 20))
    viewer.add_image(photo, name="photo", rgb=True)
    widget = _widget(viewer, "stack")
    widget.mode.value = "slice by slice (2D)"
    viewer.dims.set_current_step(0, 2)
    widget.psf_size.value = 5
    _estimate_to_end(widget, qtbot)
    plane, size, keywords = fake_estimate[-1]
    np.testing.assert_array_equal(plane, stack[2])
    assert size == 5 and "sparsity" not in keywords  # richardson_lucy has no kernel prior: the estimator's own
    psf = viewer.layers["stack PSF (estimated, 5 px)"]
    assert tuple(psf.scale) == (0.5, 0.25) and tuple(psf.translate) == (10, 20)
    assert psf.metadata["estimated_from"] == {"image": "stack", "plane": {"axis 0": 2}, "size": 5,
                                               "source": "edges"}
    _estimate_to_end(widget, qtbot)  # a second estimate never replaces the first
    assert widget.psf_layer.value is viewer.layers["stack PSF (estimated, 5 px) (2)"]

    widget.image.value = viewer.layers["photo"]
    assert widget.method.value == "irc-net"  # a photo's default method takes a PSF: the estimate is offered
    assert widget.estimate_row.native.isVisibleTo(widget)
    _estimate_to_end(widget, qtbot)
    np.testing.assert_array_equal(fake_estimate[-1][0], photo[..., :3])
    assert widget.psf_layer.value is viewer.layers["photo PSF (estimated, 5 px)"]
    assert not widget.psf_layer.value.rgb
    np.testing.assert_array_equal(viewer.layers["stack"].data, stack)
    np.testing.assert_array_equal(viewer.layers["photo"].data, photo)


def test_estimate_uses_the_blind_methods_kernel_sparsity(manifest, make_napari_viewer, qtbot, fake_estimate):
    """With method blind (or blind-irc) chosen, Estimate PSF estimates with the form's kernel sparsity
    and dark-channel prior, as Deconvolve would, and says so in the layer's history."""
    from deblur_ops.psf.estimate import near_sharp_warning
    from napari_deblur._widget import HISTORY_KEY

    viewer = make_napari_viewer()
    viewer.add_image(_shaky(64), name="brick")
    widget = _widget(viewer, "brick")
    widget.psf_size.value = 9
    for method, value, dark in (("blind", 0.1, 1.0), ("blind-irc", 0.0, 0.0)):
        widget.method.value = method
        widget.method_params["sparsity"].value = value
        widget.method_params["dark_channel"].value = dark
        _estimate_to_end(widget, qtbot)
        assert fake_estimate[-1][2]["sparsity"] == value and fake_estimate[-1][2]["dark_channel"] == dark
        assert widget.psf_layer.value.metadata[HISTORY_KEY] == [
            f"deblur-ops estimate_psf (size=9, sparsity={value:g}, dark_channel={dark:g}, from edges) from 'brick'"]
        assert widget.psf_layer.value.metadata["estimated_from"]["sparsity"] == value
        assert widget.psf_layer.value.metadata["estimated_from"]["dark_channel"] == dark
        # The stand-in's 3-tap kernel is a blur of 0.8 px RMS radius: the near-sharp caution follows.
        assert widget.status.value == (f"wrote {widget.psf_layer.value.name!r}, now the PSF layer; {method} estimates "
                                       f"its own kernel: to restore with this one, choose a method that takes a PSF "
                                       f"(tv-irc is blind's own restoration step). Caution: "
                                       f"{near_sharp_warning(widget.psf_layer.value.data)}")


def test_bad_input_is_reported_once_and_writes_nothing(manifest, make_napari_viewer, qtbot, shown):
    from napari_deblur._widget import GENERATED, VOLUME

    viewer = make_napari_viewer()
    viewer.add_image(np.full((64, 64), 0.5, np.float32), name="flat")
    widget = _widget(viewer, "flat")
    widget.psf_size.value = 9
    _estimate_to_end(widget, qtbot)
    assert len(shown) == 1 and shown[0][1].startswith("Estimate PSF: the image is constant")
    assert widget.status.value == shown[0][1]
    assert [layer.name for layer in viewer.layers] == ["flat"] and widget.psf_source.value == GENERATED

    finished = widget.worker
    widget.psf_size.value = 10
    widget.estimate()
    assert shown[-1][1] == "Estimate PSF: 'PSF size (px)' must be odd (the kernel has a centre pixel), got 10; try 11"

    viewer.add_image(np.zeros((8, 32, 32), np.float32), name="volume")
    widget.image.value = viewer.layers["volume"]
    widget.mode.value = VOLUME
    widget.estimate()
    assert "choose 'process as' ▸ slice by slice (2D)" in shown[-1][1]
    assert widget.worker is finished and len(viewer.layers) == 2  # no worker started


def test_cancel_stops_the_estimate_midway(manifest, make_napari_viewer, qtbot, monkeypatch):
    """The real estimator, held after its first pyramid level until Cancel is pressed: it stops at
    its next level (its callback raises), long before its last, and no layer is written."""
    import napari_deblur._widget
    from deblur_ops.psf.estimate import estimate_steps

    started, pressed, seen = threading.Event(), threading.Event(), []
    real = napari_deblur._widget.estimate_psf

    def held(*args, callback, **kwargs):
        def wrapped(done, total):
            seen.append((done, total))
            if done == 1:
                started.set()
                pressed.wait(30)
            callback(done, total)
        return real(*args, callback=wrapped, **kwargs)

    monkeypatch.setattr(napari_deblur._widget, "estimate_psf", held)
    picture = np.random.default_rng(1).random((96, 96), dtype=np.float32)
    viewer = make_napari_viewer()
    viewer.add_image(picture, name="picture")
    widget = _widget(viewer, "picture")
    widget.psf_size.value = 15
    widget.estimate()
    qtbot.waitUntil(started.is_set, timeout=60_000)
    with qtbot.waitSignal(widget.worker.aborted, timeout=60_000):
        widget.cancel()
        pressed.set()
    qtbot.waitUntil(lambda: widget.run_button.enabled, timeout=60_000)
    total = estimate_steps((96, 96), 15)
    assert total > 5 and seen[0] == (1, total) and len(seen) <= 2
    assert [layer.name for layer in viewer.layers] == ["picture"]
    assert widget.status.value == "cancelled; no layer written"


def test_estimate_from_point_sources_marks_the_stars(manifest, make_napari_viewer, qtbot):
    """A star field (real estimate, no stand-in): the PSF comes from its stars, which a Points layer marks."""
    from deblur_ops.data.scenes import astronomy_field
    from napari_deblur._widget import HISTORY_KEY

    field = astronomy_field((128, 128), (1, 1), stars=40, galaxies=4, fwhm_range=(3.0, 3.0), seed=5)
    viewer = make_napari_viewer()
    viewer.add_image(field.blurred.astype(np.float32), name="sky", scale=(0.2, 0.2))
    widget = _widget(viewer, "sky")
    widget.psf_size.value = 21
    assert widget.estimate_from.value == "auto" and widget.estimate_from.native.isVisibleTo(widget)
    widget.estimate_from.value = "points"
    _estimate_to_end(widget, qtbot)
    psf, marks = viewer.layers["sky PSF (estimated, 21 px)"], viewer.layers["sky PSF sources"]
    assert psf.metadata["estimated_from"]["source"] == "points" and widget.psf_layer.value is psf
    n = len(marks.data)
    assert n >= 3 and psf.metadata[HISTORY_KEY][0].startswith(f"deblur-ops estimate_psf (size=21, from {n} point sources)")
    np.testing.assert_allclose(marks.scale, (0.2, 0.2))
    # Every mark sits on a star of the scene (its brightest pixel within 2 px).
    stars = np.argwhere(field.clean > 1500)  # the scene's stars are single pixels of >= 2000 counts
    assert all(np.abs(stars - p).max(1).min() <= 2 for p in marks.data)
    assert widget.status.value.startswith("wrote 'sky PSF (estimated, 21 px)' (from the")

    # From a ROI (data columns 40..127; world = 0.2 data): the marks are placed in the whole slice.
    viewer.add_shapes([np.array([[0.0, 8.0], [0.0, 25.4], [25.4, 25.4], [25.4, 8.0]])], shape_type="rectangle",
                      name="roi")
    widget.roi.value = viewer.layers["roi"]
    _estimate_to_end(widget, qtbot)
    marks = viewer.layers["sky PSF sources (2)"]
    assert len(marks.data) >= 3 and marks.data[:, 1].min() >= 40
    assert all(np.abs(stars - p).max(1).min() <= 2 for p in marks.data)
    np.testing.assert_array_equal(viewer.layers["sky"].data, field.blurred.astype(np.float32))


def test_deconvolve_relays_the_methods_warnings(manifest, make_napari_viewer, qtbot, monkeypatch):
    """Method blind on an unblurred picture warns that it may be nearly sharp: the warning reaches a
    napari notification (once) and the status line, and the result is still written."""
    import napari.utils.notifications

    from deblur_ops.apps.evaluate import degrade

    warned = []
    monkeypatch.setattr(napari.utils.notifications, "show_warning", warned.append)
    identity = torch.zeros(3, 3)
    identity[1, 1] = 1
    _, sharp = degrade("immunohistochemistry", identity, 0.01, 96, 0)
    viewer = make_napari_viewer()
    viewer.add_image(sharp.astype(np.float32), name="sharp")
    widget = _widget(viewer, "sharp")
    widget.method.value = "blind"
    widget.method_params["psf_size"].value = 15
    widget._start(preview=False)
    qtbot.waitUntil(lambda: widget.run_button.enabled, timeout=120_000)
    assert "sharp [blind]" in viewer.layers
    assert len(warned) == 1 and warned[0].startswith("Deconvolve: the estimated blur is small")
    assert widget.status.value.startswith("wrote 'sharp [blind]'. Warning: the estimated blur is small")


def test_estimate_reads_the_roi_rectangle_only(manifest, make_napari_viewer, qtbot, fake_estimate, shown):
    """With a rectangle chosen as ROI, Estimate PSF gets that part of the slice on screen (of a
    stack), says where in the history and ``estimated_from``; a rectangle too small for the PSF
    size is refused with what to do, and no estimate starts."""
    from napari_deblur._widget import HISTORY_KEY

    viewer = make_napari_viewer()
    stack = np.random.default_rng(0).random((3, 96, 120)).astype(np.float32)
    viewer.add_image(stack, name="stack")
    viewer.dims.set_current_step(0, 2)
    viewer.add_shapes([np.array([[10, 20], [10, 85], [70, 85], [70, 20]])], shape_type="rectangle", name="roi")
    widget = _widget(viewer, "stack")
    widget.psf_size.value = 9
    widget.mode.value = "slice by slice (2D)"
    widget.roi.value = viewer.layers["roi"]
    _estimate_to_end(widget, qtbot)
    plane, size, _ = fake_estimate[-1]
    np.testing.assert_array_equal(plane, stack[2, 10:71, 20:86])
    layer = widget.psf_layer.value
    assert layer.metadata["estimated_from"]["region"] == {"rows": [10, 71], "cols": [20, 86]}
    assert layer.metadata[HISTORY_KEY] == [
        "deblur-ops estimate_psf (size=9, from edges) from 'stack', axis 0 2, rows 10:71, columns 20:86"]

    calls = len(fake_estimate)
    widget.psf_size.value = 21
    widget.estimate()
    assert shown[-1][1] == ("Estimate PSF: the ROI rectangle of 'roi' covers 61 x 66 px of 'stack': a 21 px PSF "
                            "needs at least 63 px along each side; draw a larger rectangle, lower 'PSF size', or "
                            "clear the ROI to estimate from the whole slice")
    assert len(fake_estimate) == calls

    widget.roi.value = None  # no ROI: the whole slice again
    widget.psf_size.value = 9
    _estimate_to_end(widget, qtbot)
    np.testing.assert_array_equal(fake_estimate[-1][0], stack[2])
    assert "region" not in widget.psf_layer.value.metadata["estimated_from"]

    # Method blind's own region field (no ROI): the part its Deconvolve would estimate from.
    widget.method.value = "blind"
    widget.method_params["region"].value = "5:70, 10:90"
    _estimate_to_end(widget, qtbot)
    np.testing.assert_array_equal(fake_estimate[-1][0], stack[2, 5:70, 10:90])
    assert widget.psf_layer.value.metadata["estimated_from"]["region"] == {"rows": [5, 70], "cols": [10, 90]}
    calls = len(fake_estimate)
    widget.method_params["region"].value = "5:20,10:90"
    widget.estimate()
    assert "region rows 5:20, columns 10:90 is 15 x 80 px" in shown[-1][1] and len(fake_estimate) == calls
