"""Plug-and-play deconvolution: half-quadratic splitting with a non-local-means denoiser as the prior.

The image prior of ``admm_tv``, ``irc`` and ``irc-net`` is a sparsity of a few filter responses;
a denoiser that averages similar patches across the picture keeps texture and straight edges that
such priors flatten. Half-quadratic splitting (Geman & Yang 1995) alternates an exact FFT solve
of the data term with one denoising step whose strength falls from ``start_sigma`` to the noise
level, the schedule of Zhang et al.'s DPIR (2021); the denoiser here is non-local means (Buades,
Coll & Morel 2005) in its blockwise-distance form (Darbon et al. 2008, scikit-image's
``fast_mode``), written in torch so that it runs batched on CPU and CUDA.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .. import validation as v
from ..boundary import reflect_dim
from ..data.noise import noise_sigma_per_item
from ..validation import check_callback, check_inputs, check_positive
from ._common import FFTDomain, data_scale, require_finite_result
from .registry import register

# Tuned on the development images (coffee, brick, clock, horse; Boracchi-Foi shake 11-35 px, 1 %
# noise) against irc-net and admm_tv with the true kernel; see
# benchmarks/results/2026-12-03_amd-epyc_pnp_nlm_dev.md.
START_SIGMA = 0.1      # first denoising strength, relative to the image's peak magnitude
DATA_WEIGHT = 0.6      # DPIR's lambda: the data step's penalty is lambda * sigma_n^2 / sigma_k^2
FILTER_STRENGTH = 0.6  # NLM's h relative to the step's sigma
NOISE_FLOOR = 1e-3     # smallest noise level the schedule ends at, relative to the peak magnitude
WEIGHT_CUTOFF = 30.0   # NLM weights exp(-x) with x above this are set to 0


def _box_sum(x: torch.Tensor, radius: int) -> torch.Tensor:
    """Sum over the (2 radius + 1)^2 windows that fit in (..., H, W) (a "valid" filter: the result
    is 2 radius smaller on each axis), by cumulative sums."""
    k = 2 * radius + 1
    c = torch.cumsum(F.pad(x, (1, 0)), -1)
    x = c[..., k:] - c[..., :-k]
    c = torch.cumsum(F.pad(x, (0, 0, 1, 0)), -2)
    return c[..., k:, :] - c[..., :-k, :]


def nl_means(image: torch.Tensor, sigma, *, strength: float = FILTER_STRENGTH, patch_radius: int = 2,
             search_radius: int = 6) -> torch.Tensor:
    r"""Non-local means of a batch of 2D images (B, C, H, W), in torch (CPU or CUDA, differentiable).

    Each pixel becomes the weighted mean of the pixels within ``search_radius`` of it, with weight
    :math:`\exp(-\max(d^2 - 2\sigma^2, 0) / h^2)`, where :math:`d^2` is the mean squared difference
    of the two (2 ``patch_radius`` + 1)-wide patches over all channels and :math:`h` =
    ``strength`` :math:`\sigma` (Buades, Coll & Morel 2005; the blockwise form of Darbon et al.
    2008, as scikit-image's ``denoise_nl_means(fast_mode=True)``). The image is mirrored at its
    edges. A flat image is returned unchanged.

    Args:
        image: (B, C, H, W) float tensor, each side larger than ``2 * search_radius``.
        sigma: noise level: a number, or one per batch item (B,); 0 returns the image.
        strength: h / sigma (> 0); larger smooths more.
        patch_radius: patch half-width (>= 0).
        search_radius: search-window half-width (>= 1).

    Returns:
        Tensor of the image's shape and dtype.

    Example:
        >>> import torch
        >>> flat = torch.full((1, 1, 32, 32), 0.5)
        >>> bool(torch.equal(nl_means(flat, 0.1), flat))
        True

    References:
        - A. Buades, B. Coll, J.-M. Morel. A non-local algorithm for image denoising. CVPR 2005.
        - J. Darbon, A. Cunha, T. F. Chan, S. Osher, G. J. Jensen. Fast nonlocal filtering applied to
          electron cryomicroscopy. ISBI 2008.
    """
    v.require_tensor(image, "image")
    v.check_image_2d(image, "nl_means")
    v.require_float(image, "image")
    v.require_finite(image, "image")
    strength = check_positive(strength, "strength")
    patch_radius = check_positive(patch_radius, "patch_radius", integer=True, allow_zero=True)
    search_radius = check_positive(search_radius, "search_radius", integer=True)
    b, _, h, w = image.shape
    if min(h, w) <= 2 * search_radius:
        raise ValueError(f"nl_means needs images larger than 2 * search_radius = {2 * search_radius} pixels "
                         f"on each side, got {h}x{w}; pass a smaller search_radius")
    sig = v.per_item(sigma, "sigma", image).reshape(b, 1, 1, 1).to(image.dtype)
    # Filtered on image / its peak (sigma alike), so that squared differences of huge values cannot
    # overflow to inf - inf = NaN; the filter commutes with that scaling.
    magnitude = data_scale(image)
    original, image, sig = image, image / magnitude, sig / magnitude
    s, r = search_radius, patch_radius
    # Offsets o and -o share their patch distances (d_{-o}(p) = d_o(p - o)): each pair is computed
    # once, for p on the image grown by s; its patches reach r further and their partners s more.
    margin = 2 * s + r
    padded = reflect_dim(reflect_dim(image, -2, margin, margin), -1, margin, margin)
    grown = (h + 2 * s + 2 * r, w + 2 * s + 2 * r)
    base = padded[..., s:s + grown[0], s:s + grown[1]]  # pixels q from -s - r on
    # d^2 is a mean over the patch's (2 r + 1)^2 pixels and the channels: the loop sums, and the
    # threshold and 1/h^2 carry the count instead.
    count = image.shape[1] * (2 * r + 1) ** 2
    threshold = 2 * sig**2 * count
    inv_h2 = 1.0 / ((strength * sig).square() * count).clamp(min=torch.finfo(image.dtype).tiny)
    numerator = image.clone()
    denominator = torch.ones_like(image[:, :1])
    for dy in range(0, s + 1):
        for dx in range(-s, s + 1):
            if dy == 0 and dx <= 0:
                continue
            moved = padded[..., s + dy:s + dy + grown[0], s + dx:s + dx + grown[1]]  # pixels q + o
            dist = _box_sum((base - moved).square().sum(1, keepdim=True), r)  # p from -s on
            exponent = (dist - threshold).clamp(min=0) * inv_h2
            # Weights under e^-30 are dropped: negligible beside the centre's 1, and their exponentials
            # and products would be subnormal floats (without the cutoff: 0.32-0.45 s against 0.17-0.21 s
            # on a 300² noise image at 1 thread).
            weight = torch.exp(-exponent.clamp(max=WEIGHT_CUTOFF)).masked_fill(exponent >= WEIGHT_CUTOFF, 0.0)
            forward = weight[..., s:s + h, s:s + w]                      # w_o(p), p on the image
            backward = weight[..., s - dy:s - dy + h, s - dx:s - dx + w]  # w_{-o}(p) = w_o(p - o)
            numerator = numerator.addcmul(forward, padded[..., margin + dy:margin + dy + h, margin + dx:margin + dx + w]) \
                .addcmul(backward, padded[..., margin - dy:margin - dy + h, margin - dx:margin - dx + w])
            denominator = denominator + forward + backward
    # sigma = 0 keeps the image (the weights above are then all but meaningless).
    return torch.where(sig > 0, numerator / denominator * magnitude, original)


@register("pnp", "Plug-and-play HQS with a non-local-means denoiser (DPIR schedule): keeps texture that "
          "TV flattens; 2D")
def pnp(image: torch.Tensor, psf: torch.Tensor, *, noise_sigma=None, iterations: int = 8,
        start_sigma: float = START_SIGMA, data_weight: float = DATA_WEIGHT, strength: float = FILTER_STRENGTH,
        patch_radius: int = 2, search_radius: int = 6, padding: str = "reflect", init="blurred", callback=None) -> torch.Tensor:
    r"""Non-blind deconvolution by plug-and-play half-quadratic splitting with non-local means.

    For k = 1..``iterations`` with denoising strengths :math:`\sigma_k` falling geometrically from
    ``start_sigma`` (times the image's peak) to the noise level :math:`\sigma_n`:

    - data step: :math:`x = \arg\min \|k * x - y\|^2 + \mu_k \|x - z\|^2`, solved exactly in the
      Fourier domain, with :math:`\mu_k` = ``data_weight`` :math:`\sigma_n^2 / \sigma_k^2`;
    - prior step: :math:`z` = :func:`nl_means` (x, :math:`\sigma_k`).

    This is DPIR's schedule (Zhang et al. 2021) with non-local means in place of its network. The
    margin that extends the image for the FFT is never treated as data: each data step fills it with
    the current estimate blurred. With the true kernel on the development images (Boracchi–Foi
    shake, 1 % noise, 255², whole-image PSNR) it gained +1.9 dB over ``irc-net`` on compact shake
    (11–35 px supports) and +1.0 dB where the kernels span their 15–31 px supports (``irc-pnp``
    +1.8 and +1.4 dB). Colour channels share the patch distances.

    Args:
        image: (B, C, H, W) float tensor (2D images; restore volumes plane by plane or with
            another method), at least 16 x 16.
        psf: uniform PSF (kh, kw) or one per batch item; odd sizes, not larger than the image.
        noise_sigma: noise level (number, (B,) or (B, C)); estimated with Immerkaer's method when
            None. The schedule ends at it, but not below 0.1 % of the image's peak.
        iterations: number of data/prior step pairs (>= 1).
        start_sigma: first denoising strength relative to the image's peak magnitude (> 0).
        data_weight: DPIR's lambda (> 0); larger trusts the denoiser more.
        strength: NLM's h / sigma (> 0).
        patch_radius, search_radius: NLM patch and search half-widths.
        padding: ``"reflect"`` or ``"circular"``.
        init: where the iterations start: ``"blurred"`` (the image itself) or a tensor of the
            image's shape (e.g. another method's restoration, as ``"irc-pnp"`` starts from
            ``irc-net``'s).
            Started from the blurred image, the first data steps are close to inverse filters;
            under strong blur, starting from ``irc-net``'s restoration (``irc-pnp``) did better.
        callback: ``callback(i, estimate)`` after iteration i, estimate cropped to the image.

    Returns:
        Tensor of the image's shape and dtype.

    Raises:
        ValueError: bad shapes (a volume, an image under 16 x 16 or too small for the search
            window), NaN/Inf, an even or too large PSF, bad parameters (``init`` included).

    Example:
        >>> import torch
        >>> pnp(torch.rand(1, 1, 48, 48), torch.ones(5, 5) / 25, iterations=2).shape
        torch.Size([1, 1, 48, 48])

    References:
        - K. Zhang, Y. Li, W. Zuo, L. Zhang, L. Van Gool, R. Timofte. Plug-and-play image
          restoration with deep denoiser prior. IEEE TPAMI 44(10), 2021.
        - D. Geman, C. Yang. Nonlinear image recovery with half-quadratic regularization. IEEE TIP
          4(7), 1995.
        - A. Buades, B. Coll, J.-M. Morel. A non-local algorithm for image denoising. CVPR 2005.
    """
    image, psf = check_inputs(image, psf)
    v.check_image_2d(image, "pnp")
    if min(image.shape[-2:]) < v.MIN_IMAGE_SIDE:
        raise ValueError(f"pnp: image must be at least {v.MIN_IMAGE_SIDE}x{v.MIN_IMAGE_SIDE} pixels, got "
                         f"{tuple(image.shape[-2:])}")
    iterations = check_positive(iterations, "iterations", integer=True)
    start_sigma = check_positive(start_sigma, "start_sigma")
    data_weight = check_positive(data_weight, "data_weight")
    v.require_choice(padding, "padding", ("reflect", "circular"))
    check_callback(callback)
    if isinstance(init, str):
        v.require_choice(init, "init", ("blurred",))
    else:
        v.require_tensor(init, "init")
        if init.shape != image.shape:
            raise ValueError(f"init must have the image's shape {tuple(image.shape)}, got {tuple(init.shape)}")
        v.require_finite(init, "init")
    sigma_n = noise_sigma_per_item(image, noise_sigma).to(image.dtype)
    if sigma_n.numel() != image.shape[0]:  # one value per channel: the patches span the channels
        sigma_n = sigma_n.reshape(image.shape[0], -1).mean(1)
    magnitude = data_scale(image)
    image = image / magnitude
    sigma_n = (sigma_n / magnitude.reshape(-1)).clamp(min=NOISE_FLOOR)
    domain = FFTDomain(image, psf, padding)
    if min(domain.shape) <= 2 * search_radius:
        raise ValueError(f"pnp needs the image with its FFT margin ({domain.shape[-2]}x{domain.shape[-1]}) to be "
                         f"larger than 2 * search_radius = {2 * search_radius} pixels on each side; pass a "
                         f"smaller search_radius")
    blur_power = domain.otf.real**2 + domain.otf.imag**2
    # The margin of the extended domain was never observed: each data step fills it with the current
    # estimate blurred (the image's own pixels keep the data), so that no mirrored border, which a
    # blurred image does not continue consistently, is fitted as if it were data.
    inside = torch.zeros_like(domain.data[:1, :1])
    domain.crop(inside).fill_(1.0)
    start = torch.maximum(torch.full_like(sigma_n, start_sigma), sigma_n)
    z = domain.data if isinstance(init, str) else FFTDomain(init.to(image) / magnitude, psf, padding).data
    for i in range(iterations):
        fraction = i / (iterations - 1) if iterations > 1 else 1.0
        sigma_k = start * (sigma_n / start) ** fraction                       # geometric, start -> sigma_n
        mu = (data_weight * sigma_n**2 / sigma_k**2).reshape(-1, *([1] * (image.dim() - 1)))
        data = domain.data if padding == "circular" else torch.lerp(domain.blur(z), domain.data, inside)
        x = domain.spatial((domain.otf.conj() * domain.spectrum(data) + mu * domain.spectrum(z)) / (blur_power + mu))
        z = nl_means(x, sigma_k, strength=strength, patch_radius=patch_radius, search_radius=search_radius)
        if callback is not None:
            callback(i, domain.crop(z) * magnitude)
    return require_finite_result(domain.crop(z) * magnitude, "pnp")


__all__ = ["nl_means", "pnp"]
