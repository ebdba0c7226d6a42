"""``deblur run``: restore an image file into another, in memory or chunk-wise through dask."""
from __future__ import annotations

import contextlib
from collections.abc import Sequence

import numpy as np

from . import io
from .stack import block_count, deblur_dask, deblur_stack


def _parse_chunks(chunks, shape: Sequence[int]) -> tuple[int, ...]:
    values = tuple(int(c) for c in chunks)
    if len(values) != len(shape) or any(c == 0 or c < -1 for c in values):
        raise ValueError(f"chunks must give one positive size (or -1 for the whole axis) per axis of the shape "
                         f"{tuple(shape)}, got {tuple(chunks)}")
    return tuple(n if c == -1 else min(c, n) for c, n in zip(values, shape))


def _scheduler(address: str | None):
    if address is None:
        return contextlib.nullcontext()
    from distributed import Client

    return Client(address)


def run(input_path, output_path, psf, *, method: str = "wiener", loop_axes: Sequence[int] | None = None,
        chunks: Sequence[int] | None = None, halo: Sequence[int] | None = None, device="auto",
        scheduler: str | None = None, output_dtype: str = "same", progress: bool = True, **params) -> dict:
    """Restore ``input_path`` into ``output_path`` (TIFF, PNG, FITS, Zarr, OME-Zarr).

    Zarr input, or any input with ``chunks``, goes through :func:`deblur_ops.apps.stack.deblur_dask`:
    chunks with a halo, read and written one by one, so memory stays bounded by a few chunks
    when both ends are Zarr. Other inputs are restored in memory slice by slice.

    Args:
        input_path, output_path: files; formats from the suffixes (they may differ).
        psf: uniform PSF array (2D or 3D), normalised to sum 1 here.
        method: a name from :func:`deblur_ops.methods`.
        loop_axes: axes processed independently (default: every axis in front of the PSF's).
        chunks: chunk size per axis (-1: whole axis); default the Zarr chunks (in-memory formats:
            no chunking).
        halo: halo per PSF axis for chunks (default :func:`deblur_ops.apps.stack.halo_width`).
        device: ``"auto"``, ``"cpu"``, ``"cuda"``.
        scheduler: a dask.distributed scheduler address (``tcp://host:8786``); None runs locally.
        output_dtype: ``"same"`` (the input's; integers rounded and clipped) or ``"float32"``.
        progress: show a tqdm progress bar.
        **params: the method's parameters.

    Returns:
        Summary: input/output shape, dtype, format, number of chunks or slices.

    Raises:
        ValueError: bad arguments, unreadable input, an output format that cannot hold the result.
    """
    from tqdm import tqdm

    if output_dtype not in ("same", "float32"):
        raise ValueError(f"output_dtype must be 'same' or 'float32', got {output_dtype!r}")
    psf = np.asarray(psf, dtype=np.float32)
    if psf.ndim not in (2, 3) or psf.sum() <= 0:
        raise ValueError(f"psf must be a 2D or 3D array with a positive sum, got shape {psf.shape}")
    psf = psf / psf.sum()
    source = io.read_image(input_path)
    dtype = np.dtype(source.data.dtype) if output_dtype == "same" else np.dtype(np.float32)
    out_format = io.image_format(output_path)
    data = source.data
    lazy = source.format == "zarr" or chunks is not None
    summary = {"input": str(input_path), "output": str(output_path), "shape": tuple(data.shape),
               "dtype": str(dtype), "format": out_format, "method": method}
    if not lazy:
        total = block_count(data.shape, psf, rgb=source.rgb, loop_axes=loop_axes)
        bar = tqdm(total=total, desc="deblur", unit="slice", disable=not progress)

        restored = deblur_stack(np.asarray(data), psf, method=method, loop_axes=loop_axes, rgb=source.rgb,
                                device=device, progress=lambda done, total: bar.update(1), **params)
        bar.close()
        summary["slices"] = total
        _write(output_path, out_format, io.cast_like(restored, dtype), source)
        return summary

    import dask.array as da
    from tqdm.dask import TqdmCallback

    if not isinstance(data, da.Array):
        data = da.from_array(data, chunks=-1)
    if chunks is not None:
        data = data.rechunk(_parse_chunks(chunks, data.shape))
    restored = deblur_dask(data, psf, method=method, loop_axes=loop_axes, rgb=source.rgb, halo=halo,
                           device=device, **params)
    restored = restored.map_blocks(io.cast_like, dtype, dtype=dtype)
    summary["chunks"] = int(np.prod(restored.numblocks))
    callback = TqdmCallback(desc="deblur", unit="task", disable=not progress) if scheduler is None \
        else contextlib.nullcontext()
    with _scheduler(scheduler), callback:
        if out_format == "zarr":
            target = io.create_zarr_like(output_path, restored.shape, restored.chunksize, dtype,
                                         source if source.format == "zarr" else None)
            for rows in _batches(restored):
                da.store(restored[rows], target, regions=(rows,), lock=False)
        else:
            _write(output_path, out_format, restored.compute(), source)
    return summary


def _batches(array, min_chunks: int = 8):
    """Slices along axis 0 that group whole chunks, each batch at least ``min_chunks`` chunks.

    Storing batch after batch keeps the materialised task graph, and the chunks the scheduler
    holds, proportional to one batch: a single store of a stack with thousands of chunks grows
    the peak memory with the stack.
    """
    per_row = int(np.prod(array.numblocks[1:]))
    rows_per_batch = max(1, -(-min_chunks // per_row))
    edges = np.cumsum((0,) + array.chunks[0])
    for first in range(0, array.numblocks[0], rows_per_batch):
        yield slice(int(edges[first]), int(edges[min(first + rows_per_batch, array.numblocks[0])]))


def _write(path, out_format: str, data: np.ndarray, source: io.ImageFile) -> None:
    if out_format == "zarr":
        target = io.create_zarr_like(path, data.shape, data.shape, data.dtype,
                                     source if source.format == "zarr" else None)
        target[...] = data
    else:
        # Metadata only fits the format it came from; the colour flag fits every format.
        like = source if source.format == out_format else io.ImageFile(None, out_format, rgb=source.rgb)
        io.write_image(path, data, like)
