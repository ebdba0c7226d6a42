"""The "Spatially varying PSF" widget: build a PSFGrid or MotionField, preview it, restore with it.

The PSF description comes from :mod:`deblur_ops.psf` (``PSFGrid.from_stack``,
``psf_grid_from_points``, ``psf_grid_from_point_sources``, ``MotionField.constant`` / ``linear``); this module only reads the form
and the layers. Restoration runs like the Deconvolve widget's (:class:`RestoreRunner`).
"""
from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

import numpy as np
from magicgui import widgets
from qtpy.QtWidgets import QWidget

from deblur_ops.apps import catalog
from deblur_ops.psf import MotionField, PSFGrid, psf_grid_from_point_sources, psf_grid_from_points
from deblur_ops.restore import METHODS

from ._form import field_for, values
from ._widget import RestoreRunner, describe_run, dock_layout, publish_image, wrapping_status

if TYPE_CHECKING:
    import napari

STACK = "PSF stack layer"
POINTS = "stars / beads (Points layer)"
FOUND = "stars / beads (found in the image)"
MOTION = "motion field"
CONSTANT = "constant"
RAMP = "linear ramp"


def _layers(viewer, kind: str):
    import napari.layers

    cls = getattr(napari.layers, kind)
    return [(layer.name, layer) for layer in viewer.layers if isinstance(layer, cls)]


class SpatiallyVaryingWidget(RestoreRunner, QWidget):
    """Restore an image layer with a PSF that varies across the field into ``"<input> [<method> ...]"``."""

    def __init__(self, napari_viewer: napari.viewer.Viewer):
        super().__init__()
        self.filled_nodes: list = []  # grid nodes without a star, filled from the measured ones
        self.found_sources = np.zeros((0, 2))  # the stars the grid was measured from (source FOUND)
        self.viewer = napari_viewer
        self.image = widgets.ComboBox(label="image", choices=lambda _w: _layers(self.viewer, "Image"))
        self.source = widgets.ComboBox(label="PSF source", choices=[STACK, POINTS, FOUND, MOTION],
                                       tooltip="found in the image: the isolated, unsaturated stars or beads of the "
                                               "plane on screen, each node's PSF the median of those nearest to it "
                                               "(marked in '<image> PSF sources' by Preview grid)")
        self.psf_layer = widgets.ComboBox(label="PSF stack", choices=lambda _w: _layers(self.viewer, "Image"),
                                          tooltip="(gy, gx, kh, kw), or (gy * gx, kh, kw) in row-major grid order")
        self.points = widgets.ComboBox(label="stars", choices=lambda _w: _layers(self.viewer, "Points"),
                                       tooltip="one point on an isolated star or bead near each grid node")
        self.crop = widgets.SpinBox(label="PSF size", value=31, min=3, max=501, step=2,
                                    tooltip="odd side of each crop; its border should be background")
        self.grid_rows = widgets.SpinBox(label="grid rows", value=3, min=1, max=64)
        self.grid_cols = widgets.SpinBox(label="grid columns", value=3, min=1, max=64)
        self.motion = widgets.ComboBox(label="motion", choices=[CONSTANT, RAMP])
        self.length = widgets.FloatSpinBox(label="blur length (px)", value=9.0, min=1.0, max=200.0, step=0.5)
        self.angle = widgets.FloatSpinBox(label="angle (°)", value=0.0, min=-360.0, max=360.0,
                                          tooltip="counter-clockwise from +x (columns), rows pointing down")
        self.end_length = widgets.FloatSpinBox(label="end length (px)", value=15.0, min=1.0, max=200.0, step=0.5)
        self.end_angle = widgets.FloatSpinBox(label="end angle (°)", value=0.0, min=-360.0, max=360.0)
        self.ramp_axis = widgets.ComboBox(label="ramp along", choices=["x", "y"])
        capable = sorted(name for name, method in METHODS.items() if method.spatially_varying)
        # Richardson-Lucy is the default: PSF grids come from microscopes and telescopes, whose
        # Poisson data with background it models (flux kept, x >= 0).
        self.method = widgets.ComboBox(label="method", choices=capable,
                                       value="sv_richardson_lucy" if "sv_richardson_lucy" in capable else None)
        self.method_params = widgets.Container(labels=True)
        self.device = widgets.ComboBox(label="device", choices=["auto", "cpu", "cuda"])
        self.grid_button = widgets.PushButton(text="Preview grid",
                                              tooltip="show the PSFs at the grid nodes in '<input> PSF grid'")
        self.run_button = widgets.PushButton(text="Restore")
        self.cancel_button = widgets.PushButton(text="Cancel", enabled=False)
        self.replace = widgets.CheckBox(label="replace previous result", value=False,
                                        tooltip="off: every run adds a new layer; on: the run overwrites the "
                                                "layer of the previous run")
        self.busy_buttons = (self.run_button, self.grid_button)
        self.status = wrapping_status()
        form = widgets.Container(widgets=[
            self.image, self.source, self.psf_layer, self.points, self.crop, self.grid_rows, self.grid_cols,
            self.motion, self.length, self.angle, self.end_length, self.end_angle, self.ramp_axis, self.method,
            self.method_params, self.device])
        buttons = widgets.Container(widgets=[self.grid_button, self.run_button, self.cancel_button],
                                    layout="horizontal", labels=False)
        buttons.margins = (0, 0, 0, 0)
        footer = widgets.Container(widgets=[buttons, self.replace, self.status])
        dock_layout(self, form.native, footer.native)

        self.source.changed.connect(self._show_fields)
        self.motion.changed.connect(self._show_fields)
        self.method.changed.connect(self._rebuild_method_params)
        self.grid_button.changed.connect(self.preview_grid)
        self.run_button.changed.connect(self.run)
        self.cancel_button.changed.connect(self.cancel)
        for event in (napari_viewer.layers.events.inserted, napari_viewer.layers.events.removed):
            event.connect(self._refresh_layers)
        self._rebuild_method_params()
        self._show_fields()

    def _refresh_layers(self, _event=None):
        for combo in (self.image, self.psf_layer, self.points):
            combo.reset_choices()

    def _show_fields(self, _value=None):
        source, ramp = self.source.value, self.motion.value == RAMP
        self.psf_layer.visible = source == STACK
        self.points.visible = source == POINTS
        self.crop.visible = source in (POINTS, FOUND)
        self.motion.visible = self.length.visible = self.angle.visible = source == MOTION
        self.end_length.visible = self.end_angle.visible = self.ramp_axis.visible = source == MOTION and ramp

    def _rebuild_method_params(self, _value=None):
        self.method_params.clear()
        function = METHODS[self.method.value].function
        self.method_params.extend(field_for(p, function) for p in catalog.method_parameters(self.method.value))
        self.method.tooltip = METHODS[self.method.value].description

    def _image(self):
        layer = self.image.value
        if layer is None:
            raise ValueError("add or choose an image layer first")
        if layer.rgb:
            raise ValueError(f"{layer.name!r} is RGB; spatially varying restoration takes a grey (H, W) image "
                             f"(or a stack of them)")
        return layer

    def grid_shape(self) -> tuple[int, int]:
        return self.grid_rows.value, self.grid_cols.value

    def psf(self):
        """The PSFGrid or MotionField the form describes, sized for the chosen image."""
        layer = self._image()
        height, width = layer.data.shape[-2:]
        if self.source.value == STACK:
            if self.psf_layer.value is None:
                raise ValueError("choose the layer holding the PSF stack")
            stack = np.asarray(self.psf_layer.value.data, dtype=np.float64)
            return PSFGrid.from_stack(stack, None if stack.ndim == 4 else self.grid_shape())
        if self.source.value == POINTS:
            if self.points.value is None:
                raise ValueError("add a Points layer with one point on a star or bead near each grid node")
            positions = self._star_positions(layer)
            try:
                with warnings.catch_warnings():  # the filled nodes are reported in the widget instead
                    warnings.simplefilter("ignore", UserWarning)
                    grid, _, filled = psf_grid_from_points(self._plane(layer), positions, self.crop.value,
                                                           self.grid_shape(), return_report=True)
            except Exception as exc:  # noqa: BLE001 - whatever failed, the user's next step is the same
                rows, cols = self.grid_shape()
                raise ValueError(f"could not build the {rows} x {cols} PSF grid from the {len(positions)} star(s) "
                                 f"of {self.points.value.name!r}: {exc}. Put a point on an isolated, unsaturated "
                                 f"star near each grid node, or use fewer grid rows/columns or a smaller PSF "
                                 f"size") from None
            self.filled_nodes = list(filled)
            return grid
        if self.source.value == FOUND:
            try:
                grid, positions, report, filled = psf_grid_from_point_sources(self._plane(layer), self.crop.value,
                                                                              self.grid_shape())
            except ValueError as exc:
                raise ValueError(f"{exc}. Mark stars yourself (source {POINTS!r}), or use a smaller PSF size or "
                                 f"fewer grid rows/columns") from None
            self.filled_nodes = list(filled)
            self.found_sources = positions[report.used]
            return grid
        if self.motion.value == CONSTANT:
            return MotionField.constant((height, width), self.length.value, self.angle.value)
        return MotionField.linear((height, width), (self.length.value, self.angle.value),
                                  (self.end_length.value, self.end_angle.value), axis=self.ramp_axis.value)

    def _plane(self, layer) -> np.ndarray:
        """The (H, W) plane of ``layer`` on screen, where the stars are measured."""
        data = np.asarray(layer.data)
        if data.ndim == 2:
            return data
        position = np.asarray(layer.world_to_data(self.viewer.dims.point))
        leading = tuple(int(np.clip(round(p), 0, n - 1)) for p, n in zip(position[:-2], data.shape[:-2]))
        return data[leading]

    def _star_positions(self, layer) -> np.ndarray:
        """The points as (row, col) of the image's data (the layers may differ in scale and translate)."""
        points = self.points.value
        if len(points.data) == 0:
            raise ValueError(f"Points layer {points.name!r} is empty; click on stars or beads")
        world = [points.data_to_world(p) for p in points.data]
        return np.array([np.asarray(layer.world_to_data(w))[-2:] for w in world])

    def preview_grid(self, _value=None):
        """Show the PSFs at the grid nodes side by side in ``"<input> PSF grid"``."""
        try:
            psf = self.psf()
            grid = psf.psf_grid(self.grid_shape()) if isinstance(psf, MotionField) else psf
        except Exception as exc:  # noqa: BLE001 - any failure of the PSF description is the user's to fix
            self.report_error("Spatially varying PSF", exc)
            return
        name = f"{self.image.value.name} PSF grid"
        existing = self.viewer.layers[name] if name in self.viewer.layers else None
        publish_image(self.viewer, grid.mosaic(), name, replace=existing, colormap="magma")
        self.status.value = f"{grid.grid_shape[0]} x {grid.grid_shape[1]} PSFs of {tuple(grid.psfs.shape[2:])}"
        if self.source.value == FOUND:
            layer = self.image.value
            marks = f"{layer.name} PSF sources"
            if marks in self.viewer.layers:
                self.viewer.layers.remove(marks)
            axes = slice(layer.ndim - 2, layer.ndim)
            self.viewer.add_points(self.found_sources.astype(float), name=marks, size=self.crop.value, symbol="square",
                                   face_color="transparent", border_color="cyan", border_width=0.05,
                                   scale=np.asarray(layer.scale)[axes], translate=np.asarray(layer.translate)[axes])
            self.status.value += f" from {len(self.found_sources)} stars (marked in {marks!r})"
        if self.source.value in (POINTS, FOUND) and self.filled_nodes:
            from napari.utils.notifications import show_warning

            self.status.value += (f"; grid nodes {self.filled_nodes} have no usable star and were filled from "
                                  f"the measured ones (put a point on a star near them to measure them)")
            show_warning(f"Spatially varying PSF: {self.status.value}")

    def run(self, _value=None):
        """Restore the whole image layer (slice by slice for stacks) in a worker thread."""
        try:
            layer, psf = self._image(), self.psf()
            params = values(self.method_params)
        except Exception as exc:  # noqa: BLE001 - any failure of the PSF description is the user's to fix
            self.report_error("Spatially varying PSF", exc)
            return
        placement = {"scale": np.asarray(layer.scale), "translate": np.asarray(layer.translate)}
        settings = ", ".join(f"{k}={v}" for k, v in params.items())
        history = f"deblur-ops {self.method.value} ({settings}) with a spatially varying {type(psf).__name__}"
        self.launch(np.asarray(layer.data), psf, method=self.method.value, loop_axes=None, rgb=False,
                    device=self.device.value, params=params, source=layer,
                    name=f"{layer.name} [{describe_run(self.method.value, params)}, {self._source_short()}]",
                    placement=placement, title="Spatially varying PSF", history=history)

    def _source_short(self) -> str:
        return {STACK: "PSF grid", POINTS: "star PSFs", FOUND: "found stars' PSFs",
                MOTION: "motion field"}[self.source.value]
