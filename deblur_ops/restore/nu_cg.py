"""Conjugate gradient on the non-uniform blur model: the NU-CG anchor of paper 004 Table 3."""
from __future__ import annotations

import torch

from .. import validation as v
from ..data.noise import noise_sigma_per_item
from ..validation import check_callback, check_positive, per_item
from ._common import data_scale, require_finite_result
from ._nonuniform import BlurOperator
from .registry import register

# Defaults tuned once on "camera" and "coins" 128x128 under camera-motion fields at sigma = 1 %, then
# fixed: TV lambda = 0.05 sqrt(sigma) (0.005-0.007 were within 0.2 dB), rho = 32 lambda as for
# admm_tv; l2: lambda = 4 sigma.
TV_WEIGHT_PER_ROOT_NOISE = 0.05
RHO_PER_WEIGHT = 32.0
L2_WEIGHT_PER_NOISE = 4.0


def _gradient(x: torch.Tensor) -> list[torch.Tensor]:
    """Forward differences inside the domain (no wrap, so opposite borders are not coupled)."""
    return [torch.diff(x, dim=-2), torch.diff(x, dim=-1)]


def _gradient_adjoint(fields: list[torch.Tensor]) -> torch.Tensor:
    """D^T of :func:`_gradient`: minus the backward differences, with zero flux across the border."""
    out = 0
    for g, dim in zip(fields, (-2, -1)):
        zero = torch.zeros_like(g.narrow(dim, 0, 1))
        out = out - torch.diff(g, dim=dim, prepend=zero, append=zero)
    return out


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a * b).sum((-2, -1), keepdim=True)


def conjugate_gradient(apply, rhs: torch.Tensor, x: torch.Tensor, iterations: int,
                       tolerance: float) -> torch.Tensor:
    """Solve apply(x) = rhs (symmetric positive definite) per (B, C) image, from ``x``."""
    residual = rhs - apply(x)
    direction = residual
    power = _dot(residual, residual)
    stop = (tolerance ** 2) * _dot(rhs, rhs)
    tiny = torch.finfo(x.dtype).tiny
    for _ in range(iterations):
        if bool((power <= stop).all()):
            break
        q = apply(direction)
        step = power / _dot(direction, q).clamp(min=tiny)
        x = x + step * direction
        residual = residual - step * q
        new_power = _dot(residual, residual)
        direction = residual + (new_power / power.clamp(min=tiny)) * direction
        power = new_power
    return x


@register("nu_cg",
          "conjugate gradient on the NU-Conv blur model, TV (ADMM) or l2 gradient prior (paper 004 Table 3 NU-CG)",
          spatially_varying=True)
def nu_cg(image: torch.Tensor, psf, *, prior: str = "tv", weight=None, noise_sigma=None, rho=None,
          iterations: int = 20, cg_iterations: int = 20, tolerance: float = 1e-4,
          callback=None) -> torch.Tensor:
    r"""Gradient-regularised deconvolution of (non-)uniform blur with conjugate-gradient solves.

    A is the scatter-model blur of :func:`deblur_ops.nu_conv` (``"scatter"``), A^T its exact
    adjoint (``"gather"`` with flipped filters), D the horizontal and vertical forward differences.

    - ``prior="l2"``: min_x 1/2 ||A x - y||^2 + lambda/2 ||D x||^2, one CG solve of the normal
      equations (A^T M A + lambda D^T D) x = A^T M y (``cg_iterations * iterations`` steps at most).
    - ``prior="tv"`` (paper 004 eq. 16, the model of NU-CG [29]): ADMM as in eqs. 2-5 and 15 with
      z = soft-threshold(D x + beta, lambda / rho) and the x update
      (A^T M A + rho D^T D) x = A^T M y + rho D^T (z - beta) solved by warm-started CG.

    M keeps the observed pixels: the unknown image extends beyond them by the PSF size (started
    from a reflection), so the scene that blurs in across the borders is estimated, not assumed,
    and the borders do not ring.

    Args:
        image: (B, C, H, W) float tensor.
        psf: uniform PSF (kh, kw) (or one per batch item), ``psf.MotionField`` or ``psf.PSFGrid``.
        prior: ``"tv"`` or ``"l2"``.
        weight: lambda (number or per batch item); default ``0.05 sqrt(noise_sigma)`` for TV,
            ``4 noise_sigma`` for l2.
        noise_sigma: noise level for the default weight; estimated (Immerkaer) when None.
        rho: ADMM penalty for TV (> 0); default ``32 * weight``.
        iterations: ADMM iterations for TV (>= 1).
        cg_iterations: CG steps per x update (>= 1).
        tolerance: a CG solve stops when ||residual|| <= tolerance * ||rhs|| for every image.
        callback: ``callback(i, estimate)`` after outer iteration i, estimate cropped to the image.

    Returns:
        Tensor of the image's shape and dtype.

    Raises:
        ValueError: bad shapes, NaN/Inf, a PSF larger than the image, bad parameters.
        FloatingPointError: the result overflowed the image's dtype (NaN/Inf) despite the
            internal rescaling.

    Example:
        >>> import torch
        >>> from deblur_ops.psf import MotionField
        >>> field = MotionField(torch.full((48, 48), 7.0), torch.linspace(0, 90, 48).expand(48, 48))
        >>> nu_cg(torch.rand(1, 1, 48, 48), field, weight=0.005, iterations=2, cg_iterations=5).shape
        torch.Size([1, 1, 48, 48])

    References:
        - T. Eboli, J. Sun, J. Ponce. Neural Embedding of an Iterative Deconvolution Algorithm for Motion Blur
          Estimation and Removal. Preprint hal-01857177, 2018 (paper 004 in docs/references.md).
        - M. R. Hestenes, E. Stiefel. Methods of conjugate gradients for solving linear systems. J. Res. Nat. Bur.
          Standards 49(6), 409-436, 1952.
    """
    v.require_choice(prior, "prior", ("tv", "l2"))
    op = BlurOperator(image, psf)
    iterations = check_positive(iterations, "iterations", integer=True)
    cg_iterations = check_positive(cg_iterations, "cg_iterations", integer=True)
    tolerance = check_positive(tolerance, "tolerance")
    check_callback(callback)
    # The solves run on the observation / magnitude (see admm_tv): with x = magnitude u, the l2 problem
    # for u has the same lambda and the TV problem lambda / magnitude with the same rho, so the
    # result is unchanged while the values stay near 1 (1e30 overflowed float32 to NaN).
    magnitude = data_scale(image)
    op.data = op.data / magnitude
    if weight is None:
        if noise_sigma is None:
            sigma = noise_sigma_per_item(image / magnitude, None) * magnitude.reshape(-1)
        else:
            sigma = noise_sigma_per_item(image, noise_sigma)
        default = TV_WEIGHT_PER_ROOT_NOISE * sigma.sqrt() if prior == "tv" else L2_WEIGHT_PER_NOISE * sigma
        lam = per_item(default, "weight", image)
    else:
        lam = per_item(weight, "weight", image)
    if bool((lam <= 0).any()):
        raise ValueError(f"weight must be > 0, got {weight!r}")
    data_term = op.adjoint(op.mask * op.data)

    if prior == "l2":
        def normal(x):
            return op.adjoint(op.mask * op.blur(x)) + lam * _gradient_adjoint(_gradient(x))

        x = conjugate_gradient(normal, data_term, op.data, iterations * cg_iterations, tolerance)
        if callback is not None:
            callback(0, op.crop(x) * magnitude)
        return require_finite_result(op.crop(x) * magnitude, "nu_cg")

    penalty = RHO_PER_WEIGHT * lam if rho is None else per_item(check_positive(rho, "rho"), "rho", image)

    def normal(x):
        return op.adjoint(op.mask * op.blur(x)) + penalty * _gradient_adjoint(_gradient(x))

    x = op.data
    betas = [torch.zeros_like(g) for g in _gradient(x)]
    threshold = lam / magnitude / penalty
    for i in range(iterations):
        shifted = [g + b for g, b in zip(_gradient(x), betas)]
        zs = [torch.sign(s) * (s.abs() - threshold).clamp(min=0) for s in shifted]
        rhs = data_term + penalty * _gradient_adjoint([z - b for z, b in zip(zs, betas)])
        x = conjugate_gradient(normal, rhs, x, cg_iterations, tolerance)
        betas = [b + g - z for b, g, z in zip(betas, _gradient(x), zs)]
        if callback is not None:
            callback(i, op.crop(x) * magnitude)
    return require_finite_result(op.crop(x) * magnitude, "nu_cg")
