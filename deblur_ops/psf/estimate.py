"""Blind PSF estimation: the blur kernel of a uniformly blurred image, from the image alone.

:func:`estimate_psf` is a coarse-to-fine maximum-a-posteriori estimator with an L0 prior on the
latent image's gradients (Xu, Zheng & Jia 2013; Pan, Hu, Su & Yang 2014): at each scale of an
image pyramid it alternates

1. the latent image: ``min_x ||k * x - y||^2 + lam (||d_x x||_0 + ||d_y x||_0)`` by half-quadratic
   splitting (closed-form FFT solves and hard thresholding of each difference on its own), on a
   smooth periodic extension of ``y`` so that the image borders do not ring; optionally
   (``dark_channel``, off by default) with ``+ dark lam ||D(x)||_0`` on the dark channel ``D``, the
   minimum over 35 px windows (Pan, Sun, Pfister & Yang 2016);
2. the kernel, in the gradient domain: ``min_k sum_d ||valid(d x * k) - d y||^2 + gamma ||k||^2``
   over a ``size x size`` support by conjugate gradients (the "valid" convolution sees only the
   latent pixels that really reach the observed ones; a band of the kernel's side along the border,
   where the latent rings, is left out), using only the latent's salient edges (Cho & Lee 2009; in
   each of four orientations at least 20 times the kernel side of pixels are kept, as Pan et al.;
   pixels are picked by their centred gradients and a difference is kept where either of its two
   pixels is);
   at the finest level with a sparsity prior ``sparsity * sum |k|^0.5`` on the kernel too (weaker
   on supports over 15 px; sparse kernel priors as Shan et al. 2008, Xu & Jia 2010; the exponent
   is under 1 because the L1 norm of a non-negative kernel summing to 1 is constant), by two
   reweighted least-squares solves: it concentrates kernels that the edges alone leave spread
   (near-sharp pictures lost most to those);
3. the constraints: negatives and values under 5 % of the maximum removed, isolated fragments
   carrying under 10 % of the mass removed, sum 1;

then the kernel is upsampled to the next scale. The first kernel is a symmetric five-tap cross.
Every step treats the picture's axes alike, so the estimate of a picture rotated by 90 or 180
degrees, transposed or flipped is the estimate rotated, transposed or flipped (to rounding). Pan et
al.'s start of two horizontal taps, a joint threshold on a pixel's two forward differences and
angle bins made the estimate depend on the picture's orientation (on development images the
transposed picture's kernels differed by up to 0.23 and restored 0.3 dB worse on average); with
the symmetric steps the development images gained +0.48 dB on compact and on spanning camera
shake (benchmarks/results/2026-12-04_intel-xeon_blind_symmetric_steps_dev.md). The final kernel
is shifted so that its centre of mass is at its centre (a blind estimate is only defined up to a
translation, which the restoration with it then does not add). The estimator runs on torch
tensors (FFTs and elementwise maths), on the CPU or a CUDA device.

Adaptive support (the default): a support much larger than the blur lets the estimate spread over
all of it (on compact camera shake of 3-12 px estimated in 19-35 px supports, the kernels filled
their supports and restorations lost 2-5 dB). So the estimate is made on a ladder of supports, from
``size`` down to 3 px in steps of about sqrt(2), and the kernel kept is the one whose
total-variation restoration has the lowest normalised sparsity ``||grad x||_1 / ||grad x||_2``
(Krishnan, Tay & Fergus 2011): a kernel spread wider than the blur makes the restoration ring, one
smaller than the blur leaves it blurred, and both raise the measure. The data misfit of the same
restorations was tried as the criterion first and rejected: it always favours the smaller
supports (down to the delta), which looked right on compact kernels and was wrong on kernels that
span their support. Measured on development images (training images only) in docs/methods.md.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from ..boundary import next_fast_len
from ..data.noise import estimate_noise_sigma
from ..validation import MIN_IMAGE_SIDE, as_float_tensor, positive_float, require_finite, resolve_device

__all__ = ["DARK_CHANNEL", "ESTIMATE_SOURCES", "ESTIMATE_WINDOW", "KERNEL_SPARSITY", "NEAR_SHARP_RADIUS", "estimate_psf",
           "estimate_steps", "kernel_rms_radius", "near_sharp_warning", "normalised_sparsity"]

# What estimate_psf reads the blur from: "edges" (the MAP estimator above), "points" (isolated stars or
# beads, their median by psf.psf_from_point_sources) or "auto" (points on a frame of mostly empty sky that has enough of them).
ESTIMATE_SOURCES = ("auto", "edges", "points")
# "auto": a star field or bead image has its median within this fraction of its range (0.1 / 99.9
# percentiles) above its 0.1 percentile, and at least this fraction of its pixels within 3 noise sigmas
# (estimate_noise_sigma) of the median: mostly empty sky. Measured: simulated star fields 0.02-0.07 and
# 0.81-0.89, hubble_deep_field 0.05 and 0.85; a blurred brick wall 0.14 and 0.68 (its local maxima
# pass as "stars": read from them, its restoration lost 13 dB), the other samples 0.2-0.8 and 0.06-0.63.
# Then it needs this many usable point sources.
_DARK_FIELD = 0.1
_SKY_FRACTION = 0.75
_MIN_POINTS = 5

# Largest step between pyramid levels (Pan et al.'s sqrt(2)) and the kernel side at the coarsest one.
_LEVEL_RATIO = math.sqrt(2.0)
_COARSEST_SIDE = 3
# The half-quadratic splitting of the latent step: beta from 2 lam, doubled up to this value.
_BETA_MAX = 1e5
# Kernel values under this fraction of its maximum are set to zero after every kernel step.
_CUT = 0.05
# The kernel's sparsity prior sum |k|^p (estimate_psf's ``sparsity``): its exponent and the floor of the
# reweighting (taps of the sum-1 kernel under it weigh as much as it).
KERNEL_SPARSITY = 0.3  # the default weight (estimate_psf's, method "blind"'s, deblur run's)
# The dark-channel prior's default weight (estimate_psf's ``dark_channel``): off. At 1.0 it gained on
# development images (+0.77 dB compact, +0.31 spanning, 84 cases) but not on the held-out protocols
# (-0.08 and -0.04 dB, case by case -3.2 to +3.4 dB), for 25-80 % more time; see its docstring.
DARK_CHANNEL = 0.0
_KERNEL_P = 0.5
_KERNEL_FLOOR = 1e-4
_REWEIGHTINGS = 2
# Supports wider than this have the prior weakened by (this / side)^1.5 (see _support_sparsity).
_SPARSITY_SIDE = 15
# The adaptive support: the smallest side tried; the selection's total-variation restoration
# (weight per square root of the noise sigma on [0, 1] data; sigma floored) and its splitting schedule.
# 3 px (was 5): near-sharp pictures blurred by about a pixel got 5 px kernels that made them ring; on
# the 36 compact development cases 3 of them chose 3 px and gained +3.3 to +4.0 dB (mean +0.31 dB),
# the 36 spanning cases were unchanged.
_SMALLEST_SUPPORT = 3
# Largest side the edge estimator works on (see estimate_psf's window).
ESTIMATE_WINDOW = 512
_TV_WEIGHT_PER_ROOT_NOISE = 0.14
_SIGMA_FLOOR = 1e-4
_TV_BETA_START = 10.0
_TV_BETA_MAX = 1e4
# The dark channel's L0 prior in the latent step (Pan et al. 2016): window side in pixels (theirs, at every
# level; capped at a third of a small level's side), the largest splitting weight of its subproblem, and the
# floor of the Otsu threshold its first weight is divided by.
_DARK_PATCH = 35
_DARK_BETA_MAX = 8.0
_OTSU_FLOOR = 1e-3
_TAN_22_5 = math.tan(math.pi / 8)  # the salient-edge orientation bins' edges


def estimate_psf(image, size: int = 31, *, adaptive_support: bool = True, iterations: int = 5, lam: float = 4e-3,
                 lam_min: float = 1e-4, gamma: float = 10.0, edges: float = 20.0, sparsity: float = KERNEL_SPARSITY,
                 dark_channel: float = DARK_CHANNEL, source: str = "auto",
                 window: int | None = ESTIMATE_WINDOW, device="auto", return_latent: bool = False,
                 return_source: bool = False, callback=None):
    """Estimate the (uniform) blur kernel of a blurred image without knowing it (blind deconvolution).

    Two estimators: on photographs with edges (camera shake, defocus) the coarse-to-fine L0 MAP
    estimator of the module docstring; on star fields and bead images the median of the isolated
    point sources it finds (:func:`deblur_ops.psf.psf_from_point_sources`, which leaves out
    saturated stars and those unlike the others: galaxies, close pairs), as astronomers measure a
    seeing PSF. The image should be blurred uniformly (one kernel for the whole frame: crop a
    region if the blur varies; for a PSF varying across a star field see
    :func:`deblur_ops.psf.psf_grid_from_point_sources`). Restore the image with the kernel
    through :func:`deblur_ops.deblur` (``method="blind"`` does both steps).

    Args:
        image: (H, W) grey or (H, W, C) colour (estimated on the channels' mean), NumPy array or
            torch tensor, any value range (mapped to [0, 1] by its 0.1 / 99.9 percentiles).
        size: odd side of the kernel support in pixels: at least the blur's extent, at most a
            third of the image's shorter side. With ``adaptive_support`` it is the largest support
            tried, so a generous value is safe.
        adaptive_support: estimate on supports from ``size`` down to 3 px (each about 1/sqrt(2)
            of the last) and keep the kernel whose total-variation restoration is sharpest (lowest
            normalised sparsity ||grad x||_1 / ||grad x||_2 on the interior, Krishnan et al. 2011).
            A support much larger than the blur lets the estimate spread over it (see the module
            docstring). False: estimate on the ``size`` support only (about 6x faster).
        iterations: alternations per pyramid level (>= 1).
        lam: weight of the L0 gradient prior at the coarsest level, for images in [0, 1]; it
            decreases by 1.1 per iteration through the whole pyramid, down to ``lam_min``.
        lam_min: its smallest value.
        gamma: weight of the kernel's L2 regulariser, relative to the strength of the selected
            edges (larger: smoother, more compact kernels).
        edges: salient-edge selection: each of four gradient orientations keeps at least
            ``edges * size`` pixels (Pan et al.'s 20; 0 keeps every gradient).
        sparsity: weight of the kernel's sparsity prior ``sum |k|^0.5`` at the finest level,
            relative to the selected edges' energy like ``gamma``, weakened on supports wider
            than 15 px by (15 / side)^1.5 (0 turns it off). On development images (72
            camera-shake cases, 1 % noise) 0.3 gained +0.58 dB on compact kernels (3-12 px in
            11-27 px supports) and +0.19 dB on kernels spanning their support, for about 60 %
            more time.
        dark_channel: weight of the L0 prior on the latent image's dark channel (its minimum over
            35 px windows; Pan et al. 2016), relative to the gradient prior's ``lam`` (0 turns it
            off). Blur lifts the dark channel, so the prior steers the latent, and the kernel fitted
            to it, away from blurred solutions. Off by default: at 1.0, restored by ``tv-irc``, it
            gained on development images (84 camera-shake cases, 1 % noise: compact kernels +2.60
            -> +3.37 dB over the blurred input, spanning +3.11 -> +3.42; at 0.2 % noise +0.43 dB
            spanning, -0.02 compact) but not on the held-out protocol of ``deblur evaluate
            --blind`` (+1.17 -> +1.06 dB, spanning kernels +2.54 -> +2.50; Levin ratios under 3:
            89 -> 91 % on both), with case-by-case changes from -3.2 to +3.4 dB, for 25-80 % more
            time. Those numbers predate the symmetric steps (see the module docstring); with them
            it gained nothing on the development images (-0.09 dB compact, -0.05 dB spanning) for
            about 2.7x the time. Try it on pictures with large dark regions (text, night scenes).
        source: ``"edges"`` (the MAP estimator), ``"points"`` (point sources; the crops are
            ``size`` wide, so ``size`` should hold the PSF's visible wings), or ``"auto"``
            (default): points when the frame is mostly empty sky (its median within 10 % of its
            range above its floor, and 75 % of its pixels within 3 noise sigmas of the median)
            with at least 5 usable point sources, else edges. ``"points"``
            needs at least 3.
        window: on an image larger than ``window`` px along a side, the edge estimator works on the
            ``window`` x ``window`` region richest in strong edges of every orientation (the
            whole image is restored with the kernel). Default 512: on a 378 x 578 photo a 384 px
            window matched the whole frame's kernels (correlation 0.72-0.78 against 0.67-0.76) in
            60 % of the time, a 256 px one fell to 0.59-0.76; on a 1389 px picture the 512 px
            window took 33 s against 623 s for the whole frame, with the same correlation. None: the whole
            image. A window under three times ``size`` is widened to that.
        device: ``"auto"`` (the tensor's device, else CUDA when available), ``"cpu"``, ``"cuda"``.
        return_latent: also return the last latent image (grey, [0, 1] scale, input's H x W, or
            the window's when one was used); None when the kernel came from point sources.
        return_source: also return what the kernel was read from, ``"edges"`` or ``"points"``
            (last in the returned tuple).
        callback: optional ``callback(done, total)``, called after each pyramid level of each
            support (``total`` of them; once, ``(1, 1)``, for point sources): for a progress bar,
            and to stop the estimate midway by raising (the exception propagates).

    Returns:
        The kernel, (size, size) float32, non-negative, summing to 1, centre of mass at index
        ``size // 2`` (rounded), in the package's PSF convention (convolution); a NumPy array for
        NumPy input, else a tensor on the input's device. With ``return_latent``, ``(kernel, latent)``;
        with ``return_source`` the source is appended (``(kernel, source)``, ``(kernel, latent, source)``).

    Raises:
        ValueError: an image that is not 2D/colour, smaller than 16 x 16, constant, or with
            NaN/Inf; an even, too small or too large ``size``; non-positive weights; with
            ``source="points"``, no usable point source (the message says why each was rejected).
        TypeError: an unsupported image type.

    Example:
        >>> import torch
        >>> from deblur_ops.data import sample_image
        >>> from deblur_ops.psf import linear_motion_kernel
        >>> sharp = torch.from_numpy(sample_image("brick", size=96))
        >>> true = linear_motion_kernel(7, 0)
        >>> blurred = torch.nn.functional.conv2d(sharp[None, None], true.flip(0, 1)[None, None], padding=3)[0, 0]
        >>> k = estimate_psf(blurred, 11)
        >>> k.shape, round(float(k.sum()), 4), bool((k >= 0).all())
        (torch.Size([11, 11]), 1.0, True)

    References:
        L. Xu, S. Zheng, J. Jia. Unnatural L0 sparse representation for natural image deblurring. CVPR 2013.
        J. Pan, Z. Hu, Z. Su, M.-H. Yang. Deblurring text images via L0-regularized intensity and gradient
        prior. CVPR 2014. J. Pan, D. Sun, H. Pfister, M.-H. Yang. Blind image deblurring using dark channel
        prior. CVPR 2016. S. Cho, S. Lee. Fast motion deblurring. SIGGRAPH Asia 2009. D. Krishnan, T. Tay,
        R. Fergus. Blind deconvolution using a normalized sparsity measure. CVPR 2011. Q. Shan, J. Jia,
        A. Agarwala. High-quality motion deblurring from a single image. SIGGRAPH 2008. L. Xu, J. Jia.
        Two-phase kernel estimation for robust motion deblurring. ECCV 2010.
    """
    if source not in ESTIMATE_SOURCES:
        raise ValueError(f"source must be one of {ESTIMATE_SOURCES} (what the blur is read from), got {source!r}")
    target = resolve_device(device, image)
    x = as_float_tensor(image, "image", target)
    if x.dim() == 3 and x.shape[-1] <= 4:
        grey = x.double().mean(-1)
    elif x.dim() == 2:
        grey = x.double()
    else:
        raise ValueError(f"image must have shape (H, W) or (H, W, C) with C <= 4 colour channels, got shape "
                         f"{tuple(x.shape)}; for a stack estimate the PSF on one plane (or their mean)")
    require_finite(grey, "image")
    h, w = grey.shape
    if min(h, w) < MIN_IMAGE_SIDE:
        raise ValueError(f"image must be at least {MIN_IMAGE_SIDE}x{MIN_IMAGE_SIDE} pixels to estimate a blur, "
                         f"got {h}x{w}")
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 3 or size % 2 == 0:
        raise ValueError(f"size must be an odd integer >= 3 (the kernel support's side in pixels), got {size!r}")
    size = int(size)
    if 3 * size > min(h, w):
        raise ValueError(f"size {size} is too large for a {h}x{w} image: the kernel support may be at most a third "
                         f"of the shorter side ({min(h, w) // 3}); crop less, or use a smaller size")
    if isinstance(iterations, bool) or not isinstance(iterations, (int, np.integer)) or iterations < 1:
        raise ValueError(f"iterations must be an integer >= 1, got {iterations!r}")
    if not isinstance(adaptive_support, (bool, np.bool_)):
        raise ValueError(f"adaptive_support must be True or False, got {adaptive_support!r}")
    lam, lam_min, gamma = (positive_float(v, n) for v, n in ((lam, "lam"), (lam_min, "lam_min"), (gamma, "gamma")))
    edges = float(edges)
    if not math.isfinite(edges) or edges < 0:
        raise ValueError(f"edges must be a finite number >= 0, got {edges!r}")
    if isinstance(sparsity, bool) or not isinstance(sparsity, (int, float, np.floating, np.integer)) \
            or not math.isfinite(float(sparsity)) or sparsity < 0:
        raise ValueError(f"sparsity must be a finite number >= 0 (the weight of the kernel's sum |k|^0.5 prior; "
                         f"0 turns it off), got {sparsity!r}")
    sparsity = float(sparsity)
    if isinstance(dark_channel, bool) or not isinstance(dark_channel, (int, float, np.floating, np.integer)) \
            or not math.isfinite(float(dark_channel)) or dark_channel < 0:
        raise ValueError(f"dark_channel must be a finite number >= 0 (the weight of the latent's dark-channel prior "
                         f"relative to its gradient prior; 0 turns it off), got {dark_channel!r}")
    dark_channel = float(dark_channel)
    if callback is not None and not callable(callback):
        raise TypeError(f"callback must be a function callback(done, total), got {type(callback).__name__}")
    if window is not None and (isinstance(window, bool) or not isinstance(window, (int, np.integer))
                               or window < MIN_IMAGE_SIDE):
        raise ValueError(f"window must be None (the whole image) or an integer >= {MIN_IMAGE_SIDE} (the side in "
                         f"pixels of the region the kernel is estimated on), got {window!r}")
    lo, hi = torch.quantile(grey.flatten()[:: max(1, grey.numel() // 1_000_000)],
                            torch.tensor([0.001, 0.999], dtype=grey.dtype, device=grey.device)).tolist()
    if not hi > lo:
        lo, hi = float(grey.min()), float(grey.max())
    if not hi > lo:
        raise ValueError("the image is constant: a flat frame carries no information about its blur")
    y = (grey - lo) / (hi - lo)

    kernel = None
    if source == "points" or (source == "auto" and _is_star_field(y)):
        kernel = _from_point_sources(grey, size, required=source == "points")
    if kernel is not None:
        if callback is not None:
            callback(1, 1)
        kernel = kernel.to(torch.float32)
        kernel = kernel.numpy() if isinstance(image, np.ndarray) else kernel.to(image.device)
        return _returned(kernel, None, "points", return_latent, return_source)

    if window is not None:
        top, left, wh, ww = _best_window(y, max(int(window), 3 * size), size)
        y = y[top:top + wh, left:left + ww]
        h, w = y.shape
    settings = dict(iterations=iterations, lam=lam, lam_min=lam_min, gamma=gamma, edges=edges, sparsity=sparsity,
                    dark=dark_channel)
    sides = _support_ladder(size) if adaptive_support else [size]
    best = None
    if len(sides) > 1:
        # The total-variation weight of the selection: 2 * 0.07 sqrt(sigma) on [0, 1] data, admm_tv's
        # default weight for its 1/2-scaled data term.
        sigma = float(estimate_noise_sigma(y[None, None]).reshape(-1)[0])
        tv_weight = _TV_WEIGHT_PER_ROOT_NOISE * math.sqrt(max(sigma, _SIGMA_FLOOR))
    total = _steps(sides, (h, w))
    done = 0

    def level_done():
        nonlocal done
        done += 1
        if callback is not None:
            callback(done, total)

    for side in sides:
        kernel, latent = _estimate_on_support(y, side, level_done=level_done, **settings)
        if len(sides) > 1:
            score = _tv_sparsity(y, kernel, tv_weight, margin=size)
            if best is not None and not score < best[0]:
                continue
            best = (score, kernel, latent)
    if best is not None:
        kernel, latent = best[1], best[2]
    pad = (size - kernel.shape[-1]) // 2
    kernel = F.pad(kernel, (pad, pad, pad, pad))
    kernel = kernel.float()
    if isinstance(image, np.ndarray):
        kernel = kernel.cpu().numpy()
    else:
        kernel = kernel.to(image.device)
    if return_latent:
        r = (latent.shape[0] - h) // 2
        latent = latent[r:r + h, r:r + w].float()
        latent = latent.cpu().numpy() if isinstance(image, np.ndarray) else latent.to(image.device)
    return _returned(kernel, latent, "edges", return_latent, return_source)


def _best_window(y: torch.Tensor, window: int, size: int) -> tuple[int, int, int, int]:
    """(top, left, height, width) of the ``window`` x ``window`` region of ``y`` (clipped to its
    shape) richest in strong edges of every orientation: the one whose weakest of four gradient
    orientations has the largest summed magnitude over the image's strongest 10 % of gradients (a
    region with edges one way only fixes the kernel along one direction only; Hu & Yang 2012). The
    ``size // 2`` px border of the image, where its own blur leaks out, is never chosen."""
    h, w = y.shape
    wh, ww = min(window, h), min(window, w)
    if (wh, ww) == (h, w):
        return 0, 0, h, w
    gx = F.pad(y[:, 1:] - y[:, :-1], (0, 1))
    gy = F.pad(y[1:] - y[:-1], (0, 0, 0, 1))
    magnitude = (gx.square() + gy.square()).sqrt()
    strong = magnitude >= torch.quantile(magnitude.flatten()[:: max(1, magnitude.numel() // 1_000_000)], 0.9)
    angle = torch.atan2(gy, gx).remainder(math.pi)
    r = size // 2
    inner = torch.zeros_like(magnitude, dtype=torch.bool)
    inner[r:h - r, r:w - r] = True
    best, where = -1.0, (0, 0)
    sums = []
    for b in range(4):
        in_bin = strong & inner & (angle >= b * math.pi / 4) & (angle < (b + 1) * math.pi / 4)
        sums.append(F.pad((magnitude * in_bin).cumsum(0).cumsum(1), (1, 0, 1, 0)))
    step = max(1, min(wh, ww) // 8)
    tops = sorted(set(list(range(0, h - wh + 1, step)) + [h - wh]))
    lefts = sorted(set(list(range(0, w - ww + 1, step)) + [w - ww]))
    for top in tops:
        for left in lefts:
            score = min(float(c[top + wh, left + ww] - c[top, left + ww] - c[top + wh, left] + c[top, left])
                        for c in sums)
            if score > best:
                best, where = score, (top, left)
    return where[0], where[1], wh, ww


# Estimated kernels whose RMS radius lies in this range (px) mark a near-sharp picture, where blind
# deblurring most often over-sharpens: natural edges are not steps, so the L0 latent's step edges make
# the estimate take the picture's own edge softness for blur. Development images (camera shake, 0.2 and
# 1 % noise, 108 cases; stop 29): 10 estimates fell in the range, 5 of them lost over 1 dB and 5 gained
# over 1 dB (of the 23 cases losing over 1 dB); sharp, unblurred photos (coffee, brick,
# immunohistochemistry) gave 0.97-1.25 px and lost 7-25 dB. Under 0.5 px the kernel is almost the
# identity and its restoration harmless (a sharp binary picture: 0.26 px, +4.7 to +11.7 dB).
# With the symmetric steps (2026-12-04) four of six unblurred development photos at 1 % noise lost
# 5.2-8.4 dB (docs/methods.md).
NEAR_SHARP_RADIUS = (0.5, 1.5)


def kernel_rms_radius(kernel) -> float:
    """Root-mean-square distance in pixels of a 2D kernel's mass from its centre of mass: the size of a blur.

    Example:
        >>> import numpy as np
        >>> box = np.zeros((5, 5)); box[2, 1:4] = 1 / 3
        >>> round(kernel_rms_radius(box), 3)
        0.816
    """
    k = torch.as_tensor(np.asarray(kernel) if not isinstance(kernel, torch.Tensor) else kernel).double().cpu()
    if k.dim() != 2:
        raise ValueError(f"kernel must be 2D (H, W), got shape {tuple(k.shape)}")
    total = float(k.sum())
    if not total > 0 or not math.isfinite(total):
        raise ValueError("kernel must have a positive, finite sum")
    k = k / total
    rows = torch.arange(k.shape[0], dtype=k.dtype)[:, None]
    cols = torch.arange(k.shape[1], dtype=k.dtype)[None]
    mr, mc = float((k * rows).sum()), float((k * cols).sum())
    return math.sqrt(max(float((k * ((rows - mr) ** 2 + (cols - mc) ** 2)).sum()), 0.0))


def near_sharp_warning(kernel) -> str | None:
    """The caution for an estimated kernel that marks a near-sharp picture (RMS radius within
    :data:`NEAR_SHARP_RADIUS`), or None: blind deblurring tends to over-sharpen such pictures."""
    radius = kernel_rms_radius(kernel)
    if not NEAR_SHARP_RADIUS[0] <= radius <= NEAR_SHARP_RADIUS[1]:
        return None
    return (f"the estimated blur is small (RMS radius {radius:.2f} px): the picture may be nearly sharp, where blind "
            f"deblurring most often over-sharpens it (half such development cases lost over 1 dB, unblurred photos "
            f"5-25 dB); compare the result with the input before using it")


def estimate_steps(shape, size: int, *, adaptive_support: bool = True, window: int | None = ESTIMATE_WINDOW) -> int:
    """How many times :func:`estimate_psf` calls its ``callback`` when it reads the kernel from edges
    (once for point sources): its pyramid levels over all the supports it tries, for an image of
    ``shape`` (H, W) -- the total of a progress bar.

    Example:
        >>> estimate_steps((256, 256), 31), estimate_steps((256, 256), 31, adaptive_support=False)
        (41, 8)
    """
    h, w = (int(n) for n in shape[:2])
    if window is not None:
        side = max(int(window), 3 * size)
        h, w = min(h, side), min(w, side)
    return _steps(_support_ladder(size) if adaptive_support else [size], (h, w))


def _steps(sides, shape) -> int:
    return sum(len(_pyramid(side, shape)) for side in sides)


def _returned(kernel, latent, source: str, return_latent: bool, return_source: bool):
    out = (kernel,) + ((latent,) if return_latent else ()) + ((source,) if return_source else ())
    return out if len(out) > 1 else kernel


def _is_star_field(y: torch.Tensor) -> bool:
    """Whether ``y`` (scaled to its 0.1 / 99.9 percentiles) is mostly empty sky with point sources
    on it (see :data:`_DARK_FIELD`, :data:`_SKY_FRACTION`)."""
    median = float(y.median())
    if not median < _DARK_FIELD:
        return False
    sigma = float(estimate_noise_sigma(y[None, None]).reshape(-1)[0])
    return float(((y - median).abs() < 3 * sigma).double().mean()) >= _SKY_FRACTION


def _from_point_sources(grey: torch.Tensor, size: int, required: bool) -> torch.Tensor | None:
    """The PSF of the image's isolated point sources (:func:`psf_from_point_sources`); when too few
    are usable (:data:`_MIN_POINTS`, or 3 when ``required``: fewer leave no outlier test), None or
    (``required``) its ValueError."""
    from .points import psf_from_point_sources

    try:
        kernel, _, _ = psf_from_point_sources(grey.detach().cpu(), size, min_sources=3 if required else _MIN_POINTS)
    except ValueError as exc:
        if required:
            raise ValueError(f"source='points': {exc}; use source='edges' for a picture without stars or beads, "
                             f"or a smaller size") from None
        return None
    return kernel


def _support_ladder(size: int) -> list[int]:
    """Odd kernel sides from ``size`` down to :data:`_SMALLEST_SUPPORT`, each about 1/sqrt(2) of the last.

    Example:
        >>> _support_ladder(35)
        [35, 25, 19, 13, 9, 7, 5, 3]
    """
    sides = [size]
    while True:
        nxt = min(int(round(sides[-1] / _LEVEL_RATIO)) | 1, sides[-1] - 2)
        if nxt < _SMALLEST_SUPPORT:
            return sides
        sides.append(nxt)


def _estimate_on_support(y: torch.Tensor, size: int, *, iterations: int, lam: float, lam_min: float, gamma: float,
                         edges: float, sparsity: float = 0.0, dark: float = 0.0,
                         level_done=None) -> tuple[torch.Tensor, torch.Tensor]:
    """The coarse-to-fine estimate on one ``size`` support: (centred kernel, last latent grown by
    size // 2); ``level_done()`` is called after each pyramid level."""
    h, w = y.shape
    kernel = None
    latent = None
    previous = None
    weight = lam  # decreases through the whole pyramid, not per level (Pan et al.'s schedule)
    for side, shape in _pyramid(size, (h, w)):
        level = y if shape == (h, w) else F.interpolate(y[None, None], size=shape, mode="bilinear",
                                                          antialias=True, align_corners=False)[0, 0]
        if kernel is None:
            kernel = _initial_kernel(side, y)
        else:
            kernel = _resize_kernel(kernel, side, math.sqrt(shape[0] * shape[1] / (previous[0] * previous[1])))
        previous = shape
        for _ in range(iterations):
            latent = _latent(level, kernel, weight, "l0", dark)
            # The kernel's sparsity prior at the finest level only (measured: most of its gain on compact
            # shake at every level, without the loss that brought on kernels that span their support).
            kernel = _kernel_step(level, latent, kernel.shape[-1], gamma, edges,
                                  _support_sparsity(sparsity, side) if shape == (h, w) else 0.0)
            weight = max(weight / 1.1, lam_min)
        if level_done is not None:
            level_done()
    return _centre(kernel), latent


def _support_sparsity(sparsity: float, side: int) -> float:
    """The sparsity weight on a ``side`` support: ``sparsity`` up to :data:`_SPARSITY_SIDE` px,
    then ``sparsity * (_SPARSITY_SIDE / side)^1.5``. A kernel spread along a path of ``n`` taps
    has values ~1/n, where the prior's reweighted curvature grows as n^1.5 against the data's:
    at one weight for every support, long spanning kernels were broken up (held-out 27-35 px
    spanning shake lost 2-4.5 dB; on development images this scaling gained +0.16 dB on spanning
    kernels over one weight, and kept the compact ones' gain within 0.05 dB).

    Example:
        >>> _support_sparsity(0.3, 11), round(_support_sparsity(0.3, 31), 3)
        (0.3, 0.101)
    """
    return sparsity * min(1.0, (_SPARSITY_SIDE / side) ** 1.5)


def normalised_sparsity(image, margin: int = 0) -> float:
    """Krishnan et al.'s normalised sparsity ``||grad x||_1 / ||grad x||_2`` of a 2D image's
    forward differences, on its interior (``margin`` px left out on each side).

    It is lower for sharper images (blur spreads the gradients) and grows with ringing, so of
    several restorations of the same picture the one with the lowest value is the sharpest
    without artefacts; it does not depend on the image's scale or offset.

    Args:
        image: (H, W) NumPy array or torch tensor.
        margin: pixels left out along each border (>= 0), e.g. where a restoration rings.

    Returns:
        The ratio (between 1 and sqrt of the number of differences); ``inf`` for a flat interior.

    Example:
        >>> import torch
        >>> sharp = torch.zeros(32, 32); sharp[:, 16:] = 1
        >>> blurred = torch.nn.functional.avg_pool2d(sharp[None, None], 5, 1, 2, count_include_pad=False)[0, 0]
        >>> normalised_sparsity(sharp, 4) < normalised_sparsity(blurred, 4)
        True

    References:
        D. Krishnan, T. Tay, R. Fergus. Blind deconvolution using a normalized sparsity measure. CVPR 2011.
    """
    x = torch.as_tensor(image).double()
    if x.dim() != 2:
        raise ValueError(f"image must be 2D (H, W), got shape {tuple(x.shape)}")
    if isinstance(margin, bool) or not isinstance(margin, (int, np.integer)) or margin < 0:
        raise ValueError(f"margin must be an integer >= 0, got {margin!r}")
    if min(x.shape) - 2 * margin < 2:
        raise ValueError(f"margin {margin} leaves no interior in a {tuple(x.shape)} image")
    x = x[margin:x.shape[0] - margin, margin:x.shape[1] - margin]
    g = torch.cat([(x[:, 1:] - x[:, :-1]).flatten(), (x[1:] - x[:-1]).flatten()])
    l2 = float(g.square().sum().sqrt())
    return float(g.abs().sum()) / l2 if l2 > 0 else math.inf


def _tv_sparsity(y: torch.Tensor, kernel: torch.Tensor, weight: float, margin: int) -> float:
    """:func:`normalised_sparsity` of the total-variation restoration ``x`` of ``y`` with
    ``kernel``, over ``y``'s interior (``margin`` px left out on each side). A kernel spread wider
    than the blur makes the restoration ring and one smaller than the blur leaves it blurred; both
    raise the measure, and unlike the data misfit it does not favour small kernels."""
    r = kernel.shape[-1] // 2
    x = _latent(y, kernel, weight, "l1")[r:r + y.shape[0], r:r + y.shape[1]]
    return normalised_sparsity(x, margin)


def _pyramid(size: int, shape: tuple[int, int]) -> list[tuple[int, tuple[int, int]]]:
    """(kernel side, image shape) from the coarsest level to the finest: sides shrink by sqrt(2)."""
    levels = max(1, math.ceil(math.log(size / _COARSEST_SIDE) / math.log(_LEVEL_RATIO)) + 1)
    out = []
    for i in range(levels - 1, -1, -1):
        scale = _LEVEL_RATIO ** -i
        side = max(_COARSEST_SIDE, int(math.ceil(size * scale)) | 1)
        side = min(side, size)
        level_shape = tuple(max(MIN_IMAGE_SIDE, int(round(n * scale))) for n in shape) if i else shape
        if not out or out[-1] != (side, level_shape):
            out.append((side, level_shape))
    return out


def _initial_kernel(side: int, like: torch.Tensor) -> torch.Tensor:
    kernel = torch.zeros(side, side, dtype=like.dtype, device=like.device)
    c = side // 2
    # Not a delta (a fixed point of the alternation), but symmetric under the square's rotations and
    # flips, so that the estimate of a rotated picture is the rotated estimate. Pan et al.'s start, two
    # horizontal taps, made the estimate depend on the picture's orientation.
    kernel[c, c] = 0.5
    kernel[c - 1, c] = kernel[c + 1, c] = kernel[c, c - 1] = kernel[c, c + 1] = 0.125
    return kernel


def _resize_kernel(kernel: torch.Tensor, side: int, ratio: float) -> torch.Tensor:
    """The kernel magnified by ``ratio`` (the image's scale step) about its centre, on a ``side`` support."""
    old = kernel.shape[-1]
    coords = (torch.arange(side, dtype=kernel.dtype, device=kernel.device) - side // 2) / ratio
    # grid_sample's normalised coordinates with align_corners=True: -1 and 1 are the end pixels' centres.
    grid_1d = coords / max(old // 2, 1)
    gy, gx = torch.meshgrid(grid_1d, grid_1d, indexing="ij")
    grid = torch.stack([gx, gy], -1)[None]
    k = F.grid_sample(kernel[None, None], grid, mode="bilinear", padding_mode="zeros", align_corners=True)[0, 0]
    k = k.clamp(min=0)
    if not float(k.sum()) > 0:
        k = torch.zeros(side, side, dtype=kernel.dtype, device=kernel.device)
        k[side // 2, side // 2] = 1
    return k / k.sum()


def _periodic_extension(y: torch.Tensor, margin: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """``y`` inside a periodic canvas of fast FFT sides >= its own + 2 ``margin``, the gap filled by a
    smooth blend of its two mirrored facing edges; returns the canvas and ``y``'s offset in it."""
    offsets = []
    canvas = y
    for dim in (0, 1):
        n = canvas.shape[dim]
        total = next_fast_len(n + 2 * margin)
        gap = total - n
        t = torch.arange(1, gap + 1, dtype=y.dtype, device=y.device)
        ramp = 0.5 - 0.5 * torch.cos(math.pi * t / (gap + 1))  # 0 at the far edge of y, 1 at its start
        near = (n - 1 - t.long()).clamp(min=0)               # mirrored across the far edge
        far = (gap + 1 - t.long()).clamp(max=n - 1)           # mirrored across the start (wrapped)
        shape = [1, 1]
        shape[dim] = gap
        fill = (1 - ramp.view(shape)) * canvas.index_select(dim, near) + ramp.view(shape) * canvas.index_select(dim, far)
        canvas = torch.cat([canvas, fill], dim)
        offset = gap // 2
        canvas = torch.roll(canvas, offset, dim)
        offsets.append(offset)
    return canvas, (offsets[0], offsets[1])


def _otf(kernel: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """rfft2 of ``kernel`` zero-padded to ``shape`` with its centre moved to index (0, 0)."""
    kh, kw = kernel.shape
    padded = torch.zeros(shape, dtype=kernel.dtype, device=kernel.device)
    padded[:kh, :kw] = kernel
    return torch.fft.rfft2(torch.roll(padded, (-(kh // 2), -(kw // 2)), (0, 1)))


def _latent(y: torch.Tensor, kernel: torch.Tensor, lam: float, prior: str, dark: float = 0.0) -> torch.Tensor:
    """Latent image on ``y``'s periodic extension by half-quadratic splitting (closed-form FFT
    solves), with an L0 (``prior="l0"``, Xu et al. 2013: hard thresholding) or L1 (``"l1"``,
    anisotropic total variation: soft thresholding) penalty ``lam`` on its gradients; returns the
    latent on ``y`` grown by the kernel's radius on each side.

    With ``dark`` > 0 (L0 only) the L0 prior ``dark * lam * ||D(x)||_0`` on the latent's dark
    channel ``D`` (the minimum over :data:`_DARK_PATCH`-wide windows) is added, as Pan et al.
    2016: at each step the pixels that are the minimum of some window and whose value is under
    the step's threshold are pulled to zero. Blur raises the dark channel (it averages the dark
    pixels with brighter neighbours), so the prior favours the sharp latent over the blurred
    one, which the gradient prior alone does not always do. Its splitting weight starts at
    ``dark * lam`` over the Otsu threshold of the squared canvas and doubles up to
    :data:`_DARK_BETA_MAX` alongside the gradients' (one joint schedule instead of Pan et al.'s
    nested one, about 9x cheaper)."""
    r = kernel.shape[-1] // 2
    canvas, (top, left) = _periodic_extension(y, kernel.shape[-1])
    shape = tuple(canvas.shape)
    k_hat = _otf(kernel, shape)
    dx_hat = _otf(torch.tensor([[0.0, -1.0, 1.0]], dtype=y.dtype, device=y.device), shape)
    dy_hat = _otf(torch.tensor([[0.0], [-1.0], [1.0]], dtype=y.dtype, device=y.device), shape)
    numerator = k_hat.conj() * torch.fft.rfft2(canvas)
    k_power = k_hat.abs().square()
    d_power = dx_hat.abs().square() + dy_hat.abs().square()
    latent = canvas
    beta, beta_max = (2 * lam, _BETA_MAX) if prior == "l0" else (_TV_BETA_START * lam, _TV_BETA_MAX)
    use_dark = prior == "l0" and dark > 0
    if use_dark:
        lam_dark = dark * lam
        patch = min(_DARK_PATCH, (min(shape) // 3) | 1)
        beta_dark = lam_dark / max(_otsu(canvas.square()), _OTSU_FLOOR)
    while beta < beta_max:
        gx = torch.roll(latent, -1, 1) - latent
        gy = torch.roll(latent, -1, 0) - latent
        if prior == "l0":
            # Each difference on its own (the proximal map of lam (||gx||_0 + ||gy||_0)): a joint test
            # pairs a pixel's forward differences, a pairing that a rotation or flip of the picture changes.
            gx = gx.masked_fill(gx.square() < lam / beta, 0)
            gy = gy.masked_fill(gy.square() < lam / beta, 0)
        else:
            gx = torch.sign(gx) * (gx.abs() - lam / (2 * beta)).clamp(min=0)
            gy = torch.sign(gy) * (gy.abs() - lam / (2 * beta)).clamp(min=0)
        # The adjoint of the forward differences, applied to the thresholded gradients.
        div = (torch.roll(gx, 1, 1) - gx) + (torch.roll(gy, 1, 0) - gy)
        rhs = numerator + beta * torch.fft.rfft2(div)
        denominator = k_power + beta * d_power
        if use_dark:
            rhs = rhs + beta_dark * torch.fft.rfft2(_dark_target(latent, patch, lam_dark / beta_dark))
            denominator = denominator + beta_dark
            beta_dark = min(2 * beta_dark, _DARK_BETA_MAX)
        latent = torch.fft.irfft2(rhs / denominator, s=shape)
        beta *= 2
    return latent[top - r:top + y.shape[0] + r, left - r:left + y.shape[1] + r]


def _dark_target(x: torch.Tensor, patch: int, threshold: float) -> torch.Tensor:
    """``x`` with the dark-channel pixels whose square is under ``threshold`` set to 0: the
    solution of the dark channel's L0 subproblem, written back onto the pixels it came from (a
    pixel is some window's minimum exactly where the dilation of the dark channel equals it)."""
    dark = _running_min(_running_min(x, patch, 0), patch, 1)
    opened = -_running_min(_running_min(-dark, patch, 0), patch, 1)
    return x.masked_fill((opened == x) & (x.square() < threshold), 0.0)


def _running_min(x: torch.Tensor, width: int, dim: int) -> torch.Tensor:
    """Minimum over a centred window of odd ``width`` along ``dim``, wrapping around (the canvas
    is periodic), in three passes whatever the width (van Herk 1992; Gil & Werman 1993): prefix
    and suffix minima within blocks of ``width``, then one comparison per pixel.

    Example:
        >>> _running_min(torch.tensor([3.0, 1.0, 4.0, 1.5, 5.0, 9.0]), 3, 0)
        tensor([1.0000, 1.0000, 1.0000, 1.5000, 1.5000, 3.0000])
    """
    half = width // 2
    n = x.shape[dim]
    x = x.movedim(dim, -1)
    if half:
        x = torch.cat([x[..., n - half:], x, x[..., :half]], -1)
    blocks = -(-x.shape[-1] // width)
    x = F.pad(x, (0, blocks * width - x.shape[-1]), value=math.inf)
    grouped = x.reshape(*x.shape[:-1], blocks, width)
    prefix = grouped.cummin(-1).values.flatten(-2)
    suffix = grouped.flip(-1).cummin(-1).values.flip(-1).flatten(-2)
    return torch.minimum(suffix[..., :n], prefix[..., width - 1:width - 1 + n]).movedim(-1, dim)


def _otsu(values: torch.Tensor, bins: int = 256) -> float:
    """Otsu's threshold of ``values`` clipped to [0, 1]: the level that best splits their histogram
    into two classes (the upper edge of the lower class's last bin).

    Example:
        >>> _otsu(torch.tensor([0.1, 0.1, 0.7, 0.7]))
        0.1015625
    """
    hist = torch.histc(values.clamp(0, 1).flatten().double(), bins=bins, min=0.0, max=1.0)
    p = hist / hist.sum()
    levels = (torch.arange(bins, dtype=p.dtype, device=p.device) + 0.5) / bins
    w0 = p.cumsum(0)
    m0 = (p * levels).cumsum(0)
    between = (m0[-1] * w0 - m0).square() / (w0 * (1 - w0)).clamp(min=1e-12)
    return (int(between[:-1].argmax()) + 1) / bins


def _salient(gx: torch.Tensor, gy: torch.Tensor, size: int, edges: float) -> torch.Tensor:
    """Where the strongest gradients are: the pixels at or above the smallest magnitude threshold
    that leaves, in each of four orientation bins, at least ``edges * size`` pixels (Cho & Lee 2009).

    The bins are centred on 0, 45, 90 and 135 degrees and told apart by comparisons (no angle is
    computed), so that a rotation or flip of the picture by a multiple of 90 degrees moves every
    pixel to the corresponding bin exactly, ties included."""
    magnitude = gx.square() + gy.square()
    ax, ay = gx.abs(), gy.abs()
    horizontal = ay < _TAN_22_5 * ax
    vertical = ax < _TAN_22_5 * ay
    diagonal = ~(horizontal | vertical)
    product = gx * gy
    need = int(math.ceil(edges * size))
    threshold = math.inf
    for in_bin in (horizontal, vertical, diagonal & (product > 0), diagonal & (product < 0)):
        values = magnitude[in_bin]
        if values.numel() == 0:
            continue
        kth = torch.topk(values, min(need, values.numel())).values[-1]
        threshold = min(threshold, float(kth))
    return magnitude >= threshold


def _kernel_step(y: torch.Tensor, latent: torch.Tensor, side: int, gamma: float, edges: float,
                 sparsity: float = 0.0) -> torch.Tensor:
    """Least-squares kernel in the gradient domain with the "valid" convolution, by conjugate gradients.

    With ``sparsity`` > 0 the hyper-Laplacian prior ``sparsity * sum |k|^p`` (p =
    :data:`_KERNEL_P`, relative to the edges' energy like ``gamma``) is added by
    :data:`_REWEIGHTINGS` reweighted least-squares solves (weight ``p |k|^(p-2)`` per tap about
    the last solution, floored at :data:`_KERNEL_FLOOR`): taps the data leave weak are pushed to
    zero and the kernel concentrates.

    The latent's outer band (the periodic extension and the border where it rings) is left out:
    only observed pixels at least ``side`` from the border are fitted, so that every latent pixel
    they see lies inside the image."""
    trim = min(side, (min(y.shape) - 4) // 4)
    if trim > 0:
        latent = latent[trim:latent.shape[0] - trim, trim:latent.shape[1] - trim]
        y = y[trim:y.shape[0] - trim, trim:y.shape[1] - trim]
    lx = latent[:, 1:] - latent[:, :-1]
    ly = latent[1:, :] - latent[:-1, :]
    lx, ly = _salient_pair(lx, ly, side, edges)
    # Observed gradients of the same pixels (y is latent's valid part for a side x side kernel).
    yx = y[:, 1:] - y[:, :-1]
    yy = y[1:, :] - y[:-1, :]
    pairs = [(lx, yx), (ly, yy)]
    spectra = []
    rhs = torch.zeros(side, side, dtype=y.dtype, device=y.device)
    for g, obs in pairs:
        shape = (next_fast_len(g.shape[0]), next_fast_len(g.shape[1]))
        g_hat = torch.fft.rfft2(g, s=shape)
        spectra.append((g_hat, shape, obs.shape))
        rhs += _adjoint(g_hat, obs, shape, side)
    # gamma is relative to the mean eigenvalue of the normal matrix (the selected edges' energy).
    energy = sum(float(g.square().sum()) for g, _ in pairs)
    reg = gamma * 1e-3 * max(energy, 1e-12)
    k = _conjugate_gradients(lambda v: reg * v + _normal(spectra, v, side), rhs, torch.zeros_like(rhs))
    for _ in range(_REWEIGHTINGS if sparsity > 0 else 0):
        # sum |k|^p by iteratively reweighted least squares about the last solution (in units of its sum).
        total = float(k.clamp(min=0).sum()) or 1.0
        weights = (sparsity * 1e-3 * max(energy, 1e-12) * _KERNEL_P / total ** 2
                   * (k.abs() / total).clamp(min=_KERNEL_FLOOR).pow(_KERNEL_P - 2))
        k = _conjugate_gradients(lambda v: (reg + weights) * v + _normal(spectra, v, side), rhs, k)
    return _constrain(k)


def _normal(spectra, k: torch.Tensor, side: int) -> torch.Tensor:
    """The data term's normal operator on a kernel: sum over the gradient pairs of adjoint(forward(k))."""
    out = torch.zeros_like(k)
    for g_hat, shape, obs_shape in spectra:
        out = out + _adjoint(g_hat, _forward(g_hat, k, shape, obs_shape), shape, side)
    return out


def _conjugate_gradients(normal, rhs: torch.Tensor, k: torch.Tensor, iterations: int = 25) -> torch.Tensor:
    """``iterations`` conjugate-gradient steps on ``normal(k) = rhs`` from ``k``."""
    residual = rhs - normal(k)
    direction = residual.clone()
    rs = float(residual.square().sum())
    for _ in range(iterations):
        if rs <= 1e-20:
            break
        q = normal(direction)
        alpha = rs / float((direction * q).sum())
        k = k + alpha * direction
        residual = residual - alpha * q
        rs_new = float(residual.square().sum())
        direction = residual + (rs_new / rs) * direction
        rs = rs_new
    return k


def _salient_pair(lx: torch.Tensor, ly: torch.Tensor, side: int, edges: float):
    """The salient differences of ``lx`` (H, W-1) and ``ly`` (H-1, W): :func:`_salient` picks pixels
    by their centred gradients, and a difference is kept where either of its two pixels is picked.
    Centred gradients and the either-end rule make the selection symmetric under the picture's
    rotations and flips (forward differences paired at one pixel would shift under a flip)."""
    h, w = ly.shape[0] + 1, lx.shape[1] + 1
    if edges == 0 or h < 3 or w < 3:
        return lx, ly
    cx = (lx[1:-1, 1:] + lx[1:-1, :-1]) / 2  # (H-2, W-2): the interior pixels
    cy = (ly[1:, 1:-1] + ly[:-1, 1:-1]) / 2
    picked = torch.zeros(h, w, dtype=lx.dtype, device=lx.device)
    picked[1:-1, 1:-1] = _salient(cx, cy, side, edges).to(lx.dtype)
    mx = torch.maximum(picked[:, 1:], picked[:, :-1])
    my = torch.maximum(picked[1:, :], picked[:-1, :])
    return lx * mx, ly * my


def _forward(g_hat: torch.Tensor, k: torch.Tensor, shape, obs_shape) -> torch.Tensor:
    """valid(g * k): the observed-size part of the full convolution."""
    side = k.shape[-1]
    full = torch.fft.irfft2(g_hat * torch.fft.rfft2(k, s=shape), s=shape)
    return full[side - 1:side - 1 + obs_shape[0], side - 1:side - 1 + obs_shape[1]]


def _adjoint(g_hat: torch.Tensor, r: torch.Tensor, shape, side: int) -> torch.Tensor:
    """The adjoint of :func:`_forward` in k: the correlation of g with r, on the side x side support."""
    padded = torch.zeros(shape, dtype=r.dtype, device=r.device)
    padded[side - 1:side - 1 + r.shape[0], side - 1:side - 1 + r.shape[1]] = r
    corr = torch.fft.irfft2(g_hat.conj() * torch.fft.rfft2(padded), s=shape)
    return corr[:side, :side]


def _constrain(k: torch.Tensor) -> torch.Tensor:
    """Non-negative, small values and weak isolated fragments removed, sum 1."""
    k = k.clamp(min=0)
    peak = float(k.max())
    if not peak > 0:
        out = torch.zeros_like(k)
        out[k.shape[0] // 2, k.shape[1] // 2] = 1
        return out
    k = torch.where(k < _CUT * peak, torch.zeros_like(k), k)
    k = k / k.sum()
    from scipy import ndimage

    labels, count = ndimage.label(k.cpu().numpy() > 0, structure=np.ones((3, 3)))
    if count > 1:
        labels_t = torch.from_numpy(labels).to(k.device)
        mass = torch.zeros(count + 1, dtype=k.dtype, device=k.device).index_add_(0, labels_t.flatten(), k.flatten())
        keep = mass >= 0.1
        keep[0] = False
        if not bool(keep.any()):
            keep[int(mass[1:].argmax()) + 1] = True
        k = k * keep[labels_t]
    return k / k.sum()


def _centre(kernel: torch.Tensor) -> torch.Tensor:
    """Shift the kernel by whole pixels so that its centre of mass is as close to the centre as the support allows."""
    side = kernel.shape[-1]
    idx = torch.arange(side, dtype=kernel.dtype, device=kernel.device)
    com_r = float((kernel.sum(1) * idx).sum())
    com_c = float((kernel.sum(0) * idx).sum())
    rows, cols = torch.nonzero(kernel > 0, as_tuple=True)
    shift_r = int(round(side // 2 - com_r))
    shift_c = int(round(side // 2 - com_c))
    # Never push mass off the support.
    shift_r = max(-int(rows.min()), min(shift_r, side - 1 - int(rows.max())))
    shift_c = max(-int(cols.min()), min(shift_c, side - 1 - int(cols.max())))
    out = torch.roll(kernel, (shift_r, shift_c), (0, 1))
    return out / out.sum()
