"""The Deconvolve widget: pick an image layer, a method, a PSF; restore in a worker thread.

The form is built from :mod:`deblur_ops.catalog` (methods and their parameters, PSF models and
theirs), so new methods appear without edits here. PSF sources are a name -> callable table
(:attr:`DeconvolveWidget.psf_sources`) so that a source of spatially varying PSF descriptions can
be added beside "generated" and "layer" later; whatever it returns goes to ``deblur`` unchanged.
"""
from __future__ import annotations

import json
from typing import TYPE_CHECKING

import numpy as np
from magicgui import widgets
from qtpy.QtCore import Qt
from qtpy.QtGui import QImage, QPixmap
from qtpy.QtWidgets import QLabel, QVBoxLayout, QWidget

from deblur_ops import catalog, methods
from deblur_ops.io import cast_like
from deblur_ops.stack import block_at, block_count, iter_deblur_stack, loop_axes_for, slicing_loop_axes

if TYPE_CHECKING:
    import napari

SLICES = "slice by slice (2D)"
VOLUME = "3D volume (last three axes)"
PREVIEW_SIDE = 96


def _field(parameter: catalog.Parameter):
    """A form field for one parameter; None defaults ("automatic") become text fields left empty."""
    value = parameter.default
    label = parameter.name.replace("_", " ")
    if isinstance(value, bool):
        return widgets.CheckBox(name=parameter.name, label=label, value=value)
    if isinstance(value, int):
        return widgets.SpinBox(name=parameter.name, label=label, value=value, min=0, max=100_000)
    if isinstance(value, float):
        return widgets.FloatSpinBox(name=parameter.name, label=label, value=value, min=-1e6, max=1e6, step=0.05)
    text = "" if value is None else str(value)
    return widgets.LineEdit(name=parameter.name, label=label, value=text,
                            tooltip="empty: automatic; numbers, lists like 9,15,15 or text")


def _read_field(field):
    """The value to pass on, or None to leave the function's default (an empty text field)."""
    if not isinstance(field, widgets.LineEdit):
        return field.value
    text = field.value.strip()
    if not text:
        return None
    try:
        return json.loads(f"[{text}]") if "," in text else json.loads(text)
    except json.JSONDecodeError:
        return text


def _values(container) -> dict:
    values = {field.name: _read_field(field) for field in container}
    return {name: value for name, value in values.items() if value is not None}


def _preview_pixmap(psf: np.ndarray) -> QPixmap:
    """Max projection of the PSF, square-root scaled so the faint wings show."""
    picture = psf.max(axis=0) if psf.ndim == 3 else psf
    picture = np.sqrt(np.clip(picture / picture.max(), 0, 1))
    grey = np.ascontiguousarray((picture * 255).astype(np.uint8))
    image = QImage(grey.data, grey.shape[1], grey.shape[0], grey.strides[0], QImage.Format.Format_Grayscale8)
    return QPixmap.fromImage(image.copy()).scaled(PREVIEW_SIDE, PREVIEW_SIDE, Qt.AspectRatioMode.KeepAspectRatio,
                                                   Qt.TransformationMode.FastTransformation)


class DeconvolveWidget(QWidget):
    """Restore an image layer into a new layer ``"<input> [<method>]"`` (replaced if it exists)."""

    def __init__(self, napari_viewer: napari.viewer.Viewer):
        super().__init__()
        self.viewer = napari_viewer
        self.worker = None
        self.psf_sources = {"generated": self._generated_psf, "layer": self._layer_psf}
        self.image = widgets.ComboBox(label="image", choices=self._image_layers)
        self.method = widgets.ComboBox(label="method", choices=list(methods()))
        self.method_params = widgets.Container(labels=True)
        self.psf_source = widgets.ComboBox(label="PSF source", choices=list(self.psf_sources))
        self.psf_layer = widgets.ComboBox(label="PSF layer", choices=self._image_layers)
        self.psf_model = widgets.ComboBox(label="PSF model", choices=list(catalog.PSF_MODELS))
        self.psf_params = widgets.Container(labels=True)
        self.mode = widgets.ComboBox(label="process as", choices=[SLICES, VOLUME])
        self.slice_axis = widgets.ComboBox(label="along axis", choices=self._slice_axes,
                                           tooltip="2D slices are cut across this axis; axes in front of "
                                                   "the last three are looped over too")
        self.device = widgets.ComboBox(label="device", choices=["auto", "cpu", "cuda"])
        self.run_button = widgets.PushButton(text="Deconvolve")
        self.preview_button = widgets.PushButton(text="Preview current slice",
                                                 tooltip="restore only the slice (or volume) on screen into "
                                                         "'<input> [<method>] preview'")
        self.cancel_button = widgets.PushButton(text="Cancel", enabled=False)
        self.status = widgets.Label(value="")
        self.preview = QLabel()
        self.preview.setFixedSize(PREVIEW_SIDE, PREVIEW_SIDE)
        self.preview.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.preview.setToolTip("PSF preview (max projection, square-root scale)")
        form = widgets.Container(widgets=[self.image, self.method, self.method_params, self.psf_source,
                                          self.psf_layer, self.psf_model, self.psf_params])
        actions = widgets.Container(widgets=[self.mode, self.slice_axis, self.device, self.preview_button, self.run_button,
                                             self.cancel_button,
                                             self.status])
        layout = QVBoxLayout(self)
        layout.addWidget(form.native)
        layout.addWidget(self.preview)
        layout.addWidget(actions.native)
        layout.addStretch()

        self.method.changed.connect(self._rebuild_method_params)
        self.psf_model.changed.connect(self._rebuild_psf_params)
        self.psf_source.changed.connect(self._show_psf_fields)
        self.psf_layer.changed.connect(self._update_preview)
        self.image.changed.connect(self._refresh_slice_axes)
        self.mode.changed.connect(self._refresh_slice_axes)
        self.run_button.changed.connect(self.run)
        self.preview_button.changed.connect(self.preview_current)
        self.cancel_button.changed.connect(self.cancel)
        for event in (napari_viewer.layers.events.inserted, napari_viewer.layers.events.removed):
            event.connect(self._refresh_layers)
        self._rebuild_method_params()
        self._rebuild_psf_params()
        self._show_psf_fields()
        self._refresh_slice_axes()

    def _image_layers(self, _widget=None):
        from napari.layers import Image

        return [(layer.name, layer) for layer in self.viewer.layers if isinstance(layer, Image)]

    def _slice_axes(self, _widget=None):
        layer = self.image.value
        if layer is None or layer.rgb or layer.ndim < 3:
            return []
        return [(f"{axis} (of {layer.ndim})", axis) for axis in range(layer.ndim - 3, layer.ndim)]

    def _refresh_layers(self, _event=None):
        self.image.reset_choices()
        self.psf_layer.reset_choices()
        self._refresh_slice_axes()

    def _refresh_slice_axes(self, _value=None):
        self.slice_axis.reset_choices()
        choices = self.slice_axis.choices
        self.slice_axis.visible = self.mode.value == SLICES and bool(choices)

    def loop_axes(self):
        """Axes the stack is looped over (None: every leading axis, the default of deblur_ops.stack)."""
        if self.mode.value == SLICES and self.slice_axis.choices:
            return slicing_loop_axes(self.image.value.ndim, self.slice_axis.value)
        return None

    def _rebuild_method_params(self, _value=None):
        self.method_params.clear()
        self.method_params.extend(_field(p) for p in catalog.method_parameters(self.method.value))

    def _rebuild_psf_params(self, _value=None):
        self.psf_params.clear()
        self.psf_params.extend(_field(p) for p in catalog.psf_parameters(self.psf_model.value))
        self.psf_params.changed.connect(self._update_preview)
        self._update_preview()

    def _show_psf_fields(self, _value=None):
        generated = self.psf_source.value == "generated"
        self.psf_model.visible = self.psf_params.visible = generated
        self.psf_layer.visible = self.psf_source.value == "layer"
        self._update_preview()

    def _generated_psf(self) -> np.ndarray:
        return catalog.make_psf(self.psf_model.value, **_values(self.psf_params))

    def _layer_psf(self) -> np.ndarray:
        layer = self.psf_layer.value
        if layer is None:
            raise ValueError("choose a PSF layer, or switch the PSF source to 'generated'")
        return np.asarray(layer.data, dtype=np.float32)

    def psf(self):
        """The PSF from the chosen source, as ``deblur`` takes it."""
        return self.psf_sources[self.psf_source.value]()

    def _update_preview(self, _value=None):
        try:
            psf = np.asarray(self.psf(), dtype=np.float32)
        except (ValueError, TypeError) as exc:
            self.preview.setPixmap(QPixmap())
            self.preview.setText("no PSF")
            self.status.value = str(exc)
            return
        if psf.ndim in (2, 3) and psf.max() > 0:
            self.preview.setPixmap(_preview_pixmap(psf))
            self.status.value = f"PSF {psf.shape}"

    def output_name(self) -> str:
        return f"{self.image.value.name} [{self.method.value}]"

    def run(self, _value=None):
        """Start the restoration of the whole layer in a worker thread (progress per slice; Cancel stops it)."""
        self._start(preview=False)

    def preview_current(self, _value=None):
        """Restore only the block under the viewer's current position, into a preview layer."""
        self._start(preview=True)

    def _start(self, preview: bool):
        from napari.qt.threading import thread_worker
        from napari.utils.notifications import show_error

        layer = self.image.value
        if layer is None:
            show_error("Deconvolve: add or choose an image layer first")
            return
        try:
            psf = self.psf()
            if self.mode.value == VOLUME and np.ndim(psf) != 3:
                raise ValueError("3D volume processing needs a 3D PSF: choose the born_wolf model or a 3D PSF "
                                 "layer, or process slice by slice")
            if self.mode.value == SLICES and np.ndim(psf) == 3:
                raise ValueError("slice-by-slice processing needs a 2D PSF; choose '3D volume' for a 3D PSF")
            data = np.asarray(layer.data)
            loop_axes = loop_axes_for(data.shape, np.ndim(psf), rgb=layer.rgb, loop_axes=self.loop_axes())
            block_axes = [a for a in range(layer.ndim) if a not in loop_axes]
            if preview:
                data = data[block_at(data.shape, loop_axes, layer.world_to_data(self.viewer.dims.point))]
                loop_axes = ()
            total = block_count(data.shape, psf, rgb=layer.rgb, loop_axes=loop_axes)
        except (ValueError, TypeError) as exc:
            show_error(f"Deconvolve: {exc}")
            return
        name, method = self.output_name() + (" preview" if preview else ""), self.method.value
        placement = {"scale": np.asarray(layer.scale), "translate": np.asarray(layer.translate)}
        if preview:
            placement = {key: value[block_axes] for key, value in placement.items()}
        restore = thread_worker(_restore, progress={"total": total, "desc": f"Deconvolve ({method})"})
        self.worker = restore(data, psf, method=method, loop_axes=loop_axes, rgb=layer.rgb, device=self.device.value,
                              **_values(self.method_params))
        self.worker.returned.connect(lambda result: self._publish(result, layer, name, placement))
        self.worker.errored.connect(lambda exc: show_error(f"Deconvolve: {exc}"))
        self.worker.aborted.connect(lambda: setattr(self.status, "value", "cancelled; no layer written"))
        self.worker.finished.connect(self._idle)
        self.run_button.enabled = self.preview_button.enabled = False
        self.cancel_button.enabled = True
        self.status.value = f"running {method} on {total} slice(s)..."
        self.worker.start()

    def cancel(self, _value=None):
        """Stop the running restoration after the current slice; nothing is written."""
        if self.worker is not None:
            self.worker.quit()

    def _idle(self):
        self.run_button.enabled = self.preview_button.enabled = True
        self.cancel_button.enabled = False

    def _publish(self, result: np.ndarray, source, name: str, placement: dict):
        existing = self.viewer.layers[name] if name in self.viewer.layers else None
        if existing is not None and existing.data.shape == result.shape:
            existing.data = result
            return self._done(name)
        if existing is not None:
            # A different block shape (another slice axis) cannot be swapped into the same layer.
            self.viewer.layers.remove(existing)
        options = {"rgb": source.rgb} if source.rgb else {"colormap": source.colormap.name}
        self.viewer.add_image(result, name=name, metadata=dict(source.metadata), **placement, **options)
        self._done(name)

    def _done(self, name: str):
        self.status.value = f"wrote {name!r}"


def _restore(data, psf, *, method, loop_axes, rgb, device, **params):
    """Worker body: yields after each slice (napari advances the progress bar and can stop here)."""
    out = np.empty(data.shape, np.float32)
    for index, block in iter_deblur_stack(data, psf, method=method, loop_axes=loop_axes, rgb=rgb, device=device,
                                          **params):
        out[index] = block
        yield
    if rgb and np.issubdtype(data.dtype, np.integer):
        # napari reads integer RGB as 0..dtype max and float RGB as 0..1: keep the input's scale.
        return cast_like(out, data.dtype)
    if rgb:
        np.clip(out, 0, 1, out=out)
    return out
