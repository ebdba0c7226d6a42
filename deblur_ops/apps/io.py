"""Read and write the image files of ``deblur run``: TIFF, PNG, FITS, Zarr and OME-Zarr.

Metadata that describes the pixels travels with the data: the FITS header, the TIFF
resolution (and unit), the attributes of a Zarr array and of its OME-Zarr group (multiscales,
axes, pixel sizes). Zarr is opened lazily as a dask array so that stacks larger than memory are
read and written chunk by chunk; the other formats are read into memory.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

FORMATS = {".tif": "tiff", ".tiff": "tiff", ".png": "png", ".fits": "fits", ".fit": "fits", ".fts": "fits",
           ".fits.gz": "fits", ".zarr": "zarr", ".ome.zarr": "zarr"}

# How outputs of ``deblur run`` are marked, so that a rerun may replace them and nothing else:
# the TIFF Software tag, a FITS primary-header keyword, a Zarr attribute on the root node (which
# also records whether the store is complete and which batches of chunks are written).
SOFTWARE = "deblur-ops run"
FITS_KEYWORD = "DEBLUROP"
ZARR_ATTRIBUTE = "deblur_ops"


@dataclass
class ImageFile:
    """An image read from disk.

    Attributes:
        data: NumPy array, or a lazy ``dask.array.Array`` for Zarr.
        format: ``"tiff"``, ``"png"``, ``"fits"`` or ``"zarr"``.
        rgb: whether the last axis holds colour channels.
        metadata: format-specific metadata to write back: ``fits_header`` (``astropy.io.fits.Header``),
            ``resolution`` and ``resolutionunit`` (TIFF), ``array_attrs``, ``group_attrs`` and
            ``component`` (Zarr; ``component`` is the array's path inside an OME-Zarr group).
    """

    data: object
    format: str
    rgb: bool = False
    metadata: dict = field(default_factory=dict)


def image_format(path) -> str:
    """The format of ``path`` from its suffix.

    Raises:
        ValueError: an unsupported suffix (the message lists the supported ones).

    Example:
        >>> image_format("cells.ome.zarr"), image_format("m31.fits")
        ('zarr', 'fits')
    """
    name = str(path).lower().rstrip("/")
    for suffix in sorted(FORMATS, key=len, reverse=True):
        if name.endswith(suffix):
            return FORMATS[suffix]
    raise ValueError(f"cannot tell the format of {str(path)!r}; use one of the suffixes {sorted(FORMATS)}")


def format_suffix(path) -> str:
    """The suffix that gives ``path`` its format (``".ome.zarr"``, ``".fits.gz"``, ``".tif"``, ...)."""
    name = str(path).lower().rstrip("/")
    image_format(path)
    return next(s for s in sorted(FORMATS, key=len, reverse=True) if name.endswith(s))


def written_by_deblur(path) -> bool:
    """Whether ``path`` is a file or store that ``deblur run`` wrote (and marked), complete or not.

    Unreadable or foreign files are not ours; PNG holds no mark, so it never is.
    """
    path = Path(path)
    try:
        kind = image_format(path)
        if kind == "zarr":
            import zarr

            return ZARR_ATTRIBUTE in zarr.open(str(path), mode="r").attrs
        if kind == "tiff":
            import tifffile

            with tifffile.TiffFile(path) as tif:
                return (tif.pages[0].software or "").startswith(SOFTWARE)
        if kind == "fits":
            from astropy.io import fits

            return FITS_KEYWORD in fits.getheader(path, 0)
    except Exception:  # noqa: BLE001 - anything we cannot read as our own output is not ours
        return False
    return False


def read_fits(path):
    """The first HDU with data of a FITS file: (data as float32 or its integer dtype, header).

    Raises:
        ValueError: the file holds no image data.
    """
    from astropy.io import fits

    with fits.open(path, memmap=False) as hdus:
        for hdu in hdus:
            if hdu.data is not None and hdu.is_image:
                # FITS is big-endian; torch and most tools want native byte order.
                data = np.asarray(hdu.data)
                return data.astype(data.dtype.newbyteorder("=")), hdu.header.copy()
    raise ValueError(f"{path} holds no image HDU with data")


def _read_zarr(path: Path) -> ImageFile:
    import dask.array as da
    import zarr

    node = zarr.open(str(path), mode="r")
    mark = node.attrs.get(ZARR_ATTRIBUTE)
    if isinstance(mark, dict) and not mark.get("complete", True):
        done, total = len(mark.get("done_batches", [])), mark.get("batches", "?")
        raise ValueError(f"{path} is an incomplete output of an interrupted `deblur run` ({done} of {total} batches "
                         f"written; the rest would read as zeros); finish it with the same command and --resume")
    if isinstance(node, zarr.Array):
        return ImageFile(da.from_zarr(node), "zarr", metadata={"array_attrs": dict(node.attrs)})
    group_attrs = dict(node.attrs)
    # OME-Zarr 0.4 keeps "multiscales" at the top; 0.5 nests it under "ome".
    multiscales = group_attrs.get("multiscales") or group_attrs.get("ome", {}).get("multiscales")
    if multiscales:
        component = multiscales[0]["datasets"][0]["path"]
    else:
        arrays = sorted(name for name, _ in node.arrays())
        if not arrays:
            raise ValueError(f"{path} is a Zarr group without arrays; point at an array or an OME-Zarr image")
        component = arrays[0]
    array = node[component]
    return ImageFile(da.from_zarr(array), "zarr",
                     metadata={"group_attrs": group_attrs, "array_attrs": dict(array.attrs), "component": component})


def read_image(path) -> ImageFile:
    """Read TIFF, PNG, FITS or (OME-)Zarr.

    Args:
        path: file (or Zarr directory) path; the format comes from the suffix.

    Returns:
        :class:`ImageFile`; Zarr data is a lazy dask array.

    Raises:
        ValueError: unknown suffix, missing file, or a file without image data.
    """
    path = Path(path)
    kind = image_format(path)
    if not path.exists():
        raise ValueError(f"input {str(path)!r} does not exist")
    try:
        return _read(path, kind)
    except ValueError:
        raise
    except Exception as exc:  # noqa: BLE001 - every reader's own error type (truncated, corrupt, not an image)
        raise ValueError(f"cannot read {str(path)!r} as {kind}: {type(exc).__name__}: "
                         f"{str(exc).splitlines()[0] if str(exc) else 'no details'}") from exc


def _read(path: Path, kind: str) -> ImageFile:
    if kind == "zarr":
        return _read_zarr(path)
    if kind == "fits":
        data, header = read_fits(path)
        return ImageFile(data, "fits", metadata={"fits_header": header})
    if kind == "png":
        import imageio.v3 as iio

        data = iio.imread(path)
        return ImageFile(data, "png", rgb=data.ndim == 3 and data.shape[-1] in (3, 4))
    import tifffile

    with tifffile.TiffFile(path) as tif:
        data = tif.asarray()
        page = tif.pages[0]
        metadata = {}
        tags = page.tags
        if "XResolution" in tags and "YResolution" in tags:
            metadata["resolution"] = (tags["XResolution"].value, tags["YResolution"].value)
            metadata["resolutionunit"] = int(tags["ResolutionUnit"].value) if "ResolutionUnit" in tags else 1
        rgb = page.photometric == tifffile.PHOTOMETRIC.RGB and data.shape[-1] in (3, 4)
    return ImageFile(data, "tiff", rgb=rgb, metadata=metadata)


def cast_like(data: np.ndarray, dtype) -> np.ndarray:
    """Convert a restoration to ``dtype``: integers are rounded and clipped to the dtype's range.

    Example:
        >>> cast_like(np.array([-3.2, 7.6, 300.0]), np.uint8).tolist()
        [0, 8, 255]
    """
    dtype = np.dtype(dtype)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return np.clip(np.rint(data), info.min, info.max).astype(dtype)
    return np.asarray(data, dtype=dtype)


def clipped_count(data: np.ndarray, dtype) -> int:
    """How many values of ``data`` fall outside an integer ``dtype``'s range (0 for floating dtypes).

    Example:
        >>> clipped_count(np.array([-3.2, 7.6, 300.0]), np.uint8)
        2
    """
    dtype = np.dtype(dtype)
    if not np.issubdtype(dtype, np.integer):
        return 0
    info = np.iinfo(dtype)
    rounded = np.rint(data)
    return int(np.count_nonzero((rounded < info.min) | (rounded > info.max)))


def write_image(path, data, like: ImageFile | None = None) -> None:
    """Write ``data`` (NumPy, already of the dtype wanted) as TIFF, PNG or FITS, with ``like``'s metadata.

    Metadata is carried where the output format can hold it (FITS header to FITS, TIFF
    resolution to TIFF). Zarr output goes through :func:`create_zarr_like` and dask instead.

    Raises:
        ValueError: unknown suffix, Zarr (use :func:`create_zarr_like`), or data PNG cannot hold.
    """
    path = Path(path)
    kind = image_format(path)
    meta = like.metadata if like is not None else {}
    if kind == "zarr":
        raise ValueError("write Zarr with create_zarr_like(...) and dask.array.to_zarr")
    if kind == "fits":
        from astropy.io import fits

        header = meta.get("fits_header")
        hdu = fits.PrimaryHDU(data, header=header.copy() if header is not None else None)
        hdu.header[FITS_KEYWORD] = (True, "written by deblur-ops (deblur run)")
        hdu.header.add_history("restored with deblur-ops (deblur run)")
        hdu.writeto(path, overwrite=True)
    elif kind == "png":
        import imageio.v3 as iio

        if data.ndim not in (2, 3) or data.dtype not in (np.uint8, np.uint16):
            raise ValueError(f"PNG holds (H, W) or (H, W, 3|4) uint8/uint16 images, got shape {data.shape} "
                             f"{data.dtype}; write TIFF or FITS for other data")
        iio.imwrite(path, data)
    else:
        import tifffile

        options = {}
        if "resolution" in meta:
            options["resolution"] = meta["resolution"]
            options["resolutionunit"] = meta["resolutionunit"]
        tifffile.imwrite(path, data, photometric="rgb" if like is not None and like.rgb else "minisblack",
                         software=SOFTWARE, **options)


def create_zarr_like(path, shape, chunks, dtype, like: ImageFile | None = None):
    """Create an empty Zarr array (inside an OME-Zarr group when ``like`` came from one) to fill chunk-wise.

    The group and array attributes of ``like`` are copied, so OME-Zarr axes, scales and units
    stay valid (the data keeps its shape). Only the full-resolution level is written; other
    levels of the input's pyramid are not, so they are dropped from the copied multiscales.

    Returns:
        The ``zarr.Array`` to pass to ``dask.array.to_zarr``.
    """
    import zarr

    meta = like.metadata if like is not None else {}
    if "component" not in meta:
        array = zarr.open_array(str(path), mode="w", shape=shape, chunks=chunks, dtype=dtype)
        array.attrs.update(_without_mark(meta.get("array_attrs", {})))
        return array
    group = zarr.open_group(str(path), mode="w")
    attrs = _keep_first_level(_without_mark(meta["group_attrs"]))
    group.attrs.update(attrs)
    array = group.create_array(meta["component"], shape=shape, chunks=chunks, dtype=dtype)
    array.attrs.update(_without_mark(meta.get("array_attrs", {})))
    return array


def _without_mark(attrs: dict) -> dict:
    # The input may itself be an earlier output; its mark describes that run, not this one.
    return {k: v for k, v in attrs.items() if k != ZARR_ATTRIBUTE}


def _keep_first_level(attrs: dict) -> dict:
    import copy

    attrs = copy.deepcopy(attrs)
    holder = attrs.get("ome", attrs)
    for scale in holder.get("multiscales", []):
        scale["datasets"] = scale["datasets"][:1]
    return attrs
