"""Learnable piecewise-linear shrinkage (paper 004 §3.2, after ADMM-Net)."""
from __future__ import annotations

import math

import torch
from torch import nn

from .. import _extension
from .. import validation as v
from .. import reference as ref

_OP = "deblur_ops::learnable_shrink"


def validate_shrink(x, values, value_range) -> tuple[float, float]:
    v.require_tensor(x, "x")
    v.require_tensor(values, "values")
    v.require_float(x, "x")
    if x.dim() < 2:
        raise ValueError(f"x must have shape (B, C, ...), got shape {tuple(x.shape)}")
    if values.dim() != 2 or values.shape[0] != x.shape[1] or values.shape[1] < 2:
        raise ValueError(
            f"values must have shape (C, n_knots) = ({x.shape[1]}, n >= 2) for x of shape "
            f"{tuple(x.shape)}, got shape {tuple(values.shape)}"
        )
    if values.dtype != x.dtype:
        raise ValueError(f"values dtype {values.dtype} must match x dtype {x.dtype}; use values.to(x.dtype)")
    v.require_same_device(values, "values", x, "x")
    v.require_finite(values, "values")
    v.require_finite(x, "x")
    xmin, xmax = v.value_range_pair(value_range)
    require_range_representable(xmin, xmax, values.shape[1], x.dtype)
    return xmin, xmax


def require_range_representable(xmin: float, xmax: float, n_knots: int, dtype: torch.dtype) -> None:
    """The kernels compute x - xmin and the knot density (n - 1) / (xmax - xmin) in x's dtype:
    a range that overflows or collapses there would give Inf/NaN (e.g. (-1e38, 3e38) in float32).
    Skipped while torch.compile traces (the rounding test is a tensor op); the kernels check it too."""
    if v.is_compiling():
        return
    info = torch.finfo(dtype)
    ok = max(abs(xmin), abs(xmax)) <= info.max
    if ok:
        lo, hi = torch.tensor([xmin, xmax], dtype=dtype)
        density = (n_knots - 1) / (xmax - xmin)
        ok = bool(lo < hi) and math.isfinite(float(hi - lo)) and density <= info.max
        ok = ok and float(torch.tensor(density, dtype=dtype)) > 0
    if not ok:
        raise ValueError(
            f"value_range ({xmin}, {xmax}) with {n_knots} knots is not representable in {dtype}: "
            f"xmin, xmax, the width xmax - xmin and the knot density (n_knots - 1) / width must be "
            f"finite and non-zero in x's dtype; rescale x and the range, or use float64"
        )


def learnable_shrink(x: torch.Tensor, values: torch.Tensor, value_range) -> torch.Tensor:
    r"""Apply a per-channel piecewise-linear function given by its values at uniform knots.

    Knots lie at ``linspace(xmin, xmax, n_knots)``; between knots the function interpolates
    ``values[c]`` linearly; outside ``[xmin, xmax]`` it continues with slope 1 from the end knot:
    :math:`f(x) = v_{c,n-1} + x - x_{max}` above and :math:`v_{c,0} + x - x_{min}` below.

    Args:
        x: (B, C, ...) float32/float64.
        values: (C, n_knots), n_knots >= 2, x's dtype and device.
        value_range: (xmin, xmax), finite, xmin < xmax, with xmin, xmax, the width and the knot
            density (n_knots - 1) / width finite and non-zero in x's dtype.

    Returns:
        Tensor of x's shape. Differentiable w.r.t. ``x`` and ``values`` (the values gradient is a
        histogram-style reduction over the pixels of each channel).

    Raises:
        ValueError: wrong shapes, dtypes or devices, NaN/Inf, or an empty, inverted or
            unrepresentable range. (The op itself, ``torch.ops.deblur_ops.learnable_shrink``, which
            skips these checks, maps a NaN x to NaN.)

    Examples:
        >>> import torch, deblur_ops
        >>> values = torch.tensor([[-1.0, 0.0, 1.0]])  # identity on [-1, 1]
        >>> deblur_ops.learnable_shrink(torch.tensor([[[0.25, 3.0]]]), values, (-1, 1))
        tensor([[[0.2500, 3.0000]]])

    References:
        - T. Eboli, J. Sun, J. Ponce. Neural Embedding of an Iterative Deconvolution Algorithm for Motion Blur
          Estimation and Removal. Preprint hal-01857177, 2018 (paper 004 in docs/references.md).
        - Y. Yang, J. Sun, H. Li, Z. Xu. Deep ADMM-Net for compressive sensing MRI. NIPS 2016.
    """
    xmin, xmax = validate_shrink(x, values, value_range)
    if _extension.has_kernel("learnable_shrink", x.device):
        return torch.ops.deblur_ops.learnable_shrink(x, values, xmin, xmax)
    return ref.learnable_shrink_core(x, values, xmin, xmax)


def soft_threshold_values(knots: torch.Tensor, threshold: float) -> torch.Tensor:
    """Soft-thresholding sign(t) max(|t| - threshold, 0) sampled at ``knots``."""
    return torch.sign(knots) * torch.clamp(knots.abs() - threshold, min=0)


class LearnableShrink(nn.Module):
    """Per-channel learnable shrinkage, initialised to soft-thresholding at ``threshold``.

    Args:
        channels: number of channels C of the input (B, C, ...).
        n_knots: number of uniformly spaced knots (paper 004 uses many; default 101).
        value_range: (xmin, xmax) covered by the knots.
        threshold: soft-threshold of the initial values.

    Examples:
        >>> import torch, deblur_ops
        >>> shrink = deblur_ops.LearnableShrink(2, threshold=0.1)
        >>> shrink(torch.tensor([[[0.05], [0.5]]])).flatten()
        tensor([0.0000, 0.4000], grad_fn=<ViewBackward0>)

    References:
        - T. Eboli, J. Sun, J. Ponce. Neural Embedding of an Iterative Deconvolution Algorithm for Motion Blur
          Estimation and Removal. Preprint hal-01857177, 2018 (paper 004 in docs/references.md).
        - Y. Yang, J. Sun, H. Li, Z. Xu. Deep ADMM-Net for compressive sensing MRI. NIPS 2016.
    """

    def __init__(self, channels: int, n_knots: int = 101, value_range=(-1.0, 1.0),
                 threshold: float = 0.1):
        super().__init__()
        if int(channels) < 1:
            raise ValueError(f"channels must be >= 1, got {channels}")
        if int(n_knots) < 2:
            raise ValueError(f"n_knots must be >= 2, got {n_knots}")
        if threshold < 0:
            raise ValueError(f"threshold must be >= 0, got {threshold}")
        self.value_range = v.value_range_pair(value_range)
        knots = torch.linspace(*self.value_range, int(n_knots), dtype=torch.float64)
        init = soft_threshold_values(knots, threshold).to(torch.get_default_dtype())
        self.values = nn.Parameter(init.expand(int(channels), -1).clone())

    @property
    def knots(self) -> torch.Tensor:
        return torch.linspace(*self.value_range, self.values.shape[1], dtype=self.values.dtype,
                              device=self.values.device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return learnable_shrink(x, self.values, self.value_range)

    def extra_repr(self) -> str:
        return f"channels={self.values.shape[0]}, n_knots={self.values.shape[1]}, value_range={self.value_range}"


if _extension.LOADED:

    @torch.library.register_fake(_OP)
    def _learnable_shrink_fake(x, values, xmin, xmax):
        torch._check(x.dim() >= 2, lambda: "x must have shape (B, C, ...)")
        torch._check(values.dim() == 2 and values.shape[0] == x.shape[1],
                     lambda: "values must have shape (C, n_knots)")
        return x.new_empty(x.shape)

    @torch.library.register_fake("deblur_ops::learnable_shrink_backward")
    def _learnable_shrink_backward_fake(grad, x, values, xmin, xmax):
        torch._check(grad.shape == x.shape, lambda: "grad must have the shape of x")
        return x.new_empty(x.shape), values.new_empty(values.shape)

    def _setup_context(ctx, inputs, output):
        x, values, xmin, xmax = inputs
        ctx.save_for_backward(x, values)
        ctx.value_range = (xmin, xmax)

    def _backward(ctx, grad):
        x, values = ctx.saved_tensors
        grad_x, grad_values = torch.ops.deblur_ops.learnable_shrink_backward(
            grad.contiguous(), x, values, *ctx.value_range
        )
        return (
            grad_x if ctx.needs_input_grad[0] else None,
            grad_values if ctx.needs_input_grad[1] else None,
            None,
            None,
        )

    torch.library.register_autograd(_OP, _backward, setup_context=_setup_context)

    def _setup_backward_context(ctx, inputs, output):
        grad, x, values, xmin, xmax = inputs
        ctx.save_for_backward(grad, x, values)
        ctx.value_range = (xmin, xmax)

    def _backward_backward(ctx, gg_x, gg_values):
        # The backward op returns grad_x = g f'(x) and grad_values = g df/dvalues. Contracted with
        # (gg_x, gg_values): S = sum gg_x g f'(x) + sum gg_values g df/dvalues. Inside the range
        # f'(x) = (v[k+1] - v[k]) / step is linear in the values and constant in x, while
        # df/dvalues = (1 - frac, frac) at knots (k, k+1) depends on x through frac (slope 1/step);
        # outside, f' = 1 and df/dvalues = 1 at the end knot, constant in both.
        grad, x, values = ctx.saved_tensors
        xmin, xmax = ctx.value_range
        ops = torch.ops.deblur_ops
        need_grad, need_x, need_values = ctx.needs_input_grad[:3]
        d_grad = d_x = d_values = None
        if need_grad:
            # dS/dg = gg_x f'(x) + the interpolation of gg_values at x; the values enter f linearly
            # but for the values-free x - x_end outside, which a zero table's shrink removes.
            d_grad = (ops.learnable_shrink_backward(gg_x.contiguous(), x, values, xmin, xmax)[0]
                      + ops.learnable_shrink(x, gg_values, xmin, xmax)
                      - ops.learnable_shrink(x, torch.zeros_like(gg_values), xmin, xmax))
        inside = (x >= xmin) & (x <= xmax)
        if need_x:
            # dS/dx = g (gg_values[k+1] - gg_values[k]) / step inside, 0 outside (a.e.).
            slope = ops.learnable_shrink_backward(grad.contiguous(), x, gg_values, xmin, xmax)[0]
            d_x = torch.where(inside, slope, torch.zeros_like(slope))
        if need_values:
            # dS/dv: g gg_x / step added to knot k + 1 and subtracted from knot k, inside only.
            d_values = _knot_difference_histogram(grad * gg_x, x, values.shape[1], xmin, xmax, inside)
        return d_grad, d_x, d_values, None, None

    def _knot_difference_histogram(weight, x, n, xmin, xmax, inside):
        """(C, n) table: sum over the pixels of channel c of weight / step at k + 1 and minus it at k,
        k the segment of x (x inside [xmin, xmax]); the segment is found as the kernels find it."""
        inv_step = (n - 1) / (xmax - xmin)
        seg = ((x - xmin) * inv_step).floor().clamp(0, n - 2)
        seg = torch.where(inside, seg, torch.zeros_like(seg)).long()
        w = torch.where(inside, weight * inv_step, torch.zeros_like(weight))
        channels = x.shape[1]
        shape = (1, channels) + (1,) * (x.dim() - 2)
        base = (torch.arange(channels, device=x.device).reshape(shape) * n + seg).reshape(-1)
        w = w.reshape(-1)
        out = w.new_zeros(channels * n)
        out = out.index_add(0, base + 1, w).index_add(0, base, -w)
        return out.reshape(channels, n)

    torch.library.register_autograd("deblur_ops::learnable_shrink_backward", _backward_backward,
                                    setup_context=_setup_backward_context)
