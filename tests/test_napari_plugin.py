"""napari plugin: manifest, sample data, FITS reader, and the Deconvolve widget end to end (under Xvfb)."""
import numpy as np
import pytest

import deblur_ops

napari = pytest.importorskip("napari")
npe2 = pytest.importorskip("npe2")
pytest.importorskip("pytestqt")

from deblur_ops import deblur  # noqa: E402
from deblur_ops.data import scenes as samples  # noqa: E402
from deblur_ops.apps.stack import deblur_stack  # noqa: E402

def test_manifest_validates_and_every_command_imports(manifest):
    from npe2.manifest.utils import import_python_name

    assert manifest.name == "deblur-ops"
    assert [w.display_name for w in manifest.contributions.widgets] == ["Deconvolve", "Spatially varying PSF",
                                                                     "Estimate motion"]
    assert {s.key for s in manifest.contributions.sample_data} == {"widefield", "astronomy", "photo", "motion_field"}
    for command in manifest.contributions.commands:
        assert callable(import_python_name(command.python_name)), command.id


def test_fits_reader_keeps_header(tmp_path, manifest):
    fits = pytest.importorskip("astropy.io.fits")
    from napari_deblur._reader import get_reader

    cube = np.arange(2 * 5 * 7, dtype=np.float32).reshape(2, 5, 7)
    fits.PrimaryHDU(cube, header=fits.Header({"OBJECT": "NGC 1300"})).writeto(tmp_path / "cube.fits")
    assert get_reader(str(tmp_path / "cube.tif")) is None
    [(data, meta, kind)] = get_reader(str(tmp_path / "cube.fits"))(str(tmp_path / "cube.fits"))
    np.testing.assert_array_equal(data, cube)
    assert kind == "image" and meta["name"] == "cube" and meta["metadata"]["fits_header"]["OBJECT"] == "NGC 1300"


def _widget(viewer, image, psf_layer=None, model=None, mode=None, method="richardson_lucy", **params):
    from napari_deblur._widget import SLICES, DeconvolveWidget

    widget = DeconvolveWidget(viewer)
    widget.image.value = viewer.layers[image]
    widget.mode.value = mode or SLICES
    widget.method.value = method
    if psf_layer is not None:
        widget.psf_source.value = "layer"
        widget.psf_layer.value = viewer.layers[psf_layer]
    else:
        widget.psf_source.value = "generated"
        widget.psf_model.value = model[0]
        for name, value in model[1].items():
            widget.psf_params[name].value = value
    for name, value in params.items():
        widget.method_params[name].value = value
    return widget


def test_photo_sample_restored_from_the_kernel_layer(make_napari_viewer, run_to_end, manifest):
    viewer = make_napari_viewer()
    viewer.open_sample("deblur-ops", "photo")
    source = viewer.layers["motion-blurred photo"]
    before = source.data.copy()
    widget = _widget(viewer, "motion-blurred photo", psf_layer="motion kernel", iterations=20)
    run_to_end(widget)
    result = widget.last_result.data
    expected = deblur(before, viewer.layers["motion kernel"].data, method="richardson_lucy", iterations=20)
    np.testing.assert_allclose(result, expected, atol=1e-5)
    clean = samples.motion_blurred_photo().clean
    psnr = lambda x: 10 * np.log10(1 / np.mean((x - clean) ** 2))  # noqa: E731
    assert psnr(result) > psnr(before) + 2.0
    np.testing.assert_array_equal(source.data, before)


def test_widefield_volume_in_3d_keeps_scale_and_replaces_the_previous_result_on_request(make_napari_viewer, run_to_end, manifest):
    from napari_deblur._widget import VOLUME

    viewer = make_napari_viewer()
    viewer.open_sample("deblur-ops", "widefield")
    source = viewer.layers["widefield"]
    before = source.data.copy()
    widget = _widget(viewer, "widefield", psf_layer="widefield PSF", mode=VOLUME, iterations=5)
    run_to_end(widget)
    output = widget.last_result
    np.testing.assert_allclose(output.scale, source.scale)
    expected = deblur(before, viewer.layers["widefield PSF"].data, method="richardson_lucy", iterations=5)
    np.testing.assert_allclose(output.data, expected, rtol=1e-4, atol=1e-3)
    widget.method_params["iterations"].value = 2
    widget.replace.value = True
    run_to_end(widget)
    assert widget.last_result is output and output in viewer.layers
    expected = deblur(before, viewer.layers["widefield PSF"].data, method="richardson_lucy", iterations=2)
    np.testing.assert_allclose(output.data, expected, rtol=1e-4, atol=1e-3)
    np.testing.assert_array_equal(source.data, before)


def test_widefield_slice_by_slice_with_generated_airy(make_napari_viewer, run_to_end, manifest):
    from deblur_ops.apps.catalog import make_psf

    viewer = make_napari_viewer()
    viewer.open_sample("deblur-ops", "widefield")
    model = ("airy", {"wavelength": 0.52, "na": 1.2, "pixel_size": 0.1})
    widget = _widget(viewer, "widefield", model=model, method="wiener")
    run_to_end(widget)
    expected = deblur_stack(viewer.layers["widefield"].data, make_psf("airy", **model[1]), method="wiener")
    np.testing.assert_allclose(widget.last_result.data, expected, atol=1e-4)


def test_astronomy_field_with_generated_moffat_improves_the_stars(make_napari_viewer, run_to_end, manifest):
    viewer = make_napari_viewer()
    viewer.open_sample("deblur-ops", "astronomy")
    widget = _widget(viewer, "astronomy field", model=("moffat", {"fwhm": 4.5, "beta": 3.0}), iterations=30)
    assert widget.preview.pixmap() is not None and not widget.preview.pixmap().isNull()
    run_to_end(widget)
    result = widget.last_result.data
    sample = samples.astronomy_field()
    # The brightest star concentrates more flux in its peak pixel once the seeing is undone.
    peak = np.unravel_index(np.argmax(sample.clean), sample.clean.shape)
    assert result[peak] > 1.5 * sample.blurred[peak]


def test_cancel_leaves_no_layer_and_input_unchanged(make_napari_viewer, qtbot, manifest):
    viewer = make_napari_viewer()
    stack = np.random.default_rng(0).random((40, 128, 128), dtype=np.float32)
    viewer.add_image(stack, name="stack")
    widget = _widget(viewer, "stack", model=("gaussian", {"sigma": 2.0}), iterations=200)
    widget.run()
    with qtbot.waitSignal(widget.worker.aborted, timeout=60_000):
        widget.cancel()
    qtbot.waitUntil(lambda: widget.run_button.enabled, timeout=60_000)
    assert [layer.name for layer in viewer.layers] == ["stack"]
    assert "cancelled" in widget.status.value
    np.testing.assert_array_equal(viewer.layers["stack"].data, stack)


def test_method_and_psf_forms_follow_the_signatures(make_napari_viewer, manifest):
    from deblur_ops.apps.catalog import method_parameters, psf_parameters
    from napari_deblur._widget import DeconvolveWidget

    widget = DeconvolveWidget(make_napari_viewer())
    for method in widget.method.choices:
        widget.method.value = method
        assert [w.name for w in widget.method_params] == [p.name for p in method_parameters(method)]
    widget.psf_model.value = "born_wolf"
    assert [w.name for w in widget.psf_params] == [p.name for p in psf_parameters("born_wolf")]


def test_rgb_layer_restored_per_channel_and_kept_in_range(make_napari_viewer, run_to_end, manifest):
    from deblur_ops.apps.catalog import make_psf

    sample = samples.motion_blurred_photo("astronaut", size=96, length=9, angle=0, noise_sigma=0.0)
    viewer = make_napari_viewer()
    viewer.add_image(sample.blurred, name="astronaut", rgb=True)
    widget = _widget(viewer, "astronaut", model=("motion", {"length": 9.0, "angle": 0.0}), iterations=10)
    run_to_end(widget)
    result = widget.last_result
    assert result.rgb and result.data.shape == sample.blurred.shape
    kernel = make_psf("motion", length=9, angle=0)
    red = deblur(np.ascontiguousarray(sample.blurred[..., 0]), kernel, method="richardson_lucy", iterations=10)
    np.testing.assert_allclose(result.data[..., 0], np.clip(red, 0, 1), atol=1e-5)


def test_slicing_along_a_chosen_axis(make_napari_viewer, run_to_end, manifest):
    from deblur_ops.apps.catalog import make_psf
    from napari_deblur._widget import SLICES, VOLUME

    viewer = make_napari_viewer()
    volume = np.random.default_rng(1).random((2, 24, 6, 28), dtype=np.float32)
    viewer.add_image(volume, name="tzyx")
    widget = _widget(viewer, "tzyx", model=("gaussian", {"sigma": 1.0}), iterations=3)
    assert not widget.slice_axis.native.isHidden() and widget.slice_axis.choices == (1, 2, 3)
    assert widget.slice_axis.value == 1
    widget.mode.value = VOLUME
    assert widget.slice_axis.native.isHidden()
    widget.mode.value = SLICES
    widget.slice_axis.value = 2
    run_to_end(widget)
    result = widget.last_result.data
    psf = make_psf("gaussian", sigma=1.0)
    for t in range(2):
        for y in range(6):
            expected = deblur(np.ascontiguousarray(volume[t, :, y]), psf, method="richardson_lucy", iterations=3)
            np.testing.assert_allclose(result[t, :, y], expected, atol=1e-5)


def test_preview_restores_only_the_slice_on_screen(make_napari_viewer, run_to_end, manifest):
    from deblur_ops.apps.catalog import make_psf

    viewer = make_napari_viewer()
    viewer.open_sample("deblur-ops", "widefield")
    source = viewer.layers["widefield"]
    viewer.dims.set_current_step(0, 11)
    model = ("gaussian", {"sigma": 1.5})
    widget = _widget(viewer, "widefield", model=model, method="wiener", balance="0.01")
    run_to_end(widget, preview=True)
    preview = viewer.layers["widefield [wiener] preview"]
    expected = deblur(source.data[11], make_psf("gaussian", sigma=1.5), method="wiener", balance=0.01)
    np.testing.assert_allclose(preview.data, expected, atol=1e-5)
    np.testing.assert_allclose(preview.scale, source.scale[1:])
    assert "widefield [wiener]" not in viewer.layers


def test_roi_preview_restores_only_the_rectangle_of_the_slice(make_napari_viewer, qtbot, manifest):
    from deblur_ops.apps.catalog import make_psf

    volume = np.random.default_rng(2).random((3, 64, 80), dtype=np.float32)
    viewer = make_napari_viewer()
    viewer.add_image(volume, name="volume", scale=(1.0, 2.0, 2.0), translate=(0.0, 5.0, 5.0))
    # World corners (25, 29) and (85, 105) are data rows 10..40 and columns 12..50.
    viewer.add_shapes([np.array([[25.0, 29.0], [25.0, 105.0], [85.0, 105.0], [85.0, 29.0]])],
                      shape_type="rectangle", name="roi")
    viewer.dims.set_current_step(0, 1)
    widget = _widget(viewer, "volume", model=("gaussian", {"sigma": 1.5}), method="wiener", balance="0.01")
    widget.roi.value = viewer.layers["roi"]
    widget.preview_roi()
    qtbot.waitUntil(lambda: widget.run_button.enabled, timeout=60_000)
    preview = viewer.layers["volume [wiener] preview"]
    expected = deblur(volume[1, 10:41, 12:51], make_psf("gaussian", sigma=1.5), method="wiener", balance=0.01)
    np.testing.assert_allclose(preview.data, expected, atol=1e-5)
    np.testing.assert_allclose(preview.translate, (5.0 + 2 * 10, 5.0 + 2 * 12))
    np.testing.assert_allclose(preview.scale, (2.0, 2.0))
    np.testing.assert_array_equal(viewer.layers["volume"].data, volume)


def test_blind_method_hides_the_psf_and_restores_slice_by_slice(make_napari_viewer, run_to_end, small_models,
                                                                manifest, monkeypatch):
    import napari.utils.notifications
    import torch

    from napari_deblur._widget import SLICES, VOLUME, DeconvolveWidget

    viewer = make_napari_viewer()
    stack = np.random.default_rng(3).random((2, 24, 32), dtype=np.float32)
    viewer.add_image(stack.copy(), name="stack")
    widget = DeconvolveWidget(viewer)
    widget.image.value = viewer.layers["stack"]
    widget.mode.value = SLICES
    psf_fields = (widget.psf_source, widget.psf_model, widget.psf_params, widget.psf_layer)
    assert not widget.psf_source.native.isHidden()
    widget.method.value = "blind-irc"
    assert all(field.native.isHidden() for field in psf_fields) and widget.preview.isHidden()
    assert widget.psf() is None and "no PSF needed" in widget.status.value
    run_to_end(widget)
    with torch.no_grad():
        expected = [deblur_ops.deblur(plane, method="blind-irc") for plane in stack]  # with the small models
    np.testing.assert_allclose(widget.last_result.data, np.stack(expected), atol=1e-5)
    np.testing.assert_array_equal(viewer.layers["stack"].data, stack)

    shown = []
    monkeypatch.setattr(napari.utils.notifications, "show_error", shown.append)
    widget.mode.value = VOLUME  # blind methods restore 2D planes: no longer offered
    assert "blind-irc" not in widget.method.choices and widget.method.value != "blind-irc"
    widget.mode.value = SLICES
    widget.method.value = "blind-irc"
    widget.psf_source.value = "layer"
    assert widget.psf() is None and not shown
    widget.method.value = "wiener"
    assert not widget.psf_source.native.isHidden() and not widget.preview.isHidden()
