"""Spatially varying Richardson-Lucy: a PSF grid or a motion field, with background and TV.

A separate method rather than an option of ``richardson_lucy`` because the two differ in what
they accept and how they are computed: this one takes PSF descriptions (``PSFGrid``,
``MotionField``) on 2D images and evaluates the blur either as NU-Conv scatter/gather or as a sum
of per-node FFT convolutions, while ``richardson_lucy`` is 2D/3D, FFT-only, with boundary modes
and memory-based splitting that a field of view-bound PSF description cannot be tiled by. Both
share one iteration (:func:`.richardson_lucy.iterate`), so the update, background, stopping rule
and TV are the same code.
"""
from __future__ import annotations

import math

import torch

from .. import validation as v
from ..boundary import psf_to_otf, reflect_dim
from ..ops.nu_conv import nu_conv_unchecked
from ..validation import check_callback, check_positive
from ._nonuniform import BlurOperator
from .registry import register
from .richardson_lucy import check_background, iterate

OPERATORS = ("auto", "fft", "nu_conv")
# Measured on this project's 2-thread CPU (3x3 grid of 31x31 Gaussians on 256^2, grid 288^2, best
# of 7): NU-Conv scatter 80 ms for 0.64 GFLOP of taps (~8 GFLOP/s), the per-filter FFT blur 2.7 ms
# for 10 real FFTs of 5/2 n log2 n flops (~12 GFLOP/s, ~10 with the elementwise steps). The cost
# model compares estimated seconds, not flops.
NU_CONV_GFLOPS = 8.0
FFT_GFLOPS = 10.0


def operator_costs(filters: int, taps: int, per_pixel: int, grid: tuple[int, int]) -> dict[str, float]:
    """Estimated seconds of one blur + adjoint pair on a grid of ``grid`` pixels.

    - ``nu_conv``: scatter and gather each do ``2 * per_pixel * taps`` flops per pixel (K filters
      mixed per pixel; ``taps`` counts the non-zero ones, which is all the kernel visits).
    - ``fft``: H x = sum_k P_k * (w_k x) takes ``filters`` forward rfft2 and one inverse,
      H^T u = sum_k w_k (P_k^flip * u) one forward and ``filters`` inverse ones: 2 F + 2 real FFTs
      of ``5/2 n log2 n`` flops each.

    Example:
        >>> costs = operator_costs(9, 31 * 31, 4, (320, 320))
        >>> costs["fft"] < costs["nu_conv"]
        True
    """
    n = grid[0] * grid[1]
    nu = 2 * 2 * per_pixel * taps * n / (NU_CONV_GFLOPS * 1e9)
    fft = (2 * filters + 2) * 2.5 * n * math.log2(max(n, 2)) / (FFT_GFLOPS * 1e9)
    return {"nu_conv": nu, "fft": fft}


class SVDomain:
    """The spatially varying blur on the extended domain, in the interface of ``RLDomain``.

    The unknown scene extends beyond the image by half a PSF on each side (to a fast FFT length);
    only the observed pixels are data. Both evaluations are exact adjoint pairs:
    ``nu_conv``: H = NU-Conv scatter, H^T = gather with flipped filters (zero boundary);
    ``fft``: H x = sum_k P_k * (w_k x), H^T u = sum_k w_k (P_k^flip * u) with w_k the per-pixel
    weight of filter k (circular on a grid where nothing observed wraps).

    Args:
        image: (B, C, H, W), validated and non-negative.
        psf: a uniform PSF tensor, ``PSFGrid`` or ``MotionField``.
        operator: ``"fft"`` or ``"nu_conv"``.
    """

    def __init__(self, image: torch.Tensor, psf, operator: str):
        kernel = psf if getattr(psf, "spatially_varying", False) else v.batched_psf(psf, image)
        op = BlurOperator(image, kernel, margin=max(1, _kernel_size(kernel) // 2))
        bank = op.bank
        if not v.is_compiling() and bool((bank < 0).any()):
            raise ValueError("the PSFs have negative values; Richardson-Lucy needs non-negative PSFs "
                             "(clip them with clamp(min=0); a measured PSF's noise floor is the usual cause)")
        # Each PSF passes its light on (sum 1), so the weighted mix does too and flux is kept.
        self.bank = (bank / bank.sum((-2, -1), keepdim=True)).contiguous()
        self.flipped = self.bank.flip(-2, -1).contiguous()
        self.idx, self.weights, self.pads = op.idx, op.weights, op.pads
        self.dims = (-2, -1)
        self.shape = tuple(op.data.shape[-2:])
        self.operator = operator
        if operator == "fft":
            count = self.bank.shape[0]
            # Dense per-filter weight maps (Bw, F, H', W'): w_f(p) = sum_k [idx_k(p) = f] w_k(p).
            dense = torch.zeros((self.weights.shape[0], count) + self.shape, dtype=image.dtype, device=image.device)
            self.node_weights = dense.scatter_add_(1, self.idx, self.weights)
            used = torch.unique(self.idx)
            self.node_weights = self.node_weights[:, used].unsqueeze(2)  # (Bw, F, 1, H', W') over C
            self.otfs = _otfs(self.bank[used], self.shape)  # (F, 1, H', W'//2+1)
            self.otfs_conj = self.otfs.conj().resolve_conj()
        mask = torch.zeros((1, 1) + self.shape, dtype=image.dtype, device=image.device)
        self.crop(mask).fill_(1)
        self.mask = mask
        norm = self.adjoint(mask)
        # Scene points that put under 1e-3 of their light into the image are dropped (see RLDomain).
        self.factor = torch.where(norm > 1e-3, 1 / norm.clamp(min=1e-3), torch.zeros_like(norm))
        self.sensitivity = norm * (self.factor > 0)

    def place(self, image: torch.Tensor) -> torch.Tensor:
        flat = [p for before_after in reversed(self.pads) for p in before_after]
        return torch.nn.functional.pad(image, flat)

    def start(self, image: torch.Tensor) -> torch.Tensor:
        for d, (before, after) in zip(self.dims, self.pads):
            image = reflect_dim(image, image.dim() + d, before, after)
        return image * (self.factor > 0)

    def blur(self, x: torch.Tensor) -> torch.Tensor:
        if self.operator == "nu_conv":
            return nu_conv_unchecked(x, self.bank, self.idx, self.weights, "scatter", "zeros")
        spectrum = None
        for f in range(self.otfs.shape[0]):
            term = torch.fft.rfft2(self.node_weights[:, f] * x)
            term.mul_(self.otfs[f])
            spectrum = term if spectrum is None else spectrum.add_(term)
        return torch.fft.irfft2(spectrum, s=self.shape)

    def adjoint(self, u: torch.Tensor) -> torch.Tensor:
        if self.operator == "nu_conv":
            return nu_conv_unchecked(u, self.flipped, self.idx, self.weights, "gather", "zeros")
        spectrum = torch.fft.rfft2(u)
        out = None
        for f in range(self.otfs.shape[0]):
            term = torch.fft.irfft2(spectrum * self.otfs_conj[f], s=self.shape).mul_(self.node_weights[:, f])
            out = term if out is None else out.add_(term)
        return out

    def crop(self, x: torch.Tensor) -> torch.Tensor:
        (top, bottom), (left, right) = self.pads
        return x[..., top:x.shape[-2] - bottom, left:x.shape[-1] - right]


def _kernel_size(psf) -> int:
    """The largest PSF side of a PSF tensor, ``PSFGrid`` or ``MotionField`` (without building its bank)."""
    if isinstance(psf, torch.Tensor):
        return max(psf.shape[-2:])
    if hasattr(psf, "psfs"):
        return max(psf.psfs.shape[-2:])
    return int(psf.max_length)


def _otfs(bank: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    return psf_to_otf(bank, shape).unsqueeze(1)


@register("sv_richardson_lucy",
          "spatially varying Richardson-Lucy (PSF grid or motion field; NU-Conv or per-node FFTs), "
          "background, tol, TV; x >= 0", spatially_varying=True)
def sv_richardson_lucy(image: torch.Tensor, psf, *, iterations: int = 30, tv_weight: float = 0.0,
                       background=None, tol=None, operator: str = "auto", callback=None,
                       info=None) -> torch.Tensor:
    r"""Richardson-Lucy deconvolution of spatially varying blur (2D).

    Model: y ~ Poisson(H x + b) with the scatter-model blur of :mod:`deblur_ops.psf`,
    H x = sum_k P_k * (w_k x) (each scene point blurred by the weighted mix of the PSFs around it);
    update :math:`x \leftarrow x \cdot H^T (y / (H x + b)) / H^T 1`, the normaliser computed once.
    The unknown scene extends half a PSF beyond the image and only observed pixels are data
    (Bertero & Boccacci, A&A 437, 2005), so borders do not ring and the flux the estimate puts
    into the field of view equals the data's (sum(output) = sum(y - b) for objects away from the
    border, at convergence when b > 0). ``tv_weight`` adds Dey et al.'s TV term (Microscopy
    Research and Technique 69, 2006, eq. 12). For (D, H, W) stacks the plane-wise loop of
    :func:`deblur_ops.apps.stack.deblur_stack` applies the grid to each plane.

    Args:
        image: (B, C, H, W) float tensor; negative values are clipped to 0.
        psf: ``psf.PSFGrid`` (each PSF normalised to sum 1 here), ``psf.MotionField``, or a
            uniform (kh, kw) PSF (then this is ``richardson_lucy(padding="extended")``).
        iterations: the most updates (>= 1).
        tv_weight: Dey et al.'s lambda; 0 disables TV.
        background: None, a number >= 0, a map broadcastable to the image, or ``"auto"`` (see
            :func:`deblur_ops.restore.richardson_lucy.estimate_background`).
        tol: stop once ||x_k - x_{k-1}|| / ||x_{k-1}|| < tol (None: all iterations).
        operator: ``"fft"`` (per-filter FFT convolutions), ``"nu_conv"`` (the NU-Conv op), or
            ``"auto"``: the cheaper by :func:`operator_costs` (FFTs for grids of a few large PSFs,
            NU-Conv for motion fields, whose bank has hundreds of filters).
        callback: ``callback(i, estimate)`` after iteration i, estimate cropped to the image and
            updated in place afterwards (clone it to keep it).
        info: optional dict, filled with ``"iterations"``, ``"operator"`` and, with ``tol``,
            ``"relative_change"``.

    Returns:
        Non-negative tensor of the image's shape and dtype.

    Raises:
        ValueError: a 3D image, negative PSF values, a PSF larger than the image, a negative or
            mis-shaped background, tol <= 0, unknown options.

    Example:
        >>> import torch
        >>> from deblur_ops.psf import PSFGrid
        >>> grid = PSFGrid(torch.ones(2, 2, 5, 5))
        >>> sv_richardson_lucy(torch.rand(1, 1, 32, 32), grid, iterations=3).shape
        torch.Size([1, 1, 32, 32])
    """
    v.require_tensor(image, "image")
    if image.dim() != 4:
        raise ValueError(f"sv_richardson_lucy takes 2D images (B, C, H, W), got shape {tuple(image.shape)}; "
                         f"for a volume use deblur_ops.apps.stack.deblur_stack (plane by plane) or richardson_lucy with a 3D PSF")
    v.require_float(image, "image")
    v.require_finite(image, "image")
    iterations = check_positive(iterations, "iterations", integer=True)
    tv_weight = check_positive(tv_weight, "tv_weight", allow_zero=True)
    if tol is not None:
        tol = check_positive(tol, "tol")
    v.require_choice(operator, "operator", OPERATORS)
    check_callback(callback)
    if info is not None and not isinstance(info, dict):
        raise ValueError(f"info must be a dict to fill or None, got {type(info).__name__}")
    image = image.clamp(min=0)
    back = check_background(background, image)
    if operator == "auto":
        operator = choose_operator(image, psf)
    domain = SVDomain(image, psf, operator)
    if info is not None:
        info["operator"] = operator
    return iterate(domain, image, back, iterations=iterations, acceleration="none", tv_weight=tv_weight,
                   init="observed", tol=tol, callback=callback, info=info)


def choose_operator(image: torch.Tensor, psf) -> str:
    """``"fft"`` or ``"nu_conv"``, whichever :func:`operator_costs` says is cheaper for this blur."""
    if getattr(psf, "spatially_varying", False):
        bank, idx, _ = psf.nu_conv_inputs(tuple(image.shape[-2:]), dtype=image.dtype, device="cpu")
        filters, per_pixel = int(torch.unique(idx).numel()), idx.shape[1]
    else:
        idx = None
        bank, filters, per_pixel = v.batched_psf(psf, image), 1, 1
    used = bank if idx is None else bank[torch.unique(idx)]
    taps = float((used != 0).flatten(1).sum(1).double().mean())
    grid = tuple(n + k - 1 for n, k in zip(image.shape[-2:], bank.shape[-2:]))
    costs = operator_costs(filters, taps, per_pixel, grid)
    return "fft" if costs["fft"] <= costs["nu_conv"] else "nu_conv"
