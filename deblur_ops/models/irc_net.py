"""IRC-Net (paper 004 §3.2): the ADMM + IRC solver unrolled into a trainable network.

Each of the N stages is the z update (prior filters k_i as a convolution, then a learnable
shrinkage), the x update by iterative residual compensation repeated T times (NU-Conv with the
local blur filters, subtraction, NU-Conv with the local inverse filters, sum) and the beta
update with a learnable rate. It runs the same loop as the untrained ``irc`` method
(:func:`deblur_ops.restore.irc.irc_admm`) on the same extended domain, so an untrained
IRC-Net *is* that method with ``inverse="bank"`` (the paper's interpolated inverse filters, which
IRC-Net learns; ``irc`` defaults to the grid preconditioner instead).

Trainable parameters:

- the prior filters k_i (initialised to the horizontal and vertical gradients), kept zero-sum;
- one learnable shrinkage per stage (paper 004 after ADMM-Net). It acts on responses divided by
  the soft threshold t = lambda / rho of the image's noise level (lambda = 0.04 sqrt(sigma) as for
  ``irc``): z = t * phi_stage(v / t), phi initialised to soft-thresholding at 1. The learned
  function so carries over between noise levels, which a fixed threshold would not;
- the beta-update rates, one per stage (initialised to 1);
- a correction of the central ``delta_size`` x ``delta_size`` taps of every inverse filter of the
  motion bank (initialised to 0, on top of the analytic filters of eq. 14). The paper fine-tunes the
  whole filters; the centre carries most of their energy, and 511 x 3 full 71 x 71 filters would be
  a 31 MB weight file.

Blur inputs: a uniform PSF (analytic inverse filters for it), a motion field (per-pixel length and
angle; the learned motion bank), or per-pixel ``idx``/``weights`` into any filter bank.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .. import validation as v
from .. import psf as psf_lib
from ..data.noise import noise_sigma_per_item
from ..ops.learnable_shrink import LearnableShrink
from ..restore import BlurOperator
from ..restore.irc import (BANK_DEFAULTS, DEFAULT_GRID_SPACING, GRID_DEFAULTS, IRC_INVERSES, WEIGHT_PER_ROOT_NOISE,
                           branch_inverse, conv_same, irc_admm, preconditioned_inverse, spatially_invariant)

# Extra prior filters beyond the two gradients: the two diagonal differences, then second
# differences, so prior_filters up to 6 starts from sensible sparsifying filters.
_EXTRA_PRIORS = [
    [[0, 0, 0], [0, -1, 0], [0, 0, 1]],
    [[0, 0, 0], [0, -1, 0], [1, 0, 0]],
    [[0, 0, 0], [1, -2, 1], [0, 0, 0]],
    [[0, 1, 0], [0, -2, 0], [0, 1, 0]],
]


def initial_priors(count: int, dtype=torch.float32) -> torch.Tensor:
    """(count, 3, 3) prior filters: horizontal and vertical gradients first (paper 004 §4.2)."""
    if isinstance(count, bool) or int(count) != count or not 1 <= count <= 2 + len(_EXTRA_PRIORS):
        raise ValueError(f"prior_filters must be an integer in [1, {2 + len(_EXTRA_PRIORS)}], got {count!r}")
    filters = torch.cat([psf_lib.GRADIENT_PRIORS.double(), torch.tensor(_EXTRA_PRIORS, dtype=torch.float64)])
    return filters[:int(count)].to(dtype).contiguous()


class _Inputs:
    """A blur given as bank + per-pixel idx/weights, in the form BlurOperator takes."""

    spatially_varying = True

    def __init__(self, bank, idx, weights):
        self.bank, self.idx, self.weights = bank, idx, weights

    def nu_conv_inputs(self, image_shape, *, dtype=torch.float32, device=None):
        if tuple(self.idx.shape[-2:]) != tuple(image_shape):
            raise ValueError(f"idx/weights cover {tuple(self.idx.shape[-2:])} pixels but the image is "
                             f"{tuple(image_shape)}; give one set per pixel")
        return self.bank.to(dtype=dtype, device=device), self.idx.to(device), self.weights.to(dtype=dtype, device=device)


class IRCNet(nn.Module):
    """Unrolled ADMM with iterative residual compensation (paper 004 Fig. 3).

    Args:
        stages: ADMM stages N (paper: 5).
        inner_steps: IRC iterations T per stage (paper: 2).
        prior_filters: number n of prior filters k_i (2: horizontal and vertical gradients).
        filter_size: odd side of the motion bank's inverse filters; default 2 * max_length + 1.
        max_length: longest motion of the bank (odd); the bank is paper 004's grid, lengths
            1, 3, ..., max_length and angles 0, 6, ..., 174 degrees (511 filters for 35).
        angle_step: angle step of the bank in degrees (divides 180).
        rho: ADMM penalty; also the prior weight of the analytic inverse filters. Default 0.1 for
            ``"bank"``; for ``"grid"`` None picks it per input as ``irc`` does.
        delta_size: odd side of the learned correction at the centre of each inverse filter
            (0 disables it); default min(15, filter_size).
        n_knots, shrink_range: knots of the learnable shrinkage on the normalised axis v / t.
        weight_mode: ``"bilinear"`` or ``"softmax"`` (eq. 17-18) interpolation of motion fields
            between the bank's grid motions.
        temperature: softmax temperature.
        inverse: the x update's inverse, as ``irc``'s: ``"bank"`` (paper 004 eq. 17, the bank's
            interpolated inverse filters, with their learned centres) or ``"grid"`` (exact adjoints
            of the blur and of the learned priors, then the node-wise Fourier preconditioner; no
            per-filter parameters, a learned momentum per stage instead).
        grid_spacing: node spacing of the ``"grid"`` preconditioner.
        momentum: initial heavy-ball factor of the ``"grid"`` x steps (learned per stage).

    Example:
        >>> import torch
        >>> net = IRCNet(stages=2, inner_steps=1, max_length=5)
        >>> y = torch.rand(1, 1, 24, 24)
        >>> net(y, motion=(torch.full((1, 24, 24), 3.0), torch.zeros(1, 24, 24))).shape
        torch.Size([1, 1, 24, 24])

    References:
        - T. Eboli, J. Sun, J. Ponce. Neural Embedding of an Iterative Deconvolution Algorithm for Motion Blur
          Estimation and Removal. Preprint hal-01857177, 2018 (paper 004 in docs/references.md).
        - Y. Yang, J. Sun, H. Li, Z. Xu. Deep ADMM-Net for compressive sensing MRI. NIPS 2016.
    """

    def __init__(self, stages: int = 5, inner_steps: int = 2, prior_filters: int = 2, filter_size: int | None = None,
                 max_length: int = 35, angle_step: int = 6, rho: float | None = None, delta_size: int | None = None,
                 n_knots: int = 81, shrink_range: float = 8.0, weight_mode: str = "bilinear",
                 temperature: float = 0.25, inverse: str = "bank", grid_spacing: int = DEFAULT_GRID_SPACING,
                 momentum: float | None = None):
        super().__init__()
        if inverse not in IRC_INVERSES:
            raise ValueError(f"inverse must be one of {IRC_INVERSES}, got {inverse!r}")
        defaults = GRID_DEFAULTS if inverse == "grid" else BANK_DEFAULTS
        if inverse == "bank" and rho is None:
            rho = defaults["rho"]
        if inverse == "bank" and momentum:
            raise ValueError(f"momentum applies to inverse='grid' only (the bank path is the paper's "
                             f"algorithm), got momentum={momentum!r}; leave it None")
        momentum = defaults["momentum"] if momentum is None else momentum
        if isinstance(grid_spacing, bool) or int(grid_spacing) != grid_spacing or grid_spacing < 8:
            raise ValueError(f"grid_spacing must be an integer >= 8, got {grid_spacing!r}")
        if isinstance(momentum, bool) or not isinstance(momentum, (int, float)) or not 0 <= momentum < 1:
            raise ValueError(f"momentum must be a number in [0, 1), got {momentum!r}")
        if inverse == "grid" and delta_size:
            raise ValueError("delta_size corrects the bank's inverse filters; the grid inverse has none (use 0)")
        for name, value, low in (("stages", stages, 1), ("inner_steps", inner_steps, 1), ("max_length", max_length, 1),
                                 ("angle_step", angle_step, 1), ("n_knots", n_knots, 3)):
            if isinstance(value, bool) or int(value) != value or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        if max_length % 2 == 0:
            raise ValueError(f"max_length must be odd (the bank's lengths are 1, 3, ..., max_length), got {max_length}")
        if 180 % angle_step:
            raise ValueError(f"angle_step must divide 180, got {angle_step}")
        size = 2 * int(max_length) + 1 if filter_size is None else filter_size
        if isinstance(size, bool) or int(size) != size or size < 3 or size % 2 == 0:
            raise ValueError(f"filter_size must be an odd integer >= 3, got {filter_size!r}")
        if delta_size is None:
            delta_size = 0 if inverse == "grid" else min(15, int(size))
        if isinstance(delta_size, bool) or int(delta_size) != delta_size or delta_size < 0 or (
                delta_size and (delta_size % 2 == 0 or delta_size > size)):
            raise ValueError(f"delta_size must be 0 or odd and <= filter_size ({size}), got {delta_size}")
        bad_rho = rho is not None and not (math.isfinite(rho) and rho > 0)
        if bad_rho or not (math.isfinite(shrink_range) and shrink_range > 1):
            raise ValueError(f"rho must be > 0 and shrink_range > 1, got {rho}, {shrink_range}")
        if weight_mode not in ("bilinear", "softmax"):
            raise ValueError(f"weight_mode must be 'bilinear' or 'softmax', got {weight_mode!r}")
        # rho None (grid only): per input, as irc picks it (GRID_DEFAULTS: uniform or varying blur)
        self.stages, self.inner_steps, self.rho = int(stages), int(inner_steps), None if rho is None else float(rho)
        self.filter_size, self.delta_size = int(size), int(delta_size)
        self.max_length, self.angle_step = int(max_length), int(angle_step)
        self.weight_mode, self.temperature = weight_mode, float(temperature)
        self.inverse, self.grid_spacing = inverse, int(grid_spacing)
        priors = initial_priors(prior_filters)
        self.priors = nn.Parameter(priors.clone())
        self.register_buffer("initial_priors", priors, persistent=False)
        # The shrinkage is soft-thresholding at 1 on v / t; 1 must be a knot for it to be exact.
        self.shrinks = nn.ModuleList(LearnableShrink(len(priors), n_knots, (-shrink_range, shrink_range), 1.0)
                                     for _ in range(self.stages))
        self.eta = nn.Parameter(torch.ones(self.stages))
        bank, grid = psf_lib.motion_bank(range(1, int(max_length) + 1, 2), range(0, 180, int(angle_step)),
                                         int(max_length))
        self.register_buffer("bank", bank, persistent=False)
        # Half-width of each bank filter's non-zero support: a field of short motions needs only
        # the centre of the bank and of the inverse filters (see _crop).
        nonzero = bank != 0
        centre = bank.shape[-1] // 2
        rows = (nonzero.any(-1) * (torch.arange(bank.shape[-1]) - centre).abs()).amax(-1)
        cols = (nonzero.any(-2) * (torch.arange(bank.shape[-1]) - centre).abs()).amax(-1)
        self.register_buffer("support", torch.maximum(rows, cols), persistent=False)
        self.register_buffer("grid", grid, persistent=False)
        self._bases: dict[tuple[int, int], torch.Tensor] = {}  # analytic filters of cropped banks
        if inverse == "bank":
            base = psf_lib.inverse_filters(bank.double(), self.filter_size, priors.double(), self.rho, branches=True)
            self.register_buffer("inverse_base", base.float(), persistent=False)
            self.inverse_delta = nn.Parameter(torch.zeros(len(bank), len(priors) + 1, self.delta_size, self.delta_size))
        else:
            self.momentum = nn.Parameter(torch.full((self.stages,), float(momentum)))

    def inverse_bank(self, size: int | None = None, bank_size: int | None = None) -> torch.Tensor:
        """(F, 1 + n, size, size) inverse filters of the motion bank: analytic + learned centre.

        With ``size`` (odd, default ``filter_size``) and ``bank_size`` (odd, default the bank's),
        the analytic part is eq. 14 for the bank cropped to ``bank_size`` at that size (cached),
        plus the centre of the learned correction.
        """
        size = self.filter_size if size is None else int(size)
        k = self.bank.shape[-1] if bank_size is None else int(bank_size)
        if size == self.filter_size and k == self.bank.shape[-1]:
            base = self.inverse_base
        else:
            if (size, k) not in self._bases:
                o = (self.bank.shape[-1] - k) // 2
                cropped = self.bank[:, o:o + k, o:o + k].double().cpu()
                self._bases[size, k] = psf_lib.inverse_filters(cropped, size, self.initial_priors.double().cpu(),
                                                               self.rho, branches=True).float()
            base = self._bases[size, k].to(self.inverse_base.device)
        if not self.delta_size:
            return base
        delta = self.inverse_delta
        if self.delta_size > size:
            c = (self.delta_size - size) // 2
            delta = delta[..., c:c + size, c:c + size]
        pad = (size - delta.shape[-1]) // 2
        return base + nn.functional.pad(delta, (pad, pad, pad, pad))

    def prior_filters(self) -> torch.Tensor:
        """The prior filters k_i in use: the learned ones made zero-sum.

        A filter with a non-zero sum penalises the mean intensity, and the shrinkage then pulls
        the whole image towards 0: unconstrained, the filters of a grid IRC-Net trained on
        patches drifted to sums of +-0.3 and biased clock (128 x 128) by -0.004, 3 dB lost.
        """
        return self.priors - self.priors.mean((-2, -1), keepdim=True)

    def motion_inputs(self, length: torch.Tensor, angle: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """idx and weights (B, 4, H, W) of per-pixel motions on this network's bank (differentiable)."""
        return psf_lib.motion_weights(length, angle, self.grid, mode=self.weight_mode, temperature=self.temperature)

    def _crop(self, idx: torch.Tensor, weights: torch.Tensor) -> tuple[torch.Tensor, int]:
        """The bank cropped to the support of the filters in use, and the inverse-filter side for it.

        The blur is unchanged (only zero taps go). The inverse filters become min(filter_size,
        4 k + 1) wide for a bank cropped to k (see :meth:`inverse_bank`), so a field of short motions
        does not pay for the 71 x 71 filters of 35 px motions. (2 k + 1, the ``irc`` method's
        default, lost 0.1 dB on the validation patches: the inverse of a motion blur decays slowly
        along the motion.)
        """
        with torch.no_grad():
            active = idx[weights.expand_as(idx) != 0] if weights.shape == idx.shape else idx.reshape(-1)
            radius = int(self.support[active.unique()].max()) if active.numel() else 0
        k = max(2 * radius + 1, 3)
        o = (self.bank.shape[-1] - k) // 2
        return self.bank[:, o:o + k, o:o + k], min(self.filter_size, 4 * k + 1)

    def _shrink(self, threshold: torch.Tensor):
        t = threshold.reshape(-1, 1, 1, 1, 1)

        def shrink(values, stage):
            stacked = torch.stack(values, 1)  # (B, n, C, H, W): one shrink function per prior filter
            out = t * self.shrinks[stage](stacked / t)
            return list(out.unbind(1))

        return shrink

    def forward(self, image: torch.Tensor, psf=None, *, motion=None, idx=None, weights=None, bank=None,
                noise_sigma=None) -> torch.Tensor:
        """Deblur ``image`` (B, C, H, W) given exactly one description of the blur.

        Args:
            image: (B, C, H, W) float tensor.
            psf: a uniform PSF (kh, kw) or (B, kh, kw), a ``psf.MotionField`` (uses the learned
                bank) or a ``psf.PSFGrid``.
            motion: (length, angle) per-pixel maps, (B, H, W) or (H, W), in pixels and degrees
                (e.g. from :class:`MotionNet`); uses the learned bank and trains through it.
            idx, weights: (B or 1, K, H, W) per-pixel filter indices and weights into ``bank``
                (default this network's motion bank).
            bank: (F, kh, kw) filter bank for ``idx``/``weights``.
            noise_sigma: noise level(s) for the shrinkage threshold; estimated when None.

        Returns:
            (B, C, H, W) restored image.

        Raises:
            ValueError: no blur or more than one blur description, wrong shapes.
        """
        given = [name for name, value in (("psf", psf), ("motion", motion), ("idx/weights", idx if idx is not None
                 else weights)) if value is not None]
        if len(given) != 1:
            raise ValueError(f"IRCNet needs exactly one blur description: psf=, motion=(length, angle) or "
                             f"idx=/weights=; got {given or 'none'}")
        v.require_tensor(image, "image")
        if image.dim() != 4:
            raise ValueError(f"image must have shape (B, C, H, W), got {tuple(image.shape)}")
        learned = False
        if isinstance(psf, psf_lib.MotionField):
            motion, psf = (psf.length, psf.angle), None
        if motion is not None:
            if not isinstance(motion, (tuple, list)) or len(motion) != 2:
                raise ValueError("motion must be a (length, angle) pair of per-pixel maps")
            length, angle = (m.to(image.device, image.dtype) if isinstance(m, torch.Tensor) else m for m in motion)
            idx, weights = self.motion_inputs(length, angle)
            if tuple(idx.shape[-2:]) != tuple(image.shape[-2:]):
                raise ValueError(f"motion maps are {tuple(idx.shape[-2:])} but the image is {tuple(image.shape[-2:])}")
        if idx is not None or weights is not None:
            if idx is None or weights is None:
                raise ValueError("give both idx and weights (B, K, H, W)")
            learned = bank is None
            if learned:
                bank, size = self._crop(idx, weights)
            psf = _Inputs(bank, idx, weights)
        op = BlurOperator(image, psf)
        priors = self.prior_filters().to(image.dtype)
        momentum, rho = 0.0, self.rho
        if rho is None:
            rho = GRID_DEFAULTS["uniform_rho" if spatially_invariant(op) else "rho"]
        if self.inverse == "grid":
            inverse = preconditioned_inverse(op, priors, rho, self.grid_spacing, differentiable=True)
            momentum = list(self.momentum.to(image.dtype).clamp(0, 0.9).unbind())
        else:
            if learned:
                filters = self.inverse_bank(size, bank.shape[-1])
            else:
                size = 2 * max(op.bank.shape[-2:]) + 1
                filters = psf_lib.inverse_filters(op.bank.detach(), size, self.initial_priors, self.rho, branches=True)
            inverse = branch_inverse(filters.to(image.dtype), op.idx, op.weights, op.data.shape[0])
        lam = WEIGHT_PER_ROOT_NOISE * noise_sigma_per_item(image, noise_sigma).sqrt().reshape(-1)
        x = irc_admm(op.mask * op.data, lambda x: op.mask * op.blur(x), lambda x: conv_same(x, priors),
                     inverse, self._shrink((lam / rho).to(image.dtype)), rho=rho, stages=self.stages,
                     irc_iterations=self.inner_steps, eta=list(self.eta.to(image.dtype).unbind()),
                     momentum=momentum, start=op.data)
        return op.crop(x)

    def config(self) -> dict:
        """Keyword arguments that rebuild this architecture (stored with its weights)."""
        return {"stages": self.stages, "inner_steps": self.inner_steps, "prior_filters": int(self.priors.shape[0]),
                "filter_size": self.filter_size, "max_length": self.max_length, "angle_step": self.angle_step,
                "rho": self.rho, "delta_size": self.delta_size, "n_knots": int(self.shrinks[0].values.shape[1]),
                "shrink_range": float(self.shrinks[0].value_range[1]), "weight_mode": self.weight_mode,
                "temperature": self.temperature, "inverse": self.inverse, "grid_spacing": self.grid_spacing}
