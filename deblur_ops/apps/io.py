"""Read and write the image files of ``deblur run``: TIFF, PNG, JPEG, FITS, Zarr and OME-Zarr.

Metadata that describes the pixels travels with the data: the FITS header, the TIFF
resolution (and unit), the attributes of a Zarr array and of its OME-Zarr group (multiscales,
axes, pixel sizes). Zarr is opened lazily as a dask array so that stacks larger than memory are
read and written chunk by chunk; the other formats are read into memory. JPEG photos (what a
camera or phone gives) keep their EXIF block (orientation, exposure, camera), colour profile and
resolution; a restored JPEG is written at quality 95 without chroma subsampling, its EXIF
Software tag marking it as ``deblur run``'s. PNG is read at its own bit depth (16-bit colour
too) and keeps its resolution, colour-profile and text chunks; a Software text marks outputs.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

FORMATS = {".tif": "tiff", ".tiff": "tiff", ".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg", ".fits": "fits",
           ".fit": "fits", ".fts": "fits", ".fits.gz": "fits", ".zarr": "zarr", ".ome.zarr": "zarr"}
# How a restored JPEG is written: near-lossless for a photo, and no halved colour resolution
# (4:4:4), so that the restored detail is not thrown away again by the encoder.
JPEG_QUALITY = 95
# The EXIF tag that marks a JPEG as written by deblur run (Software, 0x0131).
_EXIF_SOFTWARE = 0x0131

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
        format: ``"tiff"``, ``"png"``, ``"jpeg"``, ``"fits"`` or ``"zarr"``.
        rgb: whether the last axis holds colour channels.
        metadata: format-specific metadata to write back: ``fits_header`` (``astropy.io.fits.Header``),
            ``resolution`` and ``resolutionunit`` (TIFF), ``array_attrs``, ``group_attrs`` and
            ``component`` (Zarr; ``component`` is the array's path inside an OME-Zarr group),
            ``exif``, ``icc_profile`` and ``dpi`` (JPEG), ``png_chunks`` (PNG: resolution, colour
            profile, text).
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

    Unreadable or foreign files are not ours. The mark: the TIFF Software tag, a FITS keyword, a
    Zarr attribute, the JPEG EXIF Software tag, the PNG Software text.
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
        if kind == "jpeg":
            from PIL import Image

            with Image.open(path) as image:
                return str(image.getexif().get(_EXIF_SOFTWARE, "")).startswith(SOFTWARE)
        if kind == "png":
            return _png_software(_png_chunks(path.read_bytes())).startswith(SOFTWARE)
    except Exception:  # noqa: BLE001 - anything we cannot read as our own output is not ours
        return False
    return False


def read_fits(path, hdu=None):
    """An image HDU of a FITS file: (data as float32 or its integer dtype, header).

    Args:
        path: the FITS file.
        hdu: which HDU: its index or EXTNAME; default the first HDU with image data.

    Raises:
        ValueError: the file holds no image data, or ``hdu`` names none.
    """
    data, header, _ = _read_fits_hdu(path, hdu)
    return data, header


def _read_fits_hdu(path, hdu=None):
    from astropy.io import fits

    with fits.open(path, memmap=False) as hdus:
        if hdu is None:
            index = next((i for i, h in enumerate(hdus) if h.data is not None and h.is_image), None)
            if index is None:
                raise ValueError(f"{path} holds no image HDU with data")
        else:
            names = [str(h.name).upper() for h in hdus]
            index = int(hdu) if str(hdu).lstrip("-").isdigit() else (
                names.index(str(hdu).upper()) if str(hdu).upper() in names else None)
            if index is None or not -len(hdus) <= index < len(hdus) or hdus[index].data is None \
                    or not hdus[index].is_image:
                raise ValueError(f"{path} has no image HDU {hdu!r}; its HDUs are "
                                 f"{[f'{i}:{n}' for i, n in enumerate(names)]}")
            index %= len(hdus)
        # FITS is big-endian; torch and most tools want native byte order.
        data = np.asarray(hdus[index].data)
        return data.astype(data.dtype.newbyteorder("=")), hdus[index].header.copy(), index


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


# PNG chunks that describe the pixels (resolution, colour space, text) and are copied from a PNG
# input to a PNG output; the pixel data itself is written anew.
_PNG_KEPT_CHUNKS = (b"pHYs", b"iCCP", b"sRGB", b"gAMA", b"cHRM", b"tEXt", b"zTXt", b"iTXt")
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _png_chunks(blob: bytes) -> list[tuple[bytes, bytes]]:
    """(type, data) of every chunk of a PNG file's bytes."""
    import struct

    if not blob.startswith(_PNG_SIGNATURE):
        raise ValueError("not a PNG file (its signature is missing)")
    chunks, at = [], len(_PNG_SIGNATURE)
    while at + 8 <= len(blob):
        length, kind = struct.unpack(">I4s", blob[at:at + 8])
        chunks.append((kind, blob[at + 8:at + 8 + length]))
        at += 12 + length
    return chunks


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    import struct
    import zlib

    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _png_software(chunks) -> str:
    """The Software text of a PNG's tEXt chunks ('' when none)."""
    for kind, data in chunks:
        if kind == b"tEXt" and data.startswith(b"Software\x00"):
            return data.split(b"\x00", 1)[1].decode("latin-1")
    return ""


def _read_png(path: Path) -> ImageFile:
    """A PNG at its own bit depth: 16-bit colour is decoded by pypng, which keeps the 16 bits that
    Pillow (imageio's PNG reader) drops, the rest by imageio. The chunks describing the pixels
    (resolution, colour profile, text) are kept for writing back."""
    import imageio.v3 as iio

    blob = Path(path).read_bytes()
    chunks = _png_chunks(blob)
    header = dict(chunks).get(b"IHDR", b"")
    if len(header) == 13 and header[8] == 16 and header[9] in (2, 6):  # 16-bit RGB or RGBA
        import png

        width, height, rows, info = png.Reader(bytes=blob).asDirect()
        data = np.vstack([np.asarray(row, dtype=np.uint16) for row in rows]).reshape(height, width, info["planes"])
    else:
        data = iio.imread(path)
    kept = [(kind, data_) for kind, data_ in chunks if kind in _PNG_KEPT_CHUNKS
            and not (kind == b"tEXt" and data_.startswith(b"Software\x00"))]
    return ImageFile(data, "png", rgb=data.ndim == 3 and data.shape[-1] in (3, 4), metadata={"png_chunks": kept})


def _write_png(path, data: np.ndarray, chunks) -> None:
    """``data`` as PNG (16-bit colour through pypng, the rest through imageio), with ``chunks``
    (a PNG input's pixel-describing chunks) and the Software text that marks ``deblur run``'s outputs
    inserted before the image data."""
    import io as _io

    if data.ndim == 3 and data.dtype == np.uint16:
        import png

        buffer = _io.BytesIO()
        png.Writer(data.shape[1], data.shape[0], greyscale=False, alpha=data.shape[-1] == 4, bitdepth=16).write(
            buffer, data.reshape(data.shape[0], -1))
        blob = buffer.getvalue()
    else:
        import imageio.v3 as iio

        blob = iio.imwrite("<bytes>", data, extension=".png")
    parts = _png_chunks(blob)
    ours = [(kind, d) for kind, d in parts if kind not in _PNG_KEPT_CHUNKS]
    extra = list(chunks) + [(b"tEXt", b"Software\x00" + SOFTWARE.encode("latin-1"))]
    at = next(i for i, (kind, _) in enumerate(ours) if kind == b"IDAT")
    ordered = ours[:at] + extra + ours[at:]
    Path(path).write_bytes(_PNG_SIGNATURE + b"".join(_png_chunk(kind, d) for kind, d in ordered))


def _read_jpeg(path: Path) -> ImageFile:
    """A JPEG photo: (H, W) uint8 grey or (H, W, 3) RGB (CMYK converted to RGB), with its EXIF,
    colour profile and resolution kept for writing back. The pixels stay as stored: the EXIF
    orientation, kept too, turns the restored picture as it turned the input in every viewer."""
    from PIL import Image

    with Image.open(path) as image:
        image.load()
        metadata = {key: image.info[key] for key in ("exif", "icc_profile", "dpi") if image.info.get(key)}
        if image.mode not in ("L", "RGB"):
            image = image.convert("RGB")
        data = np.asarray(image)
    return ImageFile(data, "jpeg", rgb=data.ndim == 3, metadata=metadata)


def check_writable(out_format: str, dtype, shape=None, rgb: bool = False) -> None:
    """Refuse, before any work, an output format that cannot hold the result: PNG takes uint8 /
    uint16, JPEG uint8, and both one picture, (H, W) or colour (H, W, C) with C 3 or 4 (JPEG: 3);
    the message says which formats can. ``shape`` and ``rgb``: the output's (as the input's).

    Example:
        >>> check_writable("tiff", "float32")
        >>> check_writable("jpeg", "uint16")
        Traceback (most recent call last):
        ...
        ValueError: JPEG holds 8-bit pictures, but the output would be uint16; write PNG or TIFF (e.g. out.tif) for 16-bit or float data
        >>> check_writable("png", "uint8", (5, 64, 64))
        Traceback (most recent call last):
        ...
        ValueError: PNG holds one (H, W) picture or one colour picture, but the output would have shape (5, 64, 64); write TIFF, FITS or Zarr (e.g. out.tif) for stacks
    """
    if out_format not in ("png", "jpeg"):
        return
    name = "JPEG" if out_format == "jpeg" else "PNG"
    dtype = np.dtype(dtype)
    if out_format == "jpeg" and dtype != np.uint8:
        raise ValueError(f"JPEG holds 8-bit pictures, but the output would be {dtype}; write PNG or TIFF (e.g. "
                         f"out.tif) for 16-bit or float data")
    if out_format == "png" and dtype not in (np.uint8, np.uint16):
        raise ValueError(f"PNG holds 8- or 16-bit pictures, but the output would be {dtype}; write TIFF or FITS "
                         f"(e.g. out.tif) for float data")
    if shape is None:
        return
    shape = tuple(int(n) for n in shape)
    colours = (3,) if out_format == "jpeg" else (3, 4)
    if not (len(shape) == 2 or (len(shape) == 3 and rgb and shape[-1] in colours)):
        raise ValueError(f"{name} holds one (H, W) picture or one colour picture, but the output would have shape "
                         f"{shape}; write TIFF, FITS or Zarr (e.g. out.tif) for stacks"
                         + (" (and PNG or TIFF for an alpha channel)" if out_format == "jpeg" and rgb else ""))


def read_image(path, *, hdu=None) -> ImageFile:
    """Read TIFF, PNG, JPEG, FITS or (OME-)Zarr.

    Args:
        path: file (or Zarr directory) path; the format comes from the suffix.
        hdu: FITS only: the image HDU to read (index or EXTNAME; default the first with data).

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
        return _read(path, kind, hdu)
    except ValueError:
        raise
    except Exception as exc:  # noqa: BLE001 - every reader's own error type (truncated, corrupt, not an image)
        raise ValueError(f"cannot read {str(path)!r} as {kind}: {type(exc).__name__}: "
                         f"{str(exc).splitlines()[0] if str(exc) else 'no details'}") from exc


def _read(path: Path, kind: str, hdu=None) -> ImageFile:
    if kind == "zarr":
        return _read_zarr(path)
    if kind == "fits":
        data, header, index = _read_fits_hdu(path, hdu)
        # The whole file is written back around the restored HDU (primary header, DQ, tables...).
        return ImageFile(data, "fits", metadata={"fits_header": header, "fits_source": str(path.resolve()),
                                                 "fits_hdu": index})
    if kind == "png":
        return _read_png(path)
    if kind == "jpeg":
        return _read_jpeg(path)
    import tifffile

    with tifffile.TiffFile(path) as tif:
        data = tif.asarray()
        page = tif.pages[0]
        metadata = {}
        tags = page.tags
        if "XResolution" in tags and "YResolution" in tags:
            metadata["resolution"] = (tags["XResolution"].value, tags["YResolution"].value)
            metadata["resolutionunit"] = int(tags["ResolutionUnit"].value) if "ResolutionUnit" in tags else 1
        if tif.is_ome and tif.ome_metadata:  # physical sizes, channels, names: written back as it came
            metadata["ome_xml"] = tif.ome_metadata
            metadata["ome_layout"] = (tuple(data.shape), str(data.dtype))
        elif tif.imagej_metadata:  # z spacing, unit, axes: what Fiji needs to show the stack to scale
            metadata["imagej"] = {k: tif.imagej_metadata[k] for k in ("spacing", "unit", "finterval")
                                  if k in tif.imagej_metadata}
            metadata["imagej"]["axes"] = tif.series[0].axes  # which axis is z, t or channels
        elif page.description and not tif.is_ome:
            metadata["description"] = page.description
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

    Metadata is carried where the output format can hold it (FITS header to FITS; TIFF resolution,
    the OME-XML of an OME-TIFF (when shape and dtype are unchanged), ImageJ spacing/unit/axes and a
    plain ImageDescription to TIFF). Zarr output goes through :func:`create_zarr_like` and dask instead.

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
        if meta.get("fits_source") and Path(meta["fits_source"]).exists():
            # Every HDU of the input, with the restored image in the HDU it came from.
            with fits.open(meta["fits_source"], memmap=False) as source:
                hdus = fits.HDUList([h.copy() for h in source])
            index = meta.get("fits_hdu", 0)
            target = hdus[index]
            target.data = data
            target.header.add_history("restored with deblur-ops (deblur run)")
            hdus[0].header[FITS_KEYWORD] = (True, "written by deblur-ops (deblur run)")
            hdus.writeto(path, overwrite=True)
        else:
            hdu = fits.PrimaryHDU(data, header=header.copy() if header is not None else None)
            hdu.header[FITS_KEYWORD] = (True, "written by deblur-ops (deblur run)")
            hdu.header.add_history("restored with deblur-ops (deblur run)")
            hdu.writeto(path, overwrite=True)
    elif kind == "png":
        if data.ndim not in (2, 3) or data.dtype not in (np.uint8, np.uint16) or (
                data.ndim == 3 and data.shape[-1] not in (3, 4)):
            raise ValueError(f"PNG holds (H, W) or (H, W, 3|4) uint8/uint16 images, got shape {data.shape} "
                             f"{data.dtype}; write TIFF or FITS for other data")
        _write_png(path, data, meta.get("png_chunks", []))
    elif kind == "jpeg":
        from PIL import Image

        if data.dtype != np.uint8 or not (data.ndim == 2 or (data.ndim == 3 and data.shape[-1] == 3)):
            raise ValueError(f"JPEG holds (H, W) or (H, W, 3) uint8 pictures, got shape {data.shape} {data.dtype}; "
                             f"write PNG or TIFF for other data")
        exif = Image.Exif()
        if meta.get("exif"):
            exif.load(meta["exif"])
        exif[_EXIF_SOFTWARE] = SOFTWARE
        options = {key: meta[key] for key in ("icc_profile", "dpi") if key in meta}
        Image.fromarray(data).save(path, format="JPEG", quality=JPEG_QUALITY, subsampling=0, exif=exif.tobytes(),
                                   **options)
    else:
        import tifffile

        options = {}
        if "resolution" in meta:
            options["resolution"] = meta["resolution"]
            options["resolutionunit"] = meta["resolutionunit"]
        if meta.get("ome_xml") and meta.get("ome_layout") == (tuple(data.shape), str(data.dtype)):
            # The XML describes the pixels (shape, type): valid as long as they are unchanged.
            options.update(description=meta["ome_xml"], metadata=None)
        elif meta.get("imagej") and data.dtype in (np.uint8, np.uint16, np.float32) and data.ndim <= 6:
            imagej = dict(meta["imagej"])
            if "axes" in imagej and len(imagej["axes"]) != data.ndim:
                imagej.pop("axes")
            options.update(imagej=True, metadata=imagej)
            options.pop("resolutionunit", None)  # ImageJ keeps the unit in its own metadata
        elif meta.get("description"):
            options["description"] = meta["description"]
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


# Length units as files write them, in micrometres.
_MICROMETRES = {"um": 1.0, "µm": 1.0, "\u00b5m": 1.0, "micron": 1.0, "microns": 1.0, "micrometer": 1.0,
                "micrometre": 1.0, "nm": 1e-3, "nanometer": 1e-3, "nanometre": 1e-3, "mm": 1e3,
                "millimeter": 1e3, "cm": 1e4, "centimeter": 1e4, "inch": 25400.0, "m": 1e6, "meter": 1e6}


def _micrometres(value, unit) -> float | None:
    factor = _MICROMETRES.get(str(unit).strip().lower().replace("\\u00b5", "µ")) if unit is not None else None
    return None if factor is None or not value or not np.isfinite(float(value)) else float(value) * factor


def read_voxel_size(path) -> tuple[tuple[float, ...], str, str] | None:
    """The physical size of a pixel/voxel that a file records, without reading its data.

    Reads ImageJ TIFF (``spacing`` for z, the resolution tags with the ImageJ ``unit`` for y, x),
    OME-TIFF (``PhysicalSizeZ/Y/X`` with their units), OME-Zarr (the first level's ``scale``
    transformation on the space axes, with the axes' units) and FITS (``CDELT`` or the ``CD``
    matrix, degrees by default, as arcsec per pixel). PNG records nothing usable.

    Returns:
        ``(sizes, unit, source)`` with sizes per spatial axis ((z, y, x) or (y, x)), ``unit`` ``"um"``
        (microscopy) or ``"arcsec"`` (FITS), ``source`` saying where it came from; None when the
        file records no physical size.
    """
    path = Path(path)
    kind = image_format(path)
    try:
        if kind == "tiff":
            return _tiff_voxel_size(path)
        if kind == "zarr":
            return _zarr_voxel_size(path)
        if kind == "fits":
            return _fits_pixel_scale(path)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return None


def _tiff_voxel_size(path: Path):
    import re

    import tifffile

    with tifffile.TiffFile(path) as tif:
        if tif.ome_metadata:
            sizes = {}
            for axis in "ZYX":
                found = re.search(rf'PhysicalSize{axis}="([^"]+)"', tif.ome_metadata)
                unit = re.search(rf'PhysicalSize{axis}Unit="([^"]+)"', tif.ome_metadata)
                if found:
                    sizes[axis] = _micrometres(found.group(1), unit.group(1) if unit else "µm")
            yx = (sizes.get("Y"), sizes.get("X"))
            if all(yx):
                return ((sizes["Z"],) if sizes.get("Z") else ()) + yx, "um", "OME-TIFF PhysicalSize"
        tags, ij = tif.pages[0].tags, tif.imagej_metadata or {}
        if "XResolution" not in tags or "YResolution" not in tags:
            return None
        unit = ij.get("unit")
        if unit is None:
            unit = {2: "inch", 3: "cm"}.get(int(tags["ResolutionUnit"].value) if "ResolutionUnit" in tags else 1)
        per_unit = [num / den if den else 0.0 for num, den in (tags["YResolution"].value, tags["XResolution"].value)]
        yx = tuple(_micrometres(1.0 / p, unit) if p > 0 else None for p in per_unit)
        if not all(yx):
            return None
        z = _micrometres(ij.get("spacing"), unit) if ij.get("spacing") else None
        return ((z,) if z else ()) + yx, "um", "ImageJ TIFF resolution" + (" and spacing" if z else "")


def _zarr_voxel_size(path: Path):
    import zarr

    attrs = dict(zarr.open(str(path), mode="r").attrs)
    multiscales = attrs.get("multiscales") or attrs.get("ome", {}).get("multiscales")
    if not multiscales:
        return None
    axes = multiscales[0].get("axes", [])
    transforms = multiscales[0]["datasets"][0].get("coordinateTransformations", [])
    scale = next((t["scale"] for t in transforms if t.get("type") == "scale"), None)
    if scale is None or len(axes) != len(scale):
        return None
    sizes = [_micrometres(s, a.get("unit", "micrometer")) for a, s in zip(axes, scale)
             if isinstance(a, dict) and a.get("type") == "space"]
    if not sizes or not all(sizes):
        return None
    return tuple(sizes), "um", "OME-Zarr scale"


def _fits_pixel_scale(path: Path):
    _, header = read_fits(path)
    scales = []
    for axis in (2, 1):  # rows (y), then columns (x)
        unit = str(header.get(f"CUNIT{axis}", "deg")).strip().lower()
        if "CD1_1" in header or "CD2_2" in header:
            delta = float(np.hypot(header.get(f"CD1_{axis}", 0.0), header.get(f"CD2_{axis}", 0.0)))
        else:
            delta = abs(float(header.get(f"CDELT{axis}", 0.0)))
        to_arcsec = {"deg": 3600.0, "arcmin": 60.0, "arcsec": 1.0}.get(unit)
        if not delta or to_arcsec is None:
            return None
        scales.append(delta * to_arcsec)
    return tuple(scales), "arcsec", "FITS WCS (CDELT/CD)"
