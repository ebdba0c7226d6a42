"""napari plugin of deblur-ops: the Deconvolve widget, sample data and a FITS reader.

Declared in ``napari.yaml`` (npe2). The widgets only gather choices and show results; the
restoration, PSF models, stacks and samples live in :mod:`deblur_ops`.
"""
