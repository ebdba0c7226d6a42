"""Paper 002: a convolutional autoencoder that maps a blurred image to the sharp one (blind).

The paper (Jeevan B et al., "Image Deblurring Using Deep Learning") describes the model as an
encoder of convolutional layers (eq. 4: Z = E(B_in)), a lower-dimensional latent space, and a
decoder of transposed convolutions that upsamples back to full resolution (eq. 5: I_out = D(Z)),
trained with a pixel-wise MSE loss, Adam and ReduceLROnPlateau (batch 32, 100 epochs, 350 Kaggle
image pairs). It gives no layer counts, filter numbers or kernel sizes.

The defaults are therefore our choice, in the style of common Keras convolutional autoencoders:
three 3x3 stride-2 ReLU convolutions with 64, 128 and 256 filters, a linear latent layer, three
3x3 stride-2 ReLU transposed convolutions with 256, 128 and 64 filters, and a 3x3 transposed
convolution with a sigmoid to the image channels. Such autoencoders often use a dense latent
vector, which ties the network to one image size; here the latent is a 1x1 convolution to
``latent_channels`` maps (and one back), the same bottleneck at every position, so that images of
any size go through.

``residual=True`` (not in the paper) adds the blurred input to the decoder's output, whose last
layer then starts at zero: the network starts as the identity and learns the correction. Within
the CPU budget of the shipped weights, the plain autoencoder did not reach the PSNR of its blurred
input on the validation patches (see the README paragraph on how the weights were trained); the
residual one is what ships.

Registered method and pretrained name: ``"autoencoder"``; training: ``deblur train autoencoder``
(:mod:`deblur_ops.train.autoencoder`).
"""
from __future__ import annotations

import torch
from torch import nn

from .. import validation as v
from ..restore.registry import register
from ._blind import check_network_input, run_blind
from .pretrained import resolve_weights

PRETRAINED_NAME = "autoencoder"


class DeblurAutoencoder(nn.Module):
    """Encoder -> latent -> transposed-convolution decoder (paper 002, eqs. 4-5).

    Args:
        channels: image channels in and out (1 grey, 3 RGB).
        filters: encoder filter counts, one stride-2 convolution each; the decoder mirrors them.
        kernel_size: odd kernel size of every (transposed) convolution.
        latent_channels: maps of the latent Z at 1 / 2**len(filters) of the resolution.

    Shape:
        (B, channels, H, W) -> (B, channels, H, W) in (0, 1), H and W multiples of
        :attr:`multiple` (= 2**len(filters)).

    Raises:
        ValueError: non-positive sizes, an even kernel size, or no filters.

    Example:
        >>> import torch
        >>> net = DeblurAutoencoder(filters=(4, 8), latent_channels=2)
        >>> net(torch.rand(2, 1, 8, 12)).shape
        torch.Size([2, 1, 8, 12])

    References:
        Jeevan B, Nishanth V, Dakshinasree S, Sunil Kumar P V. Image Deblurring Using Deep Learning. Vellore
        Institute of Technology; venue and year not stated (paper 002 in docs/references.md).
    """

    def __init__(self, channels: int = 1, filters=(64, 128, 256), kernel_size: int = 3, latent_channels: int = 32,
                 residual: bool = False):
        super().__init__()
        filters = tuple(int(f) for f in filters)
        if not filters or min(filters) < 1 or channels < 1 or latent_channels < 1:
            raise ValueError(f"channels, latent_channels and every filter count must be >= 1 and filters non-empty, "
                             f"got channels={channels}, filters={filters}, latent_channels={latent_channels}")
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd and >= 1 (same-size padding), got {kernel_size}")
        self.channels, self.filters = int(channels), filters
        self.kernel_size, self.latent_channels = int(kernel_size), int(latent_channels)
        self.residual = bool(residual)
        pad = kernel_size // 2
        encoder, previous = [], channels
        for f in filters:
            encoder += [nn.Conv2d(previous, f, kernel_size, stride=2, padding=pad), nn.ReLU(inplace=True)]
            previous = f
        self.encoder = nn.Sequential(*encoder)
        # The latent is linear on both sides, as the dense latent vector it replaces.
        self.to_latent = nn.Conv2d(filters[-1], latent_channels, 1)
        self.from_latent = nn.Conv2d(latent_channels, filters[-1], 1)
        decoder = []
        for f in reversed(filters):
            # output_padding=1 makes each stride-2 layer an exact 2x (TensorFlow's padding="same").
            decoder += [nn.ConvTranspose2d(previous, f, kernel_size, stride=2, padding=pad, output_padding=1),
                        nn.ReLU(inplace=True)]
            previous = f
        decoder.append(nn.ConvTranspose2d(previous, channels, kernel_size, padding=pad))
        if residual:
            # The correction starts at zero: training starts from the identity, not from noise.
            nn.init.zeros_(decoder[-1].weight)
            nn.init.zeros_(decoder[-1].bias)
        else:
            decoder.append(nn.Sigmoid())
        self.decoder = nn.Sequential(*decoder)

    @property
    def multiple(self) -> int:
        """Height and width of the input must be multiples of this."""
        return 2 ** len(self.filters)

    def config(self) -> dict:
        """Keyword arguments that rebuild this architecture."""
        return {"channels": self.channels, "filters": list(self.filters), "kernel_size": self.kernel_size,
                "latent_channels": self.latent_channels, "residual": self.residual}

    def encode(self, blurry: torch.Tensor) -> torch.Tensor:
        """Z = E(B_in) (eq. 4): (B, latent_channels, H / multiple, W / multiple)."""
        check_network_input(blurry, self.channels, self.multiple, "blurry")
        return self.to_latent(self.encoder(blurry))

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """I_out = D(Z) (eq. 5)."""
        return self.decoder(self.from_latent(latent))

    def forward(self, blurry: torch.Tensor) -> torch.Tensor:
        out = self.decode(self.encode(blurry))
        return blurry + out if self.residual else out


def _network(weights: str, device) -> DeblurAutoencoder:
    from . import methods

    return resolve_weights(weights, DeblurAutoencoder, device=device, cached=methods.cached_model, recipe="autoencoder")


@register("autoencoder", "Blind (paper 002 autoencoder); not yet a deblurrer: +0.04 dB over the blurred input on camera shake",
          needs_psf=False)
def autoencoder(image: torch.Tensor, psf=None, *, weights: str = PRETRAINED_NAME) -> torch.Tensor:
    """Blind deblurring with a trained :class:`DeblurAutoencoder` (default: the shipped weights).

    Images are expected in [0, 1] (other ranges are mapped into it and back); with single-channel
    weights, colour channels run one by one; any size is padded to the network's multiple and
    cropped back.

    Args:
        image: (B, C, H, W) float tensor, any C and size.
        psf: not used (blind method); the evaluation harness passes the true PSF, which is ignored.
        weights: registry name or path of a weight file.

    Returns:
        Restored image of ``image``'s shape.

    Raises:
        ValueError: bad image shape, dtype or values (see :func:`run_blind`), unknown weights.

    Example:
        >>> import torch
        >>> autoencoder(torch.rand(1, 3, 21, 30)).shape
        torch.Size([1, 3, 21, 30])

    References:
        Jeevan B, Nishanth V, Dakshinasree S, Sunil Kumar P V. Image Deblurring Using Deep Learning. Vellore
        Institute of Technology; venue and year not stated (paper 002 in docs/references.md).
    """
    v.require_tensor(image, "image")
    network = _network(weights, image.device)
    with torch.no_grad():
        return run_blind(network, image, multiple=network.multiple, margin=network.multiple)
