"""``deblur run``: restore an image file into another, in memory or chunk-wise through dask."""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..psf import prepare_psf
from ..restore import METHODS, get_method
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
        scheduler: str | None = None, output_dtype: str = "same", progress: bool = True, overwrite: bool = False,
        resume: bool = False, hdu=None, nan: str | None = None, **params) -> dict:
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
        overwrite: replace an existing ``output_path`` that ``deblur run`` did not write (its own
            earlier outputs are replaced without it).
        resume: continue an interrupted Zarr output of the same command: batches of chunks that
            the partial store records as written are not computed again.
        nan: what to do with NaN/Inf pixels (masked or dead pixels of FITS images): None refuses
            them with a message, ``"fill"`` replaces them by the median of the finite pixels,
            ``"mask"`` does the same and puts NaN back at those pixels in the (float) output.
        hdu: FITS input: the image HDU to restore (index or EXTNAME; default the first with
            data). A FITS output keeps every HDU of a FITS input, with the restored image in
            the HDU it came from.
        **params: the method's parameters.

    The input is never written: an output that is the input, or inside it, after resolving links,
    is refused. The output appears only complete: files are written to a temporary file in the
    same folder and renamed over the target; Zarr is written to ``.partial.<name>`` next to the
    target, marked incomplete in its attributes (refused as an input) until every chunk is
    written, then moved into place.

    Returns:
        Summary: input/output shape, dtype, format, number of chunks or slices.

    Raises:
        ValueError: bad arguments, unreadable input, an output format that cannot hold the result,
            an output that is the input, an existing output not written by ``deblur run`` (without
            ``overwrite``), a missing output folder.
    """
    from tqdm import tqdm

    input_path, output_path = Path(input_path), Path(output_path)
    out_format = io.image_format(output_path)
    _check_output(input_path, output_path, overwrite)
    if output_dtype not in ("same", "float32"):
        raise ValueError(f"output_dtype must be 'same' or 'float32', got {output_dtype!r}")
    estimated = None
    scale = 1.0  # method "blind" restores on the picture's range (models.methods.blind_scale)
    if psf is None and (method == "blind" or (method == "blind-irc" and params.get("end_to_end") is None)):
        # One kernel for the image, estimated here so that it can be written next to the output; the
        # restoration is then the non-blind method with that kernel (what the method does in memory).
        psf_path = estimated_psf_path(output_path)
        _check_output(input_path, psf_path, overwrite)
        params.pop("end_to_end", None)
        blind_method = method
        if out_format in ("png", "jpeg"):  # refused before the estimate, not after it
            peek = io.read_image(input_path, hdu=hdu)
            io.check_writable(out_format, peek.data.dtype if output_dtype == "same" else np.float32,
                              peek.data.shape, peek.rgb)
        psf, method, scale, estimated_how = _estimate(input_path, hdu, chunks, nan, params, progress, method)
        estimated = psf_path
    if psf is None:
        if get_method(method).needs_psf:
            raise ValueError(f"method {method!r} needs a PSF: give --psf FILE or --psf-model, or use a blind method "
                             f"({', '.join(n for n, m in sorted(METHODS.items()) if not m.needs_psf)})")
        if chunks is not None or io.image_format(input_path) == "zarr":
            raise ValueError(f"the blind method {method!r} restores whole planes: it cannot be used with --chunks or "
                             f"Zarr input; convert the planes to TIFF/FITS or drop --chunks")
    if psf is None or getattr(psf, "spatially_varying", False):
        # A PSF grid's nodes sit at fixed fractions of the whole image: restored in memory, plane by plane.
        if chunks is not None or io.image_format(input_path) == "zarr":
            raise ValueError("a spatially varying PSF (PSF grid) applies to whole planes: it cannot be used with "
                             "--chunks or Zarr input; convert the planes to TIFF/FITS or drop --chunks")
        source = io.read_image(input_path, hdu=hdu)
        data = np.asarray(source.data)
        dtype = np.dtype(data.dtype) if output_dtype == "same" else np.dtype(np.float32)
        io.check_writable(out_format, dtype, data.shape, source.rgb)
        summary = {"input": str(input_path), "output": str(output_path), "shape": tuple(data.shape),
                   "dtype": str(dtype), "format": out_format, "method": method,
                   "psf": "none (blind method)" if psf is None else f"{type(psf).__name__} {getattr(psf, 'grid_shape', '')}"}
        data, missing = _handle_nan(data, nan, dtype, False, summary)
        total = block_count(data.shape, psf, rgb=source.rgb, loop_axes=loop_axes)
        bar = tqdm(total=total, desc="deblur", unit="slice", disable=not progress)
        values = data if scale == 1.0 else np.asarray(data, dtype=np.float32) / np.float32(scale)
        restored = deblur_stack(values, psf, method=method, loop_axes=loop_axes, rgb=source.rgb, device=device,
                                progress=lambda done, total: bar.update(1), **params)
        if scale != 1.0:
            restored = restored * np.float32(scale)
        bar.close()
        if missing is not None:
            restored = np.where(missing, np.nan, restored)
        summary.update(slices=total, clipped_pixels=io.clipped_count(restored, dtype))
        if estimated is not None:  # a PSF grid measured from the stars: (gy, gx, k, k), as --psf reads it back
            _write(estimated, "tiff", psf.psfs.numpy().astype(np.float32), io.ImageFile(None, "tiff"))
            summary.update(method=f"{blind_method} (estimated PSF grid, then {method})", psf_estimated=str(estimated),
                           psf_size=int(psf.psfs.shape[-1]), psf_grid=list(psf.grid_shape))
        _write(output_path, out_format, io.cast_like(restored, dtype), source)
        return summary
    psf = np.asarray(psf, dtype=np.float32)
    if psf.ndim not in (2, 3) or psf.sum() <= 0:
        raise ValueError(f"psf must be a 2D or 3D array with a positive sum, got shape {psf.shape}")
    psf = psf / psf.sum()
    source = io.read_image(input_path, hdu=hdu)
    image_sides = source.data.shape[-psf.ndim - (1 if source.rgb else 0):][:psf.ndim]
    if any(k > n for k, n in zip(psf.shape, image_sides)):
        # As deblur() does: cropped about its centre to the image, with a warning saying how much
        # energy that loses (a PSF wider than the image cannot be told apart from it).
        psf = prepare_psf(psf, image_shape=tuple(image_sides), crop_energy=None, warn_truncated=False).numpy()
    dtype = np.dtype(source.data.dtype) if output_dtype == "same" else np.dtype(np.float32)
    io.check_writable(out_format, dtype, source.data.shape, source.rgb)
    data = source.data
    lazy = source.format == "zarr" or chunks is not None
    summary = {"input": str(input_path), "output": str(output_path), "shape": tuple(data.shape),
               "dtype": str(dtype), "format": out_format, "method": method}
    data, missing = _handle_nan(data, nan, dtype, lazy, summary)
    if not lazy:
        total = block_count(data.shape, psf, rgb=source.rgb, loop_axes=loop_axes)
        bar = tqdm(total=total, desc="deblur", unit="slice", disable=not progress)

        values = np.asarray(data) if scale == 1.0 else np.asarray(data, dtype=np.float32) / np.float32(scale)
        restored = deblur_stack(values, psf, method=method, loop_axes=loop_axes, rgb=source.rgb,
                                device=device, progress=lambda done, total: bar.update(1), **params)
        if scale != 1.0:
            restored = restored * np.float32(scale)
        bar.close()
        if missing is not None:
            restored = np.where(missing, np.nan, restored)
        summary["slices"] = total
        summary["clipped_pixels"] = io.clipped_count(restored, dtype)
        if estimated is not None:
            _write(estimated, "tiff", psf.astype(np.float32), io.ImageFile(None, "tiff"))
            summary.update(method=f"{blind_method} (estimated PSF, then {method})", psf_estimated=str(estimated),
                           psf_size=int(psf.shape[-1]), **estimated_how)
        _write(output_path, out_format, io.cast_like(restored, dtype), source)
        return summary
    if resume and out_format != "zarr":
        raise ValueError(f"--resume continues a chunk-wise Zarr output; {output_path} is {out_format}, which is "
                         f"written in one piece (an interrupted run left no partial file to continue)")

    import dask.array as da
    from tqdm.dask import TqdmCallback

    if not isinstance(data, da.Array):
        data = da.from_array(data, chunks=-1)
    if chunks is not None:
        data = data.rechunk(_parse_chunks(chunks, data.shape))
    restored = deblur_dask(data, psf, method=method, loop_axes=loop_axes, rgb=source.rgb, halo=halo,
                           device=device, **params)
    if missing is not None:
        restored = da.where(missing, np.nan, restored)
    clipped = []  # per block computed here (local schedulers share this list; a cluster does not)

    def cast_counting(block):
        clipped.append(io.clipped_count(block, dtype))
        return io.cast_like(block, dtype)

    restored = restored.map_blocks(cast_counting, dtype=dtype)
    summary["chunks"] = int(np.prod(restored.numblocks))
    callback = TqdmCallback(desc="deblur", unit="task", disable=not progress) if scheduler is None \
        else contextlib.nullcontext()
    with _scheduler(scheduler), callback, _reading_errors(input_path):
        if out_format == "zarr":
            signature = _signature(input_path, psf, method, params, restored, dtype)
            batches = list(_batches(restored))
            partial, root, target, done = _open_partial(output_path, restored, dtype, source, signature,
                                                        len(batches), resume)
            summary["resumed_batches"] = len(done)
            for k, rows in enumerate(batches):
                if k in done:
                    continue
                da.store(restored[rows], target, regions=(rows,), lock=False)
                done.add(k)
                _mark(root, signature, len(batches), done, complete=False)
            _mark(root, signature, len(batches), done, complete=True)
            _move_into_place(partial, output_path)
        else:
            _write(output_path, out_format, restored.compute(), source)
    summary["clipped_pixels"] = sum(clipped) if scheduler is None else None
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


def estimated_psf_path(output_path) -> Path:
    """Where ``deblur run --method blind`` writes the kernel it estimated: ``<output stem>_psf.tif`` beside the output."""
    output_path = Path(output_path)
    stem = output_path.name[:-len(io.format_suffix(output_path))]
    return output_path.parent / f"{stem}_psf.tif"


def _estimate(input_path: Path, hdu, chunks, nan, params: dict, progress: bool = False,
              method: str = "blind") -> tuple[np.ndarray, str, float, dict]:
    """The kernel of a 2D (or colour) input, estimated blind; the non-blind method to restore with it;
    the picture's range to restore on (as method ``method``, "blind" or "blind-irc", does in memory);
    and what else the estimate found (for the summary). ``progress``: a tqdm bar over the
    estimator's pyramid levels.
    With ``nan`` ("fill"/"mask") NaN/Inf pixels are estimated over as the median of the others, as the
    restoration then fills them."""
    from ..models.methods import (BLIND_NONBLIND_GRID, blind_grid_shape, blind_nonblind, blind_nonblind_defaults,
                                  blind_region, blind_scale, check_blind_nonblind, default_psf_size)
    from ..psf.estimate import DARK_CHANNEL, KERNEL_SPARSITY, estimate_psf
    from ..psf.fields import psf_grid_from_point_sources

    if chunks is not None or io.image_format(input_path) == "zarr":
        raise ValueError(f"method {method!r} estimates one PSF from a whole 2D image: it cannot be used with --chunks "
                         f"or Zarr input")
    source = io.read_image(input_path, hdu=hdu)
    data = np.asarray(source.data, dtype=np.float32)
    plane = data.mean(-1) if source.rgb else data
    if plane.ndim != 2:
        raise ValueError(f"method {method!r} estimates one PSF from a 2D (or colour) image, got shape {data.shape}; "
                         f"for a stack, estimate the PSF of one plane with deblur_ops.estimate_psf and pass it "
                         f"with --psf" + (" (or --param end_to_end=blind-irc runs paper 004's end-to-end network on "
                                          "each plane, without a kernel)" if method == "blind-irc" else ""))
    finite = np.isfinite(plane)
    if not finite.all():
        if nan is None or not finite.any():
            raise ValueError(f"the input has {int((~finite).sum())} NaN or Inf pixel(s) (masked or dead pixels); "
                             f"--nan fill or --nan mask lets method {method!r} estimate over them (median of the others)")
        plane = np.where(finite, plane, np.median(plane[finite])).astype(np.float32)
    if method == "blind-irc":
        if "region" in params:
            raise ValueError("region is a parameter of method 'blind' (its kernel estimated from part of the "
                             "picture); blind-irc reads the blur from the whole picture: use --method blind, or crop "
                             "the input")
        return _estimate_motion_net(data, plane, params, progress)
    size = params.pop("psf_size", None) or default_psf_size(plane.shape)
    nonblind = params.pop("nonblind", None)
    source = params.pop("source", "auto")
    sparsity = params.pop("sparsity", KERNEL_SPARSITY)
    dark_channel = params.pop("dark_channel", DARK_CHANNEL)
    region = params.pop("region", None)
    area, found = (slice(None), slice(None)), {}
    if region is not None:
        if "psf_grid" in params:
            raise ValueError("region and psf_grid exclude each other: a PSF grid is measured over the whole frame; "
                             "drop one of them")
        area = blind_region(region, plane.shape, size)
        found = {"psf_region": [[area[0].start, area[0].stop], [area[1].start, area[1].stop]]}
    if nonblind is not None:
        check_blind_nonblind(nonblind, params.get("noise_sigma"))
    if plane.max() == plane.min():  # a flat frame has no blur to estimate; the identity kernel keeps it as it is
        kernel = np.zeros((1, 1), np.float32)
        kernel[0, 0] = 1
        params.pop("noise_sigma", None)
        return kernel, blind_nonblind(nonblind, "edges"), 1.0, {}
    if "psf_grid" in params:  # a spatially varying PSF measured from the stars found near each node
        grid_shape = blind_grid_shape(params.pop("psf_grid"))
        if source == "edges":
            raise ValueError("psf_grid is measured from point sources (stars, beads): drop source=edges or psf_grid")
        if nonblind is not None:
            check_blind_nonblind(nonblind, params.get("noise_sigma"), spatially_varying=True)
        nonblind, scale = nonblind or BLIND_NONBLIND_GRID, blind_scale(plane)
        _noise_in_range_units(params, nonblind, scale)
        return psf_grid_from_point_sources(plane, size, grid_shape)[0], nonblind, scale, {}
    with _estimate_bar(progress) as advance:
        kernel, used = estimate_psf(plane[area], size, source=source, sparsity=sparsity, dark_channel=dark_channel,
                                    return_source=True, callback=advance)
    nonblind = blind_nonblind(nonblind, used)
    for key, value in blind_nonblind_defaults(nonblind).items():  # as method "blind" does in memory
        params.setdefault(key, value)
    scale = blind_scale(plane)
    _noise_in_range_units(params, nonblind, scale)
    return kernel, nonblind, scale, {**found, **(_kernel_summary(kernel) if used == "edges" else {})}


def _kernel_summary(kernel: np.ndarray) -> dict:
    """The estimated kernel's RMS radius for the summary, and the near-sharp caution when it applies."""
    from ..psf.estimate import kernel_rms_radius, near_sharp_warning

    caution = near_sharp_warning(kernel)
    return {"kernel_rms_radius": round(kernel_rms_radius(kernel), 2), **({"caution": caution} if caution else {})}


@contextlib.contextmanager
def _estimate_bar(progress: bool):
    """A tqdm bar over the estimator's pyramid levels; yields its ``callback(done, total)``."""
    from tqdm import tqdm

    with tqdm(desc="estimate PSF", unit="level", disable=not progress) as bar:
        def advance(done, total):
            bar.total = total
            bar.update(done - bar.n)

        yield advance


def _estimate_motion_net(data: np.ndarray, plane: np.ndarray, params: dict, progress: bool):
    """Method "blind-irc" in :func:`_estimate`: Motion-Net's support, the MAP kernel, then ``irc-net`` at
    :data:`deblur_ops.models.methods.TV_IRC_NOISE_FACTOR` times the noise level, on the picture's range."""
    import torch

    from ..data.noise import noise_sigma_per_item
    from ..models.methods import TV_IRC_NOISE_FACTOR, blind_scale, estimate_psf_motion_net
    from ..psf.estimate import DARK_CHANNEL, KERNEL_SPARSITY

    size = params.pop("psf_size", None)
    sparsity = params.pop("sparsity", KERNEL_SPARSITY)
    dark_channel = params.pop("dark_channel", DARK_CHANNEL)
    motion_weights = params.pop("motion_weights", "motion-net")
    if plane.max() == plane.min():  # a flat frame has no blur to estimate; the identity kernel keeps it as it is
        params.pop("noise_sigma", None)
        return np.ones((1, 1), np.float32), "irc-net", 1.0, {}
    with _estimate_bar(progress) as advance:
        kernel, info = estimate_psf_motion_net(plane, size, sparsity=sparsity, dark_channel=dark_channel,
                                               motion_weights=motion_weights, callback=advance)
    scale = blind_scale(plane)
    if "noise_sigma" in params:
        sigma = float(params["noise_sigma"]) / scale
    else:  # as the method in memory: the (1, C, H, W) item on the picture's range
        values = np.where(np.isfinite(data), data, np.median(plane)).astype(np.float32) / np.float32(scale)
        item = torch.from_numpy(np.moveaxis(values, -1, 0) if values.ndim == 3 else values[None])[None]
        sigma = float(noise_sigma_per_item(item, None)[0])
    params["noise_sigma"] = TV_IRC_NOISE_FACTOR * sigma
    return kernel, "irc-net", scale, {"motion_length": round(info["motion_length"], 2),
                                      "motion_angle": round(info["motion_angle"], 1), "support": info["support"],
                                      **_kernel_summary(kernel)}


def _noise_in_range_units(params: dict, nonblind: str, scale: float) -> None:
    """noise_sigma, given in the file's units, on the scale blind restores on; dropped for a default
    non-blind step without a noise level (Richardson-Lucy for point sources), as method "blind" does."""
    from ..models.methods import NOISE_SIGMA_METHODS

    if "noise_sigma" in params:
        if nonblind in NOISE_SIGMA_METHODS:
            params["noise_sigma"] = float(params["noise_sigma"]) / scale
        else:
            del params["noise_sigma"]


@contextlib.contextmanager
def _reading_errors(input_path: Path):
    """Errors of the lazily read input (a corrupt chunk fails in its codec, mid-run) as one ValueError."""
    try:
        yield
    except (RuntimeError, OSError, KeyError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else "no details"
        raise ValueError(f"restoring {str(input_path)!r} failed while reading it chunk by chunk: "
                         f"{type(exc).__name__}: {first}") from exc


def _check_output(input_path: Path, output_path: Path, overwrite: bool) -> None:
    source, target = input_path.resolve(), output_path.resolve()
    if target == source or source in target.parents or target in source.parents:
        raise ValueError(f"output {str(output_path)!r} is the input {str(input_path)!r} (or inside it, or holds it) "
                         f"after resolving links; write the restoration to another path")
    if not target.parent.is_dir():
        raise ValueError(f"the output folder {str(target.parent)!r} does not exist; create it first")
    exists = output_path.exists() or output_path.is_symlink()
    if exists and not overwrite and not io.written_by_deblur(output_path):
        raise ValueError(f"{str(output_path)!r} exists and was not written by `deblur run`; pass --overwrite to "
                         f"replace it, or choose another output path")


def _handle_nan(data, nan, dtype, lazy: bool, summary: dict):
    """(data with NaN/Inf filled, the mask to put back or None); refuses NaN without ``nan``."""
    if nan not in (None, "fill", "mask"):
        raise ValueError(f"nan must be None, 'fill' or 'mask', got {nan!r}")
    if not np.issubdtype(np.dtype(data.dtype), np.floating):
        return data, None  # integer pixels cannot be NaN
    if nan is None:
        if not lazy:  # a lazy stack is checked chunk by chunk by the methods
            bad = int((~np.isfinite(np.asarray(data))).sum())
            if bad:
                raise ValueError(f"the input has {bad} NaN or Inf pixel(s) (masked or dead pixels); --nan fill "
                                 f"replaces them by the median of the other pixels, --nan mask also puts NaN back "
                                 f"there in the output")
        return data, None
    if nan == "mask" and not np.issubdtype(dtype, np.floating):
        raise ValueError(f"--nan mask puts NaN back in the output, which {dtype} cannot hold; add "
                         f"--output-dtype float32")
    if lazy:
        import dask.array as da

        data = data if isinstance(data, da.Array) else da.from_array(data, chunks=-1)
        missing = ~da.isfinite(data)
        sample = np.asarray(data[tuple(slice(None, None, max(1, n // 64)) for n in data.shape)])
        fill = float(np.nanmedian(np.where(np.isfinite(sample), sample, np.nan)))
        summary["nan_pixels"] = int(missing.sum().compute())
        filled = da.where(missing, fill, data)
    else:
        data = np.asarray(data)
        missing = ~np.isfinite(data)
        fill = float(np.median(data[~missing])) if (~missing).any() else 0.0
        summary["nan_pixels"] = int(missing.sum())
        filled = np.where(missing, fill, data).astype(data.dtype)
    summary["nan_filled_with"] = fill
    return filled, (missing if nan == "mask" else None)


def _signature(input_path: Path, psf: np.ndarray, method: str, params: dict, restored, dtype) -> dict:
    """What a partial Zarr output was computed from; --resume continues only an identical run."""
    return {"input": str(input_path.resolve()), "method": method,
            "params": json.loads(json.dumps(params, sort_keys=True, default=repr)),
            "psf_sha256": hashlib.sha256(np.ascontiguousarray(psf).tobytes()).hexdigest(),
            "shape": list(restored.shape), "chunks": [list(c) for c in restored.chunks], "dtype": str(dtype)}


def _partial_path(output_path: Path) -> Path:
    return output_path.parent / f".partial.{output_path.name}"


def _open_partial(output_path: Path, restored, dtype, source: io.ImageFile, signature: dict, batches: int,
                  resume: bool):
    """The partial store (new, or the resumable one): (path, root node, array, written batches)."""
    import zarr

    partial = _partial_path(output_path)
    if resume and partial.exists():
        root = zarr.open(str(partial), mode="r+")
        mark = root.attrs.get(io.ZARR_ATTRIBUTE, {})
        if mark.get("signature") != signature:
            raise ValueError(f"{partial} was written by a different command (input, PSF, method, parameters, "
                             f"chunks or dtype differ); rerun without --resume to start over")
        array = root if isinstance(root, zarr.Array) else root[source.metadata["component"]]
        return partial, root, array, set(mark.get("done_batches", []))
    _remove(partial)
    array = io.create_zarr_like(partial, restored.shape, restored.chunksize, dtype,
                                source if source.format == "zarr" else None)
    root = zarr.open(str(partial), mode="r+")
    _mark(root, signature, batches, set(), complete=False)
    return partial, root, array, set()


def _mark(root, signature: dict, batches: int, done: set, *, complete: bool) -> None:
    from .. import __version__

    root.attrs[io.ZARR_ATTRIBUTE] = {"software": io.SOFTWARE, "version": __version__, "complete": complete,
                                     "batches": batches, "done_batches": sorted(done), "signature": signature}


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _move_into_place(partial: Path, output_path: Path) -> None:
    # A directory cannot be renamed over a non-empty one: the previous output (checked to be ours,
    # or --overwrite) is renamed aside first and removed only once the new one is in place.
    previous = None
    if output_path.exists() or output_path.is_symlink():
        previous = Path(tempfile.mkdtemp(prefix=f".{output_path.name}.old-", dir=output_path.parent))
        os.replace(output_path, previous / "store")
    os.replace(partial, output_path)
    if previous is not None:
        shutil.rmtree(previous)


def _write(path: Path, out_format: str, data: np.ndarray, source: io.ImageFile) -> None:
    if out_format == "zarr":
        import zarr

        partial = _partial_path(path)
        _remove(partial)
        target = io.create_zarr_like(partial, data.shape, data.shape, data.dtype,
                                     source if source.format == "zarr" else None)
        target[...] = data
        root = zarr.open(str(partial), mode="r+")
        _mark(root, {"shape": list(data.shape), "dtype": str(data.dtype)}, 1, {0}, complete=True)
        _move_into_place(partial, path)
        return
    # Metadata only fits the format it came from; the colour flag fits every format.
    like = source if source.format == out_format else io.ImageFile(None, out_format, rgb=source.rgb)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial" + io.format_suffix(path), dir=path.parent)
    os.close(fd)
    try:
        io.write_image(tmp, data, like)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it private; outputs get the usual permissions
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
