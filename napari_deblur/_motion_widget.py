"""The "Estimate motion" widget: Motion-Net's per-pixel blur as a Vectors layer, and blind deblurring.

The maths lives in deblur_ops (``estimate_motion``, ``models.methods.motion_vectors``, the
``blind-irc`` and ``irc-net`` methods); this module picks the plane on screen, runs the model in a
worker thread and publishes layers. Restoration runs like the Deconvolve widget's
(:class:`RestoreRunner`).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from magicgui import widgets
from qtpy.QtWidgets import QWidget

from deblur_ops import estimate_motion
from deblur_ops.models.methods import motion_vectors
from deblur_ops.psf import MotionField
from deblur_ops.apps.stack import block_at, loop_axes_for
from deblur_ops.validation import MIN_IMAGE_SIDE

from ._sv_widget import _layers
from ._widget import RestoreRunner, RunFailed, dock_layout, wrapping_status

if TYPE_CHECKING:
    import napari

PLANE = "plane on screen"
STACK = "whole stack (plane by plane)"
FIELD_KEY = "motion_field"


class MotionWidget(RestoreRunner, QWidget):
    """Estimate the motion blur of an image layer's plane and restore it without a known PSF.

    "Estimate motion" writes ``"<image> motion"`` (Vectors, coloured by blur length; the field's
    ``length`` and ``angle`` maps are kept in its ``metadata["motion_field"]``). "Deblur (blind)"
    writes a new layer ``"<image> [blind-irc]"``, or ``"<image> [irc-net, estimated motion]"`` with the
    stored field when "use estimated field" is ticked (so it never takes the name of a Deconvolve
    result); "replace previous result" overwrites the previous run's layer instead. The input layer
    is never modified.
    """

    def __init__(self, napari_viewer: napari.viewer.Viewer):
        super().__init__()
        self.viewer = napari_viewer
        self.image = widgets.ComboBox(label="image", choices=lambda _w: _layers(self.viewer, "Image"))
        self.spacing = widgets.SpinBox(label="vector spacing", value=16, min=2, max=1024,
                                       tooltip="pixels (of the image) between two drawn vectors")
        self.scope = widgets.ComboBox(label="deblur", choices=[PLANE, STACK],
                                      tooltip="stacks: only the plane on screen, or every plane in turn")
        self.use_field = widgets.CheckBox(label="use estimated field", value=False,
                                          tooltip="restore with irc-net and the field stored in '<image> motion' "
                                                  "(the same field for every plane) instead of blind-irc")
        self.device = widgets.ComboBox(label="device", choices=["auto", "cpu", "cuda"])
        self.estimate_button = widgets.PushButton(text="Estimate motion")
        self.deblur_button = widgets.PushButton(text="Deblur (blind)")
        self.cancel_button = widgets.PushButton(text="Cancel", enabled=False)
        self.replace = widgets.CheckBox(label="replace previous result", value=False,
                                        tooltip="off: every deblurring adds a new layer; on: it overwrites the "
                                                "layer of the previous one")
        self.busy_buttons = (self.estimate_button, self.deblur_button)
        self.status = wrapping_status()
        form = widgets.Container(widgets=[self.image, self.spacing, self.scope, self.use_field, self.device])
        buttons = widgets.Container(widgets=[self.estimate_button, self.deblur_button, self.cancel_button],
                                    layout="horizontal", labels=False)
        buttons.margins = (0, 0, 0, 0)
        footer = widgets.Container(widgets=[buttons, self.replace, self.status])
        dock_layout(self, form.native, footer.native)

        self.image.changed.connect(self._show_scope)
        self.spacing.changed.connect(self._respace)
        self.estimate_button.changed.connect(self.estimate)
        self.deblur_button.changed.connect(self.deblur)
        self.cancel_button.changed.connect(self.cancel)
        for event in (napari_viewer.layers.events.inserted, napari_viewer.layers.events.removed):
            event.connect(self._refresh_layers)
        self._show_scope()

    def _refresh_layers(self, _event=None):
        self.image.reset_choices()
        self._show_scope()

    def _show_scope(self, _value=None):
        layer = self.image.value
        self.scope.visible = layer is not None and bool(self._loop_axes(layer))

    @staticmethod
    def _loop_axes(layer) -> tuple[int, ...]:
        return loop_axes_for(layer.data.shape, None, rgb=layer.rgb)

    def _layer(self):
        layer = self.image.value
        if layer is None:
            raise ValueError("add or choose an image layer first")
        if layer.multiscale:
            raise ValueError(f"{layer.name!r} is multiscale; add its full-resolution level as an image layer")
        height, width = layer.data.shape[-3:-1] if layer.rgb else layer.data.shape[-2:]
        if min(height, width) < MIN_IMAGE_SIDE:
            raise ValueError(f"{layer.name!r} has {height} x {width} pixels per plane; the motion models need at "
                             f"least {MIN_IMAGE_SIDE} x {MIN_IMAGE_SIDE}")
        return layer

    def plane_index(self, layer) -> tuple:
        """Index of the plane of ``layer`` under the viewer's current position (its last two axes)."""
        loop_axes = self._loop_axes(layer)
        if not loop_axes:
            return (slice(None),) * layer.data.ndim
        world_ndim = self.viewer.dims.ndim
        if set(self.viewer.dims.displayed) != {world_ndim - 2, world_ndim - 1}:
            raise ValueError(f"{layer.name!r} is a stack and the viewer shows no single plane of it; switch to the "
                             f"2D view of its last two axes (the plane to estimate)")
        return block_at(layer.data.shape, loop_axes, layer.world_to_data(self.viewer.dims.point))

    def _placement(self, layer, loop_axes) -> dict:
        """Scale and translate for a layer that holds the axes of ``layer`` other than ``loop_axes``."""
        axes = [a for a in range(layer.ndim) if a not in loop_axes]
        return {"scale": np.asarray(layer.scale)[axes], "translate": np.asarray(layer.translate, dtype=float)[axes]}

    def estimate(self, _value=None):
        """Run Motion-Net on the plane on screen in a worker thread; publish ``"<image> motion"``."""
        from napari.qt.threading import thread_worker

        try:
            layer = self._layer()
            index = self.plane_index(layer)
            plane = np.asarray(layer.data[index])
            if self.spacing.value // 2 >= min(plane.shape[:2]):
                raise ValueError(f"a vector spacing of {self.spacing.value} leaves no vector on a "
                                 f"{plane.shape[0]} x {plane.shape[1]} plane; choose a smaller one")
        except (ValueError, TypeError) as exc:
            self.report_error("Estimate motion", exc)
            return
        plane_coords = [index[a] for a in self._loop_axes(layer)]
        worker = thread_worker(_estimate, progress={"total": 1, "desc": "Estimate motion"}, ignore_errors=True)
        self.start_worker(worker(plane, device=self.device.value),
                          lambda field: self._publish_field(field, layer, plane_coords), title="Estimate motion",
                          status=f"estimating the motion of {layer.name!r}...")

    def _publish_field(self, field: MotionField, layer, plane_coords: list[int]):
        metadata = {FIELD_KEY: {"length": field.length.numpy().astype(np.float32),
                                "angle": field.angle.numpy().astype(np.float32)},
                    "image": layer.name, "plane": plane_coords}
        name = f"{layer.name} motion"
        publish_vectors(self.viewer, _vectors_data(field, self.spacing.value, plane_coords), name,
                        metadata=metadata, edge_width=max(1.0, self.spacing.value / 8), **self._placement(layer, ()))
        length = field.length
        self.status.value = f"wrote {name!r}: blur {float(length.min()):.1f}-{float(length.max()):.1f} px"

    def _motion_layer(self, layer):
        """``"<image> motion"`` if it holds a field estimated by this widget, else None."""
        name = f"{layer.name} motion"
        if name in self.viewer.layers and FIELD_KEY in self.viewer.layers[name].metadata:
            return self.viewer.layers[name]
        return None

    def stored_field(self, layer) -> MotionField:
        """The MotionField kept in ``"<image> motion"``'s metadata by "Estimate motion"."""
        motion = self._motion_layer(layer)
        if motion is None:
            raise ValueError(f"no estimated field for {layer.name!r}: press 'Estimate motion' first, or untick "
                             f"'use estimated field' to deblur blind")
        stored = motion.metadata[FIELD_KEY]
        return MotionField(stored["length"], stored["angle"])

    def _respace(self, _value=None):
        """Redraw the chosen image's stored field at the new spacing (no new estimate)."""
        layer = self.image.value
        motion = None if layer is None else self._motion_layer(layer)
        if motion is None:
            return
        field = self.stored_field(layer)
        if self.spacing.value // 2 >= min(field.shape):
            return
        publish_vectors(self.viewer, _vectors_data(field, self.spacing.value, motion.metadata["plane"]), motion.name,
                        metadata=dict(motion.metadata), edge_width=max(1.0, self.spacing.value / 8),
                        scale=np.asarray(motion.scale), translate=np.asarray(motion.translate))

    def deblur(self, _value=None):
        """Restore the plane on screen (or the whole stack) with blind-irc, or irc-net and the stored field."""

        try:
            layer = self._layer()
            if layer.rgb and layer.data.shape[-1] != 3:
                raise ValueError(f"{layer.name!r} has {layer.data.shape[-1]} colour channels; the blind methods "
                                 f"take grey or RGB pictures (drop the alpha channel)")
            loop_axes = self._loop_axes(layer)
            if loop_axes and self.scope.value == PLANE:
                data, run_axes = np.asarray(layer.data[self.plane_index(layer)]), ()
                placement = self._placement(layer, loop_axes)
            else:
                data, run_axes, placement = np.asarray(layer.data), None, self._placement(layer, ())
            method, psf, what = "blind-irc", None, "blind-irc"
            if self.use_field.value:
                method, psf, what = "irc-net", self.stored_field(layer), "irc-net, estimated motion"
                plane_shape = data.shape[-3:-1] if layer.rgb else data.shape[-2:]
                if psf.shape != tuple(plane_shape):
                    raise ValueError(f"the stored field is {psf.shape[0]} x {psf.shape[1]} but the planes of "
                                     f"{layer.name!r} are {plane_shape[0]} x {plane_shape[1]}; estimate again")
        except (ValueError, TypeError) as exc:
            self.report_error("Deblur (blind)", exc)
            return
        history = (f"deblur-ops {method} with the motion field estimated by Motion-Net" if self.use_field.value
                   else "deblur-ops blind-irc (Motion-Net's blur length, a kernel fitted to the picture, IRC-Net)")
        self.launch(data, psf, method=method, loop_axes=run_axes, rgb=layer.rgb, device=self.device.value,
                    params={}, source=layer, name=f"{layer.name} [{what}]", placement=placement,
                    title="Deblur (blind)", history=history)


def _estimate(plane: np.ndarray, *, device):
    """Worker body: Motion-Net on one plane. The yield lets Cancel drop the field before it is published."""
    try:
        field = estimate_motion(plane, device=device)
    except Exception as exc:  # reported once by the widget (see RunFailed)
        raise RunFailed(str(exc)) from None
    yield
    return field


def _vectors_data(field: MotionField, step: int, plane_coords) -> np.ndarray:
    """Vectors (N, 2, D) of ``field`` every ``step`` pixels, on the plane at ``plane_coords`` of a stack."""
    vectors = motion_vectors(field, step)
    leading = np.zeros((len(vectors), 2, len(plane_coords)))
    leading[:, 0] = plane_coords  # the directions stay in the plane
    return np.concatenate([leading, vectors], axis=-1)


def publish_vectors(viewer, data: np.ndarray, name: str, *, metadata: dict, **options):
    """Put motion vectors into Vectors layer ``name`` (updated in place if the count matches, else replaced),
    coloured by their length."""
    from napari.layers import Vectors

    features = {"length": np.linalg.norm(data[:, 1], axis=-1)}
    existing = viewer.layers[name] if name in viewer.layers else None
    if isinstance(existing, Vectors) and existing.data.shape == data.shape:
        existing.data = data
        existing.features = features
        existing.metadata = metadata
        for key, value in options.items():
            setattr(existing, key, value)
        existing.refresh_colors(update_color_mapping=True)
        return existing
    if existing is not None:
        viewer.layers.remove(existing)
    return viewer.add_vectors(data, name=name, features=features, metadata=metadata, edge_color="length",
                              edge_colormap="viridis", vector_style="line", **options)
