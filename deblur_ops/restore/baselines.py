"""The papers' classical baselines: plain gradient descent (paper 000) and one Wiener filter plus a
bilateral filter (paper 001).

:class:`MaskedBlur` is paper 000's data term on a boundary-extended domain; the ``"rgdm"`` model
(:class:`deblur_ops.models.RGDM`) learns to descend the same term. :func:`bilateral_filter` is also
the optional last layer of :class:`deblur_ops.models.WienerStackNet`.

Registered methods: ``"gradient-descent"`` and ``"wiener-bilateral"``.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .. import validation as v
from ..boundary import next_fast_len, psf_to_otf, reflect_dim
from ..ops import wiener_stack
from ..validation import check_image_2d, check_inputs, check_positive, positive_int
from .registry import register

# Paper 000, section V.2: "We apply certain stopping criterion and set the max number of iterations as 50."
MAX_STEPS = 50
# Paper 001, section 2.3: "window size = 7, sigma_color = 40, and sigma_space = 10" on 8-bit values.
BILATERAL_WINDOW = 7
BILATERAL_SIGMA_COLOR = 40 / 255
BILATERAL_SIGMA_SPACE = 10.0
# Paper 001's baseline SNR, "the average SNR of all images in our dataset": the mean over the
# training patches of 10 log10(var(k * x) / sigma^2), the noise-free blurred patch over the noise.
# Measured by the "wiener-stack-net" recipe (deblur_ops.train.wiener_stack_net.dataset_snr_db) on
# 4096 patches of its training data (SyntheticBlur uniform PSFs up to 27 px, 64 x 64 patches, sigma
# uniform in [0.3 %, 1.5 %]): 15.14 dB.
# Low-contrast patches pull the mean down; it is the stored value, rounded, that the baseline uses.
DATASET_SNR_DB = 15.1


class MaskedBlur:
    """The data term of one batch on the extended domain: ``f(x) = ||M (k * x) - y||^2 / 2``.

    ``M`` keeps the image region; the domain is the image extended by ``k // 2`` on every side (and
    rounded up to a fast FFT length), which is exactly the part of the scene the observation
    depends on. Convolutions are circular on that domain, and the wrap cannot reach the image.
    This is the FFT form, for one uniform PSF, of the masked operator of the spatially varying
    methods (:class:`deblur_ops.restore.BlurOperator`).

    Args:
        blurry: (B, C, H, W) observation y.
        psf: (P, kh, kw) with P in {1, B}, convolution convention, centre at ``k // 2``.

    Example:
        >>> op = MaskedBlur(torch.rand(1, 1, 16, 16), torch.ones(1, 3, 3) / 9)
        >>> op.start.shape, op.crop(op.start).shape
        (torch.Size([1, 1, 18, 18]), torch.Size([1, 1, 16, 16]))
    """

    def __init__(self, blurry: torch.Tensor, psf: torch.Tensor):
        spatial = tuple(blurry.shape[-2:])
        self.pads = []
        for n, k in zip(spatial, psf.shape[-2:]):
            before = k // 2
            self.pads.append((before, next_fast_len(n + 2 * before) - n - before))
        start, observed = blurry, blurry
        mask = torch.ones_like(blurry[:1, :1])
        for d, (before, after) in enumerate(self.pads):
            dim = blurry.dim() - 2 + d
            start = reflect_dim(start, dim, before, after)
            zeros = [(0, 0), (0, 0)]
            zeros[d] = (before, after)
            flat = [p for pair in reversed(zeros) for p in pair]
            observed = torch.nn.functional.pad(observed, flat)
            mask = torch.nn.functional.pad(mask, flat)
        self.start, self.observed, self.mask = start, observed, mask
        self.shape = tuple(start.shape[-2:])
        otf = psf_to_otf(psf, self.shape)
        self.otf = otf.reshape(otf.shape[0], 1, *otf.shape[1:])

    def _filter(self, x: torch.Tensor, otf: torch.Tensor) -> torch.Tensor:
        return torch.fft.irfft2(torch.fft.rfft2(x) * otf, s=self.shape)

    def gradient(self, x: torch.Tensor) -> torch.Tensor:
        """grad f(x) = A^T M (A x - y), the gradient of the data term (paper 000 eq. 4)."""
        residual = (self._filter(x, self.otf) - self.observed) * self.mask
        return self._filter(residual, self.otf.conj())

    def crop(self, x: torch.Tensor) -> torch.Tensor:
        """The image region of a tensor on the extended domain."""
        (top, bottom), (left, right) = self.pads
        return x[..., top:x.shape[-2] - bottom, left:x.shape[-1] - right]


def gradient_descent(blurry: torch.Tensor, psf: torch.Tensor, steps: int = MAX_STEPS,
                     step_size: float = 1.0) -> torch.Tensor:
    """Plain gradient descent on the data term: ``x <- x - step_size * A^T M (A x - y)``.

    The same data term, boundary handling and start (the observation) as
    :class:`deblur_ops.models.RGDM`, with the learned units replaced by identities and a fixed
    step: paper 000's baseline. For a PSF with non-negative entries summing to 1, ``||A|| <= 1``,
    so any ``step_size`` < 2 converges (to the unregularised least-squares solution, which
    amplifies noise as the steps grow).

    Args:
        blurry: (B, C, H, W) observation.
        psf: (P, kh, kw) with P in {1, B}.
        steps: number of steps.
        step_size: the fixed step.

    Returns:
        (B, C, H, W) estimate.

    References:
        Repeating Gradient Descent Model (RGDM) for non-blind motion deblurring. Journal of Algebraic Statistics
        13(3), 2022, pp. 2043-2052; authors not in our copy (paper 000 in docs/references.md).
    """
    operator = MaskedBlur(blurry, psf)
    x = operator.start
    for _ in range(steps):
        x = x - step_size * operator.gradient(x)
    return operator.crop(x)


@register("gradient-descent", "paper 000 baseline: plain gradient descent on ||k*x - y||^2 (fixed step, no prior)")
def gradient_descent_method(image: torch.Tensor, psf: torch.Tensor, *, steps: int = MAX_STEPS,
                            step_size: float = 1.0) -> torch.Tensor:
    """Paper 000's baseline: :func:`gradient_descent` with ``steps`` fixed steps (default 50, RGDM's maximum).

    Args:
        image: (B, C, H, W) float tensor.
        psf: (kh, kw) or (B, kh, kw).
        steps: number of steps (compare with RGDM at the same number: ``rgdm`` with ``tol=0``).
        step_size: fixed step, in (0, 2) for a normalised non-negative PSF.

    Returns:
        (B, C, H, W) tensor.

    Raises:
        ValueError: bad shapes or values, ``steps`` < 1, ``step_size`` <= 0.

    Example:
        >>> gradient_descent_method(torch.rand(1, 1, 32, 32), torch.ones(5, 5) / 25, steps=10).shape
        torch.Size([1, 1, 32, 32])

    References:
        Repeating Gradient Descent Model (RGDM) for non-blind motion deblurring. Journal of Algebraic Statistics
        13(3), 2022, pp. 2043-2052; authors not in our copy (paper 000 in docs/references.md).
    """
    image, psf = check_inputs(image, psf)
    check_image_2d(image, "gradient-descent")
    positive_int(steps, "steps")
    step_size = check_positive(step_size, "step_size")
    if not math.isfinite(step_size):
        raise ValueError(f"step_size must be finite, got {step_size!r}")
    return gradient_descent(image, psf, steps, step_size)


def bilateral_filter(image: torch.Tensor, *, window: int = BILATERAL_WINDOW,
                     sigma_color: float = BILATERAL_SIGMA_COLOR,
                     sigma_space: float = BILATERAL_SIGMA_SPACE) -> torch.Tensor:
    r"""Edge-preserving bilateral filter (Tomasi and Manduchi 1998), differentiable, in plain torch.

    Each output pixel is the mean of its ``window`` x ``window`` neighbours weighted by
    :math:`\exp(-d^2 / 2\sigma_s^2 - \|I_q - I_p\|^2 / 2\sigma_c^2)`, d the distance in pixels and
    the colour distance taken over all channels together (as OpenCV does for colour images).
    Borders are continued by replicating the edge pixels.

    Args:
        image: (B, C, H, W) float tensor, values in [0, 1] for the default ``sigma_color``.
        window: odd side of the neighbourhood.
        sigma_color: range sigma in image units (paper 001: 40 on the 8-bit scale = 40/255).
        sigma_space: spatial sigma in pixels.

    Returns:
        Tensor of the image's shape and dtype.

    Raises:
        ValueError: not (B, C, H, W) float, an even or non-positive window, non-positive sigmas.

    Example:
        >>> flat = torch.full((1, 1, 16, 16), 0.5)
        >>> torch.allclose(bilateral_filter(flat), flat)
        True

    References:
        - C. Tomasi, R. Manduchi. Bilateral filtering for gray and color images. ICCV 1998, 839-846.
        - A. Gilbert, S. Messinger, A. Patel. Non-Blind Image Deblurring using Neural Networks. Course project
          report, year not stated (paper 001 in docs/references.md).
    """
    v.require_tensor(image, "image")
    if image.dim() != 4:
        raise ValueError(f"image must have shape (B, C, H, W), got shape {tuple(image.shape)}")
    v.require_float(image, "image")
    if isinstance(window, bool) or not isinstance(window, int) or window < 1 or window % 2 == 0:
        raise ValueError(f"window must be a positive odd integer, got {window!r}")
    check_positive(sigma_color, "sigma_color")
    check_positive(sigma_space, "sigma_space")
    r = window // 2
    padded = F.pad(image, (r, r, r, r), mode="replicate")
    h, w = image.shape[-2:]
    numerator = torch.zeros_like(image)
    denominator = torch.zeros_like(image[:, :1])
    # A loop over the window's offsets keeps memory at a few image copies, unlike unfold (window^2 copies).
    for dy in range(window):
        for dx in range(window):
            neighbour = padded[..., dy:dy + h, dx:dx + w]
            spatial = ((dy - r) ** 2 + (dx - r) ** 2) / (2 * sigma_space ** 2)
            colour = (neighbour - image).square().sum(1, keepdim=True) / (2 * sigma_color ** 2)
            weight = torch.exp(-colour - spatial)
            numerator = numerator + weight * neighbour
            denominator = denominator + weight
    return numerator / denominator


@register("wiener-bilateral", "paper 001 baseline: one Wiener filter at the dataset-average SNR + bilateral filter")
def wiener_bilateral(image: torch.Tensor, psf: torch.Tensor, *, snr_db: float = DATASET_SNR_DB,
                     bilateral: bool = True) -> torch.Tensor:
    """Paper 001's baseline (its Fig. 4): Wiener at one fixed SNR for all images, then a bilateral filter.

    The SNR is not tuned per image (the paper's point); its default is the average SNR of the
    training data of the shipped ``wiener-stack-net`` (:data:`DATASET_SNR_DB`). The bilateral
    filter has the paper's parameters (:func:`bilateral_filter` defaults); with several channels
    the colour distance is taken over all of them.

    Args:
        image: (B, C, H, W) float tensor.
        psf: (kh, kw) or (B, kh, kw).
        snr_db: the Wiener filter's SNR in dB (lambda = 10^(-snr/10), identity regulariser).
        bilateral: apply the bilateral filter.

    Returns:
        (B, C, H, W) tensor.

    Raises:
        ValueError: bad shapes or values, non-finite ``snr_db``.

    Example:
        >>> wiener_bilateral(torch.rand(1, 1, 32, 32), torch.ones(5, 5) / 25).shape
        torch.Size([1, 1, 32, 32])

    References:
        - A. Gilbert, S. Messinger, A. Patel. Non-Blind Image Deblurring using Neural Networks. Course project
          report, year not stated (paper 001 in docs/references.md).
        - C. Tomasi, R. Manduchi. Bilateral filtering for gray and color images. ICCV 1998, 839-846.
    """
    image, psf = check_inputs(image, psf)
    check_image_2d(image, "wiener-bilateral")
    if isinstance(snr_db, bool) or not isinstance(snr_db, (int, float)) or not math.isfinite(snr_db):
        raise ValueError(f"snr_db must be a finite number (dB), got {snr_db!r}")
    kernel = psf[0] if psf.shape[0] == 1 else psf
    out = wiener_stack(image, kernel, [float(snr_db)])[:, 0]
    return bilateral_filter(out) if bilateral else out
