"""Paper 003: MADN, a multi-scale adversarial deblurring network with gradient guidance (blind).

Zhu, Xu, Choi and Su, "Multi-scale Generative Adversarial Deblurring Network with Gradient
Guidance". The generator (Sec. 3.3, Fig. 2) has two parts:

- the scale network SN: one encoder-decoder (InBlock, two EBlocks, two DBlocks, OutBlock, with
  skip connections) applied coarse to fine at x0.25, x0.5 and x1 with shared weights; each scale
  takes its blurred image together with the upsampled estimate of the scale below and gives the
  sharp latent image I_i;
- the gradient network GN: the same blocks as a U-Net on the Sobel gradient map of the blurred
  image; after each EBlock the SN output of the matching scale (I_2 at x0.5, I_3 at x0.25) is
  concatenated; it reconstructs the sharp gradient map, and its features are merged with the
  full-scale SN features to give the final image.

The blocks use the nested residual connection of eq. 9 and residual units without batch norm and
without the ReLU after the sum (Fig. 4b); all kernels are 3x3 except the 1x1 output convolution.
The discriminator (Sec. 3.4, Table 1) judges both images and gradient maps.

The losses (Sec. 4, eqs. 10-20) and the alternating training step are in
:mod:`deblur_ops.train.madn` (``deblur train madn``).

Where the paper is silent (Fig. 2 is not in the text) these choices are ours: channel widths
w, 2w, 4w over the three levels as in Tao et al.'s scale-recurrent network that the paper builds
on, with w = 64 by default (the default generator plus discriminator then have about 31 M
parameters, in line with the paper's "more than 29 million"); the coarsest scale takes its blurred
image twice (it has no estimate from below); each scale and the final fusion predict a residual
added to their blurred input / to I_1 (``residual=True``); skips inside an encoder-decoder are
added, as in Tao et al.; each concatenation in GN is followed by a 1x1 convolution back to the
block width; the fusion block is a 3x3 convolution, the residual blocks and a 1x1 convolution;
the layers that output these corrections start at zero, so the untrained generator returns its
input; the Sobel kernels are scaled by 1/8. Eq. 9 as printed amounts to two chained residual
units, and is implemented as printed. Table 1's convolution pairs are read as (stride 1,
stride 2), the only reading that keeps a 256 x 256 input larger than one pixel.

Shipped weights use reduced widths (see :data:`deblur_ops.train.madn.RECIPE_DEFAULTS`);
``MADNGenerator()`` and ``MADNDiscriminator()`` with no arguments are the full configuration.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .. import validation as v
from ..restore.registry import register
from ._blind import check_network_input, run_blind
from .pretrained import resolve_weights

PRETRAINED_NAME = "madn"
SCALES = (0.25, 0.5, 1.0)
LEAKY_SLOPE = 0.2

# Sobel kernels scaled by 1/8, so that a unit step gives a gradient of 0.5.
_SOBEL_X = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]]) / 8


def sobel_gradient_map(image: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """M(x): per-channel Sobel gradient magnitude sqrt(gx^2 + gy^2 + eps), replicate border.

    ``eps`` keeps the derivative finite where the image is flat.

    Args:
        image: (B, C, H, W) float tensor.
        eps: added under the square root.

    Returns:
        (B, C, H, W) non-negative tensor.

    Raises:
        ValueError: ``image`` is not (B, C, H, W).

    Example:
        >>> import torch
        >>> step = torch.zeros(1, 1, 5, 6)
        >>> step[..., 3:] = 1
        >>> round(float(sobel_gradient_map(step)[0, 0, 2, 2]), 3)
        0.5
    """
    if not isinstance(image, torch.Tensor) or image.dim() != 4:
        shape = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise ValueError(f"image must be a (B, C, H, W) tensor, got {shape}")
    c = image.shape[1]
    kx = _SOBEL_X.to(image)
    weight = torch.stack([kx, kx.t()])[:, None].repeat(c, 1, 1, 1)  # (2C, 1, 3, 3): gx, gy per channel
    grad = F.conv2d(F.pad(image, (1, 1, 1, 1), mode="replicate"), weight, groups=c)
    grad = grad.unflatten(1, (c, 2))
    return (grad.square().sum(2) + eps).sqrt()


def _resize(x: torch.Tensor, size) -> torch.Tensor:
    # Bicubic resizing, as the paper uses to change the image size (Sec. 4.1); antialiased when shrinking.
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    shrink = size[0] < x.shape[-2]
    return F.interpolate(x, size=size, mode="bicubic", align_corners=False, antialias=shrink)


def image_pyramid(image: torch.Tensor, scales=SCALES) -> list[torch.Tensor]:
    """The image at each of ``scales`` (x0.25, x0.5, x1 by default), bicubic, antialiased.

    Example:
        >>> import torch
        >>> [tuple(p.shape[-2:]) for p in image_pyramid(torch.rand(1, 1, 16, 32))]
        [(4, 8), (8, 16), (16, 32)]
    """
    h, w = image.shape[-2:]
    return [_resize(image, (round(h * s), round(w * s))) for s in scales]


class ResidualBranch(nn.Sequential):
    """R(P) of eq. 9: conv 3x3 - ReLU - conv 3x3, no batch norm and no ReLU after the sum (Fig. 4b)."""

    def __init__(self, width: int):
        super().__init__(nn.Conv2d(width, width, 3, padding=1), nn.ReLU(inplace=True),
                         nn.Conv2d(width, width, 3, padding=1))


class NestedResBlock(nn.Module):
    """Two residual units with the nested connection of eq. 9:
    P_{n+3} = P_n + R_1(P_n) + R_2(P_n + R_1(P_n)).

    Example:
        >>> import torch
        >>> NestedResBlock(4)(torch.rand(1, 4, 6, 6)).shape
        torch.Size([1, 4, 6, 6])
    """

    def __init__(self, width: int):
        super().__init__()
        self.first = ResidualBranch(width)
        self.second = ResidualBranch(width)

    def forward(self, p: torch.Tensor) -> torch.Tensor:
        inner = p + self.first(p)
        return inner + self.second(inner)  # eq. 9


def _residual_stack(width: int, res_blocks: int) -> nn.Sequential:
    # ``res_blocks`` residual units = res_blocks / 2 nested pairs of eq. 9.
    return nn.Sequential(*[NestedResBlock(width) for _ in range(res_blocks // 2)])


class InBlock(nn.Sequential):
    """One 3x3 convolution (+ReLU), then ``res_blocks`` residual units."""

    def __init__(self, in_channels: int, width: int, res_blocks: int):
        super().__init__(nn.Conv2d(in_channels, width, 3, padding=1), nn.ReLU(inplace=True),
                         *_residual_stack(width, res_blocks))


class EBlock(nn.Sequential):
    """One 3x3 stride-2 convolution (+ReLU), then ``res_blocks`` residual units."""

    def __init__(self, in_channels: int, width: int, res_blocks: int):
        super().__init__(nn.Conv2d(in_channels, width, 3, stride=2, padding=1), nn.ReLU(inplace=True),
                         *_residual_stack(width, res_blocks))


class DBlock(nn.Sequential):
    """``res_blocks`` residual units, then a 3x3 stride-2 transposed convolution (+ReLU) to ``out_channels``."""

    def __init__(self, width: int, out_channels: int, res_blocks: int):
        super().__init__(*_residual_stack(width, res_blocks),
                         nn.ConvTranspose2d(width, out_channels, 3, stride=2, padding=1, output_padding=1),
                         nn.ReLU(inplace=True))


class OutBlock(nn.Module):
    """``res_blocks`` residual units (the block's features), then the 1x1 fusion convolution to the output."""

    def __init__(self, width: int, out_channels: int, res_blocks: int):
        super().__init__()
        self.body = _residual_stack(width, res_blocks)
        self.project = nn.Conv2d(width, out_channels, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.body(x)
        return features, self.project(features)


class EncoderDecoder(nn.Module):
    """InBlock, two EBlocks, two DBlocks and an OutBlock with additive skips (widths w, 2w, 4w).

    ``guides`` (optional) are concatenated after the first and second EBlock, each followed by a
    1x1 convolution back to the block width: this is how GN takes the scale outputs.

    Returns:
        (features before the output convolution, output).
    """

    def __init__(self, in_channels: int, out_channels: int, width: int, res_blocks: int, guide_channels: int = 0):
        super().__init__()
        w = width
        self.inblock = InBlock(in_channels, w, res_blocks)
        self.eblock1 = EBlock(w, 2 * w, res_blocks)
        self.eblock2 = EBlock(2 * w, 4 * w, res_blocks)
        self.merge1 = nn.Conv2d(2 * w + guide_channels, 2 * w, 1) if guide_channels else None
        self.merge2 = nn.Conv2d(4 * w + guide_channels, 4 * w, 1) if guide_channels else None
        self.dblock2 = DBlock(4 * w, 2 * w, res_blocks)
        self.dblock1 = DBlock(2 * w, w, res_blocks)
        self.outblock = OutBlock(w, out_channels, res_blocks)

    def forward(self, x: torch.Tensor, guides=None) -> tuple[torch.Tensor, torch.Tensor]:
        e0 = self.inblock(x)
        e1 = self.eblock1(e0)
        if guides is not None:
            e1 = self.merge1(torch.cat([e1, guides[0]], 1))
        e2 = self.eblock2(e1)
        if guides is not None:
            e2 = self.merge2(torch.cat([e2, guides[1]], 1))
        d1 = self.dblock1(self.dblock2(e2) + e1)
        return self.outblock(d1 + e0)


class MADNOutputs(NamedTuple):
    """What the generator produces: the final image, the SN outputs [I_3, I_2, I_1] at x0.25,
    x0.5, x1 and GN's reconstructed gradient map."""

    image: torch.Tensor
    scales: list
    gradient: torch.Tensor


class MADNGenerator(nn.Module):
    """MADN's generator G = SN + GN + fusion (paper 003 Sec. 3.3, Fig. 2).

    Args:
        channels: image channels (1 grey, 3 RGB).
        width: channels of the first level; the levels have width, 2 width, 4 width.
        res_blocks: residual units per block (paper: 4); even, as eq. 9 nests them in pairs.
        residual: each scale and the fusion predict a correction added to their input image.

    Shape:
        (B, channels, H, W) -> (B, channels, H, W), H and W multiples of :attr:`multiple` (16).

    Raises:
        ValueError: non-positive sizes or an odd ``res_blocks``.

    Example:
        >>> import torch
        >>> g = MADNGenerator(width=4, res_blocks=2)
        >>> out = g.outputs(torch.rand(1, 1, 32, 16))
        >>> out.image.shape, [tuple(s.shape[-2:]) for s in out.scales], out.gradient.shape
        (torch.Size([1, 1, 32, 16]), [(8, 4), (16, 8), (32, 16)], torch.Size([1, 1, 32, 16]))

    References:
        J. Zhu, X. Xu, C. Choi, X. Su. Multi-scale Generative Adversarial Deblurring Network with Gradient Guidance.
        Journal article, venue not named in our copy (paper 003 in docs/references.md).
    """

    multiple = 16  # two stride-2 levels at the x0.25 scale

    def __init__(self, channels: int = 1, width: int = 64, res_blocks: int = 4, residual: bool = True):
        super().__init__()
        if channels < 1 or width < 1 or res_blocks < 0 or res_blocks % 2:
            raise ValueError(f"channels and width must be >= 1 and res_blocks an even number >= 0 (eq. 9 nests "
                             f"residual units in pairs), got channels={channels}, width={width}, "
                             f"res_blocks={res_blocks}")
        self.channels, self.width, self.res_blocks, self.residual = int(channels), int(width), int(res_blocks), \
            bool(residual)
        self.scale_network = EncoderDecoder(2 * channels, channels, width, res_blocks)
        self.gradient_network = EncoderDecoder(channels, channels, width, res_blocks, guide_channels=channels)
        self.fusion = nn.Sequential(nn.Conv2d(2 * width, width, 3, padding=1), nn.ReLU(inplace=True),
                                    *_residual_stack(width, res_blocks), nn.Conv2d(width, channels, 1))
        if self.residual:
            # The corrections start at zero, so an untrained generator returns its input (training
            # starts from the blurred image instead of from noise added to it).
            for last in (self.scale_network.outblock.project, self.fusion[-1]):
                nn.init.zeros_(last.weight)
                nn.init.zeros_(last.bias)

    def config(self) -> dict:
        """Keyword arguments that rebuild this architecture."""
        return {"channels": self.channels, "width": self.width, "res_blocks": self.res_blocks,
                "residual": self.residual}

    def outputs(self, blurry: torch.Tensor) -> MADNOutputs:
        """All outputs of G for (B, channels, H, W) ``blurry``; see :class:`MADNOutputs`.

        Raises:
            ValueError: wrong shape or sizes that are not multiples of 16.
        """
        check_network_input(blurry, self.channels, self.multiple, "blurry")
        pyramid = image_pyramid(blurry)
        estimate, scales = pyramid[0], []
        for blurred in pyramid:  # coarse to fine, one set of weights (Sec. 3.3.1)
            estimate = _resize(estimate, blurred.shape[-2:])
            features, out = self.scale_network(torch.cat([blurred, estimate], 1))
            estimate = blurred + out if self.residual else out
            scales.append(estimate)
        gradient_features, gradient = self.gradient_network(sobel_gradient_map(blurry), guides=(scales[1], scales[0]))
        correction = self.fusion(torch.cat([features, gradient_features], 1))
        image = scales[-1] + correction if self.residual else correction
        return MADNOutputs(image, scales, gradient)

    def forward(self, blurry: torch.Tensor) -> torch.Tensor:
        return self.outputs(blurry).image


class MADNDiscriminator(nn.Module):
    """MADN's discriminator D (paper 003 Sec. 3.4, Table 1): probability that the input is sharp.

    Five pairs of 3x3 convolutions (stride 1 then stride 2, ``widths`` channels), two 1x1
    convolutions that keep the size and compress the channels to ``head_channels``, then
    Dense(``dense``) and Dense(1) with a sigmoid. Every layer but the last uses LeakyReLU(0.2);
    no pooling. Table 1 lists the 1x1 pair with kernel 3x3 and stride 2, which contradicts the text
    ("two dimensionally invariant 1x1 convolutions"); the text is followed. The dense layer fixes
    the input size: ``patch`` x ``patch``, a multiple of 32.

    Args:
        channels: image channels.
        patch: side of the square inputs (paper: 256 crops).
        widths: channels of the five convolution pairs (Table 1: 64, 64, 128, 256, 512).
        head_channels: channels of the two 1x1 convolutions (Table 1: 1, 1).
        dense: units of the first dense layer (Table 1: 1024).

    Shape:
        (B, channels, patch, patch) -> (B,) in (0, 1).

    Raises:
        ValueError: ``patch`` not a positive multiple of 32, or non-positive sizes.

    Example:
        >>> import torch
        >>> d = MADNDiscriminator(patch=32, widths=(4, 4, 4, 4, 4), dense=8)
        >>> p = d(torch.rand(3, 1, 32, 32))
        >>> p.shape, bool(((p > 0) & (p < 1)).all())
        (torch.Size([3]), True)

    References:
        J. Zhu, X. Xu, C. Choi, X. Su. Multi-scale Generative Adversarial Deblurring Network with Gradient Guidance.
        Journal article, venue not named in our copy (paper 003 in docs/references.md).
    """

    def __init__(self, channels: int = 1, patch: int = 256, widths=(64, 64, 128, 256, 512), head_channels=(1, 1),
                 dense: int = 1024):
        super().__init__()
        widths, head_channels = tuple(int(w) for w in widths), tuple(int(h) for h in head_channels)
        if patch < 32 or patch % 32:
            raise ValueError(f"patch must be a positive multiple of 32 (five stride-2 layers), got {patch}")
        if min(widths + head_channels + (channels, dense)) < 1 or not widths or not head_channels:
            raise ValueError(f"channels, widths, head_channels and dense must be >= 1, got channels={channels}, "
                             f"widths={widths}, head_channels={head_channels}, dense={dense}")
        self.channels, self.patch, self.widths = int(channels), int(patch), widths
        self.head_channels, self.dense = head_channels, int(dense)
        layers, previous = [], channels
        for w in widths:
            layers += [nn.Conv2d(previous, w, 3, padding=1), nn.LeakyReLU(LEAKY_SLOPE, inplace=True),
                       nn.Conv2d(w, w, 3, stride=2, padding=1), nn.LeakyReLU(LEAKY_SLOPE, inplace=True)]
            previous = w
        for h in head_channels:
            layers += [nn.Conv2d(previous, h, 1), nn.LeakyReLU(LEAKY_SLOPE, inplace=True)]
            previous = h
        self.features = nn.Sequential(*layers)
        side = patch // 2 ** len(widths)
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(previous * side * side, dense),
                                        nn.LeakyReLU(LEAKY_SLOPE, inplace=True), nn.Linear(dense, 1))

    def config(self) -> dict:
        """Keyword arguments that rebuild this architecture."""
        return {"channels": self.channels, "patch": self.patch, "widths": list(self.widths),
                "head_channels": list(self.head_channels), "dense": self.dense}

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """The score before the sigmoid, (B,); the losses use it for numerically stable log D."""
        if not isinstance(x, torch.Tensor) or x.dim() != 4 or x.shape[1:] != (self.channels, self.patch, self.patch):
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"the discriminator takes (B, {self.channels}, {self.patch}, {self.patch}) tensors "
                             f"(its dense layer fixes the size), got {shape}; crop or resize the input, or build "
                             f"it with patch=<your size>")
        return self.classifier(self.features(x)).squeeze(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.logits(x))


class MADN(nn.Module):
    """The MADN GAN's two networks: :class:`MADNGenerator` and :class:`MADNDiscriminator`.

    Only the generator restores images; the discriminator is needed for training, whose losses,
    optimizers and alternating step (Algorithm 1) are in :mod:`deblur_ops.train.madn`.

    Args:
        generator: keyword arguments of :class:`MADNGenerator` (paper defaults if empty).
        discriminator: keyword arguments of :class:`MADNDiscriminator` (its ``channels`` follows the
            generator's).

    Example:
        >>> import torch
        >>> gan = MADN({"width": 2, "res_blocks": 0}, {"patch": 32, "widths": (2,) * 5, "dense": 4})
        >>> gan(torch.rand(2, 1, 32, 32)).shape, gan.discriminator.channels
        (torch.Size([2, 1, 32, 32]), 1)

    References:
        J. Zhu, X. Xu, C. Choi, X. Su. Multi-scale Generative Adversarial Deblurring Network with Gradient Guidance.
        Journal article, venue not named in our copy (paper 003 in docs/references.md).
    """

    def __init__(self, generator: dict | None = None, discriminator: dict | None = None):
        super().__init__()
        self.generator = MADNGenerator(**(generator or {}))
        self.discriminator = MADNDiscriminator(**{**(discriminator or {}), "channels": self.generator.channels})

    def forward(self, blurry: torch.Tensor) -> torch.Tensor:
        return self.generator(blurry)


def _network(weights: str, device) -> MADNGenerator:
    from . import methods

    return resolve_weights(weights, MADNGenerator, device=device, cached=methods.cached_model, recipe="madn")


@register("madn", "Blind (paper 003 MADN generator); not yet a deblurrer: +0.24 dB over the blurred input on camera shake",
          needs_psf=False)
def madn(image: torch.Tensor, psf=None, *, weights: str = PRETRAINED_NAME) -> torch.Tensor:
    """Blind deblurring with a trained :class:`MADNGenerator` (default: the shipped weights).

    Images are expected in [0, 1] (other ranges are mapped into it and back); with single-channel
    weights, colour channels run one by one; any size is padded to a multiple of 16 and cropped back.

    Args:
        image: (B, C, H, W) float tensor, any C and size.
        psf: not used (blind method); the evaluation harness passes the true PSF, which is ignored.
        weights: registry name or path of a generator weight file.

    Returns:
        Restored image of ``image``'s shape.

    Raises:
        ValueError: bad image shape, dtype or values (see :func:`run_blind`), unknown weights.

    Example:
        >>> import torch
        >>> madn(torch.rand(1, 3, 21, 30)).shape
        torch.Size([1, 3, 21, 30])

    References:
        J. Zhu, X. Xu, C. Choi, X. Su. Multi-scale Generative Adversarial Deblurring Network with Gradient Guidance.
        Journal article, venue not named in our copy (paper 003 in docs/references.md).
    """
    v.require_tensor(image, "image")
    network = _network(weights, image.device)
    with torch.no_grad():
        return run_blind(network, image, multiple=network.multiple, margin=network.multiple)
