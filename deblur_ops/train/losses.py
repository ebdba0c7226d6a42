"""Training losses shared by the learned models: SSIM (Wang et al. 2004) and its loss, in plain torch.

Paper 001 trains its Wiener-stack network with the SSIM loss (eq. 2-3 there, after Zhao et al.,
"Loss Functions for Neural Networks for Image Processing"), which the paper took from the
``pytorch_ssim`` package; this module computes the same quantity without an extra package and
agrees with ``skimage.metrics.structural_similarity`` (see the tests).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .. import validation as v

# Wang et al. 2004 constants and window; scikit-image uses the same ones with gaussian_weights=True.
K1, K2 = 0.01, 0.03
GAUSSIAN_SIGMA = 1.5
# scikit-image truncates its Gaussian at 3.5 sigma, which gives the 11-tap window of the paper.
GAUSSIAN_TRUNCATE = 3.5
UNIFORM_WINDOW = 7


def _window(gaussian: bool, win_size: int | None, sigma: float, dtype, device) -> torch.Tensor:
    """Separable 1-D window (normalised to sum 1) and its length."""
    if gaussian:
        radius = int(GAUSSIAN_TRUNCATE * sigma + 0.5)
        taps = torch.arange(-radius, radius + 1, dtype=torch.float64)
        w = torch.exp(-0.5 * (taps / sigma) ** 2)
    else:
        w = torch.ones(win_size or UNIFORM_WINDOW, dtype=torch.float64)
    return (w / w.sum()).to(dtype=dtype, device=device)


def _check_pair(estimate, reference) -> None:
    for t, name in ((estimate, "estimate"), (reference, "reference")):
        v.require_tensor(t, name)
        if t.dim() != 4:
            raise ValueError(f"{name} must have shape (B, C, H, W), got shape {tuple(t.shape)}; "
                             f"add batch/channel dims with {name}[None, None]")
        v.require_float(t, name)
    if estimate.shape != reference.shape:
        raise ValueError(f"estimate and reference must have the same shape, got {tuple(estimate.shape)} "
                         f"and {tuple(reference.shape)}")
    v.require_same_device(estimate, "estimate", reference, "reference")


def ssim_map(estimate: torch.Tensor, reference: torch.Tensor, *, data_range: float = 1.0,
             gaussian: bool = True, sigma: float = GAUSSIAN_SIGMA, win_size: int | None = None,
             sample_covariance: bool | None = None) -> torch.Tensor:
    r"""Local SSIM (paper 001 eq. 3) at every pixel whose window lies inside the image.

    .. math:: \mathrm{SSIM} = \frac{(2\mu_x\mu_y + c_1)(2\sigma_{xy} + c_2)}
              {(\mu_x^2 + \mu_y^2 + c_1)(\sigma_x^2 + \sigma_y^2 + c_2)},
              \quad c_1 = (K_1 R)^2,\ c_2 = (K_2 R)^2

    with local statistics under a Gaussian window (sigma 1.5, 11 taps; Wang et al. 2004) or a
    uniform window (7x7 by default), computed per channel. Only "valid" windows are kept, which is
    what scikit-image averages after cropping its filtered maps.

    Args:
        estimate: (B, C, H, W) float tensor.
        reference: (B, C, H, W) float tensor of the same shape.
        data_range: R, the value range of the images (1 for [0, 1] images).
        gaussian: Gaussian (True) or uniform (False) window.
        sigma: width of the Gaussian window.
        win_size: side of the uniform window (odd); ignored for the Gaussian one.
        sample_covariance: divide the local (co)variances by N - 1 instead of N; default
            False for the Gaussian window and True for the uniform one (scikit-image's defaults).

    Returns:
        (B, C, H - w + 1, W - w + 1) SSIM values, w the window length; differentiable.

    Raises:
        ValueError: shapes differ or are not (B, C, H, W), the window is larger than the image,
            non-float dtypes, data_range <= 0.

    Example:
        >>> x = torch.rand(1, 1, 32, 32)
        >>> ssim_map(x, x).shape
        torch.Size([1, 1, 22, 22])
    """
    _check_pair(estimate, reference)
    if not (isinstance(data_range, (int, float)) and math.isfinite(data_range) and data_range > 0):
        raise ValueError(f"data_range must be a finite number > 0, got {data_range!r}")
    if not gaussian and win_size is not None and (win_size < 1 or win_size % 2 == 0):
        raise ValueError(f"win_size must be a positive odd integer, got {win_size!r}")
    window = _window(gaussian, win_size, sigma, estimate.dtype, estimate.device)
    n = window.numel()
    h, w = estimate.shape[-2:]
    if h < n or w < n:
        raise ValueError(f"the SSIM window ({n}x{n}) is larger than the image ({h}x{w}); "
                         f"use larger images or a smaller window (gaussian=False, win_size=3)")
    if sample_covariance is None:
        sample_covariance = not gaussian
    channels = estimate.shape[1]
    rows = window.reshape(1, 1, n, 1).expand(channels, 1, n, 1)
    cols = window.reshape(1, 1, 1, n).expand(channels, 1, 1, n)

    def local_mean(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.conv2d(t, rows, groups=channels), cols, groups=channels)

    x, y = estimate, reference
    mu_x, mu_y = local_mean(x), local_mean(y)
    # N / (N - 1) turns the window's biased moments into sample (co)variances, as scikit-image does.
    norm = n * n / (n * n - 1) if sample_covariance else 1.0
    var_x = norm * (local_mean(x * x) - mu_x * mu_x)
    var_y = norm * (local_mean(y * y) - mu_y * mu_y)
    cov = norm * (local_mean(x * y) - mu_x * mu_y)
    c1, c2 = (K1 * data_range) ** 2, (K2 * data_range) ** 2
    return ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x ** 2 + mu_y ** 2 + c1) * (var_x + var_y + c2))


def ssim(estimate: torch.Tensor, reference: torch.Tensor, **options) -> torch.Tensor:
    """Mean SSIM per image: (B,) tensor (the mean of :func:`ssim_map` over channels and pixels).

    Args:
        estimate, reference: (B, C, H, W) float tensors.
        **options: ``data_range``, ``gaussian``, ``sigma``, ``win_size``, ``sample_covariance``
            as for :func:`ssim_map`.

    Returns:
        (B,) tensor; 1 for identical images.

    Raises:
        ValueError: see :func:`ssim_map`.

    Example:
        >>> x = torch.rand(2, 3, 32, 32)
        >>> ssim(x, x)
        tensor([1., 1.])
    """
    return ssim_map(estimate, reference, **options).flatten(1).mean(1)


def ssim_loss(estimate: torch.Tensor, reference: torch.Tensor, **options) -> torch.Tensor:
    """Paper 001 eq. 2: minus the mean local SSIM, shifted by 1 so that a perfect estimate scores 0.

    Args:
        estimate, reference: (B, C, H, W) float tensors.
        **options: as for :func:`ssim_map`.

    Returns:
        Scalar ``1 - mean SSIM`` over the batch; differentiable w.r.t. both inputs.

    Raises:
        ValueError: see :func:`ssim_map`.

    Example:
        >>> x = torch.rand(1, 1, 16, 16)
        >>> float(ssim_loss(x, x))
        0.0
    """
    return 1 - ssim_map(estimate, reference, **options).mean()


class SSIMLoss(nn.Module):
    """:func:`ssim_loss` as a module (no parameters), for ``loss = SSIMLoss()(estimate, sharp)``.

    Args:
        **options: fixed options for :func:`ssim_map` (``data_range``, ``gaussian``, ...).

    Example:
        >>> loss = SSIMLoss(data_range=1.0)
        >>> x = torch.rand(1, 1, 16, 16)
        >>> float(loss(x, x))
        0.0
    """

    def __init__(self, **options):
        super().__init__()
        self.options = options

    def forward(self, estimate: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        return ssim_loss(estimate, reference, **self.options)


LOSSES = ("l2", "ssim")


def image_loss(kind: str) -> nn.Module:
    """The training loss named ``kind``: ``"l2"`` (paper 001 eq. 1, mean squared error) or ``"ssim"``.

    Raises:
        ValueError: unknown kind.

    Example:
        >>> image_loss("l2")
        MSELoss()
    """
    v.require_choice(kind, "loss", LOSSES)
    return nn.MSELoss() if kind == "l2" else SSIMLoss()
