"""napari plugin: the "Estimate motion" widget (Motion-Net vectors, blind deblurring, cancel, stacks).

Small untrained models stand in for the shipped weights (the ``small_models`` fixture), so the
expected numbers come from calling those models directly.
"""
import threading

import numpy as np
import pytest
import torch

import deblur_ops

napari = pytest.importorskip("napari")
pytest.importorskip("pytestqt")

from deblur_ops.psf import MotionField  # noqa: E402

SPACING = 16


def _picture(shape, seed=0):
    """A smooth random picture: blurred noise, so the models see edges of all directions."""
    rng = np.random.default_rng(seed)
    noise = rng.random(shape, dtype=np.float32)
    kernel = np.ones(3, np.float32) / 3
    for axis in (0, 1):
        noise = np.apply_along_axis(lambda line: np.convolve(line, kernel, mode="same"), axis, noise)
    return noise.astype(np.float32)


def _batch(plane: np.ndarray) -> torch.Tensor:
    tensor = torch.from_numpy(np.ascontiguousarray(plane)).float()
    return tensor.permute(2, 0, 1)[None] if tensor.dim() == 3 else tensor[None, None]


def _motion_widget(viewer, image):
    from napari_deblur._motion_widget import MotionWidget

    widget = MotionWidget(viewer)
    widget.image.value = viewer.layers[image]
    widget.spacing.value = SPACING
    return widget


def _run(qtbot, widget, start):
    """Press a button's action and wait until the widget is idle again."""
    start()
    assert widget.worker is not None and not widget.estimate_button.enabled
    qtbot.waitUntil(lambda: widget.estimate_button.enabled, timeout=60_000)


@pytest.fixture
def errors(monkeypatch):
    """The messages the widgets show with napari's show_error."""
    import napari.utils.notifications

    shown = []
    monkeypatch.setattr(napari.utils.notifications, "show_error", shown.append)
    return shown


def _check_vectors(vectors, length, angle):
    """One vector per SPACING pixels, centred on its node, as long as the blur there, along its angle."""
    height, width = length.shape
    nodes = np.stack(np.meshgrid(np.arange(SPACING // 2, height, SPACING), np.arange(SPACING // 2, width, SPACING),
                                 indexing="ij"), -1).reshape(-1, 2)
    assert vectors.shape == (len(nodes), 2, 2)
    np.testing.assert_allclose(vectors[:, 0] + vectors[:, 1] / 2, nodes, atol=1e-4)
    rows, cols = nodes.T
    np.testing.assert_allclose(np.linalg.norm(vectors[:, 1], axis=-1), length[rows, cols], rtol=1e-5)
    drawn = np.rad2deg(np.arctan2(-vectors[:, 1, 0], vectors[:, 1, 1])) % 180
    difference = np.abs(drawn - angle[rows, cols])
    assert np.all(np.minimum(difference, 180 - difference) < 1e-3)


def test_widget_is_discoverable_through_the_manifest(make_napari_viewer, manifest):
    from napari_deblur._motion_widget import MotionWidget

    assert "Estimate motion" in [w.display_name for w in manifest.contributions.widgets]
    viewer = make_napari_viewer()
    _dock, widget = viewer.window.add_plugin_dock_widget("deblur-ops", "Estimate motion")
    assert isinstance(widget, MotionWidget)


@pytest.mark.parametrize("rgb", [False, True], ids=["grey", "rgb"])
def test_estimate_adds_vectors_and_the_field_and_leaves_the_input(make_napari_viewer, qtbot, small_models, manifest,
                                                                  rgb):
    picture = _picture((40, 56, 3) if rgb else (40, 56))
    if rgb:
        picture = (picture * 255).astype(np.uint8)
    viewer = make_napari_viewer()
    viewer.add_image(picture.copy(), name="photo", rgb=rgb, scale=(2.0, 0.5), translate=(10.0, -4.0))
    widget = _motion_widget(viewer, "photo")
    _run(qtbot, widget, widget.estimate)
    motion = viewer.layers["photo motion"]
    assert isinstance(motion, napari.layers.Vectors)
    with torch.no_grad():
        length, angle = (m[0].numpy() for m in small_models["motion-net"].motion(_batch(picture)))
    stored = motion.metadata["motion_field"]
    np.testing.assert_allclose(stored["length"], length, atol=1e-5)
    np.testing.assert_allclose(stored["angle"], angle, atol=1e-4)
    _check_vectors(motion.data, stored["length"], stored["angle"])
    np.testing.assert_allclose(motion.scale, (2.0, 0.5))
    np.testing.assert_allclose(motion.translate, (10.0, -4.0))
    np.testing.assert_allclose(motion.features["length"], np.linalg.norm(motion.data[:, 1], axis=-1))
    np.testing.assert_array_equal(viewer.layers["photo"].data, picture)

    assert len(np.unique(motion.edge_color, axis=0)) > 1  # coloured by length
    _run(qtbot, widget, widget.estimate)  # again: the same layer is updated
    assert [layer.name for layer in viewer.layers] == ["photo", "photo motion"]
    widget.spacing.value = 8  # redraws the stored field, no new estimate
    assert viewer.layers["photo motion"].data.shape == (5 * 7, 2, 2)


def test_blind_deblur_and_deblur_with_the_estimated_field(make_napari_viewer, qtbot, small_models, manifest):
    picture = _picture((32, 40), seed=1)
    viewer = make_napari_viewer()
    viewer.add_image(picture.copy(), name="photo", scale=(1.5, 1.5))
    widget = _motion_widget(viewer, "photo")
    _run(qtbot, widget, widget.deblur)
    result = widget.last_result
    expected = deblur_ops.deblur(picture, method="blind-irc")  # Motion-Net's support, the MAP kernel, IRC-Net
    np.testing.assert_allclose(result.data, expected, atol=1e-5)
    np.testing.assert_allclose(result.scale, (1.5, 1.5))

    _run(qtbot, widget, widget.estimate)
    widget.use_field.value = True
    _run(qtbot, widget, widget.deblur)
    stored = viewer.layers["photo motion"].metadata["motion_field"]
    with torch.no_grad():
        field = MotionField(stored["length"], stored["angle"])
        expected = small_models["irc-motion"](_batch(picture), field)[0, 0].numpy()
    np.testing.assert_allclose(widget.last_result.data, expected, atol=1e-5)
    np.testing.assert_array_equal(viewer.layers["photo"].data, picture)


def test_stack_uses_the_plane_on_screen(make_napari_viewer, qtbot, small_models, manifest, errors):
    from napari_deblur._motion_widget import PLANE, STACK

    stack = np.stack([_picture((24, 32), seed=s) for s in range(3)])
    viewer = make_napari_viewer()
    viewer.add_image(stack.copy(), name="stack")
    viewer.dims.set_current_step(0, 2)
    widget = _motion_widget(viewer, "stack")
    assert not widget.scope.native.isHidden()
    _run(qtbot, widget, widget.estimate)
    motion = viewer.layers["stack motion"]
    with torch.no_grad():
        length, _angle = small_models["motion-net"].motion(_batch(stack[2]))
    np.testing.assert_allclose(motion.metadata["motion_field"]["length"], length[0].numpy(), atol=1e-5)
    np.testing.assert_array_equal(motion.data[:, 0, 0], 2)  # starts on plane 2
    np.testing.assert_array_equal(motion.data[:, 1, 0], 0)  # directions within it

    widget.scope.value = PLANE
    _run(qtbot, widget, widget.deblur)
    expected = [deblur_ops.deblur(plane, method="blind-irc") for plane in stack]
    np.testing.assert_allclose(widget.last_result.data, expected[2], atol=1e-5)
    widget.scope.value = STACK
    _run(qtbot, widget, widget.deblur)
    np.testing.assert_allclose(widget.last_result.data, np.stack(expected), atol=1e-5)
    np.testing.assert_array_equal(viewer.layers["stack"].data, stack)

    viewer.dims.ndisplay = 3
    widget.estimate()
    assert errors[-1].startswith("Estimate motion:") and "no single plane" in errors[-1]


def test_bad_input_is_reported(make_napari_viewer, small_models, manifest, errors):
    from napari_deblur._motion_widget import MotionWidget

    viewer = make_napari_viewer()
    widget = MotionWidget(viewer)
    widget.estimate()
    assert "add or choose an image layer" in errors[-1]
    viewer.add_image(np.zeros((8, 30), np.float32), name="tiny")
    widget.image.value = viewer.layers["tiny"]
    widget.deblur()
    assert "8 x 30 pixels" in errors[-1] and "at least 16 x 16" in errors[-1]
    viewer.add_image(_picture((32, 32)), name="photo")
    widget.image.value = viewer.layers["photo"]
    widget.use_field.value = True
    widget.deblur()
    assert "press 'Estimate motion' first" in errors[-1]
    widget.spacing.value = 100
    widget.estimate()
    assert "no vector" in errors[-1]
    assert widget.worker is None and set(viewer.layers) == {viewer.layers["tiny"], viewer.layers["photo"]}


@pytest.mark.parametrize("action", ["estimate", "deblur"])
def test_cancel_writes_nothing(make_napari_viewer, qtbot, small_models, manifest, monkeypatch, action):
    """The model waits inside its first call until Cancel was pressed, so the cancel always lands mid-run."""
    from napari_deblur._motion_widget import STACK

    pressed = threading.Event()
    model = small_models["motion-net" if action == "estimate" else "blind-irc"]
    method = "motion" if action == "estimate" else "forward"
    original = getattr(model, method)
    monkeypatch.setattr(model, method, lambda *args, **kwargs: (pressed.wait(30), original(*args, **kwargs))[1])
    stack = np.stack([_picture((24, 24), seed=s) for s in range(3)])
    viewer = make_napari_viewer()
    viewer.add_image(stack.copy(), name="stack")
    widget = _motion_widget(viewer, "stack")
    widget.scope.value = STACK
    getattr(widget, action)()
    with qtbot.waitSignal(widget.worker.aborted, timeout=60_000):
        widget.cancel()
        pressed.set()
    qtbot.waitUntil(lambda: widget.estimate_button.enabled, timeout=60_000)
    assert [layer.name for layer in viewer.layers] == ["stack"]
    assert "cancelled" in widget.status.value
    np.testing.assert_array_equal(viewer.layers["stack"].data, stack)


def test_motion_field_sample_restores_with_its_true_field(make_napari_viewer, qtbot, small_models, manifest):
    from deblur_ops.data.scenes import motion_field_photo

    viewer = make_napari_viewer()
    viewer.open_sample("deblur-ops", "motion_field")
    sample = motion_field_photo()
    np.testing.assert_array_equal(viewer.layers["motion-field photo"].data, sample.blurred)
    widget = _motion_widget(viewer, "motion-field photo")
    field = widget.stored_field(viewer.layers["motion-field photo"])
    np.testing.assert_allclose(field.length.numpy(), sample.field.length.numpy(), rtol=1e-6)
    np.testing.assert_allclose(field.angle.numpy(), sample.field.angle.numpy(), rtol=1e-6, atol=1e-5)
    widget.use_field.value = True
    _run(qtbot, widget, widget.deblur)
    with torch.no_grad():
        expected = small_models["irc-motion"](_batch(sample.blurred), field)[0, 0].numpy()
    np.testing.assert_allclose(widget.last_result.data, expected, atol=1e-5)
