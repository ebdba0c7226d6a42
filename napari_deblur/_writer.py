"""FITS writer: an image layer with the header it was read with, plus HISTORY of what was done to it.

The header comes from ``layer.metadata["fits_header"]`` (kept there by the FITS reader and deep
copied onto result layers); each entry of ``layer.metadata["deblur_history"]`` (appended by the
widgets at every restoration) becomes a HISTORY card. The file is written next to the target and
renamed into place, so a failed write never leaves a half-written file under the user's name.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ._reader import FITS_SUFFIXES
from ._widget import HISTORY_KEY


def write_fits(path: str, data, meta: dict) -> list[str]:
    """npe2 single-layer writer: ``data`` of an image layer as the primary HDU of a FITS file.

    Args:
        path: target path ending in .fits, .fit or .fts.
        data: the layer's data (NumPy or array-like; RGB layers are written as (H, W, 3) cubes).
        meta: the layer's attributes as napari passes them (``metadata``, ``name``...).

    Returns:
        ``[path]``, as npe2 expects.

    Raises:
        ValueError: a suffix FITS cannot take, or data of a type FITS cannot hold.
    """
    from astropy.io import fits

    target = Path(path)
    if not target.name.lower().endswith(FITS_SUFFIXES) or target.name.lower().endswith(".gz"):
        raise ValueError(f"the FITS writer writes .fits, .fit or .fts files, got {target.name!r}")
    array = np.asarray(data)
    if array.dtype.kind not in "biuf":
        raise ValueError(f"FITS holds integer or float images, got dtype {array.dtype}; convert the layer first")
    if array.dtype == np.float16 or array.dtype == bool:
        array = array.astype(np.float32)
    metadata = meta.get("metadata") or {}
    header = metadata.get("fits_header")
    hdu = fits.PrimaryHDU(array, header=header.copy() if header is not None else None)
    for entry in metadata.get(HISTORY_KEY, []):
        hdu.header.add_history(str(entry))
    partial = target.with_name(f".{target.name}.partial")
    try:
        hdu.writeto(partial, overwrite=True)
        os.replace(partial, target)
    finally:
        if partial.exists():
            partial.unlink()
    return [str(target)]
