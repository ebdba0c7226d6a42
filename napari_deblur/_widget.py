"""The Deconvolve widget: pick an image layer, a method, a PSF; restore in a worker thread.

The form is built from :mod:`deblur_ops.apps.catalog` (methods and their parameters, PSF models and
theirs, labels, units, choices and what each method suits), so new methods appear without edits
here. PSF sources are a name -> callable table (:attr:`DeconvolveWidget.psf_sources`); whatever a
source returns goes to ``deblur`` unchanged. Blind methods (``needs_psf`` False) hide the PSF
fields and get ``psf=None``. The defaults follow the chosen layer (:func:`data_kind`): a 3D stack
opens on Richardson-Lucy in 3D with a Born-Wolf PSF at the layer's voxel size, a FITS image on
Richardson-Lucy with a Moffat PSF, an RGB photo on IRC-Net with a motion PSF. "Estimate PSF"
estimates the kernel of the plane on screen (:func:`deblur_ops.estimate_psf`, blind; from edges,
or from the stars or beads it finds, which then go into a Points layer) into a new layer and makes
it the PSF layer.
Running, cancelling and publishing (:class:`RestoreRunner`, :func:`publish_image`) are shared
with the "Spatially varying PSF" and "Estimate motion" widgets.
"""
from __future__ import annotations

import copy
import inspect
import queue
import threading
from typing import TYPE_CHECKING

import numpy as np
from magicgui import widgets
from qtpy.QtCore import QSize, Qt
from qtpy.QtGui import QImage, QPixmap
from qtpy.QtWidgets import QComboBox, QFrame, QLabel, QScrollArea, QSizePolicy, QVBoxLayout, QWidget

from deblur_ops import estimate_psf, methods
from deblur_ops.models.methods import blind_region
from deblur_ops.psf.estimate import estimate_steps, near_sharp_warning
from deblur_ops.apps import catalog
from deblur_ops.apps.io import cast_like
from deblur_ops.restore import get_method
from deblur_ops.apps.stack import block_at, block_count, iter_deblur_stack, loop_axes_for, psf_ndim, slicing_loop_axes
from deblur_ops.psf import prepare_psf, psf_from_point_sources

from ._form import NumberEdit, field_for, format_number, values

if TYPE_CHECKING:
    import napari

SLICES = "slice by slice (2D)"
VOLUME = "3D volume (last three axes)"
GENERATED = "generated"
LAYER = "layer"
PREVIEW_SIDE = 96
HISTORY_KEY = "deblur_history"
# Defaults per kind of data (see data_kind): method, PSF model, processing mode.
DEFAULTS = {
    "fluorescence": ("richardson_lucy", "born_wolf", VOLUME),
    "astronomy": ("richardson_lucy", "moffat", SLICES),
    "photo": ("irc-net", "motion", SLICES),
    "image": ("richardson_lucy", "gaussian", SLICES),
}


def data_kind(layer) -> str:
    """What an image layer holds, for defaults and method suggestions.

    ``"photo"`` (RGB), ``"astronomy"`` (a FITS header in its metadata), ``"fluorescence"`` (a
    grey stack of 3 or more axes) or ``"image"`` (any other grey picture).
    """
    if layer.rgb:
        return "photo"
    if "fits_header" in layer.metadata:
        return "astronomy"
    if layer.ndim >= 3:
        return "fluorescence"
    return "image"


def axis_name(layer, axis: int) -> str:
    """The layer's label for ``axis`` (``layer.axis_labels``), or "axis N" for napari's numeric defaults."""
    label = str(layer.axis_labels[axis])
    return f"axis {axis}" if label.lstrip("-").isdigit() else label


def spatial_axes(layer) -> list[int]:
    """The last two (2D) or three (stacks) axes of a layer, colour excluded."""
    ndim = layer.ndim
    return list(range(max(0, ndim - 3), ndim))


def voxel_in_micrometres(layer, axis: int) -> tuple[float, bool]:
    """``layer.scale[axis]`` in µm, and whether the layer's unit is a length (not napari's 'pixel')."""
    scale = float(layer.scale[axis])
    unit = layer.units[axis]
    if str(unit) == "pixel":
        return scale, False
    try:
        return float((scale * unit).to("micrometer").magnitude), True
    except Exception:  # pint raises its own DimensionalityError for non-length units (seconds, ...)
        return scale, False


def describe_run(method: str, params: dict) -> str:
    """The method and its key parameter for layer names: ``richardson_lucy 30 it``, ``irc 12 stages``."""
    defaults = {p.name: p.default for p in catalog.method_parameters(method)}
    for key, unit in (("iterations", "it"), ("stages", "stages"), ("steps", "steps"), ("max_steps", "steps")):
        if key in defaults:
            value = params.get(key, defaults[key])
            if value is not None:
                return f"{method} {value} {unit}"
    return method


def unique_name(viewer, name: str) -> str:
    """``name``, or ``name (2)``, ``name (3)``... so that a new result never replaces another layer."""
    candidate, k = name, 1
    while candidate in viewer.layers:
        k += 1
        candidate = f"{name} ({k})"
    return candidate


def _preview_pixmap(psf: np.ndarray) -> QPixmap:
    """Max projection of the PSF, square-root scaled so the faint wings show."""
    picture = psf.max(axis=0) if psf.ndim == 3 else psf
    picture = np.sqrt(np.clip(picture / picture.max(), 0, 1))
    grey = np.ascontiguousarray((picture * 255).astype(np.uint8))
    image = QImage(grey.data, grey.shape[1], grey.shape[0], grey.strides[0], QImage.Format.Format_Grayscale8)
    return QPixmap.fromImage(image.copy()).scaled(PREVIEW_SIDE, PREVIEW_SIDE, Qt.AspectRatioMode.KeepAspectRatio,
                                                   Qt.TransformationMode.FastTransformation)


def wrapping_status() -> widgets.Label:
    """A status line that wraps and never widens the dock, however long the message."""
    status = widgets.Label(value="")
    status.native.setWordWrap(True)
    status.native.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Minimum)
    status.native.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
    return status


class _FormScroll(QScrollArea):
    """A vertical scroll area as wide as its form: the dock may be short, but no field is cut off."""

    def minimumSizeHint(self) -> QSize:
        return QSize(self.widget().minimumSizeHint().width() + self.verticalScrollBar().sizeHint().width(), 80)

    def sizeHint(self) -> QSize:
        hint = self.widget().sizeHint()
        return QSize(max(hint.width() + self.verticalScrollBar().sizeHint().width(),
                         self.minimumSizeHint().width()), hint.height())


def dock_layout(widget: QWidget, form: QWidget, footer: QWidget) -> None:
    """The form in a vertical scroll area (the dock can be shorter than the form) above a fixed footer.

    The footer (run and cancel buttons, status) stays visible while the form scrolls.
    """
    top_aligned = QWidget()  # the fields stay packed at the top when the dock is taller than the form
    column = QVBoxLayout(top_aligned)
    column.setContentsMargins(0, 0, 0, 0)
    column.addWidget(form)
    column.addStretch()
    scroll = _FormScroll()
    scroll.setWidgetResizable(True)
    scroll.setFrameShape(QFrame.Shape.NoFrame)
    scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
    scroll.setWidget(top_aligned)
    layout = QVBoxLayout(widget)
    layout.setContentsMargins(0, 0, 0, 0)
    layout.addWidget(scroll, stretch=1)
    layout.addWidget(footer)


class Cancelled(Exception):
    """Raised from a method's ``callback`` to stop it between two iterations when Cancel is pressed."""


class RunFailed(Exception):
    """A restoration's error as one message for the user.

    Worker bodies re-raise every error as this: superqt's generator worker swallows a RuntimeError
    (torch's usual error type) without emitting ``errored`` or ``finished``, which left the widget
    on "running...", and the original exception's traceback would print the arrays it holds.
    """


class RestoreRunner:
    """What the widgets share: run ``_restore`` (or any worker) with progress and Cancel, then publish.

    The widget provides ``viewer``, ``cancel_button``, ``status``, ``busy_buttons`` (disabled while
    a restoration runs) and optionally ``replace`` (a check box: "replace previous result").
    ``last_result`` is the layer the last run wrote.
    """

    worker = None
    last_result = None
    replace = None
    _stop = None
    _cancelling = None

    def launch(self, data, psf, *, method, loop_axes, rgb, device, params, source, name, placement, title,
               history: str, preview: bool = False):
        """Start the restoration of ``data`` into a new layer named after ``name`` (or the previous
        result's layer when "replace previous result" is ticked; previews replace their preview layer).
        Nothing is written if it is cancelled or fails.
        """
        from napari.qt.threading import thread_worker

        blocks = block_count(data.shape, psf, rgb=rgb, loop_axes=loop_axes)
        steps = steps_per_block(method, params)
        self._stop = threading.Event()
        restore = thread_worker(_restore, progress={"total": blocks * steps, "desc": f"{title} ({method})"},
                                ignore_errors=True)
        if preview:
            target = self.viewer.layers[name] if name in self.viewer.layers else None
        else:
            target = self.last_result if self.replace is not None and self.replace.value else None
        iterations = f", {steps} iterations each" if steps > 1 else ""
        worker = restore(data, psf, method=method, loop_axes=loop_axes, rgb=rgb, device=device, stop=self._stop,
                         per_iteration=steps > 1, **params)
        # napari's own Cancel (in its status bar) only quits the worker: stop the method too.
        worker.aborted.connect(self._stop.set)
        self.start_worker(worker,
                          lambda result: self._publish(result, source, name, placement, history, target, preview),
                          title=title, status=f"running {method} on {blocks} block(s){iterations}...")

    def start_worker(self, worker, on_returned, *, title: str, status: str, cancelling: str | None = None):
        """Run a napari thread ``worker`` with the busy buttons disabled and Cancel enabled.

        ``on_returned`` gets the worker's result (None when the worker stopped on Cancel). An error
        is shown once, prefixed with ``title``, in the status line and as a napari notification.
        A warning (e.g. method blind's near-sharp caution) is shown once as a napari warning
        notification and added to the status line when the worker ends.
        ``cancelling`` is shown when Cancel is pressed, for workers that stop only after a long step.
        """
        self.worker = worker
        self._cancelling = cancelling
        self._warnings = []
        worker.returned.connect(lambda result: None if result is None else on_returned(result))
        worker.errored.connect(lambda exc: self.report_error(title, exc))
        # napari's workers do not reliably relay warnings to its notifications (none appeared for
        # method blind's caution): relayed here.
        worker.warned.connect(lambda args: self._report_warning(title, args[0]))
        worker.aborted.connect(lambda: setattr(self.status, "value", "cancelled; no layer written"))
        worker.finished.connect(self._idle)
        for button in self.busy_buttons:
            button.enabled = False
        self.cancel_button.enabled = True
        self.status.value = status
        worker.start()

    def _report_warning(self, title: str, warning) -> None:
        """A warning of the running worker: a napari warning notification, once per message."""
        from napari.utils.notifications import show_warning

        message = str(warning)
        if message not in self._warnings:
            self._warnings.append(message)
            show_warning(f"{title}: {message}")

    def report_error(self, title: str, exc: BaseException) -> None:
        """One message for a failure: in the status line and as a napari notification (no traceback)."""
        from napari.utils.notifications import show_error

        message = f"{title}: {exc}"
        self.status.value = message
        show_error(message)

    def cancel(self, _value=None):
        """Stop the running restoration after the current iteration; nothing is written."""
        if self.worker is not None:
            self.worker.quit()
            if self._cancelling and self.cancel_button.enabled:
                self.status.value = self._cancelling
        if self._stop is not None:
            self._stop.set()

    def _idle(self):
        for button in self.busy_buttons:
            button.enabled = True
        self.cancel_button.enabled = False
        if getattr(self, "_warnings", None):
            self.status.value = f"{self.status.value}. Warning: {'; '.join(self._warnings)}"
            self._warnings = []

    def _publish(self, result: np.ndarray, source, name: str, placement: dict, history: str, target, preview):
        layer = publish_image(self.viewer, result, name, source=source, replace=target, history=history, **placement)
        if not preview:
            self.last_result = layer
        self.status.value = f"wrote {layer.name!r}"


def publish_image(viewer, data: np.ndarray, name: str, *, source=None, replace=None, history: str | None = None,
                  **options):
    """Put ``data`` into a new layer (``name``, made unique), or into ``replace`` if that layer is given.

    Contrast limits always come from ``data`` (a swapped-in result keeps no limits of the old one).
    ``source`` (an Image layer) lends its RGB flag or colormap and a deep copy of its metadata, to
    which ``history`` is appended under ``metadata["deblur_history"]`` (the FITS writer's HISTORY).
    """
    metadata = copy.deepcopy(dict(source.metadata)) if source is not None else {}
    if history is not None:
        metadata[HISTORY_KEY] = [*metadata.get(HISTORY_KEY, []), history]
    if replace is not None and replace in viewer.layers:
        if replace.data.shape == data.shape:
            replace.data = data
            for key, value in options.items():
                setattr(replace, key, value)
            replace.metadata = metadata
            if not replace.rgb:
                replace.reset_contrast_limits_range()
                replace.reset_contrast_limits()
            return replace
        # Another block shape (another slice axis, another ROI) cannot be swapped into the same layer.
        viewer.layers.remove(replace)
    if source is not None:
        options = {**({"rgb": source.rgb} if source.rgb else {"colormap": source.colormap.name}), **options}
        if data.ndim == source.data.ndim and "units" not in options:
            # Same axes as the input: keep their units and names (napari warns on mixed units).
            options = {"units": source.units, "axis_labels": source.axis_labels, **options}
    return viewer.add_image(data, name=unique_name(viewer, name), metadata=metadata, **options)


def steps_per_block(method: str, params: dict) -> int:
    """How many times ``method`` calls its ``callback`` per block (its iterations), 1 when it has no
    callback or the count is chosen inside the method (then progress advances per block)."""
    signature = inspect.signature(get_method(method).function).parameters
    if "callback" not in signature:
        return 1
    for key in ("iterations", "stages"):
        if key in signature:
            value = params.get(key, signature[key].default)
            return int(value) if isinstance(value, int) and value > 1 else 1
    return 1


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
    """Restore an image layer into a new layer ``"<input> [<method> <iterations> it]"``.

    With "replace previous result" ticked, a run writes into the layer of the previous run instead.
    """

    def __init__(self, napari_viewer: napari.viewer.Viewer):
        from superqt import QCollapsible

        super().__init__()
        self.viewer = napari_viewer
        self.psf_sources = {GENERATED: self._generated_psf, LAYER: self._layer_psf}
        self._shown_model = None  # the PSF model whose fields are on screen
        self._psf_memory = {}  # model -> the field values last shown for it
        self._model_2d = "airy"  # the 2D model to return to when leaving 3D volume mode
        self.image = widgets.ComboBox(label="image", choices=self._image_layers)
        self.mode = widgets.ComboBox(label="process as", choices=[SLICES, VOLUME],
                                     tooltip="2D: each plane with a 2D PSF; 3D: whole volumes with a 3D PSF")
        self.slice_axis = widgets.ComboBox(label="slices across", choices=self._slice_axes,
                                           tooltip="2D slices are cut across this axis; axes in front of "
                                                   "the last three are looped over too")
        self.method = widgets.ComboBox(label="method", choices=self._method_choices)
        self.description = wrapping_status()
        self.method_params = widgets.Container(labels=True)
        self.voxel = widgets.Container(labels=True, tooltip="voxel size of the image, from the layer's scale")
        self.psf_source = widgets.ComboBox(label="PSF from", choices=[GENERATED, LAYER],
                                           tooltip="generated: a model below; layer: a measured PSF image layer")
        self.psf_layer = widgets.ComboBox(label="PSF layer", choices=self._psf_layers, nullable=True,
                                          tooltip="an image layer holding the PSF (not the image itself)")
        self.psf_model = widgets.ComboBox(label="PSF model", choices=list(catalog.PSF_MODELS))
        self.psf_size = widgets.SpinBox(value=31, min=3, max=1001, step=2,
                                        tooltip="largest side of the estimated kernel (odd): at least the blur's "
                                                "extent in pixels; smaller supports down to 3 px are tried too")
        self.estimate_button = widgets.PushButton(text="Estimate PSF",
                                                  tooltip="estimate the blur kernel of the plane on screen "
                                                          "(blind, takes seconds) into a new layer, and use it "
                                                          "as the PSF layer")
        self.estimate_row = widgets.Container(widgets=[self.psf_size, self.estimate_button], layout="horizontal",
                                              labels=False, label="PSF size (px)")
        self.estimate_row.margins = (0, 0, 0, 0)
        self.estimate_from = widgets.ComboBox(
            label="estimate from", value="auto",
            choices=[("auto", "auto"), ("edges (photos)", "edges"), ("point sources (stars, beads)", "points")],
            tooltip="what 'Estimate PSF' reads the blur from: edges (camera shake, defocus), isolated stars or "
                    "beads (averaged; marked in a Points layer), or auto: point sources on mostly empty sky with "
                    "at least 5 usable ones, else edges. For point sources the size should hold the PSF's wings")
        for layer_box in (self.image, self.psf_layer):
            # Sized once, when first shown: a long layer name added later (an estimated PSF's) would
            # widen the form past the dock; long names are elided instead.
            layer_box.native.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
            layer_box.native.setMinimumContentsLength(16)
        self.psf_params = widgets.Container(labels=True)
        self.device = widgets.ComboBox(label="device", choices=["auto", "cpu", "cuda"])
        self.roi = widgets.ComboBox(label="ROI", choices=lambda _w: shape_layers(self.viewer), nullable=True,
                                    tooltip="a Shapes layer with a rectangle: 'Preview ROI' restores only "
                                            "that part of the slice on screen, and 'Estimate PSF' reads the blur "
                                            "from it only (pick uniform blur, strong edges, no clipped highlights)")
        self.roi_button = widgets.PushButton(text="Preview ROI")
        self.preview_button = widgets.PushButton(text="Preview current slice",
                                                 tooltip="restore only the slice (or volume) on screen into "
                                                         "'<input> [<method>] preview'")
        self.run_button = widgets.PushButton(text="Deconvolve")
        self.cancel_button = widgets.PushButton(text="Cancel", enabled=False)
        self.replace = widgets.CheckBox(label="replace previous result", value=False,
                                        tooltip="off: every run adds a new layer; on: the run overwrites the "
                                                "layer of the previous run")
        self.busy_buttons = (self.run_button, self.preview_button, self.roi_button, self.estimate_button)
        self.status = wrapping_status()
        self.preview = QLabel()
        self.preview.setFixedSize(PREVIEW_SIDE, PREVIEW_SIDE)
        self.preview.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.preview.setToolTip("PSF preview (max projection, square-root scale)")

        form = widgets.Container(widgets=[self.image, self.mode, self.slice_axis, self.method, self.description,
                                          self.method_params, self.voxel, self.psf_source, self.estimate_row,
                                          self.estimate_from, self.psf_layer, self.psf_model, self.psf_params])
        advanced = QCollapsible("Advanced")
        advanced.addWidget(widgets.Container(widgets=[self.device, self.roi, self.roi_button]).native)
        inner = QWidget()
        column = QVBoxLayout(inner)
        column.setContentsMargins(0, 0, 0, 0)
        column.addWidget(form.native)
        column.addWidget(self.preview)
        column.addWidget(advanced)
        buttons = widgets.Container(widgets=[self.preview_button, self.run_button, self.cancel_button],
                                    layout="horizontal", labels=False)
        buttons.margins = (0, 0, 0, 0)
        self.preview_button.text = "Preview slice"
        footer = widgets.Container(widgets=[buttons, self.replace, self.status])
        dock_layout(self, inner, footer.native)

        self.image.changed.connect(self._image_changed)
        self.method.changed.connect(self._rebuild_method_params)
        self.method.changed.connect(self._show_psf_fields)
        self.psf_model.changed.connect(self._rebuild_psf_params)
        self.psf_source.changed.connect(self._show_psf_fields)
        self.psf_layer.changed.connect(self._psf_layer_changed)
        self.mode.changed.connect(self._mode_changed)
        self.run_button.changed.connect(self.run)
        self.preview_button.changed.connect(self.preview_current)
        self.roi_button.changed.connect(self.preview_roi)
        self.estimate_button.changed.connect(self.estimate)
        self.cancel_button.changed.connect(self.cancel)
        for event in (napari_viewer.layers.events.inserted, napari_viewer.layers.events.removed):
            event.connect(self._refresh_layers)
        self._rebuild_method_params()
        self._rebuild_psf_params()
        self._image_changed()

    # --- choices ---------------------------------------------------------------------------------
    def _image_layers(self, _widget=None):
        from napari.layers import Image

        return [(layer.name, layer) for layer in self.viewer.layers if isinstance(layer, Image)]

    def _psf_layers(self, _widget=None):
        """Image layers other than the image being restored (a PSF is never the image itself)."""
        chosen = self.image.value
        return [(name, layer) for name, layer in self._image_layers() if layer is not chosen and not layer.rgb]

    def _kind(self) -> str:
        layer = self.image.value
        return "image" if layer is None else data_kind(layer)

    def _method_choices(self, _widget=None):
        """Methods that suit the data first, then the others; volumes list only 3D-capable methods.

        Networks trained on photos are flagged as such for microscopy and astronomy data.
        """
        kind = self._kind()
        volume = self.mode.value == VOLUME and self._is_stack()
        names = list(methods())
        if volume:
            names = [n for n in names if "volume" in catalog.METHOD_SUITS.get(n, ())]
        suited = [n for n in names if kind in catalog.METHOD_SUITS.get(n, ())]
        ordered = suited + [n for n in names if n not in suited]
        flag = kind in ("fluorescence", "astronomy")
        return [(f"{n} (trained on photos)" if flag and n in catalog.TRAINED_ON_PHOTOS else n, n) for n in ordered]

    def _reset_method_choices(self):
        self.method.reset_choices()
        descriptions = methods()
        combo = self.method.native
        for i in range(combo.count()):
            name = self.method.choices[i]
            combo.setItemData(i, descriptions[name], Qt.ItemDataRole.ToolTipRole)

    def _is_stack(self) -> bool:
        layer = self.image.value
        return layer is not None and not layer.rgb and layer.ndim >= 3

    def _slice_axes(self, _widget=None):
        layer = self.image.value
        if layer is None or not self._is_stack():
            return []
        return [(f"{axis_name(layer, axis)} (axis {axis} of {layer.ndim})", axis)
                for axis in range(layer.ndim - 3, layer.ndim)]

    # --- reacting to the form --------------------------------------------------------------------
    def _refresh_layers(self, _event=None):
        # A new image value (the chosen layer was removed) emits ``changed``: _image_changed follows.
        self.image.reset_choices()
        self.psf_layer.reset_choices()
        self.roi.reset_choices()
        self._refresh_slice_axes()

    def _image_changed(self, _value=None):
        """New image: fresh defaults chosen from the data, its voxel size, and PSF layers other than it."""
        self.psf_layer.reset_choices()
        self.psf_layer.value = None
        self._rebuild_voxel_fields()
        self.apply_defaults()

    def apply_defaults(self):
        """Method, PSF model and mode that fit the chosen layer (see :data:`DEFAULTS`)."""
        method, model, mode = DEFAULTS[self._kind()]
        self.mode.value = mode if self._is_stack() else SLICES
        self.mode.visible = self._is_stack()
        self._reset_method_choices()
        self.method.value = method
        self.psf_source.value = GENERATED
        self.psf_model.value = model
        self._sync_psf_sampling()
        self._refresh_slice_axes()

    def _mode_changed(self, _value=None):
        """Offer the methods of the mode; a generated PSF follows it (Born-Wolf is the 3D model)."""
        chosen = self.method.value
        self._reset_method_choices()
        if chosen in self.method.choices:
            self.method.value = chosen
        if self.psf_source.value == GENERATED:
            if self.mode.value == VOLUME and self.psf_model.value != "born_wolf":
                self._model_2d = self.psf_model.value
                self.psf_model.value = "born_wolf"
            elif self.mode.value == SLICES and self.psf_model.value == "born_wolf":
                self.psf_model.value = self._model_2d
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

    def _rebuild_voxel_fields(self):
        self.voxel.clear()
        layer = self.image.value
        # A voxel size in µm belongs to microscopy; FITS and photos have pixel-based PSF models.
        self.voxel.visible = layer is not None and data_kind(layer) in ("fluorescence", "image")
        if layer is None:
            return
        for axis in spatial_axes(layer)[-3 if self._is_stack() else -2:]:
            size, physical = voxel_in_micrometres(layer, axis)
            note = "" if physical else " The layer has no physical unit (napari's 'pixel'): type the size in µm."
            field = NumberEdit(kind=float, value=size, name=f"voxel_{axis}",
                               label=f"voxel {axis_name(layer, axis)} (µm)",
                               tooltip=f"size of a voxel along {axis_name(layer, axis)}, from the layer's "
                                       f"scale.{note}")
            self.voxel.append(field)
        self.voxel.changed.connect(self._sync_psf_sampling)

    def voxel_size(self) -> tuple[float, ...]:
        """The voxel size in µm per spatial axis ((z, y, x) for stacks, (y, x) for planes), as edited.

        Raises:
            ValueError: a field is empty, not a number, or not > 0.
        """
        sizes = []
        for field in self.voxel:
            value = field.number()
            if value is None or not value > 0:
                raise ValueError(f"{field.label!r} must be a voxel size > 0, got {field.value!r}")
            sizes.append(value)
        return tuple(sizes)

    def has_physical_voxel_size(self) -> bool:
        layer = self.image.value
        return layer is not None and any(voxel_in_micrometres(layer, a)[1] for a in spatial_axes(layer))

    def _sync_psf_sampling(self, _value=None):
        """Optical PSF models sample at the image's voxel size when the layer has physical units."""
        if not self.has_physical_voxel_size() or self.psf_model.value not in ("born_wolf", "airy"):
            return
        try:
            sizes = self.voxel_size()
        except ValueError:
            return
        if "pixel_size" in self.psf_params.asdict():
            self.psf_params["pixel_size"].value = format_number(sizes[-1])
        if "z_step" in self.psf_params.asdict() and len(sizes) == 3:
            self.psf_params["z_step"].value = format_number(sizes[0])

    def _rebuild_method_params(self, _value=None):
        self.method_params.clear()
        if self.method.value is None:
            return
        function = get_method(self.method.value).function
        self.method_params.extend(field_for(p, function) for p in catalog.method_parameters(self.method.value))
        description = methods()[self.method.value]
        if self._kind() in ("fluorescence", "astronomy") and self.method.value in catalog.TRAINED_ON_PHOTOS:
            description += " — trained on photos, not on this kind of data"
        self.description.value = description
        self.method.tooltip = description

    def _rebuild_psf_params(self, _value=None):
        # Edits survive switching models back and forth (e.g. 2D -> 3D volume -> 2D).
        if self._shown_model is not None:
            self._psf_memory[self._shown_model] = {field.name: field.value for field in self.psf_params}
        self.psf_params.clear()
        self._shown_model = self.psf_model.value
        function = catalog.PSF_MODELS[self.psf_model.value]
        self.psf_params.extend(field_for(p, function) for p in catalog.psf_parameters(self.psf_model.value))
        for name, value in self._psf_memory.get(self._shown_model, {}).items():
            self.psf_params[name].value = value
        self.psf_params.changed.connect(self._update_preview)
        self._sync_psf_sampling()
        self._update_preview()

    def needs_psf(self) -> bool:
        return self.method.value is not None and get_method(self.method.value).needs_psf

    def _show_psf_fields(self, _value=None):
        needed = self.needs_psf()
        generated = self.psf_source.value == GENERATED
        self.psf_source.visible = self.estimate_row.visible = self.estimate_from.visible = needed
        self.psf_model.visible = self.psf_params.visible = needed and generated
        self.psf_layer.visible = needed and self.psf_source.value == LAYER
        self.preview.setVisible(needed)
        self._update_preview()

    def _psf_layer_changed(self, _value=None):
        self._update_preview()
        warning = self.psf_scale_warning()
        if warning:
            from napari.utils.notifications import show_warning

            self.status.value = warning
            show_warning(f"Deconvolve: {warning}")

    def psf_scale_warning(self) -> str:
        """A message when the chosen PSF layer's voxel size differs from the image's, else ''."""
        image, psf = self.image.value, self.psf_layer.value
        if image is None or psf is None or self.psf_source.value != LAYER:
            return ""
        n = min(psf.ndim, len(spatial_axes(image)))
        image_scale, psf_scale = np.asarray(image.scale)[-n:], np.asarray(psf.scale)[-n:]
        if np.allclose(image_scale, psf_scale, rtol=1e-3):
            return ""
        return (f"PSF layer {psf.name!r} has voxel size {tuple(psf_scale.tolist())} but {image.name!r} has "
                f"{tuple(image_scale.tolist())}: the PSF is resampled to the image's voxel size "
                f"(flux kept)")

    def _generated_psf(self) -> np.ndarray:
        return catalog.make_psf(self.psf_model.value, **values(self.psf_params))

    def _layer_psf(self) -> np.ndarray:
        layer = self.psf_layer.value
        if layer is None:
            raise ValueError("choose a PSF layer, or switch 'PSF from' to 'generated'")
        data = np.asarray(layer.data, dtype=np.float32)
        image = self.image.value
        resample = {}
        if image is not None and self.psf_scale_warning():  # another voxel size: resample, flux kept
            n = min(data.ndim, len(spatial_axes(image)))
            resample = {"voxel_size": tuple(float(s) for s in np.asarray(image.scale)[-n:]),
                        "psf_voxel_size": tuple(float(s) for s in np.asarray(layer.scale)[-n:])}
        return prepare_psf(data, crop_energy=None, **resample).numpy()

    def psf(self):
        """The PSF from the chosen source, as ``deblur`` takes it; None for a blind method."""
        if not self.needs_psf():
            return None
        return self.psf_sources[self.psf_source.value]()

    def _describe_psf(self) -> str:
        if not self.needs_psf():
            return "no PSF (blind)"
        if self.psf_source.value == LAYER:
            return f"PSF layer {self.psf_layer.value.name!r}"
        settings = ", ".join(f"{k}={v}" for k, v in values(self.psf_params).items())
        return f"{self.psf_model.value} PSF ({settings})"

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

    # --- running ---------------------------------------------------------------------------------
    def output_name(self) -> str:
        """``"<input> [<method> <key parameter>]"``, e.g. ``cells [richardson_lucy 30 it]``."""
        try:
            params = values(self.method_params)
        except ValueError:
            params = {}
        return f"{self.image.value.name} [{describe_run(self.method.value, params)}]"

    def run(self, _value=None):
        """Start the restoration of the whole layer in a worker thread (progress per iteration; Cancel stops it)."""
        self._start(preview=False)

    def preview_current(self, _value=None):
        """Restore only the block under the viewer's current position, into a preview layer."""
        self._start(preview=True)

    def preview_roi(self, _value=None):
        """Restore only the ROI rectangle of the block on screen, into a preview layer placed over it."""
        self._start(preview=True, roi=True)

    def block_on_screen(self, layer, loop_axes) -> tuple:
        """Index into ``layer.data`` of the block (slice, volume) under the viewer's current position."""
        return block_at(layer.data.shape, loop_axes, layer.world_to_data(self.viewer.dims.point))

    def estimate(self, _value=None):
        """Estimate the blur kernel of the slice on screen in a worker thread (:func:`deblur_ops.estimate_psf`).

        The kernel goes into a new layer ``"<image> PSF (estimated, <size> px)"``, which then becomes
        the PSF layer ("PSF from" ▸ layer). The slice is the one "Preview slice" restores (cut across
        "slices across" for stacks; the colour picture of an RGB layer). When the method's form has
        "kernel sparsity" and "dark channel" fields (methods ``blind``, ``blind-irc``), the
        estimate uses their values: with method ``blind`` the kernel shown is the one Deconvolve
        would estimate. With a rectangle chosen as "ROI", the kernel is estimated from that part
        of the slice only: a region of
        uniform blur with strong edges, away from clipped highlights (recorded in the layer's
        history and ``estimated_from["region"]``); without one, method ``blind``'s own *region*
        field does the same, so that the kernel shown is the one its Deconvolve estimates.
        """
        from napari.qt.threading import thread_worker

        layer = self.image.value
        try:
            if layer is None:
                raise ValueError("add or choose an image layer first")
            if self.mode.value == VOLUME:
                raise ValueError("the estimated PSF is 2D: choose 'process as' ▸ slice by slice (2D) first")
            size = self.psf_size.value
            if size % 2 == 0:
                raise ValueError(f"'PSF size (px)' must be odd (the kernel has a centre pixel), got {size}; "
                                 f"try {size + 1}")
            loop_axes = loop_axes_for(layer.data.shape, 2, rgb=layer.rgb, loop_axes=self.loop_axes())
            index = self.block_on_screen(layer, loop_axes)
            # A copy: the layer may be edited while the worker runs; the alpha channel is no picture.
            plane = np.array(layer.data[index])
            if layer.rgb:
                plane = plane[..., :3]
            form = values(self.method_params)
            region = None
            if self.roi.value is not None:
                rows, cols = roi_bounds(self.roi.value, layer, self.viewer.dims.point)
                if 3 * size > min(rows.stop - rows.start, cols.stop - cols.start):
                    raise ValueError(f"the ROI rectangle of {self.roi.value.name!r} covers {rows.stop - rows.start} x "
                                     f"{cols.stop - cols.start} px of {layer.name!r}: a {size} px PSF needs at least "
                                     f"{3 * size} px along each side; draw a larger rectangle, lower 'PSF size', "
                                     f"or clear the ROI to estimate from the whole slice")
            elif form.get("region"):
                # Method blind's own region (its form), so that the kernel shown is the one it estimates.
                rows, cols = blind_region(form["region"], plane.shape[:2], size)
            if self.roi.value is not None or form.get("region"):
                plane = plane[rows, cols]
                region = {"rows": [int(rows.start), int(rows.stop)], "cols": [int(cols.start), int(cols.stop)]}
            # The method's own kernel prior, when it has one (an empty field: the estimator's default).
            settings = {key: value for key, value in form.items() if key in ("sparsity", "dark_channel")}
        except (ValueError, TypeError) as exc:
            self.report_error("Estimate PSF", exc)
            return
        plane_axes = [a for a in range(layer.ndim) if a not in loop_axes]
        placement = {"scale": np.asarray(layer.scale)[plane_axes],
                     "translate": np.asarray(layer.translate, dtype=float)[plane_axes],
                     "units": tuple(layer.units[a] for a in plane_axes),
                     "axis_labels": tuple(layer.axis_labels[a] for a in plane_axes)}
        made = {"image": layer.name, "plane": {axis_name(layer, a): index[a] for a in loop_axes}, "size": size,
                **settings, **({"region": region} if region else {})}
        self._stop = threading.Event()
        steps = estimate_steps(plane.shape[:2], size)
        worker = thread_worker(_estimate_psf, progress={"total": steps, "desc": "Estimate PSF"}, ignore_errors=True)
        worker = worker(plane, size, source=self.estimate_from.value, device=self.device.value, stop=self._stop,
                        **settings)
        worker.aborted.connect(self._stop.set)
        self.start_worker(worker, lambda estimate: self._publish_psf(*estimate, made, placement),
                          title="Estimate PSF",
                          status=f"estimating a {size} x {size} px PSF from {layer.name!r} (seconds to a "
                                 f"minute)...")

    def _publish_psf(self, kernel: np.ndarray, source: str, sources, made: dict, placement: dict):
        """The estimated kernel into a new layer, chosen as the PSF layer; the point sources it was
        averaged from (``sources``, (n, 2) positions in the plane, or None) into a Points layer."""
        where = "".join(f", {axis} {i}" for axis, i in made["plane"].items())
        region = made.get("region")
        if region:
            (top, bottom), (left, right) = region["rows"], region["cols"]
            where += f", rows {top}:{bottom}, columns {left}:{right}"
            if sources is not None:  # positions in the region -> in the slice
                sources = np.asarray(sources, dtype=float) + np.array([top, left])
        read = "edges" if sources is None else f"{len(sources)} point sources"
        priors = "".join(f", {key}={format_number(made[key])}" for key in ("sparsity", "dark_channel") if key in made)
        history = f"deblur-ops estimate_psf (size={made['size']}{priors}, from {read}) from {made['image']!r}{where}"
        name = unique_name(self.viewer, f"{made['image']} PSF (estimated, {made['size']} px)")
        layer = self.viewer.add_image(kernel, name=name, colormap="magma",
                                      metadata={HISTORY_KEY: [history], "estimated_from": {**made, "source": source}},
                                      **placement)
        marked = ""
        if sources is not None:
            points = unique_name(self.viewer, f"{made['image']} PSF sources")
            self.viewer.add_points(np.asarray(sources, dtype=float), name=points, size=made["size"], symbol="square",
                                   face_color="transparent", border_color="cyan", border_width=0.05,
                                   scale=placement["scale"], translate=placement["translate"],
                                   metadata={HISTORY_KEY: [history]})
            marked = f" (from the {len(sources)} point sources in {points!r})"
        self.psf_layer.value = layer
        self.psf_source.value = LAYER
        caution = near_sharp_warning(kernel) if sources is None else None
        self.status.value = f"wrote {name!r}{marked}, now the PSF layer" + self._unused_psf_hint() + (
            f". Caution: {caution}" if caution else "")

    def _unused_psf_hint(self) -> str:
        """What to do with a PSF layer the chosen method does not take ('' when it takes one)."""
        method = self.method.value
        if self.needs_psf():
            return ""
        if method in ("blind", "blind-irc"):
            return (f"; {method} estimates its own kernel: to restore with this one, choose a method that takes a "
                    f"PSF (tv-irc is blind's own restoration step)")
        return f"; {method} does not use it"

    def _start(self, preview: bool, roi: bool = False):
        from napari.utils.notifications import show_error

        layer = self.image.value
        if layer is None:
            show_error("Deconvolve: add or choose an image layer first")
            return
        try:
            params = values(self.method_params)
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
                data = data[self.block_on_screen(layer, loop_axes)]
                loop_axes = ()
                placement = {key: value[block_axes] for key, value in placement.items()}
                placement["units"] = tuple(layer.units[a] for a in block_axes)
                placement["axis_labels"] = tuple(layer.axis_labels[a] for a in block_axes)
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
            self.report_error("Deconvolve", exc)
            return
        name = self.output_name() + (" preview" if preview else "")
        settings = ", ".join(f"{k}={v}" for k, v in params.items())
        history = f"deblur-ops {self.method.value} ({settings}) with {self._describe_psf()}"
        self.launch(data, psf, method=self.method.value, loop_axes=loop_axes, rgb=layer.rgb, device=self.device.value,
                    params=params, source=layer, name=name, placement=placement, title="Deconvolve",
                    history=history, preview=preview)


def _stepped(run, stop: threading.Event, name: str):
    """Worker body helper: ``run(step)`` in a helper thread, yielding here each time it calls
    ``step()`` (napari advances the progress bar at every yield and can stop there); returns
    ``run``'s result, or None once Cancel stopped it.

    ``step()`` raises :class:`Cancelled` when ``stop`` is set, so a method or estimator that calls it
    from its own callback stops within one iteration, not at its end. Errors come back as
    :class:`RunFailed` (one message for the user)."""
    events: queue.SimpleQueue = queue.SimpleQueue()

    def step():
        if stop.is_set():
            raise Cancelled
        events.put(("step", None))

    def body():
        try:
            events.put(("done", run(step)))
        except Cancelled:
            events.put(("cancelled", None))
        except Exception as exc:  # handed to the worker, which reports it (errored signal)
            events.put(("error", exc))

    helper = threading.Thread(target=body, name=name, daemon=True)
    helper.start()
    try:
        while True:
            kind, value = events.get()
            if kind == "step":
                yield
            elif kind == "cancelled":
                yield  # the worker sees its abort request here and stops without a result
                return None
            elif kind == "error":
                raise RunFailed(str(value)) from None
            else:
                return value
    finally:
        stop.set()
        helper.join()


def _estimate_psf(plane: np.ndarray, size: int, *, source: str, device, stop: threading.Event, **settings):
    """Worker body: the blind kernel estimate of one plane, what it was read from ("edges" or "points")
    and, for points, the (n, 2) positions of the sources averaged. It yields after every pyramid
    level of the estimator (its callback), where Cancel stops it. ``settings``: more keywords of
    :func:`deblur_ops.estimate_psf` (``sparsity``, ``dark_channel``)."""
    def run(step):
        kernel, used = estimate_psf(plane, size, source=source, device=device, return_source=True,
                                    callback=lambda _done, _total: step(), **settings)
        sources = None
        if used == "points":  # the same (deterministic) measurement again, for the positions it used
            grey = plane.mean(-1) if plane.ndim == 3 else plane
            _, positions, report = psf_from_point_sources(grey, size, min_sources=1)
            sources = positions[report.used]
        return kernel, used, sources

    return (yield from _stepped(run, stop, "estimate PSF"))


def _restore(data, psf, *, method, loop_axes, rgb, device, stop: threading.Event, per_iteration: bool, **params):
    """Worker body: yields after each iteration (``per_iteration``) or each block; napari advances the
    progress bar at every yield and can stop there.

    The blocks are restored in a helper thread (:func:`_stepped`) so that the method's ``callback``
    (called inside it after every iteration) can both report progress here and stop the method when
    ``stop`` is set: a volume stops within one iteration, not at its end.
    """
    out = np.empty(data.shape, np.float32)

    def run(step):
        if "callback" in inspect.signature(get_method(method).function).parameters:
            def callback(_iteration, _estimate):
                if per_iteration:
                    step()
                elif stop.is_set():
                    raise Cancelled
            kwargs = {**params, "callback": callback}
        else:
            kwargs = params
        for index, block in iter_deblur_stack(data, psf, method=method, loop_axes=loop_axes, rgb=rgb,
                                              device=device, **kwargs):
            out[index] = block
            if not per_iteration:
                step()
            elif stop.is_set():
                raise Cancelled
        return out

    if (yield from _stepped(run, stop, f"deblur {method}")) is None:
        return None
    if rgb and np.issubdtype(data.dtype, np.integer):
        # napari reads integer RGB as 0..dtype max and float RGB as 0..1: keep the input's scale.
        return cast_like(out, data.dtype)
    if rgb:
        np.clip(out, 0, 1, out=out)
    return out
