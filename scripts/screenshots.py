"""Regenerate the napari screenshots in docs/: each widget after a real run on each sample.

Run from the repository root under a virtual display:

    xvfb-run -a python3 scripts/screenshots.py [--out docs]

Every shot is the whole window (``viewer.screenshot(canvas_only=False)``) at 1366 x 768, the size
of a small laptop screen, with the widget docked, and is saved as a palette PNG to stay small.
The runs use the shipped weights and the widgets' own defaults, changing only what a user would
(iterations, a PSF layer), so the pictures show what a user sees.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

# The checkout's packages, not an installed copy (a script's folder, not the root, is on sys.path).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

WINDOW = (1366, 768)


def _wait_idle(widget, button, timeout=600.0):
    """Process Qt events until the widget's worker is done (its button is enabled again)."""
    from qtpy.QtWidgets import QApplication

    start = time.monotonic()
    QApplication.processEvents()
    while not button.enabled:
        if time.monotonic() - start > timeout:
            raise TimeoutError(f"{type(widget).__name__} still running after {timeout} s: {widget.status.value}")
        QApplication.processEvents()
        time.sleep(0.02)
    for _ in range(20):  # let the new layer draw
        QApplication.processEvents()
        time.sleep(0.01)


def _viewer(sample: str):
    import napari

    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(*WINDOW)
    viewer.open_sample("deblur-ops", sample)
    return viewer


def _save(viewer, path: Path):
    """The window as a palette PNG (a UI screenshot has few colours; this keeps it well under 300 KB)."""
    from PIL import Image
    from qtpy.QtWidgets import QApplication

    for _ in range(10):
        QApplication.processEvents()
        time.sleep(0.02)
    pixels = viewer.screenshot(canvas_only=False, flash=False)
    picture = Image.fromarray(np.asarray(pixels)[..., :3]).quantize(colors=256, method=Image.Quantize.MEDIANCUT)
    picture.save(path, optimize=True)
    print(f"{path}: {pixels.shape[1]} x {pixels.shape[0]}, {path.stat().st_size / 1024:.0f} KB")
    viewer.close()


def _side_by_side(viewer, *layers):
    """Show only ``layers``, in napari's grid mode (input next to its restoration)."""
    for layer in viewer.layers:
        layer.visible = layer in layers
    viewer.canvas.grid.enabled = True
    viewer.canvas.grid.shape = (1, len(layers))
    viewer.reset_view()


def deconvolve_widefield(out: Path):
    """The microscopist's run: defaults chosen from the stack (3D Richardson-Lucy, Born-Wolf at its voxel size)."""
    from napari_deblur._widget import DeconvolveWidget

    viewer = _viewer("widefield")
    widget = DeconvolveWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Deconvolve", area="right")
    widget.image.value = viewer.layers["widefield"]
    widget.method_params["iterations"].value = 20
    widget.run()
    _wait_idle(widget, widget.run_button)
    viewer.dims.set_current_step(0, 16)
    _side_by_side(viewer, viewer.layers["widefield"], widget.last_result)
    _save(viewer, out / "napari_deconvolve_widefield.png")


def deconvolve_astronomy(out: Path):
    """The astronomer's uniform run: Richardson-Lucy with a Moffat PSF, as the FITS defaults propose."""
    from napari_deblur._widget import DeconvolveWidget

    viewer = _viewer("astronomy")
    viewer.layers.remove("astronomy PSF grid")  # Deconvolve takes one PSF; the grid is the other widget's
    widget = DeconvolveWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Deconvolve", area="right")
    widget.image.value = viewer.layers["astronomy field"]
    widget.psf_params["fwhm"].value = "4.5"
    widget.run()
    _wait_idle(widget, widget.run_button)
    widget.last_result.contrast_limits = (-20, 400)
    _side_by_side(viewer, viewer.layers["astronomy field"], widget.last_result)
    _save(viewer, out / "napari_deconvolve_astronomy.png")


def spatially_varying_astronomy(out: Path):
    """The astronomer's spatially varying run: irc with the sample's 3 x 3 PSF grid layer."""
    from napari_deblur._sv_widget import SpatiallyVaryingWidget

    viewer = _viewer("astronomy")
    widget = SpatiallyVaryingWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Spatially varying PSF", area="right")
    widget.image.value = viewer.layers["astronomy field"]
    widget.psf_layer.value = viewer.layers["astronomy PSF grid"]
    widget.preview_grid()
    widget.run()
    _wait_idle(widget, widget.run_button)
    widget.last_result.contrast_limits = (-20, 400)
    _side_by_side(viewer, viewer.layers["astronomy field"], widget.last_result)
    _save(viewer, out / "napari_spatially_varying_astronomy.png")


def deconvolve_photo(out: Path):
    """The photograph with its known kernel as the PSF layer."""
    from napari_deblur._widget import DeconvolveWidget

    viewer = _viewer("photo")
    widget = DeconvolveWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Deconvolve", area="right")
    widget.image.value = viewer.layers["motion-blurred photo"]
    widget.psf_source.value = "layer"
    widget.psf_layer.value = viewer.layers["motion kernel"]
    widget.run()
    _wait_idle(widget, widget.run_button)
    _side_by_side(viewer, viewer.layers["motion-blurred photo"], widget.last_result)
    _save(viewer, out / "napari_deconvolve_photo.png")


def _estimate_then_deconvolve(viewer, image: str):
    """Deconvolve docked on ``image``: Estimate PSF, then Deconvolve with it; the widget."""
    from napari_deblur._widget import DeconvolveWidget

    widget = DeconvolveWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Deconvolve", area="right")
    widget.image.value = viewer.layers[image]
    widget.estimate()
    _wait_idle(widget, widget.run_button)
    widget.run()
    _wait_idle(widget, widget.run_button)
    return widget


def estimate_psf_photo(out: Path):
    """The photograph as if its blur were unknown: Estimate PSF, then Deconvolve with the estimated kernel."""

    viewer = _viewer("photo")
    viewer.layers.remove("motion kernel")  # the blind case: no known kernel
    _estimate_then_deconvolve(viewer, "motion-blurred photo")
    # Two viewboxes: the photo with the estimated kernel over its corner, and the restoration.
    viewer.canvas.grid.enabled = True
    viewer.canvas.grid.stride = 2
    viewer.canvas.grid.shape = (1, 2)
    viewer.reset_view()
    _save(viewer, out / "napari_estimate_psf_photo.png")


def estimate_psf_astronomy(out: Path):
    """The star field as if its seeing were unknown: Estimate PSF reads it from the stars it finds
    (marked by a Points layer), then Deconvolve with Richardson-Lucy and that PSF."""
    viewer = _viewer("astronomy")
    viewer.layers.remove("astronomy PSF grid")
    widget = _estimate_then_deconvolve(viewer, "astronomy field")
    widget.last_result.contrast_limits = (-20, 400)
    viewer.layers["astronomy field"].contrast_limits = (-20, 400)
    viewer.canvas.grid.enabled = True
    viewer.canvas.grid.stride = 3  # the field with its PSF and the marked stars, then the restoration
    viewer.canvas.grid.shape = (1, 2)
    viewer.reset_view()
    _save(viewer, out / "napari_estimate_psf_astronomy.png")


def motion_photo(out: Path):
    """Motion-Net's field over the photograph, then IRC-Net with that field."""
    from napari_deblur._motion_widget import MotionWidget

    viewer = _viewer("photo")
    widget = MotionWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Estimate motion", area="right")
    widget.image.value = viewer.layers["motion-blurred photo"]
    widget.estimate()
    _wait_idle(widget, widget.estimate_button)
    widget.use_field.value = True
    widget.deblur()
    _wait_idle(widget, widget.estimate_button)
    viewer.layers["motion-blurred photo"].visible = False
    vectors = viewer.layers["motion-blurred photo motion"]
    viewer.layers.move(viewer.layers.index(vectors), len(viewer.layers))  # the field drawn over the result
    viewer.reset_view()
    _save(viewer, out / "napari_motion_photo.png")


SHOTS = (deconvolve_widefield, deconvolve_astronomy, spatially_varying_astronomy, deconvolve_photo,
         estimate_psf_photo, estimate_psf_astronomy, motion_photo)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs"), help="folder for the PNG files")
    parser.add_argument("--only", nargs="*", choices=[shot.__name__ for shot in SHOTS], help="a subset of shots")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for shot in SHOTS:
        if not args.only or shot.__name__ in args.only:
            shot(args.out)


if __name__ == "__main__":
    main()
