"""Restore nD stacks with :func:`deblur_ops.deblur`: slice by slice, or chunk-wise on dask.

A stack is split into *blocks* that one ``deblur`` call restores — (H, W), (H, W, 3) colour or
(D, H, W) — and *loop axes* (time, channel, z for 2D processing) iterated over. Blind methods
(``psf=None``) restore 2D planes, grey or colour. In memory the
blocks are restored one after another (:func:`iter_deblur_stack` yields each, so a caller can
show progress and stop early); out of core, :func:`deblur_dask` tiles the block axes into chunks
with a halo (``dask.array.map_overlap``) so that only a few chunks are in memory at once.
"""
from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator, Sequence

import numpy as np

from ..api import deblur

# The restored value of a pixel depends on observations further away than the PSF radius (an
# inverse filter is wider than the PSF; iterative methods spread information each step), so the
# halo is a multiple of the radius. Measured on a 256^2 photo with a 15-px motion blur and 64^2
# chunks, max |chunked - in memory| away from the image border, data in [0, 1]:
# richardson_lucy (20 it.) 2.6e-2 / 2.2e-3 / 1.9e-4 at 4 / 6 / 8 radii; admm_tv 8e-2 / 4e-2 / 1e-2;
# wiener with a fixed balance 7e-2 at 6 radii (its inverse filter of a motion blur is long).
HALO_RADII = 6


def _normalise_axes(axes: Sequence[int], ndim: int, name: str) -> tuple[int, ...]:
    try:
        values = [int(a) for a in axes]
    except TypeError:
        raise ValueError(f"{name} must be a sequence of axis numbers, got {axes!r}") from None
    normalised = []
    for a in values:
        if not -ndim <= a < ndim:
            raise ValueError(f"{name} has axis {a}, but the image has only {ndim} axes (0..{ndim - 1})")
        normalised.append(a % ndim)
    if len(set(normalised)) != len(normalised):
        raise ValueError(f"{name} repeats an axis: {axes!r}")
    return tuple(sorted(normalised))


def loop_axes_for(shape: Sequence[int], psf_ndim: int | None, *, rgb: bool = False,
                  loop_axes: Sequence[int] | None = None) -> tuple[int, ...]:
    """The axes to iterate over so that each remaining block fits one ``deblur`` call.

    Args:
        shape: the stack's shape.
        psf_ndim: 2 (blocks are (H, W) images, or (H, W, C) with ``rgb``) or 3 ((D, H, W) volumes);
            None for no PSF (a blind method): the blocks are 2D images as with 2.
        rgb: whether the last axis holds colour channels (kept in every block).
        loop_axes: explicit choice; None takes every leading axis.

    Returns:
        Sorted axis numbers.

    Raises:
        ValueError: the remaining block has the wrong number of axes, or the colour axis is looped.

    Example:
        >>> loop_axes_for((5, 3, 64, 64), 2)
        (0, 1)
        >>> loop_axes_for((5, 32, 64, 64), 3)
        (0,)
        >>> loop_axes_for((5, 32, 64, 64, 3), None, rgb=True)
        (0, 1)
    """
    ndim = len(shape)
    if psf_ndim is None:
        # The blind methods (Motion-Net and the like) estimate a blur of 2D pictures.
        psf_ndim = 2
    if psf_ndim not in (2, 3):
        raise ValueError(f"psf_ndim must be 2, 3 or None (no PSF), got {psf_ndim!r}")
    block_ndim = psf_ndim + (1 if rgb else 0)
    if rgb and psf_ndim == 3:
        raise ValueError("an RGB stack cannot be restored as 3D volumes; use a 2D PSF (slice by slice)")
    if ndim < block_ndim:
        raise ValueError(f"a {psf_ndim}D PSF{' on colour data' if rgb else ''} needs at least {block_ndim} "
                         f"axes, got shape {tuple(shape)}")
    if loop_axes is None:
        return tuple(range(ndim - block_ndim))
    axes = _normalise_axes(loop_axes, ndim, "loop_axes")
    if rgb and ndim - 1 in axes:
        raise ValueError("the colour axis (the last one) cannot be a loop axis of an RGB stack")
    if ndim - len(axes) != block_ndim:
        raise ValueError(f"with loop axes {axes} the blocks of shape {tuple(shape)} have {ndim - len(axes)} axes, "
                         f"but a {psf_ndim}D PSF needs {block_ndim}; loop over {ndim - block_ndim} axes")
    return axes


def slicing_loop_axes(ndim: int, along: int) -> tuple[int, ...]:
    """Loop axes that cut a (..., A, B, C) stack into 2D slices along ``along``, one of its last three axes.

    The axes in front of the last three are looped over as well, so slicing a (T, Z, Y, X) stack
    along Y gives (Z, X) slices for every (t, y).

    Raises:
        ValueError: fewer than three axes, or ``along`` not one of the last three.

    Example:
        >>> slicing_loop_axes(4, 2)
        (0, 2)
    """
    if not isinstance(ndim, int) or ndim < 3:
        raise ValueError(f"slicing along an axis needs a stack of >= 3 axes, got ndim={ndim!r}")
    axis = int(along) % ndim if -ndim <= int(along) < ndim else None
    if axis is None or axis < ndim - 3:
        raise ValueError(f"along must be one of the last three axes ({ndim - 3}..{ndim - 1}), got {along!r}")
    return tuple(range(ndim - 3)) + (axis,)


def block_at(shape: Sequence[int], loop_axes: Sequence[int], point: Sequence[float]) -> tuple:
    """Index of the block that holds the data coordinate ``point`` (nearest slice on each loop axis).

    Args:
        shape: the stack's shape.
        loop_axes: axes looped over (see :func:`loop_axes_for`).
        point: one coordinate per axis in ``shape`` (extra trailing entries, e.g. a colour axis,
            may be missing); values outside the stack are clipped to it.

    Example:
        >>> block_at((5, 32, 32), (0,), (3.4, 10.0, 2.0))
        (3, slice(None, None, None), slice(None, None, None))
    """
    axes = _normalise_axes(loop_axes, len(shape), "loop_axes")
    if len(point) < max(axes, default=-1) + 1:
        raise ValueError(f"point needs a coordinate for every loop axis {axes}, got {tuple(point)!r}")
    index = [slice(None)] * len(shape)
    for axis in axes:
        index[axis] = int(np.clip(round(float(point[axis])), 0, shape[axis] - 1))
    return tuple(index)


def _block_indices(shape: Sequence[int], loop_axes: tuple[int, ...]) -> list[tuple]:
    ranges = [range(shape[a]) for a in loop_axes]
    indices = []
    for combo in itertools.product(*ranges):
        index = [slice(None)] * len(shape)
        for axis, i in zip(loop_axes, combo):
            index[axis] = i
        indices.append(tuple(index))
    return indices


def psf_ndim(psf) -> int | None:
    """The number of image axes a PSF acts on: 2 or 3 for arrays, 2 for spatially varying
    descriptions (``MotionField``, ``PSFGrid``), None for no PSF (a blind method).

    Example:
        >>> psf_ndim(np.ones((3, 5, 5))), psf_ndim(None)
        (3, None)
    """
    if psf is None:
        return None
    if getattr(psf, "spatially_varying", False):
        return 2
    return np.ndim(psf)


def iter_deblur_stack(image, psf, *, method: str = "wiener", loop_axes: Sequence[int] | None = None,
                      rgb: bool = False, device="auto", **params) -> Iterator[tuple[tuple, np.ndarray]]:
    """Restore a stack block by block, yielding ``(index, restored_block)`` after each.

    Stop early by not consuming the rest (closing the generator): no further block is computed.

    Args:
        image: nD NumPy array (any real dtype).
        psf: as for :func:`deblur_ops.deblur` (2D, 3D, a spatially varying description, or None
            for a blind method, which restores each 2D plane, grey or colour).
        method: a name from :func:`deblur_ops.methods`.
        loop_axes: axes iterated over (see :func:`loop_axes_for`); None: all leading axes.
        rgb: whether the last axis is colour.
        device: as for :func:`deblur_ops.deblur`.
        **params: the method's parameters.

    Yields:
        ``(index, block)``: the tuple indexing the block in the stack, and its float32 restoration.

    Example:
        >>> import numpy as np
        >>> from deblur_ops.apps.catalog import make_psf
        >>> stack = np.random.rand(3, 32, 32).astype(np.float32)
        >>> len(list(iter_deblur_stack(stack, make_psf("gaussian", sigma=1.0))))
        3
    """
    if not isinstance(image, np.ndarray):
        raise TypeError(f"image must be a NumPy array, got {type(image).__name__}; use numpy.asarray(image)")
    axes = loop_axes_for(image.shape, psf_ndim(psf), rgb=rgb, loop_axes=loop_axes)
    for index in _block_indices(image.shape, axes):
        yield index, deblur(image[index], psf, method=method, device=device, **params)


def block_count(shape: Sequence[int], psf, *, rgb: bool = False, loop_axes: Sequence[int] | None = None) -> int:
    """How many ``deblur`` calls :func:`iter_deblur_stack` makes (for progress bars).

    Example:
        >>> block_count((4, 5, 32, 32), np.ones((3, 3)))
        20
        >>> block_count((4, 5, 32, 32), None)
        20
    """
    axes = loop_axes_for(shape, psf_ndim(psf), rgb=rgb, loop_axes=loop_axes)
    return math.prod(shape[a] for a in axes)


def deblur_stack(image, psf, *, method: str = "wiener", loop_axes: Sequence[int] | None = None,
                 rgb: bool = False, device="auto", progress: Callable[[int, int], None] | None = None,
                 **params) -> np.ndarray:
    """Restore a whole stack in memory, block by block.

    Args:
        image, psf, method, loop_axes, rgb, device, **params: as for :func:`iter_deblur_stack`.
        progress: called as ``progress(done, total)`` after each block.

    Returns:
        float32 array of the image's shape.

    Example:
        >>> import numpy as np
        >>> deblur_stack(np.random.rand(2, 16, 16), np.ones((3, 3)) / 9).shape
        (2, 16, 16)
    """
    total = block_count(np.shape(image), psf, rgb=rgb, loop_axes=loop_axes)
    out = np.empty(np.shape(image), np.float32)
    for done, (index, block) in enumerate(iter_deblur_stack(image, psf, method=method, loop_axes=loop_axes,
                                                            rgb=rgb, device=device, **params), start=1):
        out[index] = block
        if progress is not None:
            progress(done, total)
    return out


def halo_width(psf_shape: Sequence[int], radii: float = HALO_RADII) -> tuple[int, ...]:
    """Halo per PSF axis for chunk-wise restoration: ``radii`` PSF radii, rounded up.

    Example:
        >>> halo_width((9, 15))
        (24, 42)
    """
    if not radii > 0:
        raise ValueError(f"radii must be > 0, got {radii!r}")
    return tuple(int(math.ceil(radii * (k // 2))) for k in psf_shape)


def deblur_dask(array, psf, *, method: str = "wiener", loop_axes: Sequence[int] | None = None,
                rgb: bool = False, halo: Sequence[int] | None = None, device="auto", **params):
    """Lazily restore a dask array chunk by chunk with overlapping halos (``map_overlap``).

    Each chunk is extended by ``halo`` pixels of its neighbours along the block axes (none along
    loop and colour axes), restored with :func:`deblur_stack`, and trimmed back. At the stack's
    own border no halo is added, so the method's padding sees the same data as in memory.
    Away from the stack's border (one halo), the result matches in-memory processing up to the
    effect of the truncated neighbourhood, which decays with the halo (see :data:`HALO_RADII`);
    within one halo of the border the method's padding of a chunk differs from that of the whole
    image. Parameters a method estimates from the data (wiener's ``balance``, the noise level)
    are estimated per chunk: pass them explicitly for results independent of the chunking.

    Args:
        array: nD ``dask.array.Array``.
        psf: a uniform PSF array (2D or 3D).
        method, loop_axes, rgb, device, **params: as for :func:`deblur_stack`.
        halo: halo per block spatial axis (the PSF's axes, in order); default :func:`halo_width`.

    Returns:
        Lazy float32 ``dask.array.Array`` of the same shape and chunks.

    Raises:
        ValueError: bad axes, a halo wider than a chunk, or colour split over several chunks.
    """
    import dask.array as da

    if not isinstance(array, da.Array):
        raise TypeError(f"array must be a dask array, got {type(array).__name__}; wrap it with dask.array.from_array")
    if psf is None:
        raise ValueError("deblur_dask sizes its halo from the PSF and needs a uniform PSF array, got None; restore "
                         "with a blind method in memory with deblur_stack (or iter_deblur_stack)")
    psf = np.asarray(psf, dtype=np.float32)
    axes = loop_axes_for(array.shape, psf.ndim, rgb=rgb, loop_axes=loop_axes)
    spatial = [a for a in range(array.ndim) if a not in axes and not (rgb and a == array.ndim - 1)]
    widths = halo_width(psf.shape) if halo is None else tuple(int(h) for h in halo)
    if len(widths) != len(spatial) or min(widths) < 0:
        raise ValueError(f"halo must give {len(spatial)} non-negative widths (one per PSF axis), got {halo!r}")
    depth = {a: 0 for a in range(array.ndim)}
    for axis, width in zip(spatial, widths):
        depth[axis] = width
        smallest = min(array.chunks[axis])
        if array.numblocks[axis] > 1 and smallest < width:
            raise ValueError(f"axis {axis} has a chunk of {smallest} pixels, smaller than the halo of {width}; "
                             f"use chunks of at least {width} along it (e.g. --chunks) or a smaller halo")
    if rgb and array.numblocks[-1] != 1:
        raise ValueError("the colour axis must be one chunk; rechunk with {-1: -1}")
    # Loop axes are renumbered inside a chunk exactly as outside, so pass them on as they are.
    return da.map_overlap(deblur_stack, array, depth=depth, boundary="none", trim=True, dtype=np.float32,
                          meta=np.empty((0,) * array.ndim, np.float32), psf=psf, method=method,
                          loop_axes=axes, rgb=rgb, device=device, **params)
