"""Sample data: the synthetic scenes of :mod:`deblur_ops.data.scenes`, each with the PSF that blurred it.

The layers carry what real files bring: the widefield volume its voxel size in µm and axis names,
the astronomy field a FITS header (so the plugin treats it as astronomy data and the FITS writer
has a header to keep).
"""
from __future__ import annotations

from deblur_ops.data import scenes as samples


def widefield_volume():
    """Beads and filaments, Born-Wolf blur and Poisson noise, with the 3D PSF (same voxel size, in µm)."""
    sample = samples.widefield_volume()
    physical = {"scale": sample.scale, "units": "um", "axis_labels": ("z", "y", "x")}
    return [(sample.blurred, {"name": "widefield", "colormap": "gray", **physical}),
            (sample.psf, {"name": "widefield PSF", "colormap": "magma", "visible": False, **physical})]


def _header(title: str):
    from astropy.io import fits

    header = fits.Header()
    header["OBJECT"] = (title, "synthetic field of deblur_ops.data.scenes")
    header["BUNIT"] = ("counts", "sky subtracted")
    header["ORIGIN"] = "deblur-ops sample data"
    return header


def astronomy_field():
    """Stars and galaxies with seeing that varies across the field; the PSF grid as a (gy, gx, k, k) layer."""
    sample = samples.astronomy_field()
    return [(sample.blurred, {"name": "astronomy field", "colormap": "gray", "contrast_limits": (-20, 400),
                              "metadata": {"fits_header": _header("astronomy field")}}),
            (sample.psf, {"name": "astronomy PSF grid", "colormap": "magma", "visible": False})]


def motion_blurred_photo():
    """A photograph blurred by a known 21-pixel linear motion at 30 degrees, with that kernel."""
    sample = samples.motion_blurred_photo()
    return [(sample.blurred, {"name": "motion-blurred photo", "colormap": "gray"}),
            (sample.psf, {"name": "motion kernel", "colormap": "magma", "visible": False})]


def motion_field_photo():
    """A photograph blurred by a translating and rolling camera (each pixel its own exact line), with
    that motion field as the "Estimate motion" widget stores one, so "use estimated field" restores with it."""
    from deblur_ops.models.methods import motion_vectors

    from ._motion_widget import FIELD_KEY

    sample = samples.motion_field_photo()
    name = "motion-field photo"
    field = sample.field
    vectors = motion_vectors(field, 16)
    metadata = {FIELD_KEY: {"length": field.length.numpy().astype("float32"),
                            "angle": field.angle.numpy().astype("float32")}, "image": name, "plane": []}
    return [(sample.blurred, {"name": name, "colormap": "gray"}),
            (vectors, {"name": f"{name} motion", "metadata": metadata,
                       "features": {"length": (vectors[:, 1] ** 2).sum(-1) ** 0.5}, "edge_color": "length",
                       "edge_colormap": "viridis", "vector_style": "line", "edge_width": 2.0}, "vectors")]
