"""Fused Wiener stack (paper 001): N Wiener deconvolutions of one image in one pass."""
from __future__ import annotations

import math

import torch

from .. import _extension, memory
from .. import reference as ref
from .. import validation as v
from ..boundary import PADDINGS, crop, edge_taper, fft_pads, pad_for_fft

_OP = "deblur_ops::wiener_stack"


def _extension_core(image, psf, snr_db, regularizer):
    return torch.ops.deblur_ops.wiener_stack(image.contiguous(), psf.contiguous(), snr_db, regularizer)


def _core(image, psf, snr_db, regularizer):
    # The compiled op differentiates w.r.t. the image only; a PSF or SNR that needs a gradient is
    # routed to the reference, which autograd differentiates w.r.t. everything.
    wants_other_grads = torch.is_grad_enabled() and (psf.requires_grad or snr_db.requires_grad)
    if _extension.has_kernel("wiener_stack", image.device) and not wants_other_grads:
        return _extension_core(image, psf, snr_db, regularizer)
    return ref.wiener_stack_core(image, psf, snr_db, regularizer)


def _pipeline(image, psf, snr_db, regularizer, padding, core):
    """Validation, boundary handling and cropping around a Wiener-stack ``core``, in parts that
    fit the device's memory (:func:`plan_parts`)."""
    v.require_tensor(image, "image")
    v.image_spatial_dims(image)
    v.require_float(image, "image")
    v.require_nonempty(image, "image")
    v.require_choice(regularizer, "regularizer", ref.REGULARIZERS)
    v.require_choice(padding, "padding", PADDINGS)
    psf = v.batched_psf(psf, image)
    v.require_finite(image, "image")
    snr = v.as_1d_float(ref.DEFAULT_SNR_DB if snr_db is None else snr_db, "snr_db", image)
    if v.is_compiling():
        return _whole(image, psf, snr, regularizer, padding, core)
    budget = memory.memory_budget(image.device)
    parts = plan_parts(tuple(image.shape), snr.shape[0], _grid(image, psf, padding), image.element_size(), budget)
    return memory.retry_smaller(lambda p: _in_parts(image, psf, snr, regularizer, padding, core, *p),
                                parts, image.device)


def _grid(image, psf, padding) -> tuple[int, ...]:
    spatial = tuple(image.shape[2:])
    if padding != "reflect":
        return spatial
    return tuple(n + a + b for n, (a, b) in zip(spatial, fft_pads(spatial, tuple(psf.shape[1:]))))


def plan_parts(shape: tuple[int, ...], filters: int, grid: tuple[int, ...], itemsize: int,
               budget: int | None) -> tuple[int, int]:
    """(items, filters) per call so that one call's work fits ``budget`` bytes (None: no limit).

    One call on i items with f filters holds, per item and channel, f output planes on the padded
    ``grid``, their spectra (a group of them at a time; counted as f), the padded image and its
    spectrum: (2 f + 2) grid planes. The split is exact: items and filters are independent.

    Example:
        >>> plan_parts((8, 1, 64, 64), 15, (64, 64), 4, None)
        (8, 15)
        >>> plan_parts((8, 1, 64, 64), 15, (64, 64), 4, 4 * 64 * 64 * 32 * 3)
        (3, 15)
        >>> plan_parts((8, 1, 64, 64), 15, (64, 64), 4, 4 * 64 * 64 * 8)
        (1, 3)
    """
    items = shape[0]
    plane = itemsize * shape[1] * math.prod(grid)

    def cost(i, f):
        return i * plane * (2 * f + 2)

    if budget is None or cost(items, filters) <= budget:
        return items, filters
    if cost(1, filters) <= budget:
        return max(1, budget // cost(1, filters)), filters
    return 1, max(1, min(filters, (budget // plane - 2) // 2))


def _in_parts(image, psf, snr, regularizer, padding, core, items: int, filters: int):
    """The stack of ``image`` computed ``items`` batch items and ``filters`` SNRs per call."""
    b, n = image.shape[0], snr.shape[0]
    if items >= b and filters >= n:
        return _whole(image, psf, snr, regularizer, padding, core)
    out = image.new_empty((b, n) + tuple(image.shape[1:]))
    for i in range(0, b, items):
        part = slice(i, i + items)
        kernel = psf[part] if psf.shape[0] > 1 else psf
        for j in range(0, n, filters):
            out[part, j:j + filters] = _whole(image[part], kernel, snr[j:j + filters], regularizer, padding, core)
    return out


def _whole(image, psf, snr, regularizer, padding, core):
    if padding == "reflect":
        padded, pads = pad_for_fft(image, tuple(psf.shape[1:]))
        out = crop(core(padded, psf, snr, regularizer), pads)
        # With dynamic shapes the cropped view's strides are products of symbolic padded lengths,
        # and Inductor's range analysis of their ratios fails (ValueRangeError) when it checks
        # the output's stride order; a dense output has plain strides.
        return out.contiguous() if v.is_compiling() else out
    if padding == "edge_taper":
        image = edge_taper(image, psf)
    return core(image, psf, snr, regularizer)


def wiener_stack(image: torch.Tensor, psf: torch.Tensor, snr_db=None, *,
                 regularizer: str = "identity", padding: str = "reflect") -> torch.Tensor:
    r"""Deconvolve ``image`` with N Wiener filters of different SNRs at once (paper 001).

    Filter j is :math:`X_j = \overline{K} Y / (|K|^2 + \lambda_j |R|^2)` with
    :math:`\lambda_j = 10^{-\mathrm{snr}_j/10}`, K the OTF of ``psf`` (centre ``k//2`` at the
    origin, so a centred PSF causes no shift) and R the identity or the discrete Laplacian. One
    forward FFT of the image and of the PSF, one fused kernel for all N spectra, one batched
    inverse FFT.

    Args:
        image: (B, C, H, W) or (B, C, D, H, W), float32/float64.
        psf: (kh, kw) / (kd, kh, kw), or one per batch item (B, kh, kw) / (B, kd, kh, kw); odd
            sizes, not larger than the image. Used as given (not renormalised).
        snr_db: 1-D tensor or sequence of N SNRs in dB; default the 15 values 9, 13, ..., 65.
        regularizer: ``"identity"`` or ``"laplacian"``.
        padding: ``"reflect"`` (pad by the PSF size to a fast FFT length, then crop),
            ``"edge_taper"`` (blend the borders with a blurred copy) or ``"circular"`` (none:
            exactly the textbook circular Wiener filter).

    Returns:
        (B, N, C, *spatial), the image's dtype. Differentiable w.r.t. ``image`` (and, through the
        reference path, w.r.t. ``psf`` and ``snr_db`` when they require grad).

    Raises:
        ValueError: wrong shapes or ndim, non-float dtypes, an even or too large PSF, or one whose
            sum is not positive and finite,
            NaN/Inf values, mismatched devices, empty tensors, unknown options.

    Examples:
        >>> import torch, deblur_ops
        >>> image = torch.rand(1, 1, 64, 64)
        >>> psf = torch.ones(5, 5) / 25
        >>> deblur_ops.wiener_stack(image, psf).shape
        torch.Size([1, 15, 1, 64, 64])

    References:
        - A. Gilbert, S. Messinger, A. Patel. Non-Blind Image Deblurring using Neural Networks. Course project
          report, year not stated (paper 001 in docs/references.md).
        - N. Wiener. Extrapolation, Interpolation, and Smoothing of Stationary Time Series. MIT Press, 1949.
    """
    if isinstance(snr_db, (str, bytes)):
        raise TypeError(f"snr_db must be a number, a sequence of numbers or a 1-D tensor of SNRs in dB, "
                        f"got the string {snr_db!r}; write snr_db={snr_db!s} without quotes")
    return _pipeline(image, psf, snr_db, regularizer, padding, _core)


if _extension.LOADED:

    @torch.library.register_fake(_OP)
    def _wiener_stack_fake(image, psf, snr_db, regularizer):
        torch._check(image.dim() in (4, 5), lambda: f"image must be 4-D or 5-D, got {image.dim()}-D")
        torch._check(snr_db.dim() == 1, lambda: "snr_db must be 1-D")
        torch._check(psf.dim() == image.dim() - 1, lambda: "psf must have shape (P, *kernel)")
        return image.new_empty((image.shape[0], snr_db.shape[0]) + tuple(image.shape[1:]))

    @torch.library.register_fake("deblur_ops::wiener_stack_backward")
    def _wiener_stack_backward_fake(grad, psf, snr_db, regularizer):
        torch._check(grad.dim() in (5, 6), lambda: f"grad must be 5-D or 6-D, got {grad.dim()}-D")
        torch._check(grad.shape[1] == snr_db.shape[0], lambda: "grad dim 1 must equal len(snr_db)")
        return grad.new_empty((grad.shape[0],) + tuple(grad.shape[2:]))

    def _setup_context(ctx, inputs, output):
        _, psf, snr_db, regularizer = inputs
        ctx.save_for_backward(psf, snr_db)
        ctx.regularizer = regularizer

    def _backward(ctx, grad):
        # The forward is linear in the image; its adjoint applies conj(G_j) and sums over j.
        psf, snr_db = ctx.saved_tensors
        grad_image = torch.ops.deblur_ops.wiener_stack_backward(
            grad.contiguous(), psf, snr_db, ctx.regularizer
        )
        return grad_image, None, None, None

    def _backward_backward(ctx, grad):
        # The backward op is linear in its input too, and its adjoint is the forward op.
        psf, snr_db = ctx.saved_tensors
        return (
            torch.ops.deblur_ops.wiener_stack(grad.contiguous(), psf, snr_db, ctx.regularizer),
            None, None, None,
        )

    torch.library.register_autograd(_OP, _backward, setup_context=_setup_context)
    torch.library.register_autograd(
        "deblur_ops::wiener_stack_backward", _backward_backward, setup_context=_setup_context
    )
