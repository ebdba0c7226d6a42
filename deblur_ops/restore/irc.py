"""ADMM with iterative residual compensation (IRC): paper 004 Algorithm 2.1, untrained.

:func:`irc_admm` is the stage structure (z update, IRC x update, beta update) with the filters and
the shrinkage passed in, so that a learned IRC-Net can run the same loop with trained inverse filters
and learnable shrinkage; :func:`irc` runs it with the analytic inverse filters of eq. 14.
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Callable

import torch
import torch.nn.functional as F

from .. import psf as psf_lib
from ..boundary import next_fast_len
from ..data.noise import noise_sigma_per_item
from ..ops.nu_conv import nu_conv
from ..validation import check_callback, check_positive, per_item
from ._nonuniform import BlurOperator
from .registry import register

# lambda = WEIGHT_PER_ROOT_NOISE * sqrt(sigma) as for admm_tv; rho is fixed (not tied to lambda)
# because the inverse filters depend on it (eq. 14) and are computed once per (bank, rho) and cached.
# Both tuned once on "camera" and "coins" 128x128 under camera-motion fields at sigma = 1 % (a
# grid over rho 0.05-0.8 and lambda 0.004-0.01; the fewer stages, the smaller the best lambda).
WEIGHT_PER_ROOT_NOISE = 0.04
DEFAULT_RHO = 0.1
# The grid x update's defaults were chosen on training images (moon, grass, page, hubble_deep_field,
# chelsea, rocket, coffee, clock, 128x128, under camera-motion fields field:11-14, sigma = 1 %; none
# of the evaluation images or fields): spacing (16-64 px), rho (0.03-0.1), window margin (0, 1/4,
# 1/2 of the blur size) and momentum (0-0.5) by the best mean PSNR, which those images reach after
# 9-11 stages; 12 stages stay within 0.02 dB of it there and within 0.3 dB of nu_cg on camera at
# 96x96 (a development case, tests/test_nonuniform.py), a harder image that needs more stages.
# For a spatially invariant blur (one exact Fourier node) rho 0.1 was better than 0.05 on training
# images (moon, grass, brick, chelsea, coffee, clock, 256x256, five linear motions of 11-27 px):
# 29.69 against 29.35 dB.
GRID_DEFAULTS = {"rho": 0.05, "uniform_rho": 0.1, "stages": 12, "spacing": 32, "momentum": 0.2}
BANK_DEFAULTS = {"rho": DEFAULT_RHO, "stages": 15, "momentum": 0.0}

# The node PSFs may under-estimate the blur a pixel between nodes sees (a neighbouring node's motion
# can have energy where this node's has a spectral zero); Richardson's iteration x += P r diverges
# where P A^T A > 2. Each node's denominator is floored by the largest |K_f|^2 + rho |G|^2 among
# the filters within its reach divided by this factor, which keeps P A^T A below ~1.9 (stable) while
# P stays the node's own inverse wherever that is safe.
PRECONDITIONER_SAFETY = 1.9
# And no node amplifies any frequency more than this. Near a spectral zero of its own PSF a node's
# inverse 1 / (|K_n|^2 + rho |G|^2) exceeds 100, and there the blend of node inverses is far from
# the inverse of the blur the pixels really see: on a 96 px patch under 17-23 px motion, P H x - x
# had an rms of 0.75 for the sharp image x, so x started far off, and under 30-35 px motion
# fields the x updates diverged on 9 of 48 training patches. Capped at 5, none diverged and the
# mean PSNR of those patches rose from 31.4 to 33.3 dB (the eq. 17 inverse: 32.9 dB), at no cost
# on the field:11-14 training images (32.04 -> 32.05 dB). Caps of 3.3 to 10 tried; a smooth taper
# on the windows' edges instead did not help.
PRECONDITIONER_MAX_GAIN = 5.0
DEFAULT_GRID_SPACING = GRID_DEFAULTS["spacing"]


def irc_admm(observed: torch.Tensor, blur: Callable, prior: Callable, inverse: Callable,
             shrink: Callable, *, rho: float, stages: int, irc_iterations: int, eta=1.0,
             momentum: float = 0.0, start: torch.Tensor | None = None,
             callback: Callable | None = None) -> torch.Tensor:
    r"""ADMM for paper 004 eq. (1) with the x update solved by IRC (Algorithm 2.1).

    With k_0 = k the blur and k_i = sqrt(rho) g_i the prior filters, each stage does

    - z update (eq. 4): [z_1, ..., z_n] = shrink([g_1 * x + beta_1, ...], stage);
    - x update (eq. 5 by Algorithm 2.1), ``irc_iterations`` times: residuals r_0 = y - k * x and
      r_i = sqrt(rho) (z_i - beta_i - g_i * x), then x += sum_i d_i * r_i;
    - beta update (eq. 15): beta_i += eta_stage (g_i * x - z_i).

    With ``momentum`` mu > 0 each x step adds mu times the previous one (heavy ball, carried
    across stages), which speeds up the inexact x updates; mu = 0 is Algorithm 2.1 as printed.

    The start is x_0 = d_0 * y (or d_0 * ``start``). Nothing here knows how the filters are applied, so uniform and
    non-uniform blur (NU-Conv) and learned filters and shrinkage all reuse this loop.

    Args:
        observed: y, (B, C, H, W).
        blur: ``blur(x) -> k * x`` of x's shape.
        prior: ``prior(x) -> [g_1 * x, ..., g_n * x]``.
        inverse: ``inverse([r_0, ..., r_n]) -> sum_i d_i * r_i``.
        shrink: ``shrink([v_1, ..., v_n], stage) -> [z_1, ..., z_n]`` on the n prior responses.
        rho: the ADMM penalty the inverse filters were built for.
        stages: ADMM iterations (>= 1).
        irc_iterations: IRC iterations per stage (>= 1).
        eta: multiplier update rate of eq. 15, one number or one per stage (e.g. learned rates).
        momentum: heavy-ball factor of the x steps in [0, 1), one number or one per stage.
        start: what d_0 is applied to for x_0, default y (e.g. a version of y extended beyond
            the observed pixels).
        callback: ``callback(stage, x)`` after each stage.

    Returns:
        x of y's shape.

    Example:
        >>> import torch
        >>> y = torch.rand(1, 1, 8, 8)
        >>> same = lambda x: x
        >>> x = irc_admm(y, same, lambda x: [], lambda r: r[0], lambda v, s: v, rho=1.0, stages=2, irc_iterations=1)
        >>> bool(torch.equal(x, y))
        True

    References:
        T. Eboli, J. Sun, J. Ponce. Neural Embedding of an Iterative Deconvolution Algorithm for Motion Blur
        Estimation and Removal. Preprint hal-01857177, 2018 (paper 004 in docs/references.md).
    """
    root = math.sqrt(rho)
    start = observed if start is None else start
    x = inverse([start] + [torch.zeros_like(start) for _ in prior(start)])
    responses = prior(x)  # g_i * x, recomputed only when x changes
    betas = [torch.zeros_like(g) for g in responses]
    rates = [eta] * stages if isinstance(eta, (int, float)) else list(eta)
    if len(rates) != stages:
        raise ValueError(f"eta must be one number or one rate per stage ({stages}), got {len(rates)}")
    momenta = [momentum] * stages if isinstance(momentum, (int, float)) else list(momentum)
    if len(momenta) != stages:
        raise ValueError(f"momentum must be one number or one per stage ({stages}), got {len(momenta)}")
    last = None  # the previous x step, for the momentum
    for stage in range(stages):
        zs = shrink([g + b for g, b in zip(responses, betas)], stage) if betas else []
        for _ in range(irc_iterations):
            residuals = [observed - blur(x)]
            residuals += [root * (z - b - g) for z, b, g in zip(zs, betas, responses)]
            step = inverse(residuals)
            if last is not None and (isinstance(momenta[stage], torch.Tensor) or momenta[stage]):
                step = step + momenta[stage] * last
            x, last = x + step, step
            responses = prior(x)
        betas = [b + rates[stage] * (g - z) for b, g, z in zip(betas, responses, zs)]
        if callback is not None:
            callback(stage, x)
    return x


# Measured on the 2-core CPU (one thread): the direct NU-Conv gather does about 2e9 filter taps per
# second with dense 71 x 71 filters on a smooth camera-motion field (7e9 when long runs of pixels
# share their filters); an FFT convolution about 5e8 (pixels x log2 pixels) per second.
_DIRECT_TAPS_PER_S = 2e9
_FFT_UNITS_PER_S = 5e8
INVERSE_METHODS = ("auto", "nu_conv", "fft")
# How irc inverts in its x update: "grid" (exact adjoint + node-wise Fourier preconditioner) or
# "bank" (paper 004 eq. 17: the bank's inverse filters interpolated per pixel).
IRC_INVERSES = ("grid", "bank")


def _fft_is_faster(filters: torch.Tensor, idx: torch.Tensor, weights: torch.Tensor) -> bool:
    """Whether :class:`FFTGather` should beat the direct gather for these inputs (cost model above).

    The direct gather costs (pixels x taps x filters per pixel) per branch; the FFT one inverse FFT
    per filter in use (branches are summed before it) plus one forward FFT per branch.
    """
    branches = filters.shape[1]
    s_h, s_w = filters.shape[-2:]
    h, w = idx.shape[-2:]
    nonzero = float((weights != 0).sum(1).float().mean())
    direct = branches * h * w * nonzero * s_h * s_w / _DIRECT_TAPS_PER_S
    used = sum(int((torch.bincount(i[wt != 0], minlength=len(filters)) > 0).sum())
               for i, wt in zip(idx, weights)) / max(len(idx), 1)
    pixels = (h + s_h) * (w + s_w)
    fft = (used + branches) * pixels * math.log2(pixels) / _FFT_UNITS_PER_S
    return fft < direct


def branch_inverse(filters: torch.Tensor, idx: torch.Tensor, weights: torch.Tensor, batch: int,
                   method: str = "auto") -> Callable:
    """``inverse([r_0, ..., r_n]) -> sum_i d_i * r_i`` for :func:`irc_admm`, all branches in one call.

    Args:
        filters: (F, 1 + n, s, s) inverse filters, d_0 then the prior branches (as
            :func:`deblur_ops.psf.inverse_filters` with ``branches=True``); may require grad.
        idx, weights: (B or 1, K, H, W) per-pixel bank indices and weights (may require grad).
        batch: B, the batch size of the residuals.
        method: ``"nu_conv"`` (the direct per-pixel kernel), ``"fft"`` (:class:`FFTGather`, one FFT
            convolution per filter in use) or ``"auto"`` (the faster by a cost model: FFT when few
            large filters are in use, as for a uniform or smooth blur with large inverse filters).
    """
    if method not in INVERSE_METHODS:
        raise ValueError(f"inverse method must be one of {INVERSE_METHODS}, got {method!r}")
    count, branches = filters.shape[:2]
    bank = filters.transpose(0, 1).reshape(count * branches, *filters.shape[2:]).contiguous()
    idx = idx.expand(batch, *idx.shape[1:])
    idx = torch.cat([idx + i * count for i in range(branches)]).contiguous()
    weights = weights.expand(batch, *weights.shape[1:]).repeat(branches, 1, 1, 1).contiguous()
    if method == "auto":
        with torch.no_grad():
            method = "fft" if _fft_is_faster(filters, idx[:batch], weights[:batch]) else "nu_conv"
    if method == "fft":
        return FFTGather(filters, idx[:batch], weights[:batch], batch)

    def inverse(residuals):
        # Branch i is batch block i, reading filters i * F + idx.
        stacked = torch.cat(residuals).contiguous()
        out = nu_conv(stacked, bank, idx, weights, mode="gather", padding="zeros")
        return out.reshape(branches, *residuals[0].shape).sum(0)

    return inverse


def conv_same(x: torch.Tensor, filters: torch.Tensor) -> list[torch.Tensor]:
    """[g_i * x] for uniform (n, ph, pw) filters, convolution convention, zero padding."""
    b, c, h, w = x.shape
    weight = filters.flip(-2, -1)[:, None].to(x.dtype)
    padding = (filters.shape[-2] // 2, filters.shape[-1] // 2)
    if x.device.type == "cpu":
        # im2col + GEMM: oneDNN, conv2d's CPU choice, is slow with one input channel (6 filters on
        # 3 x 405 x 540: 3.4 against 17 ms forward, 7.4 against 59 ms forward + backward)
        out = torch.ops.aten.thnn_conv2d(x.reshape(b * c, 1, h, w), weight, weight.shape[-2:], None, (1, 1), padding)
    else:
        out = F.conv2d(x.reshape(b * c, 1, h, w), weight, padding=padding)
    return list(out.reshape(b, c, -1, h, w).unbind(2))


def tap_conv(filters: torch.Tensor) -> Callable:
    """``x -> conv_same(x, filters)`` for fixed filters with few non-zero taps, as sums of shifted
    slices: for the 2-tap gradient priors several times faster than ``conv2d`` on the CPU, and the
    same numbers (zero padding, convolution convention).

    Example:
        >>> import torch
        >>> x, g = torch.rand(1, 2, 9, 8, dtype=torch.float64), torch.rand(3, 3, 5, dtype=torch.float64)
        >>> all(torch.allclose(a, b) for a, b in zip(tap_conv(g)(x), conv_same(x, g)))
        True
    """
    ph, pw = filters.shape[-2:]
    taps = [[(float(f[a, b]), a - ph // 2, b - pw // 2) for a, b in torch.nonzero(f).tolist()]
            for f in filters.detach().cpu()]

    def apply(x: torch.Tensor) -> list[torch.Tensor]:
        h, w = x.shape[-2:]
        outs = []
        for filter_taps in taps:
            out = torch.zeros_like(x)
            for c, dy, dx in filter_taps:  # out(i, j) += c x(i - dy, j - dx) where that is inside
                out[..., max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)].add_(
                    x[..., max(-dy, 0):h - max(dy, 0), max(-dx, 0):w - max(dx, 0)], alpha=c)
            outs.append(out)
        return outs

    return apply


@register("irc", "ADMM + iterative residual compensation with analytic inverse filters (paper 004 Alg. 2.1)",
          spatially_varying=True)
def irc(image: torch.Tensor, psf, *, weight=None, noise_sigma=None, rho: float | None = None,
        stages: int | None = None, irc_iterations: int = 1, inverse: str = "grid",
        grid_spacing: int = DEFAULT_GRID_SPACING, filter_size: int | None = None,
        momentum: float | None = None, callback=None) -> torch.Tensor:
    r"""Untrained IRC solver of paper 004 for uniform and spatially varying blur.

    Solves eq. (16), min_x 1/2 ||k * x - y||^2 + lambda sum_i ||g_i * x||_1 with g_i the
    horizontal and vertical forward differences, by :func:`irc_admm`: soft-thresholding at
    lambda / rho for the z update (eq. 4, l = 1), and an x update by residual compensation. The
    blur itself is NU-Conv in ``"scatter"`` mode; its residual counts on the observed pixels only,
    the unknown image extending beyond them by the PSF size, so that the borders do not ring.

    Two ways to invert in the x update:

    - ``inverse="grid"`` (default): the inverse filters of eq. 14 factor as d_i = P k_i^T; the
      adjoints k_i^T are applied exactly (NU-Conv ``"gather"``) and only
      P = (K^T K + rho G^T G)^{-1} is approximated, node by node on a grid ``grid_spacing`` px
      apart (:class:`GridPreconditioner`). The fixed point is then the exact x update of eq. 5;
      for a uniform PSF, P is the exact periodic inverse on the extended domain. The x steps
      carry a heavy-ball momentum (0.2), which makes up for the single inexact step per stage.
    - ``inverse="bank"``: the paper's eq. 17, the finite-support inverse filters of every bank
      filter (:func:`deblur_ops.psf.inverse_filters`) interpolated per pixel with the blur's
      weights; the shipped IRC-Net (``irc-net``) starts from it and learns it.

    On the paper 004 Table 1 protocol (8 linear motions x 5 images) ``grid`` scored 26.56 dB
    against 25.31 dB for ``bank``; on the Table 3 camera-motion fields 26.21 dB against 25.94 dB
    in a twentieth of the time, and 0.04 dB below ``nu_cg`` at 13x its speed
    (``benchmarks/results/*_irc_momentum.md``, ``*_irc_gaincap.md``).

    Args:
        image: (B, C, H, W) float tensor.
        psf: uniform PSF (kh, kw) (or one per batch item), ``psf.MotionField`` or ``psf.PSFGrid``.
        weight: lambda (number or per batch item); default ``0.04 * sqrt(noise_sigma)``.
        noise_sigma: noise level for the default weight; estimated (Immerkaer) when None.
        rho: ADMM penalty (> 0), also the prior weight of the inverse filters; default 0.05
            for ``"grid"`` on a spatially varying blur, else 0.1 (:data:`GRID_DEFAULTS`,
            :data:`BANK_DEFAULTS`).
        stages: ADMM stages (>= 1); default 12 for ``"grid"``, 15 for ``"bank"``.
        irc_iterations: IRC iterations per stage (>= 1).
        inverse: ``"grid"`` or ``"bank"`` (see above).
        grid_spacing: pixels between the preconditioner's nodes for ``"grid"`` (>= 8); smaller
            follows faster-varying blur more closely, at more FFTs per stage.
        filter_size: odd side of the ``"bank"`` inverse filters; default twice the blur filter
            size plus one.
        momentum: heavy-ball factor of the x steps in [0, 1) (:func:`irc_admm`); default 0.2
            for ``"grid"``, 0 for ``"bank"`` (the paper's algorithm, which IRC-Net reproduces).
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

    References:
        T. Eboli, J. Sun, J. Ponce. Neural Embedding of an Iterative Deconvolution Algorithm for Motion Blur
        Estimation and Removal. Preprint hal-01857177, 2018 (paper 004 in docs/references.md).
    """
    if inverse not in IRC_INVERSES:
        raise ValueError(f"inverse must be one of {IRC_INVERSES}, got {inverse!r}")
    defaults = GRID_DEFAULTS if inverse == "grid" else BANK_DEFAULTS
    given = {"rho": rho, "stages": stages}  # what the caller chose, for the fallback below
    stages = check_positive(defaults["stages"] if stages is None else stages, "stages", integer=True)
    momentum = defaults["momentum"] if momentum is None else momentum
    if isinstance(momentum, bool) or not isinstance(momentum, (int, float)) or not 0 <= momentum < 1:
        raise ValueError(f"momentum must be a number in [0, 1) (0 turns it off), got {momentum!r}")
    irc_iterations = check_positive(irc_iterations, "irc_iterations", integer=True)
    check_callback(callback)
    if isinstance(grid_spacing, bool) or not isinstance(grid_spacing, int) or grid_spacing < 8:
        raise ValueError(f"grid_spacing must be an integer >= 8 (pixels between preconditioner nodes), "
                         f"got {grid_spacing!r}")
    op = BlurOperator(image, psf)
    if rho is None:
        rho = defaults["uniform_rho" if inverse == "grid" and spatially_invariant(op) else "rho"]
    rho = check_positive(rho, "rho")
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

    priors = psf_lib.GRADIENT_PRIORS
    if inverse == "grid":
        invert = preconditioned_inverse(op, priors, rho, grid_spacing)
    else:
        filters = psf_lib.inverse_filters(op.bank, int(size), priors, rho, branches=True)  # (F, 1 + n, s, s)
        invert = branch_inverse(filters, op.idx, op.weights, op.data.shape[0])
    threshold = lam / rho

    def shrink(values, stage):
        return [torch.sign(v) * (v.abs() - threshold).clamp(min=0) for v in values]

    crop_callback = None if callback is None else (lambda stage, x: callback(stage, op.crop(x)))
    # The data residual counts on the observed pixels only (see BlurOperator).
    x = irc_admm(op.mask * op.data, lambda x: op.mask * op.blur(x), tap_conv(priors), invert, shrink,
                 rho=rho, stages=stages, irc_iterations=irc_iterations, momentum=float(momentum),
                 start=op.data, callback=crop_callback)
    if inverse == "grid" and _diverged(op, x, lam, tap_conv(priors)):
        # The node-wise preconditioner can overshoot where long motions vary fast (measured on
        # 96 px patches under 30-34 px motion fields); the eq. 17 inverse does not.
        warnings.warn("irc: the grid x update diverged on this blur; using inverse='bank' instead "
                      "(slower). Pass inverse='bank' to skip the first attempt.", RuntimeWarning, stacklevel=2)
        return irc(image, psf, weight=weight, noise_sigma=noise_sigma, irc_iterations=irc_iterations, inverse="bank",
                   filter_size=filter_size, callback=callback, **given)
    return op.crop(x)


def _diverged(op: BlurOperator, x: torch.Tensor, lam: torch.Tensor, priors: Callable) -> bool:
    """Whether a restoration is worse, by eq. (16)'s own objective, than the blurred observation.

    The objective 1/2 ||M (A x - y)||^2 + lambda sum_i ||g_i * x||_1 of any working TV
    restoration is below that of y itself (re-blurred and with all its noise); a diverging
    iteration blows it up, or makes it NaN, also where the blur cannot see it (its null space).
    """
    def objective(t):
        fit = 0.5 * (op.mask * (op.blur(t) - op.data)).square().flatten(1).sum(1)
        return fit + sum((lam * g.abs()).flatten(1).sum(1) for g in priors(t))

    with torch.no_grad():
        ours, blurred = objective(x), objective(op.data)
    return bool((~torch.isfinite(ours) | (ours > blurred)).any())


class FFTGather:
    r"""``nu_conv(x, bank, idx, weights, mode="gather", padding="zeros")`` by FFT, one filter at a time.

    out(p) = sum_f W_f(p) (d_f * x)(p) with W_f(p) = sum_k w_k(p) [idx_k(p) = f], over the filters
    each batch item actually uses (non-zero weight). Each used filter costs one inverse FFT per
    image plane, whatever the filter size, so this beats the direct per-pixel sum when few large
    filters are in use (a uniform or slowly varying blur with 71 x 71 inverse filters); the direct
    kernel wins when many small ones are. The filter spectra and the maps W_f are prepared once and
    reused for every call with the same bank, idx and weights (as in IRC's loop). Differentiable in
    x, bank and weights.

    With a bank of several branches, (F, n, kh, kw), a call takes n inputs sharing idx and weights
    and returns sum_i gather(x_i, bank[:, i]); the branches are summed in the Fourier domain, so the
    n branches cost one inverse FFT per filter, not n (IRC's inverse step, eq. 17).

    Args:
        bank: (F, kh, kw) filters, or (F, n, kh, kw) for n branches.
        idx, weights: (B or 1, K, H, W).
        batch: B of the inputs it will be called with.

    Example:
        >>> import torch
        >>> from deblur_ops import nu_conv
        >>> x, bank = torch.rand(2, 1, 12, 10, dtype=torch.float64), torch.rand(3, 5, 5, dtype=torch.float64)
        >>> idx = torch.randint(3, (2, 2, 12, 10)); w = torch.rand(2, 2, 12, 10, dtype=torch.float64)
        >>> torch.allclose(FFTGather(bank, idx, w, 2)(x), nu_conv(x, bank, idx, w, mode="gather", padding="zeros"))
        True
    """

    def __init__(self, bank: torch.Tensor, idx: torch.Tensor, weights: torch.Tensor, batch: int):
        self.branched = bank.dim() == 4
        bank = bank if self.branched else bank[:, None]
        self.kh, self.kw = bank.shape[-2:]
        self.h, self.w = idx.shape[-2:]
        self.shape = (self.h + self.kh - 1, self.w + self.kw - 1)
        idx = idx.expand(batch, *idx.shape[1:])
        weights = weights.expand(batch, *weights.shape[1:])
        self.items = []
        for n in range(batch):
            active = weights[n] != 0
            counts = torch.bincount(idx[n][active].reshape(-1), minlength=len(bank))
            used = torch.nonzero(counts).reshape(-1)
            if len(used) == 0:
                self.items.append(None)
                continue
            # W_f(p): the weights of filter f at each pixel, (U, H, W); slot 0 collects unused entries
            lookup = torch.full((len(bank),), -1, dtype=torch.long, device=idx.device)
            lookup[used] = torch.arange(len(used), device=idx.device)
            flat = (lookup[idx[n]] + 1).reshape(idx.shape[1], -1)
            maps = weights.new_zeros(len(used) + 1, self.h * self.w).scatter_add(
                0, flat, weights[n].reshape(idx.shape[1], -1))
            spectra = torch.fft.rfft2(bank[used], s=self.shape)  # (U, n, ...)
            self.items.append((spectra, maps[1:].reshape(len(used), 1, self.h, self.w)))

    def __call__(self, x) -> torch.Tensor:
        inputs = list(x) if self.branched else [x]
        spectrum = torch.stack([torch.fft.rfft2(t, s=self.shape) for t in inputs], 1)  # (B, n, C, ...)
        out = []
        for n, item in enumerate(self.items):
            if item is None:
                out.append(torch.zeros_like(inputs[0][n]))
                continue
            spectra, maps = item
            summed = (spectrum[n][None] * spectra[:, :, None]).sum(1)  # (U, C, ...): branches summed
            full = torch.fft.irfft2(summed, s=self.shape)
            same = full[..., self.kh // 2:self.kh // 2 + self.h, self.kw // 2:self.kw // 2 + self.w]
            out.append((maps * same).sum(0))
        return torch.stack(out)


def _power_spectrum(filters: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """|rfft2(filters, s=size)|^2; it does not depend on where a filter sits, so no centring.

    The column FFT runs on the filter's own rows only (the zero rows add nothing), which halves
    the cost for small filters on a large grid.
    """
    rows = torch.fft.rfft(filters, n=size[1], dim=-1).transpose(-1, -2).contiguous()
    spectrum = torch.fft.fft(rows, n=size[0], dim=-1)
    return (spectrum.real ** 2 + spectrum.imag ** 2).transpose(-1, -2).contiguous()


def spatially_invariant(op: BlurOperator) -> bool:
    """Whether the blur is the same everywhere: the same filters with the same weights at every pixel."""
    idx, weights = op.idx, op.weights
    return bool((idx == idx[..., :1, :1]).all()) and bool((weights == weights[..., :1, :1]).all())


class GridPreconditioner:
    r"""An approximate inverse of A^T A + rho G^T G for a spatially varying blur, node by node.

    Nodes sit every ``spacing`` pixels from the top-left corner (the last row and column of
    nodes may lie past the image); node n's local PSF k_n (the blur's own per-pixel filter at the
    node, or at the nearest pixel) gives the Fourier-domain inverse
    P_n = 1 / (|K_n|^2 + rho sum_i |G_i|^2), its denominator floored for stability (see
    :data:`PRECONDITIONER_SAFETY` and :data:`PRECONDITIONER_MAX_GAIN`). Applied to s, the result
    is the bilinear blend
    sum_n w_n(p) (P_n s)(p), w_n the separable tent of half-width ``spacing`` around node n. Each
    node reads its window (the tent's support plus a margin); all windows have one size and one
    stride, so a call is an unfold, one batched forward FFT, one batched inverse FFT and a fold,
    and the cost grows with the image area. A spatially invariant blur is one node, and then
    P A^T is exactly eq. 14's inverse filter d_0 without the finite-support truncation.

    Args:
        op: the :class:`BlurOperator` (bank, idx, weights on its extended domain).
        priors: (n, ph, pw) prior filters g_i.
        rho: the ADMM penalty.
        spacing: node spacing in pixels (>= 8).
        margin: extra pixels read around each window (default a quarter of the blur size; the
            tents vanish at the window's edge, so the truncation there barely matters).
    """

    def __init__(self, op: BlurOperator, priors: torch.Tensor, rho: float, spacing: int,
                 margin: int | None = None):
        h, w = op.data.shape[-2:]
        ksize = max(op.bank.shape[-2:])
        self.margin = ksize // 4 if margin is None else margin
        dtype, device = op.data.dtype, op.data.device
        idx = op.idx.expand(op.data.shape[0], *op.idx.shape[1:])
        weights = op.weights.expand_as(idx)
        batch = idx.shape[0]
        self.uniform = spatially_invariant(op)
        # per axis, no wider than the image (two nodes then sit on its first and last pixel)
        dy, dx = self.spacing = (max(1, min(int(spacing), h - 1)), max(1, min(int(spacing), w - 1)))
        gy, gx = (1, 1) if self.uniform else (math.ceil((h - 1) / dy) + 1, math.ceil((w - 1) / dx) + 1)
        self.grid = (gy, gx)
        if self.uniform:
            # The whole domain as it is, periodic: then P is the exact inverse of the circulant
            # system, which differs from the true one only at the borders. Zero padding instead
            # (a truncated inverse of a larger system) started the iteration far off for long
            # motions: 25.0 against 27.3 dB on a 27 px training motion, 12 stages.
            self.size = (next_fast_len(h), next_fast_len(w))
        else:  # a node's window: its tent (2 d - 1 pixels) plus the margin on both sides
            self.size = (next_fast_len(2 * dy - 1 + 2 * self.margin), next_fast_len(2 * dx - 1 + 2 * self.margin))
        prior_power = rho * _power_spectrum(priors.to(device=device, dtype=dtype), self.size).sum(0)
        # the local PSF at every node of every batch item (nodes past the image: the last pixel)
        node_rows = (torch.arange(gy, device=device) * dy).clamp(max=h - 1).repeat_interleave(gx)
        node_cols = (torch.arange(gx, device=device) * dx).clamp(max=w - 1).repeat(gy)
        node_ids, node_mix = idx[:, :, node_rows, node_cols], weights[:, :, node_rows, node_cols]  # (B, K, N)
        node_psfs = (node_mix[..., None, None] * op.bank[node_ids]).sum(1)  # (B, N, kh, kw)
        dens = _power_spectrum(node_psfs, self.size) + prior_power  # (B, N, *F)
        if not self.uniform:
            dens = torch.maximum(dens, self._safe_floor(idx, weights, op.bank, prior_power))
            dens = dens.clamp(min=1 / PRECONDITIONER_MAX_GAIN)
            tents = [1 - torch.arange(1 - d, d, device=device, dtype=dtype).abs() / d for d in (dy, dx)]
            self.tents = (tents[0][:, None] * tents[1][None, :]).reshape(1, -1, 1)  # (1, span_r span_c, 1)
        self.inverse = (1 / dens).reshape(batch, 1, gy, gx, *dens.shape[-2:])

    def _safe_floor(self, idx, weights, bank, prior_power) -> torch.Tensor:
        """Per node: (the largest |K_f|^2 among the filters used in its <= 4 cells + rho |G|^2) / safety."""
        (gy, gx), (dy, dx), (batch, _, h, w), count = self.grid, self.spacing, idx.shape, len(bank)
        cells = (gy - 1) * (gx - 1)
        # a pixel's cell; one on a node row or column lies on the edge of two
        r, c = torch.arange(h, device=idx.device), torch.arange(w, device=idx.device)
        cell_rows = [(r // dy).clamp(max=gy - 2), (r // dy - (r % dy == 0).long()).clamp(0, gy - 2)]
        cell_cols = [(c // dx).clamp(max=gx - 2), (c // dx - (c % dx == 0).long()).clamp(0, gx - 2)]
        hits = torch.zeros(batch, cells * count, dtype=torch.long, device=idx.device)
        active = (weights != 0).long().reshape(batch, -1)
        for a in cell_rows:
            for b in cell_cols:
                cell = (a[:, None] * (gx - 1) + b[None, :]) * count
                hits.scatter_add_(1, (cell + idx).reshape(batch, -1), active)
        present = hits.reshape(batch, cells, count) > 0
        used = torch.nonzero(present.any(0).any(0)).reshape(-1)
        power = _power_spectrum(bank[used], self.size)  # (U, *F), each used filter once
        present = present[..., used]
        cell_max = torch.stack([torch.stack([power[present[item, cell]].amax(0) for cell in range(cells)])
                                for item in range(batch)]).reshape(batch, gy - 1, gx - 1, *power.shape[1:])
        padded = F.pad(cell_max, (0, 0, 0, 0, 1, 1, 1, 1))  # no cells beyond the grid
        reach = torch.stack([padded[:, i:i + gy, j:j + gx] for i in (0, 1) for j in (0, 1)]).amax(0)
        return ((reach + prior_power) / PRECONDITIONER_SAFETY).reshape(batch, gy * gx, *power.shape[1:])

    def __call__(self, s: torch.Tensor) -> torch.Tensor:
        b, c, h, w = s.shape
        if self.uniform:
            full = torch.fft.irfft2(torch.fft.rfft2(s, s=self.size) * self.inverse[:, :, 0, 0], s=self.size)
            return full[..., :h, :w]
        (gy, gx), (dy, dx), m = self.grid, self.spacing, self.margin
        sy, sx = 2 * dy - 1, 2 * dx - 1  # a tent's support
        # window (i, j) reads rows i dy - (dy - 1) - m ... and the like columns of s, zeros outside
        padded = F.pad(s, (dx - 1 + m, (gx - 1) * dx + sx + m - w - (dx - 1),
                           dy - 1 + m, (gy - 1) * dy + sy + m - h - (dy - 1)))
        tiles = padded.unfold(2, sy + 2 * m, dy).unfold(3, sx + 2 * m, dx)  # (B, C, gy, gx, Ly, Lx)
        full = torch.fft.irfft2(torch.fft.rfft2(tiles, s=self.size) * self.inverse, s=self.size)
        part = full[..., m:m + sy, m:m + sx].reshape(b * c, gy * gx, sy * sx).transpose(1, 2)
        out = F.fold(part * self.tents, ((gy - 1) * dy + 1, (gx - 1) * dx + 1), (sy, sx),
                     padding=(dy - 1, dx - 1), stride=(dy, dx))
        return out.reshape(b, c, *out.shape[-2:])[..., :h, :w]


def preconditioned_inverse(op: BlurOperator, priors: torch.Tensor, rho: float, spacing: int, *,
                           differentiable: bool = False) -> Callable:
    """``inverse([r_0, ..., r_n]) = P (A^T r_0 + sqrt(rho) sum_i g_i^T r_i)`` for :func:`irc_admm`.

    Eq. 14's inverse filters factor as d_i = P k_i^T with P = (K^T K + rho G^T G)^{-1}. Applying
    the exact adjoints k_i^T (NU-Conv gather) and only approximating P (:class:`GridPreconditioner`)
    keeps IRC's fixed point the exact x update of eq. 5 however coarse the approximation, whereas
    interpolated inverse filters (eq. 17) move the fixed point wherever they are off.

    With ``differentiable=True`` (learned priors, as in IRC-Net) the prior adjoints are
    convolutions that pass gradients to ``priors``; P is built once from their current values and
    treated as a constant, as a preconditioner may be.
    """
    with torch.no_grad():
        precondition = GridPreconditioner(op, priors.detach(), rho, spacing)
    root = math.sqrt(rho)
    if differentiable:
        # sum_i g_i^T r_i in one correlation with all n filters (n input channels, one output)
        weight, pad = priors[None], (priors.shape[-2] // 2, priors.shape[-1] // 2)

        def prior_adjoint(rs):
            b, c, h, w = rs[0].shape
            # stacked along the last dimension: a channels-last (B C, n, H, W) view, which oneDNN
            # convolves 5x faster than the contiguous layout on the CPU (3.6 vs 20 ms, 405 x 540 x 3)
            stacked = torch.stack(rs, -1).reshape(b * c, h, w, len(rs)).permute(0, 3, 1, 2)
            return F.conv2d(stacked, weight.to(stacked.dtype), padding=pad).reshape(b, c, h, w)
    else:
        adjoints = [tap_conv(g[None]) for g in priors.flip(-2, -1)]

        def prior_adjoint(rs):
            return sum(adjoint(r)[0] for r, adjoint in zip(rs, adjoints))

    def inverse(residuals):
        s = op.adjoint(residuals[0])
        if len(residuals) > 1:
            s = s + root * prior_adjoint(residuals[1:])
        return precondition(s)

    return inverse
