"""napari plugin as a scientist meets it (issue 18): each test is one of the problems found in an hour
of use, with a real viewer under Xvfb. Small images and fast methods keep them quick."""
import numpy as np
import pytest

napari = pytest.importorskip("napari")
pytest.importorskip("pytestqt")

from deblur_ops import deblur, methods  # noqa: E402
from deblur_ops.apps.catalog import make_psf, method_parameters  # noqa: E402


@pytest.fixture
def shown(monkeypatch):
    """Messages the widgets show with napari's show_error / show_warning, as (kind, text)."""
    import napari.utils.notifications

    messages = []
    monkeypatch.setattr(napari.utils.notifications, "show_error", lambda text: messages.append(("error", text)))
    monkeypatch.setattr(napari.utils.notifications, "show_warning", lambda text: messages.append(("warning", text)))
    return messages


def _cells(seed=0, shape=(40, 48), peak=1000.0):
    """A grey picture of bright blobs, the kind of counts a microscope camera gives."""
    rng = np.random.default_rng(seed)
    image = np.zeros(shape, np.float32)
    rows, cols = rng.integers(4, shape[0] - 4, 12), rng.integers(4, shape[1] - 4, 12)
    image[rows, cols] = peak
    return deblur(image, make_psf("gaussian", sigma=1.0), method="wiener", balance=1e-3).clip(0) + 5


def _deconvolve(viewer, image, **method_params):
    from napari_deblur._widget import DeconvolveWidget

    widget = DeconvolveWidget(viewer)
    widget.image.value = viewer.layers[image]
    widget.method.value = "richardson_lucy"
    widget.psf_model.value = "gaussian"
    widget.psf_params["sigma"].value = 1.0
    for name, value in method_params.items():
        widget.method_params[name].value = value
    return widget


# 1 and 9 ------------------------------------------------------------------------------------------
def test_reruns_add_named_layers_with_their_own_contrast_and_replace_only_on_request(manifest, make_napari_viewer,
                                                                                    run_to_end):
    viewer = make_napari_viewer()
    viewer.add_image(_cells(), name="cells")
    widget = _deconvolve(viewer, "cells", iterations=3)
    assert not widget.replace.value
    run_to_end(widget)
    first = widget.last_result
    assert first.name == "cells [richardson_lucy 3 it]"
    np.testing.assert_allclose(first.contrast_limits, (first.data.min(), first.data.max()), rtol=1e-5)

    widget.method_params["iterations"].value = 4
    run_to_end(widget)
    second = widget.last_result
    assert second is not first and first in viewer.layers and second.name == "cells [richardson_lucy 4 it]"
    run_to_end(widget)
    assert widget.last_result.name == "cells [richardson_lucy 4 it] (2)"

    # New data ten times brighter, rerun into the same layer: its limits follow the new result.
    viewer.layers["cells"].data = _cells(peak=10_000.0)
    widget.replace.value = True
    run_to_end(widget)
    assert widget.last_result is viewer.layers["cells [richardson_lucy 4 it] (2)"]
    data = widget.last_result.data
    assert data.max() > 5 * first.data.max()
    np.testing.assert_allclose(widget.last_result.contrast_limits, (data.min(), data.max()), rtol=1e-5)
    assert len(viewer.layers) == 4


def test_motion_widget_and_deconvolve_never_write_the_same_layer(manifest, make_napari_viewer, qtbot, run_to_end,
                                                                 small_models):
    from napari_deblur._motion_widget import MotionWidget

    viewer = make_napari_viewer()
    viewer.add_image(np.random.default_rng(1).random((32, 32), dtype=np.float32), name="photo")
    motion = MotionWidget(viewer)
    motion.image.value = viewer.layers["photo"]
    motion.estimate()
    qtbot.waitUntil(lambda: motion.estimate_button.enabled, timeout=60_000)
    motion.use_field.value = True
    motion.deblur()
    qtbot.waitUntil(lambda: motion.estimate_button.enabled, timeout=60_000)
    blind_field = motion.last_result
    deconvolve = _deconvolve(viewer, "photo")
    deconvolve.method.value = "irc-net"
    deconvolve.psf_model.value = "motion"
    run_to_end(deconvolve)
    assert blind_field in viewer.layers and deconvolve.last_result is not blind_field
    assert blind_field.name == "photo [irc-net, estimated motion]"
    assert deconvolve.last_result.name == "photo [irc-net]"


# 2 -------------------------------------------------------------------------------------------------
def test_float_fields_keep_every_default_and_typed_value(manifest, make_napari_viewer):
    from napari_deblur._form import values
    from napari_deblur._widget import DeconvolveWidget

    widget = DeconvolveWidget(make_napari_viewer())
    for method in methods():
        widget.method.value = method
        read = values(widget.method_params)
        for parameter in method_parameters(method):
            if isinstance(parameter.default, float):
                assert read[parameter.name] == parameter.default, (method, parameter.name)
    widget.method.value = "nu_cg"
    assert widget.method_params["tolerance"].value == "0.0001" and values(widget.method_params)["tolerance"] == 1e-4
    widget.method.value = "rgdm"
    assert values(widget.method_params)["tol"] == 0.002
    widget.psf_model.value = "airy"
    widget.psf_params["pixel_size"].value = "0.065"
    assert values(widget.psf_params)["pixel_size"] == 0.065
    widget.psf_params["pixel_size"].value = "6.5e-2x"
    with pytest.raises(ValueError, match="pixel size .* must be a number"):
        values(widget.psf_params)


# 3 -------------------------------------------------------------------------------------------------
def test_voxel_size_fields_come_from_the_layer_scale_in_micrometres(manifest, make_napari_viewer, shown):
    from napari_deblur._widget import DeconvolveWidget

    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((4, 16, 16), np.float32), name="nm stack", scale=(300, 65, 65), units="nm",
                     axis_labels=("z", "y", "x"))
    widget = DeconvolveWidget(viewer)
    assert [field.label for field in widget.voxel] == ["voxel z (µm)", "voxel y (µm)", "voxel x (µm)"]
    np.testing.assert_allclose(widget.voxel_size(), (0.3, 0.065, 0.065))
    widget.voxel[0].value = "0.25"
    np.testing.assert_allclose(widget.voxel_size(), (0.25, 0.065, 0.065))
    widget.voxel[0].value = ""
    with pytest.raises(ValueError, match="voxel z"):
        widget.voxel_size()

    viewer.add_image(np.ones((3, 5, 5), np.float32) / 75, name="measured PSF", scale=(200, 65, 65), units="nm")
    widget.psf_source.value = "layer"
    widget.psf_layer.value = viewer.layers["measured PSF"]
    assert "voxel size (200.0, 65.0, 65.0)" in widget.status.value and "(300.0, 65.0, 65.0)" in widget.status.value
    assert shown and shown[-1][0] == "warning"

    # ... and the PSF is resampled to the image's voxel size: a Gaussian of sigma 300 nm along z,
    # sampled every 200 nm, keeps a sigma of about 300 nm sampled every 300 nm, and sums to 1.
    z = np.arange(-6, 7) * 200.0
    viewer.add_image(np.exp(-z ** 2 / (2 * 300.0 ** 2))[:, None, None] * np.ones((1, 3, 3), np.float32),
                     name="z PSF", scale=(200, 65, 65), units="nm")
    widget.psf_layer.value = viewer.layers["z PSF"]
    psf = widget.psf()
    profile = psf.sum((1, 2))
    zs = (np.arange(profile.size) - profile.size // 2) * 300.0
    assert psf.sum() == pytest.approx(1.0, abs=1e-5)
    assert np.sqrt((profile * zs ** 2).sum()) == pytest.approx(300.0, rel=0.15)


# 4 -------------------------------------------------------------------------------------------------
def test_defaults_follow_the_data(manifest, make_napari_viewer):
    from napari_deblur._widget import VOLUME, DeconvolveWidget

    viewer = make_napari_viewer()
    viewer.open_sample("deblur-ops", "widefield")
    widget = DeconvolveWidget(viewer)
    widget.image.value = viewer.layers["widefield"]
    assert (widget.mode.value, widget.method.value, widget.psf_source.value, widget.psf_model.value) == \
        (VOLUME, "richardson_lucy", "generated", "born_wolf")
    assert widget.psf_params["pixel_size"].value == "0.1" and widget.psf_params["z_step"].value == "0.25"
    assert np.ndim(widget.psf()) == 3 and widget.psf().min() >= 0
    # The PSF layer box offers other layers only, and starts empty.
    assert widget.psf_layer.value is None
    assert viewer.layers["widefield"] not in widget.psf_layer.choices
    assert viewer.layers["widefield PSF"] in widget.psf_layer.choices
    # Networks trained on photos are flagged on fluorescence data; every method has its description.
    widget.mode.value = "slice by slice (2D)"
    labels = dict(zip(widget.method.choices, (widget.method.native.itemText(i)
                                              for i in range(widget.method.native.count()))))
    assert labels["irc-net"] == "irc-net (trained on photos)" and labels["richardson_lucy"] == "richardson_lucy"
    tips = {widget.method.choices[i]: widget.method.native.itemData(i, 3) for i in range(len(widget.method.choices))}
    assert tips == methods()

    viewer.open_sample("deblur-ops", "astronomy")
    widget.image.value = viewer.layers["astronomy field"]
    assert (widget.method.value, widget.psf_model.value) == ("richardson_lucy", "moffat")
    viewer.add_image(np.random.default_rng(0).random((24, 24, 3), dtype=np.float32), name="holiday", rgb=True)
    widget.image.value = viewer.layers["holiday"]
    assert (widget.method.value, widget.psf_model.value) == ("irc-net", "motion")
    texts = [widget.method.native.itemText(i) for i in range(widget.method.native.count())]
    assert "irc-net" in texts and not any("trained on photos" in text for text in texts)


# 5 -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["volume", "slices"])
def test_progress_per_iteration_and_cancel_within_a_block(manifest, make_napari_viewer, qtbot, mode):
    from napari_deblur._widget import SLICES, VOLUME

    viewer = make_napari_viewer()
    viewer.add_image(np.random.default_rng(2).random((6, 40, 40), dtype=np.float32), name="stack")
    widget = _deconvolve(viewer, "stack")
    widget.mode.value = VOLUME if mode == "volume" else SLICES
    if mode == "volume":
        widget.psf_model.value = "born_wolf"
        widget.psf_params["shape"].value = "5,9,9"
    iterations = 400
    widget.method_params["iterations"].value = iterations
    widget.run()
    worker, steps = widget.worker, []
    worker.yielded.connect(lambda _: steps.append(1))
    assert worker.pbar.total == iterations * (1 if mode == "volume" else 6)
    qtbot.waitUntil(lambda: len(steps) >= 3, timeout=60_000)
    with qtbot.waitSignal(worker.aborted, timeout=60_000):
        widget.cancel()
    qtbot.waitUntil(lambda: widget.run_button.enabled, timeout=60_000)
    # Stopped inside the first block: far fewer iterations than one block has.
    assert len(steps) < iterations
    assert [layer.name for layer in viewer.layers] == ["stack"] and "cancelled" in widget.status.value


# 6 -------------------------------------------------------------------------------------------------
def test_errors_during_a_run_are_reported_once_without_traceback(manifest, make_napari_viewer, run_to_end, shown, capfd,
                                                                  monkeypatch):
    import deblur_ops.apps.stack

    viewer = make_napari_viewer()
    viewer.add_image(_cells(), name="cells")
    widget = _deconvolve(viewer, "cells")
    widget.method_params["init"].value = "-1"  # the method rejects it only when it runs
    run_to_end(widget)
    assert shown == [("error", "Deconvolve: init must be 'observed' or a positive number, got -1")]
    assert widget.status.value == shown[0][1]

    def out_of_memory(image, *args, **kwargs):
        raise RuntimeError("CUDA out of memory")

    monkeypatch.setattr(deblur_ops.apps.stack, "deblur", out_of_memory)
    run_to_end(widget)  # a RuntimeError once left the widget on "running..." with its buttons disabled
    assert len(shown) == 2 and shown[1][1].startswith("Deconvolve: CUDA out of memory")
    assert widget.status.value == shown[1][1] and not widget.cancel_button.enabled
    captured = capfd.readouterr()
    assert "Traceback" not in captured.err + captured.out
    assert [layer.name for layer in viewer.layers] == ["cells"]


# 7 -------------------------------------------------------------------------------------------------
def test_fits_written_with_header_history_and_metadata_not_shared(manifest, make_napari_viewer, run_to_end, tmp_path):
    fits = pytest.importorskip("astropy.io.fits")

    fits.PrimaryHDU(_cells(), header=fits.Header({"OBJECT": "M 51", "EXPTIME": 30.0})).writeto(tmp_path / "m51.fits")
    viewer = make_napari_viewer()
    [source] = viewer.open(str(tmp_path / "m51.fits"), plugin="deblur-ops")
    widget = _deconvolve(viewer, "m51", iterations=3)
    run_to_end(widget)
    result = widget.last_result
    assert result.metadata["fits_header"] is not source.metadata["fits_header"]
    result.metadata["fits_header"]["OBJECT"] = "edited"
    assert source.metadata["fits_header"]["OBJECT"] == "M 51"
    result.metadata["fits_header"]["OBJECT"] = "M 51"

    written = napari.save_layers(str(tmp_path / "restored.fits"), [result], plugin="deblur-ops")
    assert written == [str(tmp_path / "restored.fits")]
    with fits.open(tmp_path / "restored.fits") as hdus:
        header, data = hdus[0].header, hdus[0].data
        assert header["OBJECT"] == "M 51" and header["EXPTIME"] == 30.0
        history = " ".join(str(h) for h in header["HISTORY"])
        assert "richardson_lucy" in history and "iterations=3" in history
        np.testing.assert_array_equal(data, result.data)
    assert not list(tmp_path.glob(".*partial"))


# 8 -------------------------------------------------------------------------------------------------
def test_star_grid_failure_on_the_astronomy_sample_says_what_to_do(manifest, make_napari_viewer, shown):
    from napari_deblur._sv_widget import POINTS, SpatiallyVaryingWidget

    viewer = make_napari_viewer()
    viewer.open_sample("deblur-ops", "astronomy")
    viewer.add_points([[60.0, 113.0], [178.0, 126.0], [156.0, 106.0]], name="stars")
    widget = SpatiallyVaryingWidget(viewer)
    widget.image.value = viewer.layers["astronomy field"]
    widget.source.value = POINTS
    widget.points.value = viewer.layers["stars"]
    widget.preview_grid()
    # Three stars for nine nodes: the grid is built, and the widget says which nodes had no star.
    assert "astronomy field PSF grid" in viewer.layers
    assert widget.filled_nodes and "no usable star" in widget.status.value
    assert shown and shown[-1][0] == "warning" and "no usable star" in shown[-1][1]
    # With no usable star (one point in a corner: its crop leaves the image) it cannot be built,
    # and the message says what to do.
    viewer.layers["stars"].data = np.array([[1.0, 1.0]])
    shown.clear()
    widget.run()
    kind, message = shown[0]
    assert kind == "error" and message.startswith("Spatially varying PSF: could not build the 3 x 3 PSF grid")
    assert "fewer grid rows/columns" in message and widget.worker is None


# 10 ------------------------------------------------------------------------------------------------
def test_all_three_docks_fit_a_laptop_screen_and_long_messages_wrap(manifest, make_napari_viewer, qtbot):
    from napari_deblur._motion_widget import MotionWidget
    from napari_deblur._sv_widget import SpatiallyVaryingWidget
    from napari_deblur._widget import DeconvolveWidget

    viewer = make_napari_viewer(show=True)
    viewer.open_sample("deblur-ops", "widefield")
    docks = [DeconvolveWidget(viewer), SpatiallyVaryingWidget(viewer), MotionWidget(viewer)]
    for dock in docks:
        viewer.window.add_dock_widget(dock, area="right")
    window = viewer.window._qt_window
    window.resize(1366, 768)
    qtbot.wait(50)
    assert window.minimumSizeHint().height() <= 768 and window.height() <= 768
    for dock in docks:
        assert dock.minimumSizeHint().height() <= 250
    deconvolve = docks[0]
    width = deconvolve.sizeHint().width()
    deconvolve.status.value = "a very long status message about a PSF " * 20
    assert deconvolve.sizeHint().width() == width
    assert deconvolve.status.native.wordWrap()


# 11 ------------------------------------------------------------------------------------------------
def test_parameters_have_human_labels_dropdowns_and_axis_names(manifest, make_napari_viewer):
    from magicgui import widgets

    from napari_deblur._widget import DeconvolveWidget

    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((3, 8, 9, 10), np.float32), name="tzyx", axis_labels=("t", "z", "y", "x"))
    widget = DeconvolveWidget(viewer)
    widget.mode.value = "slice by slice (2D)"
    widget.method.value = "richardson_lucy"
    acceleration, padding = widget.method_params["acceleration"], widget.method_params["padding"]
    assert isinstance(acceleration, widgets.ComboBox) and acceleration.choices == ("none", "biggs_andrews")
    assert isinstance(padding, widgets.ComboBox) and padding.choices == ("extended", "reflect", "circular", "zeros")
    assert widget.method_params["init"].label == "start from"
    assert "[init]" in widget.method_params["init"].tooltip
    widget.method.value = "irc"
    assert widget.method_params["inverse"].choices == ("grid", "bank")
    assert widget.method_params["rho"].label == "ADMM penalty ρ"
    widget.psf_model.value = "airy"
    assert widget.psf_params["na"].label == "numerical aperture (NA)"
    assert widget.psf_params["wavelength"].label == "emission wavelength (µm)"
    assert widget.method.tooltip == methods()["irc"] and widget.description.value == methods()["irc"]
    assert [label for label, _ in widget._slice_axes()] == ["z (axis 1 of 4)", "y (axis 2 of 4)", "x (axis 3 of 4)"]
