"""FITS reader: images and cubes, with the header kept in the layer's metadata."""
from __future__ import annotations

from pathlib import Path

FITS_SUFFIXES = (".fits", ".fit", ".fts", ".fits.gz")


def get_reader(path):
    """npe2 reader hook: a reader function for a FITS path, None for anything else."""
    if not isinstance(path, (str, Path)) or not str(path).lower().endswith(FITS_SUFFIXES):
        return None
    return read_fits_layers


def read_fits_layers(path):
    """Layer data of a FITS file: the first image HDU, its header under ``metadata["fits_header"]``."""
    from deblur_ops.apps.io import read_fits

    data, header = read_fits(path)
    name = Path(path).name
    for suffix in FITS_SUFFIXES:
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    return [(data, {"name": name, "metadata": {"fits_header": header}}, "image")]
