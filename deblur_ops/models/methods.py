"""The learned models of paper 004 as restoration methods, and ``estimate_motion``.

``deblur(image, psf, method="irc-net")`` runs the shipped fine-tuned IRC-Net with any blur
description (uniform PSF, ``MotionField``, ``PSFGrid``); ``method="blind-irc"`` needs no PSF:
Motion-Net estimates the motion field, IRC-Net removes it. Models are loaded once per device.
"""
from __future__ import annotations

import warnings

import numpy as np
import torch

from .. import psf as psf_lib
from ..data.noise import noise_sigma_per_item
from ..psf.estimate import DARK_CHANNEL, KERNEL_SPARSITY, near_sharp_warning
from ..restore.registry import register
from ..validation import MIN_IMAGE_SIDE, as_float_tensor, check_positive, resolve_device
from .pretrained import load_pretrained

_CACHE: dict[tuple[str, str], torch.nn.Module] = {}


def cached_model(name: str, device) -> torch.nn.Module:
    """``load_pretrained(name)`` on ``device``, loaded once per process."""
    key = (name, str(torch.device(device)))
    if key not in _CACHE:
        _CACHE[key] = load_pretrained(name, device=device)
    return _CACHE[key]


def _check_image(image: torch.Tensor) -> None:
    if not isinstance(image, torch.Tensor) or image.dim() != 4:
        raise ValueError(f"the learned paper-004 models take 2D images (B, C, H, W), got shape "
                         f"{tuple(getattr(image, 'shape', ()))}; volumes are not supported")
    if min(image.shape[-2:]) < MIN_IMAGE_SIDE:
        raise ValueError(f"image must be at least {MIN_IMAGE_SIDE}x{MIN_IMAGE_SIDE} pixels, got {tuple(image.shape[-2:])}")


@register("irc-net", "IRC-Net (paper 004): unrolled ADMM + IRC with learned shrinkage and inverse filters",
          spatially_varying=True)
def irc_net(image: torch.Tensor, psf, *, noise_sigma=None, weights: str = "irc-motion") -> torch.Tensor:
    """Non-blind deblurring with the shipped fine-tuned IRC-Net (:class:`deblur_ops.models.IRCNet`).

    Args:
        image: (B, C, H, W).
        psf: uniform PSF (kh, kw), ``psf.MotionField`` (uses the learned motion bank) or
            ``psf.PSFGrid``.
        noise_sigma: noise level for the shrinkage; estimated when None.
        weights: registry name or path of an IRC-Net weight file.

    Example:
        >>> import torch
        >>> from deblur_ops.psf import linear_motion_kernel
        >>> irc_net(torch.rand(1, 1, 40, 40), linear_motion_kernel(5, 0)).shape
        torch.Size([1, 1, 40, 40])

    References:
        T. Eboli, J. Sun, J. Ponce. Neural Embedding of an Iterative Deconvolution Algorithm for Motion Blur
        Estimation and Removal. Preprint hal-01857177, 2018 (paper 004 in docs/references.md).
    """
    _check_image(image)
    model = _model(weights, image.device, "irc")
    with torch.no_grad():
        if image.shape[-2] * image.shape[-1] <= TILE_SIDE ** 2 or isinstance(psf, psf_lib.PSFGrid):
            return model(image, psf, noise_sigma=noise_sigma)
        # Peak memory is ~120x the image (a 1024^2 grey image: +469 MiB): large images go through
        # overlapping tiles, with one noise level for all of them.
        sigma = noise_sigma_per_item(image, noise_sigma)
        return _in_tiles(lambda tile, tile_psf: model(tile, tile_psf, noise_sigma=sigma), image, psf)


# Side of the tiles a large image is restored in by the paper-004 networks (bounds their memory).
TILE_SIDE = 1024


def _in_tiles(run, image: torch.Tensor, psf) -> torch.Tensor:
    """``run(tile, tile_psf)`` over tiles of at most ~TILE_SIDE^2 pixels that overlap by three blur
    extents, each keeping its centre: memory bounded by a tile, not by the image."""
    if isinstance(psf, psf_lib.MotionField):
        extent = int(float(psf.length.max()))
    else:
        extent = max(psf.shape[-2:])
    margin = 3 * extent
    step = max(TILE_SIDE - 2 * margin, MIN_IMAGE_SIDE)
    H, W = image.shape[-2:]
    out = torch.empty_like(image)
    for top in range(0, H, step):
        for left in range(0, W, step):
            r0, r1 = max(0, top - margin), min(H, top + step + margin)
            c0, c1 = max(0, left - margin), min(W, left + step + margin)
            tile_psf = psf
            if isinstance(psf, psf_lib.MotionField):
                tile_psf = psf.crop(slice(r0, r1), slice(c0, c1))
            restored = run(image[..., r0:r1, c0:c1], tile_psf)
            bottom, right = min(H, top + step), min(W, left + step)
            out[..., top:bottom, left:right] = restored[..., top - r0:bottom - r0, left - c0:right - c0]
    return out


def _model(weights: str, device, kind: str) -> torch.nn.Module:
    from .blind_irc import BlindIRC
    from .irc_net import IRCNet
    from .pretrained import resolve_weights

    builder, recipe = (IRCNet, "irc") if kind == "irc" else (BlindIRC, "blind")
    return resolve_weights(weights, builder, device=device, cached=lambda n, d: cached_model(n, d), recipe=recipe)


# blind-irc's kernel support from Motion-Net's median blur length L: the odd side nearest
# MOTION_SUPPORT[0] * L + MOTION_SUPPORT[1] px (at least 5, at most psf_size). On 72 development cases
# (camera shake, 1 % noise, the kernel's side given as the largest support) this cap on the supports
# tried changed the restorations by -0.1 to +0.1 dB and was under the side in 27 of them; Motion-Net's
# length correlated 0.72 with the true kernels' extent.
MOTION_SUPPORT = (2.0, 4.0)


def estimate_psf_motion_net(image, psf_size: int | None = None, *, sparsity: float = KERNEL_SPARSITY,
                            dark_channel: float = DARK_CHANNEL, device="auto", motion_weights: str = "motion-net",
                            callback=None):
    """Paper 004's Motion-Net as the initialiser of a kernel refined against the data.

    Motion-Net (:func:`estimate_motion`) reads the blur's per-pixel linear motion; its median length
    L sets the largest kernel support, ``2 L + 4`` px (odd, at least 5, at most ``psf_size``), and
    :func:`deblur_ops.estimate_psf` fits a free-form kernel to the image on that support and the
    smaller ones (camera shake is curved; a linear motion cannot hold it). Method ``"blind-irc"``
    restores with it through IRC-Net.

    Args:
        image: (H, W) grey or (H, W, C) colour, NumPy array or torch tensor, any value range.
        psf_size: the largest odd support allowed; default 31, or the largest
            :func:`deblur_ops.estimate_psf` allows on smaller images.
        sparsity: the kernel's sparsity prior (:func:`deblur_ops.estimate_psf`).
        dark_channel: the latent's dark-channel prior (:func:`deblur_ops.estimate_psf`; off by default).
        device: ``"auto"``, ``"cpu"``, ``"cuda"``.
        motion_weights: Motion-Net weights (registry name).
        callback: ``callback(done, total)`` after each pyramid level (see :func:`deblur_ops.estimate_psf`).

    Returns:
        ``(kernel, info)``: the kernel as :func:`deblur_ops.estimate_psf` returns it ((s, s),
        non-negative, sum 1), and a dict with Motion-Net's ``"motion_length"`` (median, px) and
        ``"motion_angle"`` (mean axial direction, degrees in [0, 180)) and the ``"support"`` used.

    Example:
        >>> import numpy as np
        >>> kernel, info = estimate_psf_motion_net(np.random.rand(48, 48).astype(np.float32), 9)
        >>> kernel.shape[0] <= 9, sorted(info)
        (True, ['motion_angle', 'motion_length', 'support'])

    References:
        T. Eboli, J. Sun, J. Ponce. Neural Embedding of an Iterative Deconvolution Algorithm for Motion Blur
        Estimation and Removal. Preprint hal-01857177, 2018 (paper 004 in docs/references.md).
    """
    from ..psf.estimate import estimate_psf

    field = estimate_motion(image, device=device, weights=motion_weights)
    grey_shape = field.shape
    largest = default_psf_size(grey_shape) if psf_size is None else psf_size
    if isinstance(largest, bool) or not isinstance(largest, (int, np.integer)) or largest < 3 or largest % 2 == 0:
        raise ValueError(f"psf_size must be an odd integer >= 3 (the largest kernel support in pixels), got {psf_size!r}")
    if 3 * largest > min(grey_shape):
        raise ValueError(f"psf_size {largest} is too large for a {grey_shape[0]}x{grey_shape[1]} image: the kernel "
                         f"support may be at most a third of the shorter side ({min(grey_shape) // 3}); use a "
                         f"smaller psf_size, or leave it out")
    length = float(field.length.median())
    doubled = torch.deg2rad(2 * field.angle)
    angle = float(torch.rad2deg(torch.atan2(torch.sin(doubled).mean(), torch.cos(doubled).mean())) / 2) % 180.0
    support = int(round(MOTION_SUPPORT[0] * length + MOTION_SUPPORT[1])) | 1
    support = min(int(largest), max(5, support))
    kernel = estimate_psf(image, support, sparsity=sparsity, dark_channel=dark_channel, source="edges", device=device,
                          callback=callback)
    return kernel, {"motion_length": length, "motion_angle": angle, "support": support}


@register("blind-irc", "Blind (paper 004): Motion-Net sets the blur's extent, an L0 MAP estimate fits the kernel, "
          "IRC-Net restores; +0.6 to +2.6 dB on camera shake", needs_psf=False)
def blind_irc(image: torch.Tensor, psf=None, *, psf_size: int | None = None, noise_sigma=None,
              sparsity: float = KERNEL_SPARSITY, dark_channel: float = DARK_CHANNEL, weights: str = "irc-motion",
              motion_weights: str = "motion-net",
              end_to_end: str | None = None) -> torch.Tensor:
    """Blind motion deblurring with paper 004's networks: Motion-Net initialises, the data refine, IRC-Net restores.

    Each picture's kernel comes from :func:`estimate_psf_motion_net` (Motion-Net's median blur
    length sets the support, the L0 MAP estimator fits the kernel to the picture), and IRC-Net
    restores with it at :data:`TV_IRC_NOISE_FACTOR` times the noise level, on the picture's range
    (as method ``"blind"``). Paper 004's end-to-end network (Motion-Net's per-pixel field straight
    into IRC-Net) collapsed to a denoiser in training: it is kept as ``end_to_end="blind-irc"``.
    Method ``"blind"`` (the same kernel estimator on the full support ladder, restored by
    ``"tv-irc"``) is the better default on mild blur: on ``deblur evaluate --blind`` (held-out
    photos, Boracchi–Foi camera shake, 1 % noise) ``blind-irc`` gains +1.59 dB over the blurred
    input (97 % of Levin error ratios under 3; ``blind`` +1.95 dB, 100 %), and +3.11 dB (94 %;
    ``blind`` +3.05 dB, 94 %) when the kernels span their 11-35 px supports.

    Args:
        image: (B, C, H, W); each item gets its own kernel, estimated on its channels' mean.
        psf: must be None (the blur is estimated).
        psf_size: largest odd kernel side allowed (Motion-Net's length picks a support up to it);
            default 31, or the largest allowed on smaller images.
        noise_sigma: noise level in the image's units; estimated when None.
        sparsity: the kernel's sparsity prior (:func:`deblur_ops.estimate_psf`).
        dark_channel: the latent's dark-channel prior (:func:`deblur_ops.estimate_psf`; off by default).
        weights: IRC-Net weights (registry name or path).
        motion_weights: Motion-Net weights (registry name).
        end_to_end: None, or the weights of a :class:`deblur_ops.models.BlindIRC` (e.g.
            ``"blind-irc"``) to run the end-to-end network instead (no kernel estimate: it gains
            +0.15 dB on camera shake, by denoising).

    To see the kernel, call :func:`estimate_psf_motion_net`; ``deblur run --method blind-irc``
    writes it next to its output.

    Example:
        >>> import torch
        >>> blind_irc(torch.rand(1, 1, 48, 48), psf_size=9).shape
        torch.Size([1, 1, 48, 48])

    References:
        T. Eboli, J. Sun, J. Ponce. Neural Embedding of an Iterative Deconvolution Algorithm for Motion Blur
        Estimation and Removal. Preprint hal-01857177, 2018 (paper 004 in docs/references.md).
    """
    if psf is not None:
        raise ValueError("blind-irc estimates the blur itself: pass psf=None (or use method='irc-net' with your PSF)")
    _check_image(image)
    if end_to_end is not None:
        model = _model(end_to_end, image.device, "blind")
        with torch.no_grad():
            return model(image, noise_sigma=noise_sigma)
    given = None if noise_sigma is None else noise_sigma_per_item(image, noise_sigma)
    out = torch.empty_like(image)
    for b in range(image.shape[0]):
        plane = image[b].mean(0)
        if bool(plane.max() == plane.min()):  # a flat frame carries no blur to estimate: it is its own restoration
            out[b] = image[b]
            continue
        scale = blind_scale(plane)
        kernel, _ = estimate_psf_motion_net(plane, psf_size, sparsity=sparsity, dark_channel=dark_channel,
                                            device=image.device,
                                            motion_weights=motion_weights)
        _caution(kernel)
        item = image[b:b + 1].contiguous() / scale
        sigma = noise_sigma_per_item(item, None) if given is None else given[b:b + 1] / scale
        out[b:b + 1] = irc_net(item, kernel.to(image.dtype), noise_sigma=TV_IRC_NOISE_FACTOR * sigma,
                               weights=weights) * scale
    return out


def _caution(kernel) -> None:
    """A UserWarning when an estimated kernel marks a near-sharp picture (:func:`deblur_ops.psf.estimate.near_sharp_warning`)."""
    message = near_sharp_warning(kernel.detach().cpu())
    if message is not None:
        warnings.warn(message, UserWarning, stacklevel=3)


# IRC-Net's noise level in "tv-irc", relative to the given or estimated one: a kernel estimated blind is
# wrong by more than the noise, and a stronger shrinkage keeps IRC-Net from amplifying that error.
TV_IRC_NOISE_FACTOR = 3.0
# The refinement's noise level in "tv-irc" with refine=True, relative to the given or estimated one (on the
# development images' estimated kernels 2x beat 1x: +1.85 against +1.26 dB on compact shake).
TV_IRC_REFINE_NOISE_FACTOR = 2.0


@register("tv-irc", "Mean of isotropic ADMM-TV and IRC-Net (3x noise level): robust to errors of an estimated "
          "kernel; method blind's default")
def tv_irc(image: torch.Tensor, psf: torch.Tensor, *, noise_sigma=None, weights: str = "irc-motion",
           refine: bool = False) -> torch.Tensor:
    """The mean of two restorations with one uniform PSF: isotropic ``admm_tv`` and ``irc-net`` with
    its noise level raised :data:`TV_IRC_NOISE_FACTOR` times. Made for kernels estimated blind
    (:func:`deblur_ops.estimate_psf`): their errors make IRC-Net ring and TV flatten texture, and the
    two errors partly cancel. With kernels estimated on 72 development cases (camera shake,
    1 % noise) it gained +4.19 dB over the blurred input where the kernels span their 15-31 px
    supports (admm_tv +3.70, irc-net at the same raised noise level +4.22, irc-net +3.41) and
    +1.63 dB on compact shake (admm_tv +1.58, irc-net +0.96 / −0.28). With the true kernel use
    ``irc-net``: there it is the better of the two.

    Args:
        image: (B, C, H, W).
        psf: uniform PSF (kh, kw) or one per batch item.
        noise_sigma: noise level (number, (B,) or (B, C)); estimated when None. TV's weight
            follows it, IRC-Net gets three times it.
        weights: IRC-Net weights (registry name or path), as for ``irc-net``.
        refine: then :data:`IRC_PNP_STEPS` plug-and-play steps (:func:`deblur_ops.restore.pnp`)
            started from the mean, at :data:`TV_IRC_REFINE_NOISE_FACTOR` times the noise level.
            With kernels estimated on 42 development cases (1 % noise) this gained +0.30 dB on
            compact and +0.35 dB on spanning camera shake (scored inside a border of the kernel's
            side); as method ``"blind"``'s step on ``deblur evaluate --blind`` (held-out) it gained
            +0.18 dB with spanning kernels but lost 0.42 dB on the default protocol, so ``"blind"``
            does not use it. For a kernel ``deblur run --method blind`` wrote:
            ``deblur run in.tif out.tif --psf out_psf.tif --method tv-irc --param refine=true``.

    Example:
        >>> import torch
        >>> from deblur_ops.psf import linear_motion_kernel
        >>> tv_irc(torch.rand(1, 1, 40, 40), linear_motion_kernel(5, 0)).shape
        torch.Size([1, 1, 40, 40])

    References:
        T. Eboli, J. Sun, J. Ponce. Neural Embedding of an Iterative Deconvolution Algorithm for Motion Blur
        Estimation and Removal. Preprint hal-01857177, 2018 (paper 004 in docs/references.md).
    """
    from ..restore.admm_tv import admm_tv

    _check_image(image)
    if not isinstance(refine, bool):
        raise ValueError(f"refine must be True or False, got {refine!r}")
    sigma = noise_sigma_per_item(image, noise_sigma)
    tv = admm_tv(image, psf, noise_sigma=sigma, isotropic=True)
    irc = irc_net(image, psf, noise_sigma=TV_IRC_NOISE_FACTOR * sigma, weights=weights)
    mean = 0.5 * (tv + irc)
    if not refine:
        return mean
    from ..restore.pnp import pnp

    return pnp(image, psf, noise_sigma=TV_IRC_REFINE_NOISE_FACTOR * sigma, init=mean, start_sigma=IRC_PNP_START,
               data_weight=IRC_PNP_WEIGHT, iterations=IRC_PNP_STEPS)


# The plug-and-play refinement of "irc-pnp": its first denoising strength (relative to the image's peak),
# DPIR's data weight and its number of steps. Chosen on the development images (coffee, brick, clock,
# horse; Boracchi-Foi shake, 1 % noise, true kernels) from start 0.02 or 0.04 and weight 0.3 or 1.0, see
# benchmarks/results/2026-12-03_amd-epyc_pnp_nlm_dev.md.
IRC_PNP_START = 0.04
IRC_PNP_WEIGHT = 0.3
IRC_PNP_STEPS = 6


@register("irc-pnp", "IRC-Net, then plug-and-play refinement with non-local means: keeps the texture and edges "
          "IRC-Net's shrinkage flattens; 2D")
def irc_pnp(image: torch.Tensor, psf: torch.Tensor, *, noise_sigma=None, weights: str = "irc-motion",
            start_sigma: float = IRC_PNP_START, data_weight: float = IRC_PNP_WEIGHT,
            iterations: int = IRC_PNP_STEPS, callback=None) -> torch.Tensor:
    """``irc-net``'s restoration refined by :func:`deblur_ops.restore.pnp` started from it.

    IRC-Net's learned shrinkage of a few filter responses removes the blur but flattens fine texture
    and leaves faint ringing; a few plug-and-play steps (exact FFT data step, non-local-means
    prior, strengths from ``start_sigma`` down to the noise level) restore what the data supports
    and average the rest across similar patches. With the true kernel on the development images
    (Boracchi–Foi shake, 1 % noise, 255², whole-image PSNR) it gained +1.8 dB over ``irc-net`` on
    compact shake (11-35 px supports) and +1.4 dB where the kernels span their 15-31 px supports
    (16 and 12 cases; at worst 1.7 dB below ``irc-net`` on one case).

    Args:
        image: (B, C, H, W).
        psf: uniform PSF (kh, kw) or one per batch item.
        noise_sigma: noise level (number, (B,) or (B, C)); estimated when None.
        weights: IRC-Net weights (registry name or path), as for ``irc-net``.
        start_sigma, data_weight, iterations: the refinement's schedule
            (:func:`deblur_ops.restore.pnp`).
        callback: ``callback(i, estimate)`` after refinement step i (the plugin's progress and
            Cancel).

    Example:
        >>> import torch
        >>> from deblur_ops.psf import linear_motion_kernel
        >>> irc_pnp(torch.rand(1, 1, 40, 40), linear_motion_kernel(5, 0), iterations=2).shape
        torch.Size([1, 1, 40, 40])

    References:
        - T. Eboli, J. Sun, J. Ponce. Neural Embedding of an Iterative Deconvolution Algorithm for Motion Blur
          Estimation and Removal. Preprint hal-01857177, 2018 (paper 004 in docs/references.md).
        - K. Zhang et al. Plug-and-play image restoration with deep denoiser prior. IEEE TPAMI 44(10), 2021.
    """
    from ..restore.pnp import pnp

    _check_image(image)
    start = irc_net(image, psf, noise_sigma=noise_sigma, weights=weights)
    return pnp(image, psf, noise_sigma=noise_sigma, init=start, start_sigma=start_sigma, data_weight=data_weight,
               iterations=iterations, callback=callback)


# The non-blind method that method "blind" (and `deblur run --method blind`) restores with, and its settings:
# on pictures whose kernel came from edges, and on star fields / bead images whose PSF came from point sources
# (Richardson-Lucy: non-negative, Poisson; on simulated star fields admm_tv lost 0.2-1.8 dB even with the true PSF).
# "tv-irc" (the mean of isotropic admm_tv and irc-net at 3x the noise level): with the development images'
# estimated kernels +0.49 dB over isotropic admm_tv on spanning shake, +0.05 dB on compact shake.
BLIND_NONBLIND = "tv-irc"
BLIND_NONBLIND_POINTS = "richardson_lucy"
# ... and with a PSF grid measured from the stars (psf_grid=), a spatially varying method.
BLIND_NONBLIND_GRID = "sv_richardson_lucy"


def blind_region(region, shape, psf_size: int) -> tuple[slice, slice]:
    """Rows and columns of method "blind"'s ``region``, the part of an (H, W) ``shape`` image the
    kernel is estimated from: ``"top:bottom,left:right"`` (Python slices: the end left out; an
    empty bound is the image's edge) or ``((top, bottom), (left, right))``. It must lie in the
    image and be at least 3 ``psf_size`` px along each side (the estimator's smallest picture).

    Example:
        >>> blind_region("10:110, :100", (128, 128), 31)
        (slice(10, 110, None), slice(0, 100, None))
        >>> blind_region([[0, 96], [32, 128]], (128, 128), 31)
        (slice(0, 96, None), slice(32, 128, None))
    """
    height, width = (int(n) for n in shape)
    bounds = None
    if isinstance(region, str):
        parts = [part.strip() for part in region.split(",")]
        if len(parts) == 2 and all(part.count(":") == 1 for part in parts):
            try:
                bounds = [[int(b) if b.strip() else default for b, default in zip(part.split(":"), (0, n))]
                          for part, n in zip(parts, (height, width))]
            except ValueError:
                bounds = None
    elif isinstance(region, (list, tuple)) and len(region) == 2 and all(
            isinstance(pair, (list, tuple)) and len(pair) == 2 and all(
                isinstance(b, (int, np.integer)) and not isinstance(b, bool) for b in pair) for pair in region):
        bounds = [[int(b) for b in pair] for pair in region]
    if bounds is None:
        raise ValueError(f"region must be 'top:bottom,left:right' (rows, then columns, the ends left out, e.g. "
                         f"'40:200,60:220') or ((top, bottom), (left, right)), got {region!r}")
    (top, bottom), (left, right) = bounds
    if not (0 <= top < bottom <= height and 0 <= left < right <= width):
        raise ValueError(f"region rows {top}:{bottom}, columns {left}:{right} must lie inside the {height} x {width} "
                         f"image, each start before its end")
    if min(bottom - top, right - left) < 3 * psf_size:
        raise ValueError(f"region rows {top}:{bottom}, columns {left}:{right} is {bottom - top} x {right - left} px: a "
                         f"{psf_size} px kernel needs at least {3 * psf_size} px along each side; widen the region or "
                         f"lower psf_size")
    return slice(top, bottom), slice(left, right)


def blind_grid_shape(psf_grid) -> tuple[int, int]:
    """The (rows, columns) of method "blind"'s ``psf_grid``: ``"3x3"``, ``(3, 3)``, ``[3, 3]`` or ``3``.

    Example:
        >>> blind_grid_shape("3x4"), blind_grid_shape([2, 2]), blind_grid_shape(3)
        ((3, 4), (2, 2), (3, 3))
    """
    value = psf_grid
    if isinstance(value, str):
        parts = value.lower().replace(",", "x").split("x")
        try:
            value = [int(part) for part in parts]
        except ValueError:
            value = None
    elif isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        value = [int(value)] * 2
    if (not isinstance(value, (list, tuple)) or len(value) != 2
            or not all(isinstance(n, (int, np.integer)) and not isinstance(n, bool) and n >= 1 for n in value)):
        raise ValueError(f"psf_grid must be rows x columns of PSF nodes, e.g. '3x3' or (3, 3), got {psf_grid!r}")
    return int(value[0]), int(value[1])


def blind_nonblind(nonblind: str | None, source: str) -> str:
    """The non-blind method of method "blind": ``nonblind`` when given, else by what the kernel was
    read from (``"edges"``: :data:`BLIND_NONBLIND`, ``"points"``: :data:`BLIND_NONBLIND_POINTS`).

    Example:
        >>> blind_nonblind(None, "points"), blind_nonblind(None, "edges"), blind_nonblind("irc-net", "points")
        ('richardson_lucy', 'tv-irc', 'irc-net')
    """
    if nonblind is not None:
        return nonblind
    return BLIND_NONBLIND_POINTS if source == "points" else BLIND_NONBLIND


def blind_nonblind_defaults(nonblind: str) -> dict:
    """Parameters method "blind" gives its non-blind step ``nonblind`` unless the caller sets them:
    isotropic TV for ``admm_tv`` (on the development images' estimated kernels +0.1-0.2 dB over
    the anisotropic default), none for other methods (``tv-irc``'s ``refine`` gained on the
    development images but lost 0.42 dB on the held-out default protocol: not a default).

    Example:
        >>> blind_nonblind_defaults("admm_tv"), blind_nonblind_defaults("irc-net")
        ({'isotropic': True}, {})
    """
    return {"isotropic": True} if nonblind == "admm_tv" else {}


def blind_scale(plane) -> float:
    """The range of a picture that method "blind" restores on: its 99.9th minus its 0.1th percentile
    (or its largest magnitude, or 1, for a flat picture). The default TV weight follows the data's
    units, so restoring ``image / blind_scale(image)`` and scaling back makes the result the same
    for a 16-bit file read as 0..65535 as for the same picture in [0, 1].

    Example:
        >>> import numpy as np
        >>> round(blind_scale(np.linspace(0, 1000, 10001)), 1)
        998.0
    """
    x = torch.as_tensor(plane).detach().flatten().double()
    x = x[:: max(1, x.numel() // 1_000_000)]
    lo, hi = torch.quantile(x, torch.tensor([0.001, 0.999], dtype=x.dtype, device=x.device)).tolist()
    return hi - lo if hi > lo else max(abs(hi), 1.0)


# Kernel side the method "blind" estimates when the caller gives none: holds camera shake up to ~30 px.
BLIND_PSF_SIZE = 31


def default_psf_size(shape) -> int:
    """The kernel side method "blind" estimates when given none: 31 px, or the largest odd side
    :func:`deblur_ops.estimate_psf` allows (a third of the shorter side) on smaller images.

    Example:
        >>> default_psf_size((512, 512)), default_psf_size((48, 64))
        (31, 15)
    """
    return max(3, min(BLIND_PSF_SIZE, (min(shape) // 3 - 1) | 1))


@register("blind", "Blind: estimates one PSF (L0 MAP with adaptive support, or point sources on star fields), then "
          "TV + IRC-Net (Richardson-Lucy for point sources); +1.2 to +2.5 dB on camera shake", needs_psf=False)
def blind(image: torch.Tensor, psf=None, *, psf_size: int | None = None, nonblind: str | None = None,
          source: str = "auto", psf_grid=None, noise_sigma=None,
          sparsity: float = KERNEL_SPARSITY, dark_channel: float = DARK_CHANNEL, region=None) -> torch.Tensor:
    """Blind deblurring of uniformly blurred images: :func:`deblur_ops.psf.estimate_psf`, then a non-blind method.

    On ``deblur evaluate --blind`` (held-out photos, Boracchi–Foi camera shake on 11-35 px supports,
    1 % noise) it gains +1.95 dB over the blurred input with 100 % of Levin error ratios under 3, and
    +3.05 dB (94 %) when the kernels span their supports (``--span-kernels``; the true kernel with
    ``irc-net`` gives +3.7 and +5.2 dB). Near-sharp and strongly textured pictures can get worse: check the kernel
    (``deblur run`` writes it) before trusting the result.

    Args:
        image: (B, C, H, W); each item gets its own kernel, estimated on its channels' mean.
        psf: must be None (the blur is estimated).
        psf_size: largest odd side of the estimated kernel in pixels (at least the blur's extent;
            smaller supports are tried too; at most a third of the image's shorter side); default
            31, or the largest allowed on smaller images.
        nonblind: the method that restores with the estimated kernel; default ``"tv-irc"``
            (the mean of isotropic TV and IRC-Net at 3x the noise level, more robust to kernel
            errors than either on the development images) for kernels read from edges and
            ``"richardson_lucy"`` for PSFs read from point sources; or any method taking a
            uniform PSF, e.g. ``"admm_tv"`` or ``"irc-net"``.
        source: what the kernel is read from (:func:`deblur_ops.estimate_psf`): ``"auto"``
            (point sources on a frame of mostly empty sky with at least 5 usable ones, else edges), ``"edges"``,
            ``"points"`` (stars, beads: ``psf_size`` should then hold the PSF's visible wings).
        psf_grid: rows x columns (``"3x3"``, ``(3, 3)``) of a spatially varying PSF measured from
            the stars or beads found near each node
            (:func:`deblur_ops.psf.psf_grid_from_point_sources`; point sources only), restored with
            ``"sv_richardson_lucy"`` (or a spatially varying ``nonblind``). Worth it with a few
            stars per node: on simulated 256² fields with 22-24 stars a 3 x 3 grid cut the
            photometry error from 0.16 to 0.12 and 0.15 to 0.10; with 12 stars it did worse than
            one PSF.
        noise_sigma: noise level in the image's units, for ``tv-irc``, ``admm_tv`` or ``irc-net`` (estimated
            when None; not used by the point-source default, Richardson-Lucy). The restoration runs on the image divided by its range (0.1 / 99.9
            percentiles), so the result does not depend on the units (0..1 or 0..65535).
        sparsity: weight of the estimated kernel's sparsity prior (:func:`deblur_ops.estimate_psf`'s
            ``sparsity``, default :data:`deblur_ops.psf.estimate.KERNEL_SPARSITY`); 0 for the estimator
            without it, better on long camera shake spanning 27-35 px supports.
        dark_channel: weight of the latent image's dark-channel prior (:func:`deblur_ops.estimate_psf`'s
            ``dark_channel``; default 0, off: 1 helped on development photos, not on the held-out ones).
        region: estimate the kernel from this part of the picture only, ``"top:bottom,left:right"``
            in pixels (rows, then columns; :func:`blind_region`); the whole picture is restored with
            it. For blur that varies across the frame (pick the part you care about) or blown
            highlights (leave them out). Default: the whole picture (pictures over 512 px: the
            window richest in edges, :func:`deblur_ops.estimate_psf`'s ``window``).

    To see or keep the kernel, call :func:`deblur_ops.estimate_psf` yourself and pass it to
    :func:`deblur_ops.deblur`; ``deblur run --method blind`` writes it next to its output.

    Example:
        >>> import torch
        >>> blind(torch.rand(1, 1, 48, 48), psf_size=9).shape
        torch.Size([1, 1, 48, 48])
    """
    from ..psf.estimate import estimate_psf
    from ..restore.registry import get_method

    if psf is not None:
        raise ValueError("method 'blind' estimates the blur itself: pass psf=None (or give your PSF to a "
                         "non-blind method such as 'irc-net')")
    if not isinstance(image, torch.Tensor) or image.dim() != 4:
        raise ValueError(f"method 'blind' takes 2D images (B, C, H, W), got shape {tuple(getattr(image, 'shape', ()))}")
    grid_shape = None if psf_grid is None else blind_grid_shape(psf_grid)
    if grid_shape is not None and source == "edges":
        raise ValueError("psf_grid is measured from point sources (stars, beads): use source='points' or 'auto', "
                         "or leave psf_grid out for one PSF from the edges")
    if nonblind is not None:
        check_blind_nonblind(nonblind, noise_sigma, spatially_varying=grid_shape is not None)
    if psf_size is None:
        psf_size = default_psf_size(image.shape[-2:])
    area = (slice(None), slice(None))
    if region is not None:
        if grid_shape is not None:
            raise ValueError("region and psf_grid exclude each other: a PSF grid is measured over the whole frame; "
                             "drop one of them")
        area = blind_region(region, image.shape[-2:], psf_size)
    out = torch.empty_like(image)
    for b in range(image.shape[0]):
        plane = image[b].mean(0)
        if bool(plane.max() == plane.min()):  # a flat frame carries no blur to estimate: it is its own restoration
            out[b] = image[b]
            continue
        scale = blind_scale(plane)
        if grid_shape is not None:
            from ..psf.fields import psf_grid_from_point_sources

            grid = psf_grid_from_point_sources(plane.detach().cpu(), psf_size, grid_shape)[0]
            name = nonblind or BLIND_NONBLIND_GRID
            params = {"noise_sigma": noise_sigma / scale} if noise_sigma is not None and name in NOISE_SIGMA_METHODS else {}
            out[b:b + 1] = get_method(name).function(image[b:b + 1].contiguous() / scale, grid, **params) * scale
            continue
        kernel, used = estimate_psf(plane[area], psf_size, source=source, sparsity=sparsity,
                                    dark_channel=dark_channel, device=image.device, return_source=True)
        if used == "edges":
            _caution(kernel)
        name = blind_nonblind(nonblind, used)
        params = blind_nonblind_defaults(name)
        # Restored on the scale of the picture's range, as it was measured: the default TV weight follows
        # the data's units, so a 16-bit file read as 0..65535 would otherwise get a weaker prior.
        if noise_sigma is not None and name in NOISE_SIGMA_METHODS:
            params = {**params, "noise_sigma": noise_sigma / scale}
        restored = get_method(name).function(image[b:b + 1].contiguous() / scale, kernel.to(image.dtype), **params)
        out[b:b + 1] = restored * scale
    return out


# The non-blind steps of method "blind" that take a noise level (noise_sigma).
NOISE_SIGMA_METHODS = ("tv-irc", "irc-net", "admm_tv", "nu_cg")


def check_blind_nonblind(nonblind: str, noise_sigma, spatially_varying: bool = False) -> None:
    """A non-blind step the caller chose: a method that takes a PSF (a PSF grid with
    ``spatially_varying``), and noise_sigma only where it is used."""
    from ..restore.registry import get_method

    method = get_method(nonblind)
    if not method.needs_psf:
        raise ValueError(f"nonblind must be a method that takes a PSF, got {nonblind!r} (itself blind)")
    if spatially_varying and not method.spatially_varying:
        raise ValueError(f"with psf_grid, nonblind must take a PSF grid (e.g. {BLIND_NONBLIND_GRID!r}, 'nu_cg', "
                         f"'irc'), got {nonblind!r}")
    if noise_sigma is not None and nonblind not in NOISE_SIGMA_METHODS:
        raise ValueError(f"noise_sigma is passed to nonblind {', '.join(map(repr, NOISE_SIGMA_METHODS))} only, not to {nonblind!r}")


def estimate_motion(image, *, device="auto", weights: str = "motion-net") -> psf_lib.MotionField:
    """Per-pixel linear motion of a blurred photo, estimated by the shipped Motion-Net.

    Args:
        image: (H, W) grey or (H, W, 3) colour, NumPy array or torch tensor, values in any range.
        device: ``"auto"``, ``"cpu"``, ``"cuda"``.
        weights: registry name of the Motion-Net weights.

    Returns:
        ``psf.MotionField`` with (H, W) ``length`` (pixels) and ``angle`` (degrees in [0, 180));
        pass it as the psf of ``deblur(..., method="irc-net")`` or draw it as vectors in napari.

    Raises:
        ValueError, TypeError: wrong shape or type, images smaller than 16 x 16 (:data:`deblur_ops.validation.MIN_IMAGE_SIDE`).

    Example:
        >>> import numpy as np
        >>> field = estimate_motion(np.random.rand(32, 40).astype(np.float32))
        >>> field.shape
        (32, 40)

    References:
        T. Eboli, J. Sun, J. Ponce. Neural Embedding of an Iterative Deconvolution Algorithm for Motion Blur
        Estimation and Removal. Preprint hal-01857177, 2018 (paper 004 in docs/references.md).
    """
    target = resolve_device(device, image)
    x = as_float_tensor(image, "image", target)
    if x.dim() == 2:
        batch = x[None, None]
    elif x.dim() == 3 and x.shape[-1] in (3, 4):
        batch = x[..., :3].permute(2, 0, 1)[None]
    else:
        raise ValueError(f"image must have shape (H, W) or (H, W, 3), got {tuple(x.shape)}")
    _check_image(batch)
    with torch.no_grad():
        length, angle = cached_model(weights, target).motion(batch.contiguous())
    return psf_lib.MotionField(length[0].double().cpu(), angle[0].double().cpu())


def motion_vectors(field: psf_lib.MotionField, step: int = 16) -> np.ndarray:
    """napari ``Vectors`` data for a motion field: one (2, 2) [[row, col], [drow, dcol]] per ``step`` pixels.

    Each vector is the blur line at its node (length in pixels, direction of the angle; the sign of a
    blur line is arbitrary), centred on the node.

    Example:
        >>> f = psf_lib.MotionField.constant((32, 32), 8.0, 0.0)
        >>> v = motion_vectors(f, 16)
        >>> v.shape, v[0, 1].tolist()
        ((4, 2, 2), [0.0, 8.0])
    """
    step = check_positive(step, "step", integer=True)
    length, angle = field.length.numpy(), np.deg2rad(field.angle.numpy())
    rows, cols = np.meshgrid(np.arange(step // 2, length.shape[0], step), np.arange(step // 2, length.shape[1], step),
                             indexing="ij")
    l, a = length[rows, cols], angle[rows, cols]
    d_row, d_col = -l * np.sin(a) + 0.0, l * np.cos(a) + 0.0  # rows point down, angles counter-clockwise; no -0.0
    starts = np.stack([rows - d_row / 2, cols - d_col / 2], -1).reshape(-1, 2)
    return np.stack([starts, np.stack([d_row, d_col], -1).reshape(-1, 2)], 1).astype(np.float64)
