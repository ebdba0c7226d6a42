"""NU-Conv: non-uniform convolution with a filter bank (paper 004 §2.2, eq. 17)."""
from __future__ import annotations

import torch

from .. import _extension
from .. import reference as ref
from .. import validation as v

_OP = "deblur_ops::nu_conv"


def validate_nu_conv(x, bank, idx, weights, mode: str, padding: str) -> None:
    """Checks of :func:`deblur_ops.nu_conv`'s inputs; raises ValueError/TypeError with a fix."""
    for t, name in ((x, "x"), (bank, "bank"), (idx, "idx"), (weights, "weights")):
        v.require_tensor(t, name)
    v.require_choice(mode, "mode", ref.NU_CONV_MODES)
    v.require_choice(padding, "padding", ref.NU_CONV_PADDINGS)
    v.require_float(x, "x")
    if x.dim() != 4:
        raise ValueError(
            f"x must have shape (B, C, H, W), got shape {tuple(x.shape)}; add missing batch/channel "
            f"dims with x[None, None] or x[None]"
        )
    v.require_nonempty(x, "x")
    if bank.dim() != 3 or bank.shape[0] < 1:
        raise ValueError(
            f"bank must have shape (F, kh, kw) with F >= 1 filters, got shape {tuple(bank.shape)}; "
            f"stack the filters with torch.stack(filters)"
        )
    if bank.shape[1] % 2 == 0 or bank.shape[2] % 2 == 0:
        raise ValueError(
            f"bank filter sizes must be odd so that the centre is a pixel, got (kh, kw) = "
            f"{tuple(bank.shape[1:])}; pad the filters with a row/column of zeros"
        )
    if bank.dtype != x.dtype:
        raise ValueError(f"bank dtype {bank.dtype} must match x dtype {x.dtype}; use bank.to(x.dtype)")
    B, _, H, W = x.shape
    for t, name in ((idx, "idx"), (weights, "weights")):
        v.require_same_device(t, name, x, "x")
        if t.dim() != 4 or t.shape[0] not in (1, B) or tuple(t.shape[2:]) != (H, W) or t.shape[1] < 1:
            raise ValueError(
                f"{name} must have shape (B or 1, K, H, W) = ({B} or 1, K >= 1, {H}, {W}) for x of "
                f"shape {tuple(x.shape)}, got shape {tuple(t.shape)}"
            )
    v.require_same_device(bank, "bank", x, "x")
    if idx.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"idx must be int32 or int64, got {idx.dtype}; use idx.long()")
    if weights.dtype != x.dtype:
        raise ValueError(
            f"weights dtype {weights.dtype} must match x dtype {x.dtype}; use weights.to(x.dtype)"
        )
    if idx.shape[1] != weights.shape[1]:
        raise ValueError(
            f"idx and weights must have the same K, got idx shape {tuple(idx.shape)} and weights "
            f"shape {tuple(weights.shape)}"
        )
    if not v.is_compiling():
        lo, hi = int(idx.min()), int(idx.max())
        if lo < 0 or hi >= bank.shape[0]:
            raise ValueError(
                f"idx values must lie in [0, {bank.shape[0] - 1}] (bank has {bank.shape[0]} "
                f"filters), got range [{lo}, {hi}]; clamp or remap idx"
            )
    v.require_finite(weights, "weights")
    v.require_finite(bank, "bank")


def nu_conv(x: torch.Tensor, bank: torch.Tensor, idx: torch.Tensor, weights: torch.Tensor, *,
            mode: str = "gather", padding: str = "zeros") -> torch.Tensor:
    r"""Convolve ``x`` with a filter that changes from pixel to pixel, drawn from a bank.

    The local filter at pixel p is :math:`h_p = \sum_k w_k(p)\, \mathrm{bank}[\mathrm{idx}_k(p)]`
    (paper 004 eq. 17 with K = 4 motion-bank neighbours). With q over the centred support:

    - ``mode="gather"`` (the filter belongs to the output pixel, e.g. local inverse filters):
      :math:`y(p) = \sum_q h_p(q)\, x(p - q)`;
    - ``mode="scatter"`` (the filter belongs to the source pixel, i.e. a spatially varying PSF
      blurring the scene): :math:`y(p) = \sum_q h_{p-q}(q)\, x(p - q)`.

    With one filter everywhere both equal ``scipy.signal.convolve(x, h, "same")`` (centre at
    index ``k // 2``). ``padding`` says how x is read outside the image; in scatter mode a source
    position outside the image carries the value *and the filter* of the image pixel that padding
    reads there (the reflected, clamped or wrapped one). With ``padding="zeros"`` scatter is
    exactly the adjoint of gather with flipped filters, and vice versa. Weights that are exactly
    zero are skipped, so their filters need not be meaningful.

    Args:
        x: (B, C, H, W) float32/float64.
        bank: (F, kh, kw), odd kh and kw, x's dtype and device.
        idx: (B or 1, K, H, W) int32/int64 filter indices in ``[0, F)``, any K >= 1.
        weights: (B or 1, K, H, W), x's dtype, finite.
        mode: ``"gather"`` or ``"scatter"``.
        padding: ``"zeros"``, ``"reflect"`` (mirror without repeating the edge, periodic beyond
            the image size), ``"replicate"`` or ``"circular"``.

    Returns:
        (B, C, H, W) tensor, x's dtype. Differentiable w.r.t. ``x``, ``bank`` and ``weights``
        (``idx`` is not differentiable).

    Raises:
        ValueError: wrong shapes or dtypes, even filter sizes, idx out of range, NaN/Inf in bank
            or weights, mismatched devices, unknown mode or padding.

    Notes:
        The CPU kernel walks the field one of three ways, chosen per call by a cost model from the
        field's statistics (``torch.ops.deblur_ops.nu_conv_path`` says which): ``"runs"`` of pixels
        that share a filter, visiting only non-zero taps (smooth motion fields, PSF grids with
        small or sparse PSFs); ``"pixels"``, forming each pixel's dense local filter once (indices
        that change from pixel to pixel, as kernel-prediction networks produce, and grids of large
        dense PSFs); ``"filters"``, one ``conv2d`` per distinct filter. All three give the same
        result to rounding; the environment variable ``DEBLUR_NU_CONV_PATH`` forces one (for tests
        and ``deblur bench``).

    Examples:
        >>> import torch, deblur_ops
        >>> x = torch.zeros(1, 1, 5, 5); x[0, 0, 2, 2] = 1
        >>> bank = torch.zeros(1, 3, 3); bank[0, 1] = 1 / 3  # one horizontal box blur
        >>> idx = torch.zeros(1, 1, 5, 5, dtype=torch.long)
        >>> w = torch.ones(1, 1, 5, 5)
        >>> deblur_ops.nu_conv(x, bank, idx, w)[0, 0, 1:4, 1:4]
        tensor([[0.0000, 0.0000, 0.0000],
                [0.3333, 0.3333, 0.3333],
                [0.0000, 0.0000, 0.0000]])

    References:
        T. Eboli, J. Sun, J. Ponce. Neural Embedding of an Iterative Deconvolution Algorithm for Motion Blur
        Estimation and Removal. Preprint hal-01857177, 2018 (paper 004 in docs/references.md).
    """
    validate_nu_conv(x, bank, idx, weights, mode, padding)
    return nu_conv_unchecked(x, bank, idx, weights, mode, padding)


def nu_conv_unchecked(x: torch.Tensor, bank: torch.Tensor, idx: torch.Tensor, weights: torch.Tensor,
                      mode: str, padding: str) -> torch.Tensor:
    """:func:`nu_conv` without its input checks, for solvers that call it hundreds of times with a
    bank, idx and weights they validated once (the checks scan every tensor for NaN and range)."""
    if _extension.has_kernel("nu_conv", x.device):
        return torch.ops.deblur_ops.nu_conv(x, bank, idx, weights, mode, padding)
    return ref.nu_conv_core(x, bank, idx, weights, mode, padding)


if _extension.LOADED:

    def _check_shapes(x, bank, idx, weights):
        torch._check(x.dim() == 4, lambda: f"x must be (B, C, H, W), got {x.dim()}-D")
        torch._check(bank.dim() == 3, lambda: "bank must be (F, kh, kw)")
        torch._check(bank.shape[1] % 2 == 1 and bank.shape[2] % 2 == 1,
                     lambda: "bank filter sizes must be odd")
        torch._check(idx.dtype in (torch.int32, torch.int64), lambda: "idx must be int32 or int64")
        # idx and weights broadcast over the batch independently: each has batch 1 or B.
        for t, name in ((idx, "idx"), (weights, "weights")):
            torch._check(t.dim() == 4 and t.shape[2:] == x.shape[2:]
                         and (t.shape[0] == 1 or t.shape[0] == x.shape[0]),
                         lambda name=name: f"{name} must be (B or 1, K, H, W)")
        torch._check(idx.shape[1] == weights.shape[1], lambda: "idx and weights must have the same K")

    @torch.library.register_fake(_OP)
    def _nu_conv_fake(x, bank, idx, weights, mode, padding):
        _check_shapes(x, bank, idx, weights)
        return x.new_empty(x.shape)

    @torch.library.register_fake("deblur_ops::nu_conv_backward")
    def _nu_conv_backward_fake(grad, x, bank, idx, weights, mode, padding, output_mask):
        _check_shapes(x, bank, idx, weights)
        torch._check(grad.shape == x.shape, lambda: "grad must have the shape of x")
        return x.new_empty(x.shape), bank.new_empty(bank.shape), weights.new_empty(weights.shape)

    def _setup_context(ctx, inputs, output):
        x, bank, idx, weights, mode, padding = inputs
        ctx.save_for_backward(x, bank, idx, weights)
        ctx.options = (mode, padding)

    def _backward(ctx, grad):
        x, bank, idx, weights = ctx.saved_tensors
        mask = [ctx.needs_input_grad[0], ctx.needs_input_grad[1], ctx.needs_input_grad[3]]
        grad_x, grad_bank, grad_w = torch.ops.deblur_ops.nu_conv_backward(
            grad.contiguous(), x, bank, idx, weights, *ctx.options, mask
        )
        return (
            grad_x if mask[0] else None,
            grad_bank if mask[1] else None,
            None,
            grad_w if mask[2] else None,
            None,
            None,
        )

    torch.library.register_autograd(_OP, _backward, setup_context=_setup_context)

    def _setup_backward_context(ctx, inputs, output):
        grad, x, bank, idx, weights, mode, padding, _ = inputs
        ctx.save_for_backward(grad, x, bank, idx, weights)
        ctx.options = (mode, padding)

    def _backward_backward(ctx, gg_x, gg_bank, gg_w):
        # T(g, x, bank, w) = <g, nu_conv(x, bank, idx, w)> is linear in each of g, x, bank and w,
        # and the backward op returns its partial derivatives in x, bank and w. Contracting them
        # with (gg_x, gg_bank, gg_w) gives S = T(g, gg_x, bank, w) + T(g, x, gg_bank, w)
        # + T(g, x, bank, gg_w), whose derivatives are again nu_conv and nu_conv_backward calls.
        grad, x, bank, idx, weights = ctx.saved_tensors
        mode, padding = ctx.options
        need_grad, need_x, need_bank, need_w = (ctx.needs_input_grad[i] for i in (0, 1, 2, 4))
        d_grad = d_x = d_bank = d_w = None
        if need_grad:
            d_grad = (torch.ops.deblur_ops.nu_conv(gg_x, bank, idx, weights, mode, padding)
                      + torch.ops.deblur_ops.nu_conv(x, gg_bank, idx, weights, mode, padding)
                      + torch.ops.deblur_ops.nu_conv(x, bank, idx, gg_w, mode, padding))
        grad = grad.contiguous()
        if need_bank or need_w:  # derivatives of T(g, gg_x, bank, w)
            _, d_bank, d_w = torch.ops.deblur_ops.nu_conv_backward(
                grad, gg_x, bank, idx, weights, mode, padding, [False, need_bank, need_w])
        if need_x or need_w:  # of T(g, x, gg_bank, w)
            d_x, _, d_w2 = torch.ops.deblur_ops.nu_conv_backward(
                grad, x, gg_bank, idx, weights, mode, padding, [need_x, False, need_w])
            d_w = d_w2 if d_w is None else d_w + d_w2
        if need_x or need_bank:  # of T(g, x, bank, gg_w)
            d_x3, d_bank3, _ = torch.ops.deblur_ops.nu_conv_backward(
                grad, x, bank, idx, gg_w, mode, padding, [need_x, need_bank, False])
            d_x = d_x3 if d_x is None else d_x + d_x3
            d_bank = d_bank3 if d_bank is None else d_bank + d_bank3
        return (
            d_grad,
            d_x if need_x else None,
            d_bank if need_bank else None,
            None,
            d_w if need_w else None,
            None,
            None,
            None,
        )

    torch.library.register_autograd("deblur_ops::nu_conv_backward", _backward_backward,
                                    setup_context=_setup_backward_context)
