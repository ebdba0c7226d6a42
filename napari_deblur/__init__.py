"""napari plugin of deblur-ops: three widgets, sample data and a FITS reader.

Declared in ``napari.yaml`` (npe2):

- widgets: **Deconvolve** (any registered method; the PSF generated from a model or taken from a layer),
  **Spatially varying PSF** (a grid of PSFs across the field, or a motion field) and **Estimate
  motion** (Motion-Net's per-pixel motion as a Vectors layer, and blind deblurring);
- sample data: a widefield microscopy volume, an astronomy field and a motion-blurred photograph;
- a reader for FITS images and cubes (``*.fits``, ``*.fit``, ``*.fts``, ``*.fits.gz``).

The plugin declares no writer. The widgets only gather choices and show results; the restoration,
PSF models, stacks and samples live in :mod:`deblur_ops`.
"""
