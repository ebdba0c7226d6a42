"""The one high-level entry point: ``deblur(image, psf, method=...)`` and ``methods()``.

Arrays in the user's layout (NumPy or torch: (H, W), (H, W, 3), (D, H, W)) are moved to the
(B, C, *spatial) layout of the restoration methods, run on the chosen device in float32, and
returned in the input's type and shape.
"""
from __future__ import annotations

import inspect

import numpy as np
import torch

from .psf.prepare import prepare_psf, voxel_size_tuple
from .restore import METHODS, get_method
from .validation import as_float_tensor, resolve_device


def methods() -> dict[str, str]:
    """Available restoration methods, name -> one-line description.

    Example:
        >>> import deblur_ops
        >>> "wiener" in deblur_ops.methods()
        True
    """
    return {name: m.description for name, m in sorted(METHODS.items())}


def _to_batch(image: torch.Tensor, psf_ndim: int | None) -> tuple[torch.Tensor, str]:
    """(H, W) -> (1, 1, H, W); (H, W, 3) -> (1, 3, H, W); (D, H, W) -> (1, 1, D, H, W)."""
    if image.dim() == 2:
        return image[None, None], "hw"
    if image.dim() == 3:
        volume = psf_ndim == 3 or (psf_ndim is None and image.shape[-1] not in (3, 4))
        if volume:
            return image[None, None], "dhw"
        if image.shape[-1] in (3, 4) and psf_ndim in (2, None):
            return image.permute(2, 0, 1)[None], "hwc"
        raise ValueError(f"a 2D PSF needs a (H, W) image or an (H, W, 3) colour image, got shape "
                         f"{tuple(image.shape)}; for a 3D volume (D, H, W) pass a 3D PSF (kd, kh, kw)")
    raise ValueError(f"image must have shape (H, W), (H, W, 3) or (D, H, W), got shape {tuple(image.shape)}")


def _from_batch(result: torch.Tensor, layout: str) -> torch.Tensor:
    if layout == "hwc":
        return result[0].permute(1, 2, 0)
    return result[0, 0]


def _check_params(method, params: dict) -> None:
    signature = inspect.signature(method.function)
    accepted = [p.name for p in list(signature.parameters.values())[2:]
                if p.kind is inspect.Parameter.KEYWORD_ONLY]
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise ValueError(f"method {method.name!r} does not take parameter(s) {unknown}; it takes {accepted}")


def _flat(batch: torch.Tensor) -> bool:
    """Whether every (item, channel) of a (B, C, *S) batch is one finite constant value."""
    planes = batch.reshape(batch.shape[0] * batch.shape[1], -1)
    return bool((planes.amax(1) == planes.amin(1)).all() and torch.isfinite(planes[:, 0]).all())


def deblur(image, psf=None, *, method: str = "wiener", device="auto", voxel_size=None, psf_voxel_size=None,
           **params):
    """Restore a blurred image with one of the registered methods.

    Args:
        image: NumPy array or torch tensor: (H, W) grey, (H, W, 3) colour (each channel with the
            same PSF) or (D, H, W) volume. Any real dtype; computed in float32 (integers are
            converted as they are, not rescaled).
        psf: the blur. An array (NumPy or torch) for a uniform PSF: (kh, kw) for 2D images,
            (kd, kh, kw) for volumes, centred at index ``shape // 2`` (even sides too: the
            DeconvolutionLab2 / flowdec convention), convolution convention (see
            :mod:`deblur_ops.psf`); it goes through :func:`deblur_ops.psf.prepare_psf` (odd sizes,
            negatives clipped, sum 1, cropped to the image, resampled to ``voxel_size``). Methods
            that accept spatially varying blur also take a PSF description whose
            ``spatially_varying`` attribute is True (``psf.MotionField``, ``psf.PSFGrid``).
        method: a name from :func:`methods`.
        device: ``"auto"`` (the tensor's CUDA device, else CUDA when available, else CPU),
            ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        voxel_size: the image's voxel size per spatial axis ((z, y, x) or (y, x), e.g. µm), or one
            number; needed with ``psf_voxel_size``.
        psf_voxel_size: the PSF's voxel size in the same unit; when it differs from
            ``voxel_size`` the PSF is resampled (flux-preserving) before the restoration.
        **params: the method's own parameters (e.g. ``iterations=50`` for ``richardson_lucy``).

    Returns:
        float32 result of the image's shape: a NumPy array for NumPy input, a tensor (on the
        input's device) for tensor input. A constant image (each colour channel constant) comes
        back as itself (divided by the PSF's sum), whatever the method.

    Raises:
        ValueError: unknown method (the message lists the valid ones), a missing PSF, a
            spatially varying PSF for a uniform-only method, parameters the method does not take,
            bad shapes, NaN/Inf, and every check of the method itself.
        TypeError: image or psf of an unsupported type.

    Example:
        >>> import numpy as np, deblur_ops
        >>> from deblur_ops.psf import linear_motion_kernel
        >>> image = np.random.rand(64, 64).astype(np.float32)
        >>> deblur_ops.deblur(image, linear_motion_kernel(9, 30).numpy(), method="richardson_lucy").shape
        (64, 64)
    """
    spec = get_method(method)
    _check_params(spec, params)
    target = resolve_device(device, image)
    x = as_float_tensor(image, "image", target)
    if psf is None:
        if spec.needs_psf:
            raise ValueError(f"method {method!r} needs a psf; build one with deblur_ops.psf "
                             f"(e.g. linear_motion_kernel(length, angle) or gaussian_psf(sigma))")
        kernel, psf_ndim = None, None
    elif getattr(psf, "spatially_varying", False):
        if not spec.spatially_varying:
            capable = sorted(n for n, m in METHODS.items() if m.spatially_varying)
            raise ValueError(f"method {method!r} handles uniform blur only, but psf is a spatially varying "
                             f"{type(psf).__name__}; use one of {capable} or pass a single PSF array")
        kernel, psf_ndim = psf, 2
    else:
        kernel = as_float_tensor(psf, "psf", target)
        psf_ndim = kernel.dim()
        if psf_ndim not in (2, 3):
            raise ValueError(f"psf must have shape (kh, kw) or (kd, kh, kw), got shape {tuple(kernel.shape)}")
    batch, layout = _to_batch(x, psf_ndim)
    if psf_ndim is not None and psf_ndim != batch.dim() - 2:
        raise ValueError(f"a {psf_ndim}D psf does not fit a {batch.dim() - 2}D image of shape {tuple(x.shape)}")
    spatial_ndim = batch.dim() - 2
    if voxel_size is not None:
        voxel_size = voxel_size_tuple(voxel_size, spatial_ndim)
    if psf_voxel_size is not None and (psf_ndim is None or getattr(psf, "spatially_varying", False)):
        raise ValueError("psf_voxel_size resamples a PSF array; it does not apply to "
                         f"{'no psf' if psf is None else type(psf).__name__}")
    if psf_ndim is not None and not getattr(psf, "spatially_varying", False):
        # Motion lines and other compact kernels reach their border by design, so the truncation
        # warning is left to the file and layer entry points, where PSFs are measured.
        kernel = prepare_psf(kernel, image_shape=batch.shape[2:], voxel_size=voxel_size,
                             psf_voxel_size=psf_voxel_size, crop_energy=None, warn_truncated=False,
                             dtype=torch.float32).to(target)
    restored = spec.function(batch.contiguous(), kernel, **params)
    if _flat(batch):
        # A constant frame is the blur of the same constant under any PSF summing to s (times s), so that
        # constant is its exact restoration; the methods would add their own error to it (truncated
        # inverse filters, a learned network's bias). They still ran, so their argument checks hold.
        scale = kernel.sum() if isinstance(kernel, torch.Tensor) and float(kernel.sum()) > 0 else 1.0
        restored = batch / scale
    result = _from_batch(restored, layout).float()
    if isinstance(image, np.ndarray):
        return np.ascontiguousarray(result.cpu().numpy())
    return result.to(image.device).contiguous()
