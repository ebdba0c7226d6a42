"""Sample data: the synthetic scenes of :mod:`deblur_ops.data.scenes`, each with the PSF that blurred it."""
from __future__ import annotations

from deblur_ops.data import scenes as samples


def widefield_volume():
    """Beads and filaments, Born-Wolf blur and Poisson noise, with the 3D PSF (same voxel size)."""
    sample = samples.widefield_volume()
    return [(sample.blurred, {"name": "widefield", "scale": sample.scale, "colormap": "gray"}),
            (sample.psf, {"name": "widefield PSF", "scale": sample.scale, "colormap": "magma", "visible": False})]


def astronomy_field():
    """Stars and galaxies with seeing that varies across the field; the PSF grid as a (gy, gx, k, k) layer."""
    sample = samples.astronomy_field()
    return [(sample.blurred, {"name": "astronomy field", "colormap": "gray", "contrast_limits": (-20, 400)}),
            (sample.psf, {"name": "astronomy PSF grid", "colormap": "magma", "visible": False})]


def motion_blurred_photo():
    """A photograph blurred by a known 21-pixel linear motion at 30 degrees, with that kernel."""
    sample = samples.motion_blurred_photo()
    return [(sample.blurred, {"name": "motion-blurred photo", "colormap": "gray"}),
            (sample.psf, {"name": "motion kernel", "colormap": "magma", "visible": False})]
