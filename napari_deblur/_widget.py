"""The Deconvolve widget: pick an image layer, a method, a PSF; restore in a worker thread.

The form is built from :mod:`deblur_ops.apps.catalog` (methods and their parameters, PSF models and
theirs), so new methods appear without edits here. PSF sources are a name -> callable table
(:attr:`DeconvolveWidget.psf_sources`); whatever a source returns goes to ``deblur`` unchanged.
Blind methods (``needs_psf`` False) hide the PSF fields and get ``psf=None``.
Running, cancelling and publishing (:class:`RestoreRunner`, :func:`publish_image`) are shared
with the "Spatially varying PSF" widget (``_sv_widget``), which builds PSF grids and motion fields.
"""
from __future__ import annotations

import json
from typing import TYPE_CHECKING

import numpy as np
from magicgui import widgets
from qtpy.QtCore import Qt
from qtpy.QtGui import QImage, QPixmap
from qtpy.QtWidgets import QLabel, QVBoxLayout, QWidget

from deblur_ops import methods
from deblur_ops.apps import catalog
from deblur_ops.apps.io import cast_like
from deblur_ops.restore import get_method
from deblur_ops.apps.stack import block_at, block_count, iter_deblur_stack, loop_axes_for, psf_ndim, slicing_loop_axes
from deblur_ops.psf import prepare_psf

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


class RestoreRunner:
    """What the widgets share: run ``_restore`` (or any worker) with progress and Cancel, then publish.

    The widget provides ``viewer``, ``cancel_button``, ``status`` and ``busy_buttons`` (disabled
    while a restoration runs).
    """

    worker = None

    def launch(self, data, psf, *, method, loop_axes, rgb, device, params, source, name, placement, title):
        """Start the restoration of ``data`` into layer ``name``; nothing is written if it is cancelled."""
        from napari.qt.threading import thread_worker

        total = block_count(data.shape, psf, rgb=rgb, loop_axes=loop_axes)
        restore = thread_worker(_restore, progress={"total": total, "desc": f"{title} ({method})"})
        self.start_worker(restore(data, psf, method=method, loop_axes=loop_axes, rgb=rgb, device=device, **params),
                          lambda result: self._publish(result, source, name, placement), title=title,
                          status=f"running {method} on {total} slice(s)...")

    def start_worker(self, worker, on_returned, *, title: str, status: str):
        """Run a napari thread ``worker`` with the busy buttons disabled and Cancel enabled.

        ``on_returned`` gets the worker's result; errors become notifications prefixed with ``title``.
        """
        from napari.utils.notifications import show_error

        self.worker = worker
        worker.returned.connect(on_returned)
        worker.errored.connect(lambda exc: show_error(f"{title}: {exc}"))
        worker.aborted.connect(lambda: setattr(self.status, "value", "cancelled; no layer written"))
        worker.finished.connect(self._idle)
        for button in self.busy_buttons:
            button.enabled = False
        self.cancel_button.enabled = True
        self.status.value = status
        worker.start()

    def cancel(self, _value=None):
        """Stop the running restoration after the current slice; nothing is written."""
        if self.worker is not None:
            self.worker.quit()

    def _idle(self):
        for button in self.busy_buttons:
            button.enabled = True
        self.cancel_button.enabled = False

    def _publish(self, result: np.ndarray, source, name: str, placement: dict):
        publish_image(self.viewer, result, name, source=source, **placement)
        self.status.value = f"wrote {name!r}"


def publish_image(viewer, data: np.ndarray, name: str, *, source=None, **options):
    """Put ``data`` into layer ``name``: swapped in if the shape matches, else the layer is replaced.

    ``source`` (an Image layer) lends its RGB flag or colormap and its metadata.
    """
    existing = viewer.layers[name] if name in viewer.layers else None
    if existing is not None and existing.data.shape == data.shape:
        existing.data = data
        for key, value in options.items():
            setattr(existing, key, value)
        return existing
    if existing is not None:
        # A different block shape (another slice axis, another ROI) cannot be swapped into the same layer.
        viewer.layers.remove(existing)
    if source is not None:
        options = {**({"rgb": source.rgb} if source.rgb else {"colormap": source.colormap.name}),
                   "metadata": dict(source.metadata), **options}
    return viewer.add_image(data, name=name, **options)


def shape_layers(viewer):
    """(name, layer) of the Shapes layers that hold a rectangle, for ROI choosers."""
    from napari.layers import Shapes

    return [(layer.name, layer) for layer in viewer.layers
            if isinstance(layer, Shapes) and "rectangle" in layer.shape_type]


def roi_bounds(shapes, image, point) -> tuple[slice, slice]:
    """Row and column slices of ``image``'s data covered by the selected (else last) rectangle of ``shapes``.

    ``point`` is the viewer's world position; it fills the axes the Shapes layer does not have.
    """
    rectangles = [i for i, kind in enumerate(shapes.shape_type) if kind == "rectangle"]
    if not rectangles:
        raise ValueError(f"Shapes layer {shapes.name!r} has no rectangle; draw one with the rectangle tool")
    chosen = [i for i in rectangles if i in shapes.selected_data] or rectangles[-1:]
    corners = []
    for vertex in np.asarray(shapes.data[chosen[-1]]):
        world = np.array(point, dtype=float)
        world[-2:] = np.asarray(shapes.data_to_world(vertex))[-2:]
        corners.append(np.asarray(image.world_to_data(world))[-2:])
    corners = np.array(corners)
    height, width = image.data.shape[-3:-1] if image.rgb else image.data.shape[-2:]
    top, left = np.clip(np.floor(corners.min(0)).astype(int), 0, None)
    bottom, right = np.ceil(corners.max(0)).astype(int) + 1
    rows, cols = slice(top, min(bottom, height)), slice(left, min(right, width))
    if rows.stop - rows.start < 2 or cols.stop - cols.start < 2:
        raise ValueError(f"the rectangle of {shapes.name!r} covers less than 2 x 2 pixels of {image.name!r}; "
                         f"draw it over the image")
    return rows, cols


class DeconvolveWidget(RestoreRunner, QWidget):
    """Restore an image layer into a new layer ``"<input> [<method>]"`` (replaced if it exists)."""

    def __init__(self, napari_viewer: napari.viewer.Viewer):
        super().__init__()
        self.viewer = napari_viewer
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
        self.roi = widgets.ComboBox(label="ROI", choices=lambda _w: shape_layers(self.viewer), nullable=True,
                                    tooltip="a Shapes layer with a rectangle: 'Preview ROI' restores only "
                                            "that part of the slice on screen")
        self.roi_button = widgets.PushButton(text="Preview ROI")
        self.cancel_button = widgets.PushButton(text="Cancel", enabled=False)
        self.busy_buttons = (self.run_button, self.preview_button, self.roi_button)
        self.status = widgets.Label(value="")
        self.preview = QLabel()
        self.preview.setFixedSize(PREVIEW_SIDE, PREVIEW_SIDE)
        self.preview.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.preview.setToolTip("PSF preview (max projection, square-root scale)")
        form = widgets.Container(widgets=[self.image, self.method, self.method_params, self.psf_source,
                                          self.psf_layer, self.psf_model, self.psf_params])
        actions = widgets.Container(widgets=[self.mode, self.slice_axis, self.device, self.preview_button, self.roi,
                                             self.roi_button, self.run_button, self.cancel_button, self.status])
        layout = QVBoxLayout(self)
        layout.addWidget(form.native)
        layout.addWidget(self.preview)
        layout.addWidget(actions.native)
        layout.addStretch()

        self.method.changed.connect(self._rebuild_method_params)
        self.method.changed.connect(self._show_psf_fields)
        self.psf_model.changed.connect(self._rebuild_psf_params)
        self.psf_source.changed.connect(self._show_psf_fields)
        self.psf_layer.changed.connect(self._update_preview)
        self.image.changed.connect(self._refresh_slice_axes)
        self.mode.changed.connect(self._refresh_slice_axes)
        self.run_button.changed.connect(self.run)
        self.preview_button.changed.connect(self.preview_current)
        self.roi_button.changed.connect(self.preview_roi)
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
        self.roi.reset_choices()
        self._refresh_slice_axes()

    def _refresh_slice_axes(self, _value=None):
        self.slice_axis.reset_choices()
        choices = self.slice_axis.choices
        self.slice_axis.visible = self.mode.value == SLICES and bool(choices)

    def loop_axes(self):
        """Axes the stack is looped over (None: every leading axis, the default of deblur_ops.apps.stack)."""
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

    def needs_psf(self) -> bool:
        return get_method(self.method.value).needs_psf

    def _show_psf_fields(self, _value=None):
        needed = self.needs_psf()
        generated = self.psf_source.value == "generated"
        self.psf_source.visible = needed
        self.psf_model.visible = self.psf_params.visible = needed and generated
        self.psf_layer.visible = needed and self.psf_source.value == "layer"
        self.preview.setVisible(needed)
        self._update_preview()

    def _generated_psf(self) -> np.ndarray:
        return catalog.make_psf(self.psf_model.value, **_values(self.psf_params))

    def _layer_psf(self) -> np.ndarray:
        layer = self.psf_layer.value
        if layer is None:
            raise ValueError("choose a PSF layer, or switch the PSF source to 'generated'")
        return prepare_psf(np.asarray(layer.data, dtype=np.float32), crop_energy=None).numpy()

    def psf(self):
        """The PSF from the chosen source, as ``deblur`` takes it; None for a blind method."""
        if not self.needs_psf():
            return None
        return self.psf_sources[self.psf_source.value]()

    def _update_preview(self, _value=None):
        if not self.needs_psf():
            self.status.value = f"{self.method.value} estimates the blur itself; no PSF needed"
            return
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

    def preview_roi(self, _value=None):
        """Restore only the ROI rectangle of the block on screen, into a preview layer placed over it."""
        self._start(preview=True, roi=True)

    def _start(self, preview: bool, roi: bool = False):
        from napari.utils.notifications import show_error

        layer = self.image.value
        if layer is None:
            show_error("Deconvolve: add or choose an image layer first")
            return
        try:
            psf = self.psf()
            if self.mode.value == VOLUME and psf is None:
                raise ValueError(f"{self.method.value} is blind and restores 2D planes; process slice by slice")
            if self.mode.value == VOLUME and np.ndim(psf) != 3:
                raise ValueError("3D volume processing needs a 3D PSF: choose the born_wolf model or a 3D PSF "
                                 "layer, or process slice by slice")
            if self.mode.value == SLICES and np.ndim(psf) == 3:
                raise ValueError("slice-by-slice processing needs a 2D PSF; choose '3D volume' for a 3D PSF")
            data = np.asarray(layer.data)
            loop_axes = loop_axes_for(data.shape, psf_ndim(psf), rgb=layer.rgb, loop_axes=self.loop_axes())
            block_axes = [a for a in range(layer.ndim) if a not in loop_axes]
            placement = {"scale": np.asarray(layer.scale), "translate": np.asarray(layer.translate, dtype=float)}
            if preview:
                data = data[block_at(data.shape, loop_axes, layer.world_to_data(self.viewer.dims.point))]
                loop_axes = ()
                placement = {key: value[block_axes] for key, value in placement.items()}
            if roi:
                if self.roi.value is None:
                    raise ValueError("choose a Shapes layer with a rectangle as ROI")
                rows, cols = roi_bounds(self.roi.value, layer, self.viewer.dims.point)
                yx = (-3, -2) if layer.rgb else (-2, -1)
                index = [slice(None)] * data.ndim
                index[yx[0]], index[yx[1]] = rows, cols
                data = data[tuple(index)]
                # The preview layer has no channel axis in scale/translate: its y, x are the last two.
                placement["translate"][-2:] += np.array([rows.start, cols.start]) * placement["scale"][-2:]
        except (ValueError, TypeError) as exc:
            show_error(f"Deconvolve: {exc}")
            return
        name = self.output_name() + (" preview" if preview else "")
        self.launch(data, psf, method=self.method.value, loop_axes=loop_axes, rgb=layer.rgb, device=self.device.value,
                    params=_values(self.method_params), source=layer, name=name, placement=placement,
                    title="Deconvolve")


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
