"""ADMM with iterative residual compensation (IRC): paper 004 Algorithm 2.1, untrained.

:func:`irc_admm` is the stage structure (z update, IRC x update, beta update) with the filters and
the shrinkage passed in, so that a learned IRC-Net can run the same loop with trained inverse filters
and learnable shrinkage; :func:`irc` runs it with the analytic inverse filters of eq. 14.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from .. import psf as psf_lib
from ..ops.nu_conv import nu_conv
from ._common import check_callback, check_positive, noise_sigma_per_item, per_item
from ._nonuniform import BlurOperator
from .registry import register

# lambda = WEIGHT_PER_ROOT_NOISE * sqrt(sigma) as for admm_tv; rho is fixed (not tied to lambda)
# because the inverse filters depend on it (eq. 14) and are computed once per (bank, rho) and cached.
# Both tuned once on "camera" and "coins" 128x128 under camera-motion fields at sigma = 1 % (a
# grid over rho 0.05-0.8 and lambda 0.004-0.01; the fewer stages, the smaller the best lambda).
WEIGHT_PER_ROOT_NOISE = 0.04
DEFAULT_RHO = 0.1


def irc_admm(observed: torch.Tensor, blur: Callable, prior: Callable, inverse: Callable,
             shrink: Callable, *, rho: float, stages: int, irc_iterations: int, eta: float = 1.0,
             start: torch.Tensor | None = None, callback: Callable | None = None) -> torch.Tensor:
    r"""ADMM for paper 004 eq. (1) with the x update solved by IRC (Algorithm 2.1).

    With k_0 = k the blur and k_i = sqrt(rho) g_i the prior filters, each stage does

    - z update (eq. 4): z_i = shrink(g_i * x + beta_i, stage);
    - x update (eq. 5 by Algorithm 2.1), ``irc_iterations`` times: residuals r_0 = y - k * x and
      r_i = sqrt(rho) (z_i - beta_i - g_i * x), then x += sum_i d_i * r_i;
    - beta update (eq. 15): beta_i += eta (g_i * x - z_i).

    The start is x_0 = d_0 * y (or d_0 * ``start``). Nothing here knows how the filters are applied, so uniform and
    non-uniform blur (NU-Conv) and learned filters and shrinkage all reuse this loop.

    Args:
        observed: y, (B, C, H, W).
        blur: ``blur(x) -> k * x`` of x's shape.
        prior: ``prior(x) -> [g_1 * x, ..., g_n * x]``.
        inverse: ``inverse([r_0, ..., r_n]) -> sum_i d_i * r_i``.
        shrink: ``shrink(v, stage) -> z``, applied to each of the n prior responses.
        rho: the ADMM penalty the inverse filters were built for.
        stages: ADMM iterations (>= 1).
        irc_iterations: IRC iterations per stage (>= 1).
        eta: multiplier update rate of eq. 15.
        start: what d_0 is applied to for x_0, default y (e.g. a version of y extended beyond
            the observed pixels).
        callback: ``callback(stage, x)`` after each stage.

    Returns:
        x of y's shape.

    Example:
        >>> import torch
        >>> y = torch.rand(1, 1, 8, 8)
        >>> same = lambda x: x
        >>> x = irc_admm(y, same, lambda x: [], lambda r: r[0], None, rho=1.0, stages=2, irc_iterations=1)
        >>> bool(torch.equal(x, y))
        True
    """
    root = math.sqrt(rho)
    start = observed if start is None else start
    x = inverse([start] + [torch.zeros_like(start) for _ in prior(start)])
    betas = [torch.zeros_like(g) for g in prior(x)]
    for stage in range(stages):
        zs = [shrink(g + b, stage) for g, b in zip(prior(x), betas)]
        for _ in range(irc_iterations):
            residuals = [observed - blur(x)]
            residuals += [root * (z - b - g) for z, b, g in zip(zs, betas, prior(x))]
            x = x + inverse(residuals)
        betas = [b + eta * (g - z) for b, g, z in zip(betas, prior(x), zs)]
        if callback is not None:
            callback(stage, x)
    return x


def _conv_same(x: torch.Tensor, filters: torch.Tensor) -> list[torch.Tensor]:
    """[g_i * x] for uniform (n, ph, pw) filters, convolution convention, zero padding."""
    b, c, h, w = x.shape
    weight = filters.flip(-2, -1)[:, None].to(x.dtype)
    out = F.conv2d(x.reshape(b * c, 1, h, w), weight, padding=(filters.shape[-2] // 2, filters.shape[-1] // 2))
    return list(out.reshape(b, c, -1, h, w).unbind(2))


@register("irc", "ADMM + iterative residual compensation with analytic inverse filters (paper 004 Alg. 2.1)",
          spatially_varying=True)
def irc(image: torch.Tensor, psf, *, weight=None, noise_sigma=None, rho: float = DEFAULT_RHO,
        stages: int = 10, irc_iterations: int = 1, filter_size: int | None = None,
        callback=None) -> torch.Tensor:
    r"""Untrained IRC solver of paper 004 for uniform and spatially varying blur.

    Solves eq. (16), min_x 1/2 ||k * x - y||^2 + lambda sum_i ||g_i * x||_1 with g_i the
    horizontal and vertical forward differences, by :func:`irc_admm`: soft-thresholding at
    lambda / rho for the z update (eq. 4, l = 1), and the local inverse filters d_i of eq. 14 (from
    :func:`deblur_ops.psf.inverse_filters`, one per bank filter and branch) applied per pixel by
    :func:`deblur_ops.nu_conv` in ``"gather"`` mode with the blur's interpolation weights
    (eq. 17). The blur itself is NU-Conv in ``"scatter"`` mode; its residual counts on the
    observed pixels only, the unknown image extending beyond them by the PSF size, so that the
    borders do not ring.

    Args:
        image: (B, C, H, W) float tensor.
        psf: uniform PSF (kh, kw) (or one per batch item), ``psf.MotionField`` or ``psf.PSFGrid``.
        weight: lambda (number or per batch item); default ``0.04 * sqrt(noise_sigma)``.
        noise_sigma: noise level for the default weight; estimated (Immerkaer) when None.
        rho: ADMM penalty (> 0), also the prior weight of the inverse filters.
        stages: ADMM stages (>= 1).
        irc_iterations: IRC iterations per stage (>= 1).
        filter_size: odd side of the inverse filters; default twice the blur filter size plus one.
        callback: ``callback(stage, estimate)`` after each stage, estimate cropped to the image.

    Returns:
        Tensor of the image's shape and dtype.

    Raises:
        ValueError: bad shapes, NaN/Inf, a PSF larger than the image, bad parameters.

    Example:
        >>> import torch
        >>> from deblur_ops.psf import linear_motion_kernel
        >>> irc(torch.rand(1, 1, 48, 48), linear_motion_kernel(7, 45), weight=0.005, stages=2).shape
        torch.Size([1, 1, 48, 48])
    """
    rho = check_positive(rho, "rho")
    stages = check_positive(stages, "stages", integer=True)
    irc_iterations = check_positive(irc_iterations, "irc_iterations", integer=True)
    check_callback(callback)
    op = BlurOperator(image, psf)
    ksize = max(op.bank.shape[-2:])
    size = 2 * ksize + 1 if filter_size is None else filter_size
    if isinstance(size, bool) or int(size) != size or size < 1 or size % 2 == 0:
        raise ValueError(f"filter_size must be a positive odd integer (about 2-3x the blur length), "
                         f"got {filter_size!r}")
    if weight is None:
        lam = per_item(WEIGHT_PER_ROOT_NOISE * noise_sigma_per_item(image, noise_sigma).sqrt(), "weight", image)
    else:
        lam = per_item(weight, "weight", image)
    if bool((lam <= 0).any()):
        raise ValueError(f"weight must be > 0 (the TV prior needs a positive weight), got {weight!r}")

    priors = psf_lib._GRADIENT_PRIORS
    filters = psf_lib.inverse_filters(op.bank, int(size), priors, rho, branches=True)  # (F, 1 + n, s, s)
    count, branches = filters.shape[:2]
    bank = filters.transpose(0, 1).reshape(count * branches, *filters.shape[2:]).contiguous()
    batch = op.data.shape[0]
    idx = op.idx.expand(batch, *op.idx.shape[1:])
    idx = torch.cat([idx + i * count for i in range(branches)]).contiguous()
    weights = op.weights.expand(batch, *op.weights.shape[1:]).repeat(branches, 1, 1, 1).contiguous()

    def inverse(residuals):
        # All branches in one NU-Conv call: branch i is batch block i, reading filters i * F + idx.
        stacked = torch.cat(residuals).contiguous()
        out = nu_conv(stacked, bank, idx, weights, mode="gather", padding="zeros")
        return out.reshape(branches, *residuals[0].shape).sum(0)

    threshold = lam / rho

    def shrink(values, stage):
        return torch.sign(values) * (values.abs() - threshold).clamp(min=0)

    crop_callback = None if callback is None else (lambda stage, x: callback(stage, op.crop(x)))
    # The data residual counts on the observed pixels only (see BlurOperator).
    x = irc_admm(op.mask * op.data, lambda x: op.mask * op.blur(x), lambda x: _conv_same(x, priors),
                 inverse, shrink, rho=rho, stages=stages, irc_iterations=irc_iterations,
                 start=op.data, callback=crop_callback)
    return op.crop(x)
