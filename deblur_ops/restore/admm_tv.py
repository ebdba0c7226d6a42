"""ADMM with a total-variation (gradient-sparsity, l = 1) prior and an FFT x-update (paper 004 §2.1)."""
from __future__ import annotations

import torch

from .. import validation as v
from ..data.noise import noise_sigma_per_item
from ..validation import check_callback, check_inputs, check_positive, per_item
from ._common import FFTDomain, data_scale, gradient, gradient_otfs, require_finite_result
from .registry import register

# Default lambda = WEIGHT_PER_ROOT_NOISE * sqrt(sigma) and rho = RHO_PER_WEIGHT * lambda: tuned once
# on the "camera" image with linear motion blur (lengths 9-31, sigma 0.5-4 %), where the best
# lambda grew much more slowly than sigma^2 (0.006-0.012 over that range), and then fixed.
WEIGHT_PER_ROOT_NOISE = 0.07
RHO_PER_WEIGHT = 32.0


@register("admm_tv", "ADMM with a TV / gradient-sparsity prior (paper 004 eqs. 1-5, l=1), FFT x-update")
def admm_tv(image: torch.Tensor, psf: torch.Tensor, *, weight=None, noise_sigma=None, rho=None,
            iterations: int = 60, rho_growth: float = 1.0, isotropic: bool = False,
            padding: str = "reflect", callback=None) -> torch.Tensor:
    r"""Solve paper 004 eq. (1) with l = 1 by ADMM: min_x 1/2 ||k * x - y||^2 + lambda sum_i ||k_i * x||_1.

    The k_i are the forward differences [-1, 1] along each spatial axis (eq. 16). With
    z_i = k_i * x and scaled multipliers beta_i (eqs. 2-3), each iteration does

    - z update (eq. 4, l = 1): soft-thresholding of k_i * x + beta_i at lambda / rho (jointly over
      i when ``isotropic``, i.e. group soft-thresholding of the gradient vector);
    - x update (eq. 5, multiplied by rho): (|K|^2 + rho sum_i |K_i|^2) X = conj(K) Y
      + rho sum_i conj(K_i) F(z_i - beta_i), solved exactly in the Fourier domain for uniform blur;
    - beta update (eq. 15 with rate 1): beta_i += k_i * x - z_i.

    Optionally rho grows by ``rho_growth`` per iteration (continuation as in Wang, Yang, Yin and
    Zhang, SIAM J. Imaging Sci. 1(3), 2008, ref. [29] of paper 004), with the scaled multipliers
    rescaled to keep the unscaled ones. Reflect padding keeps the FFT's circular wrap off the image.

    Args:
        image: (B, C, H, W) or (B, C, D, H, W) float tensor.
        psf: (kh, kw) / (kd, kh, kw) or one per batch item; odd sizes, not larger than the image.
        weight: lambda (number or per batch item); default ``0.07 * sqrt(noise_sigma)``.
        noise_sigma: noise level used for the default weight (number, (B,) or (B, C));
            estimated with Immerkaer's method when None.
        rho: initial penalty; default ``32 * weight``.
        iterations: ADMM iterations (>= 1).
        rho_growth: factor >= 1 applied to rho after each iteration (1: fixed rho).
        isotropic: isotropic TV (joint shrinkage) instead of the paper's anisotropic sum.
        padding: ``"reflect"`` or ``"circular"``.
        callback: ``callback(i, estimate)`` after iteration i, estimate cropped to the image.

    Returns:
        Tensor of the image's shape and dtype.

    Raises:
        ValueError: bad shapes, NaN/Inf, an even or too large PSF or one whose sum is not positive,
            bad parameters.
        FloatingPointError: the result overflowed the image's dtype (NaN/Inf) despite the
            internal rescaling.

    Example:
        >>> import torch
        >>> image = torch.rand(1, 1, 64, 64)
        >>> admm_tv(image, torch.ones(5, 5) / 25, weight=1e-3, iterations=5).shape
        torch.Size([1, 1, 64, 64])

    References:
        - T. Eboli, J. Sun, J. Ponce. Neural Embedding of an Iterative Deconvolution Algorithm for Motion Blur
          Estimation and Removal. Preprint hal-01857177, 2018 (paper 004 in docs/references.md).
        - S. Boyd et al. Distributed optimization and statistical learning via the alternating direction method of
          multipliers. Foundations and Trends in ML 3(1), 2011.
    """
    image, psf = check_inputs(image, psf)
    iterations = check_positive(iterations, "iterations", integer=True)
    rho_growth = check_positive(rho_growth, "rho_growth")
    if rho_growth < 1:
        raise ValueError(f"rho_growth must be >= 1 (continuation increases rho), got {rho_growth}")
    v.require_choice(padding, "padding", ("reflect", "circular"))
    check_callback(callback)
    # The solver runs on image / magnitude: with x = magnitude u the problem for u is the same with
    # weight lambda / magnitude and the same rho, and every iterate scales exactly (soft-thresholding
    # at lambda / rho included), so the result is unchanged while the values stay near 1.
    magnitude = data_scale(image)
    image = image / magnitude
    if weight is None:
        if noise_sigma is None:
            sigma = noise_sigma_per_item(image, None) * magnitude.reshape(-1)
        else:
            sigma = noise_sigma_per_item(image, noise_sigma)
        lam = per_item(WEIGHT_PER_ROOT_NOISE * sigma.sqrt(), "weight", image)
    else:
        lam = per_item(weight, "weight", image)
    if bool((lam <= 0).any()):
        raise ValueError(f"weight must be > 0 (use method='wiener' for no TV prior), got {weight!r}")
    rho_t = RHO_PER_WEIGHT * lam if rho is None else per_item(check_positive(rho, "rho"), "rho", image)
    lam = lam / magnitude

    domain = FFTDomain(image, psf, padding)
    nd = image.dim() - 2
    diff_otfs = gradient_otfs(domain.shape, image.dtype, image.device)
    diff_power = sum(d.real**2 + d.imag**2 for d in diff_otfs)
    blur_power = domain.otf.real**2 + domain.otf.imag**2
    data_term = domain.otf.conj() * domain.spectrum(domain.data)
    x = domain.data
    betas = [torch.zeros_like(x) for _ in range(nd)]
    for i in range(iterations):
        grads = gradient(x, nd)
        shifted = [g + b for g, b in zip(grads, betas)]
        threshold = lam / rho_t
        if isotropic:
            norm = torch.sqrt(sum(s * s for s in shifted))
            scale = (1 - threshold / norm.clamp(min=torch.finfo(x.dtype).tiny)).clamp(min=0)
            zs = [s * scale for s in shifted]
        else:
            zs = [torch.sign(s) * (s.abs() - threshold).clamp(min=0) for s in shifted]
        rhs = data_term + rho_t * sum(d.conj() * domain.spectrum(z - b) for d, z, b in zip(diff_otfs, zs, betas))
        x = domain.spatial(rhs / (blur_power + rho_t * diff_power))
        betas = [b + g - z for b, g, z in zip(betas, gradient(x, nd), zs)]
        if rho_growth != 1:
            betas = [b / rho_growth for b in betas]
            rho_t = rho_t * rho_growth
        if callback is not None:
            callback(i, domain.crop(x) * magnitude)
    return require_finite_result(domain.crop(x) * magnitude, "admm_tv")
