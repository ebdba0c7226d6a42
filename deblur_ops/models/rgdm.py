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
time continued from the model's own earlier states (:class:`TrajectoryPool`), so that the steps
late in a 50-step run are trained as well as the first ones.

Boundaries: the unknown image lives on a domain extended by half the PSF on every side (started
from the mirrored observation) and the data term compares ``A x`` with ``y`` on the image only, so
no periodic or mirrored continuation of the scene is assumed; the convolutions are done by FFT on
that extended domain, where the circular wrap never reaches the image.

Registered methods: ``"rgdm"`` (the shipped trained model) and ``"gradient-descent"`` (the paper's
baseline: plain gradient descent on the same data term). Pretrained name: ``"rgdm"``.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ..boundary import _reflect_dim, next_fast_len, psf_to_otf
from ..restore._common import check_inputs, check_positive
from ..restore.registry import register
from ..train.recipes import register_recipe
from ._channels import fold_channels, positive_int
from .methods import cached_model
from .pretrained import register_pretrained

# Paper 000, section V.2: "We apply certain stopping criterion and set the max number of iterations as 50."
MAX_STEPS = 50
# Relative change ||x_{t+1} - x_t|| / ||x_t|| below which an image is considered converged.
DEFAULT_TOL = 2e-3


class MaskedBlur:
    """The data term of one batch on the extended domain: ``f(x) = ||M (k * x) - y||^2 / 2``.

    ``M`` keeps the image region; the domain is the image extended by ``k // 2`` on every side (and
    rounded up to a fast FFT length), which is exactly the part of the scene the observation
    depends on. Convolutions are circular on that domain, and the wrap cannot reach the image.
    This is the FFT form, for one uniform PSF, of the masked operator of the spatially varying
    methods (``deblur_ops.restore._nonuniform.BlurOperator``).

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
            start = _reflect_dim(start, dim, before, after)
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


def gradient_descent(blurry: torch.Tensor, psf: torch.Tensor, steps: int = MAX_STEPS,
                     step_size: float = 1.0) -> torch.Tensor:
    """Plain gradient descent on the data term: ``x <- x - step_size * A^T M (A x - y)``.

    The same data term, boundary handling and start (the observation) as :class:`RGDM`, with the
    learned units replaced by identities and a fixed step: paper 000's baseline. For a PSF with
    non-negative entries summing to 1, ``||A|| <= 1``, so any ``step_size`` < 2 converges (to the
    unregularised least-squares solution, which amplifies noise as the steps grow).

    Args:
        blurry: (B, C, H, W) observation.
        psf: (P, kh, kw) with P in {1, B}.
        steps: number of steps.
        step_size: the fixed step.

    Returns:
        (B, C, H, W) estimate.
    """
    operator = MaskedBlur(blurry, psf)
    x = operator.start
    for _ in range(steps):
        x = x - step_size * operator.gradient(x)
    return operator.crop(x)


register_pretrained("rgdm", RGDM, "paper 000 recurrent gradient-descent deconvolution, grey, for method 'rgdm'")

def _check_2d(image: torch.Tensor, name: str) -> None:
    if image.dim() != 4:
        raise ValueError(f"{name} restores 2D images (B, C, H, W), got shape {tuple(image.shape)}")


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
    """
    image, psf = check_inputs(image, psf)
    _check_2d(image, "rgdm")
    positive_int(max_steps, "max_steps")
    check_positive(tol, "tol", allow_zero=True)
    model = cached_model("rgdm", image.device)
    batch, kernels = fold_channels(image.float(), psf.float(), model.channels)
    with torch.no_grad():
        out, _ = model.restore(batch, kernels, max_steps=max_steps, tol=tol)
    return out.reshape(image.shape).to(image.dtype)


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
    """
    image, psf = check_inputs(image, psf)
    _check_2d(image, "gradient-descent")
    positive_int(steps, "steps")
    step_size = check_positive(step_size, "step_size")
    if not math.isfinite(step_size):
        raise ValueError(f"step_size must be finite, got {step_size!r}")
    return gradient_descent(image, psf, steps, step_size)



def recursive_loss(estimates: list[torch.Tensor], sharp: torch.Tensor) -> torch.Tensor:
    """Mean squared error averaged over every step's estimate ("recursive supervision", paper 000).

    Supervising every step, not only the last, teaches the shared unit to improve any
    intermediate estimate, which is what lets it run for more steps at test time than in training.

    Example:
        >>> x = torch.zeros(1, 1, 4, 4)
        >>> float(recursive_loss([x, x + 1], x))
        0.5
    """
    return torch.stack([torch.mean((x - sharp) ** 2) for x in estimates]).mean()


class TrajectoryPool:
    """Training batches that carry on along the model's own trajectories (truncated back-propagation).

    Each of the ``size`` slots holds a training sample, the model's current state for it on the
    extended domain, its age (steps done) and its horizon (drawn uniformly from
    ``[steps_per_update, max_steps]``). Every update runs ``steps_per_update`` steps with gradients
    from the stored states and then stores the new ones; a slot whose age reaches its horizon
    takes the matching sample of the next fresh batch and restarts from the observation. So the
    model is trained on the early *and* the late steps of its test-time runs (up to 50) while
    every update back-propagates through a few steps only, and the staggered horizons keep
    every age in each batch.

    Args:
        steps_per_update: steps with gradients per update (the model's ``train_steps``).
        max_steps: the longest trajectory (the test-time maximum).
        generator: draws the horizons.
    """

    def __init__(self, steps_per_update: int, max_steps: int, generator: torch.Generator):
        self.steps_per_update, self.max_steps, self.generator = steps_per_update, max_steps, generator
        self.batch = None

    def _horizons(self, n: int) -> torch.Tensor:
        return torch.randint(self.steps_per_update, self.max_steps + 1, (n,), generator=self.generator)

    def refill(self, fresh: dict) -> torch.Tensor:
        """Put fresh samples into the finished slots; returns the (B,) mask of slots that restart."""
        n = fresh["blurry"].shape[0]
        if self.batch is None:
            self.batch = {k: fresh[k].clone() for k in ("blurry", "sharp", "psf")}
            self.state, self.age, self.horizon = None, torch.zeros(n, dtype=torch.long), self._horizons(n)
            return torch.ones(n, dtype=torch.bool)
        done = self.age >= self.horizon
        for key, value in self.batch.items():
            value[done] = fresh[key][done]
        self.age[done] = 0
        self.horizon[done] = self._horizons(int(done.sum()))
        return done

    def advance(self, states: torch.Tensor) -> None:
        self.state = states.detach()
        self.age += self.steps_per_update


def train_rgdm(options) -> dict:
    """Recipe ``deblur train rgdm``: one grey RGDM for all noise levels 0.3-1.5 % and uniform PSFs.

    Defaults (override with the CLI flags and ``--set key=value``): Adam, lr 1e-4 with cosine decay
    to a tenth (the model starts as gradient descent and is fine-tuned from there), gradient
    clipping at 1, 500 updates of 8 patches of 64 x 64, PSFs up to 27 px long
    in 29 x 29. Each update back-propagates through ``train_steps`` (3) steps continued from the
    model's own earlier states (:class:`TrajectoryPool`, trajectories up to 50 steps), with the MSE
    averaged over those steps' estimates. ``--set`` keys: width (16), kernel_size (5),
    train_steps (3), psf_size, max_length, val_batches. Validation runs the test-time rule
    (relative change < :data:`DEFAULT_TOL`, at most 50 steps); after training the same patches
    are scored by plain gradient descent with the same number of steps per patch (the paper's
    baseline) and with 50 steps; all of it goes into the weight file's info. A resumed run
    restarts the trajectories from the observations.

    Args:
        options: :class:`deblur_ops.train.TrainOptions`.

    Returns:
        The info dict stored with the weights.
    """
    from ..train import SyntheticBlur, fit, psnr_batch, training_info
    from .pretrained import save_pretrained

    cfg = options.pop_extra({"width": 16, "kernel_size": 5, "train_steps": 3, "psf_size": 29, "max_length": 27.0,
                             "val_batches": 4})
    steps, batch_size = options.get("steps", 500), options.get("batch_size", 8)
    patch, lr = options.get("patch", 64), options.get("lr", 1e-4)
    data_options = {"psf": "uniform", "patch": patch, "psf_size": cfg["psf_size"], "channels": 1,
                    "noise": (0.003, 0.015), "max_length": cfg["max_length"], "images": options.images}
    train_data, val_data = SyntheticBlur.splits(**data_options, seed=options.seed)
    torch.manual_seed(options.seed)
    model = RGDM(channels=1, width=cfg["width"], kernel_size=cfg["kernel_size"], train_steps=cfg["train_steps"])
    model.to(options.device)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps, eta_min=lr / 10)
    pool = TrajectoryPool(cfg["train_steps"], MAX_STEPS, torch.Generator().manual_seed(options.seed))

    def train_step(fresh: dict) -> float:
        restart = pool.refill(fresh)
        batch = pool.batch
        operator = model.operator(batch["blurry"], batch["psf"])
        start = operator.start if pool.state is None else torch.where(
            restart.reshape(-1, 1, 1, 1).to(operator.start.device), operator.start, pool.state)
        optimizer.zero_grad(set_to_none=True)
        states = model.unroll(operator, start, model.train_steps)
        loss = recursive_loss([operator.crop(x) for x in states], batch["sharp"])
        if not torch.isfinite(loss):
            raise FloatingPointError(f"training loss became {float(loss)}; lower the learning rate")
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        pool.advance(states[-1])
        return float(loss.detach())

    # Validation runs the test-time rule (stop on relative change, at most 50 steps), not the training unroll.
    history = fit(model, train_step, lambda b: model.restore(b["blurry"], b["psf"])[0], train_data, val_data,
                  steps=steps, batch_size=batch_size, optimizers=[optimizer], schedulers=[scheduler],
                  validate_every=options.get("validate_every", 200), val_batches=cfg["val_batches"],
                  checkpoint=options.checkpoint, resume=options.resume, seed=options.seed,
                  progress=options.progress, device=options.device)
    # The same validation patches fit scored (same split and seed), for the baselines.
    replay = SyntheticBlur(**data_options, seed=options.seed, split="val")
    model.eval()
    scores = {"rgdm": [], "gd_same": [], "gd_50": []}
    used = []
    with torch.no_grad():
        for _ in range(cfg["val_batches"]):
            b = replay.batch(batch_size)
            x, taken = model.restore(b["blurry"], b["psf"])
            scores["rgdm"].append(psnr_batch(x, b["sharp"]))
            used.append(taken)
            same = [gradient_descent(b["blurry"][i:i + 1], b["psf"][i:i + 1], int(n)) for i, n in enumerate(taken)]
            scores["gd_same"].append(psnr_batch(torch.cat(same), b["sharp"]))
            scores["gd_50"].append(psnr_batch(gradient_descent(b["blurry"], b["psf"], MAX_STEPS), b["sharp"]))
    mean = {k: float(torch.cat(v).mean()) for k, v in scores.items()}
    used = torch.cat(used).float()
    described = {**data_options, "noise": list(data_options["noise"]),
                 "images": "built-in offline skimage images (training split)" if options.images is None
                 else str(options.images)}
    info = training_info(options, history, described,
                         loss="MSE averaged over the estimates of each update's steps",
                         training=f"TrajectoryPool, {cfg['train_steps']} steps per update, trajectories up to "
                                  f"{MAX_STEPS} steps", lr=lr, schedule="cosine to lr/10", grad_clip=1.0,
                         patch=patch, test_rule={"tol": DEFAULT_TOL, "max_steps": MAX_STEPS},
                         validation_restore_psnr=mean["rgdm"], validation_restore_steps_mean=float(used.mean()),
                         validation_restore_steps_max=int(used.max()), validation_baseline_psnr=mean["gd_same"],
                         baseline="gradient-descent, step 1, same number of steps per patch as rgdm took",
                         validation_gd50_psnr=mean["gd_50"])
    save_pretrained(model.cpu(), options.out, config=model.config(), info=info, name="rgdm")
    return info


register_recipe("rgdm", "paper 000 RGDM (grey, one model for noise 0.3-1.5 %) on synthetic uniform blur", train_rgdm)
