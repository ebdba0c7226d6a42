"""Paper 000: the Recurrent Gradient Descent Model (RGDM), a learned deconvolution optimiser.

The paper (a re-telling of Gong et al.'s RGDN, "Learning Deep Gradient Descent Optimization for
Image Deconvolution", 2018) starts from gradient descent on
``||y - A x||^2 / (2 lambda) + gamma Omega(x)`` (its eq. 2-5, A the convolution with the known PSF)
and replaces the parts that need the unknown noise level, the prior and the curvature by three
CNNs shared over all steps (its Fig. 1):

    x_{t+1} = x_t - D( H(grad f(x_t)) + R(x_t) ),    grad f(x) = A^T (A x - y)

- H takes the data-term gradient and plays the role of the unknown ``1 / lambda`` scaling (the
  noise level is never given to the model; its Fig. 2 shows the input and output of H),
- R takes the current estimate and gives the gradient of the learned prior (``gamma grad Omega``),
- D maps the summed direction to the step (the scaling matrix ``alpha_t D_t``, an inverse-Hessian-like
  preconditioner).

Each of R, H and D is conv-ReLU-conv-ReLU-tconv-ReLU-tconv (Fig. 1c). One model serves every noise
level in [0.3 %, 1.5 %] and every PSF; at test time it runs until the relative change of the
estimate falls below a tolerance, at most 50 steps (section V.2). Training supervises every step
("recursive supervision").

Two choices the paper leaves open, made here so that a small model trained briefly on a CPU
works: the untrained model *is* plain gradient descent (H and D start as the identity, R near
zero; :meth:`ConvUnit.start_as_identity`), and training back-propagates through a few steps at a
time continued from the model's own earlier states
(:class:`deblur_ops.train.rgdm.TrajectoryPool`), so that the steps late in a 50-step run are
trained as well as the first ones.

Boundaries: the unknown image lives on a domain extended by half the PSF on every side (started
from the mirrored observation) and the data term compares ``A x`` with ``y`` on the image only, so
no periodic or mirrored continuation of the scene is assumed; the convolutions are done by FFT on
that extended domain, where the circular wrap never reaches the image
(:class:`deblur_ops.restore.baselines.MaskedBlur`).

Registered method: ``"rgdm"`` (the shipped trained model); the paper's baseline, plain gradient
descent on the same data term, is ``"gradient-descent"`` in :mod:`deblur_ops.restore.baselines`.
Pretrained name: ``"rgdm"``; training: ``deblur train rgdm`` (:mod:`deblur_ops.train.rgdm`).
"""
from __future__ import annotations

import torch
from torch import nn

from ..restore.baselines import MAX_STEPS, MaskedBlur
from ..restore.registry import register
from ..validation import check_image_2d, check_inputs, check_positive, positive_int
from ._channels import fold_channels
from .methods import cached_model

# Relative change ||x_{t+1} - x_t|| / ||x_t|| below which an image is considered converged.
DEFAULT_TOL = 2e-3


class ConvUnit(nn.Module):
    """One CNN of the gradient-descent unit (paper 000 Fig. 1c): conv-ReLU-conv-ReLU-tconv-ReLU-tconv.

    Stride 1 and ``kernel_size // 2`` padding keep the size. No biases: a zero input then gives a
    zero output, so that H and D map a vanishing direction to a vanishing step and a fixed point
    of the recurrence is a point where ``H(grad f) + R(x) = 0``.

    Args:
        channels: image channels (input and output).
        width: feature channels of the hidden layers.
        kernel_size: odd kernel side.

    Example:
        >>> ConvUnit(1, 8)(torch.rand(2, 1, 15, 17)).shape
        torch.Size([2, 1, 15, 17])
    """

    def __init__(self, channels: int, width: int, kernel_size: int = 5):
        super().__init__()
        p = kernel_size // 2
        self.layers = nn.Sequential(
            nn.Conv2d(channels, width, kernel_size, padding=p, bias=False), nn.ReLU(),
            nn.Conv2d(width, width, kernel_size, padding=p, bias=False), nn.ReLU(),
            nn.ConvTranspose2d(width, width, kernel_size, padding=p, bias=False), nn.ReLU(),
            nn.ConvTranspose2d(width, channels, kernel_size, padding=p, bias=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)

    def start_as_identity(self, scale: float) -> None:
        """Set the weights so that the unit computes ``scale * input`` exactly.

        Uses ``v = relu(v) - relu(-v)``: the first 2C hidden channels carry +v and -v through the
        centre taps, and the other channels are kept (random) but do not feed that path; their
        weights into the output are scaled down 100x, so they start as a small perturbation that
        training can grow. Needs ``width >= 2 * channels``.
        """
        first, second, third, last = (self.layers[i] for i in (0, 2, 4, 6))
        c, width, centre = last.out_channels, first.out_channels, first.kernel_size[0] // 2
        if width < 2 * c:
            raise ValueError(f"an identity start needs width >= 2 * channels = {2 * c}, got width {width}")
        eye = torch.arange(c)
        path = torch.arange(2 * c)
        with torch.no_grad():
            first.weight[:2 * c] = 0               # Conv2d weight: (out, in, kh, kw)
            first.weight[eye, eye, centre, centre] = 1
            first.weight[c + eye, eye, centre, centre] = -1
            second.weight[:2 * c] = 0
            second.weight[path, path, centre, centre] = 1
            third.weight[:, :2 * c] = 0            # ConvTranspose2d weight: (in, out, kh, kw)
            third.weight[path, path, centre, centre] = 1
            last.weight.mul_(0.01)
            last.weight[:2 * c] = 0
            last.weight[eye, eye, centre, centre] = scale
            last.weight[c + eye, eye, centre, centre] = -scale


class RGDM(nn.Module):
    """Recurrent gradient-descent deconvolution (paper 000): ``x <- x - D(H(grad f(x)) + R(x))``.

    Args:
        channels: image channels the CNNs take (3: the paper's RGB; the shipped model is grey and
            the ``"rgdm"`` method folds colour channels into the batch).
        width: hidden channels of R, H and D (the paper gives none; the RGDN authors' released
            code uses 64), at least 2 * channels.
        kernel_size: odd kernel side of every (transposed) convolution (RGDN's code: 5).
        train_steps: the number of recurrent steps :meth:`forward` runs by default (training).

    Shapes:
        ``forward(blurry (B, C, H, W), psf (kh, kw) or (B, kh, kw)) -> list of (B, C, H, W)``, the
        estimate after each step; any H, W at least the PSF size.

    Example:
        >>> model = RGDM(channels=1, width=4, train_steps=3)
        >>> [x.shape for x in model(torch.rand(2, 1, 20, 21), torch.ones(5, 5) / 25)][-1]
        torch.Size([2, 1, 20, 21])

    References:
        Repeating Gradient Descent Model (RGDM) for non-blind motion deblurring. Journal of Algebraic Statistics
        13(3), 2022, pp. 2043-2052; authors not in our copy (paper 000 in docs/references.md).
    """

    def __init__(self, channels: int = 3, width: int = 64, kernel_size: int = 5, train_steps: int = 3):
        super().__init__()
        self.channels = positive_int(channels, "channels")
        positive_int(width, "width")
        if positive_int(kernel_size, "kernel_size") % 2 == 0:
            raise ValueError(f"kernel_size must be odd so that the convolutions keep the size, got {kernel_size}")
        self.train_steps = positive_int(train_steps, "train_steps")
        if width < 2 * channels:
            raise ValueError(f"width must be at least 2 * channels = {2 * channels} (the identity start of H and D), "
                             f"got {width}")
        self.regularizer = ConvUnit(channels, width, kernel_size)        # R: gradient of the learned prior
        self.gradient_adjuster = ConvUnit(channels, width, kernel_size)  # H: scales the data-term gradient
        self.preconditioner = ConvUnit(channels, width, kernel_size)     # D: direction -> step
        # The untrained model is (nearly) plain gradient descent with step 1: H and D start as the
        # identity and R's output 100x smaller than its default start. Training so begins from a
        # stable, convergent recurrence (a random one can blow up over the steps) and only has to
        # learn what improves on the paper's own baseline.
        self.gradient_adjuster.start_as_identity(1.0)
        self.preconditioner.start_as_identity(1.0)
        with torch.no_grad():
            self.regularizer.layers[-1].weight.mul_(0.01)
        self._config = {"channels": channels, "width": width, "kernel_size": kernel_size, "train_steps": train_steps}

    def config(self) -> dict:
        """Keyword arguments that rebuild this architecture (stored with its weights).

        Example:
            >>> RGDM(width=8).config()["width"]
            8
        """
        return dict(self._config)

    def operator(self, blurry: torch.Tensor, psf: torch.Tensor) -> MaskedBlur:
        """The checked data term of ``blurry`` (B, C, H, W) and ``psf`` ((kh, kw) or (B, kh, kw))."""
        blurry, psf = check_inputs(blurry, psf)
        if blurry.dim() != 4 or blurry.shape[1] != self.channels:
            raise ValueError(f"blurry must have shape (B, {self.channels}, H, W) for this {self.channels}-channel "
                             f"model, got shape {tuple(blurry.shape)}")
        return MaskedBlur(blurry, psf)

    def step(self, x: torch.Tensor, operator: MaskedBlur) -> torch.Tensor:
        """One update of the gradient-descent unit on the extended domain (paper 000 eq. 5, Fig. 1b)."""
        direction = self.gradient_adjuster(operator.gradient(x)) + self.regularizer(x)
        return x - self.preconditioner(direction)

    def unroll(self, operator: MaskedBlur, x: torch.Tensor, steps: int) -> list[torch.Tensor]:
        """The states on the extended domain after each of ``steps`` steps from ``x`` (e.g. ``operator.start``)."""
        states = []
        for _ in range(positive_int(steps, "steps")):
            x = self.step(x, operator)
            states.append(x)
        return states

    def forward(self, blurry: torch.Tensor, psf: torch.Tensor, steps: int | None = None) -> list[torch.Tensor]:
        operator = self.operator(blurry, psf)
        states = self.unroll(operator, operator.start, self.train_steps if steps is None else steps)
        return [operator.crop(x) for x in states]

    def restore(self, blurry: torch.Tensor, psf: torch.Tensor, *, max_steps: int = MAX_STEPS,
                tol: float = DEFAULT_TOL) -> tuple[torch.Tensor, torch.Tensor]:
        """Run the learned optimiser until each image's relative change is below ``tol``.

        An image stops (keeps its estimate) after the first step whose update satisfies
        ``||x_{t+1} - x_t|| / ||x_t|| < tol`` on the image region; the loop ends when all have
        stopped or after ``max_steps`` steps.

        Args:
            blurry: (B, C, H, W).
            psf: (kh, kw) or (B, kh, kw).
            max_steps: the most steps (paper: 50).
            tol: relative-change threshold; 0 runs exactly ``max_steps`` steps.

        Returns:
            The estimate (B, C, H, W) and the number of steps each image took, (B,) int64.

        Raises:
            ValueError: bad inputs, ``max_steps`` < 1, ``tol`` < 0.

        Example:
            >>> model = RGDM(channels=1, width=4)
            >>> x, steps = model.restore(torch.rand(1, 1, 16, 16), torch.ones(3, 3) / 9, max_steps=4)
            >>> x.shape, int(steps.max()) <= 4
            (torch.Size([1, 1, 16, 16]), True)
        """
        positive_int(max_steps, "max_steps")
        tol = check_positive(tol, "tol", allow_zero=True)
        operator = self.operator(blurry, psf)
        x = operator.start
        active = torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
        steps = torch.zeros(x.shape[0], dtype=torch.int64, device=x.device)
        for _ in range(max_steps):
            update = self.step(x, operator)
            change = (operator.crop(update - x).flatten(1).norm(dim=1)
                      / operator.crop(x).flatten(1).norm(dim=1).clamp_min(1e-12))
            x = torch.where(active.reshape(-1, 1, 1, 1), update, x)
            steps += active.long()
            active = active & (change >= tol)
            if not bool(active.any()):
                break
        return operator.crop(x), steps


@register("rgdm", "paper 000: learned recurrent gradient descent (shared R/H/D CNNs), stops on relative change")
def rgdm(image: torch.Tensor, psf: torch.Tensor, *, max_steps: int = MAX_STEPS,
         tol: float = DEFAULT_TOL) -> torch.Tensor:
    """Restore with the shipped :class:`RGDM` (paper 000), running until converged (at most ``max_steps``).

    The shipped model is single-channel; colour channels are restored one by one with the same
    PSF (folded into the batch). It was trained on images in [0, 1] with noise sigma 0.3-1.5 %
    and needs no noise level.

    Args:
        image: (B, C, H, W) float tensor.
        psf: (kh, kw) or (B, kh, kw), odd sizes, centred, summing to 1.
        max_steps: the most recurrent steps (paper: 50).
        tol: stop an image once ``||x_{t+1} - x_t|| / ||x_t|| < tol``; 0 runs ``max_steps`` steps.

    Returns:
        (B, C, H, W) tensor, the image's dtype.

    Raises:
        ValueError: bad shapes or values, ``max_steps`` < 1, ``tol`` < 0.
        FileNotFoundError: the weight file is missing from this installation.

    Example:
        >>> import deblur_ops
        >>> y = torch.rand(32, 32)
        >>> deblur_ops.deblur(y, torch.ones(5, 5) / 25, method="rgdm", max_steps=3).shape
        torch.Size([32, 32])

    References:
        Repeating Gradient Descent Model (RGDM) for non-blind motion deblurring. Journal of Algebraic Statistics
        13(3), 2022, pp. 2043-2052; authors not in our copy (paper 000 in docs/references.md).
    """
    image, psf = check_inputs(image, psf)
    check_image_2d(image, "rgdm")
    positive_int(max_steps, "max_steps")
    check_positive(tol, "tol", allow_zero=True)
    model = cached_model("rgdm", image.device)
    batch, kernels = fold_channels(image.float(), psf.float(), model.channels)
    with torch.no_grad():
        out, _ = model.restore(batch, kernels, max_steps=max_steps, tol=tol)
    return out.reshape(image.shape).to(image.dtype)
